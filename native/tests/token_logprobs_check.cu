// Token log-probs in `spo4j_harness check`, CUDA side (built only with CUDA): every case of
// the sweep in token_logprobs_check.cpp, after its CPU check, against the float64 truth and
// against the CPU kernel's results, on both launch shapes (warp per row for rows of <= 4 KB,
// block per row above, and every forced shape on the cheaper cases), with rows whose start
// is or is not 16-byte aligned (base offsets and padded strides), in place and not, on the
// legacy default stream and on a created stream; guard bytes around every buffer must
// survive. Then the error statuses, including "a failed call leaves the (in-place) logits
// untouched"; the unchecked launches (bit-identical to the checked ones, bad targets as NaN
// rows, captured in a CUDA graph); the backward at every 16-byte phase between its input and
// output rows. Kernel: native/cuda/token_logprobs.cu.
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

    DevBuf z(strided_payload_bytes(c.rows, c.stride, es, off)), tg(n * 8), gl(n * 4), li(n * 4);
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

    // the unchecked launch (no host sync) runs the same kernel: bit-identical outputs
    if (forced_threads == 0) {
        DevBuf ulp(n * 4, 0xff), uls(n * 4, 0xff), uen(n * 4, 0xff);
        const int ust = spo4j_token_logprobs_fwd_cuda_unchecked(
            z.at(off), c.dtype, c.rows, c.vocab, c.stride, tg.as<int64_t>(), c.ignore_index,
            ulp.as<float>(), uls.as<float>(), c.entropy ? uen.as<float>() : nullptr, stream);
        CUDA_OR_DIE(cudaStreamSynchronize(stream));
        const bool same = ust == SPO4J_OK && ulp.download<uint8_t>(n * 4) == lp.download<uint8_t>(n * 4) &&
                          uls.download<uint8_t>(n * 4) == ls.download<uint8_t>(n * 4) &&
                          (!c.entropy || uen.download<uint8_t>(n * 4) == en.download<uint8_t>(n * 4));
        ck.record(same, "cuda fwd unchecked == checked, bit for bit [" + ctx + "]",
                  strf("status %d: %s", ust, spo4j_last_error()));
    }

    // backward into a separate buffer: its own stride and offset, so that input and output
    // rows can sit at different 16-byte phases (realigned loads) or the same one
    const int64_t gstride = c.vocab + pick<int64_t>(g, {0, 0, 2, 8});
    const size_t goff = pick<size_t>(g, {0, 0, 1, 5}) * size_t(es);
    DevBuf gz(strided_payload_bytes(c.rows, gstride, es, goff), 0xff);
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
    if (forced_threads == 0 && bwd_ok && inplace_ok) {
        // unchecked, in place over a fresh copy of the logits: the same bytes as the checked call
        DevBuf zu(strided_payload_bytes(c.rows, c.stride, es, off));
        zu.upload(c.logits.data(), zbytes, off);
        const int ust = spo4j_token_logprobs_bwd_cuda_unchecked(
            zu.at(off), c.dtype, c.rows, c.vocab, c.stride, tg.as<int64_t>(), c.ignore_index,
            li.as<float>(), gl.as<float>(), zu.at(off), c.stride, stream);
        CUDA_OR_DIE(cudaStreamSynchronize(stream));
        ck.record(ust == SPO4J_OK && zu.download_all() == z.download_all(),
                  "cuda bwd unchecked in place == checked, bit for bit [" + ctx + "]",
                  strf("status %d: %s", ust, spo4j_last_error()));
    }
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
    auto logits_untouched = [&]() { return dz.download<uint8_t>(zb) == z; };
    std::vector<int64_t> bad = t;
    bad[3] = vocab;
    expect_status(ck, fwd(bad, -100), SPO4J_ERR_TARGET, "cuda fwd target == vocab -> TARGET " + d,
                  strf("target %" PRId64 " at row 3 is out of range [0, %" PRId64 ") and is not ignore_index -100",
                       vocab, vocab));
    // the target check runs inside the forward's pass: the bad row's logp is NaN, never z[t]
    ck.record(std::isnan(lp.download<float>(n)[3]), "cuda fwd bad target gives the row a NaN logp " + d);
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
    {
        // unchecked: a bad target is not reported and never dereferenced; its row gets NaN
        // (logp; the whole gradient row) and every other row the checked call's bytes
        expect_status(ck, fwd(t, -100), SPO4J_OK, "cuda fwd (checked) for the unchecked comparison " + d);
        const std::vector<float> ref_lp = lp.download<float>(n), ref_ls = ls.download<float>(n);
        std::vector<int64_t> ub = t;
        ub[4] = vocab + 3;
        ub[6] = -7;
        dt.upload(ub.data(), n * 8);
        expect_status(ck, spo4j_token_logprobs_fwd_cuda_unchecked(dz.at(), dtype, rows, vocab, stride, dt.as<int64_t>(),
                                                                  -100, lp.as<float>(), ls.as<float>(), en.as<float>(),
                                                                  nullptr),
                      SPO4J_OK, "cuda fwd unchecked with bad targets returns OK " + d);
        CUDA_OR_DIE(cudaDeviceSynchronize());
        const std::vector<float> u_lp = lp.download<float>(n), u_ls = ls.download<float>(n);
        bool rows_ok = std::isnan(u_lp[4]) && std::isnan(u_lp[6]);
        for (size_t r : {size_t(0), size_t(1), size_t(2), size_t(3), size_t(5)})
            rows_ok &= std::memcmp(&u_lp[r], &ref_lp[r], 4) == 0 && std::memcmp(&u_ls[r], &ref_ls[r], 4) == 0;
        ck.record(rows_ok, "cuda fwd unchecked: bad rows get logp NaN, the others the checked bytes " + d);
        // backward: checked reference with the good targets, then unchecked with the bad ones
        dls.upload(lse.data(), n * 4);
        dt.upload(t.data(), n * 8);
        expect_status(ck, spo4j_token_logprobs_bwd_cuda(dz.at(), dtype, rows, vocab, stride, dt.as<int64_t>(), -100,
                                                        dls.as<float>(), dgl.as<float>(), dz.at(), stride, nullptr),
                      SPO4J_OK, "cuda bwd (checked) for the unchecked comparison " + d);
        const std::vector<uint8_t> ref_g = dz.download<uint8_t>(zb);
        dz.upload(z.data(), zb);
        dt.upload(ub.data(), n * 8);
        expect_status(ck, spo4j_token_logprobs_bwd_cuda_unchecked(dz.at(), dtype, rows, vocab, stride,
                                                                  dt.as<int64_t>(), -100, dls.as<float>(),
                                                                  dgl.as<float>(), dz.at(), stride, nullptr),
                      SPO4J_OK, "cuda bwd unchecked with bad targets returns OK " + d);
        CUDA_OR_DIE(cudaDeviceSynchronize());
        const std::vector<uint8_t> u_g = dz.download<uint8_t>(zb);
        bool g_ok = true;
        for (int64_t r = 0; r < rows; ++r) {
            const size_t row0 = size_t(r * stride * es), len = size_t(vocab * es);
            if (r == 4 || r == 6) {
                for (int64_t v = 0; v < vocab; ++v) g_ok &= std::isnan(load_elem(u_g.data() + row0, dtype, v));
            } else {
                g_ok &= std::memcmp(u_g.data() + row0, ref_g.data() + row0, len) == 0;
            }
            // the row padding is the logits' own and stays as it was
            g_ok &= std::memcmp(u_g.data() + row0 + len, z.data() + row0 + len, size_t((stride - vocab) * es)) == 0;
        }
        ck.record(g_ok, "cuda bwd unchecked: bad rows get NaN gradients, the others the checked bytes " + d);
        dz.upload(z.data(), zb);
        dt.upload(t.data(), n * 8);
    }
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

namespace {

// Every 16-byte phase between input and output rows of an out-of-place backward (logits at
// element offset 0 or 1, gradient at 0..VEC-1 elements, strides that keep or shift the
// phase from row to row): the realigned vector path, its scalar ends and short rows,
// against the CPU kernel, with guards and row padding intact. Warp path (V = 129, 1000) and
// block path (V = 5000).
void cuda_check_realign(Checker& ck) {
    for (int dtype : {SPO4J_F32, SPO4J_BF16, SPO4J_F16}) {
        const int es = elem_size(dtype), vec = 16 / es;
        for (int64_t V : {int64_t(5), int64_t(129), int64_t(1000), int64_t(5000)}) {
            const int64_t rows = 4;
            std::mt19937_64 g(uint64_t(V * 17 + dtype));
            std::normal_distribution<float> nd(0.0f, 3.0f);
            const int64_t zstride = V + (V % 2 ? 1 : 3);
            std::vector<uint8_t> z(static_cast<size_t>(rows * zstride * es));
            for (int64_t i = 0; i < rows * zstride; ++i) store_elem(z.data(), dtype, i, nd(g));
            std::vector<int64_t> t(static_cast<size_t>(rows));
            for (auto& x : t) x = int64_t(g() % uint64_t(V));
            t[1] = -100;
            std::vector<float> gl(static_cast<size_t>(rows)), lse(static_cast<size_t>(rows)), lp(static_cast<size_t>(rows));
            for (auto& x : gl) x = float(int(g() % 2001) - 1000) / 500.0f;
            spo4j_token_logprobs_fwd_cpu(z.data(), dtype, rows, V, zstride, t.data(), -100, lp.data(), lse.data(),
                                         nullptr, 1);
            std::vector<uint8_t> ref(static_cast<size_t>(rows * V * es));
            spo4j_token_logprobs_bwd_cpu(z.data(), dtype, rows, V, zstride, t.data(), -100, lse.data(), gl.data(),
                                         ref.data(), V, 1);
            DevBuf dt(size_t(rows) * 8), dl(size_t(rows) * 4), dg(size_t(rows) * 4);
            dt.upload(t.data(), size_t(rows) * 8);
            dl.upload(lse.data(), size_t(rows) * 4);
            dg.upload(gl.data(), size_t(rows) * 4);
            bool ok = true;
            std::string bad;
            for (int zoff_el : {0, 1}) {
                const size_t zoff = size_t(zoff_el * es);
                DevBuf dz(strided_payload_bytes(rows, zstride, es, zoff));
                dz.upload(z.data(), z.size(), zoff);
                for (int goff_el = 0; goff_el < vec; ++goff_el) {
                    for (int64_t gpad : {int64_t(0), int64_t(1)}) {
                        const int64_t gstride = V + gpad;
                        const size_t goff = size_t(goff_el * es);
                        DevBuf out(strided_payload_bytes(rows, gstride, es, goff), 0xff);
                        const int st = spo4j_token_logprobs_bwd_cuda(dz.at(zoff), dtype, rows, V, zstride,
                                                                     dt.as<int64_t>(), -100, dl.as<float>(),
                                                                     dg.as<float>(), out.at(goff), gstride, nullptr);
                        const std::vector<uint8_t> h = out.download_all();
                        const uint8_t* base = h.data() + kGuardBytes + goff;
                        Closeness cc("realign");
                        bool pad_ok = true;
                        for (int64_t r = 0; r < rows; ++r) {
                            for (int64_t v = 0; v < V; ++v) {
                                const double want = load_elem(ref.data() + size_t(r * V * es), dtype, v);
                                // one rounding of the output dtype either side, on top of fp32 exp
                                const double tol = 1e-6 + 2.0 * (es == 4 ? 0x1.0p-23 : es == 2 && dtype == SPO4J_BF16
                                                                     ? 0x1.0p-8 : 0x1.0p-11) * std::fabs(want);
                                cc.add(r * V + v, load_elem(base + size_t(r * gstride * es), dtype, v), want,
                                       tol + (dtype == SPO4J_F16 ? 0x1.0p-24 : 0.0));
                            }
                            for (int64_t b = V * es; b < gstride * es; ++b)
                                pad_ok &= base[size_t(r * gstride * es + b)] == 0xff;
                        }
                        Checker quiet;
                        const bool vals = cc.finish(quiet, "");
                        const bool this_ok = st == SPO4J_OK && vals && pad_ok && guards_intact(h);
                        if (!this_ok && bad.empty())
                            bad = strf("logits offset %zu B, gradient offset %zu B, stride %" PRId64
                                       ": status %d, values %s, padding %s, guards %s",
                                       zoff, goff, gstride, st, vals ? "ok" : "wrong", pad_ok ? "ok" : "changed",
                                       guards_intact(h) ? "intact" : "overwritten");
                        ok &= this_ok;
                    }
                }
            }
            ck.record(ok, strf("cuda bwd out of place at every 16-byte phase (realigned loads) [%s V=%" PRId64 "]",
                               dtype_name(dtype), V),
                      bad);
        }
    }
}

// The unchecked launches inside a CUDA graph: forward and in-place backward captured on a
// created stream, replayed twice over fresh logits, bit-identical to direct unchecked calls;
// a checked call inside a capture fails with a status (it must synchronise) and leaves no
// error behind for the next call.
void cuda_check_graph_capture(Checker& ck) {
    for (int dtype : {SPO4J_F32, SPO4J_BF16}) {
        for (int64_t V : {int64_t(129), int64_t(5000)}) {
            const std::string d = strf("%s V=%" PRId64, dtype_name(dtype), V);
            const int64_t rows = 33;
            const int es = elem_size(dtype);
            std::mt19937_64 g(uint64_t(V + 31 * dtype));
            std::normal_distribution<float> nd(0.0f, 2.0f);
            std::vector<uint8_t> z(static_cast<size_t>(rows * V * es));
            for (int64_t i = 0; i < rows * V; ++i) store_elem(z.data(), dtype, i, nd(g));
            std::vector<int64_t> t(static_cast<size_t>(rows));
            for (auto& x : t) x = g() % 5 == 0 ? -100 : int64_t(g() % uint64_t(V));
            std::vector<float> gl(static_cast<size_t>(rows), 0.25f);
            const size_t n = size_t(rows), zb = z.size();
            DevBuf dz(zb), dt(n * 8), dg(n * 4), lp(n * 4, 0xff), ls(n * 4, 0xff);
            dt.upload(t.data(), n * 8);
            dg.upload(gl.data(), n * 4);
            cudaStream_t s;
            CUDA_OR_DIE(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
            auto step = [&]() {
                const int a = spo4j_token_logprobs_fwd_cuda_unchecked(dz.at(), dtype, rows, V, V, dt.as<int64_t>(),
                                                                      -100, lp.as<float>(), ls.as<float>(), nullptr, s);
                const int b = spo4j_token_logprobs_bwd_cuda_unchecked(dz.at(), dtype, rows, V, V, dt.as<int64_t>(),
                                                                      -100, ls.as<float>(), dg.as<float>(), dz.at(), V,
                                                                      s);
                return a == SPO4J_OK && b == SPO4J_OK;
            };
            // direct
            dz.upload(z.data(), zb);
            const bool direct_ok = step();
            CUDA_OR_DIE(cudaStreamSynchronize(s));
            const std::vector<uint8_t> want_g = dz.download<uint8_t>(zb), want_l = ls.download<uint8_t>(n * 4);
            // captured
            dz.upload(z.data(), zb);
            cudaGraph_t graph = nullptr;
            CUDA_OR_DIE(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
            const bool captured_ok = step();
            const std::string capture_msg = spo4j_last_error();
            const cudaError_t end = cudaStreamEndCapture(s, &graph);
            bool replay_ok = captured_ok && end == cudaSuccess && graph != nullptr;
            if (replay_ok) {
                cudaGraphExec_t exec = nullptr;
                CUDA_OR_DIE(cudaGraphInstantiate(&exec, graph, 0));
                for (int rep = 0; rep < 2 && replay_ok; ++rep) {
                    dz.upload(z.data(), zb);
                    CUDA_OR_DIE(cudaMemsetAsync(ls.at(), 0xff, n * 4, s));
                    CUDA_OR_DIE(cudaGraphLaunch(exec, s));
                    CUDA_OR_DIE(cudaStreamSynchronize(s));
                    replay_ok &= dz.download<uint8_t>(zb) == want_g && ls.download<uint8_t>(n * 4) == want_l;
                }
                CUDA_OR_DIE(cudaGraphExecDestroy(exec));
            } else {
                (void)cudaGetLastError();
            }
            if (graph) CUDA_OR_DIE(cudaGraphDestroy(graph));
            ck.record(direct_ok && replay_ok,
                      "cuda unchecked fwd + in-place bwd captured in a graph replay bit for bit " + d,
                      strf("direct %d, captured %d (%s), end capture %s", direct_ok, captured_ok,
                           capture_msg.c_str(), cudaGetErrorName(end)));
            // a checked call cannot be captured (it synchronises): a status, not a crash
            CUDA_OR_DIE(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
            const int st = spo4j_token_logprobs_fwd_cuda(dz.at(), dtype, rows, V, V, dt.as<int64_t>(), -100,
                                                         lp.as<float>(), ls.as<float>(), nullptr, s);
            cudaGraph_t g2 = nullptr;
            (void)cudaStreamEndCapture(s, &g2);
            if (g2) CUDA_OR_DIE(cudaGraphDestroy(g2));
            (void)cudaGetLastError();
            ck.record(st == SPO4J_ERR_CUDA, "cuda checked fwd inside a capture returns SPO4J_ERR_CUDA " + d,
                      strf("status %d: %s", st, spo4j_last_error()));
            dz.upload(z.data(), zb);
            expect_status(ck, spo4j_token_logprobs_fwd_cuda(dz.at(), dtype, rows, V, V, dt.as<int64_t>(), -100,
                                                            lp.as<float>(), ls.as<float>(), nullptr, s),
                          SPO4J_OK, "cuda checked fwd after a failed capture works " + d);
            CUDA_OR_DIE(cudaStreamDestroy(s));
        }
    }
}

}  // namespace

void cuda_check_token_errors(Checker& ck) {
    for (int dtype : {SPO4J_F32, SPO4J_BF16, SPO4J_F16})
        for (int64_t vocab : {129, 5000}) cuda_token_errors_for(ck, dtype, vocab);
    cuda_check_realign(ck);
    cuda_check_graph_capture(ck);

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
