package dev.spo4j.kernels;

import java.util.Arrays;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.BoolOptional;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * The LM head fused with the token log-probs: per-row log-probs straight from the final
 * hidden states, never holding more than one chunk of logits.
 *
 * <pre>
 *   z = h W^T  (h [N, H] after the final norm, W [V, H], tied or not)
 *   logp = z_t - lse,  lse = log sum_v exp(z_v),  entropy = lse - sum_v softmax(z)_v z_v
 *   dz = g (onehot(t) - softmax(z))    (g = dL/dlogp [N]; 0 for ignored rows)
 *   dL/dh = dz W,   dL/dW = dz^T h
 * </pre>
 *
 * Rows are processed in chunks of {@link #chunkRows} rows: {@code z_c = h_c W^T} is one
 * LibTorch GEMM (MKL/oneDNN on the CPU, cuBLAS on CUDA), then {@link TokenLogProbs}'s
 * forward, or its in-place backward followed by {@code dh_c = dz_c W} and
 * {@code dW += dz_c^T h_c}. The extra memory is one chunk of logits (plus, for bf16/fp16
 * with a weight gradient, its fp32 copy), bounded by the chunk budget whatever N is.
 *
 * <p>Two regimes. <b>Recompute</b> ({@link #forward} then {@link #backward}): the forward
 * keeps only lse [N]; the backward recomputes each chunk's logits, so 4 GEMMs in all but memory
 * independent of the sequence length, and g may depend on every row (a preference loss needs
 * whole sequences' sums before any g is known). <b>Single pass</b> ({@link #forwardBackward}):
 * when g is known before the forward (SFT: g = -1/n for every scored row), one pass computes
 * logp, dh and dW with 3 GEMMs.
 *
 * <p>The GEMMs run in the tensors' dtype (fp32, bf16 or fp16; LibTorch accumulates in fp32);
 * the kernel reads those logits and accumulates in fp32; logp, lse and entropy are fp32. The
 * weight gradient of a bf16/fp16 head accumulates over chunks in an fp32 tensor, so it is
 * rounded once. Arguments are checked (shapes, dtypes, devices, targets in [0, V) or
 * ignoreIndex, budget >= one row) with an {@link IllegalArgumentException} before anything
 * is written. Everything runs on detached tensors under no-grad; {@link #propagate} hands
 * dh and dW to autograd.
 *
 * <p>Test: {@code LmHeadLogProbsTest}; benchmark: {@code bench/java/.../LmHeadLogProbsBench}.
 */
public final class LmHeadLogProbs {
    /** The default chunk budget: 256 MiB of logits in flight. */
    public static final long DEFAULT_CHUNK_BYTES = 256L << 20;

    private final long chunkBytes;
    private final int threads;

    /**
     * @param chunkBytes the most bytes of logits (and their fp32 copy, where one is needed) in
     *                   flight at once; at least one row's worth
     * @param threads    CPU kernel threads (0 = LibTorch's intra-op thread count)
     */
    public LmHeadLogProbs(long chunkBytes, int threads) {
        if (chunkBytes <= 0) {
            throw new IllegalArgumentException("chunk budget = " + chunkBytes + " bytes (expected > 0)");
        }
        if (threads < 0) {
            throw new IllegalArgumentException("threads = " + threads + " (expected >= 0; 0 = LibTorch's count)");
        }
        this.chunkBytes = chunkBytes;
        this.threads = threads;
    }

    /** The default budget on LibTorch's thread count. */
    public LmHeadLogProbs() {
        this(DEFAULT_CHUNK_BYTES, 0);
    }

    /** The chunk budget in bytes. */
    public long chunkBytes() {
        return chunkBytes;
    }

    /**
     * logp, lse, entropy (null unless asked for) and the mean logit of each row
     * ({@code mean_v z_v = h . mean_v W_v}, exact in real arithmetic, for the logits/* metrics
     * without reading any logits), each fp32 [N].
     */
    public record Result(Tensor logp, Tensor lse, Tensor entropy, Tensor logitMean) {}

    /** dL/dh [N, H] in h's dtype, and dL/dW [V, H] fp32 (null when not asked for). */
    public record Gradients(Tensor hidden, Tensor weight) {}

    /** Rows per chunk for a head of {@code vocab} entries in {@code dtype}; throws when not even one row fits. */
    public long chunkRows(long vocab, ScalarType dtype, boolean weightGrad) {
        long elem = dtype == ScalarType.Float ? 4 : 2;
        long perRow = vocab * (elem + (weightGrad && elem != 4 ? 4 : 0));
        if (perRow > chunkBytes) {
            throw new IllegalArgumentException("chunk budget " + chunkBytes + " bytes is smaller than one row of "
                    + vocab + " logits (" + perRow + " bytes; expected a budget of at least one row)");
        }
        return chunkBytes / perRow;
    }

    /** Forward only (recompute regime, or a reference model): keeps nothing but lse. */
    public Result forward(Tensor hidden, Tensor weight, Tensor targets, long ignoreIndex, boolean withEntropy,
                          TokenLogProbs.TargetCheck check) {
        Shape s = Shape.of(hidden, weight, targets, ignoreIndex, check);
        long step = chunkRows(s.vocab, s.dtype, false);
        Tensor logp = Tensors.emptyFloats(hidden, s.rows);
        Tensor lse = Tensors.emptyFloats(hidden, s.rows);
        Tensor entropy = withEntropy ? Tensors.emptyFloats(hidden, s.rows) : null;
        try (NoGradGuard ng = new NoGradGuard()) {
            Tensor h = hidden.detach(), w = weight.detach();
            for (long r0 = 0; r0 < s.rows; r0 += step) {
                long n = Math.min(step, s.rows - r0);
                try (PointerScope chunk = new PointerScope()) {  // frees this chunk's logits at once
                    Tensor z = torch.mm(h.narrow(0, r0, n), w.t());
                    TokenLogProbs.Result c = TokenLogProbs.forward(z, targets.narrow(0, r0, n), ignoreIndex,
                            withEntropy, threads(), check);
                    logp.narrow(0, r0, n).copy_(c.logp());
                    lse.narrow(0, r0, n).copy_(c.lse());
                    if (withEntropy) {
                        entropy.narrow(0, r0, n).copy_(c.entropy());
                    }
                }
            }
            return new Result(logp, lse, entropy, logitMean(h, w));
        }
    }

    /**
     * The recompute backward: dL/dh for the upstream gradient {@code gradLogp} [N] fp32 and,
     * when {@code weightGrad}, dL/dW (fp32). Recomputes each chunk's logits from h and W.
     */
    public Gradients backward(Tensor hidden, Tensor weight, Tensor targets, Tensor lse, Tensor gradLogp,
                              long ignoreIndex, boolean weightGrad, TokenLogProbs.TargetCheck check) {
        Shape s = Shape.of(hidden, weight, targets, ignoreIndex, check);
        rowVector(lse, "lse", s.rows, hidden);
        rowVector(gradLogp, "gradLogp", s.rows, hidden);
        return pass(s, hidden, weight, targets, lse, gradLogp, ignoreIndex, weightGrad, false, check).grads;
    }

    /** The single-pass outcome: the forward's values and the gradients for a g known in advance. */
    public record Pass(Result result, Gradients grads) {}

    /**
     * Single pass (3 GEMMs): logp, lse, entropy and the gradients for an upstream gradient
     * {@code gradLogp} [N] fp32 known before the forward (SFT's -1/n per scored row).
     */
    public Pass forwardBackward(Tensor hidden, Tensor weight, Tensor targets, Tensor gradLogp, long ignoreIndex,
                                boolean withEntropy, boolean weightGrad, TokenLogProbs.TargetCheck check) {
        Shape s = Shape.of(hidden, weight, targets, ignoreIndex, check);
        rowVector(gradLogp, "gradLogp", s.rows, hidden);
        return pass(s, hidden, weight, targets, null, gradLogp, ignoreIndex, weightGrad, withEntropy, check);
    }

    /** One pass over the chunks: a forward when {@code lse} is null (single pass), then the backward. */
    private Pass pass(Shape s, Tensor hidden, Tensor weight, Tensor targets, Tensor lse, Tensor gradLogp,
                      long ignoreIndex, boolean weightGrad, boolean withEntropy, TokenLogProbs.TargetCheck check) {
        long step = chunkRows(s.vocab, s.dtype, weightGrad);
        boolean single = lse == null;
        Tensor logp = single ? Tensors.emptyFloats(hidden, s.rows) : null;
        Tensor lseOut = single ? Tensors.emptyFloats(hidden, s.rows) : lse;
        Tensor entropy = single && withEntropy ? Tensors.emptyFloats(hidden, s.rows) : null;
        try (NoGradGuard ng = new NoGradGuard()) {
            Tensor h = hidden.detach(), w = weight.detach();
            Tensor dh = torch.empty(new long[] {s.rows, s.hidden}, Tensors.options(s.dtype, hidden.device()), null);
            Tensor dw = weightGrad ? torch.zeros(new long[] {s.vocab, s.hidden},
                    Tensors.options(ScalarType.Float, weight.device())) : null;
            boolean upcast = weightGrad && s.dtype != ScalarType.Float;
            for (long r0 = 0; r0 < s.rows; r0 += step) {
                long n = Math.min(step, s.rows - r0);
                try (PointerScope chunk = new PointerScope()) {  // frees this chunk's logits at once
                    Tensor hc = h.narrow(0, r0, n), tc = targets.narrow(0, r0, n);
                    Tensor z = torch.mm(hc, w.t());
                    Tensor lc;
                    if (single) {
                        TokenLogProbs.Result c = TokenLogProbs.forward(z, tc, ignoreIndex, withEntropy, threads(),
                                check);
                        logp.narrow(0, r0, n).copy_(c.logp());
                        lseOut.narrow(0, r0, n).copy_(c.lse());
                        if (entropy != null) {
                            entropy.narrow(0, r0, n).copy_(c.entropy());
                        }
                        lc = c.lse();
                    } else {
                        lc = lseOut.narrow(0, r0, n);
                    }
                    // in place: dz is z's storage, overwritten with its gradient
                    Tensor dz = TokenLogProbs.backward(z, tc, lc, gradLogp.narrow(0, r0, n), ignoreIndex, true,
                            threads(), check);
                    dh.narrow(0, r0, n).copy_(torch.mm(dz, w));
                    if (upcast) {  // fp32 accumulation over chunks: dW is rounded once, by the caller
                        dw.addmm_(dz.to(ScalarType.Float).t(), hc.to(ScalarType.Float));
                    } else if (weightGrad) {
                        dw.addmm_(dz.t(), hc);
                    }
                }
            }
            Result r = single ? new Result(logp, lseOut, entropy, logitMean(h, w)) : null;
            return new Pass(r, new Gradients(dh, dw));
        }
    }

    /**
     * Hands the gradients to autograd: one backward pass through {@code hidden}'s graph with
     * dL/dh and, when {@code grads.weight()} is set and the weight requires grad, dL/dW added to
     * the weight's gradient (tied: summed with the embedding lookup's). A leaf weight (a
     * parameter) gets dL/dW directly, with no autograd copy: an undefined gradient becomes
     * {@code grads.weight()} itself (cast to the weight's dtype), a defined one is added to in
     * place; so after this call {@code grads.weight()} may be the weight's gradient.
     */
    public static void propagate(Tensor hidden, Tensor weight, Gradients grads) {
        TensorVector outs = new TensorVector(), gs = new TensorVector();
        Tensor dw = grads.weight();
        if (dw != null && weight.requires_grad()) {
            if (weight.__dispatch_is_leaf()) {
                try (NoGradGuard ng = new NoGradGuard()) {
                    Tensor current = weight.grad();
                    if (current.defined()) {
                        current.add_(dw);
                    } else {
                        weight.mutable_grad().put(dw.to(weight.scalar_type().intern()));
                    }
                }
            } else {
                outs.push_back(weight);
                gs.push_back(dw.to(weight.scalar_type().intern()));
            }
        }
        if (hidden.requires_grad()) {
            outs.push_back(hidden);
            gs.push_back(grads.hidden());
        }
        if (outs.size() > 0) {
            torch.backward(outs, gs, new BoolOptional(), false, new TensorVector());
        }
    }

    private static Tensor logitMean(Tensor h, Tensor w) {
        Tensor wBar = Tensors.columnMeansFloat(w);  // [H] fp32, a bf16 W widened a slice at a time
        return torch.mv(h.to(ScalarType.Float), wBar);
    }

    private int threads() {
        return threads > 0 ? threads : torch.get_num_threads();
    }

    private static void rowVector(Tensor t, String name, long rows, Tensor like) {
        TensorChecks.defined(t, name);
        TensorChecks.dtype(t, name, ScalarType.Float);
        TensorChecks.vector(t, name, rows);
        TensorChecks.sameDevice(new String[] {"hidden", name}, like, t);
    }

    /** The checked geometry of one call. */
    private record Shape(long rows, long hidden, long vocab, ScalarType dtype) {
        static Shape of(Tensor h, Tensor w, Tensor targets, long ignoreIndex, TokenLogProbs.TargetCheck check) {
            TensorChecks.defined(h, "hidden");
            TensorChecks.defined(w, "weight");
            TensorChecks.defined(targets, "targets");
            if (check == null) {
                throw new IllegalArgumentException("target check is null (expected CHECKED or PREVALIDATED)");
            }
            if (h.dim() != 2 || h.size(0) == 0 || h.size(1) == 0) {
                throw new IllegalArgumentException("hidden has shape " + Arrays.toString(TensorChecks.shape(h))
                        + " (expected [N, H] with N, H >= 1; flatten batch and time first)");
            }
            if (w.dim() != 2 || w.size(0) == 0) {
                throw new IllegalArgumentException("weight has shape " + Arrays.toString(TensorChecks.shape(w))
                        + " (expected [V, H] with V >= 1)");
            }
            long rows = h.size(0), hid = h.size(1), vocab = w.size(0);
            if (w.size(1) != hid) {
                throw new IllegalArgumentException("weight has shape " + Arrays.toString(TensorChecks.shape(w))
                        + " but hidden has H = " + hid + " (expected [V, " + hid + "])");
            }
            TensorChecks.kernelDtype(h, "hidden");
            ScalarType dt = h.scalar_type().intern();
            ScalarType wdt = w.scalar_type().intern();
            if (wdt != dt) {
                throw new IllegalArgumentException("weight has dtype " + wdt + " but hidden " + dt
                        + " (expected one dtype)");
            }
            TensorChecks.dtype(targets, "targets", ScalarType.Long);
            TensorChecks.vector(targets, "targets", rows);
            TensorChecks.Placement where = TensorChecks.sameDevice(new String[] {"hidden", "weight", "targets"},
                    h, w, targets);
            if (ignoreIndex >= 0 && ignoreIndex < vocab) {
                throw new IllegalArgumentException("ignoreIndex " + ignoreIndex + " is a valid token id in [0, "
                        + vocab + ") (expected a negative value or one >= V)");
            }
            // every chunk's kernel checks its own targets, but an error in a late chunk would come
            // after earlier chunks were written: check them all first (a CUDA sync unless prevalidated)
            if (where == TensorChecks.Placement.CPU || check == TokenLogProbs.TargetCheck.CHECKED) {
                Tensor bad = targets.ne(new Scalar(ignoreIndex))
                        .logical_and(targets.lt(new Scalar(0L)).logical_or(targets.ge(new Scalar(vocab))));
                if (bad.any().item_bool()) {
                    long row = bad.to(ScalarType.Long).argmax().item_long();
                    throw new IllegalArgumentException("targets[" + row + "] = " + targets.select(0, row).item_long()
                            + " is outside [0, " + vocab + ") and is not ignoreIndex " + ignoreIndex);
                }
            }
            return new Shape(rows, hid, vocab, dt);
        }
    }
}
