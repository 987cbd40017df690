package dev.spo4j.train;

import java.util.Locale;

/** Linear warm-up to the peak rate, then cosine decay to 0, linear decay to 0, or constant. */
public record LrSchedule(Kind kind, double peak, int warmupSteps, int totalSteps) {
    public enum Kind {
        COSINE, LINEAR, CONSTANT;

        public static Kind parse(String s) {
            for (Kind k : values()) {
                if (k.name().equalsIgnoreCase(s.trim())) {
                    return k;
                }
            }
            throw new IllegalArgumentException("unknown schedule '" + s + "' (expected cosine, linear or constant)");
        }

        public String id() {
            return name().toLowerCase(Locale.ROOT);
        }
    }

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
