// preference_loss: SPO, DPO (cDPO with label smoothing), IPO and hinge, forward + gradient +
// batch metrics for B pairs (CPU). Definitions: shared/LOSSES.md. With h = dc - dr,
// dc = pi_c - ref_c, dr = pi_r - ref_r:
//   spo  : (beta h - m)^2                      dL/dh = 2 beta (beta h - m)
//   dpo  : (1-e) softplus(-beta h) + e softplus(beta h)
//                                              dL/dh = -beta (1-e) sig(-beta h) + beta e sig(beta h)
//   ipo  : (h - 1/(2 beta))^2                  dL/dh = 2 (h - 1/(2 beta))
//   hinge: max(0, 1 - beta h)                  dL/dh = -beta if beta h < 1 else 0
// The outputs are gradients of the MEAN loss: dL/dpi_c = +dL/dh / B, dL/dpi_r = -dL/dh / B.
// Math in double; logsigma via softplus. O(B) memory, one pass.
// Test: src/test/java/dev/spo4j/loss/PreferenceLossTest.java.
#include <cinttypes>
#include <cmath>

#include "status.h"

namespace {

// DPO needs softplus(+-x) and sigmoid(+-x); all four come from e = exp(-|x|) and log1p(e):
// softplus(x) = max(x, 0) + log1p(e), sigmoid(|x|) = 1 / (1 + e), sigmoid(-|x|) = e / (1 + e).
struct LogisticTerms {
    double softplus_pos, softplus_neg, sigmoid_pos, sigmoid_neg;  // of +x and of -x
};
LogisticTerms logistic(double x) {
    const double e = std::exp(-std::fabs(x)), l = std::log1p(e);
    const double big = 1.0 / (1.0 + e), small = e / (1.0 + e);
    LogisticTerms t;
    t.softplus_pos = std::fmax(x, 0.0) + l;
    t.softplus_neg = std::fmax(-x, 0.0) + l;
    t.sigmoid_pos = x >= 0 ? big : small;
    t.sigmoid_neg = x >= 0 ? small : big;
    return t;
}

}  // namespace

namespace spo4j {
int check_loss_params(const spo4j_loss_params* p) {
    if (!p) return fail(SPO4J_ERR_ARGUMENT, "null loss parameters");
    if (p->type < SPO4J_LOSS_SPO || p->type > SPO4J_LOSS_HINGE)
        return fail(SPO4J_ERR_ARGUMENT, "unknown loss type %d (expected 0=spo, 1=dpo, 2=ipo, 3=hinge)", p->type);
    if (!(std::isfinite(p->beta) && p->beta > 0))
        return fail(SPO4J_ERR_ARGUMENT, "beta = %g (expected a finite value > 0)", double(p->beta));
    if (!(p->label_smoothing >= 0 && p->label_smoothing < 0.5f))
        return fail(SPO4J_ERR_ARGUMENT, "label smoothing = %g (expected 0 <= eps < 0.5)", double(p->label_smoothing));
    if (!std::isfinite(p->margin))
        return fail(SPO4J_ERR_ARGUMENT, "margin = %g (expected a finite value)", double(p->margin));
    return SPO4J_OK;
}
}  // namespace spo4j

extern "C" SPO4J_API int spo4j_preference_loss_cpu(
        const spo4j_loss_params* p, int64_t pairs, const float* policy_chosen,
        const float* policy_rejected, const float* ref_chosen, const float* ref_rejected,
        const float* margin, float* loss, float* grad_chosen, float* grad_rejected, float* stats) {
    using namespace spo4j;
    clear_error();
    int st = check_loss_params(p);
    if (st) return st;
    if (pairs < 1) return fail(SPO4J_ERR_ARGUMENT, "pairs = %" PRId64 " (expected >= 1)", pairs);
    if (!policy_chosen || !policy_rejected || !ref_chosen || !ref_rejected || !grad_chosen || !grad_rejected)
        return fail(SPO4J_ERR_ARGUMENT, "null input or gradient pointer");
    const double beta = p->beta, eps = p->label_smoothing, inv_b = 1.0 / double(pairs);
    double sum[SPO4J_STAT_COUNT] = {0};
    for (int64_t i = 0; i < pairs; i++) {
        const double dc = double(policy_chosen[i]) - ref_chosen[i];
        const double dr = double(policy_rejected[i]) - ref_rejected[i];
        const double h = dc - dr, bh = beta * h;
        double l, dh;
        switch (p->type) {
            case SPO4J_LOSS_SPO: {
                const double m = margin ? double(margin[i]) : double(p->margin);
                const double d = bh - m;
                l = d * d;
                dh = 2.0 * beta * d;
                break;
            }
            case SPO4J_LOSS_DPO: {
                const LogisticTerms t = logistic(bh);
                l = (1.0 - eps) * t.softplus_neg + eps * t.softplus_pos;
                dh = -beta * (1.0 - eps) * t.sigmoid_neg + beta * eps * t.sigmoid_pos;
                break;
            }
            case SPO4J_LOSS_IPO: {
                const double d = h - 1.0 / (2.0 * beta);
                l = d * d;
                dh = 2.0 * d;
                break;
            }
            default:  // hinge
                l = bh < 1.0 ? 1.0 - bh : 0.0;
                dh = bh < 1.0 ? -beta : 0.0;
                break;
        }
        if (loss) loss[i] = float(l);
        grad_chosen[i] = float(dh * inv_b);
        grad_rejected[i] = float(-dh * inv_b);
        sum[SPO4J_STAT_LOSS] += l;
        sum[SPO4J_STAT_REWARD_CHOSEN] += beta * dc;
        sum[SPO4J_STAT_REWARD_REJECTED] += beta * dr;
        sum[SPO4J_STAT_REWARD_MARGIN] += bh;
        sum[SPO4J_STAT_ACCURACY] += beta * dc > beta * dr ? 1.0 : 0.0;
        sum[SPO4J_STAT_LOGP_CHOSEN] += policy_chosen[i];
        sum[SPO4J_STAT_LOGP_REJECTED] += policy_rejected[i];
    }
    if (stats)
        for (int k = 0; k < SPO4J_STAT_COUNT; k++) stats[k] = float(sum[k] * inv_b);
    return SPO4J_OK;
}
