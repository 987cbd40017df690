package dev.spo4j.report;

import java.awt.Color;
import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * A PNG of a run's curves against the step, one panel per metric: train in blue, eval in
 * orange when the log has "eval/..." values (drawn by {@link Chart}).
 */
public final class MetricsPlot {
    private static final Color TRAIN = new Color(31, 119, 180), EVAL = new Color(255, 127, 14);

    private MetricsPlot() {}

    /**
     * Writes a PNG with one panel per name in {@code metrics}: its values in {@code rows}
     * against "step", plus its "eval/" values when there are any. Non-finite values are skipped.
     */
    public static void write(List<Map<String, Double>> rows, List<String> metrics, String title, Path png)
            throws IOException {
        List<Chart.Panel> panels = new ArrayList<>();
        for (String name : metrics) {
            List<Chart.Series> series = new ArrayList<>();
            series.add(new Chart.Series("train", TRAIN, false, false, series(rows, name)));
            List<double[]> eval = series(rows, "eval/" + name);
            if (!eval.isEmpty()) {
                series.add(new Chart.Series("eval", EVAL, false, true, eval));
            }
            panels.add(new Chart.Panel(name, "step", name, series));
        }
        Chart.write(panels, title, png);
    }

    private static List<double[]> series(List<Map<String, Double>> rows, String name) {
        List<double[]> s = new ArrayList<>();
        for (Map<String, Double> r : rows) {
            Double v = r.get(name), step = r.get("step");
            if (v != null && step != null && Double.isFinite(v)) {
                s.add(new double[] {step, v});
            }
        }
        return s;
    }
}
