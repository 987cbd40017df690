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
//   AVX-512 (*_rows_avx512, compiled for x86-64-v4 only, on CPUs that have it): the forward
//     sums in base 2 relative to a running base (row_forward_base2): each logit is one FMA
//     (u = z log2(e) + c) and a 2^u of roundscale, a subtraction, a degree-5 polynomial and
//     scalef, with no max subtraction, max tracking or clamp in the chunks that pass a check
//     on their sum (the others are redone with a max pass); the fp32 backward uses
//     vexp_avx512 (roundscale + two FMAs + polynomial + scalef, ~2 ulp at any x) with -g
//     folded into the polynomial's coefficients once per row (exp_times: no multiply per
//     element); bf16 / fp16 gradients take 2^u with u from one FMA and a degree-4 polynomial
//     (their rounding is 2^-9 / 2^-12; the polynomial's error 2.7e-6); and, where the CPU has
//     AVX512-BF16, the bf16 gradient is rounded by VCVTNE2PS2BF16 (*_rows_avx512_bf16).
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

// One row, forward, on the generic path: per chunk a max pass, then the exp sums from L1.
// Returns lse and (if want_entropy) the entropy.
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

// One row, forward, on the AVX-512 path (EXP::base2): the sums are kept in base 2 relative to
// a running base c (a float holding an integer), each logit entering as u = z log2(e) + c in
// one FMA, its term 2^u by EXP::exp2 (no clamp, no max subtraction, no max tracking):
//   s = sum 2^u,   T = sum 2^u u,   lse = -c / log2(e) + ln s,   entropy = ln s - T / (s log2(e))
// (u = (z - m) log2(e) exactly for m = -c / log2(e), so the fp32 value of log2(e) only scales
// z - m by 1 - 1.3e-8, and |z - m| is small for the terms that matter). After each chunk the
// base moves up by k = ilogb(s) when s >= 2: c -= k, s *= 2^-k, T = 2^-k (T - k s), all exact,
// so s stays in [1/2, 2) and the next chunk's terms near 1.
// A fast chunk is accepted when its sum is below FAST_ACCEPT (2^11 = CHUNK): then every term
// had u < 11, where the rounding of u costs at most 3.3e-7 relative. Otherwise (a logit more
// than 11 doublings above the base, or +inf / NaN, which make the sum inf or NaN, or -inf in a
// row with entropy: see below) the chunk
// is redone carefully: a max pass, the base moved up to the chunk's max, and sums with the
// clamped exp (-inf gives exactly 0). A row whose chunk max is beyond +-2^20 is handed to the
// two-pass kernel (row_forward). The first chunk with a finite max sets the base. On
// real rows the careful pass runs for the first chunk and rarely after it (each redo raises
// the base by at least the jump that caused it).
constexpr float FAST_ACCEPT = 2048.0f;
constexpr float LOG2E_F = 1.44269504088896341f;
constexpr float BASE2_MAX_LOGIT = 1048576.0f;

struct Base2Sums {
    float c = 0.0f;  // base: term = 2^(z log2e + c)
    float s = 0.0f;  // sum of terms
    float t = 0.0f;  // sum of term * u (entropy)
    bool based = false;
    // Moves the base up by k >= 1 doublings (exact while |c| < 2^24, where c holds an integer;
    // beyond that every float is an integer and c - k rounds to an integer too).
    void shift(int k) {
        c -= float(k);
        t = std::ldexp(t - float(k) * s, -k);
        s = std::ldexp(s, -k);
    }
    // Keeps s in [1/2, 2) after a chunk.
    void renormalise() {
        if (s >= 2.0f && std::isfinite(s)) shift(std::ilogb(s));
    }
};

// sv += 2^u (tv += 2^u u when ENT) over one chunk's full vectors [c0, full), u = z log2e + c.
template <int DT, class EXP, bool CLAMPED, bool ENT>
SPO4J_INLINE void base2_chunk(const typename Io<DT>::T* z, int64_t c0, int64_t pairs_end, int64_t full,
                              vf cv, vf& sv, vf& tv) {
    using IO = Io<DT>;
    const vf L = splat(LOG2E_F);
    if constexpr (DT == SPO4J_BF16) {
        for (int64_t v = c0; v < pairs_end; v += 2 * W) {
            vf a, b;
            split_bf16(z + v, a, b);
            vf ua = EXP::fma(a, L, cv), ub = EXP::fma(b, L, cv);
            if constexpr (CLAMPED) {  // a finite u for the entropy's product (0 * -inf is NaN)
                const vf lo = splat(EXP2_CLAMP);
                ua = ua < lo ? lo : ua;
                ub = ub < lo ? lo : ub;
            }
            vf ea = EXP::exp2(ua), eb = EXP::exp2(ub);
            sv += ea + eb;
            if constexpr (ENT) tv = EXP::fma(ea, ua, EXP::fma(eb, ub, tv));
        }
    }
    for (int64_t v = pairs_end; v < full; v += W) {
        vf u = EXP::fma(IO::load(z + v), L, cv);
        if constexpr (CLAMPED) {
            const vf lo = splat(EXP2_CLAMP);
            u = u < lo ? lo : u;
        }
        vf e = EXP::exp2(u);
        sv += e;
        if constexpr (ENT) tv = EXP::fma(e, u, tv);
    }
}

template <int DT, class EXP>
SPO4J_INLINE RowStats row_forward_base2(const typename Io<DT>::T* z, int64_t V, bool want_entropy) {
    using IO = Io<DT>;
    const float NEG_INF = -std::numeric_limits<float>::infinity();
    const float NAN_F = std::numeric_limits<float>::quiet_NaN();
    Base2Sums b;
    for (int64_t c0 = 0; c0 < V; c0 += CHUNK) {
        const int64_t c1 = c0 + CHUNK < V ? c0 + CHUNK : V;
        const int64_t pairs_end = DT == SPO4J_BF16 ? c0 + ((c1 - c0) / (2 * W)) * (2 * W) : c0;
        const int64_t full = pairs_end + ((c1 - pairs_end) / W) * W;
        const int64_t rem = c1 - full;
        vf tail_v = splat(NEG_INF);
        if (rem) {
            for (int i = 0; i < W; i++) tail_v[i] = i < rem ? IO::get(z + full + i) : NEG_INF;
        }
        if (b.based) {
            vf sv{}, tv{};
            const vf cv = splat(b.c);
            if (want_entropy) {
                base2_chunk<DT, EXP, false, true>(z, c0, pairs_end, full, cv, sv, tv);
            } else {
                base2_chunk<DT, EXP, false, false>(z, c0, pairs_end, full, cv, sv, tv);
            }
            if (rem) {  // the padding is -inf: the clamped exp
                vf u = EXP::fma(tail_v, splat(LOG2E_F), cv);
                const vf lo = splat(EXP2_CLAMP);
                u = u < lo ? lo : u;
                vf e = EXP::exp2(u);
                sv += e;
                tv = EXP::fma(e, u, tv);
            }
            // Not accepted: a NaN or +inf sum, and an entropy sum made NaN by 2^u u at u = -inf
            // (scalef gives 2^-inf = 0 from the NaN polynomial on the CPUs measured here: the
            // term itself is then right, its product with u is not).
            const float sc = hsum(sv), tc = want_entropy ? hsum(tv) : 0.0f;
            if (sc < FAST_ACCEPT && !std::isnan(tc)) {
                b.s += sc;
                b.t += tc;
                b.renormalise();
                continue;
            }
        }
        // careful: the chunk's max first
        vf mv = tail_v;
        if constexpr (DT == SPO4J_BF16) {
            for (int64_t v = c0; v < pairs_end; v += 2 * W) {
                vf x, y;
                split_bf16(z + v, x, y);
                mv = vmax(mv, vmax(x, y));
            }
        }
        for (int64_t v = pairs_end; v < full; v += W) mv = vmax(mv, IO::load(z + v));
        const float mc = hmax(mv);
        if (!(mc > NEG_INF)) {  // every logit -inf (contributes nothing), unless a NaN hid in the max
            for (int64_t v = c0; v < c1; v++)
                if (std::isnan(IO::get(z + v))) return RowStats{NAN_F, NAN_F};
            continue;
        }
        if (!(mc < std::numeric_limits<float>::infinity())) return RowStats{NAN_F, NAN_F};  // +inf or NaN
        // Logits of magnitude 2^20 and more: fp32 cannot hold z log2(e) + c to a fraction of
        // a doubling there, so the row goes through the two-pass kernel (exact at any scale).
        if (std::fabs(mc) > BASE2_MAX_LOGIT) return row_forward<DT, EXP>(z, V, want_entropy);
        const float top = std::ceil(mc * LOG2E_F);
        if (!b.based) {
            b.c = -top;
            b.based = true;
        } else {
            const float umax = std::fma(mc, LOG2E_F, b.c);
            if (umax > 200.0f) {  // everything so far is below 2^-200 of this chunk's max
                b = Base2Sums{};
                b.c = -top;
                b.based = true;
            } else if (umax > 0.0f) {
                b.shift(int(std::ceil(umax)));
            }
        }
        vf sv{}, tv{};
        const vf cv = splat(b.c);
        if (want_entropy) {
            base2_chunk<DT, EXP, true, true>(z, c0, pairs_end, full, cv, sv, tv);
        } else {
            base2_chunk<DT, EXP, true, false>(z, c0, pairs_end, full, cv, sv, tv);
        }
        {
            vf u = EXP::fma(tail_v, splat(LOG2E_F), cv);
            const vf lo = splat(EXP2_CLAMP);
            u = u < lo ? lo : u;
            vf e = EXP::exp2(u);
            sv += e;
            tv = EXP::fma(e, u, tv);
        }
        b.s += hsum(sv);
        b.t += want_entropy ? hsum(tv) : 0.0f;  // NaN logits: s is NaN, and so is lse below
        b.renormalise();
    }
    RowStats r;
    if (!b.based) {  // no finite logit: lse = -inf, as on the generic path; the caller reports it
        r.lse = NEG_INF;
        r.entropy = NAN_F;
        return r;
    }
    const double ln_s = std::log(double(b.s));
    r.lse = float(-double(b.c) / double(LOG2E_F) + ln_s);
    r.entropy = want_entropy ? float(ln_s - double(b.t) / (double(b.s) * double(LOG2E_F))) : 0.0f;
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
        RowStats st;
        if constexpr (EXP::base2) {
            st = row_forward_base2<DT, EXP>(z, V, entropy != nullptr);
        } else {
            st = row_forward<DT, EXP>(z, V, entropy != nullptr);
        }
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
        if constexpr (DT != SPO4J_F32 && EXP::base2) {
            // Half-precision gradients on the AVX-512 path: -g 2^u with u = z log2(e) - P in
            // one FMA, P = fl(lse log2(e)), and a degree-4 polynomial (simd.h, vexp2_half_poly).
            // The rounding of P, e = lse log2(e) - P (exact by an FMA), is folded into the
            // polynomial's scale as 2^-e, so the result does not depend on lse's magnitude;
            // beyond 2^20 (where P's rounding reaches whole doublings) the row takes the
            // general loop below. The vector loops leave v0 = V, which skips that loop.
            if (std::fabs(l) <= BASE2_MAX_LOGIT) {
                const float P = l * LOG2E_F, e = std::fma(l, LOG2E_F, -P);
                const vf L = splat(LOG2E_F), cu = splat(-P);
                const typename EXP::HalfScale hs = EXP::half_scale(-g * std::exp2(-e));
                if constexpr (DT == SPO4J_BF16 && EXP::native_bf16) {
                    // the last < 2W values too, through a padded copy: VCVTNE2PS2BF16 flushes
                    // fp32 denormals where the software rounding keeps them, so every value of
                    // a row takes the same rounding and vocabulary slices match the whole row
                    for (int64_t n = 0; v0 < V; v0 += n) {
                        const bool part = v0 + 2 * W > V;
                        n = part ? V - v0 : 2 * W;
                        uint16_t zin[2 * W] = {}, gout[2 * W];
                        const uint16_t* zp = part ? zin : z + v0;
                        if (part) std::memcpy(zin, z + v0, size_t(n) * 2);
                        vf a, b;
                        EXP::load32(zp, a, b);
                        EXP::store32(part ? gout : out + v0, EXP::exp2_times_half(EXP::fma(a, L, cu), hs),
                                     EXP::exp2_times_half(EXP::fma(b, L, cu), hs));
                        if (part) std::memcpy(out + v0, gout, size_t(n) * 2);
                    }
                } else if constexpr (DT == SPO4J_BF16) {
                    for (; v0 + 2 * W <= V; v0 += 2 * W) {
                        vf a, b;
                        split_bf16(z + v0, a, b);
                        join_bf16(out + v0, EXP::exp2_times_half(EXP::fma(a, L, cu), hs),
                                  EXP::exp2_times_half(EXP::fma(b, L, cu), hs));
                    }
                }
                for (; v0 + W <= V; v0 += W)
                    IO::store(out + v0, EXP::exp2_times_half(EXP::fma(IO::load(z + v0), L, cu), hs));
                for (; v0 < V; v0++)  // the same arithmetic, so a vocabulary slice's edges match the whole row
                    IO::put(out + v0, EXP::exp2_times_half(EXP::fma(splat(IO::get(z + v0)), L, cu), hs)[0]);
            }
        }
        if constexpr (DT == SPO4J_BF16 && EXP::native_bf16) {
            for (int64_t n = 0; v0 < V; v0 += n) {  // with a padded last step, as above
                const bool part = v0 + 2 * W > V;
                n = part ? V - v0 : 2 * W;
                uint16_t zin[2 * W] = {}, gout[2 * W];
                const uint16_t* zp = part ? zin : z + v0;
                if (part) std::memcpy(zin, z + v0, size_t(n) * 2);
                vf a, b;
                EXP::load32(zp, a, b);
                EXP::store32(part ? gout : out + v0, EXP::exp_times(a - lv, sc), EXP::exp_times(b - lv, sc));
                if (part) std::memcpy(out + v0, gout, size_t(n) * 2);
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
// y = 2^x with the base-2 forward's exp (half false) or the half-precision gradients' (true)
SPO4J_V4_FLATTEN void exp2_array_avx512(const float* x, float* y, int64_t n, bool half) {
    const Exp2HalfScale one = vexp2_half_coeffs(1.0f);
    for (int64_t i = 0; i < n; i += W) {
        const int64_t k = n - i < W ? n - i : W;
        vf v{};
        for (int64_t j = 0; j < k; j++) v[j] = x[i + j];
        v = half ? vexp2_half_poly(v, one) : vexp2_avx512(v);
        for (int64_t j = 0; j < k; j++) y[i + j] = v[j];
    }
}
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
    if ((path == 3 || path == 4) && cpu_has_v4()) {
        exp2_array_avx512(x, y, n, path == 4);
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
