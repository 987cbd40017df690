package dev.spo4j.train;

import java.awt.BasicStroke;
import java.awt.Color;
import java.awt.Font;
import java.awt.Graphics2D;
import java.awt.RenderingHints;
import java.awt.image.BufferedImage;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import javax.imageio.ImageIO;

/**
 * A PNG of a run's curves against the step, one panel per metric (train in blue, eval in
 * orange when logged): loss, rewards/margins, rewards/accuracies by default. Plain Java2D,
 * headless.
 */
public final class MetricsPlot {
    private MetricsPlot() {}

    public static void write(List<Map<String, Double>> rows, List<String> metrics, String title, Path png)
            throws IOException {
        System.setProperty("java.awt.headless", "true");
        int panelW = 420, panelH = 300, pad = 50;
        BufferedImage img = new BufferedImage(panelW * metrics.size(), panelH + 30, BufferedImage.TYPE_INT_RGB);
        Graphics2D g = img.createGraphics();
        g.setRenderingHint(RenderingHints.KEY_ANTIALIASING, RenderingHints.VALUE_ANTIALIAS_ON);
        g.setColor(Color.WHITE);
        g.fillRect(0, 0, img.getWidth(), img.getHeight());
        g.setColor(Color.BLACK);
        g.setFont(new Font(Font.SANS_SERIF, Font.BOLD, 14));
        g.drawString(title, 10, 20);
        g.setFont(new Font(Font.SANS_SERIF, Font.PLAIN, 12));
        int lx = img.getWidth() - 150;
        g.setColor(new Color(31, 119, 180));
        g.fillRect(lx, 10, 14, 4);
        g.setColor(Color.BLACK);
        g.drawString("train", lx + 18, 17);
        g.setColor(new Color(255, 127, 14));
        g.fillRect(lx + 60, 10, 14, 4);
        g.setColor(Color.BLACK);
        g.drawString("eval", lx + 78, 17);
        for (int p = 0; p < metrics.size(); p++) {
            String name = metrics.get(p);
            List<double[]> train = series(rows, name), eval = series(rows, "eval/" + name);
            int x0 = p * panelW + pad, y0 = 30 + 20, w = panelW - pad - 15, h = panelH - 70;
            double minX = Double.MAX_VALUE, maxX = -Double.MAX_VALUE, minY = Double.MAX_VALUE, maxY = -Double.MAX_VALUE;
            for (List<double[]> s : List.of(train, eval)) {
                for (double[] xy : s) {
                    minX = Math.min(minX, xy[0]);
                    maxX = Math.max(maxX, xy[0]);
                    minY = Math.min(minY, xy[1]);
                    maxY = Math.max(maxY, xy[1]);
                }
            }
            g.setFont(new Font(Font.SANS_SERIF, Font.PLAIN, 12));
            g.setColor(Color.BLACK);
            g.drawString(name, x0, y0 - 6);
            g.drawRect(x0, y0, w, h);
            if (train.isEmpty() && eval.isEmpty()) {
                continue;
            }
            if (maxX == minX) {
                maxX = minX + 1;
            }
            if (maxY == minY) {
                maxY = minY + 1e-9 + Math.abs(minY) * 0.01;
            }
            g.drawString(String.format(Locale.ROOT, "%.3g", maxY), x0 - pad + 2, y0 + 10);
            g.drawString(String.format(Locale.ROOT, "%.3g", minY), x0 - pad + 2, y0 + h);
            g.drawString(String.format(Locale.ROOT, "%.0f", minX), x0, y0 + h + 14);
            g.drawString(String.format(Locale.ROOT, "step %.0f", maxX), x0 + w - 60, y0 + h + 14);
            draw(g, train, new Color(31, 119, 180), x0, y0, w, h, minX, maxX, minY, maxY);
            draw(g, eval, new Color(255, 127, 14), x0, y0, w, h, minX, maxX, minY, maxY);
        }
        g.dispose();
        Path tmp = png.resolveSibling(png.getFileName() + ".tmp");
        ImageIO.write(img, "png", tmp.toFile());
        Files.move(tmp, png, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
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

    private static void draw(Graphics2D g, List<double[]> s, Color c, int x0, int y0, int w, int h,
                             double minX, double maxX, double minY, double maxY) {
        g.setColor(c);
        g.setStroke(new BasicStroke(1.6f));
        int px = -1, py = -1;
        for (double[] xy : s) {
            int x = x0 + (int) Math.round((xy[0] - minX) / (maxX - minX) * w);
            int y = y0 + h - (int) Math.round((xy[1] - minY) / (maxY - minY) * h);
            if (px >= 0) {
                g.drawLine(px, py, x, y);
            } else if (s.size() == 1) {
                g.fillOval(x - 2, y - 2, 5, 5);
            }
            px = x;
            py = y;
        }
    }
}
