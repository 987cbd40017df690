package dev.spo4j.report;

import java.io.PrintStream;
import java.util.Locale;

/**
 * The console line of a training run: step, loss, margin, accuracy, tokens/s and ETA. On a
 * terminal it redraws one line; otherwise (logs, CI) it prints a line every {@code every} steps.
 */
public final class ProgressBar {
    private final PrintStream out;
    private final int total;
    private final boolean terminal;
    private final int every;
    private final long start = System.nanoTime();
    private final int firstStep;

    /**
     * @param out       the console
     * @param firstStep the step the run starts from (0, or a resumed run's step)
     * @param total     the last step
     * @param every     lines printed every this many steps when the output is not a terminal
     */
    public ProgressBar(PrintStream out, int firstStep, int total, int every) {
        this.out = out;
        this.total = total;
        this.firstStep = firstStep;
        this.terminal = System.console() != null;
        this.every = Math.max(1, every);
    }

    /** Shows the state after {@code step}. */
    public void update(int step, double loss, double margin, double accuracy, double tokensPerSecond) {
        double elapsed = (System.nanoTime() - start) / 1e9;
        int done = step - firstStep;
        double eta = done > 0 ? elapsed / done * (total - step) : Double.NaN;
        int width = 24, filled = (int) Math.round(width * (double) step / total);
        String line = String.format(Locale.ROOT, "[%s%s] %d/%d loss %.4f margin %+.3f acc %.2f %.0f tok/s ETA %s",
                "#".repeat(filled), ".".repeat(width - filled), step, total, loss, margin, accuracy,
                tokensPerSecond, Double.isNaN(eta) ? "?" : formatSeconds(eta));
        if (terminal) {
            out.print("\r" + line);
            if (step == total) {
                out.println();
            }
        } else if (step % every == 0 || step == total || step == firstStep + 1) {
            out.println(line);
        }
        out.flush();
    }

    /** "1h02m" or "3m07s". */
    public static String formatSeconds(double s) {
        long t = Math.round(s);
        return t >= 3600 ? String.format(Locale.ROOT, "%dh%02dm", t / 3600, t / 60 % 60)
                : String.format(Locale.ROOT, "%dm%02ds", t / 60, t % 60);
    }
}
