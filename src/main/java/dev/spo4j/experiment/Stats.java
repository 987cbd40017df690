package dev.spo4j.experiment;

/**
 * The small statistics the experiment reports: Student-t intervals, paired t-tests, and the
 * Student-t distribution function they need (through the regularised incomplete beta
 * function, evaluated by its continued fraction).
 */
public final class Stats {
    private Stats() {}

    /** Mean of {@code v} (NaN when empty). */
    public static double mean(double[] v) {
        double s = 0;
        for (double x : v) {
            s += x;
        }
        return s / v.length;
    }

    /** Sample standard deviation (n - 1); NaN below two values. */
    public static double sd(double[] v) {
        if (v.length < 2) {
            return Double.NaN;
        }
        double m = mean(v), ss = 0;
        for (double x : v) {
            ss += (x - m) * (x - m);
        }
        return Math.sqrt(ss / (v.length - 1));
    }

    /** ln Gamma(x) for x > 0 (Lanczos, g = 7, 9 terms; about 1e-15 relative). */
    static double logGamma(double x) {
        if (x < 0.5) {
            return Math.log(Math.PI / Math.abs(Math.sin(Math.PI * x))) - logGamma(1 - x);
        }
        double[] c = {0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313,
                -176.61502916214059, 12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6,
                1.5056327351493116e-7};
        x -= 1;
        double a = c[0];
        double t = x + 7.5;
        for (int i = 1; i < 9; i++) {
            a += c[i] / (x + i);
        }
        return 0.5 * Math.log(2 * Math.PI) + (x + 0.5) * Math.log(t) - t + Math.log(a);
    }

    /** The regularised incomplete beta function I_x(a, b), 0 <= x <= 1, a, b > 0. */
    static double incompleteBeta(double x, double a, double b) {
        if (x <= 0) {
            return 0;
        }
        if (x >= 1) {
            return 1;
        }
        double front = Math.exp(logGamma(a + b) - logGamma(a) - logGamma(b) + a * Math.log(x) + b * Math.log1p(-x));
        // the continued fraction converges fast for x < (a + 1) / (a + b + 2); use the symmetry otherwise
        if (x > (a + 1) / (a + b + 2)) {
            return 1 - incompleteBeta(1 - x, b, a);
        }
        return front * betaFraction(x, a, b) / a;
    }

    /** The continued fraction of I_x(a, b) by the modified Lentz method. */
    private static double betaFraction(double x, double a, double b) {
        final double tiny = 1e-300;
        double f = 1, c = 1, d = 0;
        for (int i = 0; i <= 400; i++) {
            int m = i / 2;
            double num;
            if (i == 0) {
                num = 1;
            } else if (i % 2 == 0) {
                num = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m));
            } else {
                num = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1));
            }
            d = 1 + num * d;
            d = Math.abs(d) < tiny ? tiny : d;
            d = 1 / d;
            c = 1 + num / c;
            c = Math.abs(c) < tiny ? tiny : c;
            double cd = c * d;
            f *= cd;
            if (Math.abs(1 - cd) < 1e-15) {
                return (f - 1);
            }
        }
        return f - 1;
    }

    /** Two-sided p-value of a Student t statistic with {@code df} degrees of freedom. */
    public static double twoSidedP(double t, double df) {
        if (Double.isNaN(t) || df < 1) {
            return Double.NaN;
        }
        if (Double.isInfinite(t)) {
            return 0;
        }
        return incompleteBeta(df / (df + t * t), df / 2, 0.5);
    }

    /** The t quantile t(0.975, df): bisection on {@link #twoSidedP}. */
    public static double t975(int df) {
        if (df < 1) {
            return Double.NaN;
        }
        double lo = 0, hi = 1000;
        for (int i = 0; i < 200; i++) {
            double mid = 0.5 * (lo + hi);
            if (twoSidedP(mid, df) > 0.05) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        return 0.5 * (lo + hi);
    }

    /** {mean, lo, hi} of a 95% Student-t interval over {@code v}; lo = hi = mean for one value. */
    public static double[] tInterval(double[] v) {
        double m = mean(v);
        if (v.length < 2) {
            return new double[] {m, m, m};
        }
        double half = t975(v.length - 1) * sd(v) / Math.sqrt(v.length);
        return new double[] {m, m - half, m + half};
    }

    /**
     * A paired t-test of {@code a - b} (same seeds, same order): {mean difference, 95% lo, hi,
     * two-sided p}. With fewer than two pairs the interval and p are NaN; with zero spread and a
     * non-zero mean p is 0.
     */
    public static double[] paired(double[] a, double[] b) {
        if (a.length != b.length) {
            throw new IllegalArgumentException("paired test: " + a.length + " vs " + b.length + " values");
        }
        double[] d = new double[a.length];
        for (int i = 0; i < d.length; i++) {
            d[i] = a[i] - b[i];
        }
        double m = mean(d);
        if (d.length < 2) {
            return new double[] {m, Double.NaN, Double.NaN, Double.NaN};
        }
        double se = sd(d) / Math.sqrt(d.length);
        double half = t975(d.length - 1) * se;
        double p = se == 0 ? (m == 0 ? 1 : 0) : twoSidedP(m / se, d.length - 1);
        return new double[] {m, m - half, m + half, p};
    }
}
