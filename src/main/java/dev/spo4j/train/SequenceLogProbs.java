package dev.spo4j.train;

import dev.spo4j.data.PreferenceBatch;
import dev.spo4j.data.TokenRule;
import dev.spo4j.kernels.Tensors;
import dev.spo4j.kernels.TokenLogProbs;
import dev.spo4j.model.LlamaModel;
import java.util.List;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Device;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Tensor;

/**
 * Summed log-probs of completions given prompts under a model, without gradients, through the
 * fused kernel: log pi(y|x) = sum over the completion's scored tokens of log pi(y_t | x, y_&lt;t),
 * rows laid out by the {@link TokenRule token rule}. Used for reference log-probs
 * ({@link ReferenceLogProbs}, {@code spo4j logps}) and by the experiment's KL estimates.
 */
public final class SequenceLogProbs {
    private SequenceLogProbs() {}

    /** Summed completion log-probs of every row of a collated batch ([2B]: chosen rows, then rejected). */
    public static double[] of(LlamaModel model, PreferenceBatch batch, int threads) {
        try (NoGradGuard ng = new NoGradGuard()) {
            return sums(model, batch.inputIds(), batch.attentionMask(), batch.targets(), threads);
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
        int n = prompts.size();
        double[] out = new double[n];
        try (NoGradGuard ng = new NoGradGuard()) {
            for (int start = 0; start < n; start += batchSize) {
                int end = Math.min(n, start + batchSize);
                try (PointerScope scope = new PointerScope()) {
                    TokenRule.Rows rows = TokenRule.rows(prompts.subList(start, end), completions.subList(start, end), 0);
                    double[] s = sums(model, rows.ids(), null, rows.targets(), threads);
                    System.arraycopy(s, 0, out, start, s.length);
                }
            }
        }
        return out;
    }

    /** One forward of [rows, T] ids; the per-row sums of the scored targets' log-probs. */
    private static double[] sums(LlamaModel model, Tensor ids, Tensor mask, Tensor targets, int threads) {
        Device device = model.parameterList().get(0).device();
        Tensor logits = model.forward(onDevice(ids, device), mask == null ? null : onDevice(mask, device));
        long rows = ids.size(0), length = ids.size(1), v = logits.size(2);
        TokenLogProbs.Result r = TokenLogProbs.forward(logits.view(-1, v),
                onDevice(targets.contiguous().view(-1), device), TokenLogProbs.DEFAULT_IGNORE_INDEX, false, threads);
        float[] f = Tensors.toFloats(r.logp().view(rows, length).sum(new long[] {1}, false, null));
        double[] out = new double[f.length];
        for (int i = 0; i < f.length; i++) {
            out[i] = f[i];
        }
        return out;
    }

    private static Tensor onDevice(Tensor t, Device device) {
        return device.is_cpu() ? t : t.to(device, t.scalar_type().intern());
    }
}
