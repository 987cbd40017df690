// Preference losses in `spo4j_harness check`, CUDA side (built only with CUDA): every case
// of the sweep in preference_loss_check.cpp against the float64 truth and against the CPU
// kernel's results, with and without the nullable outputs, on a created stream; the batch
// statistics must be bitwise deterministic. Then the error statuses.
// Kernel: native/cuda/preference_loss.cu.
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "cuda_check.cuh"
#include "preference_loss_check.h"

namespace harness {

void cuda_check_loss_case(Checker& ck, const LossCase& c) {
    const size_t n = size_t(c.pairs);
    DevBuf pc(n * 4), pr(n * 4), rc(n * 4), rr(n * 4), mg(n * 4);
    DevBuf l(n * 4, 0xff), gc(n * 4, 0xff), gr(n * 4, 0xff), s(SPO4J_STAT_COUNT * 4, 0xff);
    pc.upload(c.pc.data(), n * 4);
    pr.upload(c.pr.data(), n * 4);
    rc.upload(c.rc.data(), n * 4);
    rr.upload(c.rr.data(), n * 4);
    mg.upload(c.margin.data(), n * 4);
    cudaStream_t stream;
    CUDA_OR_DIE(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    auto run = [&]() {
        return spo4j_preference_loss_cuda(&c.p, c.pairs, pc.as<float>(), pr.as<float>(), rc.as<float>(),
                                          rr.as<float>(), c.with_margin ? mg.as<float>() : nullptr,
                                          l.as<float>(), gc.as<float>(), gr.as<float>(), s.as<float>(),
                                          stream);
    };
    int st = run();
    CUDA_OR_DIE(cudaStreamSynchronize(stream));
    if (ck.record(st == SPO4J_OK, "cuda loss status [" + c.label + "]",
                  strf("status %d: %s", st, spo4j_last_error()))) {
        const auto hl = l.download<float>(n), hgc = gc.download<float>(n), hgr = gr.download<float>(n);
        const auto hs = s.download<float>(SPO4J_STAT_COUNT);
        compare_loss(ck, c, "cuda", hl.data(), hgc.data(), hgr.data(), hs.data(), 1.0);
        // against the CPU kernel: both round the same double math to float
        const double rt = 8 * 0x1.0p-24;
        std::vector<double> cpu(c.gc_cpu.begin(), c.gc_cpu.end());
        allclose(ck, "cuda grad chosen vs cpu", hgc.data(), cpu.data(), c.pairs, 1e-30, rt, c.label);
        cpu.assign(c.gr_cpu.begin(), c.gr_cpu.end());
        allclose(ck, "cuda grad rejected vs cpu", hgr.data(), cpu.data(), c.pairs, 1e-30, rt, c.label);
        // determinism: a second run gives the same bits
        st = run();
        CUDA_OR_DIE(cudaStreamSynchronize(stream));
        const auto hs2 = s.download<float>(SPO4J_STAT_COUNT);
        ck.record(st == SPO4J_OK && std::memcmp(hs.data(), hs2.data(), hs.size() * 4) == 0,
                  "cuda loss stats are deterministic [" + c.label + "]");
    }
    // nullable outputs
    DevBuf gc2(n * 4, 0xff), gr2(n * 4, 0xff);
    st = spo4j_preference_loss_cuda(&c.p, c.pairs, pc.as<float>(), pr.as<float>(), rc.as<float>(),
                                    rr.as<float>(), c.with_margin ? mg.as<float>() : nullptr, nullptr,
                                    gc2.as<float>(), gr2.as<float>(), nullptr, stream);
    CUDA_OR_DIE(cudaStreamSynchronize(stream));
    if (ck.record(st == SPO4J_OK, "cuda loss without loss/stats status [" + c.label + "]",
                  strf("status %d: %s", st, spo4j_last_error()))) {
        const auto hgc = gc2.download<float>(n), hgr = gr2.download<float>(n);
        compare_loss(ck, c, "cuda (no loss/stats)", nullptr, hgc.data(), hgr.data(), nullptr, 1.0);
    }
    CUDA_OR_DIE(cudaStreamDestroy(stream));
}

void cuda_check_loss_errors(Checker& ck) {
    const size_t n = 4;
    DevBuf pc(n * 4), pr(n * 4), rc(n * 4), rr(n * 4), gc(n * 4), gr(n * 4);
    std::vector<float> host(n, -1.0f);
    for (const DevBuf* b : {&pc, &pr, &rc, &rr}) b->upload(host.data(), n * 4);
    auto run = [&](spo4j_loss_params p, int64_t pairs, const float* x, float* g) {
        return spo4j_preference_loss_cuda(&p, pairs, x, pr.as<float>(), rc.as<float>(), rr.as<float>(),
                                          nullptr, nullptr, g, gr.as<float>(), nullptr, nullptr);
    };
    const spo4j_loss_params ok{1, 0.1f, 0.0f, 1.0f, 0.1f, 0.05f, 0.5f, 0.0f};
    for (const BadLossParams& b : bad_loss_params())
        expect_status(ck, run(b.p, 4, pc.as<float>(), gc.as<float>()), SPO4J_ERR_ARGUMENT,
                      strf("cuda loss %s -> ARGUMENT", b.what));
    expect_status(ck, run(ok, 0, pc.as<float>(), gc.as<float>()), SPO4J_ERR_ARGUMENT, "cuda loss pairs 0 -> ARGUMENT");
    expect_status(ck, run(ok, 4, nullptr, gc.as<float>()), SPO4J_ERR_ARGUMENT, "cuda loss null input -> ARGUMENT");
    expect_status(ck, run(ok, 4, pc.as<float>(), nullptr), SPO4J_ERR_ARGUMENT, "cuda loss null grad -> ARGUMENT");
    if (!pageable_memory_is_device_accessible())
        expect_status(ck, run(ok, 4, host.data(), gc.as<float>()), SPO4J_ERR_ARGUMENT,
                      "cuda loss host input -> ARGUMENT", "policy_chosen");
    expect_status(ck, spo4j_preference_loss_cuda(nullptr, 4, pc.as<float>(), pr.as<float>(), rc.as<float>(),
                                                 rr.as<float>(), nullptr, nullptr, gc.as<float>(),
                                                 gr.as<float>(), nullptr, nullptr),
                  SPO4J_ERR_ARGUMENT, "cuda loss null params -> ARGUMENT");
    expect_status(ck, run(ok, 4, pc.as<float>(), gc.as<float>()), SPO4J_OK, "cuda loss valid call after failures");
    CUDA_OR_DIE(cudaDeviceSynchronize());
}

}  // namespace harness
