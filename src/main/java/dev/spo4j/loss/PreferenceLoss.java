package dev.spo4j.loss;

import dev.spo4j.kernels.PreferenceLossKernel;
import dev.spo4j.kernels.TensorChecks;
import org.bytedeco.pytorch.Tensor;

/**
 * A preference loss (SPO, DPO/cDPO, IPO or hinge; formulas in {@code src/site/markdown/LOSSES.md})
 * over B pairs, computed by the native kernel ({@link PreferenceLossKernel}): the mean loss,
 * its gradient with respect to the policy's summed log-probs of the chosen and rejected
 * completions, and TRL-named metrics.
 *
 * <p>Inputs are fp32 {@code [B]} tensors on one device: the policy's and the reference's
 * log-probs of each completion, SUMMED over its tokens. Optional per pair: scores (SPO's
 * margin {@code m = rewardScale (scoreChosen - scoreRejected)}), explicit margins, and token
 * counts (required when the config is length-normalised: the loss then sees sum / count and
 * the returned gradient is already divided by the count, so it is the per-token upstream
 * gradient of every completion token). Normalisation and margins are defined once, in
 * {@link PairTerms}, for this class and the LibTorch twin alike.
 */
public final class PreferenceLoss {
    private final PreferenceLossConfig config;

    /** A loss with these settings (not null). */
    public PreferenceLoss(PreferenceLossConfig config) {
        if (config == null) {
            throw new IllegalArgumentException("config is null");
        }
        this.config = config;
    }

    /** The settings. */
    public PreferenceLossConfig config() {
        return config;
    }

    /**
     * One batch of pairs. Only the four log-prob tensors are required.
     *
     * @param policyChosen   summed policy log-probs of the chosen completions, fp32 [B]
     * @param policyRejected the same for the rejected completions
     * @param refChosen      summed reference log-probs of the chosen completions
     * @param refRejected    the same for the rejected completions
     * @param scoreChosen    nullable, with scoreRejected: SPO's target from reward scores
     * @param scoreRejected  nullable, with scoreChosen
     * @param margins        nullable: SPO's target margins directly (ignored when scores are given)
     * @param chosenTokens   nullable: completion token counts, needed when length-normalised
     * @param rejectedTokens nullable, with chosenTokens
     */
    public record Inputs(Tensor policyChosen, Tensor policyRejected, Tensor refChosen, Tensor refRejected,
                         Tensor scoreChosen, Tensor scoreRejected, Tensor margins,
                         Tensor chosenTokens, Tensor rejectedTokens) {
        /** The four required log-prob tensors. */
        public static Inputs of(Tensor policyChosen, Tensor policyRejected, Tensor refChosen, Tensor refRejected) {
            return new Inputs(policyChosen, policyRejected, refChosen, refRejected, null, null, null, null, null);
        }

        /** With reward scores: SPO's margin m = rewardScale (chosen - rejected). */
        public Inputs withScores(Tensor chosen, Tensor rejected) {
            return new Inputs(policyChosen, policyRejected, refChosen, refRejected, chosen, rejected, margins,
                    chosenTokens, rejectedTokens);
        }

        /** With SPO's target margins given directly. */
        public Inputs withMargins(Tensor m) {
            return new Inputs(policyChosen, policyRejected, refChosen, refRejected, scoreChosen, scoreRejected, m,
                    chosenTokens, rejectedTokens);
        }

        /** With the completions' token counts (for a length-normalised loss). */
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
     * @param metrics       TRL-named batch means
     */
    public record Result(double loss, Tensor perPairLoss, Tensor gradChosen, Tensor gradRejected,
                         PreferenceMetrics metrics) {}

    /** The loss of B pairs without scores, margins or token counts. */
    public Result compute(Tensor policyChosen, Tensor policyRejected, Tensor refChosen, Tensor refRejected) {
        return compute(Inputs.of(policyChosen, policyRejected, refChosen, refRejected));
    }

    /** The loss of one batch of pairs; every argument is checked before the kernel runs. */
    public Result compute(Inputs in) {
        if (in == null) {
            throw new IllegalArgumentException("inputs are null");
        }
        long pairs = PreferenceLossKernel.pairs(in.policyChosen(), in.policyRejected(), in.refChosen(),
                in.refRejected());
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
        TensorChecks.sameDevice(
                new String[] {"policyChosen", "policyRejected", "refChosen", "refRejected", "scoreChosen",
                        "scoreRejected", "margins", "chosenTokens", "rejectedTokens"},
                in.policyChosen(), in.policyRejected(), in.refChosen(), in.refRejected(), in.scoreChosen(),
                in.scoreRejected(), in.margins(), in.chosenTokens(), in.rejectedTokens());
        PairTerms t = PairTerms.of(config, pairs, in.policyChosen(), in.policyRejected(), in.refChosen(),
                in.refRejected(), in.scoreChosen(), in.scoreRejected(), in.margins(), in.chosenTokens(),
                in.rejectedTokens());
        PreferenceLossKernel.Result r = PreferenceLossKernel.compute(kernelParams(config), t.policyChosen(),
                t.policyRejected(), t.refChosen(), t.refRejected(), t.margins());
        float[] s = r.stats();
        double logpsChosen = s[PreferenceLossKernel.STAT_LOGP_CHOSEN];
        double logpsRejected = s[PreferenceLossKernel.STAT_LOGP_REJECTED];
        if (t.normalised()) {  // the metric is the summed log-prob whatever the loss sees
            logpsChosen = in.policyChosen().mean().item_double();
            logpsRejected = in.policyRejected().mean().item_double();
        }
        PreferenceMetrics metrics = new PreferenceMetrics(s[PreferenceLossKernel.STAT_LOSS],
                s[PreferenceLossKernel.STAT_REWARD_CHOSEN], s[PreferenceLossKernel.STAT_REWARD_REJECTED],
                s[PreferenceLossKernel.STAT_REWARD_MARGIN], s[PreferenceLossKernel.STAT_ACCURACY],
                logpsChosen, logpsRejected);
        return new Result(s[PreferenceLossKernel.STAT_LOSS], r.perPairLoss(), t.chosenGradient(r.gradChosen()),
                t.rejectedGradient(r.gradRejected()), metrics);
    }

    static PreferenceLossKernel.Params kernelParams(PreferenceLossConfig c) {
        return new PreferenceLossKernel.Params(c.type().id(), c.type().code(), c.beta(), c.labelSmoothing(),
                c.margin(), c.marginFloor());
    }
}
