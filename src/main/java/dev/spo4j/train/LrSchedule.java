package dev.spo4j.train;

import com.google.gson.annotations.SerializedName;
import java.util.Locale;

/**
 * Linear warm-up to the peak rate, then cosine decay to 0, linear decay to 0, or constant.
 *
 * @param kind        the shape after warm-up
 * @param peak        the peak rate, finite and &gt; 0
 * @param warmupSteps steps of linear warm-up (0 for none)
 * @param totalSteps  the run's optimiser steps, at least 1
 */
public record LrSchedule(Kind kind, double peak, int warmupSteps, int totalSteps) {
    /** The shape after warm-up. */
    public enum Kind {
        /** Cosine decay to 0. */
        @SerializedName("cosine")
        COSINE,
        /** Linear decay to 0. */
        @SerializedName("linear")
        LINEAR,
        /** The peak rate until the end. */
        @SerializedName("constant")
        CONSTANT;

        /** Parses "cosine", "linear" or "constant" (any case). */
        public static Kind parse(String s) {
            for (Kind k : values()) {
                if (s != null && k.name().equalsIgnoreCase(s.trim())) {
                    return k;
                }
            }
            throw new IllegalArgumentException("unknown schedule '" + s + "' (expected cosine, linear or constant)");
        }

        /** The lower-case name used on the command line. */
        public String id() {
            return name().toLowerCase(Locale.ROOT);
        }

        @Override
        public String toString() {
            return id();
        }
    }

    /** Checks the ranges above; throws IllegalArgumentException otherwise. */
    public LrSchedule {
        if (!(peak > 0 && Double.isFinite(peak))) {
            throw new IllegalArgumentException("learning rate = " + peak + " (expected a finite value > 0)");
        }
        if (warmupSteps < 0 || totalSteps < 1) {
            throw new IllegalArgumentException("warm-up " + warmupSteps + " / total " + totalSteps
                    + " steps (expected warm-up >= 0 and total >= 1)");
        }
    }

    /** The rate for optimiser step {@code step} (0-based). */
    public double at(int step) {
        if (step < warmupSteps) {
            return peak * (step + 1) / (warmupSteps + 1);
        }
        double progress = totalSteps <= warmupSteps ? 1.0
                : Math.min(1.0, (double) (step - warmupSteps) / (totalSteps - warmupSteps));
        return switch (kind) {
            case COSINE -> peak * 0.5 * (1 + Math.cos(Math.PI * progress));
            case LINEAR -> peak * (1 - progress);
            case CONSTANT -> peak;
        };
    }
}
