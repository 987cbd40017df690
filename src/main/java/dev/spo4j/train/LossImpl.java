package dev.spo4j.train;

import java.util.Locale;

/** How the preference objective computes its loss and gradient. */
public enum LossImpl {
    /** spo4j's kernels: fused token log-probs, native loss, in-place backward over the logits. */
    FUSED,
    /** LibTorch's composite ops (log_softmax, gather, the loss in torch ops) and autograd. */
    LIBTORCH;

    public static LossImpl parse(String s) {
        for (LossImpl v : values()) {
            if (v.name().equalsIgnoreCase(s.trim())) {
                return v;
            }
        }
        throw new IllegalArgumentException("unknown loss implementation '" + s + "' (expected fused or libtorch)");
    }

    public String id() {
        return name().toLowerCase(Locale.ROOT);
    }
}
