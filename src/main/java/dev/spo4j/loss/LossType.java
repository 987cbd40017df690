package dev.spo4j.loss;

import com.google.gson.annotations.SerializedName;
import java.util.Locale;

/**
 * The preference losses of {@code src/site/markdown/LOSSES.md}. Each carries its code in the
 * C ABI ({@code spo4j_loss_type} of {@code native/include/spo4j.h}); {@code AbiConstantsTest}
 * checks the codes against the header.
 */
public enum LossType {
    /** (beta h - m)^2: regress the reward margin onto a finite target (arXiv 2508.07137). */
    @SerializedName("spo")
    SPO(0),
    /** -(1-eps) logsig(beta h) - eps logsig(-beta h); eps &gt; 0 is conservative DPO (cDPO). */
    @SerializedName("dpo")
    DPO(1),
    /** (h - 1/(2 beta))^2 on length-normalised log-probs by default, as in TRL. */
    @SerializedName("ipo")
    IPO(2),
    /** max(0, 1 - beta h) (SLiC). */
    @SerializedName("hinge")
    HINGE(3);

    private final int code;

    LossType(int code) {
        this.code = code;
    }

    /** The loss's code in the C ABI ({@code SPO4J_LOSS_<NAME>}). */
    public int code() {
        return code;
    }

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

    /** The lower-case name used on the command line and in TRL ("spo", "dpo", ...). */
    public String id() {
        return name().toLowerCase(Locale.ROOT);
    }

    /** The lower-case name, as {@link #id()} (command-line help shows it). */
    @Override
    public String toString() {
        return id();
    }
}
