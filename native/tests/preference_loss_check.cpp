// Preference losses in `spo4j_harness check`, CPU side: the cases (every loss type over
// 1..65537 pairs, with and without per-pair margins, label smoothing and the other
// parameters' two settings), their float64
// truth (preference_loss_check.h), the CPU kernel against them, its error statuses, and the
// order in which each case then runs on CUDA (preference_loss_check.cu).
// Kernel: native/cpu/preference_loss.cpp; definitions: src/site/markdown/LOSSES.md.
#include "preference_loss_check.h"

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <limits>

namespace harness {

// ---- data and references ------------------------------------------------------------------

namespace {

double logsig(double x) { return x > 0 ? -std::log1p(std::exp(-x)) : x - std::log1p(std::exp(x)); }
double sig(double x) { return 0.5 * (1.0 + std::tanh(0.5 * x)); }

LossCase make_loss_case(int type, int64_t pairs, float beta, float eps, bool with_margin,
                        uint64_t seed) {
    static const char* names[] = {"spo",       "dpo",      "ipo",       "hinge",    "soft-dpo", "spo-exp",
                                  "robust",    "exo-pair", "nca-pair",  "bco-pair", "sppo-hard", "aot",
                                  "aot-pair",  "apo-zero", "apo-down",  "discopop", "simpo",    "cpo"};
    Rng rng(seed);
    LossCase c;
    c.p.type = type;
    c.p.beta = beta;
    c.p.label_smoothing = eps;
    c.p.margin = 1.0f;
    c.p.margin_floor = 0.1f;
    c.p.tau = with_margin ? 0.05f : 1.5f;    // discopop: TRL's default and a wide blend
    c.p.gamma = with_margin ? 0.5f : -0.3f;  // simpo
    c.p.delta = with_margin ? 0.7f : -0.2f;  // bco-pair
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
    // float64 truth, written from src/site/markdown/LOSSES.md with logsigma/sigma in a
    // different form than the kernels (log1p branches and tanh) so that a shared slip would
    // show.
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
        bool separate = false;  // the losses of dc and dr separately set gc and gr themselves
        double gc = 0, gr = 0;
        const double x = b * h, rc = b * dc, rr = b * dr;
        if (type == SPO4J_LOSS_DPO || type == SPO4J_LOSS_AOT || type == SPO4J_LOSS_AOT_PAIR ||
            type == SPO4J_LOSS_CPO || type == SPO4J_LOSS_SIMPO) {
            const double y = type == SPO4J_LOSS_SIMPO ? x - double(c.p.gamma) : x;
            l = -(1 - e) * logsig(y) - e * logsig(-y);
            dh = -b * (1 - e) * sig(-y) + b * e * sig(y);
        } else if (type == SPO4J_LOSS_ROBUST) {
            l = (-(1 - e) * logsig(x) + e * logsig(-x)) / (1 - 2 * e);
            dh = (-b * (1 - e) * sig(-x) - b * e * sig(x)) / (1 - 2 * e);
        } else if (type == SPO4J_LOSS_EXO_PAIR) {
            const double ee = e == 0 ? 1e-3 : e;
            l = sig(x) * (logsig(x) - std::log(1 - ee)) + sig(-x) * (logsig(-x) - std::log(ee));
            // d/dx of s log s + (1-s) log(1-s) - s log(1-ee) - (1-s) log ee, s' = s(1-s)
            dh = b * sig(x) * (1 - sig(x)) * (logsig(x) - logsig(-x) - std::log(1 - ee) + std::log(ee));
        } else if (type == SPO4J_LOSS_DISCOPOP) {
            const double tau = c.p.tau, w = sig(x / tau), dw = w * (1 - w) / tau;
            l = -logsig(x) * (1 - w) + std::exp(-x) * w;
            dh = b * (-sig(-x) * (1 - w) + logsig(x) * dw - std::exp(-x) * w + std::exp(-x) * dw);
        } else if (type == SPO4J_LOSS_NCA_PAIR) {
            separate = true;
            l = -logsig(rc) - 0.5 * logsig(-rc) - 0.5 * logsig(-rr);
            gc = -b * sig(-rc) + 0.5 * b * sig(rc);
            gr = 0.5 * b * sig(rr);
        } else if (type == SPO4J_LOSS_BCO_PAIR) {
            separate = true;
            const double d = c.p.delta;
            l = -logsig(rc - d) - logsig(-(rr - d));
            gc = -b * sig(-(rc - d));
            gr = b * sig(rr - d);
        } else if (type == SPO4J_LOSS_SPPO_HARD) {
            separate = true;
            l = (dc - 0.5 / b) * (dc - 0.5 / b) + (dr + 0.5 / b) * (dr + 0.5 / b);
            gc = 2 * (dc - 0.5 / b);
            gr = 2 * (dr + 0.5 / b);
        } else if (type == SPO4J_LOSS_APO_ZERO) {
            separate = true;
            l = 1 - sig(rc) + sig(rr);
            gc = -b * sig(rc) * (1 - sig(rc));
            gr = b * sig(rr) * (1 - sig(rr));
        } else if (type == SPO4J_LOSS_APO_DOWN) {
            separate = true;
            l = sig(rc) + 1 - sig(x);
            gc = b * sig(rc) * (1 - sig(rc)) - b * sig(x) * (1 - sig(x));
            gr = b * sig(x) * (1 - sig(x));
        } else if (type == SPO4J_LOSS_SPO) {
            const double m = with_margin ? double(c.margin[i]) : double(c.p.margin);
            l = (b * h - m) * (b * h - m);
            dh = 2 * b * (b * h - m);
        } else if (type == SPO4J_LOSS_SOFT_DPO) {
            const double m = with_margin ? double(c.margin[i]) : double(c.p.margin);
            const double p = sig(m);
            l = -p * logsig(b * h) - (1 - p) * logsig(-b * h);
            dh = -b * p * sig(-b * h) + b * (1 - p) * sig(b * h);
        } else if (type == SPO4J_LOSS_SPO_EXP) {
            const double m = with_margin ? double(c.margin[i]) : double(c.p.margin);
            const double fl = double(c.p.margin_floor);
            const double mt = m < 0 ? std::min(m, -fl) : std::max(m, fl);
            const double z = b * h / mt;
            if (z >= -10) {
                l = std::exp(-1.0) - z * std::exp(-z);
                dh = (z - 1) * std::exp(-z) * b / mt;
            } else {  // the linear continuation below z = -10
                const double f0 = std::exp(-1.0) + 10 * std::exp(10.0), d0 = -11 * std::exp(10.0);
                l = f0 + d0 * (z + 10);
                dh = d0 * b / mt;
            }
        } else if (type == SPO4J_LOSS_IPO) {
            l = (h - 1 / (2 * b)) * (h - 1 / (2 * b));
            dh = 2 * (h - 1 / (2 * b));
        } else {
            l = std::max(0.0, 1 - b * h);
            dh = b * h < 1 ? -b : 0.0;
        }
        if (!separate) {
            gc = dh;
            gr = -dh;
        }
        c.loss_ref[i] = l;
        c.gc_ref[i] = gc / double(pairs);
        c.gr_ref[i] = gr / double(pairs);
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

std::vector<BadLossParams> bad_loss_params() {
    const float inf = std::numeric_limits<float>::infinity(), nanf = std::numeric_limits<float>::quiet_NaN();
    return {{"beta 0", {1, 0.0f, 0.0f, 1.0f, 0.1f, 0.05f, 0.5f, 0.0f}},     {"beta -1", {1, -1.0f, 0.0f, 1.0f, 0.1f, 0.05f, 0.5f, 0.0f}},
            {"beta NaN", {1, nanf, 0.0f, 1.0f, 0.1f, 0.05f, 0.5f, 0.0f}},   {"beta inf", {1, inf, 0.0f, 1.0f, 0.1f, 0.05f, 0.5f, 0.0f}},
            {"eps -0.1", {1, 0.1f, -0.1f, 1.0f, 0.1f, 0.05f, 0.5f, 0.0f}}, {"eps 0.5", {1, 0.1f, 0.5f, 1.0f, 0.1f, 0.05f, 0.5f, 0.0f}},
            {"eps NaN", {1, 0.1f, nanf, 1.0f, 0.1f, 0.05f, 0.5f, 0.0f}},    {"type -1", {-1, 0.1f, 0.0f, 1.0f, 0.1f, 0.05f, 0.5f, 0.0f}},
            {"type 1000", {1000, 0.1f, 0.0f, 1.0f, 0.1f, 0.05f, 0.5f, 0.0f}}, {"margin NaN", {0, 0.1f, 0.0f, nanf, 0.1f, 0.05f, 0.5f, 0.0f}},
            {"margin inf", {0, 0.1f, 0.0f, inf, 0.1f, 0.05f, 0.5f, 0.0f}},  {"margin floor 0", {5, 0.1f, 0.0f, 1.0f, 0.0f, 0.05f, 0.5f, 0.0f}},
            {"margin floor NaN", {5, 0.1f, 0.0f, 1.0f, nanf, 0.05f, 0.5f, 0.0f}},
            {"discopop tau 0", {SPO4J_LOSS_DISCOPOP, 0.1f, 0.0f, 1.0f, 0.1f, 0.0f, 0.5f, 0.0f}},
            {"discopop tau -1", {SPO4J_LOSS_DISCOPOP, 0.1f, 0.0f, 1.0f, 0.1f, -1.0f, 0.5f, 0.0f}},
            {"discopop tau inf", {SPO4J_LOSS_DISCOPOP, 0.1f, 0.0f, 1.0f, 0.1f, inf, 0.5f, 0.0f}},
            {"simpo gamma NaN", {SPO4J_LOSS_SIMPO, 0.1f, 0.0f, 1.0f, 0.1f, 0.05f, nanf, 0.0f}},
            {"bco-pair delta inf", {SPO4J_LOSS_BCO_PAIR, 0.1f, 0.0f, 1.0f, 0.1f, 0.05f, 0.5f, inf}},
            {"robust eps 0.5", {SPO4J_LOSS_ROBUST, 0.1f, 0.5f, 1.0f, 0.1f, 0.05f, 0.5f, 0.0f}},
            {"type 18", {18, 0.1f, 0.0f, 1.0f, 0.1f, 0.05f, 0.5f, 0.0f}}};
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
    for (const BadLossParams& b : bad_loss_params())
        expect_status(ck, run(b.p, 4, c.pc.data(), gc.data()), SPO4J_ERR_ARGUMENT,
                      strf("cpu loss %s -> ARGUMENT", b.what));
    expect_status(ck, run(c.p, 0, c.pc.data(), gc.data()), SPO4J_ERR_ARGUMENT, "cpu loss pairs 0 -> ARGUMENT");
    expect_status(ck, run(c.p, 4, nullptr, gc.data()), SPO4J_ERR_ARGUMENT, "cpu loss null input -> ARGUMENT");
    expect_status(ck, run(c.p, 4, c.pc.data(), nullptr), SPO4J_ERR_ARGUMENT, "cpu loss null grad -> ARGUMENT");
    expect_status(ck, spo4j_preference_loss_cpu(nullptr, 4, c.pc.data(), c.pr.data(), c.rc.data(),
                                                c.rr.data(), nullptr, nullptr, gc.data(), gr.data(), nullptr),
                  SPO4J_ERR_ARGUMENT, "cpu loss null params -> ARGUMENT");
}

}  // namespace

// ---- the preference-loss part of the check mode -------------------------------------------

void check_preference_loss(Checker& ck, bool cuda) {
    const int64_t pair_counts[] = {1, 7, 1000, 65537};
    int lcase = 0;
    for (int type = SPO4J_LOSS_SPO; type <= SPO4J_LOSS_CPO; ++type) {
        for (int64_t B : pair_counts) {
            for (int variant = 0; variant < 2; ++variant) {
                ++lcase;
                const float beta = variant ? 2.5f : 0.1f;
                const bool smooths = type == SPO4J_LOSS_DPO || type == SPO4J_LOSS_ROBUST ||
                                     type == SPO4J_LOSS_EXO_PAIR || type == SPO4J_LOSS_AOT ||
                                     type == SPO4J_LOSS_AOT_PAIR || type == SPO4J_LOSS_SIMPO ||
                                     type == SPO4J_LOSS_CPO;
                const float eps = smooths && variant ? 0.1f : 0.0f;
                const bool margins = variant == 1;  // read by spo, soft-dpo and spo-exp
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
}

}  // namespace harness
