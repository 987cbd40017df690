package dev.spo4j.loss;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Named metrics as (weighted sum, weight) pairs, in insertion order: what an objective returns
 * for one batch so that batches and processes combine without knowing what a metric means.
 * A pair-mean metric has weight = the number of pairs; a token-mean metric has weight = the
 * number of tokens it averages over. Adding two {@code MetricSums} adds sums and weights, and
 * {@link #mean(String)} is sum / weight: the mean over everything added.
 */
public final class MetricSums {
    private final Map<String, double[]> values = new LinkedHashMap<>();

    /** Adds {@code sum} and {@code weight} to metric {@code name} (created at the end if new). */
    public MetricSums add(String name, double sum, double weight) {
        double[] v = values.computeIfAbsent(name, k -> new double[2]);
        v[0] += sum;
        v[1] += weight;
        return this;
    }

    /** Adds a mean over {@code weight} items, i.e. sum = mean * weight. */
    public MetricSums addMean(String name, double mean, double weight) {
        return add(name, mean * weight, weight);
    }

    /** Adds every metric of {@code other}. */
    public MetricSums addAll(MetricSums other) {
        other.values.forEach((k, v) -> add(k, v[0], v[1]));
        return this;
    }

    /** The names, in insertion order. */
    public List<String> names() {
        return new ArrayList<>(values.keySet());
    }

    /** sum / weight of {@code name}; NaN when it has no weight or is absent. */
    public double mean(String name) {
        double[] v = values.get(name);
        return v == null || v[1] == 0 ? Double.NaN : v[0] / v[1];
    }

    /** Every metric's mean, in insertion order (metrics without weight left out). */
    public Map<String, Double> means() {
        Map<String, Double> m = new LinkedHashMap<>();
        values.forEach((k, v) -> {
            if (v[1] != 0) {
                m.put(k, v[0] / v[1]);
            }
        });
        return m;
    }

    /** {sum, weight} of each of {@code names} in turn (zeros for an absent one): for a collective sum. */
    public double[] toArray(List<String> names) {
        double[] out = new double[2 * names.size()];
        for (int i = 0; i < names.size(); i++) {
            double[] v = values.get(names.get(i));
            if (v != null) {
                out[2 * i] = v[0];
                out[2 * i + 1] = v[1];
            }
        }
        return out;
    }

    /** The inverse of {@link #toArray}, reading {@code names.size()} pairs from {@code offset}. */
    public static MetricSums fromArray(List<String> names, double[] v, int offset) {
        MetricSums m = new MetricSums();
        for (int i = 0; i < names.size(); i++) {
            m.add(names.get(i), v[offset + 2 * i], v[offset + 2 * i + 1]);
        }
        return m;
    }

    @Override
    public String toString() {
        return means().toString();
    }
}
