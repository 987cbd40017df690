package dev.spo4j.experiment;

import dev.spo4j.loss.LossType;
import java.util.Locale;

/**
 * One arm of the experiment: a loss and the information it is given. Its name is the loss,
 * then an optional suffix:
 * <ul>
 *   <li>{@code spo}, {@code spo-exp}, {@code soft-dpo}: the pairs' proxy scores (the target
 *       margin or soft label m = s_c - s_r of the proxy annotator);</li>
 *   <li>{@code spo-gold}: SPO with the exact gold gaps (the ceiling: information no real
 *       annotator gives);</li>
 *   <li>{@code dpo}, {@code cdpo}, {@code ipo}, {@code hinge}, {@code spo-m0} (SPO with the
 *       constant margin m0): the labels alone, ordered by the proxy annotator; the suffix
 *       {@code -n30} flips 30% of them.</li>
 * </ul>
 *
 * @param name       the arm's name as written in the grid and measurements.csv
 * @param loss       the loss the trainer runs
 * @param source     where the pairs' order and scores come from
 * @param labelNoise the fraction of label-only pairs whose order is flipped (0 unless label-only)
 * @param cdpo       true for cDPO (DPO with label smoothing)
 */
public record Arm(String name, LossType loss, Source source, double labelNoise, boolean cdpo) {

    /** What the arm's training pairs carry. */
    public enum Source {
        /** Ordered by the gold reward, gold scores kept. */
        GOLD,
        /** Ordered by the proxy annotator, proxy scores kept. */
        PROXY,
        /** Ordered by the proxy annotator (some flipped with label noise), no scores. */
        LABELS
    }

    /** The label noise an {@code -n30} suffix gives. */
    public static final double NOISE = 0.3;

    /** The arm named {@code name}; IllegalArgumentException naming the accepted forms otherwise. */
    public static Arm parse(String name) {
        String base = name;
        double noise = 0;
        if (base.endsWith("-n30")) {
            base = base.substring(0, base.length() - 4);
            noise = NOISE;
        }
        Arm a = switch (base) {
            case "spo" -> new Arm(name, LossType.SPO, Source.PROXY, 0, false);
            case "spo-exp" -> new Arm(name, LossType.SPO_EXP, Source.PROXY, 0, false);
            case "soft-dpo" -> new Arm(name, LossType.SOFT_DPO, Source.PROXY, 0, false);
            case "spo-gold" -> new Arm(name, LossType.SPO, Source.GOLD, 0, false);
            case "spo-m0" -> new Arm(name, LossType.SPO, Source.LABELS, noise, false);
            case "dpo" -> new Arm(name, LossType.DPO, Source.LABELS, noise, false);
            case "cdpo" -> new Arm(name, LossType.DPO, Source.LABELS, noise, true);
            case "ipo" -> new Arm(name, LossType.IPO, Source.LABELS, noise, false);
            case "hinge" -> new Arm(name, LossType.HINGE, Source.LABELS, noise, false);
            default -> null;
        };
        if (a == null || (noise > 0 && a.source != Source.LABELS)) {
            throw new IllegalArgumentException(String.format(Locale.ROOT,
                    "experiment: unknown arm '%s' (expected spo, spo-exp, soft-dpo, spo-gold, or one of spo-m0, dpo, "
                            + "cdpo, ipo, hinge, optionally with -n30 for 30%% flipped labels)", name));
        }
        return a;
    }

    /** The pairs file of this arm inside the experiment folder. */
    public String pairsFile() {
        return switch (source) {
            case GOLD -> "pairs-gold.jsonl";
            case PROXY -> "pairs-proxy.jsonl";
            case LABELS -> labelNoise > 0 ? "pairs-labels-n30.jsonl" : "pairs-labels.jsonl";
        };
    }
}
