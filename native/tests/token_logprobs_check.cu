// Token log-probs in `spo4j_harness check`, CUDA side (built only with CUDA): every case of
// the sweep in token_logprobs_check.cpp, after its CPU check, against the float64 truth and
// against the CPU kernel's results, on both launch shapes (warp per row for rows of <= 4 KB,
// block per row above, and every forced shape on the cheaper cases), with rows whose start
// is or is not 16-byte aligned (base offsets and padded strides), in place and not, on the
// legacy default stream and on a created stream; guard bytes around every buffer must
// survive. Then the error statuses, including "a failed call leaves the (in-place) logits
// untouched". Kernel: native/cuda/token_logprobs.cu.
#include <cuda_runtime.h>

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <random>
#include <string>

#include "cuda_check.cuh"
#include "token_logprobs_check.h"

namespace harness {
namespace {

template <typename T>
T pick(std::mt19937_64& g, std::initializer_list<T> xs) {
    return *(xs.begin() + g() % xs.size());
}

}  // namespace

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

}  // namespace harness
