package dev.spo4j.loss;

import com.google.gson.annotations.SerializedName;
import java.util.Locale;

/** How the preference objective computes its loss and gradient: spo4j's kernels, or LibTorch's composite ops as a baseline. */
public enum LossImpl {
    /** spo4j's kernels: fused token log-probs, native loss, in-place backward over the logits. */
    @SerializedName("fused")
    FUSED,
    /** LibTorch's composite ops (log_softmax, gather, the loss in torch ops) and autograd. */
    @SerializedName("libtorch")
    LIBTORCH;

    /** Parses "fused" or "libtorch" (any case). */
    public static LossImpl parse(String s) {
        for (LossImpl v : values()) {
            if (s != null && v.name().equalsIgnoreCase(s.trim())) {
                return v;
            }
        }
        throw new IllegalArgumentException("unknown loss implementation '" + s + "' (expected fused or libtorch)");
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
