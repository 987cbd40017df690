package dev.spo4j.train;

import dev.spo4j.loss.PreferenceLossConfig;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;

/**
 * The preference losses of shared/LOSSES.md written in LibTorch ops, differentiable by
 * autograd: the baseline that {@code --loss-impl libtorch} trains with and that the fused
 * kernels are compared against.
 */
final class CompositePreferenceLoss {
    private CompositePreferenceLoss() {}

    /**
     * Per-pair loss [B] from the policy's (graph-carrying) and the reference's log-probs,
     * already length-normalised when the config says so; margins nullable (then m0).
     */
    static Tensor perPair(PreferenceLossConfig c, Tensor pc, Tensor pr, Tensor rc, Tensor rr, Tensor margins) {
        Tensor h = pc.sub(rc).sub(pr.sub(rr));
        Tensor bh = h.mul(new Scalar(c.beta()));
        return switch (c.type()) {
            case SPO -> (margins == null ? bh.sub(new Scalar(c.margin())) : bh.sub(margins)).square();
            case DPO -> torch.log_sigmoid(bh).mul(new Scalar(-(1 - c.labelSmoothing())))
                    .sub(torch.log_sigmoid(bh.neg()).mul(new Scalar(c.labelSmoothing())));
            case IPO -> h.sub(new Scalar(1 / (2 * c.beta()))).square();
            case HINGE -> torch.relu(bh.neg().add(new Scalar(1.0)));
        };
    }
}
