package dev.spo4j.loss;

/** The float64 oracle of src/site/markdown/LOSSES.md: per-pair losses from the summed (or normalised) log-probs. */
final class PreferenceLossReference {
    private PreferenceLossReference() {}

    static double softplus(double x) {
        return Math.max(x, 0) + Math.log1p(Math.exp(-Math.abs(x)));
    }

    static double pairLoss(PreferenceLossConfig c, double pc, double pr, double rc, double rr, double margin) {
        double h = (pc - rc) - (pr - rr), bh = c.beta() * h;
        return switch (c.type()) {
            case SPO -> (bh - margin) * (bh - margin);
            case DPO -> (1 - c.labelSmoothing()) * softplus(-bh) + c.labelSmoothing() * softplus(bh);
            case IPO -> Math.pow(h - 1 / (2 * c.beta()), 2);
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
        };
    }

    /** Every pair's loss (margins nullable: m0). */
    static double[] pairLosses(PreferenceLossConfig c, double[] pc, double[] pr, double[] rc, double[] rr,
                               double[] margins) {
        double[] out = new double[pc.length];
        for (int i = 0; i < pc.length; i++) {
            out[i] = pairLoss(c, pc[i], pr[i], rc[i], rr[i], margins == null ? c.margin() : margins[i]);
        }
        return out;
    }

    /** Mean loss over pairs; token counts (nullable) divide the log-probs first. */
    static double meanLoss(PreferenceLossConfig c, double[] pc, double[] pr, double[] rc, double[] rr,
                           double[] margins, double[] nc, double[] nr) {
        double s = 0;
        for (int i = 0; i < pc.length; i++) {
            double a = nc == null ? 1 : nc[i], b = nr == null ? 1 : nr[i];
            s += pairLoss(c, pc[i] / a, pr[i] / b, rc[i] / a, rr[i] / b, margins == null ? c.margin() : margins[i]);
        }
        return s / pc.length;
    }
}
