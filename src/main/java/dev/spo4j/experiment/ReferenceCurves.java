package dev.spo4j.experiment;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.List;

/**
 * Reference curves of gold reward against KL(pi || pi_ref) from a pool of N reference samples
 * per prompt, against which the trained policies are read:
 * <ul>
 *   <li>the KL-optimal policy pi*_beta(y|x) proportional to pi_ref(y|x) exp(r(x,y)/beta), the
 *       solution of the KL-regularised objective every loss here approximates, estimated by
 *       reweighting the pool (self-normalised importance sampling): weights w_j = exp(r_j/beta)
 *       / sum_k exp(r_k/beta), E[r] = sum w_j r_j, KL = sum w_j log(N w_j), and the effective
 *       sample size 1 / sum w_j^2 that says how far the estimate can be trusted (it is capped by
 *       N, so the curve is only meaningful while the ESS stays well above 1);</li>
 *   <li>best-of-n for n = 1, 2, 4, ..., N, selected by a score (gold, or the hackable proxy) and
 *       evaluated on gold, with the unbiased estimator over the pool's order statistics and
 *       the usual analytic KL, log n - (n - 1)/n.</li>
 * </ul>
 */
public final class ReferenceCurves {
    private ReferenceCurves() {}

    /**
     * One point of a curve, averaged over prompts.
     *
     * @param kind  "kl-optimal", "best-of-n-gold" or "best-of-n-proxy"
     * @param param beta for kl-optimal, n for best-of-n
     * @param kl    KL(pi || pi_ref) in nats
     * @param gold  mean gold reward
     * @param ess   mean effective sample size per prompt (kl-optimal), n for best-of-n
     */
    public record Point(String kind, double param, double kl, double gold, double ess) {}

    /** The reweighted pi*_beta over each prompt's pool {@code gold[prompt][sample]}, averaged over prompts. */
    public static Point klOptimal(double[][] gold, double beta) {
        double kl = 0, r = 0, ess = 0;
        for (double[] pool : gold) {
            int n = pool.length;
            double max = Arrays.stream(pool).max().orElseThrow();
            double[] w = new double[n];
            double z = 0;
            for (int j = 0; j < n; j++) {
                w[j] = Math.exp((pool[j] - max) / beta);
                z += w[j];
            }
            double sq = 0;
            for (int j = 0; j < n; j++) {
                w[j] /= z;
                r += w[j] * pool[j] / gold.length;
                kl += w[j] > 0 ? w[j] * Math.log(n * w[j]) / gold.length : 0;
                sq += w[j] * w[j];
            }
            ess += 1 / sq / gold.length;
        }
        return new Point("kl-optimal", beta, kl, r, ess);
    }

    /**
     * Expected gold reward of the sample with the highest {@code select} score among n drawn
     * without replacement from each prompt's pool: sort the pool by the score; the i-th
     * smallest (1-based) is the best of n with probability C(i-1, n-1) / C(N, n).
     */
    public static Point bestOfN(double[][] select, double[][] gold, int n, String kind) {
        double r = 0;
        for (int p = 0; p < gold.length; p++) {
            int size = gold[p].length;
            if (n > size) {
                throw new IllegalArgumentException("best-of-" + n + " from a pool of " + size);
            }
            Integer[] order = new Integer[size];
            for (int j = 0; j < size; j++) {
                order[j] = j;
            }
            double[] s = select[p];
            Arrays.sort(order, Comparator.comparingDouble(j -> s[j]));
            double logDenominator = logChoose(size, n);
            for (int i = n; i <= size; i++) {
                double prob = Math.exp(logChoose(i - 1, n - 1) - logDenominator);
                r += prob * gold[p][order[i - 1]] / gold.length;
            }
        }
        return new Point(kind, n, Math.log(n) - (n - 1.0) / n, r, n);
    }

    static double logChoose(int n, int k) {
        return Stats.logGamma(n + 1.0) - Stats.logGamma(k + 1.0) - Stats.logGamma(n - k + 1.0);
    }

    /** Every curve: kl-optimal over {@code betas}, best-of-n for n = 1, 2, 4, ... up to the pool size. */
    public static List<Point> all(double[][] gold, double[][] proxy, double[] betas) {
        List<Point> out = new ArrayList<>();
        for (double b : betas) {
            out.add(klOptimal(gold, b));
        }
        int size = gold[0].length;
        for (int n = 1; n <= size; n *= 2) {
            out.add(bestOfN(gold, gold, n, "best-of-n-gold"));
            out.add(bestOfN(proxy, gold, n, "best-of-n-proxy"));
        }
        return out;
    }
}
