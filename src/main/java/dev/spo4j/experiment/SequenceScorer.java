package dev.spo4j.experiment;

import dev.spo4j.kernels.TokenLogProbs;
import dev.spo4j.model.LlamaModel;
import java.util.Arrays;
import java.util.List;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * Summed log-probs of completions given prompts under a model, without gradients, through
 * the fused kernel: log pi(y|x) = sum over the completion's tokens of log pi(y_t | x, y_&lt;t).
 * Rows are prompt ++ completion, right-padded (positions then match an unpadded forward).
 */
public final class SequenceScorer {
    private SequenceScorer() {}

    /** log pi(completion_i | prompt_i) for each i; prompts non-empty, completions may be empty (0). */
    public static double[] logps(LlamaModel model, List<long[]> prompts, List<long[]> completions, int batchSize,
                                 int threads) {
        int n = prompts.size();
        double[] out = new double[n];
        try (NoGradGuard ng = new NoGradGuard()) {
            for (int start = 0; start < n; start += batchSize) {
                int end = Math.min(n, start + batchSize), b = end - start, t = 1;
                for (int i = start; i < end; i++) {
                    t = Math.max(t, prompts.get(i).length + completions.get(i).length);
                }
                long[] ids = new long[b * t], targets = new long[b * t];
                Arrays.fill(targets, TokenLogProbs.DEFAULT_IGNORE_INDEX);
                for (int r = 0; r < b; r++) {
                    long[] p = prompts.get(start + r), c = completions.get(start + r);
                    System.arraycopy(p, 0, ids, r * t, p.length);
                    System.arraycopy(c, 0, ids, r * t + p.length, c.length);
                    for (int k = 0; k < c.length; k++) {
                        targets[r * t + p.length - 1 + k] = c[k];
                    }
                }
                try (PointerScope scope = new PointerScope()) {
                    Tensor idsT = longs(ids, b, t), tg = longs(targets, (long) b * t);
                    Tensor logits = model.forward(idsT, null);
                    long v = logits.size(2);
                    TokenLogProbs.Result r = TokenLogProbs.forward(logits.view(-1, v), tg,
                            TokenLogProbs.DEFAULT_IGNORE_INDEX, false, threads);
                    Tensor seq = r.logp().view(b, t).sum(new long[] {1}, false, null).contiguous();
                    float[] f = new float[b];
                    seq.data_ptr_float().get(f);
                    for (int i = 0; i < b; i++) {
                        out[start + i] = f[i];
                    }
                }
            }
        }
        return out;
    }

    private static Tensor longs(long[] v, long... shape) {
        Tensor t = torch.empty(shape, new TensorOptions(ScalarType.Long), null);
        t.data_ptr_long().put(v);
        return t;
    }
}
