package dev.spo4j.loss;

import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;

/**
 * The preference losses of {@code src/site/markdown/LOSSES.md} written in LibTorch ops,
 * differentiable by autograd: the twin of {@code native/common/pair_loss.h} that
 * {@code --loss-impl libtorch} trains with and that the fused kernels are compared against.
 * Its inputs come from {@link PairTerms}, the same normalisation and margins as the kernel's.
 */
final class CompositePreferenceLoss {
    private CompositePreferenceLoss() {}

    /** Per-pair loss [B] (graph-carrying where the policy terms carry one); no margins means m0 for every pair. */
    static Tensor perPair(PreferenceLossConfig c, PairTerms t) {
        Tensor h = t.policyChosen().sub(t.refChosen()).sub(t.policyRejected().sub(t.refRejected()));
        Tensor bh = h.mul(new Scalar(c.beta()));
        Tensor m = t.margins() != null ? t.margins() : torch.full_like(bh, new Scalar(c.margin()));
        return switch (c.type()) {
            case SPO -> bh.sub(m).square();
            case DPO -> torch.log_sigmoid(bh).mul(new Scalar(-(1 - c.labelSmoothing())))
                    .sub(torch.log_sigmoid(bh.neg()).mul(new Scalar(c.labelSmoothing())));
            case IPO -> h.sub(new Scalar(1 / (2 * c.beta()))).square();
            case HINGE -> torch.relu(bh.neg().add(new Scalar(1.0)));
            case SOFT_DPO -> {
                Tensor p = torch.sigmoid(m);
                yield p.mul(torch.log_sigmoid(bh)).add(p.neg().add(new Scalar(1.0)).mul(torch.log_sigmoid(bh.neg())))
                        .neg();
            }
            case SPO_EXP -> {
                // m~ = sign(m) max(|m|, floor), sign(0) = +1; z = beta h / m~; f continued linearly below z = -10
                Tensor mag = m.abs().clamp_min(new Scalar(c.marginFloor()));
                Tensor ms = torch.where(m.ge(new Scalar(0.0)), mag, mag.neg());
                Tensor z = bh.div(ms);
                Tensor zc = z.clamp_min(new Scalar(-10.0));
                Tensor ez = zc.neg().exp();
                yield zc.mul(ez).neg().add(new Scalar(Math.exp(-1)))
                        .add(zc.sub(new Scalar(1.0)).mul(ez).mul(z.sub(zc)));
            }
        };
    }
}
