// The fused LM head in LibTorch C++: token log-probs from the final hidden states without the
// rows x V logits. The same algorithm as dev.spo4j.kernels.LmHeadLogProbs (Java), so that a
// GPU run can time the operator without the Java stack:
//
//   z_c = h_c W^T                  (one GEMM per chunk of rows: cuBLAS / MKL through LibTorch)
//   logp, lse[, entropy] = spo4j token log-probs forward over z_c  (C ABI, current stream)
//   backward (recompute): z_c again, the kernel's in-place backward z_c <- g (onehot - softmax),
//   dh_c = z_c W,  dW += z_c^T h_c (fp32 accumulator; skipped when weight_grad is false)
//   single_pass: the forward and the backward on the same z_c, for a g known per chunk (3 GEMMs)
//   pair_pass: the same over chunks of whole pairs, g from each chunk's own pair loss (spo4j's
//   preference loss kernel, no host read), as the Java preference objective does it
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

/// The preference loss over k pairs (summed log-probs pc, pr, references rc, rr: fp32 [k]) by
/// spo4j's kernel on the current stream, without its batch means (stats NULL: no host read):
/// the per-pair gradients {gc, gr} of the k-pair mean loss.
inline std::pair<torch::Tensor, torch::Tensor> pair_loss_grads(const spo4j_loss_params& lp, const torch::Tensor& pc,
                                                               const torch::Tensor& pr, const torch::Tensor& rc,
                                                               const torch::Tensor& rr) {
    const int64_t k = pc.size(0);
    torch::Tensor loss = torch::empty({k}, pc.options()), gc = torch::empty({k}, pc.options()),
                  gr = torch::empty({k}, pc.options());
    int st;
    if (pc.is_cuda()) {
        st = spo4j_preference_loss_cuda(&lp, k, pc.data_ptr<float>(), pr.data_ptr<float>(), rc.data_ptr<float>(),
                                        rr.data_ptr<float>(), nullptr, loss.data_ptr<float>(), gc.data_ptr<float>(),
                                        gr.data_ptr<float>(), nullptr, current_stream(pc));
    } else {
        st = spo4j_preference_loss_cpu(&lp, k, pc.data_ptr<float>(), pr.data_ptr<float>(), rc.data_ptr<float>(),
                                       rr.data_ptr<float>(), nullptr, loss.data_ptr<float>(), gc.data_ptr<float>(),
                                       gr.data_ptr<float>(), nullptr);
    }
    ok_or_throw(st, "lm_head: preference loss");
    return {gc, gr};
}

/// The preference objective's single pass over chunks of whole pairs, as
/// dev.spo4j.loss.PreferenceObjective does it: h [2B T, H] and targets in the batch's order
/// (B chosen sequences of T rows, then B rejected), put in pair order on the device (chosen i,
/// rejected i: 2T consecutive rows); per chunk of k whole pairs one GEMM, the forward, the pair
/// loss of those k pairs from the chunk's own log-probs (its gradient times k/B: the batch loss
/// is the mean over pairs), the in-place backward on the same logits, dh and dW. Returns the
/// log-probs and dh in the batch's order. Throws when one pair's 2T rows exceed the budget.
inline std::pair<Forward, Grads> pair_pass(const torch::Tensor& h, const torch::Tensor& w, const torch::Tensor& t,
                                           int64_t seq_len, const torch::Tensor& ref_chosen,
                                           const torch::Tensor& ref_rejected, const spo4j_loss_params& lp,
                                           bool weight_grad, int64_t chunk_bytes, bool unchecked = false) {
    check(h, w, t);
    torch::NoGradGuard no_grad;
    const int64_t n = h.size(0), group = 2 * seq_len;
    if (seq_len < 1 || n % group != 0)
        throw std::invalid_argument("lm_head: " + std::to_string(n) + " rows are not whole pairs of 2 x " +
                                    std::to_string(seq_len));
    const int64_t pairs = n / group;
    const int64_t step = chunk_rows(w.size(0), h.scalar_type(), weight_grad, chunk_bytes) / group * group;
    if (step < group)
        throw std::invalid_argument("lm_head: chunk budget " + std::to_string(chunk_bytes) +
                                    " bytes is smaller than one pair of " + std::to_string(group) + " rows");
    // pair order: sequence 2i is chosen i (batch sequence i), 2i+1 rejected i (batch sequence B+i)
    const auto long_opts = torch::TensorOptions().dtype(torch::kLong).device(h.device());
    const torch::Tensor seq_ids = torch::arange(pairs, long_opts);
    const torch::Tensor order = torch::stack({seq_ids, seq_ids + pairs}, 1).reshape({-1});
    const torch::Tensor back = torch::argsort(order);
    const torch::Tensor hp = h.view({2 * pairs, seq_len, -1}).index_select(0, order).reshape({n, h.size(1)});
    const torch::Tensor tp = t.view({2 * pairs, seq_len}).index_select(0, order).reshape({n});
    const auto f32 = h.options().dtype(torch::kFloat);
    const bool upcast = weight_grad && h.scalar_type() != torch::kFloat;
    Forward fwd{torch::empty({n}, f32), torch::empty({n}, f32), torch::Tensor()};
    Grads out{torch::empty_like(h),
              weight_grad ? torch::zeros({w.size(0), w.size(1)}, w.options().dtype(torch::kFloat)) : torch::Tensor()};
    for (int64_t r0 = 0; r0 < n; r0 += step) {
        const int64_t m = std::min(step, n - r0), p0 = r0 / group, k = m / group;
        const torch::Tensor hc = hp.narrow(0, r0, m), tc = tp.narrow(0, r0, m);
        const torch::Tensor logp = fwd.logp.narrow(0, r0, m), lse = fwd.lse.narrow(0, r0, m);
        torch::Tensor z = torch::mm(hc, w.t());
        kernel_fwd(z, tc, logp, lse, torch::Tensor(), unchecked);
        const torch::Tensor seq = logp.view({k, 2, seq_len}).sum(2);  // [k, 2]: chosen, rejected
        auto g = pair_loss_grads(lp, seq.select(1, 0).contiguous(), seq.select(1, 1).contiguous(),
                                 ref_chosen.narrow(0, p0, k).contiguous(), ref_rejected.narrow(0, p0, k).contiguous());
        const torch::Tensor g_rows = (torch::stack({g.first, g.second}, 1) * (double(k) / double(pairs)))
                                         .unsqueeze(2).expand({k, 2, seq_len}).reshape({m}).contiguous();
        kernel_bwd_in_place(z, tc, lse, g_rows, unchecked);
        out.dh.narrow(0, r0, m).copy_(torch::mm(z, w));
        if (upcast) {
            out.dw.addmm_(z.to(torch::kFloat).t(), hc.to(torch::kFloat));
        } else if (weight_grad) {
            out.dw.addmm_(z.t(), hc);
        }
    }
    // back to the batch's order
    fwd.logp = fwd.logp.view({2 * pairs, seq_len}).index_select(0, back).reshape({n});
    fwd.lse = fwd.lse.view({2 * pairs, seq_len}).index_select(0, back).reshape({n});
    out.dh = out.dh.view({2 * pairs, seq_len, -1}).index_select(0, back).reshape({n, h.size(1)});
    return {fwd, out};
}

}  // namespace spo4j_lm_head
