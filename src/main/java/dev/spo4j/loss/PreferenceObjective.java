package dev.spo4j.loss;

import dev.spo4j.kernels.LmHeadLogProbs;
import dev.spo4j.kernels.TensorChecks;
import dev.spo4j.kernels.Tensors;
import dev.spo4j.kernels.TokenLogProbs;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import org.bytedeco.pytorch.BoolOptional;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.ScalarTypeOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorArrayRefOptional;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * The preference objective for trainers that own their model: from the policy logits of a
 * batch of pairs it computes the loss, TRL's metrics and dL/dlogits, so that the caller's
 * next line is {@link Result#backward()} (or {@code logits.backward(result.gradLogits())}).
 *
 * <p>Layout: logits {@code [2B, T, V]} (or {@code [2B*T, V]}), rows 0..B-1 the chosen
 * sequences and B..2B-1 the rejected ones; targets {@code [2B, T]} int64 holding the next
 * token for completion positions and {@link TokenLogProbs#DEFAULT_IGNORE_INDEX} elsewhere
 * (prompt, padding). log pi(y) is the sum of the completion tokens' log-probs (or their mean
 * when the loss is length-normalised; see {@link PairTerms}).
 *
 * <p>{@link LossImpl#FUSED}: the fused kernel reads the logits once (the logits/chosen and
 * logits/rejected metrics read them once more, a row mean), the loss kernel works on
 * [B] values, and the backward overwrites the logits with their gradient: nothing of size
 * rows x V is allocated. This is valid because a Linear lm_head saves its input and weight,
 * not its output; a model that post-processes logits with an op that saves its output (a
 * soft-cap, a scale by a learnt tensor) must use {@link LossImpl#LIBTORCH}.
 * {@link LossImpl#LIBTORCH}: log_softmax, gather and the loss in LibTorch ops with autograd
 * ({@link CompositePreferenceLoss}).
 *
 * <p>Fused LM head ({@link Inputs#ofHidden}): given the final hidden states and the head
 * weight instead of logits, the fused objective runs {@link LmHeadLogProbs} (at most the chunk
 * budget of logits at a time) in one of two regimes. When the loss is a sum over pairs and
 * one pair's 2T rows of logits fit the budget, a training step takes the single pass over
 * chunks of whole pairs: each chunk's log-probs give its pairs' losses and g, and its
 * backward follows on the same logits (3 head GEMMs, as the materialised path). Otherwise
 * (bco-pair, aot, aot-pair, or a pair larger than the budget) the recompute regime: the
 * forward keeps lse, the pair loss gives g per row, and the backward recomputes each chunk (4
 * GEMMs, memory independent of the sequence length). Either produces dL/dh and dL/dW (none
 * when the head is frozen), which {@link Result#backward()} hands to autograd;
 * {@link #headSinglePass} says which regime a batch takes. The logits/* metrics come from
 * h . mean_v(W_v), entropy from the same chunks. With {@link LossImpl#LIBTORCH} hidden states
 * go through torch.linear first.
 *
 * <p>Metrics come back as {@link MetricSums}: pair means weighted by the pair count, and the
 * token means (logits/chosen, logits/rejected, entropy) weighted by their token counts, so
 * that a trainer adds micro-batches and processes without knowing what a metric means.
 */
public final class PreferenceObjective {
    private static final long IGNORE = TokenLogProbs.DEFAULT_IGNORE_INDEX;

    private final PreferenceLoss loss;
    private final LossImpl impl;
    private final double sftWeight;
    private final int threads;
    private final long headChunkBytes;

    /**
     * @param config    the preference loss
     * @param impl      fused kernels or LibTorch's composite ops
     * @param sftWeight alpha of the optional SFT term alpha * NLL(y_c) (mean token NLL of the
     *                  chosen completion; TRL's rpo_alpha); 0 disables it
     * @param threads   CPU kernel threads (0 = LibTorch's intra-op thread count)
     * @param headChunkBytes the fused LM head's chunk budget (inputs given as hidden states)
     */
    public PreferenceObjective(PreferenceLossConfig config, LossImpl impl, double sftWeight, int threads,
                               long headChunkBytes) {
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
        if (headChunkBytes <= 0) {
            throw new IllegalArgumentException("LM head chunk budget = " + headChunkBytes + " bytes (expected > 0)");
        }
        this.headChunkBytes = headChunkBytes;
    }

    /** With the fused head's default chunk budget ({@link LmHeadLogProbs#DEFAULT_CHUNK_BYTES}). */
    public PreferenceObjective(PreferenceLossConfig config, LossImpl impl, double sftWeight, int threads) {
        this(config, impl, sftWeight, threads, LmHeadLogProbs.DEFAULT_CHUNK_BYTES);
    }

    /** The fused objective without an SFT term, on LibTorch's thread count. */
    public PreferenceObjective(PreferenceLossConfig config) {
        this(config, LossImpl.FUSED, 0, 0);
    }

    /** The preference loss's settings. */
    public PreferenceLossConfig config() {
        return loss.config();
    }

    /** The preference loss (its running state, bco-pair's mean reward, goes into checkpoints). */
    public PreferenceLoss loss() {
        return loss;
    }

    /** How the loss and gradient are computed. */
    public LossImpl impl() {
        return impl;
    }

    /** The names {@link Result#metricSums()} holds, in order; the same for every batch. */
    public List<String> metricNames() {
        List<String> names = new ArrayList<>(PreferenceMetrics.NAMES);
        names.addAll(List.of("logits/chosen", "logits/rejected", "entropy"));
        if (sftWeight > 0) {
            names.add("nll");
        }
        return names;
    }

    /**
     * One batch. Reference log-probs are summed over the completion tokens, like the policy's.
     * Scores (SPO's target margin from rewards) or explicit margins are optional. The policy
     * comes either as logits ({@link #of}) or as final hidden states and the head weight
     * ({@link #ofHidden}: the fused LM head, no logits materialised).
     *
     * @param logits      the policy's logits [2B, T, V] (or [2B*T, V]), with autograd history;
     *                    null when {@code hidden} is given
     * @param targets     [2B, T] int64: next tokens at completion positions, -100 elsewhere
     * @param refChosen   summed reference log-probs of the chosen completions, fp32 [B]
     * @param refRejected the same for the rejected completions
     * @param scoreChosen nullable, with scoreRejected: reward scores (SPO's margins)
     * @param scoreRejected nullable, with scoreChosen
     * @param margins     nullable: SPO's target margins directly
     * @param checkedVocab the vocabulary size the targets were checked against by the caller
     *                    (0: not checked); see {@link #withTargetsChecked(long)}
     * @param hidden      the policy's final hidden states [2B, T, H] (or [2B*T, H]) after the
     *                    final norm, with autograd history; null when {@code logits} is given
     * @param headWeight  the LM head weight [V, H] (the embedding when tied), with {@code hidden}
     */
    public record Inputs(Tensor logits, Tensor targets, Tensor refChosen, Tensor refRejected,
                         Tensor scoreChosen, Tensor scoreRejected, Tensor margins, long checkedVocab,
                         Tensor hidden, Tensor headWeight) {
        /** Logits, targets and the reference log-probs. */
        public static Inputs of(Tensor logits, Tensor targets, Tensor refChosen, Tensor refRejected) {
            return new Inputs(logits, targets, refChosen, refRejected, null, null, null, 0, null, null);
        }

        /**
         * Final hidden states and the head weight instead of logits: the fused LM head computes
         * the log-probs chunk by chunk, and the gradient reaches h and W (W only when it
         * requires grad: a frozen head gets none).
         */
        public static Inputs ofHidden(Tensor hidden, Tensor headWeight, Tensor targets, Tensor refChosen,
                                      Tensor refRejected) {
            return new Inputs(null, targets, refChosen, refRejected, null, null, null, 0, hidden, headWeight);
        }

        /** With reward scores: SPO's margin m = rewardScale (chosen - rejected). */
        public Inputs withScores(Tensor chosen, Tensor rejected) {
            return new Inputs(logits, targets, refChosen, refRejected, chosen, rejected, margins, checkedVocab,
                    hidden, headWeight);
        }

        /** With SPO's target margins given directly. */
        public Inputs withMargins(Tensor m) {
            return new Inputs(logits, targets, refChosen, refRejected, scoreChosen, scoreRejected, m, checkedVocab,
                    hidden, headWeight);
        }

        /**
         * Declares that every target is -100 or in {@code [0, vocab)}, checked by the caller
         * (a {@code PreferenceCollator} built with the model's vocabulary size does this for
         * every batch). When {@code vocab} equals the logits' V, the fused kernels then run
         * with {@link TokenLogProbs.TargetCheck#PREVALIDATED}: on CUDA without a host
         * synchronisation per kernel call; a bad target would give a NaN loss instead of an
         * exception. Any other value leaves the kernels' own check on.
         */
        public Inputs withTargetsChecked(long vocab) {
            return new Inputs(logits, targets, refChosen, refRejected, scoreChosen, scoreRejected, margins, vocab,
                    hidden, headWeight);
        }
    }

    /** The outcome of {@link #compute}; {@link #backward()} propagates into the model. */
    public static final class Result {
        private final double loss;
        private final PreferenceMetrics metrics;
        private final MetricSums sums;
        private final Tensor logits, gradLogits, lossTensor;
        private final Tensor policyChosen, policyRejected;
        private Tensor hidden, headWeight;
        private LmHeadLogProbs.Gradients headGrads;
        private boolean done;

        Result(double loss, PreferenceMetrics metrics, MetricSums sums, Tensor logits, Tensor gradLogits,
               Tensor lossTensor, Tensor policyChosen, Tensor policyRejected) {
            this.loss = loss;
            this.metrics = metrics;
            this.sums = sums;
            this.logits = logits;
            this.gradLogits = gradLogits;
            this.lossTensor = lossTensor;
            this.policyChosen = policyChosen;
            this.policyRejected = policyRejected;
        }

        /** A fused-head result: backward() hands dL/dh and dL/dW to autograd. */
        private Result withHead(Tensor hidden, Tensor headWeight, LmHeadLogProbs.Gradients grads) {
            this.hidden = hidden;
            this.headWeight = headWeight;
            this.headGrads = grads;
            return this;
        }

        /** The total loss (preference loss + the SFT term). */
        public double loss() {
            return loss;
        }

        /** The preference loss's own metrics (its loss without the SFT term). */
        public PreferenceMetrics metrics() {
            return metrics;
        }

        /** Every metric as weighted sums: pair means by pairs, token means by tokens (see the class comment). */
        public MetricSums metricSums() {
            return sums;
        }

        /** TRL's names: the loss metrics plus logits/chosen, logits/rejected, entropy, nll (when SFT is on). */
        public Map<String, Double> metricsMap() {
            return sums.means();
        }

        /** dL/dlogits, sharing the logits' storage (fused), or null (libtorch or the fused head: use backward()). */
        public Tensor gradLogits() {
            return gradLogits;
        }

        /** Summed policy log-probs [B] of the chosen completions (detached). */
        public Tensor policyChosen() {
            return policyChosen;
        }

        /** Summed policy log-probs [B] of the rejected completions (detached). */
        public Tensor policyRejected() {
            return policyRejected;
        }

        /** Back-propagates the loss into the model's parameters (once). */
        public void backward() {
            if (gradLogits == null && lossTensor == null && headGrads == null) {
                throw new IllegalStateException("this result came from evaluate(): it has no gradient");
            }
            if (done) {
                throw new IllegalStateException("backward() was already called for this result");
            }
            done = true;
            if (headGrads != null) {
                LmHeadLogProbs.propagate(hidden, headWeight, headGrads);
            } else if (gradLogits != null) {
                logits.backward(gradLogits, new BoolOptional(), false, new TensorArrayRefOptional());
            } else {
                lossTensor.backward();
            }
        }
    }

    /**
     * Whether {@link #compute} of these inputs takes the fused LM head's single pass over chunks
     * of whole pairs (3 head GEMMs) rather than its recompute regime (4): hidden states in, the
     * fused implementation, a loss that is a sum over pairs, and one pair's 2T rows of logits
     * within the chunk budget. False for logits.
     */
    public boolean headSinglePass(Inputs in) {
        Batch b = batch(in);
        return b.hidden != null && impl == LossImpl.FUSED && singlePass(new LmHeadLogProbs(headChunkBytes, 1), b);
    }

    /** Loss, metrics and dL/dlogits (fused: written over the logits). */
    public Result compute(Inputs in) {
        return compute(in, true);
    }

    /** Loss and metrics only (evaluation): no gradient is computed and the logits are left as they are. */
    public Result evaluate(Inputs in) {
        return compute(in, false);
    }

    /** The checked geometry of one batch: targets flattened, completion mask and token counts. */
    private record Batch(Tensor logits, Tensor hidden, Tensor weight, Tensor flatTargets, Tensor mask, Tensor counts,
                         long rows, long length, long vocab, long pairs) {
        Tensor chosenCounts() {
            return counts.narrow(0, 0, pairs).contiguous();
        }

        Tensor rejectedCounts() {
            return counts.narrow(0, pairs, pairs).contiguous();
        }
    }

    private static Batch batch(Inputs in) {
        Tensor targets = TensorChecks.defined(in.targets(), "targets");
        if (targets.dim() != 2 || targets.size(0) % 2 != 0 || targets.size(0) == 0) {
            throw new IllegalArgumentException("targets has shape " + Arrays.toString(TensorChecks.shape(targets))
                    + " (expected [2B, T]: B chosen rows, then B rejected rows)");
        }
        long rows = targets.size(0), t = targets.size(1);
        if (in.logits() != null && in.hidden() != null) {
            throw new IllegalArgumentException("both logits and hidden states were given (expected one of them)");
        }
        if (in.hidden() != null) {
            Tensor hidden = TensorChecks.defined(in.hidden(), "hidden");
            Tensor weight = TensorChecks.defined(in.headWeight(), "headWeight");
            boolean ok = hidden.dim() == 3 ? hidden.size(0) == rows && hidden.size(1) == t
                    : hidden.dim() == 2 && hidden.size(0) == rows * t;
            if (!ok || weight.dim() != 2) {
                throw new IllegalArgumentException("hidden has shape " + Arrays.toString(TensorChecks.shape(hidden))
                        + " and headWeight " + Arrays.toString(TensorChecks.shape(weight)) + " but targets "
                        + Arrays.toString(TensorChecks.shape(targets))
                        + " (expected [2B, T, H] or [2B*T, H] matching the targets, and [V, H])");
            }
            Tensor h2 = hidden.reshape(rows * t, hidden.size(hidden.dim() - 1));
            Mask m = mask(targets);
            return new Batch(null, h2, weight, targets.contiguous().view(-1), m.mask, m.counts, rows, t,
                    weight.size(0), rows / 2);
        }
        Tensor logits = TensorChecks.defined(in.logits(), "logits");
        long vocab = logits.size(logits.dim() - 1);
        boolean shapeOk = logits.dim() == 3 ? logits.size(0) == rows && logits.size(1) == t
                : logits.dim() == 2 && logits.size(0) == rows * t;
        if (!shapeOk) {
            throw new IllegalArgumentException("logits has shape " + Arrays.toString(TensorChecks.shape(logits))
                    + " but targets " + Arrays.toString(TensorChecks.shape(targets))
                    + " (expected [2B, T, V] or [2B*T, V] matching the targets)");
        }
        if (!logits.is_contiguous()) {
            throw new IllegalArgumentException("logits are not contiguous (expected the model's output layout)");
        }
        Mask m = mask(targets);
        return new Batch(logits, null, null, targets.contiguous().view(-1), m.mask, m.counts, rows, t, vocab,
                rows / 2);
    }

    private record Mask(Tensor mask, Tensor counts) {}

    /** The completion mask [2B, T] and token counts [2B]; every row needs one completion token. */
    private static Mask mask(Tensor targets) {
        Tensor mask = targets.ne(new Scalar(IGNORE)).to(ScalarType.Float);  // [2B, T]
        Tensor counts = mask.sum(new long[] {1}, false, null);              // [2B]
        if (counts.min().item_double() < 1) {
            throw new IllegalArgumentException("a sequence has no completion token (every target is "
                    + IGNORE + "): each row needs at least one");
        }
        return new Mask(mask, counts);
    }

    private Result compute(Inputs in, boolean withGrad) {
        Batch b = batch(in);
        if (loss.config().needsReference()) {  // simpo, cpo: none (null is fine)
            TensorChecks.defined(in.refChosen(), "refChosen");
            TensorChecks.defined(in.refRejected(), "refRejected");
        }
        if (b.hidden != null) {
            return impl == LossImpl.FUSED ? fusedHead(in, b, withGrad) : composite(in, withLogits(b), withGrad);
        }
        return impl == LossImpl.FUSED ? fused(in, b, withGrad) : composite(in, b, withGrad);
    }

    /** The LibTorch baseline given hidden states: the logits through torch.linear, with autograd. */
    private static Batch withLogits(Batch b) {
        Tensor logits = torch.linear(b.hidden, b.weight);
        return new Batch(logits, null, null, b.flatTargets, b.mask, b.counts, b.rows, b.length, b.vocab, b.pairs);
    }

    /**
     * The fused LM head: log-probs, entropy and the mean logit per row from chunks of h W^T,
     * then the same pair loss as {@link #fused}: a training step in the single pass over
     * chunks of pairs where it applies ({@link #pairPass}), else the recompute regime (the
     * forward keeps lse only; the backward recomputes each chunk once g is known).
     */
    private Result fusedHead(Inputs in, Batch b, boolean withGrad) {
        TokenLogProbs.TargetCheck check = in.checkedVocab() == b.vocab
                ? TokenLogProbs.TargetCheck.PREVALIDATED : TokenLogProbs.TargetCheck.CHECKED;
        LmHeadLogProbs head = new LmHeadLogProbs(headChunkBytes, threads());
        if (withGrad && singlePass(head, b)) {
            return pairPass(in, b, head, check);
        }
        LmHeadLogProbs.Result tok = head.forward(b.hidden, b.weight, b.flatTargets, IGNORE, true, check);
        Tensor seq = tok.logp().view(b.rows, b.length).sum(new long[] {1}, false, null);  // [2B] summed log-probs
        Tensor pc = seq.narrow(0, 0, b.pairs).contiguous(), pr = seq.narrow(0, b.pairs, b.pairs).contiguous();
        MetricSums token = tokenMetrics(tok.logitMean(), tok.entropy(), b);
        PairGrad pg = pairLoss(in, b, pc, pr, withGrad);
        MetricSums sums = sums(pg.total, pg.r.metrics(), token, pg.nll, b.pairs);
        if (!withGrad) {
            return new Result(pg.total, pg.r.metrics(), sums, null, null, null, pc, pr);
        }
        Tensor perRow = torch.cat(new TensorVector(pg.gc, pg.gr), 0);  // [2B]
        Tensor gradLogp = perRow.unsqueeze(1).expand(b.rows, b.length).contiguous().view(-1);
        LmHeadLogProbs.Gradients grads = head.backward(b.hidden, b.weight, b.flatTargets, tok.lse(), gradLogp, IGNORE,
                b.weight.requires_grad(), check);
        return new Result(pg.total, pg.r.metrics(), sums, null, null, null, pc, pr)
                .withHead(b.hidden, b.weight, grads);
    }

    /**
     * Whether a training step takes the fused head's single pass over chunks of whole pairs:
     * the loss is a sum over pairs ({@link PreferenceLossConfig#pairSeparable()}) and one pair's
     * 2T rows of logits fit the chunk budget. Otherwise the recompute regime.
     */
    private boolean singlePass(LmHeadLogProbs head, Batch b) {
        return loss.config().pairSeparable() && head.groupsFit(b.rows * b.length, 2 * b.length, b.vocab,
                b.hidden.size(1), b.hidden.scalar_type().intern(), b.weight.requires_grad());
    }

    /**
     * Liger's regime: the rows are put in pair order (chosen i, then rejected i: each pair 2T
     * consecutive rows) and the head runs one pass over chunks of whole pairs; each chunk's
     * log-probs give its pairs' losses and g, and its backward follows on the same logits (3
     * GEMMs instead of the recompute regime's 4). The per-pair gradients of a chunk of k pairs
     * come from the loss over those k pairs, scaled by k/B (the loss is a mean over pairs); the
     * loss and metrics come from the whole batch afterwards, as in the recompute regime.
     */
    private Result pairPass(Inputs in, Batch b, LmHeadLogProbs head, TokenLogProbs.TargetCheck check) {
        long pairs = b.pairs, t = b.length, group = 2 * t, hid = b.hidden.size(1);
        Tensor order = pairOrder(pairs, b.hidden, false), back = pairOrder(pairs, b.hidden, true);
        // the pair-order copies, [2B T, H] and [2B T]: every handle on their storage is closed
        // after the pass (closing a view alone would keep the copy until the step's scope ends)
        Tensor hPaired, h, tPaired, targets;
        try (NoGradGuard ng = new NoGradGuard()) {
            hPaired = b.hidden.detach().reshape(b.rows, t, hid).index_select(0, order);
            h = hPaired.view(b.rows * t, hid);
            tPaired = b.flatTargets.view(b.rows, t).index_select(0, order);
            targets = tPaired.view(-1);
        }
        LmHeadLogProbs.Pass p = head.forwardBackwardGroups(h, b.weight, targets, group, (r0, n, logp) -> {
            long p0 = r0 / group, k = n / group;
            Tensor seq = logp.view(k, 2, t).sum(new long[] {2}, false, null);  // [k, 2]: chosen, rejected
            PairGrad pg = pairLoss(in, b, seq.select(1, 0).contiguous(), seq.select(1, 1).contiguous(), p0, k,
                    true, false);  // the gradients only: the metrics come from the whole batch below
            return torch.stack(new TensorVector(pg.gc, pg.gr), 1).unsqueeze(2).expand(k, 2, t).contiguous().view(-1);
        }, IGNORE, true, b.weight.requires_grad(), check);
        closeAll(h, hPaired, targets, tPaired);
        Tensor logp = unpair(p.result().logp(), back, b), entropy = unpair(p.result().entropy(), back, b);
        Tensor logitMean = unpair(p.result().logitMean(), back, b);
        Tensor dhPaired = p.grads().hidden(), dhRows = dhPaired.view(b.rows, t, hid);
        Tensor dh = dhRows.index_select(0, back).view(b.rows * t, hid);
        closeAll(dhRows, dhPaired);
        Tensor seq = logp.view(b.rows, t).sum(new long[] {1}, false, null);
        Tensor pc = seq.narrow(0, 0, pairs).contiguous(), pr = seq.narrow(0, pairs, pairs).contiguous();
        PairGrad pg = pairLoss(in, b, pc, pr, true);
        MetricSums sums = sums(pg.total, pg.r.metrics(), tokenMetrics(logitMean, entropy, b), pg.nll, pairs);
        return new Result(pg.total, pg.r.metrics(), sums, null, null, null, pc, pr)
                .withHead(b.hidden, b.weight, new LmHeadLogProbs.Gradients(dh, p.grads().weight()));
    }

    private static void closeAll(Tensor... handles) {
        for (Tensor x : handles) {
            x.close();
        }
    }

    /**
     * The pair order of the 2B sequences (chosen 0, rejected 0, chosen 1, ...) as an index into
     * the batch's order, or with {@code inverse} the batch order as an index into the pair order.
     */
    private static Tensor pairOrder(long pairs, Tensor like, boolean inverse) {
        long[] idx = new long[(int) (2 * pairs)];
        for (int i = 0; i < pairs; i++) {
            if (inverse) {
                idx[i] = 2L * i;
                idx[(int) pairs + i] = 2L * i + 1;
            } else {
                idx[2 * i] = i;
                idx[2 * i + 1] = pairs + i;
            }
        }
        return Tensors.longs(idx).to(like.device(), ScalarType.Long);
    }

    /** A per-token vector [2B*T] in pair order back in the batch's order. */
    private static Tensor unpair(Tensor v, Tensor back, Batch b) {
        return v.view(b.rows, b.length).index_select(0, back).view(-1);
    }

    /** The pair loss on summed log-probs, with the SFT term: its result, total and the per-pair gradients. */
    private record PairGrad(PreferenceLoss.Result r, double total, double nll, Tensor gc, Tensor gr) {}

    private PairGrad pairLoss(Inputs in, Batch b, Tensor pc, Tensor pr, boolean withGrad) {
        return pairLoss(in, b, pc, pr, 0, b.pairs, withGrad, true);
    }

    /**
     * The same for the k pairs from {@code p0} (pc, pr [k]): the gradients are those of the
     * whole batch's mean loss (the k-pair mean's, times k/B); total and metrics are the k
     * pairs'. Without {@code metrics}, the gradients only ({@link PreferenceLoss#gradients}: no
     * batch means, no host read for a pair-separable loss; the token counts were checked once
     * for the batch), and
     * the SFT term's NLL is not read back: total and nll are NaN, the metrics null.
     */
    private PairGrad pairLoss(Inputs in, Batch b, Tensor pc, Tensor pr, long p0, long k, boolean withGrad,
                              boolean metrics) {
        PreferenceLoss.Inputs pi = preferenceInputs(in, pc, pr, b, p0, k);
        // the counts were checked once for the batch (mask): no host read per chunk for them
        PreferenceLoss.Result r = metrics ? loss.compute(pi, withGrad) : loss.gradientsCountsChecked(pi);
        Tensor gc = r.gradChosen(), gr = r.gradRejected();
        if (k != b.pairs) {
            Scalar share = new Scalar((double) k / b.pairs);
            gc = gc.mul(share);
            gr = gr.mul(share);
        }
        double total = r.loss(), nll = Double.NaN;
        if (sftWeight > 0) {
            // alpha * mean_i(-logp_c,i / n_c,i): d/d(logp_c,i) = -alpha / (B n_c,i)
            Tensor nc = b.counts.narrow(0, p0, k);
            if (metrics) {
                nll = pc.div(nc).neg().mean().item_double();
                total += sftWeight * nll;
            }
            gc = gc.sub(nc.reciprocal().mul(new Scalar(sftWeight / b.pairs)));
        }
        return new PairGrad(r, total, nll, gc, gr);
    }

    private Result fused(Inputs in, Batch b, boolean withGrad) {
        Tensor raw = b.logits.detach().view(-1, b.vocab);  // same storage, no autograd
        TokenLogProbs.TargetCheck check = in.checkedVocab() == b.vocab
                ? TokenLogProbs.TargetCheck.PREVALIDATED : TokenLogProbs.TargetCheck.CHECKED;
        TokenLogProbs.Result tok = TokenLogProbs.forward(raw, b.flatTargets, IGNORE, true, threads(), check);
        Tensor seq = tok.logp().view(b.rows, b.length).sum(new long[] {1}, false, null);  // [2B] summed log-probs
        Tensor pc = seq.narrow(0, 0, b.pairs).contiguous(), pr = seq.narrow(0, b.pairs, b.pairs).contiguous();
        MetricSums token = tokenMetrics(rowMean(raw), tok.entropy(), b);
        PairGrad pg = pairLoss(in, b, pc, pr, withGrad);
        PreferenceLoss.Result r = pg.r;
        Tensor gc = pg.gc, gr = pg.gr;
        double total = pg.total, nll = pg.nll;
        MetricSums sums = sums(total, r.metrics(), token, nll, b.pairs);
        if (!withGrad) {
            return new Result(total, r.metrics(), sums, b.logits, null, null, pc, pr);
        }
        Tensor perRow = torch.cat(new TensorVector(gc, gr), 0);  // [2B]
        Tensor gradLogp = perRow.unsqueeze(1).expand(b.rows, b.length).contiguous().view(-1);
        Tensor grad = TokenLogProbs.backward(raw, b.flatTargets, tok.lse(), gradLogp, IGNORE, true, threads(), check);
        return new Result(total, r.metrics(), sums, b.logits, grad.view(TensorChecks.shape(b.logits)), null, pc, pr);
    }

    private Result composite(Inputs in, Batch b, boolean withGrad) {
        Tensor z = b.logits.view(-1, b.vocab);
        Tensor ls = torch.log_softmax(z, 1);
        Tensor safe = b.flatTargets.clamp_min(new Scalar(0L));
        Tensor tokLogp = torch.gather(ls, 1, safe.unsqueeze(1)).squeeze(1).view(b.rows, b.length).mul(b.mask);
        Tensor seq = tokLogp.sum(new long[] {1}, false, null);
        Tensor pc = seq.narrow(0, 0, b.pairs), pr = seq.narrow(0, b.pairs, b.pairs);
        MetricSums token;
        try (NoGradGuard ng = new NoGradGuard()) {
            Tensor zd = z.detach();
            Tensor p = torch.softmax(zd, 1, new ScalarTypeOptional());
            Tensor entropy = torch.logsumexp(zd, new long[] {1}, false).sub(p.mul(zd).sum(new long[] {1}, false, null));
            token = tokenMetrics(rowMean(zd), entropy, b);
        }
        // metrics from the native loss on detached values (identical definitions)
        PreferenceLoss.Result metricsOnly = loss.compute(preferenceInputs(in, pc.detach().contiguous(),
                pr.detach().contiguous(), b), withGrad);
        PreferenceLossConfig c = loss.config();
        PairTerms terms = PairTerms.of(c, b.pairs, pc, pr, in.refChosen(), in.refRejected(), in.scoreChosen(),
                in.scoreRejected(), in.margins(), b.chosenCounts(), b.rejectedCounts());
        Tensor lossTensor = CompositePreferenceLoss.perPair(c, terms, loss.lastBcoDelta()).mean();
        double nll = Double.NaN;
        if (sftWeight > 0) {
            Tensor nllTensor = pc.div(b.chosenCounts()).neg().mean();
            nll = nllTensor.item_double();
            lossTensor = lossTensor.add(nllTensor.mul(new Scalar(sftWeight)));
        }
        double total = lossTensor.item_double();
        return new Result(total, metricsOnly.metrics(), sums(total, metricsOnly.metrics(), token, nll, b.pairs),
                b.logits, null, lossTensor, pc.detach(), pr.detach());
    }

    private PreferenceLoss.Inputs preferenceInputs(Inputs in, Tensor pc, Tensor pr, Batch b) {
        return preferenceInputs(in, pc, pr, b, 0, b.pairs);
    }

    /** The loss inputs of the k pairs from {@code p0} (every per-pair tensor narrowed to them). */
    private PreferenceLoss.Inputs preferenceInputs(Inputs in, Tensor pc, Tensor pr, Batch b, long p0, long k) {
        PreferenceLoss.Inputs li = PreferenceLoss.Inputs.of(pc, pr, pairs(in.refChosen(), p0, k, b),
                pairs(in.refRejected(), p0, k, b));
        if (in.scoreChosen() != null || in.scoreRejected() != null) {
            li = li.withScores(pairs(in.scoreChosen(), p0, k, b), pairs(in.scoreRejected(), p0, k, b));
        }
        if (in.margins() != null) {
            li = li.withMargins(pairs(in.margins(), p0, k, b));
        }
        return loss.config().lengthNormalised() ? li.withTokenCounts(b.counts.narrow(0, p0, k).contiguous(),
                b.counts.narrow(0, b.pairs + p0, k).contiguous()) : li;
    }

    /**
     * Pairs p0..p0+k-1 of a per-pair tensor [B]; null stays null, and with k = B the tensor
     * itself (the loss checks its shape).
     */
    private static Tensor pairs(Tensor v, long p0, long k, Batch b) {
        return v == null || k == b.pairs ? v : v.narrow(0, p0, k);
    }

    /** The pair means (weight B; "loss" is the total), the token sums, then nll when the SFT term is on. */
    private MetricSums sums(double total, PreferenceMetrics m, MetricSums token, double nll, long pairs) {
        MetricSums s = new MetricSums();
        m.asMap().forEach((k, v) -> s.addMean(k, k.equals("loss") ? total : v, pairs));
        s.addAll(token);
        if (sftWeight > 0) {
            s.addMean("nll", nll, pairs);
        }
        return s;
    }

    /**
     * logits/chosen, logits/rejected (the mean logit of each completion token, averaged over the
     * chosen / rejected completion tokens) and entropy (over all completion tokens), as sums
     * weighted by those token counts.
     */
    private static MetricSums tokenMetrics(Tensor logitMean, Tensor entropy, Batch b) {
        Tensor rowMean = logitMean.view(b.rows, b.length).mul(b.mask)
                .sum(new long[] {1}, false, null);  // [2B] sums of per-token means
        double tokensChosen = b.counts.narrow(0, 0, b.pairs).sum().item_double();
        double tokensRejected = b.counts.narrow(0, b.pairs, b.pairs).sum().item_double();
        return new MetricSums()
                .add("logits/chosen", rowMean.narrow(0, 0, b.pairs).sum().item_double(), tokensChosen)
                .add("logits/rejected", rowMean.narrow(0, b.pairs, b.pairs).sum().item_double(), tokensRejected)
                .add("entropy", entropy.view(b.rows, b.length).mul(b.mask).sum().item_double(),
                        tokensChosen + tokensRejected);
    }

    /** The mean logit of each row of [rows, V] logits, fp32 [rows]. */
    private static Tensor rowMean(Tensor z2d) {
        return Tensors.rowMeansFloat(z2d);  // bf16 logits are widened a slice at a time, not all at once
    }

    private int threads() {
        return threads > 0 ? threads : torch.get_num_threads();
    }
}
