package dev.spo4j.train.dist;

import dev.spo4j.loss.MetricSums;
import java.util.ArrayList;
import java.util.List;

/**
 * Sums a step's metrics over all ranks in one all-reduce: each part (a micro-batch, or a whole
 * evaluation) as {@link MetricSums} of the given names, plus a token count. The result holds,
 * per part, the global sums and weights, so its means are global means (pair metrics over all
 * pairs, token metrics over all tokens) without this class knowing which metric is which.
 */
public final class MetricReduction {
    private MetricReduction() {}

    /** The reduced parts, in order, and the global token count. */
    public record Reduced(List<MetricSums> parts, double tokens) {}

    /** Sums {@code parts} (each over {@code names}; absent names count as 0) and {@code tokens} over the ranks. */
    public static Reduced allReduce(DataParallel dp, List<String> names, List<MetricSums> parts, double tokens,
                                    String what) {
        int width = 2 * names.size();
        double[] v = new double[parts.size() * width + 1];
        for (int i = 0; i < parts.size(); i++) {
            System.arraycopy(parts.get(i).toArray(names), 0, v, i * width, width);
        }
        v[v.length - 1] = tokens;
        double[] all = dp.sum(v, what);
        List<MetricSums> out = new ArrayList<>(parts.size());
        for (int i = 0; i < parts.size(); i++) {
            out.add(MetricSums.fromArray(names, all, i * width));
        }
        return new Reduced(out, all[all.length - 1]);
    }
}
