package dev.spo4j.kernels;

/**
 * The float64 oracle for the token log-probs kernel (plain Java, two passes per row, exact
 * max-shifted log-sum-exp). Inputs are the logits' values as doubles (bf16/fp16 values are
 * exactly representable), row-major [rows, V].
 */
final class TokenLogProbsReference {
    private TokenLogProbsReference() {}

    static void forward(double[] z, int rows, int vocab, long[] targets, long ignoreIndex,
                        double[] logp, double[] lse, double[] entropy) {
        for (int r = 0; r < rows; r++) {
            if (targets[r] == ignoreIndex) {
                logp[r] = lse[r] = entropy[r] = 0;
                continue;
            }
            int o = r * vocab;
            double m = Double.NEGATIVE_INFINITY;
            for (int v = 0; v < vocab; v++) {
                m = Math.max(m, z[o + v]);
            }
            double s = 0;
            for (int v = 0; v < vocab; v++) {
                s += Math.exp(z[o + v] - m);
            }
            double l = m + Math.log(s);
            double pz = 0;
            for (int v = 0; v < vocab; v++) {
                double p = Math.exp(z[o + v] - l);
                if (p > 0) {
                    pz += p * z[o + v];
                }
            }
            lse[r] = l;
            logp[r] = z[o + (int) targets[r]] - l;
            entropy[r] = l - pz;
        }
    }

    static double[] backward(double[] z, int rows, int vocab, long[] targets, long ignoreIndex,
                             double[] lse, double[] g) {
        double[] out = new double[z.length];
        for (int r = 0; r < rows; r++) {
            if (targets[r] == ignoreIndex) {
                continue;
            }
            int o = r * vocab;
            for (int v = 0; v < vocab; v++) {
                double p = Math.exp(z[o + v] - lse[r]);
                out[o + v] = g[r] * ((v == targets[r] ? 1 : 0) - p);
            }
        }
        return out;
    }
}
