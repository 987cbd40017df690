// accumulate: dst += widen(src) for an fp32 accumulator and an fp32/bf16/fp16 source of n
// contiguous elements (the fused LM head adds each chunk's bf16/fp16 dW and dh products into
// its fp32 accumulators). One pass, read src + read/write dst; each element is rounded once
// (the fp32 add), so the result equals LibTorch's dst.add_(src.to(float)) bit for bit.
// LibTorch's own mixed-dtype add_ takes a slow casting path, and widening through a small fp32
// buffer costs a few JNI calls per slice (LmHeadLogProbs measured both).
// Test: native/tests/token_logprobs_check.cpp (accumulate cases); LmHeadLogProbsTest.
#include <cinttypes>

#include "simd.h"
#include "status.h"

namespace spo4j {
namespace {
constexpr int64_t MIN_ADD_PER_THREAD = 1 << 18;  // elements; below this, one thread

template <int DT>
SPO4J_CLONES void add_widened(float* dst, const void* src, int64_t b, int64_t e) {
    using T = typename Io<DT>::T;
    const T* s = static_cast<const T*>(src);
    int64_t i = b;
    for (; i + W <= e; i += W) Io<SPO4J_F32>::store(dst + i, Io<SPO4J_F32>::load(dst + i) + Io<DT>::load(s + i));
    for (; i < e; i++) dst[i] += Io<DT>::get(s + i);
}
}  // namespace
}  // namespace spo4j

extern "C" SPO4J_API int spo4j_add_widened_cpu(float* dst, const void* src, int32_t dtype, int64_t n,
                                               int32_t num_threads) {
    using namespace spo4j;
    try {
        clear_error();
        if (n < 0) return fail(SPO4J_ERR_ARGUMENT, "n = %" PRId64 " (expected >= 0)", n);
        if (dtype != SPO4J_F32 && dtype != SPO4J_BF16 && dtype != SPO4J_F16)
            return fail(SPO4J_ERR_ARGUMENT, "dtype %d (expected f32, bf16 or f16)", int(dtype));
        if (n > 0 && (!dst || !src)) return fail(SPO4J_ERR_ARGUMENT, "null dst or src pointer");
        // blocks of whole vectors, so a thread's block starts where a vector of the others ends
        const int64_t vectors = (n + W - 1) / W;
        parallel_rows(vectors, W, num_threads, MIN_ADD_PER_THREAD, [&](int64_t vb, int64_t ve) {
            const int64_t b = vb * W, e = ve * W < n ? ve * W : n;
            if (dtype == SPO4J_F32)
                add_widened<SPO4J_F32>(dst, src, b, e);
            else if (dtype == SPO4J_BF16)
                add_widened<SPO4J_BF16>(dst, src, b, e);
            else
                add_widened<SPO4J_F16>(dst, src, b, e);
        });
        return SPO4J_OK;
    } catch (...) {
        return fail(SPO4J_ERR_INTERNAL, "unexpected C++ exception in add_widened");
    }
}
