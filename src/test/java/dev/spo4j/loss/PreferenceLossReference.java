package dev.spo4j.loss;

import java.util.Arrays;

/**
 * The float64 oracle of src/site/markdown/LOSSES.md: per-pair losses from the summed (or
 * normalised) log-probs. aot and aot-pair sort across the batch ({@link #pairLosses}); bco-pair
 * reads its reward shift delta as an argument (the trainer's running mean, held fixed).
 */
final class PreferenceLossReference {
    private PreferenceLossReference() {}

    static double softplus(double x) {
        return Math.max(x, 0) + Math.log1p(Math.exp(-Math.abs(x)));
    }

    static double sigmoid(double x) {
        return 0.5 * (1 + Math.tanh(0.5 * x));
    }

    /** -(1-eps) logsig(x) - eps logsig(-x). */
    static double dpo(double x, double eps) {
        return (1 - eps) * softplus(-x) + eps * softplus(x);
    }

    static double pairLoss(PreferenceLossConfig c, double pc, double pr, double rc, double rr, double margin,
                           double delta) {
        if (!c.type().needsReference()) {  // simpo, cpo: the reference log-probs are not read
            rc = 0;
            rr = 0;
        }
        double dc = pc - rc, dr = pr - rr, h = dc - dr, beta = c.beta(), bh = beta * h, eps = c.labelSmoothing();
        double rcw = beta * dc, rrw = beta * dr;
        return switch (c.type()) {
            case SPO -> (bh - margin) * (bh - margin);
            case DPO, CPO, AOT, AOT_PAIR -> dpo(bh, eps);  // aot, aot-pair: on sorted values (pairLosses)
            case SIMPO -> dpo(bh - c.simpoGamma(), eps);
            case IPO -> Math.pow(h - 1 / (2 * beta), 2);
            case HINGE -> Math.max(0, 1 - bh);
            case SOFT_DPO -> {
                double p = 1 / (1 + Math.exp(-margin));
                yield p * softplus(-bh) + (1 - p) * softplus(bh);
            }
            case SPO_EXP -> {
                double mt = margin < 0 ? Math.min(margin, -c.marginFloor()) : Math.max(margin, c.marginFloor());
                double z = bh / mt;
                yield z >= -10 ? Math.exp(-1) - z * Math.exp(-z)
                        : Math.exp(-1) + 10 * Math.exp(10) - 11 * Math.exp(10) * (z + 10);
            }
            case ROBUST -> ((1 - eps) * softplus(-bh) - eps * softplus(bh)) / (1 - 2 * eps);
            case EXO_PAIR -> {
                double e = eps == 0 ? 1e-3 : eps;
                yield sigmoid(bh) * (-softplus(-bh) - Math.log(1 - e)) + sigmoid(-bh) * (-softplus(bh) - Math.log(e));
            }
            case NCA_PAIR -> softplus(-rcw) + 0.5 * softplus(rcw) + 0.5 * softplus(rrw);
            case BCO_PAIR -> softplus(-(rcw - delta)) + softplus(rrw - delta);
            case SPPO_HARD -> Math.pow(dc - 0.5 / beta, 2) + Math.pow(dr + 0.5 / beta, 2);
            case APO_ZERO -> 1 - sigmoid(rcw) + sigmoid(rrw);
            case APO_DOWN -> sigmoid(rcw) + 1 - sigmoid(bh);
            case DISCOPOP -> {
                double w = sigmoid(bh / c.discopopTau());
                yield softplus(-bh) * (1 - w) + Math.exp(-bh) * w;
            }
        };
    }

    /** bco-pair's delta for a first batch: the mean of beta dc and beta dr over the batch. */
    static double firstBcoDelta(PreferenceLossConfig c, double[] pc, double[] pr, double[] rc, double[] rr) {
        double s = 0;
        for (int i = 0; i < pc.length; i++) {
            s += c.beta() * (pc[i] - rc[i]) + c.beta() * (pr[i] - rr[i]);
        }
        return s / (2 * pc.length);
    }

    /**
     * Every pair's loss (margins nullable: m0). aot: the sorted policy log-ratios against the
     * sorted reference ones; aot-pair: the sorted dc against the sorted dr (losses by sorted
     * position, as TRL returns them).
     */
    static double[] pairLosses(PreferenceLossConfig c, double[] pc, double[] pr, double[] rc, double[] rr,
                               double[] margins, double delta) {
        int n = pc.length;
        if (c.type().sortsBatch()) {
            double[] a = new double[n], b = new double[n];
            for (int i = 0; i < n; i++) {
                a[i] = c.type() == LossType.AOT ? pc[i] - pr[i] : pc[i] - rc[i];
                b[i] = c.type() == LossType.AOT ? rc[i] - rr[i] : pr[i] - rr[i];
            }
            Arrays.sort(a);
            Arrays.sort(b);
            double[] out = new double[n];
            for (int i = 0; i < n; i++) {
                out[i] = dpo(c.beta() * (a[i] - b[i]), c.labelSmoothing());
            }
            return out;
        }
        double[] out = new double[n];
        for (int i = 0; i < n; i++) {
            out[i] = pairLoss(c, pc[i], pr[i], rc[i], rr[i], margins == null ? c.margin() : margins[i], delta);
        }
        return out;
    }

    /** Mean loss over pairs; token counts (nullable) divide the log-probs first. */
    static double meanLoss(PreferenceLossConfig c, double[] pc, double[] pr, double[] rc, double[] rr,
                           double[] margins, double[] nc, double[] nr, double delta) {
        int n = pc.length;
        double[] a = new double[n], b = new double[n], x = new double[n], y = new double[n];
        for (int i = 0; i < n; i++) {
            double u = nc == null ? 1 : nc[i], v = nr == null ? 1 : nr[i];
            a[i] = pc[i] / u;
            b[i] = pr[i] / v;
            x[i] = rc[i] / u;
            y[i] = rr[i] / v;
        }
        return Arrays.stream(pairLosses(c, a, b, x, y, margins, delta)).sum() / n;
    }
}
