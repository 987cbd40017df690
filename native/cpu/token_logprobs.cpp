// token_logprobs: fused log-softmax + gather over LM logits, forward and backward (CPU).
//
//   forward : lse = log sum_v exp(z_v),  logp = z_t - lse,  entropy = lse - sum_v p_v z_v
//   backward: dL/dz_v = g * (1[v == t] - exp(z_v - lse))          (g = dL/dlogp of the row)
//
// Memory: the forward reads each row once from DRAM and writes 2-3 floats per row. It walks
// the row in L1-sized chunks: a max pass and then an exp-sum pass over the same chunk (the
// second pass hits L1), merged into running (max, sum, sum p*(z-max)) with the usual online
// rescaling, so nothing of size rows x V is kept: the backward needs only lse. The backward
// reads each row once and writes it once, in place over the logits when asked. Rows are
// split across num_threads threads; SIMD width is picked at load time (simd.h).
// Rows whose target is ignore_index give 0 (forward) and a zero gradient row (backward).
// Tests: src/test/java/dev/spo4j/kernels/TokenLogProbsTest.java; benchmark:
// bench/java/dev/spo4j/bench/TokenLogProbsBench.java; native harness:
// native/tests/token_logprobs_check.cpp.
#include <atomic>
#include <cinttypes>
#include <cmath>
#include <limits>

#include "online_softmax.h"
#include "simd.h"
#include "status.h"

namespace spo4j {
namespace {

constexpr int64_t CHUNK = 2048;  // elements per chunk: 8 KB of fp32 stays in L1
constexpr int64_t MIN_WORK_PER_THREAD = 1 << 16;  // elements; below this, one thread

struct RowStats {
    float lse;
    float entropy;
};

// One row, forward. Returns lse and (if want_entropy) the entropy.
template <int DT>
SPO4J_INLINE RowStats row_forward(const typename Io<DT>::T* z, int64_t V, bool want_entropy) {
    using IO = Io<DT>;
    const float NEG_INF = -std::numeric_limits<float>::infinity();
    float m = NEG_INF, s = 0.0f, t = 0.0f;  // running max, sum exp(z-m), sum exp(z-m)*(z-m)
    for (int64_t c0 = 0; c0 < V; c0 += CHUNK) {
        const int64_t c1 = c0 + CHUNK < V ? c0 + CHUNK : V;
        // bf16 reads 2W values at a time (split_bf16); the rest of the chunk goes W at a time
        const int64_t pairs_end = DT == SPO4J_BF16 ? c0 + ((c1 - c0) / (2 * W)) * (2 * W) : c0;
        const int64_t full = pairs_end + ((c1 - pairs_end) / W) * W;
        const int64_t rem = c1 - full;
        vf tail_v = splat(NEG_INF);
        if (rem) {
            for (int i = 0; i < W; i++) tail_v[i] = i < rem ? IO::get(z + full + i) : NEG_INF;
        }
        // pass 1: chunk max
        vf mv = tail_v;
        if constexpr (DT == SPO4J_BF16) {
            for (int64_t v = c0; v < pairs_end; v += 2 * W) {
                vf a, b;
                split_bf16(z + v, a, b);
                mv = vmax(mv, vmax(a, b));
            }
        }
        for (int64_t v = pairs_end; v < full; v += W) mv = vmax(mv, IO::load(z + v));
        const float mc = hmax(mv);
        const float m_new = mc > m ? mc : m;
        if (!(m_new > NEG_INF)) continue;  // chunk entirely -inf: contributes nothing
        if (m_new > m) {  // rescale what we have so far
            if (s > 0.0f) {
                const float d = m - m_new;
                const float scale = std::exp(d);
                t = rescale_entropy_term(scale, d, s, t);  // 0, not NaN, once scale is 0
                s = scale * s;
            }
            m = m_new;
        }
        // pass 2: sum exp(z - m) (and sum exp(z - m) * (z - m)) over the chunk, from L1
        const vf mvec = splat(m);
        vf sv{}, tv{};
        if (want_entropy) {
            if constexpr (DT == SPO4J_BF16) {
                for (int64_t v = c0; v < pairs_end; v += 2 * W) {
                    vf a, b;
                    split_bf16(z + v, a, b);
                    vf xa = a - mvec, xb = b - mvec;
                    vf ea = vexp(xa), eb = vexp(xb);
                    sv += ea + eb;
                    tv += (ea > 0.0f ? ea * xa : vf{}) + (eb > 0.0f ? eb * xb : vf{});
                }
            }
            for (int64_t v = pairs_end; v < full; v += W) {
                vf x = IO::load(z + v) - mvec;
                vf e = vexp(x);
                sv += e;
                tv += e > 0.0f ? e * x : vf{};  // exp(-inf)*(-inf) would be NaN
            }
            vf x = tail_v - mvec;
            vf e = vexp(x);
            sv += e;
            tv += e > 0.0f ? e * x : vf{};
        } else {
            if constexpr (DT == SPO4J_BF16) {
                for (int64_t v = c0; v < pairs_end; v += 2 * W) {
                    vf a, b;
                    split_bf16(z + v, a, b);
                    sv += vexp(a - mvec) + vexp(b - mvec);
                }
            }
            for (int64_t v = pairs_end; v < full; v += W) sv += vexp(IO::load(z + v) - mvec);
            sv += vexp(tail_v - mvec);
        }
        s += hsum(sv);
        t += hsum(tv);
    }
    RowStats r;
    r.lse = m + std::log(s);  // m = -inf (all -inf) gives -inf; the caller reports it
    r.entropy = want_entropy ? std::log(s) - t / s : 0.0f;
    return r;
}

template <int DT>
SPO4J_CLONES void forward_rows(const void* logits, int64_t begin, int64_t end, int64_t V,
                               int64_t stride, const int64_t* targets, int64_t ignore_index,
                               float* logp, float* lse, float* entropy, int64_t* bad_row) {
    using T = typename Io<DT>::T;
    const T* base = static_cast<const T*>(logits);
    for (int64_t r = begin; r < end; r++) {
        const int64_t tgt = targets[r];
        if (tgt == ignore_index) {
            logp[r] = 0.0f;
            lse[r] = 0.0f;
            if (entropy) entropy[r] = 0.0f;
            continue;
        }
        const T* z = base + r * stride;
        RowStats st = row_forward<DT>(z, V, entropy != nullptr);
        if (!std::isfinite(st.lse) && *bad_row < 0) *bad_row = r;  // -inf: no finite logit; NaN: a NaN or +inf one
        lse[r] = st.lse;
        logp[r] = Io<DT>::get(z + tgt) - st.lse;
        if (entropy) entropy[r] = st.entropy;
    }
}

template <int DT>
SPO4J_CLONES void backward_rows(const void* logits, int64_t begin, int64_t end, int64_t V,
                                int64_t stride, const int64_t* targets, int64_t ignore_index,
                                const float* lse, const float* grad_logp, void* grad,
                                int64_t gstride) {
    using IO = Io<DT>;
    using T = typename IO::T;
    const T* zb = static_cast<const T*>(logits);
    T* gb = static_cast<T*>(grad);
    for (int64_t r = begin; r < end; r++) {
        T* out = gb + r * gstride;
        const int64_t tgt = targets[r];
        if (tgt == ignore_index) {
            std::memset(out, 0, size_t(V) * sizeof(T));
            continue;
        }
        const T* z = zb + r * stride;
        const float g = grad_logp[r], l = lse[r];
        const float zt = IO::get(z + tgt);  // read before an in-place overwrite
        const vf lv = splat(l), ng = splat(-g);
        int64_t v0 = 0;
        if constexpr (DT == SPO4J_BF16) {
            for (; v0 + 2 * W <= V; v0 += 2 * W) {
                vf a, b;
                split_bf16(z + v0, a, b);
                join_bf16(out + v0, ng * vexp(a - lv), ng * vexp(b - lv));
            }
        }
        for (int64_t v = v0; v + W <= V; v += W) IO::store(out + v, ng * vexp(IO::load(z + v) - lv));
        int64_t tail = v0 + ((V - v0) / W) * W;
        for (int64_t v = tail; v < V; v++) {
            vf x = splat(IO::get(z + v) - l);
            IO::put(out + v, -g * vexp(x)[0]);
        }
        vf xt = splat(zt - l);
        IO::put(out + tgt, g * (1.0f - vexp(xt)[0]));
    }
}

// The status and message for a row whose lse is not finite: which kind of logit made it so.
int report_bad_row(const void* logits, int32_t dtype, int64_t r, int64_t vocab, int64_t row_stride, int64_t target) {
    int64_t nan_at = -1, inf_at = -1;
    for (int64_t v = 0; v < vocab && nan_at < 0; v++) {
        const int64_t i = r * row_stride + v;
        float x = dtype == SPO4J_F32    ? static_cast<const float*>(logits)[i]
                  : dtype == SPO4J_BF16 ? Io<SPO4J_BF16>::get(static_cast<const uint16_t*>(logits) + i)
                                        : Io<SPO4J_F16>::get(static_cast<const uint16_t*>(logits) + i);
        if (std::isnan(x)) nan_at = v;
        else if (x == std::numeric_limits<float>::infinity() && inf_at < 0) inf_at = v;
    }
    if (nan_at >= 0)
        return fail(SPO4J_ERR_NONFINITE, "row %" PRId64 " (target %" PRId64 ") has a NaN logit (at column %" PRId64 ")",
                    r, target, nan_at);
    if (inf_at >= 0)
        return fail(SPO4J_ERR_NONFINITE, "row %" PRId64 " (target %" PRId64 ") has a +inf logit (at column %" PRId64 ")",
                    r, target, inf_at);
    return fail(SPO4J_ERR_NONFINITE, "row %" PRId64 " (target %" PRId64 ") has no finite logit: every logit is -inf",
                r, target);
}

int check_common(const void* logits, int32_t dtype, int64_t rows, int64_t vocab,
                 int64_t row_stride, const int64_t* targets, int64_t ignore_index) {
    if (dtype != SPO4J_F32 && dtype != SPO4J_BF16 && dtype != SPO4J_F16)
        return fail(SPO4J_ERR_ARGUMENT, "unknown logits dtype %d (expected 0=f32, 1=bf16, 2=f16)", dtype);
    if (rows < 0) return fail(SPO4J_ERR_ARGUMENT, "rows = %" PRId64 " (expected >= 0)", rows);
    if (vocab < 1) return fail(SPO4J_ERR_ARGUMENT, "vocab = %" PRId64 " (expected >= 1)", vocab);
    if (row_stride < vocab)
        return fail(SPO4J_ERR_ARGUMENT, "row stride %" PRId64 " < vocab %" PRId64, row_stride, vocab);
    if (rows > 0 && (!logits || !targets))
        return fail(SPO4J_ERR_ARGUMENT, "null logits or targets pointer");
    for (int64_t r = 0; r < rows; r++) {
        const int64_t t = targets[r];
        if (t != ignore_index && (t < 0 || t >= vocab))
            return fail(SPO4J_ERR_TARGET,
                        "target %" PRId64 " at row %" PRId64 " is out of range [0, %" PRId64
                        ") and is not ignore_index %" PRId64,
                        t, r, vocab, ignore_index);
    }
    return SPO4J_OK;
}

}  // namespace
}  // namespace spo4j

using namespace spo4j;

extern "C" SPO4J_API int spo4j_token_logprobs_fwd_cpu(
        const void* logits, int32_t dtype, int64_t rows, int64_t vocab, int64_t row_stride,
        const int64_t* targets, int64_t ignore_index, float* logp, float* lse, float* entropy,
        int32_t num_threads) {
    try {
        clear_error();
        int st = check_common(logits, dtype, rows, vocab, row_stride, targets, ignore_index);
        if (st) return st;
        if (rows > 0 && (!logp || !lse)) return fail(SPO4J_ERR_ARGUMENT, "null logp or lse pointer");
        // Each block records its first row with no finite logit; the smallest is reported.
        std::atomic<int64_t> first_bad{INT64_MAX};
        parallel_rows(rows, vocab, num_threads, MIN_WORK_PER_THREAD, [&](int64_t b, int64_t e) {
            int64_t bad = -1;
            if (dtype == SPO4J_F32)
                forward_rows<SPO4J_F32>(logits, b, e, vocab, row_stride, targets, ignore_index, logp, lse, entropy, &bad);
            else if (dtype == SPO4J_BF16)
                forward_rows<SPO4J_BF16>(logits, b, e, vocab, row_stride, targets, ignore_index, logp, lse, entropy, &bad);
            else
                forward_rows<SPO4J_F16>(logits, b, e, vocab, row_stride, targets, ignore_index, logp, lse, entropy, &bad);
            if (bad >= 0) {
                int64_t cur = first_bad.load();
                while (bad < cur && !first_bad.compare_exchange_weak(cur, bad)) {}
            }
        });
        const int64_t bad = first_bad.load();
        if (bad != INT64_MAX) return report_bad_row(logits, dtype, bad, vocab, row_stride, targets[bad]);
        return SPO4J_OK;
    } catch (...) {
        return fail(SPO4J_ERR_INTERNAL, "unexpected C++ exception in token_logprobs forward");
    }
}

extern "C" SPO4J_API int spo4j_token_logprobs_bwd_cpu(
        const void* logits, int32_t dtype, int64_t rows, int64_t vocab, int64_t row_stride,
        const int64_t* targets, int64_t ignore_index, const float* lse, const float* grad_logp,
        void* grad_logits, int64_t grad_row_stride, int32_t num_threads) {
    try {
        clear_error();
        int st = check_common(logits, dtype, rows, vocab, row_stride, targets, ignore_index);
        if (st) return st;
        if (grad_row_stride < vocab)
            return fail(SPO4J_ERR_ARGUMENT, "gradient row stride %" PRId64 " < vocab %" PRId64,
                        grad_row_stride, vocab);
        if (rows > 0 && (!lse || !grad_logp || !grad_logits))
            return fail(SPO4J_ERR_ARGUMENT, "null lse, grad_logp or grad_logits pointer");
        if (grad_logits == logits && grad_row_stride != row_stride)
            return fail(SPO4J_ERR_ARGUMENT,
                        "in-place gradient needs equal strides (logits %" PRId64 ", gradient %" PRId64 ")",
                        row_stride, grad_row_stride);
        // Validate every row before writing anything: an in-place call must not leave the
        // logits half overwritten.
        for (int64_t r = 0; r < rows; r++) {
            if (targets[r] != ignore_index && lse[r] == -std::numeric_limits<float>::infinity())
                return fail(SPO4J_ERR_NONFINITE,
                            "lse at row %" PRId64 " is -inf (a row with no finite logit)", r);
        }
        parallel_rows(rows, vocab, num_threads, MIN_WORK_PER_THREAD, [&](int64_t b, int64_t e) {
            if (dtype == SPO4J_F32)
                backward_rows<SPO4J_F32>(logits, b, e, vocab, row_stride, targets, ignore_index, lse, grad_logp, grad_logits, grad_row_stride);
            else if (dtype == SPO4J_BF16)
                backward_rows<SPO4J_BF16>(logits, b, e, vocab, row_stride, targets, ignore_index, lse, grad_logp, grad_logits, grad_row_stride);
            else
                backward_rows<SPO4J_F16>(logits, b, e, vocab, row_stride, targets, ignore_index, lse, grad_logp, grad_logits, grad_row_stride);
        });
        return SPO4J_OK;
    } catch (...) {
        return fail(SPO4J_ERR_INTERNAL, "unexpected C++ exception in token_logprobs backward");
    }
}
