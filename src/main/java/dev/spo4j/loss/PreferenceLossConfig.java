package dev.spo4j.loss;

import java.util.ArrayList;
import java.util.List;

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
 * @param discopopTau      discopop's temperature tau, finite and &gt; 0 (default 0.05, TRL's)
 * @param simpoGamma       simpo's target reward margin gamma, finite (default 0.5, TRL's)
 * @param mix              empty, or the weighted losses summed (TRL's loss_type list with
 *                         loss_weights); then {@code type} is the first entry's type
 */
public record PreferenceLossConfig(LossType type, double beta, double labelSmoothing, double margin,
                                   double rewardScale, boolean lengthNormalised, double marginFloor,
                                   double discopopTau, double simpoGamma, List<WeightedLoss> mix) {
    /** One term of a weighted sum of losses: {@code weight * loss(type)}. */
    public record WeightedLoss(LossType type, double weight) {
        /** Checks the type (not null) and the weight (finite). */
        public WeightedLoss {
            if (type == null) {
                throw new IllegalArgumentException("loss type is null (expected one of " + LossType.ids() + ")");
            }
            if (!Double.isFinite(weight)) {
                throw new IllegalArgumentException("loss weight of " + type.id() + " = " + weight
                        + " (expected a finite value)");
            }
        }
    }

    /** beta's default (TRL's). */
    public static final double DEFAULT_BETA = 0.1;
    /** SPO's m0 default: the Bradley-Terry log-odds of p ~ 0.73. */
    public static final double DEFAULT_MARGIN = 1.0;
    /** SPO's gamma default. */
    public static final double DEFAULT_REWARD_SCALE = 1.0;
    /** spo-exp's floor on |m| by default. */
    public static final double DEFAULT_MARGIN_FLOOR = 0.1;
    /** discopop's tau by default (TRL's discopop_tau). */
    public static final double DEFAULT_DISCOPOP_TAU = 0.05;
    /** simpo's gamma by default (TRL's simpo_gamma). */
    public static final double DEFAULT_SIMPO_GAMMA = 0.5;

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
        if (!(Double.isFinite(discopopTau) && discopopTau > 0)) {
            throw new IllegalArgumentException("discopop tau = " + discopopTau + " (expected a finite value > 0)");
        }
        if (!Double.isFinite(simpoGamma)) {
            throw new IllegalArgumentException("simpo gamma = " + simpoGamma + " (expected a finite value)");
        }
        mix = mix == null ? List.of() : List.copyOf(mix);
        if (!mix.isEmpty()) {
            if (mix.get(0).type() != type) {
                throw new IllegalArgumentException("loss type " + type.id() + " is not the mix's first loss "
                        + mix.get(0).type().id());
            }
            for (int i = 0; i < mix.size(); i++) {
                for (int j = 0; j < i; j++) {
                    if (mix.get(i).type() == mix.get(j).type()) {
                        throw new IllegalArgumentException("loss " + mix.get(i).type().id()
                                + " appears twice in the loss list (expected each at most once)");
                    }
                }
            }
            boolean refFree = !mix.get(0).type().needsReference();
            for (WeightedLoss w : mix) {
                if (w.type().needsReference() == refFree) {
                    throw new IllegalArgumentException("the loss list mixes reference-free losses (simpo, cpo) with "
                            + "losses that need a reference (" + w.type().id() + "): expected one kind");
                }
            }
        }
    }

    /** The weighted terms: the mix, or {@code type} with weight 1. */
    public List<WeightedLoss> terms() {
        return mix.isEmpty() ? List.of(new WeightedLoss(type, 1.0)) : mix;
    }

    /** Whether any term reads reference log-probs (false: no reference pass is needed). */
    public boolean needsReference() {
        return type.needsReference();
    }

    /** Whether every term is {@link LossType#pairSeparable()}: the loss is a mean of per-pair terms. */
    public boolean pairSeparable() {
        return terms().stream().allMatch(w -> w.type().pairSeparable());
    }

    /** The same settings for one of the terms' types, without a mix. */
    public PreferenceLossConfig single(LossType t) {
        return new PreferenceLossConfig(t, beta, labelSmoothing, margin, rewardScale, lengthNormalised, marginFloor,
                discopopTau, simpoGamma, List.of());
    }

    /**
     * The defaults for a loss type: beta 0.1, eps 0, m0 1.0, reward scale 1.0, length-normalised
     * for IPO and SimPO, floor 0.1, tau 0.05, simpo gamma 0.5.
     */
    public static PreferenceLossConfig of(LossType type) {
        return new PreferenceLossConfig(type, DEFAULT_BETA, 0.0, DEFAULT_MARGIN, DEFAULT_REWARD_SCALE,
                type == LossType.IPO || type == LossType.SIMPO, DEFAULT_MARGIN_FLOOR, DEFAULT_DISCOPOP_TAU,
                DEFAULT_SIMPO_GAMMA, List.of());
    }

    /**
     * Parses {@code LOSS=W} entries (TRL's loss_type list with loss_weights, e.g. "dpo=1",
     * "bco_pair=0.5"); null or empty gives an empty list. Throws IllegalArgumentException
     * naming the entry.
     */
    public static List<WeightedLoss> parseWeights(List<String> entries) {
        List<WeightedLoss> out = new ArrayList<>();
        if (entries == null) {
            return out;
        }
        for (String e : entries) {
            int eq = e == null ? -1 : e.indexOf('=');
            if (eq < 1) {
                throw new IllegalArgumentException("loss weight '" + e + "' (expected LOSS=W, e.g. dpo=1.0)");
            }
            double w;
            try {
                w = Double.parseDouble(e.substring(eq + 1).trim());
            } catch (NumberFormatException x) {
                throw new IllegalArgumentException("loss weight '" + e + "' (expected LOSS=W with a number W)");
            }
            String name = e.substring(0, eq).trim();
            if (name.equalsIgnoreCase("sft")) {
                throw new IllegalArgumentException("loss weight '" + e + "': TRL's sft term is --sft-weight " + w
                        + " here (the objective's alpha NLL of the chosen answer), not an entry of the loss list");
            }
            out.add(new WeightedLoss(LossType.parse(name), w));
        }
        return out;
    }

    /** With a weighted sum of losses (TRL's loss_type list and loss_weights); its first type becomes the type. */
    public PreferenceLossConfig withMix(List<WeightedLoss> v) {
        LossType t = v == null || v.isEmpty() ? type : v.get(0).type();
        return new PreferenceLossConfig(t, beta, labelSmoothing, margin, rewardScale, lengthNormalised, marginFloor,
                discopopTau, simpoGamma, v);
    }

    /** With another discopop tau. */
    public PreferenceLossConfig withDiscopopTau(double v) {
        return new PreferenceLossConfig(type, beta, labelSmoothing, margin, rewardScale, lengthNormalised, marginFloor,
                v, simpoGamma, mix);
    }

    /** With another simpo gamma. */
    public PreferenceLossConfig withSimpoGamma(double v) {
        return new PreferenceLossConfig(type, beta, labelSmoothing, margin, rewardScale, lengthNormalised, marginFloor,
                discopopTau, v, mix);
    }

    /** With another beta. */
    public PreferenceLossConfig withBeta(double v) {
        return new PreferenceLossConfig(type, v, labelSmoothing, margin, rewardScale, lengthNormalised, marginFloor,
                discopopTau, simpoGamma, mix);
    }

    /** With another label smoothing eps. */
    public PreferenceLossConfig withLabelSmoothing(double v) {
        return new PreferenceLossConfig(type, beta, v, margin, rewardScale, lengthNormalised, marginFloor,
                discopopTau, simpoGamma, mix);
    }

    /** With another m0. */
    public PreferenceLossConfig withMargin(double v) {
        return new PreferenceLossConfig(type, beta, labelSmoothing, v, rewardScale, lengthNormalised, marginFloor,
                discopopTau, simpoGamma, mix);
    }

    /** With another gamma. */
    public PreferenceLossConfig withRewardScale(double v) {
        return new PreferenceLossConfig(type, beta, labelSmoothing, margin, v, lengthNormalised, marginFloor,
                discopopTau, simpoGamma, mix);
    }

    /** With length normalisation on or off. */
    public PreferenceLossConfig withLengthNormalised(boolean v) {
        return new PreferenceLossConfig(type, beta, labelSmoothing, margin, rewardScale, v, marginFloor,
                discopopTau, simpoGamma, mix);
    }

    /** With another floor on |m| (spo-exp). */
    public PreferenceLossConfig withMarginFloor(double v) {
        return new PreferenceLossConfig(type, beta, labelSmoothing, margin, rewardScale, lengthNormalised, v,
                discopopTau, simpoGamma, mix);
    }
}
