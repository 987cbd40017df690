package dev.spo4j.loss;

import dev.spo4j.kernels.CudaKernels;
import dev.spo4j.kernels.Native;
import dev.spo4j.kernels.TensorChecks;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.pytorch.DeviceOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * A preference loss (SPO, DPO/cDPO, IPO or hinge; formulas in shared/LOSSES.md) over B pairs,
 * computed by the native kernel: the mean loss, its gradient with respect to the policy's
 * summed log-probs of the chosen and rejected completions, and TRL-named metrics.
 *
 * <p>Inputs are fp32 {@code [B]} tensors on one device: the policy's and the reference's
 * log-probs of each completion, SUMMED over its tokens. Optional per pair: scores (SPO's
 * margin {@code m = rewardScale (scoreChosen - scoreRejected)}), explicit margins, and token
 * counts (required when the config is length-normalised: the loss then sees sum / count and
 * the returned gradient is already divided by the count, so it is the per-token upstream
 * gradient of every completion token).
 */
public final class PreferenceLoss {
    private final PreferenceLossConfig config;

    public PreferenceLoss(PreferenceLossConfig config) {
        if (config == null) {
            throw new IllegalArgumentException("config is null");
        }
        this.config = config;
    }

    public PreferenceLossConfig config() {
        return config;
    }

    /**
     * One batch of pairs. Only the four log-prob tensors are required.
     *
     * @param scoreChosen    nullable, with scoreRejected: SPO's target from reward scores
     * @param margins        nullable: SPO's target margins directly (ignored when scores are given)
     * @param chosenTokens   nullable: completion token counts, needed when length-normalised
     */
    public record Inputs(Tensor policyChosen, Tensor policyRejected, Tensor refChosen, Tensor refRejected,
                         Tensor scoreChosen, Tensor scoreRejected, Tensor margins,
                         Tensor chosenTokens, Tensor rejectedTokens) {
        public static Inputs of(Tensor policyChosen, Tensor policyRejected, Tensor refChosen, Tensor refRejected) {
            return new Inputs(policyChosen, policyRejected, refChosen, refRejected, null, null, null, null, null);
        }

        public Inputs withScores(Tensor chosen, Tensor rejected) {
            return new Inputs(policyChosen, policyRejected, refChosen, refRejected, chosen, rejected, margins,
                    chosenTokens, rejectedTokens);
        }

        public Inputs withMargins(Tensor m) {
            return new Inputs(policyChosen, policyRejected, refChosen, refRejected, scoreChosen, scoreRejected, m,
                    chosenTokens, rejectedTokens);
        }

        public Inputs withTokenCounts(Tensor chosen, Tensor rejected) {
            return new Inputs(policyChosen, policyRejected, refChosen, refRejected, scoreChosen, scoreRejected,
                    margins, chosen, rejected);
        }
    }

    /**
     * @param loss          the mean loss
     * @param perPairLoss   fp32 [B]
     * @param gradChosen    dLoss/d(summed policy log-prob of the chosen completion), fp32 [B]
     * @param gradRejected  the same for the rejected completion
     */
    public record Result(double loss, Tensor perPairLoss, Tensor gradChosen, Tensor gradRejected,
                         PreferenceMetrics metrics) {}

    public Result compute(Tensor policyChosen, Tensor policyRejected, Tensor refChosen, Tensor refRejected) {
        return compute(Inputs.of(policyChosen, policyRejected, refChosen, refRejected));
    }

    public Result compute(Inputs in) {
        if (in == null) {
            throw new IllegalArgumentException("inputs are null");
        }
        String[] names = {"policyChosen", "policyRejected", "refChosen", "refRejected"};
        Tensor[] logps = {in.policyChosen(), in.policyRejected(), in.refChosen(), in.refRejected()};
        for (int i = 0; i < 4; i++) {
            TensorChecks.defined(logps[i], names[i]);
        }
        long pairs = logps[0].dim() == 1 ? logps[0].size(0) : -1;
        if (pairs < 1) {
            throw new IllegalArgumentException("policyChosen has shape "
                    + java.util.Arrays.toString(TensorChecks.shape(logps[0])) + " (expected [B] with B >= 1)");
        }
        for (int i = 0; i < 4; i++) {
            TensorChecks.dtype(logps[i], names[i], ScalarType.Float);
            TensorChecks.vector(logps[i], names[i], pairs);
        }
        if ((in.scoreChosen() == null) != (in.scoreRejected() == null)) {
            throw new IllegalArgumentException("scoreChosen and scoreRejected must be given together");
        }
        if ((in.chosenTokens() == null) != (in.rejectedTokens() == null)) {
            throw new IllegalArgumentException("chosenTokens and rejectedTokens must be given together");
        }
        if (config.lengthNormalised() && in.chosenTokens() == null) {
            throw new IllegalArgumentException("the " + config.type().id()
                    + " loss is length-normalised but no token counts were given (withTokenCounts)");
        }
        TensorChecks.Placement where = TensorChecks.sameDevice(
                new String[] {"policyChosen", "policyRejected", "refChosen", "refRejected", "scoreChosen",
                        "scoreRejected", "margins", "chosenTokens", "rejectedTokens"},
                in.policyChosen(), in.policyRejected(), in.refChosen(), in.refRejected(), in.scoreChosen(),
                in.scoreRejected(), in.margins(), in.chosenTokens(), in.rejectedTokens());

        Tensor margins = margins(in, pairs);
        Tensor pc = in.policyChosen(), pr = in.policyRejected(), rc = in.refChosen(), rr = in.refRejected();
        Tensor nc = null, nr = null;
        if (config.lengthNormalised()) {
            nc = counts(in.chosenTokens(), "chosenTokens", pairs);
            nr = counts(in.rejectedTokens(), "rejectedTokens", pairs);
            pc = pc.div(nc);
            pr = pr.div(nr);
            rc = rc.div(nc);
            rr = rr.div(nr);
        }
        TensorOptions f32 = new TensorOptions(ScalarType.Float).device(new DeviceOptional(pc.device()));
        Tensor loss = torch.empty(new long[] {pairs}, f32, null);
        Tensor gc = torch.empty(new long[] {pairs}, f32, null);
        Tensor gr = torch.empty(new long[] {pairs}, f32, null);
        Tensor stats = torch.empty(new long[] {Native.STAT_COUNT}, f32, null);
        FloatPointer m = margins == null ? null : margins.data_ptr_float();
        try (Native.LossParams p = new Native.LossParams()) {
            p.type(config.type().ordinal()).beta((float) config.beta())
                    .label_smoothing((float) config.labelSmoothing()).margin((float) config.margin());
            int status;
            if (where == TensorChecks.Placement.CUDA) {
                status = Native.spo4j_preference_loss_cuda(p, pairs, pc.data_ptr_float(), pr.data_ptr_float(),
                        rc.data_ptr_float(), rr.data_ptr_float(), m, loss.data_ptr_float(), gc.data_ptr_float(),
                        gr.data_ptr_float(), stats.data_ptr_float(), CudaKernels.currentStream(pc));
            } else {
                status = Native.spo4j_preference_loss_cpu(p, pairs, pc.data_ptr_float(), pr.data_ptr_float(),
                        rc.data_ptr_float(), rr.data_ptr_float(), m, loss.data_ptr_float(), gc.data_ptr_float(),
                        gr.data_ptr_float(), stats.data_ptr_float());
            }
            Native.check(status, config.type().id() + " loss");
        }
        if (nc != null) {
            gc = gc.div(nc);
            gr = gr.div(nr);
        }
        float[] s = new float[Native.STAT_COUNT];
        stats.cpu().data_ptr_float().get(s);
        double logpsChosen = s[Native.STAT_LOGP_CHOSEN], logpsRejected = s[Native.STAT_LOGP_REJECTED];
        if (nc != null) {  // the metric is the summed log-prob whatever the loss sees
            logpsChosen = in.policyChosen().mean().item_double();
            logpsRejected = in.policyRejected().mean().item_double();
        }
        PreferenceMetrics metrics = new PreferenceMetrics(s[Native.STAT_LOSS], s[Native.STAT_REWARD_CHOSEN],
                s[Native.STAT_REWARD_REJECTED], s[Native.STAT_REWARD_MARGIN], s[Native.STAT_ACCURACY],
                logpsChosen, logpsRejected);
        return new Result(s[Native.STAT_LOSS], loss, gc, gr, metrics);
    }

    private Tensor margins(Inputs in, long pairs) {
        if (in.scoreChosen() != null) {
            Tensor sc = floatVector(in.scoreChosen(), "scoreChosen", pairs);
            Tensor sr = floatVector(in.scoreRejected(), "scoreRejected", pairs);
            return sc.sub(sr).mul(new org.bytedeco.pytorch.Scalar(config.rewardScale())).contiguous();
        }
        if (in.margins() != null) {
            return floatVector(in.margins(), "margins", pairs);
        }
        return null;
    }

    private static Tensor floatVector(Tensor t, String name, long pairs) {
        TensorChecks.dtype(t, name, ScalarType.Float);
        TensorChecks.vector(t, name, pairs);
        return t;
    }

    private static Tensor counts(Tensor t, String name, long pairs) {
        if (t.dim() != 1 || t.size(0) != pairs) {
            throw new IllegalArgumentException(name + " has shape " + java.util.Arrays.toString(TensorChecks.shape(t))
                    + " (expected [" + pairs + "])");
        }
        Tensor f = t.to(ScalarType.Float);
        if (f.min().item_double() < 1) {
            throw new IllegalArgumentException(name + " has a count < 1 (min " + f.min().item_double()
                    + "; every completion needs at least one token)");
        }
        return f;
    }
}
