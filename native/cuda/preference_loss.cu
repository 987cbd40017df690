// preference_loss: the losses of native/common/pair_loss.h (SPO, DPO/cDPO, IPO, hinge,
// soft-DPO, SPO-exp, TRL's other pairwise loss types, SimPO, CPO), forward + gradient + batch metrics for B pairs (CUDA). The CPU twin is
// native/cpu/preference_loss.cpp; definitions: src/site/markdown/LOSSES.md.
// Outputs are gradients of the MEAN loss: dL/dpi_c = dL/d(dc) / B, dL/dpi_r = dL/d(dr) / B.
// Per-pair math in double, for accuracy and to match the CPU kernel: both run the same
// native/common/pair_loss.h and round the same double results to float (B is small next to
// the logits, so double costs little). Compiled with IEEE semantics, like the CPU kernels
// (no --use_fast_math: native/CMakeLists.txt), so subnormal inputs and outputs are kept.
// One launch of one 512-thread block: a fixed thread-to-pair assignment and a
// fixed reduction tree, so the batch means are deterministic. Reads 4-5 floats and writes
// 2-3 floats per pair, plus SPO4J_STAT_COUNT floats.
// Test: native/tests/preference_loss_check.cu (spo4j_harness check).
#include "common.cuh"
#include "loss_params.h"
#include "pair_loss.h"

#include <cinttypes>
#include <cmath>

namespace spo4j {
namespace cuda {
namespace {

constexpr int kLossThreads = 512;
constexpr unsigned kFullMask = 0xffffffffu;


__global__ void __launch_bounds__(kLossThreads)
    preference_loss_kernel(PairParams a, double margin0, int64_t pairs, const float* __restrict__ policy_chosen,
                           const float* __restrict__ policy_rejected,
                           const float* __restrict__ ref_chosen,
                           const float* __restrict__ ref_rejected,
                           const float* __restrict__ margin, float* __restrict__ loss,
                           float* __restrict__ grad_chosen, float* __restrict__ grad_rejected,
                           float* __restrict__ stats) {
    const double beta = a.beta, inv_b = 1.0 / static_cast<double>(pairs);
    double sum[SPO4J_STAT_COUNT] = {0, 0, 0, 0, 0, 0, 0};
    for (int64_t i = threadIdx.x; i < pairs; i += blockDim.x) {
        const double pc = policy_chosen[i], pr = policy_rejected[i];
        const double dc = pc - static_cast<double>(ref_chosen[i]);
        const double dr = pr - static_cast<double>(ref_rejected[i]);
        const double m = margin != nullptr ? static_cast<double>(margin[i]) : margin0;
        const PairLoss pl = pair_loss(a, m, dc, dr);
        const double l = pl.loss;
        if (loss != nullptr) loss[i] = static_cast<float>(l);
        grad_chosen[i] = static_cast<float>(pl.dc * inv_b);
        grad_rejected[i] = static_cast<float>(pl.dr * inv_b);
        add_pair_stats(sum, beta, l, pc, pr, dc, dr);
    }
    if (stats == nullptr) return;  // uniform: every thread sees the same pointer
    // Fixed-order reduction: butterfly within each warp, then warp 0 over the warp sums.
    __shared__ double partial[kLossThreads / 32][SPO4J_STAT_COUNT];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int k = 0; k < SPO4J_STAT_COUNT; ++k) {
        double v = sum[k];
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(kFullMask, v, off);
        if (lane == 0) partial[warp][k] = v;
    }
    __syncthreads();
    if (warp == 0) {
        const int nwarps = blockDim.x / 32;
#pragma unroll
        for (int k = 0; k < SPO4J_STAT_COUNT; ++k) {
            double v = lane < nwarps ? partial[lane][k] : 0.0;
#pragma unroll
            for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(kFullMask, v, off);
            if (lane == 0) stats[k] = static_cast<float>(v * inv_b);
        }
    }
}


int preference_loss(const spo4j_loss_params* p, int64_t pairs, const float* policy_chosen,
                    const float* policy_rejected, const float* ref_chosen,
                    const float* ref_rejected, const float* margin, float* loss,
                    float* grad_chosen, float* grad_rejected, float* stats, void* stream_ptr) {
    int st = spo4j::check_loss_params(p);  // native/common/loss_params.cpp: one wording
    if (st) return st;
    if (pairs < 1) return fail(SPO4J_ERR_ARGUMENT, "pairs = %" PRId64 " (expected >= 1)", pairs);
    if (!policy_chosen || !policy_rejected || !ref_chosen || !ref_rejected || !grad_chosen ||
        !grad_rejected)
        return fail(SPO4J_ERR_ARGUMENT, "null input or gradient pointer");
    int dev = -1;
    if ((st = check_device_pointer(policy_chosen, "policy_chosen", -1, &dev))) return st;
    const struct {
        const void* ptr;
        const char* name;
    } others[] = {{policy_rejected, "policy_rejected"}, {ref_chosen, "ref_chosen"},
                  {ref_rejected, "ref_rejected"},       {margin, "margin"},
                  {loss, "loss"},                       {grad_chosen, "grad_chosen"},
                  {grad_rejected, "grad_rejected"},     {stats, "stats"}};
    for (const auto& o : others) {
        if (o.ptr != nullptr && (st = check_device_pointer(o.ptr, o.name, dev, nullptr)))
            return st;
    }
    DeviceScope scope;
    if ((st = scope.enter(dev))) return st;
    const PairParams args = pair_params(*p);
    preference_loss_kernel<<<1, kLossThreads, 0, static_cast<cudaStream_t>(stream_ptr)>>>(
        args, static_cast<double>(p->margin), pairs, policy_chosen, policy_rejected, ref_chosen, ref_rejected,
        margin, loss, grad_chosen, grad_rejected, stats);
    SPO4J_CUDA_LAUNCHED("preference_loss_kernel");
    return SPO4J_OK;
}

}  // namespace
}  // namespace cuda
}  // namespace spo4j

extern "C" SPO4J_API int spo4j_preference_loss_cuda(
        const spo4j_loss_params* p, int64_t pairs, const float* policy_chosen,
        const float* policy_rejected, const float* ref_chosen, const float* ref_rejected,
        const float* margin, float* loss, float* grad_chosen, float* grad_rejected, float* stats,
        void* stream) {
    try {
        spo4j::clear_error();
        return spo4j::cuda::preference_loss(p, pairs, policy_chosen, policy_rejected, ref_chosen,
                                            ref_rejected, margin, loss, grad_chosen,
                                            grad_rejected, stats, stream);
    } catch (...) {
        return spo4j::fail(SPO4J_ERR_INTERNAL, "unexpected C++ exception in preference loss CUDA");
    }
}
