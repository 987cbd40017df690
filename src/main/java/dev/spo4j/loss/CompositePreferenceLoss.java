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

    /** Per-pair loss [B] (graph-carrying where the policy terms carry one); margins null means m0. */
    static Tensor perPair(PreferenceLossConfig c, PairTerms t) {
        Tensor h = t.policyChosen().sub(t.refChosen()).sub(t.policyRejected().sub(t.refRejected()));
        Tensor bh = h.mul(new Scalar(c.beta()));
        Tensor margins = t.margins();
        return switch (c.type()) {
            case SPO -> (margins == null ? bh.sub(new Scalar(c.margin())) : bh.sub(margins)).square();
            case DPO -> torch.log_sigmoid(bh).mul(new Scalar(-(1 - c.labelSmoothing())))
                    .sub(torch.log_sigmoid(bh.neg()).mul(new Scalar(c.labelSmoothing())));
            case IPO -> h.sub(new Scalar(1 / (2 * c.beta()))).square();
            case HINGE -> torch.relu(bh.neg().add(new Scalar(1.0)));
        };
    }
}
