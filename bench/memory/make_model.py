#!/usr/bin/env python3
"""Writes a Hugging Face model folder with random weights at the exact shapes of a config.

Usage: make_model.py CONFIG_DIR OUT_DIR TOKENIZER_DIR [--seed N]

CONFIG_DIR holds a config.json (e.g. bench/configs/qwen2.5-0.5b); OUT_DIR receives that
config.json, model.safetensors in the config's torch_dtype (bfloat16 or float32) with the
Llama/Qwen2 tensor names, and the tokenizer files of TOKENIZER_DIR (e.g. the real Qwen
tokenizer that scripts/fetch-tokenizers.sh puts in ~/.cache/spo4j/tokenizers/qwen3).
Weights are N(0, 0.02^2), norms 1, biases 0: the memory and time of a training step do not
depend on the values. Only numpy is needed. The folder is written under OUT_DIR.tmp and
renamed into place, so a half-written folder is never seen.
"""
import json
import os
import shutil
import struct
import sys

import numpy as np


def shapes(c):
    h, i, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    nh = c["num_attention_heads"]
    nkv = c.get("num_key_value_heads", nh)
    hd = c.get("head_dim", h // nh)
    bias = c.get("attention_bias", c.get("model_type") == "qwen2")
    out = [("model.embed_tokens.weight", (v, h))]
    for l in range(c["num_hidden_layers"]):
        p = f"model.layers.{l}."
        out += [(p + "input_layernorm.weight", (h,)),
                (p + "self_attn.q_proj.weight", (nh * hd, h)),
                (p + "self_attn.k_proj.weight", (nkv * hd, h)),
                (p + "self_attn.v_proj.weight", (nkv * hd, h))]
        if bias:
            out += [(p + "self_attn.q_proj.bias", (nh * hd,)),
                    (p + "self_attn.k_proj.bias", (nkv * hd,)),
                    (p + "self_attn.v_proj.bias", (nkv * hd,))]
        out += [(p + "self_attn.o_proj.weight", (h, nh * hd)),
                (p + "post_attention_layernorm.weight", (h,)),
                (p + "mlp.gate_proj.weight", (i, h)),
                (p + "mlp.up_proj.weight", (i, h)),
                (p + "mlp.down_proj.weight", (h, i))]
    out.append(("model.norm.weight", (h,)))
    if not c.get("tie_word_embeddings", False):
        out.append(("lm_head.weight", (v, h)))
    return out


def values(name, shape, rng):
    n = int(np.prod(shape))
    if name.endswith("norm.weight"):
        return np.ones(n, dtype=np.float32)
    if name.endswith(".bias"):
        return np.zeros(n, dtype=np.float32)
    return rng.standard_normal(n, dtype=np.float32) * np.float32(0.02)


def to_bf16(x):
    u = x.view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)  # round to nearest even


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    config_dir, out_dir, tok_dir = argv[:3]
    seed = int(argv[argv.index("--seed") + 1]) if "--seed" in argv else 0
    with open(os.path.join(config_dir, "config.json")) as f:
        c = json.load(f)
    dtype = c.get("torch_dtype", "float32")
    if dtype not in ("bfloat16", "float32"):
        sys.exit(f"make_model.py: torch_dtype {dtype!r}: expected bfloat16 or float32")
    st, size = ("BF16", 2) if dtype == "bfloat16" else ("F32", 4)
    tensors = shapes(c)
    header, off = {}, 0
    for name, shape in tensors:
        n = int(np.prod(shape)) * size
        header[name] = {"dtype": st, "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    tmp = out_dir.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    rng = np.random.default_rng(seed)
    with open(os.path.join(tmp, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for name, shape in tensors:
            x = values(name, shape, rng)
            f.write((to_bf16(x) if st == "BF16" else x).tobytes())
    shutil.copy(os.path.join(config_dir, "config.json"), tmp)
    for t in ("tokenizer.json", "tokenizer_config.json"):
        if os.path.exists(os.path.join(tok_dir, t)):
            shutil.copy(os.path.join(tok_dir, t), tmp)
    if not os.path.exists(os.path.join(tmp, "tokenizer.json")):
        sys.exit(f"make_model.py: no tokenizer.json in {tok_dir} (run scripts/fetch-tokenizers.sh)")
    shutil.rmtree(out_dir, ignore_errors=True)
    os.rename(tmp, out_dir)
    params = sum(int(np.prod(s)) for _, s in tensors)
    print(f"make_model.py: {out_dir}: {params / 1e6:.1f}M parameters, {dtype}, {off / 2**30:.2f} GiB")


if __name__ == "__main__":
    main(sys.argv[1:])
