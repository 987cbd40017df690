// preference_loss: the losses of native/common/pair_loss.h (SPO, DPO/cDPO, IPO, hinge, soft-DPO,
// SPO-exp and TRL's other pairwise loss types, SimPO, CPO), forward + gradient +
// batch metrics for B pairs (CPU). The per-pair formulas live in native/common/pair_loss.h and
// the parameter check in native/common/loss_params.cpp, both shared with the CUDA kernel
// (native/cuda/preference_loss.cu). The outputs are gradients of the MEAN loss:
// dL/dpi_c = dL/d(dc) / B, dL/dpi_r = dL/d(dr) / B.
// Math in double; logsigma via softplus. O(B) memory, one pass.
// Test: src/test/java/dev/spo4j/loss/PreferenceLossTest.java; native harness:
// native/tests/preference_loss_check.cpp.
#include <cinttypes>
#include <cmath>

#include "loss_params.h"
#include "pair_loss.h"
#include "status.h"

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
    const PairParams a = pair_params(*p);
    const double beta = a.beta, inv_b = 1.0 / double(pairs);
    double sum[SPO4J_STAT_COUNT] = {0};
    for (int64_t i = 0; i < pairs; i++) {
        const double dc = double(policy_chosen[i]) - ref_chosen[i];
        const double dr = double(policy_rejected[i]) - ref_rejected[i];
        const double margin_i = margin ? double(margin[i]) : double(p->margin);
        const PairLoss pl = pair_loss(a, margin_i, dc, dr);
        const double l = pl.loss;
        if (loss) loss[i] = float(l);
        grad_chosen[i] = float(pl.dc * inv_b);
        grad_rejected[i] = float(pl.dr * inv_b);
        add_pair_stats(sum, beta, l, policy_chosen[i], policy_rejected[i], dc, dr);
    }
    if (stats)
        for (int k = 0; k < SPO4J_STAT_COUNT; k++) stats[k] = float(sum[k] * inv_b);
    return SPO4J_OK;
}
