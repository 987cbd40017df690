// Internal: the per-pair preference losses of src/site/markdown/LOSSES.md and their batch
// statistics, written once for both the CPU kernel (native/cpu/preference_loss.cpp) and the
// CUDA kernel (native/cuda/preference_loss.cu). Double precision; logsigma through softplus.
//   h = dc - dr, dc = pi_c - ref_c, dr = pi_r - ref_r
//   spo  : (beta h - m)^2                   dL/dh = 2 beta (beta h - m)
//   dpo  : (1-e) softplus(-beta h) + e softplus(beta h)
//                                           dL/dh = -beta (1-e) sig(-beta h) + beta e sig(beta h)
//   ipo  : (h - 1/(2 beta))^2               dL/dh = 2 (h - 1/(2 beta))
//   hinge: max(0, 1 - beta h)               dL/dh = -beta if beta h < 1 else 0
//   soft-dpo: p softplus(-beta h) + (1-p) softplus(beta h), p = sigmoid(m) (a soft label
//             from the reward gap: DPO given SPO's information)
//                                           dL/dh = -beta p sig(-beta h) + beta (1-p) sig(beta h)
//   spo-exp: f(z) = 1/e - z e^-z, z = beta h / m~, m~ = sign(m) max(|m|, floor) (sign(0) = +1);
//            minimum 0 at z = 1 (beta h = m~), mild for overshoot (z > 1), exponential for
//            inverted preferences (z < 0); below z = -10 continued linearly so that loss and
//            gradient stay finite.           dL/dh = (z - 1) e^-z beta / m~
// The margin m: per pair (rewardScale (score_c - score_r) or explicit), else m0.
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

// spo-exp's f(z) is continued linearly below this z (10 target widths on the wrong side).
constexpr double kSpoExpZMin = -10.0;

// Label-p logistic loss p softplus(-x) + (1-p) softplus(x) at x = beta h, and dL/dh: DPO
// (p = 1 - eps) and soft-dpo (p = sigmoid(m)). softplus(+-x) and sigmoid(+-x) from one exp and
// one log1p: e = exp(-|x|).
SPO4J_HD PairLoss logistic_pair(double beta, double bh, double p) {
    const double e = exp(-fabs(bh)), l = log1p(e);
    const double big = 1.0 / (1.0 + e), small = e / (1.0 + e);
    const double sp_pos = fmax(bh, 0.0) + l, sp_neg = fmax(-bh, 0.0) + l;
    const double sig_pos = bh >= 0 ? big : small, sig_neg = bh >= 0 ? small : big;
    PairLoss r;
    r.loss = p * sp_neg + (1.0 - p) * sp_pos;
    r.dh = -beta * p * sig_neg + beta * (1.0 - p) * sig_pos;
    return r;
}

// margin: this pair's target margin m (spo, soft-dpo, spo-exp; ignored by the others);
// margin_floor: spo-exp's floor on |m|.
SPO4J_HD PairLoss pair_loss(int32_t type, double beta, double eps, double margin, double margin_floor,
                            double h) {
    const double bh = beta * h;
    PairLoss r;
    switch (type) {
        case SPO4J_LOSS_SPO: {
            const double d = bh - margin;
            r.loss = d * d;
            r.dh = 2.0 * beta * d;
            break;
        }
        case SPO4J_LOSS_DPO:
            r = logistic_pair(beta, bh, 1.0 - eps);
            break;
        case SPO4J_LOSS_SOFT_DPO: {
            const double em = exp(-fabs(margin));  // sigmoid(m) without overflow
            r = logistic_pair(beta, bh, margin >= 0 ? 1.0 / (1.0 + em) : em / (1.0 + em));
            break;
        }
        case SPO4J_LOSS_SPO_EXP: {
            const double ms = (margin >= 0 ? 1.0 : -1.0) * fmax(fabs(margin), margin_floor);
            const double z = bh / ms, zc = fmax(z, kSpoExpZMin);
            const double ez = exp(-zc);
            const double df = (zc - 1.0) * ez;  // f'(zc)
            r.loss = 0.36787944117144233 - zc * ez + df * (z - zc);
            r.dh = df * beta / ms;
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
