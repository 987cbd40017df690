package dev.spo4j.loss;

import dev.spo4j.kernels.PreferenceLossKernel;
import dev.spo4j.kernels.TensorChecks;
import org.bytedeco.pytorch.BoolOptional;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.T_TensorTensor_T;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;

/**
 * A preference loss (SPO, DPO/cDPO, IPO, hinge, TRL's other loss types, SimPO, CPO, or a
 * weighted sum of them; formulas in {@code src/site/markdown/LOSSES.md}) over B pairs, computed
 * by the native kernel ({@link PreferenceLossKernel}): the mean loss,
 * its gradient with respect to the policy's summed log-probs of the chosen and rejected
 * completions, and TRL-named metrics.
 *
 * <p>Inputs are fp32 {@code [B]} tensors on one device: the policy's and the reference's
 * log-probs of each completion, SUMMED over its tokens. Optional per pair: scores (SPO's
 * margin {@code m = rewardScale (scoreChosen - scoreRejected)}), explicit margins, and token
 * counts (required when the config is length-normalised: the loss then sees sum / count and
 * the returned gradient is already divided by the count, so it is the per-token upstream
 * gradient of every completion token). Normalisation and margins are defined once, in
 * {@link PairTerms}, for this class and the LibTorch twin alike. Reference-free losses (simpo,
 * cpo) ignore the reference log-probs, which may then be null.
 */
public final class PreferenceLoss {
    private final PreferenceLossConfig config;
    private double bcoMean, bcoCount, lastBcoDelta;

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

    /** The loss of one batch of pairs (bco-pair's running mean takes the batch in). */
    public Result compute(Inputs in) {
        return compute(in, true);
    }

    /**
     * The loss of one batch of pairs; every argument is checked before the kernel runs.
     * {@code updateState} false (evaluation) leaves bco-pair's running mean as it was.
     */
    public Result compute(Inputs in, boolean updateState) {
        return run(in, updateState, true, true);
    }

    /**
     * The per-pair gradients of the mean loss alone (those of {@link #compute(Inputs, boolean)}),
     * for a caller that takes the loss and metrics elsewhere: no batch means are computed and,
     * for losses that do not couple the pairs (not bco-pair, aot, aot-pair), nothing is read
     * back to the host but, with length normalisation, the token counts' minimum (checked >= 1).
     * The result's loss is NaN, its metrics null. bco-pair's running mean is read as
     * {@code updateState} false leaves it.
     */
    public Result gradients(Inputs in) {
        return run(in, false, false, true);
    }

    /**
     * {@link #gradients} for a caller that has checked every token count >= 1 for the whole
     * batch ({@link PreferenceObjective}, once per batch, before its pair pass): the counts'
     * values are not read back again for each chunk of pairs.
     */
    Result gradientsCountsChecked(Inputs in) {
        return run(in, false, false, false);
    }

    private Result run(Inputs in, boolean updateState, boolean withMetrics, boolean checkCounts) {
        if (in == null) {
            throw new IllegalArgumentException("inputs are null");
        }
        if (!config.needsReference() && in.policyChosen() != null && in.policyRejected() != null) {
            // simpo, cpo read no reference: null reference log-probs are fine (PairTerms uses 0)
            Tensor z = torch.zeros_like(in.policyChosen());
            in = new Inputs(in.policyChosen(), in.policyRejected(), in.refChosen() == null ? z : in.refChosen(),
                    in.refRejected() == null ? torch.zeros_like(in.policyRejected()) : in.refRejected(),
                    in.scoreChosen(), in.scoreRejected(), in.margins(), in.chosenTokens(), in.rejectedTokens());
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
                in.rejectedTokens(), checkCounts);
        double delta = bcoDelta(t, updateState);
        // each term's kernel call; the metrics (all but the loss) come from a call in pair order
        double lossMean = 0;
        Tensor perPair = null, gc = null, gr = null;
        float[] s = null;
        for (PreferenceLossConfig.WeightedLoss w : config.terms()) {
            Part part = part(config.single(w.type()), t, delta, withMetrics);
            double wt = w.weight();
            lossMean += withMetrics ? wt * part.stats[PreferenceLossKernel.STAT_LOSS] : 0;
            perPair = add(perPair, part.perPair, wt);
            gc = add(gc, part.gradChosen, wt);
            gr = add(gr, part.gradRejected, wt);
            if (s == null && !w.type().sortsBatch()) {
                s = part.stats;
            }
        }
        if (!withMetrics) {
            return new Result(Double.NaN, perPair, t.chosenGradient(gc), t.rejectedGradient(gr), null);
        }
        if (s == null) {  // only sorting losses: the pair-order metrics from one dpo call
            s = PreferenceLossKernel.compute(kernelParams(config.single(LossType.DPO), 0.0), t.policyChosen(),
                    t.policyRejected(), t.refChosen(), t.refRejected(), t.margins()).stats();
        }
        double logpsChosen = s[PreferenceLossKernel.STAT_LOGP_CHOSEN];
        double logpsRejected = s[PreferenceLossKernel.STAT_LOGP_REJECTED];
        if (t.normalised()) {  // the metric is the summed log-prob whatever the loss sees
            logpsChosen = in.policyChosen().mean().item_double();
            logpsRejected = in.policyRejected().mean().item_double();
        }
        PreferenceMetrics metrics = new PreferenceMetrics(lossMean,
                s[PreferenceLossKernel.STAT_REWARD_CHOSEN], s[PreferenceLossKernel.STAT_REWARD_REJECTED],
                s[PreferenceLossKernel.STAT_REWARD_MARGIN], s[PreferenceLossKernel.STAT_ACCURACY],
                logpsChosen, logpsRejected);
        return new Result(lossMean, perPair, t.chosenGradient(gc), t.rejectedGradient(gr), metrics);
    }

    /**
     * The same mean loss in LibTorch ops ({@code CompositePreferenceLoss}, the twin that
     * {@code --loss-impl libtorch} trains with), graph-carrying where the policy inputs carry
     * one: a baseline for benchmarks and tests. Normalisation and margins as in {@link #compute};
     * bco-pair reads the running mean with this batch folded in, without changing the state.
     */
    public Tensor compositeMean(Inputs in) {
        long pairs = in.policyChosen().size(0);
        PairTerms t = PairTerms.of(config, pairs, in.policyChosen(), in.policyRejected(), in.refChosen(),
                in.refRejected(), in.scoreChosen(), in.scoreRejected(), in.margins(), in.chosenTokens(),
                in.rejectedTokens());
        double delta;
        try (NoGradGuard ng = new NoGradGuard()) {
            delta = bcoDelta(t, false);
        }
        return CompositePreferenceLoss.perPair(config, t, delta).mean();
    }

    /** One term's kernel result: per-value loss, gradients in pair order, the kernel's stats. */
    private record Part(Tensor perPair, Tensor gradChosen, Tensor gradRejected, float[] stats) {}

    /**
     * One loss over the terms. aot and aot-pair sort across the batch here, run the kernel's
     * dpo formula on the sorted values and route each sorted position's gradient back to its
     * pair (a scatter by the sort's indices): the derivative of a sort is that permutation.
     */
    private static Part part(PreferenceLossConfig c, PairTerms t, double delta, boolean withStats) {
        PreferenceLossKernel.Params p = kernelParams(c, delta);
        if (!c.type().sortsBatch()) {
            PreferenceLossKernel.Result r = PreferenceLossKernel.compute(p, t.policyChosen(), t.policyRejected(),
                    t.refChosen(), t.refRejected(), t.margins(), withStats);
            return new Part(r.perPairLoss(), r.gradChosen(), r.gradRejected(), r.stats());
        }
        Tensor a, b;  // the two quantities sorted separately: their sorted difference is what dpo sees
        if (c.type() == LossType.AOT) {
            a = t.policyChosen().sub(t.policyRejected());
            b = t.refChosen().sub(t.refRejected());
        } else {
            a = t.policyChosen().sub(t.refChosen());
            b = t.policyRejected().sub(t.refRejected());
        }
        T_TensorTensor_T sa = torch.sort(a, new BoolOptional(true), 0, false);
        T_TensorTensor_T sb = torch.sort(b, new BoolOptional(true), 0, false);
        Tensor av = sa.get0().contiguous(), bv = sb.get0().contiguous(), zero = torch.zeros_like(av);
        PreferenceLossKernel.Result r;
        Tensor gc, gr;
        if (c.type() == LossType.AOT) {  // h' = a' - b': chosen = a', reference chosen = b'
            r = PreferenceLossKernel.compute(p, av, zero, bv, zero, null, withStats);
            gc = torch.zeros_like(av).scatter(0, sa.get1(), r.gradChosen());
            gr = gc.neg();
        } else {                         // h' = a' - b': chosen = a', rejected = b'
            r = PreferenceLossKernel.compute(p, av, bv, zero, zero, null, withStats);
            gc = torch.zeros_like(av).scatter(0, sa.get1(), r.gradChosen());
            gr = torch.zeros_like(bv).scatter(0, sb.get1(), r.gradRejected());
        }
        return new Part(r.perPairLoss(), gc.contiguous(), gr.contiguous(), r.stats());
    }

    private static Tensor add(Tensor sum, Tensor v, double w) {
        Tensor x = w == 1.0 ? v : v.mul(new Scalar(w));
        return sum == null ? x : sum.add(x);
    }

    /**
     * bco-pair's reward shift: the running mean over batches of each batch's mean reward
     * (beta dc and beta dr of every pair), this batch included, as TRL's RunningMoments keeps
     * it; 0 when no term is bco-pair. {@code update} false (evaluation) reads the running mean
     * with this batch folded in but leaves the state as it was.
     */
    private double bcoDelta(PairTerms t, boolean update) {
        boolean bco = false;
        for (PreferenceLossConfig.WeightedLoss w : config.terms()) {
            bco |= w.type() == LossType.BCO_PAIR;
        }
        if (!bco) {
            return 0.0;
        }
        double rewards = config.beta() * 0.5 * (t.policyChosen().sub(t.refChosen()).mean().item_double()
                + t.policyRejected().sub(t.refRejected()).mean().item_double());
        double count = bcoCount + 1, mean = bcoMean + (rewards - bcoMean) / count;
        if (update) {
            bcoCount = count;
            bcoMean = mean;
        }
        lastBcoDelta = mean;
        return mean;
    }

    /**
     * bco-pair's running state {mean reward, batch count} (for checkpoints; {0, 0} before the
     * first batch), or null when no term of the loss is bco-pair.
     */
    public double[] bcoState() {
        for (PreferenceLossConfig.WeightedLoss w : config.terms()) {
            if (w.type() == LossType.BCO_PAIR) {
                return new double[] {bcoMean, bcoCount};
            }
        }
        return null;
    }

    /** Restores {@link #bcoState()} (from a checkpoint): a finite mean and a count &gt;= 0. */
    public void restoreBcoState(double mean, double count) {
        if (!Double.isFinite(mean) || !(count >= 0 && Double.isFinite(count))) {
            throw new IllegalArgumentException("bco-pair state mean = " + mean + ", count = " + count
                    + " (expected a finite mean and a finite count >= 0)");
        }
        this.bcoMean = mean;
        this.bcoCount = count;
    }

    /** The reward shift the last batch used (bco-pair; 0 before any). */
    double lastBcoDelta() {
        return lastBcoDelta;
    }

    static PreferenceLossKernel.Params kernelParams(PreferenceLossConfig c, double bcoDelta) {
        return new PreferenceLossKernel.Params(c.type().id(), c.type().code(), c.beta(), c.labelSmoothing(),
                c.margin(), c.marginFloor(), c.discopopTau(), c.simpoGamma(), bcoDelta);
    }
}
