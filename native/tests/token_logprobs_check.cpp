// Token log-probs in `spo4j_harness check`, CPU side: the cases (a sweep of awkward shapes
// and dtypes), their float64 truth and tolerances (token_logprobs_check.h), the CPU kernel
// against them (forward, backward, in place), its error statuses, and the order in which
// each case then runs on CUDA (token_logprobs_check.cu).
// Kernel: native/cpu/token_logprobs.cpp.
#include "token_logprobs_check.h"

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>

#include "online_softmax.h"

namespace harness {

// ---- data, references, tolerances -------------------------------------------------------

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kEps32 = 1.1920928955078125e-07;  // 2^-23

// Logits of one case. Row kinds (with extreme=true, drawn per row):
//   0 normal N(0, sigma^2)            1 normal with 2% of entries at +-1e4
//   2 normal with 10% of entries -inf  3 all -inf but 1-3 finite entries (target may be -inf)
//   4 1e4 + N(0, sigma^2)  (tests cancellation: lse ~ 1e4)
// With huge_span instead, every row: N(0, sigma^2) with 5% of entries at -1e38 and at least
// one at +1e38, placed after the first 2048 entries when V > 2048 (the CPU kernel's chunk),
// so that the running max jumps by more than FLT_MAX / s after mass has accumulated.
// With spike > 0, every row: N(0, sigma^2) and, after the first 2048 entries, one entry at
// the row's max + spike * (0.5 + U) and sometimes a second, higher one further on: the jumps
// of the running base that the AVX-512 forward's fast chunks must refuse and redo.
TokenCase make_token_case(int64_t rows, int64_t vocab, int dtype, int64_t pad,
                          double ignore_frac, bool extreme, bool entropy, int64_t ignore_index,
                          uint64_t seed, bool huge_span = false, double spike = 0.0) {
    Rng rng(seed);
    TokenCase c;
    c.dtype = dtype;
    c.rows = rows;
    c.vocab = vocab;
    c.stride = vocab + pad;
    c.ignore_index = ignore_index;
    c.entropy = entropy;
    c.huge_span = huge_span;
    c.label = strf("%s rows=%" PRId64 " V=%" PRId64 " stride=%" PRId64 " ignored=%.2g%s%s ii=%" PRId64,
                     dtype_name(dtype), rows, vocab, c.stride, ignore_frac,
                     huge_span ? " span>FLT_MAX" : spike > 0 ? strf(" spike=%g", spike).c_str() : extreme ? " extreme" : "",
                     entropy ? " entropy" : "",
                     ignore_index);
    const int es = elem_size(dtype);
    c.logits.assign(size_t(rows * c.stride * es), 0);
    const float nanf = std::numeric_limits<float>::quiet_NaN();
    std::vector<float> z(static_cast<size_t>(vocab));
    for (int64_t r = 0; r < rows; ++r) {
        const int kind = extreme ? int(rng.below(5)) : 0;
        const double sigma = 0.5 + 4.0 * rng.uniform();
        for (int64_t v = 0; v < vocab; ++v) {
            double x = sigma * rng.normal();
            if (kind == 1 && rng.uniform() < 0.02) x = rng.uniform() < 0.5 ? 1e4 : -1e4;
            if (kind == 2 && rng.uniform() < 0.10) x = -kInf;
            if (kind == 3) x = -kInf;
            if (kind == 4) x += 1e4;
            z[size_t(v)] = float(x);
        }
        if (kind == 3) {
            const int64_t n = 1 + rng.below(3);
            for (int64_t k = 0; k < n; ++k) z[size_t(rng.below(vocab))] = float(sigma * rng.normal());
        }
        if (huge_span) {
            for (int64_t v = 0; v < vocab; ++v)
                if (rng.uniform() < 0.05) z[size_t(v)] = -1e38f;
            const int64_t from = vocab > 2048 ? 2048 : 0;
            z[size_t(from + rng.below(vocab - from))] = 1e38f;
            if (rng.uniform() < 0.5) z[size_t(rng.below(vocab))] = 1e38f;
        }
        if (spike > 0 && vocab > 2048) {
            float top = z[0];
            for (float x : z) top = x > top ? x : top;
            const int64_t at = 2048 + rng.below(vocab - 2048);
            z[size_t(at)] = float(top + spike * (0.5 + rng.uniform()));
            if (at + 1 < vocab && rng.uniform() < 0.5)
                z[size_t(at + 1 + rng.below(vocab - at - 1))] = float(z[size_t(at)] + spike * (0.5 + rng.uniform()));
        }
        bool any_finite = false;
        for (float x : z) any_finite |= std::isfinite(x);
        if (!any_finite) z[0] = 0.5f;
        uint8_t* row = c.logits.data() + size_t(r * c.stride * es);
        for (int64_t v = 0; v < vocab; ++v) store_elem(row, dtype, v, z[size_t(v)]);
        for (int64_t v = vocab; v < c.stride; ++v) store_elem(row, dtype, v, nanf);  // padding
    }
    c.targets.resize(size_t(rows));
    c.grad_logp.resize(size_t(rows));
    for (int64_t r = 0; r < rows; ++r) {
        c.targets[size_t(r)] = rng.uniform() < ignore_frac ? ignore_index : rng.below(vocab);
        c.grad_logp[size_t(r)] = float(4.0 * rng.uniform() - 2.0);
    }
    // float64 truth
    c.lse_ref.assign(size_t(rows), 0.0);
    c.logp_ref.assign(size_t(rows), 0.0);
    c.entropy_ref.assign(size_t(rows), 0.0);
    c.scale.assign(size_t(rows), 1.0);
    c.lse_in.assign(size_t(rows), nanf);  // ignored rows: never read by the backward
    for (int64_t r = 0; r < rows; ++r) {
        const uint8_t* row = c.logits.data() + size_t(r * c.stride * es);
        double m = -kInf, scale = 1.0;
        for (int64_t v = 0; v < vocab; ++v) {
            const double x = load_elem(row, dtype, v);
            m = std::max(m, x);
            if (std::isfinite(x)) scale = std::max(scale, std::fabs(x));
        }
        c.scale[size_t(r)] = scale;
        const int64_t t = c.targets[size_t(r)];
        if (t == ignore_index) continue;
        double s = 0, tt = 0;
        for (int64_t v = 0; v < vocab; ++v) {
            const double d = double(load_elem(row, dtype, v)) - m;
            if (d == -kInf) continue;
            const double e = std::exp(d);
            s += e;
            tt += e * d;
        }
        const double lse = m + std::log(s);
        c.lse_ref[size_t(r)] = lse;
        c.logp_ref[size_t(r)] = double(load_elem(row, dtype, t)) - lse;
        c.entropy_ref[size_t(r)] = std::log(s) - tt / s;
        c.lse_in[size_t(r)] = float(lse);
    }
    return c;
}

}  // namespace

void ref_grad_row(const TokenCase& c, int64_t r, std::vector<double>& out) {
    out.assign(size_t(c.vocab), 0.0);
    const int64_t t = c.targets[size_t(r)];
    if (t == c.ignore_index) return;
    const uint8_t* row = c.logits.data() + size_t(r * c.stride * elem_size(c.dtype));
    const double g = c.grad_logp[size_t(r)], l = c.lse_in[size_t(r)];
    for (int64_t v = 0; v < c.vocab; ++v) {
        const double x = load_elem(row, c.dtype, v);
        out[size_t(v)] = g * ((v == t ? 1.0 : 0.0) - std::exp(x - l));
    }
}

// fp32 sums over a row (relative error ~1e-5 at most for these V), plus the rounding of
// fp32 values of the row's magnitude (a 1e4 logit has ulp 1e-3).
double tol_lse(const TokenCase& c, int64_t r) { return 3e-5 + 16 * kEps32 * c.scale[size_t(r)]; }

double tol_entropy(const TokenCase& c, int64_t r) {
    // huge_span: every term but the maxima is exactly 0, so only the log of k is rounded
    const double scale_term = c.huge_span ? 0.0 : 16 * kEps32 * c.scale[size_t(r)];
    return 1e-4 + 2e-5 * std::fabs(c.entropy_ref[size_t(r)]) + scale_term;
}

double tol_grad(const TokenCase& c, int64_t r, double ref) {
    // exp(z - lse) in fp32: z - lse rounds at the row's magnitude; then the output's
    // round-to-nearest (at most 2^-24 / 2^-8 / 2^-11 relative for fp32 / bf16 / fp16, and
    // 2^-25 absolute for fp16 subnormals), with 2x slack.
    const double g = std::fabs(c.grad_logp[size_t(r)]);
    const double rt = c.dtype == SPO4J_F32 ? 0x1.0p-23 : c.dtype == SPO4J_BF16 ? 0x1.0p-7 : 0x1.0p-10;
    const double at = c.dtype == SPO4J_F16 ? 0x1.0p-24 : 0.0;
    return g * (4e-6 + 8 * kEps32 * c.scale[size_t(r)]) + rt * std::fabs(ref) + at;
}

// Compares one forward result (logp, lse, entropy) with the truth.
void compare_forward(Checker& ck, const TokenCase& c, const char* who, const float* logp,
                     const float* lse, const float* entropy, double slack) {
    Closeness cl(strf("%s fwd logp", who)), cs(strf("%s fwd lse", who)),
        ce(strf("%s fwd entropy", who));
    for (int64_t r = 0; r < c.rows; ++r) {
        cl.add(r, logp[r], c.logp_ref[size_t(r)], slack * tol_lse(c, r));
        cs.add(r, lse[r], c.lse_ref[size_t(r)], slack * tol_lse(c, r));
        if (entropy) ce.add(r, entropy[r], c.entropy_ref[size_t(r)], slack * tol_entropy(c, r));
    }
    cl.finish(ck, c.label);
    cs.finish(ck, c.label);
    if (entropy) ce.finish(ck, c.label);
}

namespace {

bool same_bytes(const uint8_t* a, const uint8_t* b, size_t n) { return std::memcmp(a, b, n) == 0; }

void cpu_check_token_case(Checker& ck, TokenCase& c, int threads, int64_t gpad) {
    const int es = elem_size(c.dtype);
    const float nanf = std::numeric_limits<float>::quiet_NaN();
    // forward into poisoned outputs
    std::vector<float> logp(size_t(c.rows), nanf), lse(size_t(c.rows), nanf),
        ent(size_t(c.rows), nanf);
    int st = spo4j_token_logprobs_fwd_cpu(c.logits.data(), c.dtype, c.rows, c.vocab, c.stride,
                                          c.targets.data(), c.ignore_index, logp.data(),
                                          lse.data(), c.entropy ? ent.data() : nullptr, threads);
    if (!ck.record(st == SPO4J_OK, "cpu fwd status [" + c.label + "]",
                   strf("status %d: %s", st, spo4j_last_error())))
        return;
    compare_forward(ck, c, "cpu", logp.data(), lse.data(), c.entropy ? ent.data() : nullptr, 1.0);
    c.logp_cpu = logp;
    c.lse_cpu = lse;
    c.entropy_cpu = ent;

    // backward, separate output with its own stride, poisoned (0xff bytes: NaN in every dtype)
    const int64_t gstride = c.vocab + gpad;
    std::vector<uint8_t> grad(size_t(c.rows * gstride * es), 0xff);
    st = spo4j_token_logprobs_bwd_cpu(c.logits.data(), c.dtype, c.rows, c.vocab, c.stride,
                                      c.targets.data(), c.ignore_index, c.lse_in.data(),
                                      c.grad_logp.data(), grad.data(), gstride, threads);
    ck.record(st == SPO4J_OK, "cpu bwd status [" + c.label + "]",
              strf("status %d: %s", st, spo4j_last_error()));
    // backward in place over a copy of the logits
    std::vector<uint8_t> inplace = c.logits;
    st = spo4j_token_logprobs_bwd_cpu(inplace.data(), c.dtype, c.rows, c.vocab, c.stride,
                                      c.targets.data(), c.ignore_index, c.lse_in.data(),
                                      c.grad_logp.data(), inplace.data(), c.stride, threads);
    ck.record(st == SPO4J_OK, "cpu bwd in-place status [" + c.label + "]",
              strf("status %d: %s", st, spo4j_last_error()));
    Closeness cg("cpu bwd grad"), ci("cpu bwd in-place grad");
    bool pad_ok = true, inpad_ok = true;
    c.grad_cpu.assign(size_t(c.rows * c.vocab * es), 0);
    std::vector<double> ref;
    for (int64_t r = 0; r < c.rows; ++r) {
        ref_grad_row(c, r, ref);
        const uint8_t* g = grad.data() + size_t(r * gstride * es);
        const uint8_t* gi = inplace.data() + size_t(r * c.stride * es);
        for (int64_t v = 0; v < c.vocab; ++v) {
            const double tol = tol_grad(c, r, ref[size_t(v)]);
            cg.add(r * c.vocab + v, load_elem(g, c.dtype, v), ref[size_t(v)], tol);
            ci.add(r * c.vocab + v, load_elem(gi, c.dtype, v), ref[size_t(v)], tol);
        }
        std::memcpy(c.grad_cpu.data() + size_t(r * c.vocab * es), g, size_t(c.vocab * es));
        for (int64_t b = c.vocab * es; b < gstride * es; ++b) pad_ok &= g[b] == 0xff;
        const uint8_t* orig = c.logits.data() + size_t(r * c.stride * es);
        inpad_ok &= same_bytes(gi + c.vocab * es, orig + c.vocab * es, size_t((c.stride - c.vocab) * es));
    }
    cg.finish(ck, c.label);
    ci.finish(ck, c.label);
    ck.record(pad_ok, "cpu bwd leaves gradient row padding untouched [" + c.label + "]");
    ck.record(inpad_ok, "cpu bwd in-place leaves logits row padding untouched [" + c.label + "]");

    // the slice backward (the fused LM head's vocabulary tiles): three column windows of the
    // same rows, the middle one in place over a copy, must reproduce the whole-row gradient
    // bit for bit, the one-hot term only in the window holding the target
    const int64_t cuts[4] = {0, c.vocab / 3, (2 * c.vocab) / 3, c.vocab};
    std::vector<uint8_t> window = c.logits;
    bool slices_ok = true;
    for (int k = 0; k < 3; ++k) {
        const int64_t v0 = cuts[k], width = cuts[k + 1] - cuts[k];
        if (width == 0) continue;
        const bool in_place = k == 1;
        std::vector<uint8_t> out(size_t(c.rows * width * es), 0xff);
        uint8_t* src = window.data() + size_t(v0 * es);
        uint8_t* dst = in_place ? src : out.data();
        st = spo4j_token_logprobs_bwd_slice_cpu(src, c.dtype, c.rows, width, c.stride, c.targets.data(),
                                                c.ignore_index, v0, c.vocab, 1, c.lse_in.data(),
                                                c.grad_logp.data(), dst, in_place ? c.stride : width, threads);
        if (!ck.record(st == SPO4J_OK, strf("cpu bwd slice [%lld, %lld) status [", (long long)v0,
                                            (long long)(v0 + width)) + c.label + "]",
                       strf("status %d: %s", st, spo4j_last_error())))
            return;
        for (int64_t r = 0; r < c.rows; ++r) {
            const uint8_t* got = in_place ? src + size_t(r * c.stride * es) : out.data() + size_t(r * width * es);
            slices_ok &= same_bytes(got, c.grad_cpu.data() + size_t((r * c.vocab + v0) * es), size_t(width * es));
        }
    }
    ck.record(slices_ok, "cpu bwd slices equal the whole-row gradient [" + c.label + "]");
    // without the one-hot term (one_hot = 0): -g exp(z - lse) in every column, the target's too
    std::vector<uint8_t> soft(size_t(c.rows * c.vocab * es), 0xff);
    st = spo4j_token_logprobs_bwd_slice_cpu(c.logits.data(), c.dtype, c.rows, c.vocab, c.stride, c.targets.data(),
                                            c.ignore_index, 0, c.vocab, 0, c.lse_in.data(), c.grad_logp.data(),
                                            soft.data(), c.vocab, threads);
    ck.record(st == SPO4J_OK, "cpu bwd without one-hot status [" + c.label + "]",
              strf("status %d: %s", st, spo4j_last_error()));
    Closeness cs("cpu bwd without one-hot");
    for (int64_t r = 0; r < c.rows; ++r) {
        ref_grad_row(c, r, ref);
        const int64_t t = c.targets[size_t(r)];
        if (t != c.ignore_index) ref[size_t(t)] -= c.grad_logp[size_t(r)];
        for (int64_t v = 0; v < c.vocab; ++v)
            cs.add(r * c.vocab + v, load_elem(soft.data() + size_t(r * c.vocab * es), c.dtype, v), ref[size_t(v)],
                   tol_grad(c, r, ref[size_t(v)]));
    }
    cs.finish(ck, c.label);
    c.cpu_ok = true;
}

}  // namespace

namespace {

void cpu_check_token_errors(Checker& ck) {
    for (int dtype : {SPO4J_F32, SPO4J_BF16, SPO4J_F16}) {
        TokenCase c = make_token_case(7, 129, dtype, 3, 0.0, false, true, -100, 4242 + dtype);
        const std::string d = dtype_name(dtype);
        const float nanf = std::numeric_limits<float>::quiet_NaN();
        std::vector<float> logp(7, nanf), lse(7, nanf), ent(7, nanf);
        std::vector<uint8_t> grad(size_t(7 * 129 * elem_size(dtype)), 0xff);
        auto fwd = [&](const std::vector<int64_t>& t, const uint8_t* z, int64_t ii) {
            return spo4j_token_logprobs_fwd_cpu(z, dtype, 7, 129, c.stride, t.data(), ii,
                                                logp.data(), lse.data(), ent.data(), 1);
        };
        auto untouched = [&]() {
            bool ok = true;
            for (int r = 0; r < 7; ++r) ok &= std::isnan(logp[r]) && std::isnan(lse[r]) && std::isnan(ent[r]);
            return ok;
        };
        // target out of range
        std::vector<int64_t> bad = c.targets;
        bad[3] = 129;
        expect_status(ck, fwd(bad, c.logits.data(), -100), SPO4J_ERR_TARGET,
                      "cpu fwd target == vocab -> TARGET " + d, "target 129 at row 3");
        ck.record(untouched(), "cpu fwd bad target leaves outputs untouched " + d);
        bad = c.targets;
        bad[2] = -1;
        expect_status(ck, fwd(bad, c.logits.data(), -100), SPO4J_ERR_TARGET,
                      "cpu fwd target -1 (ignore_index -100) -> TARGET " + d, "row 2");
        std::vector<uint8_t> copy = c.logits;
        bad = c.targets;
        bad[5] = 1000;
        int st = spo4j_token_logprobs_bwd_cpu(copy.data(), dtype, 7, 129, c.stride, bad.data(), -100,
                                              c.lse_in.data(), c.grad_logp.data(), copy.data(),
                                              c.stride, 1);
        expect_status(ck, st, SPO4J_ERR_TARGET, "cpu bwd in-place bad target -> TARGET " + d, "row 5");
        ck.record(copy == c.logits, "cpu bwd in-place bad target leaves logits untouched " + d);
        // slice backward: targets are checked against the whole vocabulary, the slice must lie in it
        st = spo4j_token_logprobs_bwd_slice_cpu(copy.data(), dtype, 7, 100, c.stride, bad.data(), -100, 29, 129, 1,
                                                c.lse_in.data(), c.grad_logp.data(), copy.data(), c.stride, 1);
        expect_status(ck, st, SPO4J_ERR_TARGET, "cpu bwd slice bad target -> TARGET " + d,
                      "target 1000 at row 5 is out of range [0, 129)");
        st = spo4j_token_logprobs_bwd_slice_cpu(copy.data(), dtype, 7, 100, c.stride, c.targets.data(), -100, 30,
                                                129, 1, c.lse_in.data(), c.grad_logp.data(), copy.data(), c.stride, 1);
        expect_status(ck, st, SPO4J_ERR_ARGUMENT, "cpu bwd slice past the vocabulary -> ARGUMENT " + d,
                      "vocabulary slice [30, 30 + 100) is not inside [0, 129)");
        st = spo4j_token_logprobs_bwd_slice_cpu(copy.data(), dtype, 7, 100, c.stride, c.targets.data(), -100, -1,
                                                129, 1, c.lse_in.data(), c.grad_logp.data(), copy.data(), c.stride, 1);
        expect_status(ck, st, SPO4J_ERR_ARGUMENT, "cpu bwd slice negative offset -> ARGUMENT " + d, "[-1, -1 + 100)");
        ck.record(copy == c.logits, "cpu bwd slice errors leave logits untouched " + d);
        // a row with no finite logit
        copy = c.logits;
        for (int v = 0; v < 129; ++v)
            store_elem(copy.data() + 4 * c.stride * elem_size(dtype), dtype, v,
                       -std::numeric_limits<float>::infinity());
        expect_status(ck, fwd(c.targets, copy.data(), -100), SPO4J_ERR_NONFINITE,
                      "cpu fwd all -inf row -> NONFINITE " + d, "row 4");
        std::vector<float> lse_bad = c.lse_in;
        lse_bad[6] = -std::numeric_limits<float>::infinity();
        copy = c.logits;
        st = spo4j_token_logprobs_bwd_cpu(copy.data(), dtype, 7, 129, c.stride, c.targets.data(),
                                          -100, lse_bad.data(), c.grad_logp.data(), copy.data(),
                                          c.stride, 1);
        expect_status(ck, st, SPO4J_ERR_NONFINITE, "cpu bwd lse -inf -> NONFINITE " + d, "row 6");
        ck.record(copy == c.logits, "cpu bwd in-place lse -inf leaves logits untouched " + d);
        // backward: a NaN lse propagates (only -inf is an error there)
        lse_bad[6] = nanf;
        copy = c.logits;
        st = spo4j_token_logprobs_bwd_cpu(copy.data(), dtype, 7, 129, c.stride, c.targets.data(),
                                          -100, lse_bad.data(), c.grad_logp.data(), copy.data(),
                                          c.stride, 1);
        expect_status(ck, st, SPO4J_OK, "cpu bwd lse NaN propagates " + d);
        copy = c.logits;
        store_elem(copy.data() + 1 * c.stride * elem_size(dtype), dtype, 17, nanf);
        st = fwd(c.targets, copy.data(), -100);
        expect_status(ck, st, SPO4J_ERR_NONFINITE, "cpu fwd NaN logit -> NONFINITE naming it " + d,
                      "row 1 (target " + std::to_string(c.targets[1]) + ") has a NaN logit (at column 17)");
        copy = c.logits;
        store_elem(copy.data() + 2 * c.stride * elem_size(dtype), dtype, 5, std::numeric_limits<float>::infinity());
        st = fwd(c.targets, copy.data(), -100);
        expect_status(ck, st, SPO4J_ERR_NONFINITE, "cpu fwd +inf logit -> NONFINITE naming it " + d,
                      "has a +inf logit (at column 5)");
        copy = c.logits;
        for (int v = 0; v < 129; ++v) store_elem(copy.data() + 3 * c.stride * elem_size(dtype), dtype, v, nanf);
        expect_status(ck, fwd(c.targets, copy.data(), -100), SPO4J_ERR_NONFINITE,
                      "cpu fwd all-NaN row -> NONFINITE, not 'every logit is -inf' " + d, "row 3 (target");
        // ignore_index inside [0, V): those rows are ignored, not errors
        std::vector<int64_t> t0 = c.targets;
        t0[1] = 0;
        expect_status(ck, fwd(t0, c.logits.data(), 0), SPO4J_OK, "cpu fwd ignore_index 0 " + d);
        ck.record(logp[1] == 0 && lse[1] == 0 && ent[1] == 0, "cpu fwd ignore_index 0 gives zeros " + d);
    }
    // argument errors
    TokenCase c = make_token_case(3, 10, SPO4J_F32, 0, 0.0, false, true, -100, 99);
    std::vector<float> o(3), o2(3);
    std::vector<uint8_t> g(c.logits.size());
    const void* z = c.logits.data();
    const int64_t* t = c.targets.data();
    auto F = [&](const void* zz, int dt, int64_t rows, int64_t V, int64_t s, const int64_t* tt, float* a, float* b) {
        return spo4j_token_logprobs_fwd_cpu(zz, dt, rows, V, s, tt, -100, a, b, nullptr, 1);
    };
    auto B = [&](const void* zz, int64_t s, void* gg, int64_t gs, const float* l, const float* gl) {
        return spo4j_token_logprobs_bwd_cpu(zz, SPO4J_F32, 3, 10, s, t, -100, l, gl, gg, gs, 1);
    };
    expect_status(ck, F(z, 3, 3, 10, 10, t, o.data(), o2.data()), SPO4J_ERR_ARGUMENT, "cpu fwd dtype 3 -> ARGUMENT");
    expect_status(ck, F(z, 0, -1, 10, 10, t, o.data(), o2.data()), SPO4J_ERR_ARGUMENT, "cpu fwd rows -1 -> ARGUMENT");
    expect_status(ck, F(z, 0, 3, 0, 10, t, o.data(), o2.data()), SPO4J_ERR_ARGUMENT, "cpu fwd vocab 0 -> ARGUMENT");
    expect_status(ck, F(z, 0, 3, 10, 9, t, o.data(), o2.data()), SPO4J_ERR_ARGUMENT, "cpu fwd stride < vocab -> ARGUMENT");
    expect_status(ck, F(nullptr, 0, 3, 10, 10, t, o.data(), o2.data()), SPO4J_ERR_ARGUMENT, "cpu fwd null logits -> ARGUMENT");
    expect_status(ck, F(z, 0, 3, 10, 10, nullptr, o.data(), o2.data()), SPO4J_ERR_ARGUMENT, "cpu fwd null targets -> ARGUMENT");
    expect_status(ck, F(z, 0, 3, 10, 10, t, nullptr, o2.data()), SPO4J_ERR_ARGUMENT, "cpu fwd null logp -> ARGUMENT");
    expect_status(ck, F(z, 0, 3, 10, 10, t, o.data(), nullptr), SPO4J_ERR_ARGUMENT, "cpu fwd null lse -> ARGUMENT");
    expect_status(ck, F(nullptr, 0, 0, 10, 10, nullptr, nullptr, nullptr), SPO4J_OK, "cpu fwd rows 0 is a no-op");
    expect_status(ck, B(z, 10, g.data(), 9, c.lse_in.data(), c.grad_logp.data()), SPO4J_ERR_ARGUMENT, "cpu bwd grad stride < vocab -> ARGUMENT");
    expect_status(ck, B(z, 10, nullptr, 10, c.lse_in.data(), c.grad_logp.data()), SPO4J_ERR_ARGUMENT, "cpu bwd null grad -> ARGUMENT");
    expect_status(ck, B(z, 10, g.data(), 10, nullptr, c.grad_logp.data()), SPO4J_ERR_ARGUMENT, "cpu bwd null lse -> ARGUMENT");
    expect_status(ck, B(z, 10, g.data(), 10, c.lse_in.data(), nullptr), SPO4J_ERR_ARGUMENT, "cpu bwd null grad_logp -> ARGUMENT");
    std::vector<uint8_t> big(size_t(3 * 12 * 4));
    expect_status(ck, B(big.data(), 10, big.data(), 12, c.lse_in.data(), c.grad_logp.data()), SPO4J_ERR_ARGUMENT,
                  "cpu bwd in place with different strides -> ARGUMENT");
}

}  // namespace

namespace {

// The harness's guarded-buffer rule (strided_payload_bytes, which sizes the CUDA check's
// buffers too) against what a backward writes and what the checks read: a gradient buffer at
// every base offset the CUDA check draws (0, 1, 3, 5 elements) and row padding (0, 2, 8),
// and the logits buffer at its offsets (0, 1, 3) in place, written by the CPU kernel into
// guarded host buffers sized by the rule. Regression: the CUDA check once sized the gradient
// buffer rows * stride * elem + 16 while its offset reached 20 bytes (5 fp32 elements), so
// rows = 1, V = 50257, stride V, offset 20 B wrote 4 bytes into the trailing guard and its
// padding check read guard bytes (15 of the 431 CUDA cases failed that way); the logits
// buffer had the same + 16, with offsets up to 12 bytes.
void cpu_check_guarded_layouts(Checker& ck) {
    struct Shape {
        int64_t rows, vocab, pad;
    };
    const Shape shapes[] = {{1, 50257, 0}, {7, 129, 3}, {3, 1000, 8}};
    for (const Shape& sh : shapes) {
        for (int dtype : {SPO4J_F32, SPO4J_BF16, SPO4J_F16}) {
            const int es = elem_size(dtype);
            TokenCase c = make_token_case(sh.rows, sh.vocab, dtype, sh.pad, 0.2, false, false, -100,
                                          uint64_t(7001 + sh.vocab * 3 + dtype));
            bool ok = true;
            std::string bad;
            for (int64_t goff_el : {0, 1, 3, 5}) {
                for (int64_t gpad : {0, 2, 8}) {
                    const int64_t gstride = c.vocab + gpad;
                    const size_t goff = size_t(goff_el * es);
                    HostGuarded g(strided_payload_bytes(c.rows, gstride, es, goff), 0xff);
                    const int st = spo4j_token_logprobs_bwd_cpu(
                        c.logits.data(), c.dtype, c.rows, c.vocab, c.stride, c.targets.data(),
                        c.ignore_index, c.lse_in.data(), c.grad_logp.data(), g.at(goff), gstride, 1);
                    bool pad_ok = true;  // read exactly as the CUDA check reads it
                    for (int64_t r = 0; r < c.rows; ++r)
                        for (int64_t b = c.vocab * es; b < gstride * es; ++b)
                            pad_ok &= g.at(goff)[size_t(r * gstride * es + b)] == 0xff;
                    const bool this_ok = st == SPO4J_OK && pad_ok && guards_intact(g.all);
                    if (!this_ok && bad.empty())
                        bad = strf("grad offset %zu B, stride %" PRId64 ": status %d, padding %s, guards %s",
                                   goff, gstride, st, pad_ok ? "ok" : "changed",
                                   guards_intact(g.all) ? "intact" : "overwritten");
                    ok &= this_ok;
                    if (sh.vocab == 50257 && dtype == SPO4J_F32 && goff == 20 && gpad == 0)
                        ck.record(this_ok,
                                  "guarded gradient buffer for rows=1 V=50257 f32 at offset 20 B keeps its "
                                  "trailing guard (harness overrun regression)",
                                  strf("payload %zu B for a row of %" PRId64 " B at offset 20 B",
                                       strided_payload_bytes(1, gstride, es, goff), gstride * es));
                }
            }
            for (int64_t off_el : {0, 1, 3}) {
                const size_t off = size_t(off_el * es);
                const size_t zbytes = size_t(c.rows * c.stride * es);
                HostGuarded z(strided_payload_bytes(c.rows, c.stride, es, off));
                std::memcpy(z.at(off), c.logits.data(), zbytes);
                const int st = spo4j_token_logprobs_bwd_cpu(
                    z.at(off), c.dtype, c.rows, c.vocab, c.stride, c.targets.data(), c.ignore_index,
                    c.lse_in.data(), c.grad_logp.data(), z.at(off), c.stride, 1);
                const bool this_ok = st == SPO4J_OK && guards_intact(z.all);
                if (!this_ok && bad.empty())
                    bad = strf("in place, logits offset %zu B: status %d, guards %s", off, st,
                               guards_intact(z.all) ? "intact" : "overwritten");
                ok &= this_ok;
            }
            ck.record(ok, strf("guarded buffers sized by strided_payload_bytes hold every row and its padding "
                               "[%s rows=%" PRId64 " V=%" PRId64 "]", dtype_name(dtype), sh.rows, sh.vocab),
                      bad);
        }
    }
}

// The entropy rescale shared by the CPU and CUDA kernels (common/online_softmax.h) on the
// values that made the CUDA kernel's entropy NaN: a max that jumps by more than FLT_MAX / s.
void cpu_check_entropy_rescale(Checker& ck) {
    const float jump = spo4j::rescale_entropy_term(0.0f, -2e38f, 4.0f, 3.0f);
    ck.record(jump == 0.0f, "entropy rescale after a jump of 2e38 with s = 4 is 0 (was 0 * -inf = NaN)",
              strf("got %.9g", double(jump)));
    const float clamped = spo4j::rescale_entropy_term(0.0f, -std::numeric_limits<float>::max(), 1e9f, -5.0f);
    ck.record(clamped == 0.0f, "entropy rescale with d = -FLT_MAX, s = 1e9 is 0",
              strf("got %.9g", double(clamped)));
    // an ordinary rescale is unchanged by the clamp: exp(d) (t + d s) in float64
    bool ok = true;
    std::string detail;
    for (float d : {-0.5f, -3.0f, -20.0f, -87.0f, -100.0f}) {
        const float s = 37.5f, t = -12.25f, scale = std::exp(d);
        const double ref = double(scale) * (double(t) + double(d) * double(s));
        const float got = spo4j::rescale_entropy_term(scale, d, s, t);
        const bool good = std::fabs(double(got) - ref) <= 1e-6 * std::fabs(ref) + 1e-44;
        if (!good && detail.empty()) detail = strf("d = %g: got %.9g, ref %.9g", double(d), double(got), ref);
        ok &= good;
    }
    ck.record(ok, "entropy rescale matches exp(d) (t + d s) while exp(d) > 0", detail);
}

}  // namespace

// ---- the token log-probs part of the check mode -------------------------------------------

// Thread starts refused by the OS (spo4j_debug_fail_thread_starts): a start that throws used to
// leave the started std::threads unjoined, and their destructors aborted the process. Now the
// blocks not started run on the calling thread: same bytes as one thread, forward and backward.
void cpu_check_thread_start_failures(Checker& ck) {
    TokenCase c = make_token_case(64, 8192, SPO4J_F32, 0, 0.1, false, true, SPO4J_IGNORE_INDEX, 777);
    const size_t rows = size_t(c.rows);
    auto run = [&](int threads, std::vector<float>& logp, std::vector<float>& lse, std::vector<float>& ent,
                   std::vector<uint8_t>& grad) {
        logp.assign(rows, 0.f);
        lse.assign(rows, 0.f);
        ent.assign(rows, 0.f);
        grad.assign(rows * size_t(c.vocab) * 4, 0);
        int st = spo4j_token_logprobs_fwd_cpu(c.logits.data(), c.dtype, c.rows, c.vocab, c.stride,
                                              c.targets.data(), c.ignore_index, logp.data(), lse.data(),
                                              ent.data(), threads);
        if (st) return st;
        return spo4j_token_logprobs_bwd_cpu(c.logits.data(), c.dtype, c.rows, c.vocab, c.stride,
                                            c.targets.data(), c.ignore_index, lse.data(), c.grad_logp.data(),
                                            grad.data(), c.vocab, threads);
    };
    std::vector<float> l1, s1, e1, l2, s2, e2;
    std::vector<uint8_t> g1, g2;
    {
        const int st1 = run(1, l1, s1, e1, g1);
        ck.record(st1 == SPO4J_OK, "cpu one thread (reference for refused starts)", st1 ? spo4j_last_error() : "");
    }
    for (int after : {0, 1, 3}) {
        spo4j_debug_fail_thread_starts(after);
        const int st = run(8, l2, s2, e2, g2);
        const int refused = spo4j_debug_fail_thread_starts(-1);
        const std::string name = strf("cpu 8 threads, starts refused after %d", after);
        ck.record(st == SPO4J_OK, name + ": status", st ? spo4j_last_error() : "");
        ck.record(refused > 0, name + ": the fault was injected", strf("%d refused", refused));
        ck.record(same_bytes((const uint8_t*)l1.data(), (const uint8_t*)l2.data(), rows * 4) &&
                      same_bytes((const uint8_t*)s1.data(), (const uint8_t*)s2.data(), rows * 4) &&
                      same_bytes((const uint8_t*)e1.data(), (const uint8_t*)e2.data(), rows * 4) &&
                      same_bytes(g1.data(), g2.data(), g1.size()),
                  name + ": same bytes as one thread");
    }
}

namespace {

// The CPU kernels' vector exps (native/cpu/simd.h) against std::exp in double, through
// spo4j_debug_cpu_exp: both paths where the CPU has AVX-512, the generic one elsewhere.
// Sweep: 2^22 evenly spaced x in [-104, 0] plus 2^20 random x in [-1, 0] (where the result
// is ~1 and ulps are finest), the edges of the normal and denormal ranges, and the specials.
// Tolerances from each exp's error model (simd.h): the AVX-512 exp ~2 ulp (2.4e-7) at any x
// in the normal range; the generic one 2.4e-7 plus the rounding of t = x log2(e) to fp32
// (|t| 2^-24 absolute in t, so |x| log2(e) 2^-24 ln 2 = |x| 6e-8 relative in the result).
// Below the normal range (exp(x) < 2^-126, x < -87.34) the result must be 0 or within one
// denormal step (2^-149) of the truth, plus the normal-range relative error.
void cpu_check_exp(Checker& ck) {
    const float kNan = std::numeric_limits<float>::quiet_NaN();
    const float kNegInf = -std::numeric_limits<float>::infinity();
    std::vector<float> x;
    const int64_t n_even = int64_t(1) << 22;
    for (int64_t i = 0; i <= n_even; ++i) x.push_back(float(-104.0 * double(i) / double(n_even)));
    Rng rng(31337);
    for (int i = 0; i < (1 << 20); ++i) x.push_back(-float(rng.uniform()));
    for (float v : {0.0f, -0.0f, -1e-45f, -1e-38f, -1e-30f, -1e-7f, -0.5f, -0.6931472f, -1.0f, -10.0f,
                    -87.0f, -87.33654f, -87.33655f, -87.34f, -88.0f, -100.0f, -103.27893f, -103.97208f,
                    -103.972084f, -103.98f, -104.0f, -105.0f, -106.0f, -107.0f, -150.0f, -1e4f, -1e30f,
                    -std::numeric_limits<float>::max()})
        x.push_back(v);
    const size_t n_finite = x.size();
    x.push_back(kNegInf);
    x.push_back(kNan);
    x.push_back(-kNan);
    const double kFltMin = 0x1.0p-126, kDenormStep = 0x1.0p-149;
    struct PathInfo {
        int path;
        const char* name;
    };
    for (PathInfo pi : {PathInfo{1, "generic"}, PathInfo{2, "avx512"}}) {
        std::vector<float> y(x.size(), 123.0f);
        const int st = spo4j_debug_cpu_exp(x.data(), y.data(), int64_t(x.size()), pi.path);
        if (st == SPO4J_ERR_NOT_BUILT) {
            ck.note(strf("exp check: the %s path is not available on this CPU (%s)", pi.name, spo4j_last_error()));
            continue;
        }
        if (!ck.record(st == SPO4J_OK, strf("cpu exp %s: status", pi.name), spo4j_last_error())) continue;
        double worst_rel = 0, worst_x = 0, worst_rel_near0 = 0, worst_denorm = 0;
        int64_t bad = 0, denormal_results = 0;
        std::string first_bad;
        for (size_t i = 0; i < n_finite; ++i) {
            const double ref = std::exp(double(x[i]));
            const double got = y[i];
            const double model = pi.path == 2 ? 2.5e-7 : 2.5e-7 + std::fabs(double(x[i])) * 7.5e-8;
            bool ok;
            if (ref >= kFltMin) {
                const double rel = std::fabs(got - ref) / ref;
                if (rel > worst_rel) worst_rel = rel, worst_x = x[i];
                if (x[i] >= -1.0f) worst_rel_near0 = std::max(worst_rel_near0, rel);
                ok = rel <= model;
            } else {
                if (got != 0.0) {
                    ++denormal_results;
                    worst_denorm = std::max(worst_denorm, std::fabs(got - ref));
                }
                ok = got >= 0.0 && (got == 0.0 || std::fabs(got - ref) <= kDenormStep + model * ref);
            }
            if (!ok && bad++ < 5)
                first_bad += strf("\n      x = %.9g: got %.9g, std::exp %.9g", double(x[i]), got, ref);
        }
        ck.record(bad == 0, strf("cpu exp %s within its error model on [-104, 0] (%zu points)", pi.name, n_finite),
                  strf("%" PRId64 " outside%s", bad, first_bad.c_str()));
        ck.note(strf("exp %s vs std::exp (double), x in [-104, 0]: max relative error %.3g (%.2f ulp of 2^-23) at "
                     "x = %.7g; %.3g for x in [-1, 0]; below 2^-126: %" PRId64 " nonzero (denormal) results, their max "
                     "|error| %.3g (the rest flushed to 0)",
                     pi.name, worst_rel, worst_rel / kEps32, worst_x, worst_rel_near0, denormal_results, worst_denorm));
        const float e_ninf = y[n_finite];
        ck.record(e_ninf == 0.0f && !std::signbit(e_ninf), strf("cpu exp %s: exp(-inf) is exactly +0", pi.name),
                  strf("got %a", double(e_ninf)));
        ck.record(std::isnan(y[n_finite + 1]) && std::isnan(y[n_finite + 2]),
                  strf("cpu exp %s: NaN stays NaN", pi.name),
                  strf("got %g, %g", double(y[n_finite + 1]), double(y[n_finite + 2])));
        bool below_zero = true;  // x <= -106 (and -FLT_MAX): exactly 0, never NaN
        for (size_t i = 0; i < n_finite; ++i)
            if (x[i] <= -106.0f) below_zero &= y[i] == 0.0f;
        ck.record(below_zero, strf("cpu exp %s: exactly 0 for x <= -106 down to -FLT_MAX", pi.name));
        // the tail path (n not a multiple of the vector width) gives the same values
        std::vector<float> y7(7);
        spo4j_debug_cpu_exp(x.data() + 1000, y7.data(), 7, pi.path);
        ck.record(std::memcmp(y7.data(), y.data() + 1000, 7 * sizeof(float)) == 0,
                  strf("cpu exp %s: a 7-element call gives the same values as the vector loop", pi.name));
    }
}

// spo4j_add_widened_cpu against dst + float(src) element by element, bit for bit (one fp32
// rounding either way): every dtype, lengths around the vector width and one split over two
// threads, specials (inf, NaN, -0, subnormal halves), and the argument errors.
void cpu_check_add_widened(Checker& ck) {
    Rng rng(2718);
    const float specials[] = {std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                              std::numeric_limits<float>::quiet_NaN(), -0.0f, 0x1.0p-140f, 65504.0f, 1e-6f};
    for (int32_t dt : {int32_t(SPO4J_F32), int32_t(SPO4J_BF16), int32_t(SPO4J_F16)}) {
        const char* name = dt == SPO4J_F32 ? "f32" : dt == SPO4J_BF16 ? "bf16" : "f16";
        for (int64_t n : {int64_t(0), int64_t(1), int64_t(15), int64_t(16), int64_t(17), int64_t(1000),
                          int64_t(600037)}) {
            for (int threads : {1, 2}) {
                std::vector<float> dst(size_t(n) + 1), want(size_t(n) + 1);
                std::vector<float> src32(static_cast<size_t>(n));
                std::vector<uint16_t> src16(static_cast<size_t>(n));
                for (int64_t i = 0; i < n; ++i) {
                    float v = float(rng.normal() * 4.0);
                    if (i % 97 == 5) v = specials[(i / 97) % 7];
                    dst[size_t(i)] = i % 89 == 3 ? specials[(i / 89) % 7] : float(rng.normal() * 100.0);
                    float widened = v;
                    if (dt == SPO4J_BF16) src16[size_t(i)] = float_to_bf16(v), widened = bf16_to_float(src16[size_t(i)]);
                    if (dt == SPO4J_F16) src16[size_t(i)] = float_to_f16(v), widened = f16_to_float(src16[size_t(i)]);
                    src32[size_t(i)] = v;
                    want[size_t(i)] = dst[size_t(i)] + widened;
                }
                dst[size_t(n)] = want[size_t(n)] = 42.0f;  // one past the end: untouched
                const void* src = dt == SPO4J_F32 ? static_cast<const void*>(src32.data()) : src16.data();
                const int st = spo4j_add_widened_cpu(dst.data(), src, dt, n, threads);
                if (!ck.record(st == SPO4J_OK, strf("cpu add_widened %s n=%" PRId64 " threads=%d: status", name, n,
                                                    threads), spo4j_last_error()))
                    continue;
                int64_t bad = -1;
                for (int64_t i = 0; i <= n && bad < 0; ++i) {
                    const float a = dst[size_t(i)], b = want[size_t(i)];
                    if (!(std::isnan(a) && std::isnan(b)) && std::memcmp(&a, &b, 4) != 0) bad = i;
                }
                ck.record(bad < 0, strf("cpu add_widened %s n=%" PRId64 " threads=%d: dst + float(src) bit for bit",
                                        name, n, threads),
                          bad < 0 ? "" : strf("element %" PRId64 ": got %.9g, expected %.9g", bad,
                                              double(dst[size_t(bad)]), double(want[size_t(bad)])));
            }
        }
    }
    float d = 1.0f;
    const uint16_t h = 0;
    ck.record(spo4j_add_widened_cpu(&d, &h, SPO4J_BF16, -1, 1) == SPO4J_ERR_ARGUMENT, "cpu add_widened: n < 0 refused");
    ck.record(spo4j_add_widened_cpu(&d, &h, 7, 1, 1) == SPO4J_ERR_ARGUMENT, "cpu add_widened: unknown dtype refused");
    ck.record(spo4j_add_widened_cpu(nullptr, &h, SPO4J_BF16, 1, 1) == SPO4J_ERR_ARGUMENT,
              "cpu add_widened: null dst refused");
    ck.record(d == 1.0f, "cpu add_widened: refused calls write nothing");
}

// The AVX-512 path's base-2 exps (simd.h) against std::exp2 in double: the forward's
// (spo4j_debug_cpu_exp path 3: degree 5, no clamp) over [-150, 11] (the fast chunks keep
// every accepted term below 2^11; below -126 the results are denormals, rounded once by
// scalef) and at very negative finite u (exactly 0); the half-precision gradients' (path 4:
// degree 4, f = u - floor(u) by VREDUCEPS, scalef by u, no clamp) over the same range, -inf
// exactly 0 and NaN kept. The grid includes u just below and above integers (where f is close
// to 1 or 0, and where VREDUCEPS's own rounding decides f) and the smallest magnitudes.
void cpu_check_exp2(Checker& ck) {
    std::vector<float> x;
    const int64_t n_even = int64_t(1) << 21;
    for (int64_t i = 0; i <= n_even; ++i) x.push_back(float(-150.0 + 161.0 * double(i) / double(n_even)));
    Rng rng(4711);
    for (int i = 0; i < (1 << 18); ++i) x.push_back(float(rng.uniform() - 0.5));
    for (float k : {-149.0f, -126.0f, -20.0f, -3.0f, -1.0f, 0.0f, 1.0f, 3.0f, 10.0f}) {
        const float inf = std::numeric_limits<float>::infinity();
        x.push_back(std::nextafter(k, -inf));
        x.push_back(std::nextafter(k, inf));
    }
    for (float v : {-1e-30f, -0x1.0p-149f, 0x1.0p-149f, -0x1.0p-24f, -0x1.fffffep-1f, 0x1.fffffep-1f}) x.push_back(v);
    const size_t n_grid = x.size();
    for (float v : {-200.0f, -1e4f, -1e30f, -std::numeric_limits<float>::max()}) x.push_back(v);
    const size_t n_finite = x.size();
    x.push_back(-std::numeric_limits<float>::infinity());
    x.push_back(std::numeric_limits<float>::quiet_NaN());
    const double kFltMin = 0x1.0p-126, kDenormStep = 0x1.0p-149;
    for (int path : {3, 4}) {
        const char* name = path == 3 ? "exp2 forward (degree 5)" : "exp2 half gradient (degree 4)";
        const double model = path == 3 ? 2.5e-7 : 3.0e-6;
        std::vector<float> y(x.size(), 123.0f);
        const int st = spo4j_debug_cpu_exp(x.data(), y.data(), int64_t(x.size()), path);
        if (st == SPO4J_ERR_NOT_BUILT) {
            ck.note(strf("%s: the AVX-512 path is not available on this CPU", name));
            continue;
        }
        if (!ck.record(st == SPO4J_OK, strf("cpu %s: status", name), spo4j_last_error())) continue;
        double worst = 0, worst_x = 0;
        int64_t bad = 0;
        std::string first_bad;
        for (size_t i = 0; i < n_grid; ++i) {
            const double ref = std::exp2(double(x[i]));
            const double got = y[i];
            bool ok;
            if (ref >= kFltMin) {
                const double rel = std::fabs(got - ref) / ref;
                if (rel > worst) worst = rel, worst_x = x[i];
                ok = rel <= model;
            } else {
                ok = got >= 0.0 && std::fabs(got - ref) <= kDenormStep + model * ref;
            }
            if (!ok && bad++ < 5) first_bad += strf("\n      u = %.9g: got %.9g, exp2 %.9g", double(x[i]), got, ref);
        }
        ck.record(bad == 0, strf("cpu %s within %.2g relative on [-150, 11] (%zu points)", name, model, n_grid),
                  strf("%" PRId64 " outside%s", bad, first_bad.c_str()));
        ck.note(strf("%s vs std::exp2 (double), u in [-150, 11]: max relative error %.3g at u = %.7g", name, worst,
                     worst_x));
        bool zero = true;
        for (size_t i = n_grid; i < n_finite; ++i) zero &= y[i] == 0.0f && !std::signbit(y[i]);
        ck.record(zero, strf("cpu %s: exactly +0 for u <= -200 down to -FLT_MAX", name));
        if (path == 4) {
            ck.record(y[n_finite] == 0.0f, strf("cpu %s: 2^-inf is exactly 0", name),
                      strf("got %a", double(y[n_finite])));
        }
        ck.record(std::isnan(y[n_finite + 1]), strf("cpu %s: NaN stays NaN", name),
                  strf("got %g", double(y[n_finite + 1])));
    }
}

// Sweep: every (rows, V, dtype); the variant (stride padding, ignored fraction, extreme
// rows, entropy, ignore_index) is drawn per case from a fixed seed, so that the sweep
// covers the combinations without their full product. Runs on the CPU path in effect.
void token_sweep(Checker& ck, bool cuda, bool quick) {
    const int64_t rows_list[] = {1, 7, 129, 1000};
    const int64_t vocab_list[] = {1, 2, 7, 127, 128, 129, 1000, 4096, 32000, 50257};
    const int dtypes[] = {SPO4J_F32, SPO4J_BF16, SPO4J_F16};
    Rng pick(20240611);
    int case_no = 0;
    for (int64_t rows : rows_list) {
        for (int64_t V : vocab_list) {
            for (int dtype : dtypes) {
                const uint64_t seed = 1000003ull * uint64_t(++case_no);
                const int64_t pads[] = {0, 1, 3, 8, 13};
                const int64_t pad = pads[pick.below(5)];
                const double fracs[] = {0.0, 0.0, 0.1, 0.5, 1.0};
                const double frac = fracs[pick.below(5)];
                const bool extreme = pick.uniform() < 0.4;
                const bool entropy = pick.uniform() < 0.6;
                const int64_t iis[] = {SPO4J_IGNORE_INDEX, SPO4J_IGNORE_INDEX, -1, 0};
                const int64_t ii = iis[pick.below(4)];
                const int64_t gpad = pads[pick.below(5)];
                const int threads = 1 + int(pick.below(2));
                // The largest shapes once per row count and dtype cycle: they cost CPU time.
                if (rows * V > 8000000 && (case_no % 3) != 0) continue;
                if (quick && rows * V > 200000) continue;
                TokenCase c = make_token_case(rows, V, dtype, pad, frac, extreme, entropy, ii, seed);
                const int before = ck.failed;
                cpu_check_token_case(ck, c, threads, gpad);
                if (cuda) cuda_check_token_case(ck, c, seed ^ 0x5eedull);
                std::printf("%s case %s\n", ck.failed == before ? "ok  " : "FAIL", c.label.c_str());
                std::fflush(stdout);
            }
        }
    }
    // Rows whose logits span more than FLT_MAX (the entropy NaN of the CUDA kernel and of the
    // CPU kernel's chunk rescale for V > 2048): warp and block paths, fp32 and bf16 (fp16
    // cannot hold 1e38).
    cpu_check_entropy_rescale(ck);
    // Jumps of the running max after the first chunk: within the fast chunks' acceptance (a
    // few nats), beyond it (a careful redo) and beyond 200 doublings (a fresh base).
    for (double spike : {3.0, 12.0, 160.0}) {
        for (int dtype : {SPO4J_F32, SPO4J_BF16, SPO4J_F16}) {
            TokenCase c = make_token_case(33, 9000, dtype, 3, 0.1, false, true, SPO4J_IGNORE_INDEX,
                                          uint64_t(990001 + int(spike) * 17 + dtype), false, spike);
            const int before = ck.failed;
            cpu_check_token_case(ck, c, 2, 0);
            if (cuda) cuda_check_token_case(ck, c, uint64_t(spike) * 977 + uint64_t(dtype));
            std::printf("%s case %s\n", ck.failed == before ? "ok  " : "FAIL", c.label.c_str());
            std::fflush(stdout);
        }
    }
    for (int64_t V : {129, 5000}) {
        for (int dtype : {SPO4J_F32, SPO4J_BF16}) {
            TokenCase c = make_token_case(9, V, dtype, 1, 0.1, false, true, SPO4J_IGNORE_INDEX,
                                          uint64_t(880001 + V * 7 + dtype), true);
            const int before = ck.failed;
            cpu_check_token_case(ck, c, 2, 0);
            if (cuda) cuda_check_token_case(ck, c, uint64_t(V) * 131 + uint64_t(dtype));
            std::printf("%s case %s\n", ck.failed == before ? "ok  " : "FAIL", c.label.c_str());
            std::fflush(stdout);
        }
    }
}

}  // namespace

void check_token_logprobs(Checker& ck, bool cuda, bool quick) {
    cpu_check_exp(ck);
    cpu_check_exp2(ck);
    cpu_check_add_widened(ck);
    // The sweep on the path in effect (AVX-512 where the CPU has it, unless
    // SPO4J_CPU_PATH=generic), then, on an AVX-512 CPU, its small cases again on the forced
    // generic path (the per-ISA clones), so that the fallback stays covered here too.
    const int path = spo4j_debug_cpu_path(-1);
    ck.note(strf("CPU kernels: %s path", path == 2 ? "AVX-512" : "generic"));
    token_sweep(ck, cuda, quick);
    if (path == 2) {
        spo4j_debug_cpu_path(1);
        ck.note("CPU kernels: the sweep's small cases again on the forced generic path");
        token_sweep(ck, false, true);
        spo4j_debug_cpu_path(0);
    } else {
        ck.note("CPU kernels: the AVX-512 path was not exercised (CPU without x86-64-v4, or SPO4J_CPU_PATH=generic)");
    }
    cpu_check_guarded_layouts(ck);
    cpu_check_token_errors(ck);
    cpu_check_thread_start_failures(ck);
    if (cuda) cuda_check_token_errors(ck);
}

}  // namespace harness
