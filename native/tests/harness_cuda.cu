// The CUDA part of spo4j_harness (built only when CMake found nvcc):
//  - check: the CUDA kernels against the float64 truth and against the CPU kernels for
//    every case of the sweep in harness.cpp, on both launch shapes (warp per row for rows
//    of <= 4 KB, block per row above), with rows whose start is or is not 16-byte aligned
//    (base offsets and padded strides), in place and not, on the legacy default stream and
//    on a created stream; guard bytes around every buffer must survive; error statuses,
//    including "a failed call leaves the (in-place) logits untouched".
//  - bench: cudaEvent timings of forward / backward / forward+backward at LM shapes with an
//    L2 flush before every repetition, GB/s against the measured device-to-device copy.
#include "harness.h"

#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <limits>
#include <random>

namespace harness {
namespace {

// A CUDA failure in the harness itself (not in the library under test) ends the run.
void cuda_or_die(cudaError_t e, const char* what, int line) {
    if (e != cudaSuccess) {
        std::fprintf(stderr, "harness_cuda.cu:%d: %s: %s\n", line, what, cudaGetErrorString(e));
        std::exit(3);
    }
}
#define CUDA_OR_DIE(x) cuda_or_die((x), #x, __LINE__)

constexpr uint8_t kGuard = 0xab;  // bytes around every device buffer
constexpr size_t kGuardBytes = 256;

// Device buffer with guard bytes before and after the payload; `at(off)` is payload+off.
// The payload starts as guard bytes too, or as `payload_fill` (0xff poisons with NaN).
// Every fill and upload ends with a device synchronise: the library runs on other streams
// (non-blocking ones included) that do not wait for the legacy stream's copies.
struct DevBuf {
    uint8_t* raw = nullptr;
    size_t bytes = 0;
    explicit DevBuf(size_t n, int payload_fill = -1) : bytes(n) {
        CUDA_OR_DIE(cudaMalloc(&raw, n + 2 * kGuardBytes));
        CUDA_OR_DIE(cudaMemset(raw, kGuard, n + 2 * kGuardBytes));
        if (payload_fill >= 0) CUDA_OR_DIE(cudaMemset(raw + kGuardBytes, payload_fill, n));
        CUDA_OR_DIE(cudaDeviceSynchronize());
    }
    ~DevBuf() { cudaFree(raw); }
    DevBuf(const DevBuf&) = delete;
    DevBuf& operator=(const DevBuf&) = delete;
    uint8_t* at(size_t off = 0) const { return raw + kGuardBytes + off; }
    template <typename T>
    T* as(size_t off = 0) const { return reinterpret_cast<T*>(at(off)); }
    void upload(const void* src, size_t n, size_t off = 0) const {
        CUDA_OR_DIE(cudaMemcpy(at(off), src, n, cudaMemcpyHostToDevice));
        CUDA_OR_DIE(cudaDeviceSynchronize());
    }
    std::vector<uint8_t> download_all() const {  // guards included
        std::vector<uint8_t> h(bytes + 2 * kGuardBytes);
        CUDA_OR_DIE(cudaMemcpy(h.data(), raw, h.size(), cudaMemcpyDeviceToHost));
        return h;
    }
    template <typename T>
    std::vector<T> download(size_t count, size_t off = 0) const {
        std::vector<T> h(count);
        CUDA_OR_DIE(cudaMemcpy(h.data(), at(off), count * sizeof(T), cudaMemcpyDeviceToHost));
        return h;
    }
};

// Whether bytes [0, kGuardBytes) and the last kGuardBytes of a download_all() still hold
// the guard, and bytes [from, to) of the payload too.
bool guards_intact(const std::vector<uint8_t>& h) {
    for (size_t i = 0; i < kGuardBytes; ++i)
        if (h[i] != kGuard || h[h.size() - 1 - i] != kGuard) return false;
    return true;
}

// On HMM / ATS systems the GPU can read ordinary host memory, so the library accepts it.
bool pageable_memory_is_device_accessible() {
    int dev = 0, v = 0;
    CUDA_OR_DIE(cudaGetDevice(&dev));
    CUDA_OR_DIE(cudaDeviceGetAttribute(&v, cudaDevAttrPageableMemoryAccess, dev));
    return v != 0;
}

template <typename T>
T pick(std::mt19937_64& g, std::initializer_list<T> xs) {
    return *(xs.begin() + g() % xs.size());
}

}  // namespace

bool cuda_usable(std::string* why) {
    if (!spo4j_cuda_built()) {
        *why = "libspo4j was built without CUDA";
        return false;
    }
    if (spo4j_cuda_device_count() > 0) return true;
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    *why = e == cudaSuccess ? "no CUDA device is visible"
                            : strf("no usable CUDA device (cudaGetDeviceCount: %s, %s)",
                                   cudaGetErrorName(e), cudaGetErrorString(e));
    (void)cudaGetLastError();
    return false;
}

// ---- token log-probs ----------------------------------------------------------------------

namespace {

// One CUDA run of a case under one launch shape (forced_threads 0: the library's choice).
void check_token_case_shape(Checker& ck, TokenCase& c, uint64_t seed, int forced_threads) {
    if (forced_threads > 0) {
        setenv("SPO4J_CUDA_ROW_THREADS", std::to_string(forced_threads).c_str(), 1);
    } else {
        unsetenv("SPO4J_CUDA_ROW_THREADS");
    }
    std::mt19937_64 g(seed);
    const int es = elem_size(c.dtype);
    const size_t n = size_t(c.rows);
    // Base offsets in elements: 0 keeps aligned rows aligned; 1 and 3 shift every row.
    const size_t off = pick<size_t>(g, {0, 0, 1, 3}) * size_t(es);
    const size_t zbytes = size_t(c.rows * c.stride * es);
    cudaStream_t stream = nullptr;
    const bool own_stream = g() % 2 == 0;
    if (own_stream) CUDA_OR_DIE(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    const std::string ctx = c.label + strf(" offset=%zuB stream=%s threads=%s", off, own_stream ? "own" : "legacy",
                                           forced_threads ? std::to_string(forced_threads).c_str() : "auto");

    DevBuf z(zbytes + 16), tg(n * 8), gl(n * 4), li(n * 4);
    z.upload(c.logits.data(), zbytes, off);
    tg.upload(c.targets.data(), n * 8);
    gl.upload(c.grad_logp.data(), n * 4);
    li.upload(c.lse_in.data(), n * 4);

    // forward into poisoned outputs
    DevBuf lp(n * 4, 0xff), ls(n * 4, 0xff), en(n * 4, 0xff);
    int st = spo4j_token_logprobs_fwd_cuda(z.at(off), c.dtype, c.rows, c.vocab, c.stride,
                                           tg.as<int64_t>(), c.ignore_index, lp.as<float>(),
                                           ls.as<float>(), c.entropy ? en.as<float>() : nullptr,
                                           stream);
    if (ck.record(st == SPO4J_OK, "cuda fwd status [" + ctx + "]",
                  strf("status %d: %s", st, spo4j_last_error()))) {
        const std::vector<float> logp = lp.download<float>(n), lse = ls.download<float>(n),
                                 ent = en.download<float>(n);
        compare_forward(ck, c, "cuda", logp.data(), lse.data(), c.entropy ? ent.data() : nullptr, 1.0);
        Closeness cl("cuda fwd logp vs cpu"), cs("cuda fwd lse vs cpu"), ce("cuda fwd entropy vs cpu");
        for (int64_t r = 0; r < c.rows; ++r) {
            cl.add(r, logp[size_t(r)], c.logp_cpu[size_t(r)], 2 * tol_lse(c, r));
            cs.add(r, lse[size_t(r)], c.lse_cpu[size_t(r)], 2 * tol_lse(c, r));
            if (c.entropy) ce.add(r, ent[size_t(r)], c.entropy_cpu[size_t(r)], 2 * tol_entropy(c, r));
        }
        cl.finish(ck, ctx);
        cs.finish(ck, ctx);
        if (c.entropy) ce.finish(ck, ctx);
    }

    // backward into a separate buffer: its own stride and offset, so that input and output
    // rows can sit at different 16-byte phases (the scalar fallback) or the same one
    const int64_t gstride = c.vocab + pick<int64_t>(g, {0, 0, 2, 8});
    const size_t goff = pick<size_t>(g, {0, 0, 1, 5}) * size_t(es);
    const size_t gbytes = size_t(c.rows * gstride * es);
    DevBuf gz(gbytes + 16, 0xff);
    st = spo4j_token_logprobs_bwd_cuda(z.at(off), c.dtype, c.rows, c.vocab, c.stride,
                                       tg.as<int64_t>(), c.ignore_index, li.as<float>(),
                                       gl.as<float>(), gz.at(goff), gstride, stream);
    const std::string gctx = ctx + strf(" grad_stride=%" PRId64 " grad_offset=%zuB", gstride, goff);
    const bool bwd_ok = ck.record(st == SPO4J_OK, "cuda bwd status [" + gctx + "]",
                                  strf("status %d: %s", st, spo4j_last_error()));
    // backward in place over the uploaded logits
    st = spo4j_token_logprobs_bwd_cuda(z.at(off), c.dtype, c.rows, c.vocab, c.stride,
                                       tg.as<int64_t>(), c.ignore_index, li.as<float>(),
                                       gl.as<float>(), z.at(off), c.stride, stream);
    const bool inplace_ok = ck.record(st == SPO4J_OK, "cuda bwd in-place status [" + ctx + "]",
                                      strf("status %d: %s", st, spo4j_last_error()));
    if (bwd_ok && inplace_ok) {
        const std::vector<uint8_t> gh = gz.download_all(), zh = z.download_all();
        const uint8_t* gbase = gh.data() + kGuardBytes + goff;
        const uint8_t* zbase = zh.data() + kGuardBytes + off;
        Closeness cg("cuda bwd grad"), cc("cuda bwd grad vs cpu"), ci("cuda bwd in-place grad");
        bool pad_ok = true, inpad_ok = true;
        std::vector<double> ref;
        for (int64_t r = 0; r < c.rows; ++r) {
            ref_grad_row(c, r, ref);
            const uint8_t* gr = gbase + size_t(r * gstride * es);
            const uint8_t* zr = zbase + size_t(r * c.stride * es);
            const uint8_t* cpu = c.grad_cpu.data() + size_t(r * c.vocab * es);
            for (int64_t v = 0; v < c.vocab; ++v) {
                const double tol = tol_grad(c, r, ref[size_t(v)]);
                const double got = load_elem(gr, c.dtype, v);
                cg.add(r * c.vocab + v, got, ref[size_t(v)], tol);
                cc.add(r * c.vocab + v, got, load_elem(cpu, c.dtype, v), 2 * tol);
                ci.add(r * c.vocab + v, load_elem(zr, c.dtype, v), ref[size_t(v)], tol);
            }
            for (int64_t b = c.vocab * es; b < gstride * es; ++b) pad_ok &= gr[b] == 0xff;
            const uint8_t* orig = c.logits.data() + size_t(r * c.stride * es);
            inpad_ok &= std::memcmp(zr + c.vocab * es, orig + c.vocab * es,
                                    size_t((c.stride - c.vocab) * es)) == 0;
        }
        cg.finish(ck, gctx);
        cc.finish(ck, gctx);
        ci.finish(ck, ctx);
        ck.record(pad_ok && guards_intact(gh),
                  "cuda bwd writes nothing outside the gradient rows [" + gctx + "]");
        ck.record(inpad_ok && guards_intact(zh),
                  "cuda bwd in-place writes nothing outside the logits rows [" + ctx + "]");
    }
    if (own_stream) CUDA_OR_DIE(cudaStreamDestroy(stream));
    unsetenv("SPO4J_CUDA_ROW_THREADS");
}

}  // namespace

void cuda_check_token_case(Checker& ck, TokenCase& c, uint64_t seed) {
    if (!c.cpu_ok) return;
    check_token_case_shape(ck, c, seed, 0);  // the library's own launch shape
    // Every other launch shape (warp per row; blocks of 64 and 512 threads) on the cases
    // that are cheap enough to compare several times over.
    if (c.rows * c.vocab <= 2000000) {
        int k = 0;
        for (int threads : {32, 64, 512}) check_token_case_shape(ck, c, seed + uint64_t(++k), threads);
    }
}

namespace {

// One token-errors scenario on the device for a dtype and a vocabulary (small V: warp path,
// large V: block path).
void cuda_token_errors_for(Checker& ck, int dtype, int64_t vocab) {
    const int64_t rows = 7, stride = vocab + 3;
    const int es = elem_size(dtype);
    const std::string d = strf("%s V=%" PRId64, dtype_name(dtype), vocab);
    std::mt19937_64 g(uint64_t(dtype * 131 + vocab));
    std::normal_distribution<float> nd(0.0f, 2.0f);
    std::vector<uint8_t> z(size_t(rows * stride * es));
    for (int64_t i = 0; i < rows * stride; ++i) store_elem(z.data(), dtype, i, nd(g));
    std::vector<int64_t> t(static_cast<size_t>(rows));
    for (auto& x : t) x = int64_t(g() % uint64_t(vocab));
    std::vector<float> gl(static_cast<size_t>(rows), 0.5f), lse(static_cast<size_t>(rows), 0.0f);
    {
        // lse from the CPU kernel, so that the backward has a valid input
        std::vector<float> lp(static_cast<size_t>(rows));
        spo4j_token_logprobs_fwd_cpu(z.data(), dtype, rows, vocab, stride, t.data(), -100, lp.data(),
                                     lse.data(), nullptr, 1);
    }
    const size_t zb = z.size(), n = size_t(rows);
    DevBuf dz(zb), dt(n * 8), dgl(n * 4), dls(n * 4), lp(n * 4, 0xff), ls(n * 4, 0xff), en(n * 4, 0xff);
    dz.upload(z.data(), zb);
    dgl.upload(gl.data(), n * 4);
    dls.upload(lse.data(), n * 4);
    auto fwd = [&](const std::vector<int64_t>& tt, int64_t ii) {
        dt.upload(tt.data(), n * 8);
        return spo4j_token_logprobs_fwd_cuda(dz.at(), dtype, rows, vocab, stride, dt.as<int64_t>(), ii,
                                             lp.as<float>(), ls.as<float>(), en.as<float>(), nullptr);
    };
    auto bwd_inplace = [&](const std::vector<int64_t>& tt, const std::vector<float>& l) {
        dt.upload(tt.data(), n * 8);
        dls.upload(l.data(), n * 4);
        return spo4j_token_logprobs_bwd_cuda(dz.at(), dtype, rows, vocab, stride, dt.as<int64_t>(), -100,
                                             dls.as<float>(), dgl.as<float>(), dz.at(), stride, nullptr);
    };
    auto outputs_untouched = [&]() {
        bool ok = true;
        for (const DevBuf* b : {&lp, &ls, &en})
            for (float x : b->download<float>(n)) ok &= std::isnan(x);
        return ok;
    };
    auto logits_untouched = [&]() { return dz.download<uint8_t>(zb) == z; };
    std::vector<int64_t> bad = t;
    bad[3] = vocab;
    expect_status(ck, fwd(bad, -100), SPO4J_ERR_TARGET, "cuda fwd target == vocab -> TARGET " + d,
                  strf("target %" PRId64 " at row 3 is out of range [0, %" PRId64 ") and is not ignore_index -100",
                       vocab, vocab));
    ck.record(outputs_untouched(), "cuda fwd bad target leaves outputs untouched " + d);
    bad[1] = vocab + 7;  // two bad rows: the smallest is reported
    expect_status(ck, fwd(bad, -100), SPO4J_ERR_TARGET, "cuda fwd reports the first bad row " + d,
                  strf("target %" PRId64 " at row 1", vocab + 7));
    bad = t;
    bad[2] = -1;
    expect_status(ck, fwd(bad, -100), SPO4J_ERR_TARGET, "cuda fwd target -1 -> TARGET " + d, "row 2");
    bad = t;
    bad[5] = vocab + 1000;
    expect_status(ck, bwd_inplace(bad, lse), SPO4J_ERR_TARGET, "cuda bwd in-place bad target -> TARGET " + d,
                  "row 5");
    ck.record(logits_untouched(), "cuda bwd in-place bad target leaves logits untouched " + d);
    std::vector<float> lbad = lse;
    lbad[6] = -std::numeric_limits<float>::infinity();
    expect_status(ck, bwd_inplace(t, lbad), SPO4J_ERR_NONFINITE, "cuda bwd lse -inf -> NONFINITE " + d,
                  "lse at row 6 is -inf");
    ck.record(logits_untouched(), "cuda bwd in-place lse -inf leaves logits untouched " + d);
    lbad[6] = std::numeric_limits<float>::quiet_NaN();
    expect_status(ck, bwd_inplace(t, lbad), SPO4J_OK, "cuda bwd lse NaN propagates (not an error) " + d);
    std::vector<int64_t> ign = t;  // an ignored row's lse is never looked at
    ign[6] = -100;
    expect_status(ck, bwd_inplace(ign, lbad), SPO4J_OK, "cuda bwd ignores the lse of ignored rows " + d);
    dz.upload(z.data(), zb);
    // rows with no finite lse in the forward
    std::vector<uint8_t> zz = z;
    for (int64_t v = 0; v < vocab; ++v)
        store_elem(zz.data() + 4 * stride * es, dtype, v, -std::numeric_limits<float>::infinity());
    dz.upload(zz.data(), zb);
    expect_status(ck, fwd(t, -100), SPO4J_ERR_NONFINITE, "cuda fwd all -inf row -> NONFINITE " + d,
                  "row 4 (target");
    zz = z;
    store_elem(zz.data() + 1 * stride * es, dtype, vocab / 2, std::numeric_limits<float>::quiet_NaN());
    dz.upload(zz.data(), zb);
    expect_status(ck, fwd(t, -100), SPO4J_OK, "cuda fwd NaN logit propagates (not an error) " + d);
    zz = z;
    store_elem(zz.data() + 2 * stride * es, dtype, vocab - 1, std::numeric_limits<float>::infinity());
    dz.upload(zz.data(), zb);
    expect_status(ck, fwd(t, -100), SPO4J_OK, "cuda fwd +inf logit gives a NaN/+inf row, not an error " + d);
    dz.upload(z.data(), zb);
    // ignore_index inside [0, V)
    std::vector<int64_t> t0 = t;
    t0[1] = 0;
    expect_status(ck, fwd(t0, 0), SPO4J_OK, "cuda fwd ignore_index 0 " + d);
    const std::vector<float> l1 = lp.download<float>(n), s1 = ls.download<float>(n), e1 = en.download<float>(n);
    ck.record(l1[1] == 0 && s1[1] == 0 && e1[1] == 0, "cuda fwd ignore_index 0 gives zeros " + d);
    // a valid call after all the failures still works (no sticky error)
    expect_status(ck, fwd(t, -100), SPO4J_OK, "cuda fwd after failed calls " + d);
}

}  // namespace

void cuda_check_token_errors(Checker& ck) {
    for (int dtype : {SPO4J_F32, SPO4J_BF16, SPO4J_F16})
        for (int64_t vocab : {129, 5000}) cuda_token_errors_for(ck, dtype, vocab);

    // argument errors
    const int64_t rows = 3, V = 10;
    DevBuf z(rows * 12 * 4), t(rows * 8), a(rows * 4), b(rows * 4), gbuf(rows * 12 * 4);
    std::vector<int64_t> ht(rows, 1);
    t.upload(ht.data(), rows * 8);
    std::vector<float> host(64);
    const int64_t* tp = t.as<int64_t>();
    auto F = [&](const void* zz, int dt, int64_t r, int64_t v, int64_t s, const int64_t* tt, float* x, float* y) {
        return spo4j_token_logprobs_fwd_cuda(zz, dt, r, v, s, tt, -100, x, y, nullptr, nullptr);
    };
    auto B = [&](const void* zz, int64_t s, void* gg, int64_t gs, const float* l, const float* gl) {
        return spo4j_token_logprobs_bwd_cuda(zz, SPO4J_F32, rows, V, s, tp, -100, l, gl, gg, gs, nullptr);
    };
    float* A = a.as<float>();
    float* Bf = b.as<float>();
    const int ARG = SPO4J_ERR_ARGUMENT;
    expect_status(ck, F(z.at(), 3, rows, V, V, tp, A, Bf), ARG, "cuda fwd dtype 3 -> ARGUMENT");
    expect_status(ck, F(z.at(), 0, -1, V, V, tp, A, Bf), ARG, "cuda fwd rows -1 -> ARGUMENT");
    expect_status(ck, F(z.at(), 0, rows, 0, V, tp, A, Bf), ARG, "cuda fwd vocab 0 -> ARGUMENT");
    expect_status(ck, F(z.at(), 0, rows, V, V - 1, tp, A, Bf), ARG, "cuda fwd stride < vocab -> ARGUMENT");
    expect_status(ck, F(nullptr, 0, rows, V, V, tp, A, Bf), ARG, "cuda fwd null logits -> ARGUMENT");
    expect_status(ck, F(z.at(), 0, rows, V, V, nullptr, A, Bf), ARG, "cuda fwd null targets -> ARGUMENT");
    expect_status(ck, F(z.at(), 0, rows, V, V, tp, nullptr, Bf), ARG, "cuda fwd null logp -> ARGUMENT");
    expect_status(ck, F(z.at(), 0, rows, V, V, tp, A, nullptr), ARG, "cuda fwd null lse -> ARGUMENT");
    const bool hmm = pageable_memory_is_device_accessible();
    if (hmm) {
        ck.note("host-pointer checks skipped: this GPU can access pageable host memory (HMM/ATS)");
    } else {
        expect_status(ck, F(host.data(), 0, rows, V, V, tp, A, Bf), ARG, "cuda fwd host logits -> ARGUMENT",
                      "logits");
        expect_status(ck, F(z.at(), 0, rows, V, V, tp, host.data(), Bf), ARG, "cuda fwd host logp -> ARGUMENT",
                      "logp");
        expect_status(ck, B(z.at(), V, host.data(), V, A, Bf), ARG, "cuda bwd host grad -> ARGUMENT",
                      "grad_logits");
    }
    expect_status(ck, F(z.at(2), 0, rows, V, V, tp, A, Bf), ARG, "cuda fwd misaligned f32 logits -> ARGUMENT");
    expect_status(ck, F(nullptr, 0, 0, V, V, nullptr, nullptr, nullptr), SPO4J_OK, "cuda fwd rows 0 is a no-op");
    expect_status(ck, B(z.at(), V, gbuf.at(), V - 1, A, Bf), ARG, "cuda bwd grad stride < vocab -> ARGUMENT");
    expect_status(ck, B(z.at(), V, nullptr, V, A, Bf), ARG, "cuda bwd null grad -> ARGUMENT");
    expect_status(ck, B(z.at(), V, gbuf.at(), V, nullptr, Bf), ARG, "cuda bwd null lse -> ARGUMENT");
    expect_status(ck, B(z.at(), V, gbuf.at(), V, A, nullptr), ARG, "cuda bwd null grad_logp -> ARGUMENT");
    expect_status(ck, B(z.at(), V, z.at(), 12, A, Bf), ARG, "cuda bwd in place with different strides -> ARGUMENT");
    expect_status(ck, B(z.at(), V, z.at(8), V, A, Bf), ARG, "cuda bwd partial overlap -> ARGUMENT", "overlaps");
}

// ---- preference losses --------------------------------------------------------------------

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
    const float inf = std::numeric_limits<float>::infinity(), nanf = std::numeric_limits<float>::quiet_NaN();
    const spo4j_loss_params ok{1, 0.1f, 0.0f, 1.0f};
    struct Bad {
        const char* what;
        spo4j_loss_params p;
    } bads[] = {{"beta 0", {1, 0.0f, 0.0f, 1.0f}},     {"beta -1", {1, -1.0f, 0.0f, 1.0f}},
                {"beta NaN", {1, nanf, 0.0f, 1.0f}},   {"beta inf", {1, inf, 0.0f, 1.0f}},
                {"eps -0.1", {1, 0.1f, -0.1f, 1.0f}}, {"eps 0.5", {1, 0.1f, 0.5f, 1.0f}},
                {"eps NaN", {1, 0.1f, nanf, 1.0f}},    {"type -1", {-1, 0.1f, 0.0f, 1.0f}},
                {"type 4", {4, 0.1f, 0.0f, 1.0f}},     {"margin NaN", {0, 0.1f, 0.0f, nanf}},
                {"margin inf", {0, 0.1f, 0.0f, inf}}};
    for (const Bad& b : bads)
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

// ---- bench --------------------------------------------------------------------------------

namespace {

__device__ __forceinline__ uint32_t hash32(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return uint32_t(x);
}

// Logits ~ N(0, 2^2)-like (sum of 4 uniforms) plus a few larger values per row, so that
// the softmax is neither flat nor one-hot; a different seed gives different data.
template <typename T>
__global__ void fill_logits(T* z, int64_t n, uint64_t seed) {
    for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n;
         i += int64_t{gridDim.x} * blockDim.x) {
        const uint32_t h = hash32(uint64_t(i) * 0x9e3779b97f4a7c15ull + seed);
        const float u = float(h & 0xff) + float((h >> 8) & 0xff) + float((h >> 16) & 0xff) +
                        float(h >> 24);
        float x = (u / 255.0f - 2.0f) * 3.4641f;  // mean 0, sd ~2
        if ((h & 0xfff) == 7) x += 12.0f;
        if constexpr (sizeof(T) == 4) {
            z[i] = x;
        } else {
            z[i] = T(x);
        }
    }
}

__global__ void fill_targets(int64_t* t, int64_t rows, int64_t vocab, uint64_t seed) {
    for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < rows;
         i += int64_t{gridDim.x} * blockDim.x)
        t[i] = int64_t(hash32(uint64_t(i) + seed) % uint64_t(vocab));
}

__global__ void fill_floats(float* x, int64_t n, float lo, float hi, uint64_t seed) {
    for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n;
         i += int64_t{gridDim.x} * blockDim.x)
        x[i] = lo + (hi - lo) * float(hash32(uint64_t(i) ^ seed) >> 8) * (1.0f / 16777216.0f);
}

void fill(void* z, int dtype, int64_t n, uint64_t seed, cudaStream_t s) {
    const int blocks = 4096, threads = 256;
    if (dtype == SPO4J_F32)
        fill_logits<float><<<blocks, threads, 0, s>>>(static_cast<float*>(z), n, seed);
    else if (dtype == SPO4J_BF16)
        fill_logits<__nv_bfloat16><<<blocks, threads, 0, s>>>(static_cast<__nv_bfloat16*>(z), n, seed);
    else
        fill_logits<__half><<<blocks, threads, 0, s>>>(static_cast<__half*>(z), n, seed);
    CUDA_OR_DIE(cudaGetLastError());
}

struct Timer {
    cudaEvent_t a, b;
    Timer() {
        CUDA_OR_DIE(cudaEventCreate(&a));
        CUDA_OR_DIE(cudaEventCreate(&b));
    }
    ~Timer() {
        cudaEventDestroy(a);
        cudaEventDestroy(b);
    }
};

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const size_t m = v.size() / 2;
    return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

struct BenchRow {
    std::string mode, dtype;
    int64_t rows, vocab;
    double ms, min_ms, bytes, gbps, frac;
    bool ok;
    int row_threads;  // SPO4J_CUDA_ROW_THREADS for this row, 0 = the library's choice
};

}  // namespace

int cuda_bench(const BenchOptions& o) {
    std::string why;
    if (!cuda_usable(&why)) {
        std::printf("bench: skipped: %s\n", why.c_str());
        return 0;
    }
    cudaDeviceProp prop{};
    CUDA_OR_DIE(cudaGetDeviceProperties(&prop, 0));
    int driver = 0, runtime = 0;
    cudaDriverGetVersion(&driver);
    cudaRuntimeGetVersion(&runtime);
    std::printf("bench: %s, %d SMs, L2 %.0f MB, %.1f GB, driver %d, runtime %d\n", prop.name,
                prop.multiProcessorCount, prop.l2CacheSize / 1e6, prop.totalGlobalMem / 1e9, driver,
                runtime);
    cudaStream_t s;
    CUDA_OR_DIE(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    // L2 flush: write a buffer several times the L2 before every timed repetition.
    const size_t flush_bytes = std::max<size_t>(size_t(256) << 20, size_t(prop.l2CacheSize) * 4);
    void* flush = nullptr;
    CUDA_OR_DIE(cudaMalloc(&flush, flush_bytes));
    auto flush_l2 = [&]() { CUDA_OR_DIE(cudaMemsetAsync(flush, int(rand() & 0xff), flush_bytes, s)); };
    Timer tm;
    auto time_reps = [&](const std::function<void()>& prepare, const std::function<bool()>& body,
                         bool* ok) {
        std::vector<double> ms;
        for (int i = 0; i < o.warmup + o.reps; ++i) {
            if (prepare) prepare();
            flush_l2();
            CUDA_OR_DIE(cudaEventRecord(tm.a, s));
            const bool good = body();
            CUDA_OR_DIE(cudaEventRecord(tm.b, s));
            CUDA_OR_DIE(cudaEventSynchronize(tm.b));
            float t = 0;
            CUDA_OR_DIE(cudaEventElapsedTime(&t, tm.a, tm.b));
            if (!good) *ok = false;
            if (i >= o.warmup) ms.push_back(t);
        }
        return ms;
    };

    // Device-to-device copy bandwidth: 1 GiB -> 1 GiB, counting bytes read + written.
    const size_t copy_bytes = size_t(1) << 30;
    void *ca = nullptr, *cb = nullptr;
    CUDA_OR_DIE(cudaMalloc(&ca, copy_bytes));
    CUDA_OR_DIE(cudaMalloc(&cb, copy_bytes));
    CUDA_OR_DIE(cudaMemsetAsync(ca, 1, copy_bytes, s));
    bool dummy = true;
    const std::vector<double> copy_ms = time_reps(nullptr, [&]() {
        CUDA_OR_DIE(cudaMemcpyAsync(cb, ca, copy_bytes, cudaMemcpyDeviceToDevice, s));
        return true;
    }, &dummy);
    CUDA_OR_DIE(cudaFree(ca));
    CUDA_OR_DIE(cudaFree(cb));
    const double copy_gbps = 2.0 * double(copy_bytes) / (median(copy_ms) * 1e-3) / 1e9;
    std::printf("bench: device-to-device copy %.1f GB/s (read+write, median of %d)\n", copy_gbps, o.reps);

    std::vector<BenchRow> out;
    for (int dtype : o.dtypes) {
        for (int64_t V : o.vocabs) {
            const int64_t rows = o.rows;
            const int es = elem_size(dtype);
            const size_t zbytes = size_t(rows * V * es);
            void *z = nullptr, *t = nullptr, *lp = nullptr, *ls = nullptr, *en = nullptr, *gl = nullptr;
            if (cudaMalloc(&z, zbytes) != cudaSuccess) {
                (void)cudaGetLastError();
                std::printf("bench: skip %s %" PRId64 "x%" PRId64 ": cannot allocate %.1f GB\n",
                            dtype_name(dtype), rows, V, zbytes / 1e9);
                continue;
            }
            CUDA_OR_DIE(cudaMalloc(&t, size_t(rows) * 8));
            CUDA_OR_DIE(cudaMalloc(&lp, size_t(rows) * 4));
            CUDA_OR_DIE(cudaMalloc(&ls, size_t(rows) * 4));
            CUDA_OR_DIE(cudaMalloc(&en, size_t(rows) * 4));
            CUDA_OR_DIE(cudaMalloc(&gl, size_t(rows) * 4));
            const uint64_t seed = uint64_t(V) * 31 + uint64_t(dtype);
            fill(z, dtype, rows * V, seed, s);
            fill_targets<<<64, 256, 0, s>>>(static_cast<int64_t*>(t), rows, V, seed);
            fill_floats<<<64, 256, 0, s>>>(static_cast<float*>(gl), rows, -1e-3f, 1e-3f, seed);
            CUDA_OR_DIE(cudaGetLastError());
            auto F = [&](bool ent) {
                return spo4j_token_logprobs_fwd_cuda(z, dtype, rows, V, V, static_cast<int64_t*>(t), -100,
                                                     static_cast<float*>(lp), static_cast<float*>(ls),
                                                     ent ? static_cast<float*>(en) : nullptr, s) == SPO4J_OK;
            };
            auto Bw = [&]() {
                return spo4j_token_logprobs_bwd_cuda(z, dtype, rows, V, V, static_cast<int64_t*>(t), -100,
                                                     static_cast<float*>(ls), static_cast<float*>(gl), z, V,
                                                     s) == SPO4J_OK;
            };
            // Validate before timing: a few rows of the forward against the CPU kernel.
            bool ok = F(true);
            if (!ok) std::printf("bench: forward failed: %s\n", spo4j_last_error());
            {
                const int64_t sample[] = {0, rows / 2, rows - 1};
                std::vector<uint8_t> hz(size_t(V * es));
                for (int64_t r : sample) {
                    int64_t ht = 0;
                    float dl = 0, dp = 0, cl = 0, cp = 0;
                    CUDA_OR_DIE(cudaMemcpy(hz.data(), static_cast<uint8_t*>(z) + size_t(r * V * es), hz.size(),
                                           cudaMemcpyDeviceToHost));
                    CUDA_OR_DIE(cudaMemcpy(&ht, static_cast<int64_t*>(t) + r, 8, cudaMemcpyDeviceToHost));
                    CUDA_OR_DIE(cudaMemcpy(&dl, static_cast<float*>(ls) + r, 4, cudaMemcpyDeviceToHost));
                    CUDA_OR_DIE(cudaMemcpy(&dp, static_cast<float*>(lp) + r, 4, cudaMemcpyDeviceToHost));
                    spo4j_token_logprobs_fwd_cpu(hz.data(), dtype, 1, V, V, &ht, -100, &cp, &cl, nullptr, 1);
                    if (!(std::fabs(dl - cl) <= 1e-4 * (1 + std::fabs(cl)) &&
                          std::fabs(dp - cp) <= 1e-4 * (1 + std::fabs(cp)))) {
                        ok = false;
                        std::printf("bench: row %" PRId64 " mismatch: cuda lse %.7g logp %.7g, cpu lse %.7g logp %.7g\n",
                                    r, dl, dp, cl, cp);
                    }
                }
            }
            const double small_fwd = double(rows) * (8 + 4 + 4);
            const double small_bwd = double(rows) * (8 + 4 + 4);
            struct Mode {
                const char* name;
                double bytes;
                std::function<void()> prepare;
                std::function<bool()> body;
            };
            // Byte counts: the forward reads the logits once and writes per-row floats; the
            // backward reads and writes them once. The backward runs in place, so before each
            // repetition (untimed) the logits are refilled and, for "backward", the forward
            // recomputes the matching lse.
            const std::function<void()> refill = [&]() { fill(z, dtype, rows * V, seed, s); };
            const std::function<void()> refill_fwd = [&]() {
                refill();
                if (!F(false)) std::printf("bench: forward failed: %s\n", spo4j_last_error());
            };
            const Mode modes[] = {
                {"forward", double(zbytes) + small_fwd, nullptr, [&]() { return F(false); }},
                {"forward_entropy", double(zbytes) + small_fwd + 4.0 * rows, nullptr, [&]() { return F(true); }},
                {"backward", 2.0 * zbytes + small_bwd, refill_fwd, Bw},
                {"forwardBackward", 3.0 * zbytes + small_fwd + small_bwd, refill,
                 [&]() { return F(false) && Bw(); }},
            };
            // The library's launch shape for every mode, then forward and backward again with
            // the block size forced (SPO4J_CUDA_ROW_THREADS), to tune the default.
            struct Run {
                const Mode* mode;
                int threads;
            };
            std::vector<Run> runs;
            for (const Mode& m : modes) runs.push_back({&m, 0});
            for (int th : {128, 256, 512})
                for (int k : {0, 2}) runs.push_back({&modes[k], th});
            for (const Run& run : runs) {
                const Mode& m = *run.mode;
                if (run.threads) {
                    setenv("SPO4J_CUDA_ROW_THREADS", std::to_string(run.threads).c_str(), 1);
                } else {
                    unsetenv("SPO4J_CUDA_ROW_THREADS");
                }
                bool good = ok;
                const std::vector<double> ms = time_reps(m.prepare, m.body, &good);
                BenchRow row{m.name, dtype_name(dtype), rows, V, median(ms),
                             *std::min_element(ms.begin(), ms.end()), m.bytes, 0, 0, good, run.threads};
                row.gbps = row.bytes / (row.ms * 1e-3) / 1e9;
                row.frac = row.gbps / copy_gbps;
                std::printf("bench: %-16s %-4s %6" PRId64 " x %6" PRId64 " threads %-4s %8.3f ms  %7.1f GB/s  %5.1f%% of copy%s\n",
                            m.name, row.dtype.c_str(), rows, V,
                            run.threads ? std::to_string(run.threads).c_str() : "auto", row.ms, row.gbps,
                            100 * row.frac, good ? "" : "  (FAILED)");
                out.push_back(row);
            }
            unsetenv("SPO4J_CUDA_ROW_THREADS");
            for (void* p : {z, t, lp, ls, en, gl}) CUDA_OR_DIE(cudaFree(p));
        }
    }
    CUDA_OR_DIE(cudaFree(flush));
    CUDA_OR_DIE(cudaStreamDestroy(s));
    bool all_ok = true;
    for (const BenchRow& r : out) all_ok &= r.ok;
    if (!o.json.empty()) {
        FILE* f = std::fopen(o.json.c_str(), "w");
        if (!f) {
            std::printf("bench: cannot write %s\n", o.json.c_str());
            return 1;
        }
        std::fprintf(f, "{\n  \"tool\": \"spo4j_harness bench\",\n  \"device\": \"%s\",\n", prop.name);
        std::fprintf(f, "  \"sm_count\": %d,\n  \"l2_bytes\": %d,\n  \"cuda_driver\": %d,\n  \"cuda_runtime\": %d,\n",
                     prop.multiProcessorCount, prop.l2CacheSize, driver, runtime);
        std::fprintf(f, "  \"reps\": %d,\n  \"warmup\": %d,\n  \"copy_gbps\": %.2f,\n  \"rows\": [\n", o.reps,
                     o.warmup, copy_gbps);
        for (size_t i = 0; i < out.size(); ++i) {
            const BenchRow& r = out[i];
            std::fprintf(f,
                         "    {\"kernel\": \"token_logprobs\", \"provider\": \"spo4j\", \"mode\": \"%s\", "
                         "\"dtype\": \"%s\", \"rows\": %" PRId64 ", \"vocab\": %" PRId64 ", \"median_ms\": %.5f, "
                         "\"min_ms\": %.5f, \"bytes\": %.0f, \"gbps\": %.2f, \"copy_fraction\": %.4f, "
                         "\"row_threads\": %d, \"validated\": %s}%s\n",
                         r.mode.c_str(), r.dtype.c_str(), r.rows, r.vocab, r.ms, r.min_ms, r.bytes, r.gbps,
                         r.frac, r.row_threads, r.ok ? "true" : "false", i + 1 < out.size() ? "," : "");
        }
        std::fprintf(f, "  ]\n}\n");
        std::fclose(f);
        std::printf("bench: wrote %s\n", o.json.c_str());
    }
    return all_ok ? 0 : 1;
}

}  // namespace harness
