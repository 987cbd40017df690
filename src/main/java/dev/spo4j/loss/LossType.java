package dev.spo4j.loss;

import com.google.gson.annotations.SerializedName;

/**
 * The preference losses of {@code src/site/markdown/LOSSES.md}. Each carries its code in the
 * C ABI ({@code spo4j_loss_type} of {@code native/include/spo4j.h}); {@code AbiConstantsTest}
 * checks the codes against the header.
 */
public enum LossType {
    /** (beta h - m)^2: regress the reward margin onto a finite target (arXiv 2508.07137). */
    @SerializedName("spo")
    SPO(0, "spo", true),
    /** -(1-eps) logsig(beta h) - eps logsig(-beta h); eps &gt; 0 is conservative DPO (cDPO). */
    @SerializedName("dpo")
    DPO(1, "dpo", false),
    /** (h - 1/(2 beta))^2 on length-normalised log-probs by default, as in TRL. */
    @SerializedName("ipo")
    IPO(2, "ipo", false),
    /** max(0, 1 - beta h) (SLiC). */
    @SerializedName("hinge")
    HINGE(3, "hinge", false),
    /**
     * DPO with a soft label from the reward gap: -p logsig(beta h) - (1-p) logsig(-beta h),
     * p = sigmoid(m), m = rewardScale (score_c - score_r) (else m0): the information SPO gets,
     * in DPO's logistic shape.
     */
    @SerializedName("soft-dpo")
    SOFT_DPO(4, "soft-dpo", true),
    /**
     * The asymmetric SPO variant, a reconstruction of the description in the paper's later
     * version (its exact formula is not published): f(beta h / m~), f(z) = 1/e - z e^-z, minimum
     * 0 at beta h = m~ (m~ = the margin with |m| raised to the margin floor), a mild penalty for
     * overshooting and an exponential one for inverted preferences.
     */
    @SerializedName("spo-exp")
    SPO_EXP(5, "spo-exp", true);

    private final int code;
    private final String id;
    private final boolean usesMargin;

    LossType(int code, String id, boolean usesMargin) {
        this.code = code;
        this.id = id;
        this.usesMargin = usesMargin;
    }

    /** The loss's code in the C ABI ({@code SPO4J_LOSS_<NAME>}). */
    public int code() {
        return code;
    }

    /** Whether the loss reads the pair's target margin m (from scores, explicit, or m0). */
    public boolean usesMargin() {
        return usesMargin;
    }

    /** Parses a loss name as {@link #id()} writes it ("spo", "soft-dpo", ...; any case, '_' for '-'). */
    public static LossType parse(String name) {
        if (name != null) {
            String n = name.trim().replace('_', '-');
            for (LossType t : values()) {
                if (t.id.equalsIgnoreCase(n)) {
                    return t;
                }
            }
        }
        throw new IllegalArgumentException("unknown loss '" + name + "' (expected one of " + ids() + ")");
    }

    /** Every loss's id, comma-separated, for messages and help. */
    public static String ids() {
        StringBuilder b = new StringBuilder();
        for (LossType t : values()) {
            b.append(b.length() == 0 ? "" : ", ").append(t.id);
        }
        return b.toString();
    }

    /** The name used on the command line, in metrics and in TRL ("spo", "dpo", "soft-dpo", ...). */
    public String id() {
        return id;
    }

    /** The lower-case name, as {@link #id()} (command-line help shows it). */
    @Override
    public String toString() {
        return id;
    }
}
