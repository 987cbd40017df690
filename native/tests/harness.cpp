// spo4j_harness: the native kernels without Java.
//
//   spo4j_harness check [--verbose] [--quick]
//       CPU kernels against float64 references written here, over a sweep of awkward
//       shapes (rows 1/7/129/1000, V 1..50257, padded row strides, ignored rows, extreme
//       and -inf logits, fp32/bf16/fp16), in place and not, error statuses, and the four
//       preference losses. With a CUDA build and a visible GPU, the CUDA kernels against
//       the same references and against the CPU kernels (both launch shapes, aligned and
//       unaligned rows). Without one the CUDA part is skipped and says why. Ends with
//       "N passed, M failed"; exit status 1 when anything failed.
//   spo4j_harness bench [--json FILE] [--reps N] [--rows N] [--vocab V,V,..] [--dtype bf16,f32]
//       CUDA timings (harness_cuda.cu); exits 0 with a message when there is no GPU.
//
// Registered with ctest as harness_check (native/tests/CMakeLists.txt).
#include "harness.h"

#include <algorithm>
#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <random>
#include <sstream>

namespace harness {

std::string strf(const char* fmt, ...) {
    char buf[1024];
    va_list args;
    va_start(args, fmt);
    std::vsnprintf(buf, sizeof buf, fmt, args);
    va_end(args);
    return buf;
}

namespace {
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kEps32 = 1.1920928955078125e-07;  // 2^-23

// Deterministic generator (fixed seeds: a failure reproduces).
struct Rng {
    std::mt19937_64 g;
    explicit Rng(uint64_t seed) : g(seed) {}
    double uniform() { return double(g() >> 11) * 0x1.0p-53; }  // [0, 1)
    int64_t below(int64_t n) { return int64_t(uniform() * double(n)); }
    double normal() {
        const double u1 = 1.0 - uniform(), u2 = uniform();
        return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
    }
};
}  // namespace

// ---- Checker / Closeness --------------------------------------------------------------

bool Checker::record(bool ok, const std::string& name, const std::string& detail) {
    if (ok) {
        ++passed;
    } else {
        ++failed;
    }
    if (!ok || verbose) {
        std::printf("%s %s%s%s\n", ok ? "ok  " : "FAIL", name.c_str(), detail.empty() ? "" : ": ",
                    detail.c_str());
        std::fflush(stdout);
    }
    return ok;
}

void Checker::note(const std::string& text) {
    std::printf("NOTE %s\n", text.c_str());
    std::fflush(stdout);
}

void Closeness::add(int64_t index, double got, double ref, double tol) {
    ++n_;
    bool ok;
    if (std::isnan(ref)) {
        ok = std::isnan(got);
    } else if (std::isinf(ref)) {
        ok = got == ref;
    } else if (!std::isfinite(got)) {
        ok = false;
    } else {
        const double d = std::fabs(got - ref);
        max_diff_ = std::max(max_diff_, d);
        if (tol > 0) worst_ratio_ = std::max(worst_ratio_, d / tol);
        ok = d <= tol;
    }
    if (!ok) {
        if (bad_ < 5) {
            first_ += strf("\n      [%" PRId64 "] got %.9g ref %.9g |diff| %.3g tol %.3g", index,
                             got, ref, std::fabs(got - ref), tol);
        }
        ++bad_;
    }
}

bool Closeness::finish(Checker& ck, const std::string& context) {
    std::string detail = strf("%" PRId64 "/%" PRId64 " mismatches, max |diff| %.3g, worst diff/tol %.3g",
                                bad_, n_, max_diff_, worst_ratio_);
    if (bad_) detail += first_;
    return ck.record(bad_ == 0, name_ + (context.empty() ? "" : " [" + context + "]"), detail);
}

bool allclose(Checker& ck, const std::string& name, const float* got, const double* ref,
              int64_t n, double atol, double rtol, const std::string& context) {
    Closeness c(name);
    for (int64_t i = 0; i < n; ++i) c.add(i, got[i], ref[i], atol + rtol * std::fabs(ref[i]));
    return c.finish(ck, context);
}

// ---- codecs -----------------------------------------------------------------------------

uint16_t float_to_bf16(float f) {
    uint32_t u = float_to_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);
    return uint16_t(u >> 16);
}

float f16_to_float(uint16_t h) {
    const uint32_t sign = uint32_t(h & 0x8000u) << 16;
    const int exp = (h >> 10) & 0x1f;
    const uint32_t man = h & 0x3ffu;
    float v;
    if (exp == 0) {
        v = std::ldexp(float(man), -24);
    } else if (exp == 31) {
        v = man ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
    } else {
        v = std::ldexp(float(man | 0x400u), exp - 25);
    }
    return bits_to_float(float_to_bits(v) | sign);
}

uint16_t float_to_f16(float f) {
    const uint16_t sign = (float_to_bits(f) >> 16) & 0x8000u;
    const double a = std::fabs(double(f));
    if (std::isnan(f)) return sign | 0x7e00u;
    if (a >= 65520.0) return sign | 0x7c00u;  // rounds to +-inf (65504 is the largest half)
    if (a < 0x1.0p-14) {                      // subnormal: multiples of 2^-24
        return uint16_t(sign | uint16_t(std::nearbyint(a * 0x1.0p24)));  // 1024 -> min normal
    }
    int e;
    std::frexp(a, &e);  // a in [2^(e-1), 2^e)
    int E = e - 1;
    double m = std::nearbyint(std::ldexp(a, 10 - E));  // [1024, 2048]
    if (m >= 2048) {
        m = 1024;
        ++E;
    }
    if (E > 15) return sign | 0x7c00u;
    return uint16_t(sign | uint16_t((E + 15) << 10) | uint16_t(int(m) - 1024));
}

const char* dtype_name(int dtype) {
    return dtype == SPO4J_F32 ? "f32" : dtype == SPO4J_BF16 ? "bf16" : "f16";
}

float load_elem(const uint8_t* base, int dtype, int64_t i) {
    if (dtype == SPO4J_F32) {
        float f;
        std::memcpy(&f, base + 4 * i, 4);
        return f;
    }
    uint16_t h;
    std::memcpy(&h, base + 2 * i, 2);
    return dtype == SPO4J_BF16 ? bf16_to_float(h) : f16_to_float(h);
}

void store_elem(uint8_t* base, int dtype, int64_t i, float v) {
    if (dtype == SPO4J_F32) {
        std::memcpy(base + 4 * i, &v, 4);
        return;
    }
    const uint16_t h = dtype == SPO4J_BF16 ? float_to_bf16(v) : float_to_f16(v);
    std::memcpy(base + 2 * i, &h, 2);
}

// ---- token log-probs: data, references, tolerances -------------------------------------

namespace {

// Logits of one case. Row kinds (with extreme=true, drawn per row):
//   0 normal N(0, sigma^2)            1 normal with 2% of entries at +-1e4
//   2 normal with 10% of entries -inf  3 all -inf but 1-3 finite entries (target may be -inf)
//   4 1e4 + N(0, sigma^2)  (tests cancellation: lse ~ 1e4)
TokenCase make_token_case(int64_t rows, int64_t vocab, int dtype, int64_t pad,
                          double ignore_frac, bool extreme, bool entropy, int64_t ignore_index,
                          uint64_t seed) {
    Rng rng(seed);
    TokenCase c;
    c.dtype = dtype;
    c.rows = rows;
    c.vocab = vocab;
    c.stride = vocab + pad;
    c.ignore_index = ignore_index;
    c.entropy = entropy;
    c.label = strf("%s rows=%" PRId64 " V=%" PRId64 " stride=%" PRId64 " ignored=%.2g%s%s ii=%" PRId64,
                     dtype_name(dtype), rows, vocab, c.stride, ignore_frac,
                     extreme ? " extreme" : "", entropy ? " entropy" : "", ignore_index);
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
    return 1e-4 + 2e-5 * std::fabs(c.entropy_ref[size_t(r)]) + 16 * kEps32 * c.scale[size_t(r)];
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
    c.cpu_ok = true;
}

}  // namespace

bool message_has(const std::string& needle) {
    return std::string(spo4j_last_error()).find(needle) != std::string::npos;
}

void expect_status(Checker& ck, int got, int want, const std::string& name,
                   const std::string& needle) {
    const bool ok = got == want && (needle.empty() || message_has(needle));
    ck.record(ok, name, strf("status %d (want %d), message \"%s\"%s", got, want,
                               spo4j_last_error(),
                               needle.empty() ? "" : (" (want it to contain \"" + needle + "\")").c_str()));
}

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
        // header: NaN propagates (only an all -inf row is an error)
        lse_bad[6] = nanf;
        copy = c.logits;
        st = spo4j_token_logprobs_bwd_cpu(copy.data(), dtype, 7, 129, c.stride, c.targets.data(),
                                          -100, lse_bad.data(), c.grad_logp.data(), copy.data(),
                                          c.stride, 1);
        expect_status(ck, st, SPO4J_OK, "cpu bwd lse NaN propagates " + d);
        copy = c.logits;
        store_elem(copy.data() + 1 * c.stride * elem_size(dtype), dtype, 17, nanf);
        st = fwd(c.targets, copy.data(), -100);
        expect_status(ck, st, SPO4J_OK, "cpu fwd NaN logit propagates " + d);
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

// ---- preference losses ------------------------------------------------------------------

double logsig(double x) { return x > 0 ? -std::log1p(std::exp(-x)) : x - std::log1p(std::exp(x)); }
double sig(double x) { return 0.5 * (1.0 + std::tanh(0.5 * x)); }

LossCase make_loss_case(int type, int64_t pairs, float beta, float eps, bool with_margin,
                        uint64_t seed) {
    static const char* names[] = {"spo", "dpo", "ipo", "hinge"};
    Rng rng(seed);
    LossCase c;
    c.p.type = type;
    c.p.beta = beta;
    c.p.label_smoothing = eps;
    c.p.margin = 1.0f;
    c.pairs = pairs;
    c.with_margin = with_margin;
    c.label = strf("%s B=%" PRId64 " beta=%g eps=%g%s", names[type], pairs, double(beta),
                     double(eps), with_margin ? " margins" : "");
    const size_t n = size_t(pairs);
    c.pc.resize(n);
    c.pr.resize(n);
    c.rc.resize(n);
    c.rr.resize(n);
    c.margin.resize(n);
    for (size_t i = 0; i < n; ++i) {
        c.pc[i] = float(-20 - 180 * rng.uniform());
        c.pr[i] = float(-20 - 180 * rng.uniform());
        c.rc[i] = float(c.pc[i] + 3 * rng.normal());
        c.rr[i] = float(c.pr[i] + 3 * rng.normal());
        c.margin[i] = float(-1 + 4 * rng.uniform());
    }
    // float64 truth, written from LOSSES.md with logsigma/sigma in a different form than the
    // kernels (log1p branches and tanh) so that a shared slip would show.
    const double b = beta, e = eps;
    c.loss_ref.resize(n);
    c.gc_ref.resize(n);
    c.gr_ref.resize(n);
    double sum[SPO4J_STAT_COUNT] = {0};
    for (size_t i = 0; i < n; ++i) {
        const double dc = double(c.pc[i]) - double(c.rc[i]);
        const double dr = double(c.pr[i]) - double(c.rr[i]);
        const double h = dc - dr;
        double l = 0, dh = 0;
        if (type == SPO4J_LOSS_SPO) {
            const double m = with_margin ? double(c.margin[i]) : double(c.p.margin);
            l = (b * h - m) * (b * h - m);
            dh = 2 * b * (b * h - m);
        } else if (type == SPO4J_LOSS_DPO) {
            l = -(1 - e) * logsig(b * h) - e * logsig(-b * h);
            dh = -b * (1 - e) * sig(-b * h) + b * e * sig(b * h);
        } else if (type == SPO4J_LOSS_IPO) {
            l = (h - 1 / (2 * b)) * (h - 1 / (2 * b));
            dh = 2 * (h - 1 / (2 * b));
        } else {
            l = std::max(0.0, 1 - b * h);
            dh = b * h < 1 ? -b : 0.0;
        }
        c.loss_ref[i] = l;
        c.gc_ref[i] = dh / double(pairs);
        c.gr_ref[i] = -dh / double(pairs);
        sum[SPO4J_STAT_LOSS] += l;
        sum[SPO4J_STAT_REWARD_CHOSEN] += b * dc;
        sum[SPO4J_STAT_REWARD_REJECTED] += b * dr;
        sum[SPO4J_STAT_REWARD_MARGIN] += b * h;
        sum[SPO4J_STAT_ACCURACY] += b * dc > b * dr ? 1 : 0;
        sum[SPO4J_STAT_LOGP_CHOSEN] += c.pc[i];
        sum[SPO4J_STAT_LOGP_REJECTED] += c.pr[i];
    }
    for (int k = 0; k < SPO4J_STAT_COUNT; ++k) c.stats_ref[k] = sum[k] / double(pairs);
    return c;
}

}  // namespace

void compare_loss(Checker& ck, const LossCase& c, const char* who, const float* loss,
                  const float* gc, const float* gr, const float* stats, double slack) {
    // Double math on float inputs: the results carry the float output rounding (2^-24
    // relative) and double noise (absolute, scaled by beta and the inputs' size).
    const double rt = slack * 4 * 0x1.0p-24;
    const double beta = c.p.beta;
    const double at_g = slack * 1e-12 * (1 + beta) * (1 + beta) / double(c.pairs);
    if (loss) {
        std::vector<float> l(loss, loss + c.pairs);
        allclose(ck, strf("%s loss per pair", who), l.data(), c.loss_ref.data(), c.pairs,
                 slack * 1e-10, rt, c.label);
    }
    allclose(ck, strf("%s grad chosen", who), gc, c.gc_ref.data(), c.pairs, at_g, rt, c.label);
    allclose(ck, strf("%s grad rejected", who), gr, c.gr_ref.data(), c.pairs, at_g, rt, c.label);
    if (stats) {
        // means of terms up to ~200 * beta in size: allow 1e-9 of that for summation order
        const double at_s = slack * 1e-9 * 200 * (1 + beta) * (1 + beta);
        allclose(ck, strf("%s stats", who), stats, c.stats_ref, SPO4J_STAT_COUNT, at_s,
                 rt, c.label);
    }
}

namespace {

void cpu_check_loss_case(Checker& ck, LossCase& c, bool with_loss, bool with_stats) {
    const size_t n = size_t(c.pairs);
    const float nanf = std::numeric_limits<float>::quiet_NaN();
    c.loss_cpu.assign(n, nanf);
    c.gc_cpu.assign(n, nanf);
    c.gr_cpu.assign(n, nanf);
    std::fill(c.stats_cpu, c.stats_cpu + SPO4J_STAT_COUNT, nanf);
    const int st = spo4j_preference_loss_cpu(&c.p, c.pairs, c.pc.data(), c.pr.data(), c.rc.data(),
                                             c.rr.data(), c.with_margin ? c.margin.data() : nullptr,
                                             with_loss ? c.loss_cpu.data() : nullptr,
                                             c.gc_cpu.data(), c.gr_cpu.data(),
                                             with_stats ? c.stats_cpu : nullptr);
    if (!ck.record(st == SPO4J_OK, "cpu loss status [" + c.label + "]",
                   strf("status %d: %s", st, spo4j_last_error())))
        return;
    compare_loss(ck, c, "cpu", with_loss ? c.loss_cpu.data() : nullptr, c.gc_cpu.data(),
                 c.gr_cpu.data(), with_stats ? c.stats_cpu : nullptr, 1.0);
}

void cpu_check_loss_errors(Checker& ck) {
    LossCase c = make_loss_case(SPO4J_LOSS_DPO, 4, 0.1f, 0.0f, false, 7);
    std::vector<float> gc(4), gr(4);
    auto run = [&](spo4j_loss_params p, int64_t pairs, const float* pc, float* g) {
        return spo4j_preference_loss_cpu(&p, pairs, pc, c.pr.data(), c.rc.data(), c.rr.data(),
                                         nullptr, nullptr, g, gr.data(), nullptr);
    };
    const float inf = std::numeric_limits<float>::infinity(), nanf = std::numeric_limits<float>::quiet_NaN();
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
        expect_status(ck, run(b.p, 4, c.pc.data(), gc.data()), SPO4J_ERR_ARGUMENT,
                      strf("cpu loss %s -> ARGUMENT", b.what));
    expect_status(ck, run(c.p, 0, c.pc.data(), gc.data()), SPO4J_ERR_ARGUMENT, "cpu loss pairs 0 -> ARGUMENT");
    expect_status(ck, run(c.p, 4, nullptr, gc.data()), SPO4J_ERR_ARGUMENT, "cpu loss null input -> ARGUMENT");
    expect_status(ck, run(c.p, 4, c.pc.data(), nullptr), SPO4J_ERR_ARGUMENT, "cpu loss null grad -> ARGUMENT");
    expect_status(ck, spo4j_preference_loss_cpu(nullptr, 4, c.pc.data(), c.pr.data(), c.rc.data(),
                                                c.rr.data(), nullptr, nullptr, gc.data(), gr.data(), nullptr),
                  SPO4J_ERR_ARGUMENT, "cpu loss null params -> ARGUMENT");
}

// ---- the check mode ---------------------------------------------------------------------

int run_check(bool verbose, bool quick) {
    Checker ck;
    ck.verbose = verbose;
    std::string why;
    const bool cuda = cuda_usable(&why);
    if (!cuda) {
        ck.note("CUDA checks skipped: " + why);
        // The CUDA entry points must still answer with a status (never crash): NOT_BUILT
        // without nvcc, a CUDA error without a driver or device.
        const int want = spo4j_cuda_built() ? SPO4J_ERR_CUDA : SPO4J_ERR_NOT_BUILT;
        std::vector<float> f(8, 0.0f);
        std::vector<int64_t> t(2, 0);
        expect_status(ck, spo4j_token_logprobs_fwd_cuda(f.data(), SPO4J_F32, 2, 4, 4, t.data(), -100,
                                                        f.data(), f.data(), nullptr, nullptr),
                      want, "cuda fwd without a usable device reports a status");
        expect_status(ck, spo4j_token_logprobs_bwd_cuda(f.data(), SPO4J_F32, 2, 4, 4, t.data(), -100,
                                                        f.data(), f.data(), f.data(), 4, nullptr),
                      want, "cuda bwd without a usable device reports a status");
        const spo4j_loss_params p{SPO4J_LOSS_DPO, 0.1f, 0.0f, 1.0f};
        expect_status(ck, spo4j_preference_loss_cuda(&p, 2, f.data(), f.data(), f.data(), f.data(), nullptr,
                                                     nullptr, f.data(), f.data(), nullptr, nullptr),
                      want, "cuda loss without a usable device reports a status");
        ck.record(spo4j_cuda_device_count() == 0, "spo4j_cuda_device_count() is 0 without a device");
    }

    // Sweep: every (rows, V, dtype); the variant (stride padding, ignored fraction, extreme
    // rows, entropy, ignore_index) is drawn per case from a fixed seed, so that the sweep
    // covers the combinations without their full product.
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
                const int64_t iis[] = {-100, -100, -1, 0};
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
    cpu_check_token_errors(ck);
    if (cuda) cuda_check_token_errors(ck);

    const int64_t pair_counts[] = {1, 7, 1000, 65537};
    int lcase = 0;
    for (int type = SPO4J_LOSS_SPO; type <= SPO4J_LOSS_HINGE; ++type) {
        for (int64_t B : pair_counts) {
            for (int variant = 0; variant < 2; ++variant) {
                ++lcase;
                const float beta = variant ? 2.5f : 0.1f;
                const float eps = type == SPO4J_LOSS_DPO && variant ? 0.1f : 0.0f;
                const bool margins = variant == 1;  // ignored by all but SPO
                LossCase c = make_loss_case(type, B, beta, eps, margins, 777u * uint64_t(lcase));
                const bool with_loss = (lcase % 3) != 0, with_stats = (lcase % 4) != 1;
                const int before = ck.failed;
                cpu_check_loss_case(ck, c, with_loss, with_stats);
                if (cuda) cuda_check_loss_case(ck, c);
                std::printf("%s loss %s\n", ck.failed == before ? "ok  " : "FAIL", c.label.c_str());
            }
        }
    }
    cpu_check_loss_errors(ck);
    if (cuda) cuda_check_loss_errors(ck);

    if (!cuda) std::printf("CUDA part skipped: %s\n", why.c_str());
    std::printf("%d passed, %d failed\n", ck.passed, ck.failed);
    return ck.failed == 0 ? 0 : 1;
}

std::vector<std::string> split(const std::string& s) {
    std::vector<std::string> out;
    std::stringstream ss(s);
    std::string item;
    while (std::getline(ss, item, ',')) out.push_back(item);
    return out;
}

void usage() {
    std::printf(
        "usage: spo4j_harness check [--verbose] [--quick]\n"
        "       spo4j_harness bench [--json FILE] [--reps N] [--rows N] [--vocab V,V,..]\n"
        "                           [--dtype bf16,f32,f16]\n");
}

}  // namespace
}  // namespace harness

#ifndef SPO4J_HARNESS_CUDA
// Built without CUDA: the CUDA part reports why it does not run.
namespace harness {
bool cuda_usable(std::string* why) {
    *why = spo4j_cuda_built() ? "the harness was built without CUDA"
                              : "libspo4j was built without CUDA (SPO4J_CUDA=OFF or no nvcc)";
    return false;
}
void cuda_check_token_case(Checker&, TokenCase&, uint64_t) {}
void cuda_check_token_errors(Checker&) {}
void cuda_check_loss_case(Checker&, const LossCase&) {}
void cuda_check_loss_errors(Checker&) {}
int cuda_bench(const BenchOptions&) {
    std::printf("bench: skipped: this build has no CUDA (configure with -DSPO4J_CUDA=ON on a "
                "machine with nvcc)\n");
    return 0;
}
}  // namespace harness
#endif

int main(int argc, char** argv) {
    using namespace harness;
    if (argc < 2) {
        usage();
        return 2;
    }
    const std::string mode = argv[1];
    bool verbose = false, quick = false;
    BenchOptions bo;
    for (int i = 2; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "missing value after %s\n", a.c_str());
                std::exit(2);
            }
            return argv[++i];
        };
        if (a == "--verbose") {
            verbose = true;
        } else if (a == "--quick") {
            quick = true;
        } else if (a == "--json") {
            bo.json = value();
        } else if (a == "--reps") {
            bo.reps = std::max(1, std::atoi(value().c_str()));
        } else if (a == "--rows") {
            bo.rows = std::max<int64_t>(1, std::atoll(value().c_str()));
        } else if (a == "--vocab") {
            bo.vocabs.clear();
            for (const std::string& v : split(value())) bo.vocabs.push_back(std::atoll(v.c_str()));
        } else if (a == "--dtype") {
            bo.dtypes.clear();
            for (const std::string& d : split(value()))
                bo.dtypes.push_back(d == "f32" ? SPO4J_F32 : d == "bf16" ? SPO4J_BF16 : SPO4J_F16);
        } else {
            usage();
            return 2;
        }
    }
    if (mode == "check") return run_check(verbose, quick);
    if (mode == "bench") return cuda_bench(bo);
    usage();
    return 2;
}
