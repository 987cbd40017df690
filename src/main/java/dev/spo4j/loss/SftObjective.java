package dev.spo4j.loss;

import dev.spo4j.kernels.LmHeadLogProbs;
import dev.spo4j.kernels.TensorChecks;
import dev.spo4j.kernels.Tensors;
import dev.spo4j.kernels.TokenLogProbs;
import org.bytedeco.pytorch.BoolOptional;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorArrayRefOptional;
import org.bytedeco.pytorch.global.torch;

/**
 * Supervised fine-tuning loss through the fused token log-probs kernel: the mean negative
 * log-likelihood of the scored (completion) tokens,
 * <pre>
 *   L = -(1/N) sum_{t : target_t != -100} logp_t,    N = number of scored tokens
 *   dL/dlogp_t = -1/N  (0 for ignored rows)  ->  dL/dz_v = -(1/N) (1[v = t] - softmax(z)_v)
 * </pre>
 * The forward keeps only lse; {@link Result#backward()} writes dL/dlogits over the logits
 * (the kernel's in-place backward) and back-propagates them, so no rows x V tensor is
 * allocated beyond the logits, as for the preference losses (see {@link PreferenceObjective}
 * for why writing over the logits is valid after a Linear head).
 */
public final class SftObjective {
    private final int threads;
    private final long headChunkBytes;

    /**
     * @param threads        CPU kernel threads (at least 1)
     * @param headChunkBytes the fused LM head's chunk budget ({@link #compute(Tensor, Tensor, Tensor)})
     */
    public SftObjective(int threads, long headChunkBytes) {
        if (headChunkBytes <= 0) {
            throw new IllegalArgumentException("LM head chunk budget = " + headChunkBytes + " bytes (expected > 0)");
        }
        this.threads = Math.max(1, threads);
        this.headChunkBytes = headChunkBytes;
    }

    /** @param threads CPU kernel threads (at least 1); the fused head's default chunk budget */
    public SftObjective(int threads) {
        this(threads, LmHeadLogProbs.DEFAULT_CHUNK_BYTES);
    }

    /** Loss, scored-token count and dL/dlogits (already written over the logits). */
    public static final class Result {
        private final double loss;
        private final long tokens;
        private final Tensor logits, gradLogits;
        private Tensor hidden, headWeight;
        private LmHeadLogProbs.Gradients headGrads;
        private boolean done;

        Result(double loss, long tokens, Tensor logits, Tensor gradLogits) {
            this.loss = loss;
            this.tokens = tokens;
            this.logits = logits;
            this.gradLogits = gradLogits;
        }

        Result(double loss, long tokens, Tensor hidden, Tensor headWeight, LmHeadLogProbs.Gradients grads) {
            this(loss, tokens, null, null);
            this.hidden = hidden;
            this.headWeight = headWeight;
            this.headGrads = grads;
        }

        /** The mean NLL of the scored tokens. */
        public double loss() {
            return loss;
        }

        /** How many tokens were scored (targets other than -100). */
        public long tokens() {
            return tokens;
        }

        /** dL/dlogits, sharing the logits' storage; null for the fused head. */
        public Tensor gradLogits() {
            return gradLogits;
        }

        /** Back-propagates into the model's parameters (once). */
        public void backward() {
            if (done) {
                throw new IllegalStateException("backward() was already called for this result");
            }
            done = true;
            if (headGrads != null) {
                LmHeadLogProbs.propagate(hidden, headWeight, headGrads);
            } else {
                logits.backward(gradLogits, new BoolOptional(), false, new TensorArrayRefOptional());
            }
        }
    }

    /**
     * @param logits  [B, T, V] from the model (with autograd history)
     * @param targets [B, T] int64: the next token at completion positions, -100 elsewhere
     */
    public Result compute(Tensor logits, Tensor targets) {
        TensorChecks.defined(logits, "logits");
        TensorChecks.defined(targets, "targets");
        long vocab = logits.size(logits.dim() - 1);
        Tensor flat = targets.contiguous().view(-1);
        Tensor raw = logits.detach().view(-1, vocab);  // same storage, no autograd
        if (raw.size(0) != flat.size(0)) {
            throw new IllegalArgumentException("logits have " + raw.size(0) + " rows but targets " + flat.size(0));
        }
        long n = flat.ne(new Scalar(TokenLogProbs.DEFAULT_IGNORE_INDEX)).sum().item_long();
        if (n == 0) {
            throw new IllegalArgumentException("no scored token in the batch (every target is -100)");
        }
        TokenLogProbs.Result tok = TokenLogProbs.forward(raw, flat, TokenLogProbs.DEFAULT_IGNORE_INDEX, false, threads);
        double loss = -tok.logp().sum().item_double() / n;
        // ignored rows get a zero gradient from the kernel whatever g is, so g can be constant
        Tensor g = torch.full(new long[] {raw.size(0)}, new Scalar(-1.0 / n),
                Tensors.options(torch.ScalarType.Float, raw.device()));
        Tensor grad = TokenLogProbs.backward(raw, flat, tok.lse(), g, TokenLogProbs.DEFAULT_IGNORE_INDEX, true, threads);
        return new Result(loss, n, logits, grad.view(TensorChecks.shape(logits)));
    }

    /**
     * The fused LM head in its single-pass regime: g = -1/n is known before the forward, so one
     * pass over chunks of h W^T gives the loss, dL/dh and dL/dW (none when W is frozen) with
     * 3 GEMMs, never more than the chunk budget of logits.
     *
     * @param hidden     [B, T, H] final hidden states (after the final norm), with autograd history
     * @param headWeight [V, H] the LM head weight (the embedding when tied)
     * @param targets    [B, T] int64: the next token at completion positions, -100 elsewhere
     */
    public Result compute(Tensor hidden, Tensor headWeight, Tensor targets) {
        TensorChecks.defined(hidden, "hidden");
        TensorChecks.defined(headWeight, "headWeight");
        TensorChecks.defined(targets, "targets");
        Tensor flat = targets.contiguous().view(-1);
        Tensor h = hidden.reshape(-1, hidden.size(hidden.dim() - 1));
        if (h.size(0) != flat.size(0)) {
            throw new IllegalArgumentException("hidden has " + h.size(0) + " rows but targets " + flat.size(0));
        }
        long n = flat.ne(new Scalar(TokenLogProbs.DEFAULT_IGNORE_INDEX)).sum().item_long();
        if (n == 0) {
            throw new IllegalArgumentException("no scored token in the batch (every target is -100)");
        }
        Tensor g = torch.full(new long[] {h.size(0)}, new Scalar(-1.0 / n),
                Tensors.options(torch.ScalarType.Float, h.device()));
        LmHeadLogProbs.Pass p = new LmHeadLogProbs(headChunkBytes, threads).forwardBackward(h, headWeight, flat, g,
                TokenLogProbs.DEFAULT_IGNORE_INDEX, false, headWeight.requires_grad(),
                TokenLogProbs.TargetCheck.CHECKED);
        double loss = -p.result().logp().sum().item_double() / n;
        return new Result(loss, n, h, headWeight, p.grads());
    }
}
