package dev.spo4j.loss;

import org.bytedeco.pytorch.BoolOptional;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;

/**
 * The preference losses of {@code src/site/markdown/LOSSES.md} written in LibTorch ops,
 * differentiable by autograd: the twin of {@code native/common/pair_loss.h} that
 * {@code --loss-impl libtorch} trains with and that the fused kernels are compared against.
 * Its inputs come from {@link PairTerms}, the same normalisation and margins as the kernel's;
 * aot and aot-pair sort with {@code torch.sort} (stable), whose autograd routes each sorted
 * position's gradient back to its pair, as {@link PreferenceLoss} does by hand.
 */
final class CompositePreferenceLoss {
    private CompositePreferenceLoss() {}

    /**
     * Per-value loss [B] (graph-carrying where the policy terms carry one): the weighted sum of
     * the config's terms; no margins means m0 for every pair. aot and aot-pair give the loss per
     * sorted position, so only the mean is a per-batch quantity. {@code bcoDelta} is bco-pair's
     * reward shift (the running mean reward; ignored by the other losses).
     */
    static Tensor perPair(PreferenceLossConfig c, PairTerms t, double bcoDelta) {
        Tensor total = null;
        for (PreferenceLossConfig.WeightedLoss w : c.terms()) {
            Tensor l = single(c, w.type(), t, bcoDelta);
            if (w.weight() != 1.0) {
                l = l.mul(new Scalar(w.weight()));
            }
            total = total == null ? l : total.add(l);
        }
        return total;
    }

    /** -(1-eps) logsig(x) - eps logsig(-x). */
    private static Tensor dpo(Tensor x, double eps) {
        return torch.log_sigmoid(x).mul(new Scalar(-(1 - eps))).sub(torch.log_sigmoid(x.neg()).mul(new Scalar(eps)));
    }

    private static Tensor sorted(Tensor v) {
        return torch.sort(v, new BoolOptional(true), 0, false).get0();
    }

    private static Tensor single(PreferenceLossConfig c, LossType type, PairTerms t, double bcoDelta) {
        double beta = c.beta(), eps = c.labelSmoothing();
        Tensor dc = t.policyChosen().sub(t.refChosen());
        Tensor dr = t.policyRejected().sub(t.refRejected());
        Tensor h = dc.sub(dr);
        Tensor bh = h.mul(new Scalar(beta));
        Tensor rc = dc.mul(new Scalar(beta)), rr = dr.mul(new Scalar(beta));
        Tensor m = t.margins() != null ? t.margins() : torch.full_like(bh, new Scalar(c.margin()));
        Scalar one = new Scalar(1.0);
        return switch (type) {
            case SPO -> bh.sub(m).square();
            case DPO, CPO -> dpo(bh, eps);
            case SIMPO -> dpo(bh.sub(new Scalar(c.simpoGamma())), eps);
            case IPO -> h.sub(new Scalar(1 / (2 * beta))).square();
            case HINGE -> torch.relu(bh.neg().add(one));
            case SOFT_DPO -> {
                Tensor p = torch.sigmoid(m);
                yield p.mul(torch.log_sigmoid(bh)).add(p.neg().add(one).mul(torch.log_sigmoid(bh.neg()))).neg();
            }
            case SPO_EXP -> {
                // m~ = sign(m) max(|m|, floor), sign(0) = +1; z = beta h / m~; f continued linearly below z = -10
                Tensor mag = m.abs().clamp_min(new Scalar(c.marginFloor()));
                Tensor ms = torch.where(m.ge(new Scalar(0.0)), mag, mag.neg());
                Tensor z = bh.div(ms);
                Tensor zc = z.clamp_min(new Scalar(-10.0));
                Tensor ez = zc.neg().exp();
                yield zc.mul(ez).neg().add(new Scalar(Math.exp(-1)))
                        .add(zc.sub(one).mul(ez).mul(z.sub(zc)));
            }
            case ROBUST -> torch.log_sigmoid(bh).mul(new Scalar(-(1 - eps)))
                    .add(torch.log_sigmoid(bh.neg()).mul(new Scalar(eps))).div(new Scalar(1 - 2 * eps));
            case EXO_PAIR -> {
                double e = eps == 0 ? 1e-3 : eps;
                yield torch.sigmoid(bh).mul(torch.log_sigmoid(bh).sub(new Scalar(Math.log(1 - e))))
                        .add(torch.sigmoid(bh.neg()).mul(torch.log_sigmoid(bh.neg()).sub(new Scalar(Math.log(e)))));
            }
            case NCA_PAIR -> torch.log_sigmoid(rc).neg().sub(torch.log_sigmoid(rc.neg()).mul(new Scalar(0.5)))
                    .sub(torch.log_sigmoid(rr.neg()).mul(new Scalar(0.5)));
            case BCO_PAIR -> torch.log_sigmoid(rc.sub(new Scalar(bcoDelta))).neg()
                    .sub(torch.log_sigmoid(rr.sub(new Scalar(bcoDelta)).neg()));
            case SPPO_HARD -> dc.sub(new Scalar(0.5 / beta)).square().add(dr.add(new Scalar(0.5 / beta)).square());
            case AOT -> {
                Tensor policy = sorted(t.policyChosen().sub(t.policyRejected()));
                Tensor ref = sorted(t.refChosen().sub(t.refRejected()));
                yield dpo(policy.sub(ref).mul(new Scalar(beta)), eps);
            }
            case AOT_PAIR -> dpo(sorted(dc).sub(sorted(dr)).mul(new Scalar(beta)), eps);
            case APO_ZERO -> torch.sigmoid(rc).neg().add(one).add(torch.sigmoid(rr));
            case APO_DOWN -> torch.sigmoid(rc).add(one).sub(torch.sigmoid(bh));
            case DISCOPOP -> {
                Tensor w = torch.sigmoid(bh.div(new Scalar(c.discopopTau())));
                yield torch.log_sigmoid(bh).neg().mul(w.neg().add(one)).add(bh.neg().exp().mul(w));
            }
        };
    }
}
