// token_logprobs: fused log-softmax + gather over LM logits, forward and backward (CPU).
//
//   forward : lse = log sum_v exp(z_v),  logp = z_t - lse,  entropy = lse - sum_v p_v z_v
//   backward: dL/dz_v = g * (1[v == t] - exp(z_v - lse))          (g = dL/dlogp of the row)
//
// Memory: the forward reads each row once from DRAM and writes 2-3 floats per row. It walks
// the row in L1-sized chunks merged into running (max, sum, sum p*(z-max)) with the usual
// online rescaling, so nothing of size rows x V is kept: the backward needs only lse. The
// backward reads each row once and writes it once, in place over the logits when asked.
// Rows are split across num_threads threads.
// Per element the cost is the exp (one per logit in the forward, one in the backward), so the
// row loops are templates on an exp policy (simd.h), compiled for two paths, chosen once per
// call (use_avx512_path()):
//   AVX-512 (*_rows_avx512, compiled for x86-64-v4 only, on CPUs that have it): vexp_avx512
//     (roundscale + two FMAs + polynomial + scalef, ~2 ulp at any x); one-pass forward
//     chunks (exp sums relative to the running max, taken in the pass that finds the chunk
//     max, then rescaled: see ONE_PASS_HEADROOM), so no separate max pass; in the backward,
//     -g folded into the exp's polynomial coefficients once per row (exp_times: no multiply
//     per element); and, where the CPU has AVX512-BF16, the bf16 gradient rounded by
//     VCVTNE2PS2BF16 (*_rows_avx512_bf16).
//   generic (*_rows, cloned per ISA and picked by the loader's ifunc; elsewhere, or forced by
//     SPO4J_CPU_PATH=generic / spo4j_debug_cpu_path(1)): vexp; per chunk a max pass and then
//     an exp-sum pass over the same chunk from L1; bf16 rounded in integer ops.
// Both paths pass the same harness and Java checks (the harness runs its sweep on both).
// Rows whose target is ignore_index give 0 (forward) and a zero gradient row (backward).
// Tests: src/test/java/dev/spo4j/kernels/TokenLogProbsTest.java; benchmark:
// bench/java/dev/spo4j/bench/TokenLogProbsBench.java; native harness:
// native/tests/token_logprobs_check.cpp.
#include <atomic>
#include <cinttypes>
#include <cmath>
#include <cstdlib>
#include <cstring>
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

// Sums over one chunk [c0, c1) relative to mvec: sv += exp(z - m), tv += exp(z - m) (z - m)
// (when want_entropy), and with TRACK_MAX also mv = max(mv, z). tail_v holds the chunk's last
// rem < W values padded with -inf.
template <int DT, class EXP, bool TRACK_MAX>
SPO4J_INLINE void chunk_sums(const typename Io<DT>::T* z, int64_t c0, int64_t pairs_end, int64_t full,
                             vf tail_v, vf mvec, bool want_entropy, vf& sv, vf& tv, vf& mv) {
    using IO = Io<DT>;
    if (want_entropy) {
        if constexpr (DT == SPO4J_BF16) {
            for (int64_t v = c0; v < pairs_end; v += 2 * W) {
                vf a, b;
                split_bf16(z + v, a, b);
                if constexpr (TRACK_MAX) mv = vmax(mv, vmax(a, b));
                vf xa = a - mvec, xb = b - mvec;
                vf ea = EXP::exp(xa), eb = EXP::exp(xb);
                sv += ea + eb;
                tv += (ea > 0.0f ? ea * xa : vf{}) + (eb > 0.0f ? eb * xb : vf{});
            }
        }
        for (int64_t v = pairs_end; v < full; v += W) {
            vf zv = IO::load(z + v);
            if constexpr (TRACK_MAX) mv = vmax(mv, zv);
            vf x = zv - mvec;
            vf e = EXP::exp(x);
            sv += e;
            tv += e > 0.0f ? e * x : vf{};  // exp(-inf)*(-inf) would be NaN
        }
        vf x = tail_v - mvec;
        vf e = EXP::exp(x);
        sv += e;
        tv += e > 0.0f ? e * x : vf{};
    } else {
        if constexpr (DT == SPO4J_BF16) {
            for (int64_t v = c0; v < pairs_end; v += 2 * W) {
                vf a, b;
                split_bf16(z + v, a, b);
                if constexpr (TRACK_MAX) mv = vmax(mv, vmax(a, b));
                sv += EXP::exp(a - mvec) + EXP::exp(b - mvec);
            }
        }
        for (int64_t v = pairs_end; v < full; v += W) {
            vf zv = IO::load(z + v);
            if constexpr (TRACK_MAX) mv = vmax(mv, zv);
            sv += EXP::exp(zv - mvec);
        }
        sv += EXP::exp(tail_v - mvec);
    }
    if constexpr (TRACK_MAX) mv = vmax(mv, tail_v);
}

// One-pass chunks (EXP::one_pass_forward): once the running max m is finite, a chunk's sums
// are taken relative to m in the same pass that finds the chunk's max mc, and rescaled to mc
// afterwards if mc > m. This is exact arithmetic-wise as long as exp(z - m) cannot overflow
// the sums: for mc <= m + HEADROOM each term is at most e^64 (6e27), and a row's sums stay far
// below FLT_MAX. A chunk with mc beyond that (or +inf / NaN) is redone with two passes.
// Saves the separate max pass, and with it the wait on DRAM that the max pass did not
// overlap with any exp work.
constexpr float ONE_PASS_HEADROOM = 64.0f;

// One row, forward. Returns lse and (if want_entropy) the entropy. EXP: ExpGeneric or ExpAvx512.
template <int DT, class EXP>
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
        if constexpr (EXP::one_pass_forward) {
            if (m > NEG_INF) {
                vf sv{}, tv{}, mv = splat(NEG_INF);
                chunk_sums<DT, EXP, true>(z, c0, pairs_end, full, tail_v, splat(m), want_entropy, sv, tv, mv);
                const float mc = hmax(mv);
                if (mc <= m + ONE_PASS_HEADROOM) {
                    s += hsum(sv);
                    t += hsum(tv);
                    if (mc > m) {  // move the sums from m to mc
                        const float d = m - mc;
                        const float scale = std::exp(d);
                        t = rescale_entropy_term(scale, d, s, t);
                        s = scale * s;
                        m = mc;
                    }
                    continue;
                }
                // else: the chunk's sums may have overflowed; redo it with two passes
            }
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
        vf sv{}, tv{}, unused{};
        chunk_sums<DT, EXP, false>(z, c0, pairs_end, full, tail_v, splat(m), want_entropy, sv, tv, unused);
        s += hsum(sv);
        t += hsum(tv);
    }
    RowStats r;
    r.lse = m + std::log(s);  // m = -inf (all -inf) gives -inf; the caller reports it
    r.entropy = want_entropy ? std::log(s) - t / s : 0.0f;
    return r;
}

template <int DT, class EXP>
SPO4J_INLINE void forward_rows_body(const void* logits, int64_t begin, int64_t end, int64_t V,
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
        RowStats st = row_forward<DT, EXP>(z, V, entropy != nullptr);
        if (!std::isfinite(st.lse) && *bad_row < 0) *bad_row = r;  // -inf: no finite logit; NaN: a NaN or +inf one
        lse[r] = st.lse;
        logp[r] = Io<DT>::get(z + tgt) - st.lse;
        if (entropy) entropy[r] = st.entropy;
    }
}

template <int DT, class EXP>
SPO4J_INLINE void backward_rows_body(const void* logits, int64_t begin, int64_t end, int64_t V,
                                     int64_t stride, const int64_t* targets, int64_t ignore_index,
                                     const float* lse, const float* grad_logp, void* grad,
                                     int64_t gstride, int64_t toff, bool one_hot) {
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
        // a vocabulary slice [toff, toff + V) may not hold the target, and a caller may add the
        // one-hot term itself (one_hot false): then only -g exp(z - lse) is written
        const int64_t tl = tgt - toff;
        const bool hit = one_hot && tl >= 0 && tl < V;
        const float zt = hit ? IO::get(z + tl) : 0.0f;  // read before an in-place overwrite
        const vf lv = splat(l);
        const typename EXP::Scale sc = EXP::scale(-g);  // exp_times(x, sc) = -g * exp(x)
        int64_t v0 = 0;
        if constexpr (DT == SPO4J_BF16 && EXP::native_bf16) {
            for (; v0 + 2 * W <= V; v0 += 2 * W) {
                vf a, b;
                EXP::load32(z + v0, a, b);
                EXP::store32(out + v0, EXP::exp_times(a - lv, sc), EXP::exp_times(b - lv, sc));
            }
        } else if constexpr (DT == SPO4J_BF16) {
            for (; v0 + 2 * W <= V; v0 += 2 * W) {
                vf a, b;
                split_bf16(z + v0, a, b);
                join_bf16(out + v0, EXP::exp_times(a - lv, sc), EXP::exp_times(b - lv, sc));
            }
        }
        for (int64_t v = v0; v + W <= V; v += W) IO::store(out + v, EXP::exp_times(IO::load(z + v) - lv, sc));
        int64_t tail = v0 + ((V - v0) / W) * W;
        for (int64_t v = tail; v < V; v++) {
            vf x = splat(IO::get(z + v) - l);
            IO::put(out + v, EXP::exp_times(x, sc)[0]);
        }
        if (hit) {
            vf xt = splat(zt - l);
            IO::put(out + tl, g * (1.0f - EXP::exp(xt)[0]));
        }
    }
}

// The row loops, once per path: cloned per ISA with the generic exp, and compiled for
// x86-64-v4 only with the AVX-512 exp (called only when use_avx512_path()).
#define SPO4J_FWD_ARGS const void *logits, int64_t begin, int64_t end, int64_t V, int64_t stride, \
    const int64_t *targets, int64_t ignore_index, float *logp, float *lse, float *entropy, int64_t *bad_row
#define SPO4J_FWD_PASS logits, begin, end, V, stride, targets, ignore_index, logp, lse, entropy, bad_row
#define SPO4J_BWD_ARGS const void *logits, int64_t begin, int64_t end, int64_t V, int64_t stride, \
    const int64_t *targets, int64_t ignore_index, const float *lse, const float *grad_logp, void *grad, int64_t gstride, \
    int64_t toff, bool one_hot
#define SPO4J_BWD_PASS logits, begin, end, V, stride, targets, ignore_index, lse, grad_logp, grad, gstride, toff, \
    one_hot
template <int DT>
SPO4J_CLONES void forward_rows(SPO4J_FWD_ARGS) { forward_rows_body<DT, ExpGeneric>(SPO4J_FWD_PASS); }
template <int DT>
SPO4J_CLONES void backward_rows(SPO4J_BWD_ARGS) { backward_rows_body<DT, ExpGeneric>(SPO4J_BWD_PASS); }
#if SPO4J_HAVE_V4_PATH
template <int DT>
SPO4J_V4_FLATTEN void forward_rows_avx512(SPO4J_FWD_ARGS) { forward_rows_body<DT, ExpAvx512>(SPO4J_FWD_PASS); }
template <int DT>
SPO4J_V4_FLATTEN void backward_rows_avx512(SPO4J_BWD_ARGS) { backward_rows_body<DT, ExpAvx512>(SPO4J_BWD_PASS); }
SPO4J_V4_BF16_FLATTEN void backward_rows_avx512_bf16(SPO4J_BWD_ARGS) {
    backward_rows_body<SPO4J_BF16, ExpAvx512Bf16>(SPO4J_BWD_PASS);
}
bool cpu_has_avx512_bf16() {
    static const bool has = [] {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512bf16") != 0;
    }();
    return has;
}
#endif

// Runs the forward (or backward) row loop of dtype DT on the path chosen for this call.
template <int DT>
void forward_rows_on(bool avx512, SPO4J_FWD_ARGS) {
#if SPO4J_HAVE_V4_PATH
    if (avx512) return forward_rows_avx512<DT>(SPO4J_FWD_PASS);
#endif
    (void)avx512;
    forward_rows<DT>(SPO4J_FWD_PASS);
}
template <int DT>
void backward_rows_on(bool avx512, SPO4J_BWD_ARGS) {
#if SPO4J_HAVE_V4_PATH
    if constexpr (DT == SPO4J_BF16) {
        if (avx512 && cpu_has_avx512_bf16()) return backward_rows_avx512_bf16(SPO4J_BWD_PASS);
    }
    if (avx512) return backward_rows_avx512<DT>(SPO4J_BWD_PASS);
#endif
    (void)avx512;
    backward_rows<DT>(SPO4J_BWD_PASS);
}

// y = exp(x) with one path's vector exp, W at a time (the tail through a padded vector): the
// harness's direct test of the exps against std::exp (spo4j_debug_cpu_exp).
template <class EXP>
SPO4J_INLINE void exp_array_body(const float* x, float* y, int64_t n) {
    int64_t i = 0;
    for (; i + W <= n; i += W) Io<SPO4J_F32>::store(y + i, EXP::exp(Io<SPO4J_F32>::load(x + i)));
    if (i < n) {
        vf v{};
        for (int64_t k = 0; k < n - i; k++) v[k] = x[i + k];
        v = EXP::exp(v);
        for (int64_t k = 0; k < n - i; k++) y[i + k] = v[k];
    }
}
SPO4J_CLONES void exp_array_generic(const float* x, float* y, int64_t n) { exp_array_body<ExpGeneric>(x, y, n); }
#if SPO4J_HAVE_V4_PATH
SPO4J_V4_FLATTEN void exp_array_avx512(const float* x, float* y, int64_t n) { exp_array_body<ExpAvx512>(x, y, n); }
#endif

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

// Targets are checked against target_limit: the row's whole vocabulary, which is vocab
// except for a slice backward (then the slice's columns are [offset, offset + vocab)).
int check_common(const void* logits, int32_t dtype, int64_t rows, int64_t vocab,
                 int64_t row_stride, const int64_t* targets, int64_t ignore_index,
                 int64_t target_limit) {
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
        if (t != ignore_index && (t < 0 || t >= target_limit))
            return fail(SPO4J_ERR_TARGET,
                        "target %" PRId64 " at row %" PRId64 " is out of range [0, %" PRId64
                        ") and is not ignore_index %" PRId64,
                        t, r, target_limit, ignore_index);
    }
    return SPO4J_OK;
}

// The path in effect: CPU_PATH_GENERIC or CPU_PATH_AVX512; 0 until the first call decides.
std::atomic<int32_t> g_cpu_path{0};

bool cpu_has_v4() {
#if SPO4J_HAVE_V4_PATH
    __builtin_cpu_init();
    return __builtin_cpu_supports("x86-64-v4");
#else
    return false;
#endif
}

int32_t choose_path(int32_t request) {
    return request != CPU_PATH_GENERIC && cpu_has_v4() ? CPU_PATH_AVX512 : CPU_PATH_GENERIC;
}

}  // namespace

bool use_avx512_path() {
    int32_t p = g_cpu_path.load(std::memory_order_relaxed);
    if (p == 0) {
        const char* env = std::getenv("SPO4J_CPU_PATH");
        const bool generic = env && std::strcmp(env, "generic") == 0;
        int32_t expected = 0;
        g_cpu_path.compare_exchange_strong(expected, choose_path(generic ? CPU_PATH_GENERIC : CPU_PATH_AUTO));
        p = g_cpu_path.load(std::memory_order_relaxed);
    }
    return p == CPU_PATH_AVX512;
}

}  // namespace spo4j

using namespace spo4j;

extern "C" SPO4J_API int spo4j_debug_cpu_exp(const float* x, float* y, int64_t n, int32_t path) {
    clear_error();
    if (n < 0 || (n > 0 && (!x || !y))) return fail(SPO4J_ERR_ARGUMENT, "bad exp test arguments");
    if (path == CPU_PATH_GENERIC) {
        exp_array_generic(x, y, n);
        return SPO4J_OK;
    }
#if SPO4J_HAVE_V4_PATH
    if (path == CPU_PATH_AVX512 && cpu_has_v4()) {
        exp_array_avx512(x, y, n);
        return SPO4J_OK;
    }
#endif
    return fail(SPO4J_ERR_NOT_BUILT, "CPU path %d is not available here", int(path));
}

extern "C" SPO4J_API int spo4j_debug_cpu_path(int32_t request) {
    if (request == CPU_PATH_AUTO || request == CPU_PATH_GENERIC)
        spo4j::g_cpu_path.store(choose_path(request));
    return use_avx512_path() ? CPU_PATH_AVX512 : CPU_PATH_GENERIC;
}

extern "C" SPO4J_API int spo4j_token_logprobs_fwd_cpu(
        const void* logits, int32_t dtype, int64_t rows, int64_t vocab, int64_t row_stride,
        const int64_t* targets, int64_t ignore_index, float* logp, float* lse, float* entropy,
        int32_t num_threads) {
    try {
        clear_error();
        int st = check_common(logits, dtype, rows, vocab, row_stride, targets, ignore_index, vocab);
        if (st) return st;
        if (rows > 0 && (!logp || !lse)) return fail(SPO4J_ERR_ARGUMENT, "null logp or lse pointer");
        // Each block records its first row with no finite logit; the smallest is reported.
        std::atomic<int64_t> first_bad{INT64_MAX};
        const bool avx512 = use_avx512_path();
        parallel_rows(rows, vocab, num_threads, MIN_WORK_PER_THREAD, [&](int64_t b, int64_t e) {
            int64_t bad = -1;
            if (dtype == SPO4J_F32)
                forward_rows_on<SPO4J_F32>(avx512, logits, b, e, vocab, row_stride, targets, ignore_index, logp, lse, entropy, &bad);
            else if (dtype == SPO4J_BF16)
                forward_rows_on<SPO4J_BF16>(avx512, logits, b, e, vocab, row_stride, targets, ignore_index, logp, lse, entropy, &bad);
            else
                forward_rows_on<SPO4J_F16>(avx512, logits, b, e, vocab, row_stride, targets, ignore_index, logp, lse, entropy, &bad);
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

namespace {
// The backward of the whole row (vocab_offset 0, full_vocab = vocab) or of the columns
// [vocab_offset, vocab_offset + vocab) of rows of full_vocab entries.
int backward_impl(const void* logits, int32_t dtype, int64_t rows, int64_t vocab, int64_t row_stride,
                  const int64_t* targets, int64_t ignore_index, int64_t vocab_offset, int64_t full_vocab,
                  bool one_hot, const float* lse, const float* grad_logp, void* grad_logits,
                  int64_t grad_row_stride, int32_t num_threads) {
    try {
        clear_error();
        if (vocab_offset < 0 || full_vocab < vocab || vocab_offset > full_vocab - vocab)
            return fail(SPO4J_ERR_ARGUMENT,
                        "vocabulary slice [%" PRId64 ", %" PRId64 " + %" PRId64
                        ") is not inside [0, %" PRId64 ")",
                        vocab_offset, vocab_offset, vocab, full_vocab);
        int st = check_common(logits, dtype, rows, vocab, row_stride, targets, ignore_index, full_vocab);
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
        const bool avx512 = use_avx512_path();
        parallel_rows(rows, vocab, num_threads, MIN_WORK_PER_THREAD, [&](int64_t b, int64_t e) {
            if (dtype == SPO4J_F32)
                backward_rows_on<SPO4J_F32>(avx512, logits, b, e, vocab, row_stride, targets, ignore_index, lse, grad_logp, grad_logits, grad_row_stride, vocab_offset, one_hot);
            else if (dtype == SPO4J_BF16)
                backward_rows_on<SPO4J_BF16>(avx512, logits, b, e, vocab, row_stride, targets, ignore_index, lse, grad_logp, grad_logits, grad_row_stride, vocab_offset, one_hot);
            else
                backward_rows_on<SPO4J_F16>(avx512, logits, b, e, vocab, row_stride, targets, ignore_index, lse, grad_logp, grad_logits, grad_row_stride, vocab_offset, one_hot);
        });
        return SPO4J_OK;
    } catch (...) {
        return fail(SPO4J_ERR_INTERNAL, "unexpected C++ exception in token_logprobs backward");
    }
}
}  // namespace

extern "C" SPO4J_API int spo4j_token_logprobs_bwd_cpu(
        const void* logits, int32_t dtype, int64_t rows, int64_t vocab, int64_t row_stride,
        const int64_t* targets, int64_t ignore_index, const float* lse, const float* grad_logp,
        void* grad_logits, int64_t grad_row_stride, int32_t num_threads) {
    return backward_impl(logits, dtype, rows, vocab, row_stride, targets, ignore_index, 0, vocab, true, lse,
                         grad_logp, grad_logits, grad_row_stride, num_threads);
}

extern "C" SPO4J_API int spo4j_token_logprobs_bwd_slice_cpu(
        const void* logits, int32_t dtype, int64_t rows, int64_t vocab, int64_t row_stride,
        const int64_t* targets, int64_t ignore_index, int64_t vocab_offset, int64_t full_vocab,
        int32_t one_hot, const float* lse, const float* grad_logp, void* grad_logits,
        int64_t grad_row_stride, int32_t num_threads) {
    return backward_impl(logits, dtype, rows, vocab, row_stride, targets, ignore_index, vocab_offset,
                         full_vocab, one_hot != 0, lse, grad_logp, grad_logits, grad_row_stride, num_threads);
}
