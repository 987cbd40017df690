// Internal: the per-pair preference losses of src/site/markdown/LOSSES.md and their batch
// statistics, written once for both the CPU kernel (native/cpu/preference_loss.cpp) and the
// CUDA kernel (native/cuda/preference_loss.cu). Double precision; logsigma through softplus.
//   dc = pi_c - ref_c, dr = pi_r - ref_r, h = dc - dr, x = beta h, sp = softplus, sig = sigmoid
// Losses of h alone (gradient dL/dh: +dL/dh on dc, -dL/dh on dr):
//   spo  : (beta h - m)^2                   dL/dh = 2 beta (beta h - m)
//   dpo  : (1-e) sp(-x) + e sp(x)           dL/dh = -beta (1-e) sig(-x) + beta e sig(x)
//   ipo  : (h - 1/(2 beta))^2               dL/dh = 2 (h - 1/(2 beta))
//   hinge: max(0, 1 - beta h)               dL/dh = -beta if beta h < 1 else 0
//   soft-dpo: p sp(-x) + (1-p) sp(x), p = sigmoid(m) (a soft label from the reward gap: DPO
//             given SPO's information)
//                                           dL/dh = -beta p sig(-x) + beta (1-p) sig(x)
//   spo-exp: f(z) = 1/e - z e^-z, z = beta h / m~, m~ = sign(m) max(|m|, floor) (sign(0) = +1);
//            minimum 0 at z = 1 (beta h = m~), mild for overshoot (z > 1), exponential for
//            inverted preferences (z < 0); below z = -10 continued linearly so that loss and
//            gradient stay finite.           dL/dh = (z - 1) e^-z beta / m~
//   robust: ((1-e) sp(-x) - e sp(x)) / (1 - 2e)
//                                           dL/dh = -beta ((1-e) sig(-x) + e sig(x)) / (1 - 2e)
//   exo-pair: sig(x) (logsig(x) - log(1-e')) + sig(-x) (logsig(-x) - log e'), e' = e or 1e-3
//             when e = 0 (KL(Bernoulli(sig x) || Bernoulli(1-e')))
//                                           dL/dh = beta sig(x) sig(-x) (x - log((1-e')/e'))
//   aot, aot-pair: the dpo formula; the caller passes quantities sorted across the batch
//   discopop: sp(-x) (1 - w) + e^-x w, w = sig(x / tau); e^-x w evaluated as exp(-x - sp(-x/tau))
//                                           dL/dh = beta (-sig(-x)(1-w) - sp(-x) w(1-w)/tau
//                                                         - e^-x w + e^-x w (1-w)/tau)
//   simpo: (1-e) sp(-(x - g)) + e sp(x - g) (reference-free: the caller passes ref = 0 and
//          length-normalised log-probs; g = gamma, the target reward margin)
//   cpo  : the dpo formula (reference-free: the caller passes ref = 0)
// Losses of dc and dr separately (rc = beta dc, rr = beta dr):
//   nca-pair: sp(-rc) + sp(rc)/2 + sp(rr)/2 dL/ddc = beta (sig(rc)/2 - sig(-rc)), dL/ddr = beta sig(rr)/2
//   bco-pair: sp(-(rc - d)) + sp(rr - d), d = the running mean reward (a parameter here)
//                                           dL/ddc = -beta sig(d - rc), dL/ddr = beta sig(rr - d)
//   sppo-hard: (dc - 1/(2 beta))^2 + (dr + 1/(2 beta))^2
//                                           dL/ddc = 2 (dc - 1/(2 beta)), dL/ddr = 2 (dr + 1/(2 beta))
//   apo-zero: 1 - sig(rc) + sig(rr)         dL/ddc = -beta sig(rc) sig(-rc), dL/ddr = beta sig(rr) sig(-rr)
//   apo-down: sig(rc) + 1 - sig(x)          dL/ddc = beta (sig(rc) sig(-rc) - sig(x) sig(-x)),
//                                           dL/ddr = beta sig(x) sig(-x)
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
    double dc;  // dL/d(dc): the chosen policy log-prob's gradient
    double dr;  // dL/d(dr): the rejected policy log-prob's gradient
};

// The loss parameters in double (spo4j_loss_params, checked by check_loss_params).
struct PairParams {
    int32_t type;
    double beta, eps, margin_floor, tau, gamma, delta;
};

SPO4J_HD PairParams pair_params(const spo4j_loss_params& p) {
    PairParams a;
    a.type = p.type;
    a.beta = p.beta;
    a.eps = p.label_smoothing;
    a.margin_floor = p.margin_floor;
    a.tau = p.tau;
    a.gamma = p.gamma;
    a.delta = p.delta;
    return a;
}

// spo-exp's f(z) is continued linearly below this z (10 target widths on the wrong side).
constexpr double kSpoExpZMin = -10.0;
// exo-pair's e' when the label smoothing is 0.
constexpr double kExoEpsDefault = 1e-3;

// softplus(x) = log(1 + e^x) and sigmoid(x), without overflow.
SPO4J_HD double softplus(double x) { return fmax(x, 0.0) + log1p(exp(-fabs(x))); }
SPO4J_HD double sigmoid(double x) {
    const double e = exp(-fabs(x));
    return x >= 0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
}

// Label-p logistic loss p softplus(-x) + (1-p) softplus(x) at x (= beta h, or beta h - gamma),
// and dL/dh = beta dL/dx: DPO (p = 1 - eps) and soft-dpo (p = sigmoid(m)). softplus(+-x) and
// sigmoid(+-x) from one exp and one log1p: e = exp(-|x|).
SPO4J_HD PairLoss logistic_pair(double beta, double bh, double p) {
    const double e = exp(-fabs(bh)), l = log1p(e);
    const double big = 1.0 / (1.0 + e), small = e / (1.0 + e);
    const double sp_pos = fmax(bh, 0.0) + l, sp_neg = fmax(-bh, 0.0) + l;
    const double sig_pos = bh >= 0 ? big : small, sig_neg = bh >= 0 ? small : big;
    PairLoss r;
    r.loss = p * sp_neg + (1.0 - p) * sp_pos;
    r.dc = -beta * p * sig_neg + beta * (1.0 - p) * sig_pos;
    r.dr = -r.dc;
    return r;
}

// One pair: margin is this pair's target margin m (spo, soft-dpo, spo-exp; ignored by the
// others). Callers validate the type (an unknown one computes hinge).
SPO4J_HD PairLoss pair_loss(const PairParams& a, double margin, double dc, double dr) {
    const double beta = a.beta, eps = a.eps, h = dc - dr, bh = beta * h;
    PairLoss r;
    double dh = 0.0;  // for the losses of h alone
    switch (a.type) {
        case SPO4J_LOSS_SPO: {
            const double d = bh - margin;
            r.loss = d * d;
            dh = 2.0 * beta * d;
            break;
        }
        case SPO4J_LOSS_DPO:
        case SPO4J_LOSS_AOT:
        case SPO4J_LOSS_AOT_PAIR:
        case SPO4J_LOSS_CPO:
            return logistic_pair(beta, bh, 1.0 - eps);
        case SPO4J_LOSS_SIMPO:
            return logistic_pair(beta, bh - a.gamma, 1.0 - eps);
        case SPO4J_LOSS_SOFT_DPO:
            return logistic_pair(beta, bh, sigmoid(margin));
        case SPO4J_LOSS_SPO_EXP: {
            const double ms = (margin >= 0 ? 1.0 : -1.0) * fmax(fabs(margin), a.margin_floor);
            const double z = bh / ms, zc = fmax(z, kSpoExpZMin);
            const double ez = exp(-zc);
            const double df = (zc - 1.0) * ez;  // f'(zc)
            r.loss = 0.36787944117144233 - zc * ez + df * (z - zc);
            dh = df * beta / ms;
            break;
        }
        case SPO4J_LOSS_IPO: {
            const double d = h - 1.0 / (2.0 * beta);
            r.loss = d * d;
            dh = 2.0 * d;
            break;
        }
        case SPO4J_LOSS_ROBUST: {
            const double k = 1.0 / (1.0 - 2.0 * eps);
            r.loss = k * ((1.0 - eps) * softplus(-bh) - eps * softplus(bh));
            dh = -beta * k * ((1.0 - eps) * sigmoid(-bh) + eps * sigmoid(bh));
            break;
        }
        case SPO4J_LOSS_EXO_PAIR: {
            const double e = eps == 0.0 ? kExoEpsDefault : eps;
            const double sp = sigmoid(bh), sn = sigmoid(-bh);
            r.loss = sp * (-softplus(-bh) - log1p(-e)) + sn * (-softplus(bh) - log(e));
            dh = beta * sp * sn * (bh - (log1p(-e) - log(e)));
            break;
        }
        case SPO4J_LOSS_DISCOPOP: {
            const double w = sigmoid(bh / a.tau), spn = softplus(-bh);
            const double ew = exp(-bh - softplus(-bh / a.tau));  // e^-x w
            r.loss = spn * (1.0 - w) + ew;
            dh = beta * (-sigmoid(-bh) * (1.0 - w) - spn * w * (1.0 - w) / a.tau - ew + ew * (1.0 - w) / a.tau);
            break;
        }
        case SPO4J_LOSS_NCA_PAIR: {
            const double rc = beta * dc, rr = beta * dr;
            r.loss = softplus(-rc) + 0.5 * softplus(rc) + 0.5 * softplus(rr);
            r.dc = beta * (0.5 * sigmoid(rc) - sigmoid(-rc));
            r.dr = 0.5 * beta * sigmoid(rr);
            return r;
        }
        case SPO4J_LOSS_BCO_PAIR: {
            const double rc = beta * dc - a.delta, rr = beta * dr - a.delta;
            r.loss = softplus(-rc) + softplus(rr);
            r.dc = -beta * sigmoid(-rc);
            r.dr = beta * sigmoid(rr);
            return r;
        }
        case SPO4J_LOSS_SPPO_HARD: {
            const double c = dc - 0.5 / beta, d = dr + 0.5 / beta;
            r.loss = c * c + d * d;
            r.dc = 2.0 * c;
            r.dr = 2.0 * d;
            return r;
        }
        case SPO4J_LOSS_APO_ZERO: {
            const double sc = sigmoid(beta * dc), sr = sigmoid(beta * dr);
            r.loss = 1.0 - sc + sr;
            r.dc = -beta * sc * sigmoid(-beta * dc);
            r.dr = beta * sr * sigmoid(-beta * dr);
            return r;
        }
        case SPO4J_LOSS_APO_DOWN: {
            const double sc = sigmoid(beta * dc), sh = sigmoid(bh);
            const double gh = beta * sh * sigmoid(-bh);
            r.loss = sc + 1.0 - sh;
            r.dc = beta * sc * sigmoid(-beta * dc) - gh;
            r.dr = gh;
            return r;
        }
        default:  // hinge (callers validate the type)
            r.loss = bh < 1.0 ? 1.0 - bh : 0.0;
            dh = bh < 1.0 ? -beta : 0.0;
            break;
    }
    r.dc = dh;
    r.dr = -dh;
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
