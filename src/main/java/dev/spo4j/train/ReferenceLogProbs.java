package dev.spo4j.train;

import dev.spo4j.data.PreferenceBatch;
import dev.spo4j.data.PreferenceCollator;
import dev.spo4j.data.PreferencePair;
import dev.spo4j.kernels.TokenLogProbs;
import dev.spo4j.model.LlamaModel;
import java.util.List;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Tensor;

/**
 * Summed log-probs of each pair's chosen and rejected completion under a frozen model
 * (the reference), computed once, without gradients, through the fused kernel.
 */
public final class ReferenceLogProbs {
    private ReferenceLogProbs() {}

    /** {chosen[n], rejected[n]} for the pairs, in order. */
    public static double[][] compute(LlamaModel model, PreferenceCollator collator, List<PreferencePair> pairs,
                                     int batchSize, int threads) {
        int n = pairs.size();
        double[] chosen = new double[n], rejected = new double[n];
        try (NoGradGuard ng = new NoGradGuard()) {
            for (int start = 0; start < n; start += batchSize) {
                int end = Math.min(n, start + batchSize);
                try (PointerScope scope = new PointerScope();
                     PreferenceBatch batch = collator.collate(pairs.subList(start, end))) {
                    double[] seq = sequenceLogps(model, batch, threads);
                    int b = end - start;
                    for (int i = 0; i < b; i++) {
                        chosen[start + i] = seq[i];
                        rejected[start + i] = seq[b + i];
                    }
                }
            }
        }
        return new double[][] {chosen, rejected};
    }

    /** Summed completion log-probs of every row of the batch ([2B]: chosen rows, then rejected). */
    static double[] sequenceLogps(LlamaModel model, PreferenceBatch batch, int threads) {
        org.bytedeco.pytorch.Device device = model.parameterList().get(0).device();
        Tensor ids = batch.inputIds().to(device, batch.inputIds().scalar_type());
        Tensor mask = batch.attentionMask().to(device, batch.attentionMask().scalar_type());
        Tensor targets = batch.targets().contiguous().view(-1);
        Tensor logits = model.forward(ids, mask);
        long v = logits.size(2);
        TokenLogProbs.Result r = TokenLogProbs.forward(logits.view(-1, v), targets.to(device, targets.scalar_type()),
                TokenLogProbs.DEFAULT_IGNORE_INDEX, false, threads);
        Tensor seq = r.logp().view(batch.rows(), batch.length()).sum(new long[] {1}, false, null).cpu().contiguous();
        double[] out = new double[batch.rows()];
        float[] f = new float[out.length];
        seq.data_ptr_float().get(f);
        for (int i = 0; i < f.length; i++) {
            out[i] = f[i];
        }
        return out;
    }
}
