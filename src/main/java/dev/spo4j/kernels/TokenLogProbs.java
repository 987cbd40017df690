package dev.spo4j.kernels;

import java.util.Arrays;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * Fused log-softmax + gather over LM logits, with its backward: the per-token log-probs
 * that every preference loss sums, without materialising log_softmax.
 *
 * <pre>
 *   lse = log sum_v exp(z_v),  logp = z_t - lse,  entropy = lse - sum_v softmax(z)_v z_v
 *   dL/dz_v = g (1[v = t] - exp(z_v - lse))
 * </pre>
 *
 * Logits are {@code [rows, V]} fp32, bf16 or fp16 with unit column stride and any row stride
 * {@code >= V}; targets are int64 {@code [rows]}, rows with {@code ignoreIndex} give 0 and a
 * zero gradient. Outputs are fp32. The backward needs only {@code lse}: nothing of size
 * rows x V is kept, and {@code inPlace} overwrites the logits with their gradient.
 * CPU tensors run the C++ kernels on {@code numThreads} threads (default: LibTorch's
 * intra-op thread count); CUDA tensors run the CUDA kernels on LibTorch's current stream.
 *
 * <h2>Checked and pre-validated targets</h2>
 * By default ({@link TargetCheck#CHECKED}) a call rejects a target outside {@code [0, V)}
 * that is not {@code ignoreIndex}, and a row with no finite logit, with an
 * {@link IllegalArgumentException} from that call, naming the first offending row, before the
 * in-place backward writes anything. On CUDA that check runs on the device, so the call waits
 * for it: every checked CUDA call synchronises LibTorch's current stream (tens of
 * microseconds, and the host cannot queue the next kernels meanwhile). A caller that has
 * checked its targets against V already, as {@code Trainer} does when it collates a batch
 * ({@code PreferenceCollator} with a vocabulary size), passes
 * {@link TargetCheck#PREVALIDATED}: CUDA calls then only queue the kernel and return (no
 * synchronisation, no device-to-host copy, no allocation), so they overlap with the host and
 * can be captured in a CUDA graph. A bad target is then not reported: it is never read, its
 * row's logp is NaN and its gradient row NaN, which shows up as a NaN loss. CPU calls check
 * their targets either way (the check costs nothing there).
 */
public final class TokenLogProbs {
    /**
     * Hugging Face's and PyTorch's default label for "no loss here" ({@code SPO4J_IGNORE_INDEX}
     * of the header): the one Java definition, used for every target row the collators write.
     */
    public static final long DEFAULT_IGNORE_INDEX = -100;

    private TokenLogProbs() {}

    /** Whether a call checks its targets itself; see the class comment. */
    public enum TargetCheck {
        /** The default: bad targets (and rows without a finite logit) throw; CUDA calls synchronise. */
        CHECKED,
        /**
         * The caller guarantees every target is {@code ignoreIndex} or in {@code [0, V)}: CUDA
         * calls launch without a host synchronisation and report no data error (a bad target's
         * row comes out NaN); CPU calls still check.
         */
        PREVALIDATED
    }

    /** logp, lse and (when asked for) entropy, each fp32 {@code [rows]}. */
    public record Result(Tensor logp, Tensor lse, Tensor entropy) {}

    /** The forward on LibTorch's intra-op thread count. */
    public static Result forward(Tensor logits, Tensor targets, long ignoreIndex, boolean withEntropy) {
        return forward(logits, targets, ignoreIndex, withEntropy, torch.get_num_threads());
    }

    /**
     * The log-prob of each row's target, the row's log-sum-exp (for the backward) and, when
     * {@code withEntropy}, its entropy (else a null entropy); CPU tensors run on
     * {@code numThreads} threads (at least 1).
     */
    public static Result forward(Tensor logits, Tensor targets, long ignoreIndex, boolean withEntropy,
                                 int numThreads) {
        return forward(logits, targets, ignoreIndex, withEntropy, numThreads, TargetCheck.CHECKED);
    }

    /**
     * The forward with an explicit target check: {@link TargetCheck#PREVALIDATED} launches a
     * CUDA forward without a host synchronisation (see the class comment).
     */
    public static Result forward(Tensor logits, Tensor targets, long ignoreIndex, boolean withEntropy,
                                 int numThreads, TargetCheck check) {
        if (check == null) {
            throw new IllegalArgumentException("target check is null (expected CHECKED or PREVALIDATED)");
        }
        Layout in = Layout.of(logits, targets, ignoreIndex);
        TensorChecks.Placement where = TensorChecks.sameDevice(new String[] {"logits", "targets"}, logits, targets);
        Tensor logp = Tensors.emptyFloats(logits, in.rows);
        Tensor lse = Tensors.emptyFloats(logits, in.rows);
        Tensor entropy = withEntropy ? Tensors.emptyFloats(logits, in.rows) : null;
        FloatPointer ent = withEntropy ? entropy.data_ptr_float() : null;
        int status;
        if (where == TensorChecks.Placement.CUDA && check == TargetCheck.PREVALIDATED) {
            status = Native.spo4j_token_logprobs_fwd_cuda_unchecked(logits.data_ptr(), in.dtype, in.rows, in.vocab,
                    in.rowStride, targets.data_ptr_long(), ignoreIndex, logp.data_ptr_float(),
                    lse.data_ptr_float(), ent, CudaKernels.currentStream(logits));
        } else if (where == TensorChecks.Placement.CUDA) {
            status = Native.spo4j_token_logprobs_fwd_cuda(logits.data_ptr(), in.dtype, in.rows, in.vocab,
                    in.rowStride, targets.data_ptr_long(), ignoreIndex, logp.data_ptr_float(),
                    lse.data_ptr_float(), ent, CudaKernels.currentStream(logits));
        } else {
            status = Native.spo4j_token_logprobs_fwd_cpu(logits.data_ptr(), in.dtype, in.rows, in.vocab,
                    in.rowStride, targets.data_ptr_long(), ignoreIndex, logp.data_ptr_float(),
                    lse.data_ptr_float(), ent, Math.max(1, numThreads));
        }
        Native.check(status, "token log-probs forward");
        return new Result(logp, lse, entropy);
    }

    /** The backward on LibTorch's intra-op thread count. */
    public static Tensor backward(Tensor logits, Tensor targets, Tensor lse, Tensor gradLogp,
                                  long ignoreIndex, boolean inPlace) {
        return backward(logits, targets, lse, gradLogp, ignoreIndex, inPlace, torch.get_num_threads());
    }

    /**
     * Returns dL/dlogits in the logits' dtype: the logits tensor itself, overwritten, when
     * {@code inPlace}; otherwise a new contiguous {@code [rows, V]} tensor. On a bad argument
     * nothing is written.
     */
    public static Tensor backward(Tensor logits, Tensor targets, Tensor lse, Tensor gradLogp,
                                  long ignoreIndex, boolean inPlace, int numThreads) {
        return backward(logits, targets, lse, gradLogp, ignoreIndex, inPlace, numThreads, TargetCheck.CHECKED);
    }

    /**
     * The backward with an explicit target check: {@link TargetCheck#PREVALIDATED} launches a
     * CUDA backward without a host synchronisation (see the class comment); tensor arguments
     * are checked either way.
     */
    public static Tensor backward(Tensor logits, Tensor targets, Tensor lse, Tensor gradLogp,
                                  long ignoreIndex, boolean inPlace, int numThreads, TargetCheck check) {
        if (check == null) {
            throw new IllegalArgumentException("target check is null (expected CHECKED or PREVALIDATED)");
        }
        Layout in = Layout.of(logits, targets, ignoreIndex);
        TensorChecks.defined(lse, "lse");
        TensorChecks.defined(gradLogp, "gradLogp");
        TensorChecks.dtype(lse, "lse", ScalarType.Float);
        TensorChecks.dtype(gradLogp, "gradLogp", ScalarType.Float);
        TensorChecks.vector(lse, "lse", in.rows);
        TensorChecks.vector(gradLogp, "gradLogp", in.rows);
        TensorChecks.Placement where = TensorChecks.sameDevice(
                new String[] {"logits", "targets", "lse", "gradLogp"}, logits, targets, lse, gradLogp);
        if (inPlace && logits.requires_grad()) {
            throw new IllegalArgumentException("logits require grad: an in-place gradient would corrupt "
                    + "autograd's saved tensor (detach them, or pass inPlace = false)");
        }
        Tensor grad = inPlace ? logits : torch.empty(new long[] {in.rows, in.vocab},
                Tensors.options(logits.scalar_type().intern(), logits.device()), null);
        long gradStride = inPlace ? in.rowStride : in.vocab;
        int status;
        if (where == TensorChecks.Placement.CUDA && check == TargetCheck.PREVALIDATED) {
            status = Native.spo4j_token_logprobs_bwd_cuda_unchecked(logits.data_ptr(), in.dtype, in.rows, in.vocab,
                    in.rowStride, targets.data_ptr_long(), ignoreIndex, lse.data_ptr_float(),
                    gradLogp.data_ptr_float(), grad.data_ptr(), gradStride, CudaKernels.currentStream(logits));
        } else if (where == TensorChecks.Placement.CUDA) {
            status = Native.spo4j_token_logprobs_bwd_cuda(logits.data_ptr(), in.dtype, in.rows, in.vocab,
                    in.rowStride, targets.data_ptr_long(), ignoreIndex, lse.data_ptr_float(),
                    gradLogp.data_ptr_float(), grad.data_ptr(), gradStride, CudaKernels.currentStream(logits));
        } else {
            status = Native.spo4j_token_logprobs_bwd_cpu(logits.data_ptr(), in.dtype, in.rows, in.vocab,
                    in.rowStride, targets.data_ptr_long(), ignoreIndex, lse.data_ptr_float(),
                    gradLogp.data_ptr_float(), grad.data_ptr(), gradStride, Math.max(1, numThreads));
        }
        Native.check(status, "token log-probs backward");
        return grad;
    }

    /**
     * The in-place backward of a vocabulary slice on the CPU (the fused LM head's tiles):
     * {@code logits} [rows, m] are the columns [vocabOffset, vocabOffset + m) of rows of
     * {@code fullVocab} entries, {@code targets} ids in [0, fullVocab) or ignoreIndex and
     * {@code lse} the whole rows'. Each entry becomes -g exp(z_v - lse), plus, when {@code oneHot},
     * g at the target's column if the slice holds it; without it the caller adds g 1[v == t]
     * itself. The caller (LmHeadLogProbs) has checked the targets and ignoreIndex against
     * fullVocab; the kernel checks them again.
     */
    static void backwardSliceInPlace(Tensor logits, Tensor targets, long vocabOffset, long fullVocab,
                                     boolean oneHot, Tensor lse, Tensor gradLogp, long ignoreIndex, int numThreads) {
        if (!logits.device().is_cpu() || logits.dim() != 2 || !logits.is_contiguous() || logits.requires_grad()) {
            throw new IllegalArgumentException("slice logits must be a contiguous 2-D CPU tensor without grad, got "
                    + Arrays.toString(TensorChecks.shape(logits)) + " on " + logits.device().str().getString());
        }
        int dtype = TensorChecks.kernelDtype(logits, "logits");
        long rows = logits.size(0), width = logits.size(1);
        TensorChecks.vector(targets, "targets", rows);
        TensorChecks.vector(lse, "lse", rows);
        TensorChecks.vector(gradLogp, "gradLogp", rows);
        int status = Native.spo4j_token_logprobs_bwd_slice_cpu(logits.data_ptr(), dtype, rows, width, width,
                targets.data_ptr_long(), ignoreIndex, vocabOffset, fullVocab, oneHot ? 1 : 0, lse.data_ptr_float(),
                gradLogp.data_ptr_float(), logits.data_ptr(), width, Math.max(1, numThreads));
        Native.check(status, "token log-probs slice backward");
    }

    /** The checked geometry of a logits/targets pair. */
    private record Layout(long rows, long vocab, long rowStride, int dtype) {
        static Layout of(Tensor logits, Tensor targets, long ignoreIndex) {
            TensorChecks.defined(logits, "logits");
            TensorChecks.defined(targets, "targets");
            if (logits.dim() != 2) {
                throw new IllegalArgumentException("logits has shape " + Arrays.toString(TensorChecks.shape(logits))
                        + " (expected 2 dimensions [rows, V]; flatten batch and time first)");
            }
            int dtype = TensorChecks.kernelDtype(logits, "logits");
            long rows = logits.size(0), vocab = logits.size(1);
            if (rows == 0 || vocab == 0) {
                throw new IllegalArgumentException("logits has shape " + Arrays.toString(TensorChecks.shape(logits))
                        + " (expected at least one row and one vocabulary entry)");
            }
            if (logits.stride(1) != 1) {
                throw new IllegalArgumentException("logits rows are not contiguous: column stride "
                        + logits.stride(1) + " (expected 1; call .contiguous())");
            }
            long rowStride = rows == 1 ? vocab : logits.stride(0);
            if (rowStride < vocab) {
                throw new IllegalArgumentException("logits row stride " + rowStride + " is smaller than V = "
                        + vocab + " (rows overlap)");
            }
            TensorChecks.dtype(targets, "targets", ScalarType.Long);
            TensorChecks.vector(targets, "targets", rows);
            if (ignoreIndex >= 0 && ignoreIndex < vocab) {
                throw new IllegalArgumentException("ignoreIndex " + ignoreIndex + " is a valid token id in [0, "
                        + vocab + ") (expected a negative value or one >= V)");
            }
            return new Layout(rows, vocab, rowStride, dtype);
        }
    }
}
