package dev.spo4j.kernels;

import java.util.Arrays;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * The preference-loss op ({@code native/cpu/preference_loss.cpp}, {@code
 * native/cuda/preference_loss.cu}; formulas in {@code native/common/pair_loss.h} and {@code
 * src/site/markdown/LOSSES.md}): for B pairs, the per-pair loss, the gradient of the MEAN
 * loss with respect to the two policy inputs, and the batch statistics, from plain
 * parameters. The inputs are the values the loss sees (summed or already length-normalised
 * log-probs): normalisation, margins from scores and metric names belong to the objective
 * ({@code dev.spo4j.loss.PreferenceLoss}), not here.
 *
 * <p>All tensors are fp32 {@code [B]} on one device; CUDA tensors run on LibTorch's current
 * stream. Every argument is checked before the native call.
 */
public final class PreferenceLossKernel {
    /** Indices into {@link Result#stats()} ({@code SPO4J_STAT_*} of the header): batch means. */
    public static final int STAT_LOSS = 0, STAT_REWARD_CHOSEN = 1, STAT_REWARD_REJECTED = 2,
            STAT_REWARD_MARGIN = 3, STAT_ACCURACY = 4, STAT_LOGP_CHOSEN = 5,
            STAT_LOGP_REJECTED = 6, STAT_COUNT = 7;

    private PreferenceLossKernel() {}

    /**
     * {@code spo4j_loss_params}: the loss's code in the C ABI ({@code spo4j_loss_type}), beta,
     * the label smoothing eps, the default margin m0 (used when no per-pair margins are given),
     * spo-exp's floor on |m|, discopop's tau, simpo's gamma and bco-pair's reward shift delta;
     * {@code name} only labels error messages.
     */
    public record Params(String name, int type, double beta, double labelSmoothing, double margin,
                         double marginFloor, double tau, double gamma, double delta) {}

    /**
     * @param perPairLoss  fp32 [B]
     * @param gradChosen   dMEAN/d(policy chosen input), fp32 [B]
     * @param gradRejected dMEAN/d(policy rejected input), fp32 [B]
     * @param stats        the {@link #STAT_COUNT} batch means, indexed by the STAT_ constants (null
     *                     when not asked for)
     */
    public record Result(Tensor perPairLoss, Tensor gradChosen, Tensor gradRejected, float[] stats) {}

    /**
     * Checks the four required inputs (defined, fp32, contiguous {@code [B]} with B &gt;= 1,
     * one device) and returns B. Exceptions name the argument as in {@link #compute}.
     */
    public static long pairs(Tensor policyChosen, Tensor policyRejected, Tensor refChosen, Tensor refRejected) {
        String[] names = {"policyChosen", "policyRejected", "refChosen", "refRejected"};
        Tensor[] logps = {policyChosen, policyRejected, refChosen, refRejected};
        for (int i = 0; i < 4; i++) {
            TensorChecks.defined(logps[i], names[i]);
        }
        long pairs = logps[0].dim() == 1 ? logps[0].size(0) : -1;
        if (pairs < 1) {
            throw new IllegalArgumentException("policyChosen has shape "
                    + Arrays.toString(TensorChecks.shape(logps[0])) + " (expected [B] with B >= 1)");
        }
        for (int i = 0; i < 4; i++) {
            TensorChecks.dtype(logps[i], names[i], ScalarType.Float);
            TensorChecks.vector(logps[i], names[i], pairs);
        }
        return pairs;
    }

    /**
     * Runs the op. {@code margins} (nullable) holds SPO's per-pair target margins, fp32 [B];
     * without it every pair uses {@code p.margin()}. Native failures (a bad parameter) are
     * {@link IllegalArgumentException}s carrying the kernel's message.
     */
    public static Result compute(Params p, Tensor policyChosen, Tensor policyRejected, Tensor refChosen,
                                 Tensor refRejected, Tensor margins) {
        return compute(p, policyChosen, policyRejected, refChosen, refRejected, margins, true);
    }

    /**
     * As {@link #compute(Params, Tensor, Tensor, Tensor, Tensor, Tensor)}; without {@code withStats}
     * the kernel writes no batch means and nothing is read back to the host (on CUDA the call
     * only enqueues work on the current stream), and {@link Result#stats()} is null.
     */
    public static Result compute(Params p, Tensor policyChosen, Tensor policyRejected, Tensor refChosen,
                                 Tensor refRejected, Tensor margins, boolean withStats) {
        long pairs = pairs(policyChosen, policyRejected, refChosen, refRejected);
        if (margins != null) {
            TensorChecks.dtype(margins, "margins", ScalarType.Float);
            TensorChecks.vector(margins, "margins", pairs);
        }
        TensorChecks.Placement where = TensorChecks.sameDevice(
                new String[] {"policyChosen", "policyRejected", "refChosen", "refRejected", "margins"},
                policyChosen, policyRejected, refChosen, refRejected, margins);
        Tensor loss = Tensors.emptyFloats(policyChosen, pairs);
        Tensor gc = Tensors.emptyFloats(policyChosen, pairs);
        Tensor gr = Tensors.emptyFloats(policyChosen, pairs);
        Tensor stats = withStats ? Tensors.emptyFloats(policyChosen, STAT_COUNT) : null;
        FloatPointer st = withStats ? stats.data_ptr_float() : null;
        FloatPointer m = margins == null ? null : margins.data_ptr_float();
        try (Native.LossParams np = new Native.LossParams()) {
            np.type(p.type()).beta((float) p.beta()).label_smoothing((float) p.labelSmoothing())
                    .margin((float) p.margin()).margin_floor((float) p.marginFloor()).tau((float) p.tau())
                    .gamma((float) p.gamma()).delta((float) p.delta());
            int status;
            if (where == TensorChecks.Placement.CUDA) {
                status = Native.spo4j_preference_loss_cuda(np, pairs, policyChosen.data_ptr_float(),
                        policyRejected.data_ptr_float(), refChosen.data_ptr_float(), refRejected.data_ptr_float(), m,
                        loss.data_ptr_float(), gc.data_ptr_float(), gr.data_ptr_float(), st,
                        CudaKernels.currentStream(policyChosen));
            } else {
                status = Native.spo4j_preference_loss_cpu(np, pairs, policyChosen.data_ptr_float(),
                        policyRejected.data_ptr_float(), refChosen.data_ptr_float(), refRejected.data_ptr_float(), m,
                        loss.data_ptr_float(), gc.data_ptr_float(), gr.data_ptr_float(), st);
            }
            Native.check(status, p.name() + " loss");
        }
        return new Result(loss, gc, gr, withStats ? Tensors.toFloats(stats) : null);
    }
}
