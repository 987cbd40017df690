package dev.spo4j.testing;

import static org.junit.jupiter.api.Assertions.fail;

/**
 * The one allclose of the test suite (llm.c's validate_result, Liger's assert_verbose_allclose):
 * shape first, then |actual - expected| <= atol + rtol |expected| element by element, with
 * NaN matching only NaN and an infinity only the same infinity. On failure it prints the
 * first mismatches and the largest difference.
 */
public final class AllClose {
    private AllClose() {}

    public static void assertAllClose(String what, double[] expected, double[] actual, double atol, double rtol) {
        if (expected.length != actual.length) {
            fail(what + ": length " + actual.length + ", expected " + expected.length);
        }
        int bad = 0;
        double maxDiff = 0;
        int maxAt = -1;
        StringBuilder first = new StringBuilder();
        for (int i = 0; i < expected.length; i++) {
            double e = expected[i], a = actual[i];
            boolean ok;
            double diff;
            if (Double.isNaN(e) || Double.isNaN(a)) {
                ok = Double.isNaN(e) && Double.isNaN(a);
                diff = ok ? 0 : Double.POSITIVE_INFINITY;
            } else if (Double.isInfinite(e) || Double.isInfinite(a)) {
                ok = e == a;
                diff = ok ? 0 : Double.POSITIVE_INFINITY;
            } else {
                diff = Math.abs(a - e);
                ok = diff <= atol + rtol * Math.abs(e);
            }
            if (diff > maxDiff) {
                maxDiff = diff;
                maxAt = i;
            }
            if (!ok) {
                if (bad < 5) {
                    first.append(String.format("%n  [%d] expected %.9g got %.9g (diff %.3g)", i, e, a, diff));
                }
                bad++;
            }
        }
        if (bad > 0) {
            fail(String.format("%s: %d of %d elements differ (atol %.1e, rtol %.1e); max diff %.3g at [%d]%s",
                    what, bad, expected.length, atol, rtol, maxDiff, maxAt, first));
        }
    }

    /** Largest |a - e| over finite pairs (both infinities of the same sign count as 0). */
    public static double maxAbsDiff(double[] expected, double[] actual) {
        double m = 0;
        for (int i = 0; i < expected.length; i++) {
            double e = expected[i], a = actual[i];
            if (e == a) {
                continue;
            }
            m = Math.max(m, Math.abs(a - e));
        }
        return m;
    }
}
