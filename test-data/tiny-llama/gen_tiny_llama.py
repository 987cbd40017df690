#!/usr/bin/env python3
"""Golden fixture for dev.spo4j.model: a tiny Llama-family model and the logits of an
independent float64 NumPy forward pass.

Written from the Hugging Face definition of LlamaForCausalLM / Qwen2ForCausalLM /
Qwen3ForCausalLM / MistralForCausalLM (eager
attention), not from the Java code:
  h0 = embed_tokens[ids]
  per layer:  a = RMSNorm(h) ; q,k,v = a Wq^T (+bq), a Wk^T (+bk), a Wv^T (+bv)
              Qwen3: q, k = RMSNorm_q(q), RMSNorm_k(k) over each head's head_dim vector
              RoPE (rotate_half): inv_freq = 1/theta^(arange(0,d,2)/d), emb = cat(f, f),
                                  x' = x cos(emb) + rotate_half(x) sin(emb), positions 0..T-1
              grouped-query attention (kv head of query head h is h // (H/KV)),
              scores = q k^T / sqrt(d), causal + key-padding mask, softmax, o = attn Wo^T (+bo)
              h = h + o ; m = RMSNorm(h) ; h = h + down(silu(gate(m)) * up(m))
  logits = RMSNorm(h) lm_head^T   (lm_head = embed_tokens when tied)
RMSNorm(x) = w * x / sqrt(mean(x^2) + eps).

Usage (NumPy only, deterministic):
  python3 test-data/tiny-llama/gen_tiny_llama.py              # writes test-data/tiny-llama/
  python3 test-data/tiny-llama/gen_tiny_llama.py --variant qwen2  # writes test-data/tiny-qwen2/
  (likewise --variant qwen3: Qwen3ForCausalLM, per-head q_norm/k_norm; --variant mistral)
Outputs: config.json, model.safetensors (F32 weights), expected_logits.safetensors
(input_ids I64 [2,T], attention_mask I64 [2,T], second row right-padded, logits F32 [2,T,V]).
The weights are drawn wider than the usual 0.02 so that the logits are O(1) and every
part of the computation moves them.
"""
import argparse
import json
import os
import struct

import numpy as np

VARIANTS = {
    # untied lm_head, no biases, grouped-query attention 4 heads / 2 kv heads
    "llama": dict(model_type="llama", architectures=["LlamaForCausalLM"], vocab_size=61,
                  hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
                  rope_theta=10000.0, max_position_embeddings=64, tie_word_embeddings=False,
                  attention_bias=False, mlp_bias=False, bos_token_id=1, eos_token_id=2,
                  hidden_act="silu", initializer_range=0.02, rope_scaling=None,
                  pretraining_tp=1, use_cache=True, torch_dtype="float32", seed=20240611),
    # Qwen2: q/k/v biases (no o_proj bias), tied embeddings, one kv head, large theta
    "qwen2": dict(model_type="qwen2", architectures=["Qwen2ForCausalLM"], vocab_size=61,
                  hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=1, rms_norm_eps=1e-6,
                  rope_theta=1000000.0, max_position_embeddings=64, tie_word_embeddings=True,
                  bos_token_id=None, eos_token_id=[3, 4], hidden_act="silu",
                  initializer_range=0.02, rope_scaling=None, use_sliding_window=False,
                  sliding_window=4096, max_window_layers=2, use_cache=True,
                  torch_dtype="float32", seed=20240612),
    # Qwen3: per-head RMSNorm of q and k (q_norm, k_norm over head_dim) before RoPE, no
    # biases, an explicit head_dim (16, not hidden/heads = 8), tied embeddings
    "qwen3": dict(model_type="qwen3", architectures=["Qwen3ForCausalLM"], vocab_size=61,
                  hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-6,
                  rope_theta=1000000.0, max_position_embeddings=64, tie_word_embeddings=True,
                  attention_bias=False, bos_token_id=None, eos_token_id=3, hidden_act="silu",
                  initializer_range=0.02, rope_scaling=None, use_sliding_window=False,
                  sliding_window=None, max_window_layers=2, use_cache=True,
                  torch_dtype="float32", seed=20240613),
    # Mistral: the Llama layout; no sliding window (sliding_window null, as v0.2 and later)
    "mistral": dict(model_type="mistral", architectures=["MistralForCausalLM"], vocab_size=61,
                    hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=1, rms_norm_eps=1e-5,
                    rope_theta=1000000.0, max_position_embeddings=64, tie_word_embeddings=False,
                    sliding_window=None, bos_token_id=1, eos_token_id=2, hidden_act="silu",
                    initializer_range=0.02, use_cache=True, torch_dtype="float32", seed=20240614),
}
T = 9
PADDED_LENGTH = 6  # real tokens in the second row; the rest is right padding

DTYPES = {np.dtype("float32"): "F32", np.dtype("int64"): "I64"}


def write_safetensors(path, tensors, metadata):
    """The safetensors layout: u64 LE header length, JSON header padded with spaces to a
    multiple of 8, then the raw little-endian data in the order of the header offsets."""
    header = {"__metadata__": metadata} if metadata else {}
    offset = 0
    blobs = []
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        data = a.astype(a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": DTYPES[a.dtype], "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def make_weights(c, rng):
    V, H, I = c["vocab_size"], c["hidden_size"], c["intermediate_size"]
    nh, nkv = c["num_attention_heads"], c["num_key_value_heads"]
    d = c.get("head_dim") or H // nh
    qkv_bias = c["model_type"] == "qwen2" or c.get("attention_bias", False)
    o_bias = c["model_type"] != "qwen2" and c.get("attention_bias", False)

    def mat(rows, cols, std):
        return (rng.standard_normal((rows, cols)) * std).astype(np.float32)

    def vec(n, mean, std):
        return (mean + rng.standard_normal(n) * std).astype(np.float32)

    # tied: the embedding is also the output head, so keep it narrower (logits stay O(1))
    w = {"model.embed_tokens.weight": mat(V, H, 0.3 if c["tie_word_embeddings"] else 1.0)}
    s = 1.0 / np.sqrt(H)
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "self_attn.q_proj.weight"] = mat(nh * d, H, 1.5 * s)
        w[p + "self_attn.k_proj.weight"] = mat(nkv * d, H, 1.5 * s)
        w[p + "self_attn.v_proj.weight"] = mat(nkv * d, H, s)
        w[p + "self_attn.o_proj.weight"] = mat(H, nh * d, s)
        if qkv_bias:
            w[p + "self_attn.q_proj.bias"] = vec(nh * d, 0.0, 0.3)
            w[p + "self_attn.k_proj.bias"] = vec(nkv * d, 0.0, 0.3)
            w[p + "self_attn.v_proj.bias"] = vec(nkv * d, 0.0, 0.3)
        if o_bias:
            w[p + "self_attn.o_proj.bias"] = vec(H, 0.0, 0.3)
        if c["model_type"] == "qwen3":
            w[p + "self_attn.q_norm.weight"] = vec(d, 1.0, 0.2)
            w[p + "self_attn.k_norm.weight"] = vec(d, 1.0, 0.2)
        w[p + "mlp.gate_proj.weight"] = mat(I, H, s)
        w[p + "mlp.up_proj.weight"] = mat(I, H, s)
        w[p + "mlp.down_proj.weight"] = mat(H, I, 1.0 / np.sqrt(I))
        w[p + "input_layernorm.weight"] = vec(H, 1.0, 0.2)
        w[p + "post_attention_layernorm.weight"] = vec(H, 1.0, 0.2)
    w["model.norm.weight"] = vec(H, 1.0, 0.2)
    if not c["tie_word_embeddings"]:
        w["lm_head.weight"] = mat(V, H, 1.5 * s)
    return w


def rms_norm(x, weight, eps):
    return weight * (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps))


def rotate_half(x):
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def reference_logits(c, w, ids, mask):
    """float64 forward of the Hugging Face architecture (eager attention)."""
    w = {k: v.astype(np.float64) for k, v in w.items()}
    B, t = ids.shape
    H, nh, nkv = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
    d = c.get("head_dim") or H // nh
    eps = c["rms_norm_eps"]
    inv_freq = 1.0 / (c["rope_theta"] ** (np.arange(0, d, 2, dtype=np.float64) / d))
    freqs = np.outer(np.arange(t, dtype=np.float64), inv_freq)  # [T, d/2]
    emb = np.concatenate([freqs, freqs], axis=-1)  # [T, d]
    cos, sin = np.cos(emb), np.sin(emb)
    allowed = np.tril(np.ones((t, t), dtype=bool))[None, None] & (mask[:, None, None, :] != 0)
    assert allowed.any(axis=-1).all(), "the fixture has no fully masked query row"

    def lin(x, name):
        y = x @ w[name + ".weight"].T
        if name + ".bias" in w:
            y = y + w[name + ".bias"]
        return y

    h = w["model.embed_tokens.weight"][ids]  # [B, T, H]
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        a = rms_norm(h, w[p + "input_layernorm.weight"], eps)
        q = lin(a, p + "self_attn.q_proj").reshape(B, t, nh, d)
        k = lin(a, p + "self_attn.k_proj").reshape(B, t, nkv, d)
        if p + "self_attn.q_norm.weight" in w:  # Qwen3: RMSNorm over each head's vector
            q = rms_norm(q, w[p + "self_attn.q_norm.weight"], eps)
            k = rms_norm(k, w[p + "self_attn.k_norm.weight"], eps)
        q = q.transpose(0, 2, 1, 3)
        k = k.transpose(0, 2, 1, 3)
        v = lin(a, p + "self_attn.v_proj").reshape(B, t, nkv, d).transpose(0, 2, 1, 3)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = np.repeat(k, nh // nkv, axis=1)
        v = np.repeat(v, nh // nkv, axis=1)
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d)
        scores = np.where(allowed, scores, -np.inf)
        scores = scores - scores.max(axis=-1, keepdims=True)
        pr = np.exp(scores)
        pr = pr / pr.sum(axis=-1, keepdims=True)
        attn = (pr @ v).transpose(0, 2, 1, 3).reshape(B, t, nh * d)
        h = h + lin(attn, p + "self_attn.o_proj")
        m = rms_norm(h, w[p + "post_attention_layernorm.weight"], eps)
        g = lin(m, p + "mlp.gate_proj")
        h = h + lin((g / (1.0 + np.exp(-g))) * lin(m, p + "mlp.up_proj"), p + "mlp.down_proj")
    h = rms_norm(h, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if c["tie_word_embeddings"] else w["lm_head.weight"]
    return h @ head.T


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", choices=sorted(VARIANTS), default="llama")
    ap.add_argument("--out", help="output folder (default: test-data/tiny-<variant>)")
    args = ap.parse_args()
    c = dict(VARIANTS[args.variant])
    seed = c.pop("seed")
    out = args.out or os.path.normpath(os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "tiny-" + args.variant))
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(seed)
    w = make_weights(c, rng)
    ids = rng.integers(0, c["vocab_size"], size=(2, T), dtype=np.int64)
    mask = np.ones((2, T), dtype=np.int64)
    mask[1, PADDED_LENGTH:] = 0
    ids[1, PADDED_LENGTH:] = 0  # pad token; the mask, not the id, marks padding
    logits = reference_logits(c, w, ids, mask)
    assert np.isfinite(logits).all()

    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(c, f, indent=2, sort_keys=True)
        f.write("\n")
    write_safetensors(os.path.join(out, "model.safetensors"), w, {"format": "pt"})
    write_safetensors(os.path.join(out, "expected_logits.safetensors"),
                      {"input_ids": ids, "attention_mask": mask,
                       "logits": logits.astype(np.float32)},
                      {"generator": "gen_tiny_llama.py --variant " + args.variant,
                       "reference": "numpy float64"})
    print(f"{out}: {len(w)} tensors, logits std {logits.std():.3f}, "
          f"max |logit| {np.abs(logits).max():.3f}")


if __name__ == "__main__":
    main()
