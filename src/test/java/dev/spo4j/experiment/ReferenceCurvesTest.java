package dev.spo4j.experiment;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Random;
import org.junit.jupiter.api.Test;

/** The reference curves against brute force and closed forms. */
class ReferenceCurvesTest {
    @Test
    void bestOfNMatchesEnumerationOfSubsets() {
        double[][] gold = {{0.3, -1, 2, 0.7, 1.1}}, proxy = {{5, 1, 0, 3, 4}};
        for (int n = 1; n <= 5; n++) {
            double sum = 0;
            int subsets = 0;
            for (int mask = 0; mask < 32; mask++) {
                if (Integer.bitCount(mask) != n) {
                    continue;
                }
                int best = -1;
                for (int j = 0; j < 5; j++) {
                    if ((mask >> j & 1) == 1 && (best < 0 || proxy[0][j] > proxy[0][best])) {
                        best = j;
                    }
                }
                sum += gold[0][best];
                subsets++;
            }
            ReferenceCurves.Point p = ReferenceCurves.bestOfN(proxy, gold, n, "best-of-n-proxy");
            assertEquals(sum / subsets, p.gold(), 1e-12, "n=" + n);
            assertEquals(Math.log(n) - (n - 1.0) / n, p.kl(), 1e-15);
        }
        // selected by proxy, the best of all five is the proxy's favourite (gold 0.3), not gold's best (2)
        assertEquals(0.3, ReferenceCurves.bestOfN(proxy, gold, 5, "x").gold(), 1e-12);
        assertEquals(2.0, ReferenceCurves.bestOfN(gold, gold, 5, "x").gold(), 1e-12);
    }

    @Test
    void klOptimalByHandAndLimits() {
        double[][] gold = {{0, 1}};
        double beta = 0.5, w1 = Math.exp(2) / (1 + Math.exp(2)), w0 = 1 - w1;
        ReferenceCurves.Point p = ReferenceCurves.klOptimal(gold, beta);
        assertEquals(w1, p.gold(), 1e-12);
        assertEquals(w0 * Math.log(2 * w0) + w1 * Math.log(2 * w1), p.kl(), 1e-12);
        assertEquals(1 / (w0 * w0 + w1 * w1), p.ess(), 1e-12);
        // large beta: the reference itself (KL 0, mean reward, ESS = pool size); small beta: the best sample
        double[][] pool = new double[50][16];
        Random rnd = new Random(3);
        double mean = 0, max = 0;
        for (double[] row : pool) {
            double m = Double.NEGATIVE_INFINITY;
            for (int j = 0; j < row.length; j++) {
                row[j] = rnd.nextGaussian();
                mean += row[j] / (50 * 16);
                m = Math.max(m, row[j]);
            }
            max += m / 50;
        }
        ReferenceCurves.Point wide = ReferenceCurves.klOptimal(pool, 1e6), narrow = ReferenceCurves.klOptimal(pool, 1e-4);
        assertEquals(mean, wide.gold(), 1e-5);
        assertEquals(0, wide.kl(), 1e-9);
        assertEquals(16, wide.ess(), 1e-6);
        assertEquals(max, narrow.gold(), 1e-9);
        assertEquals(Math.log(16), narrow.kl(), 1e-6);
        // the KL-optimal point beats best-of-n at the same KL or lies close: gold increases with KL along it
        double last = Double.NEGATIVE_INFINITY;
        for (double b : new double[] {10, 3, 1, 0.3, 0.1}) {
            double g = ReferenceCurves.klOptimal(pool, b).gold();
            assertTrue(g > last);
            last = g;
        }
    }
}
