// Internal: the per-pair preference losses of src/site/markdown/LOSSES.md and their batch
// statistics, written once for both the CPU kernel (native/cpu/preference_loss.cpp) and the
// CUDA kernel (native/cuda/preference_loss.cu). Double precision; logsigma through softplus.
//   h = dc - dr, dc = pi_c - ref_c, dr = pi_r - ref_r
//   spo  : (beta h - m)^2                   dL/dh = 2 beta (beta h - m)
//   dpo  : (1-e) softplus(-beta h) + e softplus(beta h)
//                                           dL/dh = -beta (1-e) sig(-beta h) + beta e sig(beta h)
//   ipo  : (h - 1/(2 beta))^2               dL/dh = 2 (h - 1/(2 beta))
//   hinge: max(0, 1 - beta h)               dL/dh = -beta if beta h < 1 else 0
#pragma once

#include <math.h>
#include <stdint.h>

#include "spo4j.h"

#ifdef __CUDACC__
#define SPO4J_HD __host__ __device__ __forceinline__
#else
#define SPO4J_HD inline
#endif

namespace spo4j {

struct PairLoss {
    double loss;
    double dh;  // dL/dh: the chosen log-prob's gradient is +dh, the rejected one's -dh
};

// margin: SPO's target for this pair (ignored by the other losses).
SPO4J_HD PairLoss pair_loss(int32_t type, double beta, double eps, double margin, double h) {
    const double bh = beta * h;
    PairLoss r;
    switch (type) {
        case SPO4J_LOSS_SPO: {
            const double d = bh - margin;
            r.loss = d * d;
            r.dh = 2.0 * beta * d;
            break;
        }
        case SPO4J_LOSS_DPO: {
            // softplus(+-x) and sigmoid(+-x) from one exp and one log1p: e = exp(-|x|)
            const double e = exp(-fabs(bh)), l = log1p(e);
            const double big = 1.0 / (1.0 + e), small = e / (1.0 + e);
            const double sp_pos = fmax(bh, 0.0) + l, sp_neg = fmax(-bh, 0.0) + l;
            const double sig_pos = bh >= 0 ? big : small, sig_neg = bh >= 0 ? small : big;
            r.loss = (1.0 - eps) * sp_neg + eps * sp_pos;
            r.dh = -beta * (1.0 - eps) * sig_neg + beta * eps * sig_pos;
            break;
        }
        case SPO4J_LOSS_IPO: {
            const double d = h - 1.0 / (2.0 * beta);
            r.loss = d * d;
            r.dh = 2.0 * d;
            break;
        }
        default:  // hinge (callers validate the type)
            r.loss = bh < 1.0 ? 1.0 - bh : 0.0;
            r.dh = bh < 1.0 ? -beta : 0.0;
            break;
    }
    return r;
}

// Adds one pair to the SPO4J_STAT_* sums (the caller divides by the pair count).
SPO4J_HD void add_pair_stats(double* sum, double beta, double loss, double pc, double pr, double dc, double dr) {
    sum[SPO4J_STAT_LOSS] += loss;
    sum[SPO4J_STAT_REWARD_CHOSEN] += beta * dc;
    sum[SPO4J_STAT_REWARD_REJECTED] += beta * dr;
    sum[SPO4J_STAT_REWARD_MARGIN] += beta * (dc - dr);
    sum[SPO4J_STAT_ACCURACY] += beta * dc > beta * dr ? 1.0 : 0.0;
    sum[SPO4J_STAT_LOGP_CHOSEN] += pc;
    sum[SPO4J_STAT_LOGP_REJECTED] += pr;
}

}  // namespace spo4j
