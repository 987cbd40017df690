package dev.spo4j.loss;

import com.google.gson.annotations.SerializedName;
import java.util.Locale;

/**
 * How the LM head's logits meet the token log-probs: fused (from the hidden states in bounded
 * chunks, {@link dev.spo4j.kernels.LmHeadLogProbs}) or materialised (the model's full
 * [rows, V] logits, then the fused log-softmax kernel over them).
 */
public enum LmHead {
    /** Hidden states -> chunked GEMM + kernel: at most one chunk of logits in memory (the default). */
    @SerializedName("fused")
    FUSED,
    /** The model's full logits, then the token log-probs kernel (the path before the fused head). */
    @SerializedName("materialised")
    MATERIALISED;

    /** Parses "fused" or "materialised" (also "materialized"; any case). */
    public static LmHead parse(String s) {
        String v = s == null ? "" : s.trim().toLowerCase(Locale.ROOT);
        if (v.equals("fused")) {
            return FUSED;
        }
        if (v.equals("materialised") || v.equals("materialized")) {
            return MATERIALISED;
        }
        throw new IllegalArgumentException("unknown LM head '" + s + "' (expected fused or materialised)");
    }

    /** The lower-case name used on the command line. */
    public String id() {
        return name().toLowerCase(Locale.ROOT);
    }

    /** The lower-case name, as {@link #id()} (command-line help shows it). */
    @Override
    public String toString() {
        return id();
    }
}
