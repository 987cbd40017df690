package dev.spo4j.loss;

/**
 * Settings of a {@link PreferenceLoss}; validated on construction. Formulas:
 * {@code src/site/markdown/LOSSES.md}.
 *
 * @param type             which loss
 * @param beta             the KL weight beta, finite and &gt; 0 (default 0.1)
 * @param labelSmoothing   DPO's eps in [0, 0.5) (default 0: plain DPO)
 * @param margin           the target margin m0 of pairs without scores, for the losses that
 *                         read a margin (spo, soft-dpo, spo-exp) (default 1.0: the
 *                         Bradley-Terry log-odds of p ~ 0.73)
 * @param rewardScale      gamma: m = gamma (score_chosen - score_rejected) (default 1.0)
 * @param lengthNormalised use the mean token log-prob instead of the sum (default: IPO only)
 * @param marginFloor      spo-exp's floor on |m|, finite and &gt; 0 (default 0.1): the loss is
 *                         written in beta h / m, so ties and tiny gaps are raised to it
 */
public record PreferenceLossConfig(LossType type, double beta, double labelSmoothing, double margin,
                                   double rewardScale, boolean lengthNormalised, double marginFloor) {
    /** beta's default (TRL's). */
    public static final double DEFAULT_BETA = 0.1;
    /** SPO's m0 default: the Bradley-Terry log-odds of p ~ 0.73. */
    public static final double DEFAULT_MARGIN = 1.0;
    /** SPO's gamma default. */
    public static final double DEFAULT_REWARD_SCALE = 1.0;
    /** spo-exp's floor on |m| by default. */
    public static final double DEFAULT_MARGIN_FLOOR = 0.1;

    /**
     * Checks the ranges above (margin and reward scale finite); throws IllegalArgumentException
     * naming the setting.
     */
    public PreferenceLossConfig {
        if (type == null) {
            throw new IllegalArgumentException("loss type is null (expected one of " + LossType.ids() + ")");
        }
        if (!(Double.isFinite(beta) && beta > 0)) {
            throw new IllegalArgumentException("beta = " + beta + " (expected a finite value > 0)");
        }
        if (!(labelSmoothing >= 0 && labelSmoothing < 0.5)) {
            throw new IllegalArgumentException("label smoothing = " + labelSmoothing + " (expected 0 <= eps < 0.5)");
        }
        if (!Double.isFinite(margin)) {
            throw new IllegalArgumentException("margin = " + margin + " (expected a finite value)");
        }
        if (!Double.isFinite(rewardScale)) {
            throw new IllegalArgumentException("reward scale = " + rewardScale + " (expected a finite value)");
        }
        if (!(Double.isFinite(marginFloor) && marginFloor > 0)) {
            throw new IllegalArgumentException("margin floor = " + marginFloor + " (expected a finite value > 0)");
        }
    }

    /** The defaults for a loss type: beta 0.1, eps 0, m0 1.0, gamma 1.0, length-normalised for IPO, floor 0.1. */
    public static PreferenceLossConfig of(LossType type) {
        return new PreferenceLossConfig(type, DEFAULT_BETA, 0.0, DEFAULT_MARGIN, DEFAULT_REWARD_SCALE,
                type == LossType.IPO, DEFAULT_MARGIN_FLOOR);
    }

    /** With another beta. */
    public PreferenceLossConfig withBeta(double v) {
        return new PreferenceLossConfig(type, v, labelSmoothing, margin, rewardScale, lengthNormalised, marginFloor);
    }

    /** With another label smoothing eps. */
    public PreferenceLossConfig withLabelSmoothing(double v) {
        return new PreferenceLossConfig(type, beta, v, margin, rewardScale, lengthNormalised, marginFloor);
    }

    /** With another m0. */
    public PreferenceLossConfig withMargin(double v) {
        return new PreferenceLossConfig(type, beta, labelSmoothing, v, rewardScale, lengthNormalised, marginFloor);
    }

    /** With another gamma. */
    public PreferenceLossConfig withRewardScale(double v) {
        return new PreferenceLossConfig(type, beta, labelSmoothing, margin, v, lengthNormalised, marginFloor);
    }

    /** With length normalisation on or off. */
    public PreferenceLossConfig withLengthNormalised(boolean v) {
        return new PreferenceLossConfig(type, beta, labelSmoothing, margin, rewardScale, v, marginFloor);
    }

    /** With another floor on |m| (spo-exp). */
    public PreferenceLossConfig withMarginFloor(double v) {
        return new PreferenceLossConfig(type, beta, labelSmoothing, margin, rewardScale, lengthNormalised, v);
    }
}
