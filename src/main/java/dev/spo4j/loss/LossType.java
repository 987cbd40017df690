package dev.spo4j.loss;

import java.util.Locale;

/** The preference losses of shared/LOSSES.md; the ordinal order is the C ABI's. */
public enum LossType {
    /** (beta h - m)^2: regress the reward margin onto a finite target (arXiv 2508.07137). */
    SPO,
    /** -(1-eps) logsig(beta h) - eps logsig(-beta h); eps > 0 is conservative DPO (cDPO). */
    DPO,
    /** (h - 1/(2 beta))^2 on length-normalised log-probs by default, as in TRL. */
    IPO,
    /** max(0, 1 - beta h) (SLiC). */
    HINGE;

    /** Parses "spo", "dpo", "ipo" or "hinge" (any case). */
    public static LossType parse(String name) {
        if (name != null) {
            for (LossType t : values()) {
                if (t.name().equalsIgnoreCase(name.trim())) {
                    return t;
                }
            }
        }
        throw new IllegalArgumentException("unknown loss '" + name + "' (expected spo, dpo, ipo or hinge)");
    }

    public String id() {
        return name().toLowerCase(Locale.ROOT);
    }
}
