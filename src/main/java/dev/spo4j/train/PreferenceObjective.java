package dev.spo4j.train;

import dev.spo4j.kernels.TensorChecks;
import dev.spo4j.kernels.TokenLogProbs;
import dev.spo4j.loss.PreferenceLoss;
import dev.spo4j.loss.PreferenceLossConfig;
import dev.spo4j.loss.PreferenceMetrics;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;
import org.bytedeco.pytorch.BoolOptional;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorArrayRefOptional;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * The preference objective for trainers that own their model: from the policy logits of a
 * batch of pairs it computes the loss, TRL's metrics and dL/dlogits, so that the caller's
 * next line is {@link Result#backward()} (or {@code logits.backward(result.gradLogits())}).
 *
 * <p>Layout: logits {@code [2B, T, V]} (or {@code [2B*T, V]}), rows 0..B-1 the chosen
 * sequences and B..2B-1 the rejected ones; targets {@code [2B, T]} int64 holding the next
 * token for completion positions and -100 elsewhere (prompt, padding). log pi(y) is the sum
 * of the completion tokens' log-probs (or their mean when the loss is length-normalised).
 *
 * <p>{@link LossImpl#FUSED}: the fused kernel reads the logits once (the logits/chosen and
 * logits/rejected metrics read them once more, a row mean), the loss kernel works on
 * [B] values, and the backward overwrites the logits with their gradient: nothing of size
 * rows x V is allocated. This is valid because a Linear lm_head saves its input and weight,
 * not its output; a model that post-processes logits with an op that saves its output (a
 * soft-cap, a scale by a learnt tensor) must use {@link LossImpl#LIBTORCH}.
 * {@link LossImpl#LIBTORCH}: log_softmax, gather and the loss in LibTorch ops with autograd.
 */
public final class PreferenceObjective {
    public static final long IGNORE_INDEX = TokenLogProbs.DEFAULT_IGNORE_INDEX;

    private final PreferenceLoss loss;
    private final LossImpl impl;
    private final double sftWeight;
    private final int threads;

    /**
     * @param sftWeight alpha of the optional SFT term alpha * NLL(y_c) (mean token NLL of the
     *                  chosen completion; TRL's rpo_alpha); 0 disables it
     * @param threads   CPU kernel threads (0 = LibTorch's intra-op thread count)
     */
    public PreferenceObjective(PreferenceLossConfig config, LossImpl impl, double sftWeight, int threads) {
        if (impl == null) {
            throw new IllegalArgumentException("loss implementation is null (expected fused or libtorch)");
        }
        if (!(sftWeight >= 0 && Double.isFinite(sftWeight))) {
            throw new IllegalArgumentException("sft weight = " + sftWeight + " (expected a finite value >= 0)");
        }
        this.loss = new PreferenceLoss(config);
        this.impl = impl;
        this.sftWeight = sftWeight;
        this.threads = threads;
    }

    public PreferenceObjective(PreferenceLossConfig config) {
        this(config, LossImpl.FUSED, 0, 0);
    }

    public PreferenceLossConfig config() {
        return loss.config();
    }

    public LossImpl impl() {
        return impl;
    }

    /**
     * One batch. Reference log-probs are summed over the completion tokens, like the policy's.
     * Scores (SPO's target margin from rewards) or explicit margins are optional.
     */
    public record Inputs(Tensor logits, Tensor targets, Tensor refChosen, Tensor refRejected,
                         Tensor scoreChosen, Tensor scoreRejected, Tensor margins) {
        public static Inputs of(Tensor logits, Tensor targets, Tensor refChosen, Tensor refRejected) {
            return new Inputs(logits, targets, refChosen, refRejected, null, null, null);
        }

        public Inputs withScores(Tensor chosen, Tensor rejected) {
            return new Inputs(logits, targets, refChosen, refRejected, chosen, rejected, margins);
        }

        public Inputs withMargins(Tensor m) {
            return new Inputs(logits, targets, refChosen, refRejected, scoreChosen, scoreRejected, m);
        }
    }

    /** The outcome of {@link #compute}; {@link #backward()} propagates into the model. */
    public static final class Result {
        private final double loss;
        private final PreferenceMetrics metrics;
        private final Map<String, Double> extra;
        private final Tensor logits, gradLogits, lossTensor;
        private final Tensor policyChosen, policyRejected;
        private boolean done;

        Result(double loss, PreferenceMetrics metrics, Map<String, Double> extra, Tensor logits, Tensor gradLogits,
               Tensor lossTensor, Tensor policyChosen, Tensor policyRejected) {
            this.loss = loss;
            this.metrics = metrics;
            this.extra = extra;
            this.logits = logits;
            this.gradLogits = gradLogits;
            this.lossTensor = lossTensor;
            this.policyChosen = policyChosen;
            this.policyRejected = policyRejected;
        }

        /** The total loss (preference loss + the SFT term). */
        public double loss() {
            return loss;
        }

        public PreferenceMetrics metrics() {
            return metrics;
        }

        /** TRL's names: the loss metrics plus logits/chosen, logits/rejected, entropy, nll (when SFT is on). */
        public Map<String, Double> metricsMap() {
            Map<String, Double> m = new LinkedHashMap<>(metrics.asMap());
            m.put("loss", loss);
            m.putAll(extra);
            return m;
        }

        /** dL/dlogits, sharing the logits' storage (fused), or null (libtorch: use backward()). */
        public Tensor gradLogits() {
            return gradLogits;
        }

        /** Summed policy log-probs [B] of the chosen / rejected completions (detached). */
        public Tensor policyChosen() {
            return policyChosen;
        }

        public Tensor policyRejected() {
            return policyRejected;
        }

        /** Back-propagates the loss into the model's parameters (once). */
        public void backward() {
            if (gradLogits == null && lossTensor == null) {
                throw new IllegalStateException("this result came from evaluate(): it has no gradient");
            }
            if (done) {
                throw new IllegalStateException("backward() was already called for this result");
            }
            done = true;
            if (gradLogits != null) {
                logits.backward(gradLogits, new BoolOptional(), false, new TensorArrayRefOptional());
            } else {
                lossTensor.backward();
            }
        }
    }

    /** Loss, metrics and dL/dlogits (fused: written over the logits). */
    public Result compute(Inputs in) {
        return compute(in, true);
    }

    /** Loss and metrics only (evaluation): no gradient is computed and the logits are left as they are. */
    public Result evaluate(Inputs in) {
        return compute(in, false);
    }

    private Result compute(Inputs in, boolean withGrad) {
        Tensor logits = TensorChecks.defined(in.logits(), "logits");
        Tensor targets = TensorChecks.defined(in.targets(), "targets");
        if (targets.dim() != 2 || targets.size(0) % 2 != 0 || targets.size(0) == 0) {
            throw new IllegalArgumentException("targets has shape " + Arrays.toString(TensorChecks.shape(targets))
                    + " (expected [2B, T]: B chosen rows, then B rejected rows)");
        }
        long rows2 = targets.size(0), t = targets.size(1), pairs = rows2 / 2;
        long vocab = logits.size(logits.dim() - 1);
        boolean shapeOk = logits.dim() == 3 ? logits.size(0) == rows2 && logits.size(1) == t
                : logits.dim() == 2 && logits.size(0) == rows2 * t;
        if (!shapeOk) {
            throw new IllegalArgumentException("logits has shape " + Arrays.toString(TensorChecks.shape(logits))
                    + " but targets " + Arrays.toString(TensorChecks.shape(targets))
                    + " (expected [2B, T, V] or [2B*T, V] matching the targets)");
        }
        if (!logits.is_contiguous()) {
            throw new IllegalArgumentException("logits are not contiguous (expected the model's output layout)");
        }
        Tensor flatTargets = targets.contiguous().view(-1);
        Tensor mask = targets.ne(new Scalar(IGNORE_INDEX)).to(ScalarType.Float);  // [2B, T]
        Tensor counts = mask.sum(new long[] {1}, false, null);                     // [2B]
        if (counts.min().item_double() < 1) {
            throw new IllegalArgumentException("a sequence has no completion token (every target is "
                    + IGNORE_INDEX + "): each row needs at least one");
        }
        Tensor countChosen = counts.narrow(0, 0, pairs).contiguous();
        Tensor countRejected = counts.narrow(0, pairs, pairs).contiguous();
        return impl == LossImpl.FUSED
                ? fused(in, logits, flatTargets, mask, counts, countChosen, countRejected, rows2, t, vocab, pairs, withGrad)
                : composite(in, logits, flatTargets, mask, counts, countChosen, countRejected, rows2, t, vocab, pairs);
    }

    private Result fused(Inputs in, Tensor logits, Tensor flatTargets, Tensor mask, Tensor counts,
                         Tensor countChosen, Tensor countRejected, long rows2, long t, long vocab, long pairs,
                         boolean withGrad) {
        Tensor raw = logits.detach().view(-1, vocab);  // same storage, no autograd
        TokenLogProbs.Result tok = TokenLogProbs.forward(raw, flatTargets, IGNORE_INDEX, true, threads());
        Tensor seq = tok.logp().view(rows2, t).sum(new long[] {1}, false, null);  // [2B] summed log-probs
        Tensor pc = seq.narrow(0, 0, pairs).contiguous(), pr = seq.narrow(0, pairs, pairs).contiguous();
        Map<String, Double> extra = logitAndEntropyMetrics(raw, tok.entropy(), mask, counts, rows2, t, pairs);
        PreferenceLoss.Result r = loss.compute(preferenceInputs(in, pc, pr, countChosen, countRejected));
        Tensor gc = r.gradChosen(), gr = r.gradRejected();
        double total = r.loss();
        if (sftWeight > 0) {
            // alpha * mean_i(-logp_c,i / n_c,i): d/d(logp_c,i) = -alpha / (B n_c,i)
            double nll = pc.div(countChosen).neg().mean().item_double();
            total += sftWeight * nll;
            extra.put("nll", nll);
            gc = gc.sub(countChosen.reciprocal().mul(new Scalar(sftWeight / pairs)));
        }
        if (!withGrad) {
            return new Result(total, r.metrics(), extra, logits, null, null, pc, pr);
        }
        Tensor perRow = torch.cat(new org.bytedeco.pytorch.TensorVector(gc, gr), 0);  // [2B]
        Tensor gradLogp = perRow.unsqueeze(1).expand(rows2, t).contiguous().view(-1);
        Tensor grad = TokenLogProbs.backward(raw, flatTargets, tok.lse(), gradLogp, IGNORE_INDEX, true, threads());
        return new Result(total, r.metrics(), extra, logits, grad.view(TensorChecks.shape(logits)), null, pc, pr);
    }

    private Result composite(Inputs in, Tensor logits, Tensor flatTargets, Tensor mask, Tensor counts,
                             Tensor countChosen, Tensor countRejected, long rows2, long t, long vocab, long pairs) {
        Tensor z = logits.view(-1, vocab);
        Tensor ls = torch.log_softmax(z, 1);
        Tensor safe = flatTargets.clamp_min(new Scalar(0L));
        Tensor tokLogp = torch.gather(ls, 1, safe.unsqueeze(1)).squeeze(1).view(rows2, t).mul(mask);
        Tensor seq = tokLogp.sum(new long[] {1}, false, null);
        Tensor pc = seq.narrow(0, 0, pairs), pr = seq.narrow(0, pairs, pairs);
        Map<String, Double> extra;
        try (NoGradGuard ng = new NoGradGuard()) {
            Tensor zd = z.detach();
            Tensor p = torch.softmax(zd, 1, new org.bytedeco.pytorch.ScalarTypeOptional());
            Tensor entropy = torch.logsumexp(zd, new long[] {1}, false).sub(p.mul(zd).sum(new long[] {1}, false, null));
            extra = logitAndEntropyMetrics(zd, entropy, mask, counts, rows2, t, pairs);
        }
        // metrics from the native loss on detached values (identical definitions)
        PreferenceLoss.Result metricsOnly = loss.compute(preferenceInputs(in, pc.detach().contiguous(),
                pr.detach().contiguous(), countChosen, countRejected));
        PreferenceLossConfig c = loss.config();
        Tensor pcl = pc, prl = pr, rcl = in.refChosen(), rrl = in.refRejected();
        if (c.lengthNormalised()) {
            pcl = pc.div(countChosen);
            prl = pr.div(countRejected);
            rcl = rcl.div(countChosen);
            rrl = rrl.div(countRejected);
        }
        Tensor margins = in.scoreChosen() != null
                ? in.scoreChosen().sub(in.scoreRejected()).mul(new Scalar(c.rewardScale())) : in.margins();
        Tensor lossTensor = CompositePreferenceLoss.perPair(c, pcl, prl, rcl, rrl, margins).mean();
        if (sftWeight > 0) {
            Tensor nll = pc.div(countChosen).neg().mean();
            extra.put("nll", nll.item_double());
            lossTensor = lossTensor.add(nll.mul(new Scalar(sftWeight)));
        }
        return new Result(lossTensor.item_double(), metricsOnly.metrics(), extra, logits, null, lossTensor,
                pc.detach(), pr.detach());
    }

    private PreferenceLoss.Inputs preferenceInputs(Inputs in, Tensor pc, Tensor pr, Tensor nc, Tensor nr) {
        TensorChecks.defined(in.refChosen(), "refChosen");
        TensorChecks.defined(in.refRejected(), "refRejected");
        PreferenceLoss.Inputs li = PreferenceLoss.Inputs.of(pc, pr, in.refChosen(), in.refRejected());
        if (in.scoreChosen() != null || in.scoreRejected() != null) {
            li = li.withScores(in.scoreChosen(), in.scoreRejected());
        }
        if (in.margins() != null) {
            li = li.withMargins(in.margins());
        }
        return loss.config().lengthNormalised() ? li.withTokenCounts(nc, nr) : li;
    }

    /** logits/chosen, logits/rejected (mean logit over completion tokens) and entropy (mean over them). */
    private static Map<String, Double> logitAndEntropyMetrics(Tensor z2d, Tensor entropy, Tensor mask, Tensor counts,
                                                              long rows2, long t, long pairs) {
        Tensor rowMean = z2d.mean(new long[] {1}, false, new org.bytedeco.pytorch.ScalarTypeOptional(ScalarType.Float))
                .view(rows2, t).mul(mask).sum(new long[] {1}, false, null);  // [2B] sums of per-token means
        double tokensChosen = counts.narrow(0, 0, pairs).sum().item_double();
        double tokensRejected = counts.narrow(0, pairs, pairs).sum().item_double();
        Map<String, Double> m = new LinkedHashMap<>();
        m.put("logits/chosen", rowMean.narrow(0, 0, pairs).sum().item_double() / tokensChosen);
        m.put("logits/rejected", rowMean.narrow(0, pairs, pairs).sum().item_double() / tokensRejected);
        m.put("entropy", entropy.view(rows2, t).mul(mask).sum().item_double() / (tokensChosen + tokensRejected));
        return m;
    }

    private int threads() {
        return threads > 0 ? threads : torch.get_num_threads();
    }
}
