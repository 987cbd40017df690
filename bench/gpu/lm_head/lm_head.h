// The fused LM head in LibTorch C++: token log-probs from the final hidden states without the
// rows x V logits. The same algorithm as dev.spo4j.kernels.LmHeadLogProbs (Java), so that a
// GPU run can time the operator without the Java stack:
//
//   z_c = h_c W^T                  (one GEMM per chunk of rows: cuBLAS / MKL through LibTorch)
//   logp, lse[, entropy] = spo4j token log-probs forward over z_c  (C ABI, current stream)
//   backward (recompute): z_c again, the kernel's in-place backward z_c <- g (onehot - softmax),
//   dh_c = z_c W,  dW += z_c^T h_c (fp32 accumulator; skipped when weight_grad is false)
//   single_pass: the forward and the backward on the same z_c, for a g known per chunk (3 GEMMs)
//
// A chunk holds at most chunk_bytes of logits (plus their fp32 copy for a bf16/fp16 dW), so
// the extra memory is bounded whatever the row count. Header-only; link libspo4j and LibTorch.
// Used by lm_head_bench.cpp (this folder).
#pragma once

#include <torch/torch.h>

#ifdef SPO4J_TORCH_CUDA
#include <c10/cuda/CUDAStream.h>
#endif

#include <algorithm>
#include <stdexcept>
#include <string>
#include <utility>

#include "spo4j.h"

namespace spo4j_lm_head {

inline void* current_stream(const torch::Tensor& on) {
#ifdef SPO4J_TORCH_CUDA
    if (on.is_cuda()) return c10::cuda::getCurrentCUDAStream(on.device().index()).stream();
#endif
    (void)on;
    return nullptr;
}

inline void ok_or_throw(int status, const char* what) {
    if (status != SPO4J_OK)
        throw std::runtime_error(std::string(what) + ": status " + std::to_string(status) + ": " +
                                 spo4j_last_error());
}

inline int dtype_code(const torch::Tensor& t) {
    switch (t.scalar_type()) {
        case torch::kFloat: return SPO4J_F32;
        case torch::kBFloat16: return SPO4J_BF16;
        case torch::kHalf: return SPO4J_F16;
        default: throw std::invalid_argument("lm_head: dtype must be float32, bfloat16 or float16");
    }
}

/// Rows per chunk: chunk_bytes over one row of logits (and its fp32 copy for a low-precision dW).
inline int64_t chunk_rows(int64_t vocab, torch::ScalarType dt, bool weight_grad, int64_t chunk_bytes) {
    const int64_t elem = dt == torch::kFloat ? 4 : 2;
    const int64_t per_row = vocab * (elem + (weight_grad && elem != 4 ? 4 : 0));
    if (per_row > chunk_bytes)
        throw std::invalid_argument("lm_head: chunk budget " + std::to_string(chunk_bytes) +
                                    " bytes is smaller than one row (" + std::to_string(per_row) + ")");
    return chunk_bytes / per_row;
}

inline void check(const torch::Tensor& h, const torch::Tensor& w, const torch::Tensor& t) {
    if (h.dim() != 2 || w.dim() != 2 || w.size(1) != h.size(1))
        throw std::invalid_argument("lm_head: expected h [N, H] and W [V, H]");
    if (h.scalar_type() != w.scalar_type()) throw std::invalid_argument("lm_head: h and W dtypes differ");
    if (t.dim() != 1 || t.size(0) != h.size(0) || t.scalar_type() != torch::kLong || !t.is_contiguous())
        throw std::invalid_argument("lm_head: expected contiguous int64 targets [N]");
    if (h.device() != w.device() || h.device() != t.device())
        throw std::invalid_argument("lm_head: h, W and targets must be on one device");
    dtype_code(h);
}

struct Forward {
    torch::Tensor logp, lse, entropy;  // fp32 [N]; entropy undefined unless asked for
};

struct Grads {
    torch::Tensor dh;  // [N, H] in h's dtype
    torch::Tensor dw;  // [V, H] fp32; undefined when weight_grad is false
};

inline void kernel_fwd(const torch::Tensor& z, const torch::Tensor& t, const torch::Tensor& logp,
                       const torch::Tensor& lse, const torch::Tensor& ent, bool unchecked) {
    const int64_t rows = z.size(0), vocab = z.size(1);
    float* e = ent.defined() ? ent.data_ptr<float>() : nullptr;
    int st;
    if (z.is_cuda()) {
        auto f = unchecked ? spo4j_token_logprobs_fwd_cuda_unchecked : spo4j_token_logprobs_fwd_cuda;
        st = f(z.data_ptr(), dtype_code(z), rows, vocab, z.stride(0), t.data_ptr<int64_t>(), SPO4J_IGNORE_INDEX,
               logp.data_ptr<float>(), lse.data_ptr<float>(), e, current_stream(z));
    } else {
        st = spo4j_token_logprobs_fwd_cpu(z.data_ptr(), dtype_code(z), rows, vocab, z.stride(0),
                                          t.data_ptr<int64_t>(), SPO4J_IGNORE_INDEX, logp.data_ptr<float>(),
                                          lse.data_ptr<float>(), e, torch::get_num_threads());
    }
    ok_or_throw(st, "lm_head: token log-probs forward");
}

inline void kernel_bwd_in_place(const torch::Tensor& z, const torch::Tensor& t, const torch::Tensor& lse,
                                const torch::Tensor& g, bool unchecked) {
    const int64_t rows = z.size(0), vocab = z.size(1);
    int st;
    if (z.is_cuda()) {
        auto f = unchecked ? spo4j_token_logprobs_bwd_cuda_unchecked : spo4j_token_logprobs_bwd_cuda;
        st = f(z.data_ptr(), dtype_code(z), rows, vocab, z.stride(0), t.data_ptr<int64_t>(), SPO4J_IGNORE_INDEX,
               lse.data_ptr<float>(), g.data_ptr<float>(), z.data_ptr(), z.stride(0), current_stream(z));
    } else {
        st = spo4j_token_logprobs_bwd_cpu(z.data_ptr(), dtype_code(z), rows, vocab, z.stride(0),
                                          t.data_ptr<int64_t>(), SPO4J_IGNORE_INDEX, lse.data_ptr<float>(),
                                          g.data_ptr<float>(), z.data_ptr(), z.stride(0), torch::get_num_threads());
    }
    ok_or_throw(st, "lm_head: token log-probs backward");
}

/// Forward: logp, lse (and entropy) per row; keeps nothing of size rows x V.
inline Forward forward(const torch::Tensor& h, const torch::Tensor& w, const torch::Tensor& t, bool with_entropy,
                       int64_t chunk_bytes, bool unchecked = false) {
    check(h, w, t);
    torch::NoGradGuard no_grad;
    const int64_t n = h.size(0), step = chunk_rows(w.size(0), h.scalar_type(), false, chunk_bytes);
    const auto f32 = h.options().dtype(torch::kFloat);
    Forward out{torch::empty({n}, f32), torch::empty({n}, f32),
                with_entropy ? torch::empty({n}, f32) : torch::Tensor()};
    for (int64_t r0 = 0; r0 < n; r0 += step) {
        const int64_t m = std::min(step, n - r0);
        const torch::Tensor z = torch::mm(h.narrow(0, r0, m), w.t());
        kernel_fwd(z, t.narrow(0, r0, m), out.logp.narrow(0, r0, m), out.lse.narrow(0, r0, m),
                   with_entropy ? out.entropy.narrow(0, r0, m) : torch::Tensor(), unchecked);
    }
    return out;
}

/// Recompute backward for upstream g [N] fp32: dh and (when weight_grad) dW.
inline Grads backward(const torch::Tensor& h, const torch::Tensor& w, const torch::Tensor& t,
                      const torch::Tensor& lse, const torch::Tensor& g, bool weight_grad, int64_t chunk_bytes,
                      bool unchecked = false) {
    check(h, w, t);
    torch::NoGradGuard no_grad;
    const int64_t n = h.size(0), step = chunk_rows(w.size(0), h.scalar_type(), weight_grad, chunk_bytes);
    const bool upcast = weight_grad && h.scalar_type() != torch::kFloat;
    Grads out{torch::empty_like(h),
              weight_grad ? torch::zeros({w.size(0), w.size(1)}, w.options().dtype(torch::kFloat)) : torch::Tensor()};
    for (int64_t r0 = 0; r0 < n; r0 += step) {
        const int64_t m = std::min(step, n - r0);
        const torch::Tensor hc = h.narrow(0, r0, m);
        torch::Tensor z = torch::mm(hc, w.t());
        kernel_bwd_in_place(z, t.narrow(0, r0, m), lse.narrow(0, r0, m), g.narrow(0, r0, m), unchecked);
        out.dh.narrow(0, r0, m).copy_(torch::mm(z, w));
        if (upcast) {
            out.dw.addmm_(z.to(torch::kFloat).t(), hc.to(torch::kFloat));
        } else if (weight_grad) {
            out.dw.addmm_(z.t(), hc);
        }
    }
    return out;
}

/// Single pass for an upstream g [N] fp32 known before the forward (SFT's regime, and the
/// preference objective's over chunks of whole pairs, whose g comes from each chunk's own
/// forward): per chunk one GEMM for the logits, the forward, the in-place backward on the same
/// logits, dh and dW: 3 GEMMs where forward() + backward() take 4.
inline std::pair<Forward, Grads> single_pass(const torch::Tensor& h, const torch::Tensor& w, const torch::Tensor& t,
                                             const torch::Tensor& g, bool weight_grad, int64_t chunk_bytes,
                                             bool unchecked = false) {
    check(h, w, t);
    torch::NoGradGuard no_grad;
    const int64_t n = h.size(0), step = chunk_rows(w.size(0), h.scalar_type(), weight_grad, chunk_bytes);
    const bool upcast = weight_grad && h.scalar_type() != torch::kFloat;
    const auto f32 = h.options().dtype(torch::kFloat);
    Forward fwd{torch::empty({n}, f32), torch::empty({n}, f32), torch::Tensor()};
    Grads out{torch::empty_like(h),
              weight_grad ? torch::zeros({w.size(0), w.size(1)}, w.options().dtype(torch::kFloat)) : torch::Tensor()};
    for (int64_t r0 = 0; r0 < n; r0 += step) {
        const int64_t m = std::min(step, n - r0);
        const torch::Tensor hc = h.narrow(0, r0, m), tc = t.narrow(0, r0, m);
        torch::Tensor z = torch::mm(hc, w.t());
        kernel_fwd(z, tc, fwd.logp.narrow(0, r0, m), fwd.lse.narrow(0, r0, m), torch::Tensor(), unchecked);
        kernel_bwd_in_place(z, tc, fwd.lse.narrow(0, r0, m), g.narrow(0, r0, m), unchecked);
        out.dh.narrow(0, r0, m).copy_(torch::mm(z, w));
        if (upcast) {
            out.dw.addmm_(z.to(torch::kFloat).t(), hc.to(torch::kFloat));
        } else if (weight_grad) {
            out.dw.addmm_(z.t(), hc);
        }
    }
    return {fwd, out};
}

}  // namespace spo4j_lm_head
