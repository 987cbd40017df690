#!/usr/bin/env python3
"""Golden renderings of real chat templates, made with Python's jinja2 set up as Hugging Face
transformers sets it up in apply_chat_template (written from its documented behaviour):
  ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                extensions=[jinja2.ext.loopcontrols])
  filters["tojson"]  = json.dumps(x, ensure_ascii=False, indent=indent,
                                  separators=separators, sort_keys=sort_keys)
  globals["raise_exception"] raises; globals["strftime_now"](fmt) = datetime.now().strftime(fmt)
  render(messages=..., tools=None, documents=None, add_generation_prompt=...,
         **special tokens of tokenizer_config.json that are set)

Usage: python3 test-data/chat-templates/render_goldens.py [CACHE_DIR]
  CACHE_DIR holds <name>/tokenizer_config.json (scripts/fetch-tokenizers.sh fills it; default
  $SPO4J_TOKENIZER_CACHE or ~/.cache/spo4j/tokenizers). Writes goldens.json beside this script:
  {"<name>": {"<conversation>|<gen>": {"text": ...} or {"error": ...}}}, gen = 0 or 1.
The conversations are in conversations.json beside this script (read by the Java test too).
"""
import json
import os
import sys
from datetime import datetime

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))
NAMES = ["llama3", "llama3_1", "qwen3", "gemma3"]
TOKEN_KEYS = ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"]


class TemplateError(Exception):
    pass


def raise_exception(message):
    raise TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(fmt):
    return datetime.now().strftime(fmt)


def token_string(v):
    if isinstance(v, dict):
        return v.get("content")
    return v


def main():
    cache = sys.argv[1] if len(sys.argv) > 1 else os.environ.get(
        "SPO4J_TOKENIZER_CACHE", os.path.expanduser("~/.cache/spo4j/tokenizers"))
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    with open(os.path.join(HERE, "conversations.json"), encoding="utf-8") as f:
        conversations = json.load(f)
    out = {}
    for name in NAMES:
        with open(os.path.join(cache, name, "tokenizer_config.json"), encoding="utf-8") as f:
            config = json.load(f)
        template = env.from_string(config["chat_template"])
        tokens = {k: token_string(config.get(k)) for k in TOKEN_KEYS if token_string(config.get(k)) is not None}
        if config.get("additional_special_tokens"):
            tokens["additional_special_tokens"] = [token_string(t) for t in config["additional_special_tokens"]]
        results = {}
        for conv_name, messages in conversations.items():
            for gen in (False, True):
                try:
                    text = template.render(messages=messages, tools=None, documents=None,
                                           add_generation_prompt=gen, **tokens)
                    results[f"{conv_name}|{int(gen)}"] = {"text": text}
                except TemplateError as e:
                    results[f"{conv_name}|{int(gen)}"] = {"error": str(e)}
        out[name] = results
    with open(os.path.join(HERE, "goldens.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
