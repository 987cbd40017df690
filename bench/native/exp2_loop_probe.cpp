// The bf16 forward's inner loop in isolation, from L1 on one core: what bounds it. Each
// variant sums 2^u over 8192 bf16 values (u = z log2(e) + c, two values per 32-bit lane split
// as in token_logprobs.cpp) 10000 times; the best of 5 passes is printed as cycles per 16
// values at a nominal 3.5 GHz (the clock of the VM measured; scale for another). Timing only:
// the polynomials' coefficients are placeholders, so the sums are not 2^u.
//   g++ -O2 -march=x86-64-v4 bench/native/exp2_loop_probe.cpp -o /tmp/exp2_loop_probe && /tmp/exp2_loop_probe
// Variants: the kernel's (roundscale, subtract, degree-5 polynomial, scalef); scalef replaced
// by a multiply; degree 4; vreduceps in place of roundscale and the subtraction (f in [0, 1),
// scalef by floor(u)); a subtraction in place of roundscale; neither roundscale nor scalef;
// the FMAs alone; a magic-number rounding (u + 1.5 2^23) with scalef; and with the exponent
// added to the polynomial's bits as integers.
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>

namespace {

double now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

template <int DEG>
inline __m512 poly(__m512 f) {
    __m512 p = _mm512_set1_ps(0.0013f);
    for (int i = 1; i <= DEG; i++) p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.1f * float(i)));
    return p;
}

template <int V>
__attribute__((noinline)) float run(const uint16_t* z, int n, int reps) {
    __m512 s = _mm512_setzero_ps(), s2 = s;
    const __m512 L = _mm512_set1_ps(1.4426950408889634f), c = _mm512_set1_ps(-7.f);
    const __m512 M = _mm512_set1_ps(12582912.0f);
    const __m512i hi = _mm512_set1_epi32(int32_t(0xffff0000u));
    constexpr int RN = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    constexpr int RD = _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC;
    for (int r = 0; r < reps; r++) {
        for (int i = 0; i < n; i += 32) {
            const __m512i x = _mm512_loadu_si512(z + i);
            const __m512 a = (__m512)_mm512_slli_epi32(x, 16), b = (__m512)_mm512_and_si512(x, hi);
            const __m512 ua = _mm512_fmadd_ps(a, L, c), ub = _mm512_fmadd_ps(b, L, c);
            __m512 ea, eb;
            if constexpr (V == 0 || V == 1 || V == 2) {
                const __m512 na = _mm512_roundscale_ps(ua, RN), nb = _mm512_roundscale_ps(ub, RN);
                const __m512 pa = V == 2 ? poly<4>(_mm512_sub_ps(ua, na)) : poly<5>(_mm512_sub_ps(ua, na));
                const __m512 pb = V == 2 ? poly<4>(_mm512_sub_ps(ub, nb)) : poly<5>(_mm512_sub_ps(ub, nb));
                ea = V == 1 ? _mm512_mul_ps(pa, na) : _mm512_scalef_ps(pa, na);
                eb = V == 1 ? _mm512_mul_ps(pb, nb) : _mm512_scalef_ps(pb, nb);
            } else if constexpr (V == 3) {
                ea = _mm512_scalef_ps(poly<5>(_mm512_reduce_ps(ua, RD)), ua);
                eb = _mm512_scalef_ps(poly<5>(_mm512_reduce_ps(ub, RD)), ub);
            } else if constexpr (V == 4) {
                ea = _mm512_scalef_ps(poly<5>(_mm512_sub_ps(ua, c)), ua);
                eb = _mm512_scalef_ps(poly<5>(_mm512_sub_ps(ub, c)), ub);
            } else if constexpr (V == 5) {
                ea = _mm512_add_ps(poly<5>(_mm512_sub_ps(ua, c)), ua);
                eb = _mm512_add_ps(poly<5>(_mm512_sub_ps(ub, c)), ub);
            } else if constexpr (V == 6) {
                ea = poly<5>(ua);
                eb = poly<5>(ub);
            } else {
                const __m512 ta = _mm512_add_ps(ua, M), tb = _mm512_add_ps(ub, M);
                const __m512 na = _mm512_sub_ps(ta, M), nb = _mm512_sub_ps(tb, M);
                const __m512 pa = poly<5>(_mm512_sub_ps(ua, na)), pb = poly<5>(_mm512_sub_ps(ub, nb));
                if constexpr (V == 7) {
                    ea = _mm512_scalef_ps(pa, na);
                    eb = _mm512_scalef_ps(pb, nb);
                } else {
                    ea = (__m512)_mm512_add_epi32((__m512i)pa, _mm512_slli_epi32((__m512i)ta, 23));
                    eb = (__m512)_mm512_add_epi32((__m512i)pb, _mm512_slli_epi32((__m512i)tb, 23));
                }
            }
            s = _mm512_add_ps(s, ea);
            s2 = _mm512_add_ps(s2, eb);
        }
    }
    alignas(64) float lanes[16];
    _mm512_store_ps(lanes, _mm512_add_ps(s, s2));
    float t = 0;
    for (float v : lanes) t += v;
    return t;
}

}  // namespace

int main() {
    static uint16_t z[8192];
    for (int i = 0; i < 8192; i++) {
        const float v = 4.0f * std::sin(float(i) * 0.37f);
        uint32_t bits;
        std::memcpy(&bits, &v, 4);
        z[i] = uint16_t(bits >> 16);
    }
    const char* names[] = {"kernel: roundscale, sub, poly5, scalef", "scalef -> mul", "poly4",
                           "vreduceps, poly5, scalef", "sub, poly5, scalef", "sub, poly5, add", "poly5 FMAs only",
                           "magic round, sub, poly5, scalef", "magic round, poly5, integer exponent"};
    float (*fs[])(const uint16_t*, int, int) = {run<0>, run<1>, run<2>, run<3>, run<4>,
                                                run<5>, run<6>, run<7>, run<8>};
    constexpr int NV = 9, N = 8192, REPS = 10000;
    double best[NV];
    std::fill(best, best + NV, 1e30);
    volatile float sink = 0;
    for (int pass = 0; pass < 5; pass++) {
        for (int v = 0; v < NV; v++) {
            const double t0 = now();
            sink = sink + fs[v](z, N, REPS);
            best[v] = std::min(best[v], (now() - t0) / (double(N) * REPS / 16) * 1e9 * 3.5);
        }
    }
    for (int v = 0; v < NV; v++) std::printf("%-40s %.2f cycles / 16 values (at 3.5 GHz)\n", names[v], best[v]);
    return 0;
}
