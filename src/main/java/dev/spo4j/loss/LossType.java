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
    SPO_EXP(5, "spo-exp", true),
    /** TRL robust: -((1-eps) logsig(beta h) - eps logsig(-beta h)) / (1 - 2 eps), unbiased under label noise eps. */
    @SerializedName("robust")
    ROBUST(6, "robust", false),
    /** TRL exo_pair: KL(Bernoulli(sig(beta h)) || Bernoulli(1 - eps)), eps = 1e-3 when the label smoothing is 0. */
    @SerializedName("exo-pair")
    EXO_PAIR(7, "exo-pair", false),
    /** TRL nca_pair: -logsig(beta dc) - logsig(-beta dc)/2 - logsig(-beta dr)/2 (absolute likelihoods). */
    @SerializedName("nca-pair")
    NCA_PAIR(8, "nca-pair", false),
    /**
     * TRL bco_pair: -logsig(beta dc - delta) - logsig(delta - beta dr), delta the running mean of
     * the batches' mean reward (state kept by {@link PreferenceLoss}).
     */
    @SerializedName("bco-pair")
    BCO_PAIR(9, "bco-pair", false),
    /** TRL sppo_hard: (dc - 1/(2 beta))^2 + (dr + 1/(2 beta))^2. */
    @SerializedName("sppo-hard")
    SPPO_HARD(10, "sppo-hard", false),
    /** TRL aot: the dpo formula on the batch's sorted policy log-ratios minus its sorted reference log-ratios. */
    @SerializedName("aot")
    AOT(11, "aot", false),
    /** TRL aot_pair: the dpo formula on the batch's sorted dc minus its sorted dr. */
    @SerializedName("aot-pair")
    AOT_PAIR(12, "aot-pair", false),
    /** TRL apo_zero: 1 - sig(beta dc) + sig(beta dr). */
    @SerializedName("apo-zero")
    APO_ZERO(13, "apo-zero", false),
    /** TRL apo_down: sig(beta dc) + 1 - sig(beta h). */
    @SerializedName("apo-down")
    APO_DOWN(14, "apo-down", false),
    /** TRL discopop: -logsig(beta h) (1 - w) + exp(-beta h) w, w = sig(beta h / tau). */
    @SerializedName("discopop")
    DISCOPOP(15, "discopop", false),
    /**
     * SimPO: -(1-eps) logsig(beta h - gamma) - eps logsig(gamma - beta h) on length-normalised
     * log-probs without a reference model (h = mean logp_c - mean logp_r).
     */
    @SerializedName("simpo")
    SIMPO(16, "simpo", false),
    /** CPO: the dpo formula without a reference model (its NLL term is the objective's SFT weight). */
    @SerializedName("cpo")
    CPO(17, "cpo", false);

    private final int code;
    private final String id;
    private final boolean usesMargin;

    LossType(int code, String id, boolean usesMargin) {
        this.code = code;
        this.id = id;
        this.usesMargin = usesMargin;
    }

    /** Whether the loss reads reference log-probs; without one (simpo, cpo) no reference pass is needed. */
    public boolean needsReference() {
        return this != SIMPO && this != CPO;
    }

    /** Whether the loss sorts across the batch (aot, aot-pair): its value depends on the whole batch. */
    public boolean sortsBatch() {
        return this == AOT || this == AOT_PAIR;
    }

    /**
     * Whether each pair's loss and gradient depend on that pair alone (every loss but the
     * sorting aot / aot-pair and bco-pair, whose reward shift is a mean over the batch): the
     * fused LM head may then compute a chunk of pairs' gradients before it has seen the rest.
     */
    public boolean pairSeparable() {
        return !sortsBatch() && this != BCO_PAIR;
    }

    /** Whether the loss reads label smoothing eps. */
    public boolean usesLabelSmoothing() {
        return switch (this) {
            case DPO, ROBUST, EXO_PAIR, AOT, AOT_PAIR, SIMPO, CPO -> true;
            default -> false;
        };
    }

    /** The loss's code in the C ABI ({@code SPO4J_LOSS_<NAME>}). */
    public int code() {
        return code;
    }

    /** Whether the loss reads the pair's target margin m (from scores, explicit, or m0). */
    public boolean usesMargin() {
        return usesMargin;
    }

    /**
     * Parses a loss name as {@link #id()} writes it ("spo", "soft-dpo", ...; any case, '_' for '-'),
     * or as TRL's {@code loss_type} does ("sigmoid" is dpo, "exo_pair" is exo-pair).
     */
    public static LossType parse(String name) {
        if (name != null) {
            String n = name.trim().replace('_', '-');
            if (n.equalsIgnoreCase("sigmoid")) {
                return DPO;
            }
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
