// Internal: the one step of the online (running-max) softmax statistics that both token
// log-probs kernels share, written once for the CPU kernel (native/cpu/token_logprobs.cpp),
// the CUDA kernel (native/cuda/token_logprobs.cu) and the harness's check of it on extreme
// values (native/tests/token_logprobs_check.cpp).
//
// Over a set of logits, relative to a running max m:
//   s = sum exp(z - m),   t = sum exp(z - m) * (z - m)       (entropy = log s - t / s)
// When the max moves from m to m' > m (d = m - m' <= 0, scale = exp(d)):
//   s' = scale * s,       t' = scale * (t + d * s)
// Once scale underflows to 0 every old term vanishes and t' must be exactly 0; evaluated as
// written it would be 0 * (-inf) = NaN as soon as d * s overflows, i.e. when the logits of a
// row span more than FLT_MAX / s (a row with entries near -1e38 and +1e38). So d is clamped
// at -128 first: exp(d) is 0 below -104 (even as a subnormal), so the clamp changes nothing
// while scale > 0, and with s < 2^31 the product stays finite, so 0 * finite = 0 after it.
#pragma once

#include <math.h>

#ifndef SPO4J_HD
#ifdef __CUDACC__
#define SPO4J_HD __host__ __device__ __forceinline__
#else
#define SPO4J_HD inline
#endif
#endif

namespace spo4j {

// t' of the rescale above; `scale` = exp(d) as the caller computed it (fast or exact).
SPO4J_HD float rescale_entropy_term(float scale, float d, float s, float t) {
    return scale * (t + fmaxf(d, -128.0f) * s);
}

}  // namespace spo4j
