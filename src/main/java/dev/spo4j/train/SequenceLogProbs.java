package dev.spo4j.train;

import dev.spo4j.data.PreferenceBatch;
import dev.spo4j.data.TokenRule;
import dev.spo4j.kernels.LmHeadLogProbs;
import dev.spo4j.kernels.Tensors;
import dev.spo4j.kernels.TokenLogProbs;
import dev.spo4j.loss.LmHead;
import dev.spo4j.model.LlamaModel;
import java.util.List;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Device;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Tensor;

/**
 * Summed log-probs of completions given prompts under a model, without gradients, through the
 * fused LM head ({@link LmHeadLogProbs}: from the hidden states, one chunk of logits at a time;
 * the default) or the model's materialised logits and the fused kernel:
 * log pi(y|x) = sum over the completion's scored tokens of log pi(y_t | x, y_&lt;t),
 * rows laid out by the {@link TokenRule token rule}. Used for reference log-probs
 * ({@link ReferenceLogProbs}, {@code spo4j logps}) and by the experiment's KL estimates.
 */
public final class SequenceLogProbs {
    private SequenceLogProbs() {}

    /** Summed completion log-probs of every row of a collated batch ([2B]: chosen rows, then rejected). */
    public static double[] of(LlamaModel model, PreferenceBatch batch, int threads) {
        return of(model, batch, threads, LmHead.FUSED, LmHeadLogProbs.DEFAULT_CHUNK_BYTES);
    }

    /** As {@link #of(LlamaModel, PreferenceBatch, int)} with the LM head and its chunk budget chosen. */
    public static double[] of(LlamaModel model, PreferenceBatch batch, int threads, LmHead head, long chunkBytes) {
        try (NoGradGuard ng = new NoGradGuard()) {
            return sums(model, batch.inputIds(), batch.attentionMask(), batch.targets(), threads, head, chunkBytes);
        }
    }

    /**
     * log pi(completion_i | prompt_i) for each i, {@code batchSize} rows per forward; prompts
     * non-empty (their tokens are used as given), completions may be empty (log-prob 0). The
     * rows are right-padded and run without an attention mask: under the causal mask a real
     * position never sees the padding after it.
     */
    public static double[] of(LlamaModel model, List<long[]> prompts, List<long[]> completions, int batchSize,
                              int threads) {
        return of(model, prompts, completions, batchSize, threads, LmHead.FUSED, LmHeadLogProbs.DEFAULT_CHUNK_BYTES);
    }

    /** As {@link #of(LlamaModel, List, List, int, int)} with the LM head and its chunk budget chosen. */
    public static double[] of(LlamaModel model, List<long[]> prompts, List<long[]> completions, int batchSize,
                              int threads, LmHead head, long chunkBytes) {
        int n = prompts.size();
        double[] out = new double[n];
        try (NoGradGuard ng = new NoGradGuard()) {
            for (int start = 0; start < n; start += batchSize) {
                int end = Math.min(n, start + batchSize);
                try (PointerScope scope = new PointerScope()) {
                    TokenRule.Rows rows = TokenRule.rows(prompts.subList(start, end), completions.subList(start, end), 0);
                    double[] s = sums(model, rows.ids(), null, rows.targets(), threads, head, chunkBytes);
                    System.arraycopy(s, 0, out, start, s.length);
                }
            }
        }
        return out;
    }

    /** One forward of [rows, T] ids; the per-row sums of the scored targets' log-probs. */
    private static double[] sums(LlamaModel model, Tensor ids, Tensor mask, Tensor targets, int threads,
                                 LmHead head, long chunkBytes) {
        Device device = model.parameterList().get(0).device();
        Tensor flatTargets = onDevice(targets.contiguous().view(-1), device);
        long rows = ids.size(0), length = ids.size(1);
        Tensor logp;
        if (head == LmHead.MATERIALISED) {
            Tensor logits = model.forward(onDevice(ids, device), mask == null ? null : onDevice(mask, device));
            logp = TokenLogProbs.forward(logits.view(-1, logits.size(2)), flatTargets,
                    TokenLogProbs.DEFAULT_IGNORE_INDEX, false, threads).logp();
        } else {
            Tensor hidden = model.hiddenStates(onDevice(ids, device), mask == null ? null : onDevice(mask, device));
            logp = new LmHeadLogProbs(chunkBytes, Math.max(1, threads)).forward(hidden.view(-1, hidden.size(2)),
                    model.headWeight(), flatTargets, TokenLogProbs.DEFAULT_IGNORE_INDEX, false,
                    TokenLogProbs.TargetCheck.CHECKED).logp();
        }
        float[] f = Tensors.toFloats(logp.view(rows, length).sum(new long[] {1}, false, null));
        double[] out = new double[f.length];
        for (int i = 0; i < f.length; i++) {
            out[i] = f[i];
        }
        return out;
    }

    /** {@code t} on {@code device} (itself on the CPU; null stays null). */
    static Tensor onDevice(Tensor t, Device device) {
        return t == null || device.is_cpu() ? t : t.to(device, t.scalar_type().intern());
    }
}
