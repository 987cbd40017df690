// Internal SIMD toolkit for the CPU kernels, written with GCC vector extensions so one
// source compiles to AVX-512, AVX2+FMA or SSE2. Every hot function is marked SPO4J_CLONES:
// GCC emits one copy per target and an ifunc resolver picks the best one for the CPU at
// load time, so the library never needs -march=native and runs on any x86-64.
//
// What is here: a 16-lane float vector (vf), dtype loads/stores (fp32, bf16, fp16 with
// round-to-nearest-even), two branch-free vector exp()s, and a static row-parallel for.
//
// Two CPU paths (token_logprobs.cpp picks one per call with use_avx512_path()):
//   AVX-512: on a CPU with x86-64-v4, functions compiled for that ISA only (SPO4J_V4*), with
//       vexp_avx512 (ExpAvx512, or ExpAvx512Bf16 where the CPU also has AVX512-BF16).
//   generic: everywhere else, or when forced (SPO4J_CPU_PATH=generic in the environment, read
//       at the first kernel call, or spo4j_debug_cpu_path(1)): the SPO4J_CLONES functions,
//       one copy per ISA (x86-64-v4 / v3 / baseline, picked by the loader's ifunc), with vexp
//       (ExpGeneric). This is the kernel as it was before the AVX-512 path.
// exp on each (both: exp(-inf) == 0 exactly, NaN stays NaN, never NaN for -inf; figures from
// `spo4j_harness check`, against std::exp in double over x in [-104, 0]):
//   vexp_avx512: n = roundscale(x log2 e), f = x log2 e - n in two FMAs (f exact to ~1 ulp of
//       f at any |x|), 2^f by a degree-5 polynomial, scalef(2^f, n) = 2^f 2^n (no exponent-bit
//       construction, no shifter add/sub). Max relative error 2.3e-7 (1.9 ulp of 2^-23) over
//       the whole normal range (x >= -87.3) and, for the one-pass forward, on [0, 64]; below
//       -87.3 it underflows gradually to denormals (error at most 2^-149 plus that relative
//       error: 2.5e-45 measured, under two denormal steps), and is exactly 0 below -103.98
//       (x is clamped at -106).
//   vexp: t = x log2 e rounded once to fp32, 2^n built by shifting n into the exponent field,
//       same polynomial. Max relative error 2.6e-7 for x in [-1, 0], growing with |x| to
//       4.0e-6 (33 ulp) near -87 (the rounding of t); denormal results only just below -87.3
//       (n = -126 times 2^f < 1), exactly 0 once t rounds to n <= -127 (x below about -87.7).
//       For the kernels' sums and gradients the large-|x| terms are below 1e-30 of the largest
//       ones, so the difference does not show in lse, logp or the gradient tolerances.
#pragma once

#include <cstdint>
#include <cstring>
#include <system_error>
#include <thread>
#include <vector>

#include "spo4j.h"
#include "status.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SPO4J_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
// The explicit AVX-512 path: functions compiled for x86-64-v4 only, called only after
// cpu_path() said the CPU has it. `flatten` inlines the whole row loop into them, so that the
// intrinsics of vexp_avx512 (which cannot be always_inline into the generic templates: GCC
// refuses target-specific always_inline callees there) end up in code compiled for AVX-512.
#define SPO4J_HAVE_V4_PATH 1
#define SPO4J_V4 __attribute__((target("arch=x86-64-v4")))
#define SPO4J_V4_FLATTEN __attribute__((target("arch=x86-64-v4"), flatten))
#include <immintrin.h>
#else
#define SPO4J_CLONES
#define SPO4J_HAVE_V4_PATH 0
#endif
#define SPO4J_INLINE static inline __attribute__((always_inline))

namespace spo4j {

constexpr int W = 16;  // lanes per vector: one zmm, two ymm or four xmm
typedef float vf __attribute__((vector_size(W * 4)));
typedef int32_t vi __attribute__((vector_size(W * 4)));
typedef uint32_t vu __attribute__((vector_size(W * 4)));
typedef uint16_t vh __attribute__((vector_size(W * 2)));
// Unaligned variants for loads/stores straight from tensors.
typedef float vf_u __attribute__((vector_size(W * 4), aligned(4)));
typedef uint16_t vh_u __attribute__((vector_size(W * 2), aligned(2)));
typedef uint32_t vu_u2 __attribute__((vector_size(W * 4), aligned(2)));  // 2W bf16 values

// bf16 pairs: 64 bytes read as W u32 words hold 2W bf16 values; each word's low half is an
// even element and its high half the next odd one (little-endian). Shifting/masking gives
// both as fp32 vectors with no widening or permute; the order only matters on the way back,
// where join_bf16 puts each pair into one word again.
SPO4J_INLINE void split_bf16(const uint16_t* p, vf& even, vf& odd) {
    vu w = *(const vu_u2*)p;
    even = (vf)(w << 16);
    odd = (vf)(w & 0xffff0000u);
}
// Rounds to bf16 (nearest even; NaN stays a quiet NaN) and leaves the result in the HIGH half.
SPO4J_INLINE vu round_bf16_high(vf v) {
    vu u = (vu)v;
    vu rounded = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    vu nan = (u | 0x00400000u) & 0xffff0000u;
    return (u & 0x7fffffffu) > 0x7f800000u ? nan : rounded;
}
SPO4J_INLINE void join_bf16(uint16_t* p, vf even, vf odd) {
    *(vu_u2*)p = (round_bf16_high(even) >> 16) | round_bf16_high(odd);
}

SPO4J_INLINE vf splat(float x) { return vf{} + x; }
SPO4J_INLINE vf vmax(vf a, vf b) { return a > b ? a : b; }
SPO4J_INLINE float hmax(vf a) {
    float m = a[0];
    for (int i = 1; i < W; i++) m = a[i] > m ? a[i] : m;
    return m;
}
SPO4J_INLINE float hsum(vf a) {
    // Pairwise, so the result does not depend on the target's register width.
    for (int w = W / 2; w >= 1; w /= 2)
        for (int i = 0; i < w; i++) a[i] += a[i + w];
    return a[0];
}

// exp(x) for the kernels' arguments (x = z - max or z - lse, so x <= 0, or -inf / NaN), as
// 2^t with t = x log2(e): t = n + f, n = round(t) and |f| <= 1/2; adding 1.5 * 2^23 rounds t
// and leaves n in the low mantissa bits, so 2^n is built by shifting those bits into the
// exponent (no float->int convert). 2^f by a degree-5 polynomial fitted for relative error
// on [-1/2, 1/2] (max 2.3e-7 in fp32 Horner form, about 2 ulp; the rounding of t adds up to
// |x| 7.3e-8 relative, 4e-6 near -87: see the header). t is clamped at -127, where
// the exponent field becomes 0 and the result exactly 0 (so exp(-inf) == 0); NaN stays NaN.
SPO4J_INLINE vf vexp(vf x) {
    vf t = x * 1.44269504088896341f;
    const vf lo = splat(-127.0f);
    t = t < lo ? lo : t;
    const vf shifter = splat(12582912.0f);  // 1.5 * 2^23
    vf s = t + shifter;
    vf f = t - (s - shifter);
    vf p = splat(1.327647129073739e-3f);
    p = p * f + 9.675541892647743e-3f;
    p = p * f + 5.550713092088699e-2f;
    p = p * f + 2.4022120237350464e-1f;
    p = p * f + 6.931469440460205e-1f;
    p = p * f + 1.0000001192092896f;
    vu scale = ((vu)s << 23) + 0x3f800000u;  // (n + 127) << 23: bits(s) = bits(shifter) + n
    return p * (vf)scale;
}

// The generic exp as a policy type for the row templates (vexp above).
// base2: whether the row forward sums in base 2 with fma / exp2 and half-precision gradients
// take exp2_times_half (the AVX-512 policies below; token_logprobs.cpp); off on the generic
// path, which stays as it was.
// native_bf16: whether the backward may round its bf16 gradient with VCVTNE2PS2BF16.
// Scale / scale(c) / exp_times(x, s): c * exp(x), for the backward.
struct ExpGeneric {
    static constexpr bool base2 = false;
    static constexpr bool native_bf16 = false;
    SPO4J_INLINE vf exp(vf x) { return vexp(x); }
    struct Scale {
        vf c;
    };
    SPO4J_INLINE Scale scale(float c) { return Scale{splat(c)}; }
    SPO4J_INLINE vf exp_times(vf x, const Scale& s) { return s.c * vexp(x); }
};

#if SPO4J_HAVE_V4_PATH
// exp(x) on AVX-512 for the same arguments as vexp, and for x up to +64 in the one-pass
// forward (token_logprobs.cpp): t = x log2(e), n = roundscale(t) (nearest
// integer, as a float), f = x log2(e) - n computed as fma(x, L_hi, -n) + x L_lo with
// L_hi + L_lo = log2(e) to ~2^-48 (the first FMA is exact enough because x L_hi - n is small),
// 2^f by the same degree-5 polynomial as vexp, and scalef(2^f, n) = 2^f * 2^n, which rounds
// once, underflows gradually and needs no exponent-bit construction. x is clamped at -106
// first: -inf becomes -106, whose n = -153 makes scalef round to exactly 0 (1.42 * 2^-153 <
// 2^-150); NaN passes the clamp (the compare is false) and stays NaN through every step.
// Not always_inline (see SPO4J_V4_FLATTEN): only SPO4J_V4 functions call it.
// c * exp(x) for the backward's -g * exp(z - lse): the same steps with the polynomial's six
// coefficients k[] pre-multiplied by c (once per row, vexp_avx512_coeffs), which saves the
// multiply (an FMA-port op: the exp is bound on those) and one rounding.
SPO4J_V4 inline vf vexp_avx512_poly(vf x, const __m512* k) {
    const vf lo = vf{} - 106.0f;
    x = x < lo ? lo : x;
    const __m512 xm = (__m512)x;
    const __m512 t = _mm512_mul_ps(xm, _mm512_set1_ps(1.44269504088896341f));
    const __m512 n = _mm512_mask_roundscale_ps(t, 0xffff, t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 f = _mm512_fmsub_ps(xm, _mm512_set1_ps(1.4426950216293335f), n);
    f = _mm512_fmadd_ps(xm, _mm512_set1_ps(1.925963033500011e-08f), f);
    __m512 p = k[0];
    for (int i = 1; i < 6; i++) p = _mm512_fmadd_ps(p, f, k[i]);
    return (vf)_mm512_mask_scalef_ps(p, 0xffff, p, n);
}
struct ExpAvx512Scale {
    __m512 k[6];
};
SPO4J_V4 inline ExpAvx512Scale vexp_avx512_coeffs(float c) {
    static const float coef[6] = {1.327647129073739e-3f, 9.675541892647743e-3f, 5.550713092088699e-2f,
                                  2.4022120237350464e-1f, 6.931469440460205e-1f, 1.0000001192092896f};
    ExpAvx512Scale s;
    for (int i = 0; i < 6; i++) s.k[i] = _mm512_set1_ps(c * coef[i]);
    return s;
}
// 2^f (|f| <= 1/2) by the degree-5 polynomial, times 2^n by scalef: the shared tail of
// vexp_avx512 and vexp2_avx512.
SPO4J_V4 inline vf vexp2_poly5_scalef(__m512 f, __m512 n) {
    __m512 p = _mm512_set1_ps(1.327647129073739e-3f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.675541892647743e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.550713092088699e-2f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4022120237350464e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.931469440460205e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0000001192092896f));
    return (vf)_mm512_mask_scalef_ps(p, 0xffff, p, n);
}
SPO4J_V4 inline vf vexp_avx512(vf x) {
    const vf lo = vf{} - 106.0f;
    x = x < lo ? lo : x;
    const __m512 xm = (__m512)x;
    const __m512 t = _mm512_mul_ps(xm, _mm512_set1_ps(1.44269504088896341f));
    // The mask forms with an all-ones mask compile to the plain instructions; the unmasked
    // intrinsics trip GCC 12's -Wmaybe-uninitialized on their _mm512_undefined_ps().
    const __m512 n = _mm512_mask_roundscale_ps(t, 0xffff, t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 f = _mm512_fmsub_ps(xm, _mm512_set1_ps(1.4426950216293335f), n);  // L_hi = float(log2 e)
    f = _mm512_fmadd_ps(xm, _mm512_set1_ps(1.925963033500011e-08f), f);        // L_lo = log2 e - L_hi
    return vexp2_poly5_scalef(f, n);
}
// 2^u for the AVX-512 path's base-2 forward (token_logprobs.cpp), where u = z log2(e) + c is
// the logit in base-2 units relative to the row's running base: n = roundscale(u), f = u - n
// (exact: |f| <= 1/2), 2^f by the degree-5 polynomial of vexp_avx512, scalef(2^f, n). Four
// instructions and the polynomial: the subtraction of the max and the split of log2(e) into
// two FMAs are gone (u comes from one FMA in the caller). The relative error is that of the
// polynomial (2.3e-7) plus the rounding of u (2^-24 |u|, so 3.3e-7 for |u| < 16; the forward
// keeps the terms that matter there). Very negative finite u gives exactly 0 (scalef rounds
// below 2^-149 to 0). No clamp: u = -inf, +inf or NaN gives NaN, so a caller that feeds it
// unchecked logits must detect a non-finite sum and redo that part with u clamped at EXP2_CLAMP.
SPO4J_V4 inline vf vexp2_avx512(vf u) {
    const __m512 um = (__m512)u;
    const __m512 n = _mm512_mask_roundscale_ps(um, 0xffff, um, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 f = _mm512_sub_ps(um, n);
    return vexp2_poly5_scalef(f, n);
}
// Callers clamp u at EXP2_CLAMP first where it may be -inf: 2^-160 rounds to exactly 0, and
// the clamped u keeps the entropy's product 2^u u finite (0 * -inf would be NaN).
constexpr float EXP2_CLAMP = -160.0f;
SPO4J_V4 inline vf vfma_avx512(vf a, vf b, vf c) {
    return (vf)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
}
// c * 2^u for a half-precision (bf16 / fp16) gradient: f = u - floor(u) by VREDUCEPS, a
// degree-4 polynomial in f (relative error 2.7e-6, against 2^-9 for the bf16 rounding that
// follows and 2^-12 for fp16) with c folded into its five coefficients once per row
// (vexp2_half_coeffs), and scalef by u. Two FMAs fewer than vexp_avx512_poly, whose degree 5
// and split log2(e) serve fp32 gradients. VREDUCEPS takes the place of a clamp, a roundscale
// and a subtraction (bf16 backward faster in six of six alternating cpu-ab comparisons:
// bench/results/cpu-ab-vreduce-20261203.md).
struct Exp2HalfScale {
    __m512 k[5];
};
SPO4J_V4 inline Exp2HalfScale vexp2_half_coeffs(float c) {
    // 2^f on [0, 1]: relative minimax, 2.7e-6 evaluated in fp32 (as the former fit on [-1/2, 1/2])
    static const float coef[5] = {1.3534167781472206e-2f, 5.2011460065841675e-2f, 2.414427548646927e-1f,
                                  6.930038332939148e-1f, 1.0000026226043701f};
    Exp2HalfScale s;
    for (int i = 0; i < 5; i++) s.k[i] = _mm512_set1_ps(c * coef[i]);
    return s;
}
SPO4J_V4 inline vf vexp2_half_poly(vf u, const Exp2HalfScale& s) {
    // f = u - floor(u) in [0, 1] by one VREDUCEPS, and scalef(p, u) = p 2^floor(u). No clamp:
    // VREDUCEPS gives 0 for +-inf, so u = -inf gives p(0) 2^-inf = exactly 0; NaN stays NaN.
    const __m512 um = (__m512)u;
    const __m512 f = _mm512_mask_reduce_ps(um, 0xffff, um, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    __m512 p = s.k[0];
    for (int i = 1; i < 5; i++) p = _mm512_fmadd_ps(p, f, s.k[i]);
    return (vf)_mm512_mask_scalef_ps(p, 0xffff, p, um);
}

struct ExpAvx512 {
    static constexpr bool base2 = true;
    static constexpr bool native_bf16 = false;
    SPO4J_V4 static inline vf exp(vf x) { return vexp_avx512(x); }
    using Scale = ExpAvx512Scale;
    SPO4J_V4 static inline Scale scale(float c) { return vexp_avx512_coeffs(c); }
    SPO4J_V4 static inline vf exp_times(vf x, const Scale& s) { return vexp_avx512_poly(x, s.k); }
    SPO4J_V4 static inline vf fma(vf a, vf b, vf c) { return vfma_avx512(a, b, c); }
    SPO4J_V4 static inline vf exp2(vf u) { return vexp2_avx512(u); }
    using HalfScale = Exp2HalfScale;
    SPO4J_V4 static inline HalfScale half_scale(float c) { return vexp2_half_coeffs(c); }
    SPO4J_V4 static inline vf exp2_times_half(vf u, const HalfScale& s) { return vexp2_half_poly(u, s); }
};

// The AVX-512 path on a CPU that also has AVX512-BF16 (x86-64-v4 does not include it):
// the bf16 backward reads 32 values in order (zero-extend + shift) and rounds its two
// result vectors to bf16 in one VCVTNE2PS2BF16 (round to nearest even, NaN stays a quiet
// NaN, like round_bf16_high; but a denormal fp32 input, |g| < 2^-126, becomes +-0, where the
// software rounding keeps it as a bf16 denormal), instead of ~20 integer ops per 32 values.
#define SPO4J_V4_BF16 __attribute__((target("arch=x86-64-v4,avx512bf16")))
#define SPO4J_V4_BF16_FLATTEN __attribute__((target("arch=x86-64-v4,avx512bf16"), flatten))
struct ExpAvx512Bf16 {
    static constexpr bool base2 = true;
    static constexpr bool native_bf16 = true;
    SPO4J_V4_BF16 static inline vf exp(vf x) { return vexp_avx512(x); }
    using Scale = ExpAvx512Scale;
    SPO4J_V4_BF16 static inline Scale scale(float c) { return vexp_avx512_coeffs(c); }
    SPO4J_V4_BF16 static inline vf exp_times(vf x, const Scale& s) { return vexp_avx512_poly(x, s.k); }
    SPO4J_V4_BF16 static inline vf fma(vf a, vf b, vf c) { return vfma_avx512(a, b, c); }
    SPO4J_V4_BF16 static inline vf exp2(vf u) { return vexp2_avx512(u); }
    using HalfScale = Exp2HalfScale;
    SPO4J_V4_BF16 static inline HalfScale half_scale(float c) { return vexp2_half_coeffs(c); }
    SPO4J_V4_BF16 static inline vf exp2_times_half(vf u, const HalfScale& s) { return vexp2_half_poly(u, s); }
    // p[0..15] -> lo, p[16..31] -> hi, as fp32 (Io<SPO4J_BF16>::load, defined below)
    SPO4J_V4_BF16 static inline void load32(const uint16_t* p, vf& lo, vf& hi);
    SPO4J_V4_BF16 static inline void store32(uint16_t* p, vf lo, vf hi) {
        _mm512_storeu_si512((void*)p, (__m512i)_mm512_cvtne2ps_pbh((__m512)hi, (__m512)lo));
    }
};
#endif

// Which CPU path the kernels take (token_logprobs.cpp): the AVX-512 one when the CPU has
// x86-64-v4 and nothing forced the generic one (SPO4J_CPU_PATH=generic, read once, or
// spo4j_debug_cpu_path(1)). Cheap: one relaxed atomic load after the first call.
enum CpuPath : int32_t { CPU_PATH_AUTO = 0, CPU_PATH_GENERIC = 1, CPU_PATH_AVX512 = 2 };
bool use_avx512_path();

SPO4J_INLINE float bf16_to_f32(uint16_t h) {
    uint32_t u = uint32_t(h) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
SPO4J_INLINE uint16_t f32_to_bf16(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even
    return uint16_t(u >> 16);
}
SPO4J_INLINE float f16_to_f32(uint16_t h) {
    uint32_t em = h & 0x7fffu;
    uint32_t u = em << 13;
    float f;
    std::memcpy(&f, &u, 4);
    f *= 5.192296858534828e+33f;  // 2^112 rebias; exact for normals and subnormals
    std::memcpy(&u, &f, 4);
    if (em >= 0x7c00u) u = (em << 13) | 0x7f800000u;  // inf / NaN
    u |= uint32_t(h & 0x8000u) << 16;
    std::memcpy(&f, &u, 4);
    return f;
}
SPO4J_INLINE uint16_t f32_to_f16(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000u;
    u &= 0x7fffffffu;
    uint32_t h;
    if (u >= 0x47800000u) {           // >= 65536, inf or NaN
        h = u > 0x7f800000u ? 0x7e00u : 0x7c00u;
    } else if (u < 0x38800000u) {     // below the smallest normal half: subnormal or zero
        float v;
        std::memcpy(&v, &u, 4);
        v += 0.5f;                    // aligns the mantissa; the FPU rounds to nearest even
        uint32_t vb;
        std::memcpy(&vb, &v, 4);
        h = vb - 0x3f000000u;
    } else {
        uint32_t odd = (u >> 13) & 1u;
        u += 0xc8000fffu + odd;       // rebias (15 - 127) << 23, plus rounding
        h = u >> 13;
    }
    return uint16_t(h | sign);
}

// Vector loads/stores by dtype.
template <int DT> struct Io;
template <> struct Io<SPO4J_F32> {
    using T = float;
    SPO4J_INLINE vf load(const T* p) { return *(const vf_u*)p; }
    SPO4J_INLINE void store(T* p, vf v) { *(vf_u*)p = v; }
    SPO4J_INLINE float get(const T* p) { return *p; }
    SPO4J_INLINE void put(T* p, float v) { *p = v; }
};
template <> struct Io<SPO4J_BF16> {
    using T = uint16_t;
    SPO4J_INLINE vf load(const T* p) {
        vu u = __builtin_convertvector(*(const vh_u*)p, vu) << 16;
        return (vf)u;
    }
    SPO4J_INLINE void store(T* p, vf v) {
        vu u = (vu)v;
        vu rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
        vu nan = (u >> 16) | 0x40u;
        vu r = (u & 0x7fffffffu) > 0x7f800000u ? nan : rounded;
        *(vh_u*)p = __builtin_convertvector(r, vh);
    }
    SPO4J_INLINE float get(const T* p) { return bf16_to_f32(*p); }
    SPO4J_INLINE void put(T* p, float v) { *p = f32_to_bf16(v); }
};
#if SPO4J_HAVE_V4_PATH
SPO4J_V4_BF16 inline void ExpAvx512Bf16::load32(const uint16_t* p, vf& lo, vf& hi) {
    // VPMOVZXWD from memory and a shift: GCC compiles Io<SPO4J_BF16>::load's vector
    // conversion into two 128-bit widenings and an insert per 16 values here
    // (the zero-masked forms with an all-ones mask: the plain ones trip -Wmaybe-uninitialized)
    const __mmask16 all = 0xffff;
    lo = (vf)_mm512_maskz_slli_epi32(all, _mm512_maskz_cvtepu16_epi32(all, _mm256_loadu_si256((const __m256i*)p)), 16);
    hi = (vf)_mm512_maskz_slli_epi32(all, _mm512_maskz_cvtepu16_epi32(all, _mm256_loadu_si256((const __m256i*)(p + W))), 16);
}
#endif
template <> struct Io<SPO4J_F16> {
    using T = uint16_t;
    SPO4J_INLINE vf load(const T* p) {
        vu h = __builtin_convertvector(*(const vh_u*)p, vu);
        vu em = h & 0x7fffu;
        vf f = (vf)(em << 13) * 5.192296858534828e+33f;
        vu u = (vu)f;
        u = em >= 0x7c00u ? ((em << 13) | 0x7f800000u) : u;
        return (vf)(u | ((h & 0x8000u) << 16));
    }
    SPO4J_INLINE void store(T* p, vf v) {
        for (int i = 0; i < W; i++) p[i] = f32_to_f16(v[i]);
    }
    SPO4J_INLINE float get(const T* p) { return f16_to_f32(*p); }
    SPO4J_INLINE void put(T* p, float v) { *p = f32_to_f16(v); }
};

// Runs fn(begin, end) over [0, n) split into contiguous blocks, one per thread. The caller's
// thread takes the first block; threads are started per call (tens of microseconds, small
// next to a rows x V pass) and only when each gets at least min_work elements of work.
// When the OS refuses a thread (std::system_error from std::thread, e.g. a process limit),
// the blocks not started run on the calling thread after its own: the result is the same,
// and every started thread is joined (an unjoined std::thread aborts the process).
// fn must not throw.
template <class Fn>
void parallel_rows(int64_t n, int64_t work_per_row, int num_threads, int64_t min_work, Fn&& fn) {
    int64_t by_work = work_per_row > 0 ? (n * work_per_row) / (min_work > 0 ? min_work : 1) : n;
    int64_t t = num_threads < 1 ? 1 : num_threads;
    if (t > n) t = n;
    if (t > by_work) t = by_work;
    if (t <= 1) {
        fn(int64_t(0), n);
        return;
    }
    struct Joiner {
        std::vector<std::thread> pool;
        ~Joiner() {
            for (auto& th : pool)
                if (th.joinable()) th.join();
        }
    } started;
    int64_t per = n / t, extra = n % t;
    int64_t begin0 = 0, end0 = per + (extra > 0);
    int64_t b = end0;
    try {
        started.pool.reserve(size_t(t - 1));
        for (int64_t i = 1; i < t; i++) {
            int64_t e = b + per + (i < extra);
            if (refuse_thread_start())
                throw std::system_error(std::make_error_code(std::errc::resource_unavailable_try_again));
            started.pool.emplace_back([&fn, b, e] { fn(b, e); });
            b = e;
        }
    } catch (const std::exception&) {
        // [b, n) was not handed to a thread: run it here
    }
    fn(begin0, end0);
    if (b < n) fn(b, n);
}

}  // namespace spo4j
