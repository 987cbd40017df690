package dev.spo4j.report;

import dev.spo4j.io.AtomicFiles;
import java.awt.BasicStroke;
import java.awt.Color;
import java.awt.Font;
import java.awt.Graphics2D;
import java.awt.RenderingHints;
import java.awt.image.BufferedImage;
import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import javax.imageio.ImageIO;

/**
 * Multi-series line/scatter panels side by side, as a PNG (plain Java2D, headless): the
 * experiment's frontier, win-rate, log-prob and gradient-norm plots and the training curves
 * of {@link MetricsPlot}. Each panel has its own
 * axes (with the axis labels and min/max ticks) and a legend of its series.
 */
public final class Chart {
    private Chart() {}

    /**
     * One curve: points (x, y) in order; dashed or not; markers drawn at each point when {@code markers}.
     *
     * @param name    the legend's label
     * @param color   the line and marker colour
     * @param dashed  dashed rather than solid
     * @param markers a dot at every point (a single point always gets one)
     * @param points  (x, y) pairs as {@code double[2]}, joined in order; non-finite ones are skipped
     */
    public record Series(String name, Color color, boolean dashed, boolean markers, List<double[]> points) {}

    /**
     * One panel: its title, axis labels and curves.
     *
     * @param title  drawn above the panel
     * @param xLabel the x axis's label
     * @param yLabel the y axis's label
     * @param series the curves, in legend order
     */
    public record Panel(String title, String xLabel, String yLabel, List<Series> series) {}

    /** The colours of the losses, fixed so that every plot uses the same. */
    public static Color colorOf(String loss) {
        String base = loss.endsWith("-n30") ? loss.substring(0, loss.length() - 4) : loss;
        return switch (base) {
            case "spo" -> new Color(214, 39, 40);
            case "spo-m0" -> new Color(255, 127, 14);
            case "dpo" -> new Color(31, 119, 180);
            case "ipo" -> new Color(44, 160, 44);
            case "cdpo" -> new Color(148, 103, 189);
            case "spo-exp" -> new Color(140, 86, 75);
            case "soft-dpo" -> new Color(23, 190, 207);
            case "spo-gold" -> new Color(227, 119, 194);
            case "hinge" -> new Color(188, 189, 34);
            case "reference" -> Color.BLACK;
            default -> new Color(127, 127, 127);
        };
    }

    /**
     * Draws {@code panels} side by side (each 460 pixels wide) under {@code title} and writes
     * the PNG to {@code png} atomically. Each panel's axes span its finite points; a panel with
     * none gets only its frame and labels.
     */
    public static void write(List<Panel> panels, String title, Path png) throws IOException {
        System.setProperty("java.awt.headless", "true");
        int panelW = 460, panelH = 380, left = 60, top = 70;
        BufferedImage img = new BufferedImage(panelW * panels.size(), panelH + 30, BufferedImage.TYPE_INT_RGB);
        Graphics2D g = img.createGraphics();
        g.setRenderingHint(RenderingHints.KEY_ANTIALIASING, RenderingHints.VALUE_ANTIALIAS_ON);
        g.setColor(Color.WHITE);
        g.fillRect(0, 0, img.getWidth(), img.getHeight());
        g.setColor(Color.BLACK);
        g.setFont(new Font(Font.SANS_SERIF, Font.BOLD, 14));
        g.drawString(title, 10, 20);
        for (int p = 0; p < panels.size(); p++) {
            Panel panel = panels.get(p);
            int x0 = p * panelW + left, y0 = top, w = panelW - left - 20, h = panelH - top - 40;
            double minX = Double.MAX_VALUE, maxX = -Double.MAX_VALUE, minY = Double.MAX_VALUE, maxY = -Double.MAX_VALUE;
            for (Series s : panel.series()) {
                for (double[] xy : s.points()) {
                    if (Double.isFinite(xy[0]) && Double.isFinite(xy[1])) {
                        minX = Math.min(minX, xy[0]);
                        maxX = Math.max(maxX, xy[0]);
                        minY = Math.min(minY, xy[1]);
                        maxY = Math.max(maxY, xy[1]);
                    }
                }
            }
            g.setColor(Color.BLACK);
            g.setStroke(new BasicStroke(1f));
            g.setFont(new Font(Font.SANS_SERIF, Font.BOLD, 12));
            g.drawString(panel.title(), x0 - left + 4, y0 - 26);
            g.setFont(new Font(Font.SANS_SERIF, Font.PLAIN, 11));
            g.drawRect(x0, y0, w, h);
            g.drawString(panel.xLabel(), x0 + w / 2 - 20, y0 + h + 28);
            g.drawString(panel.yLabel(), x0 - left + 4, y0 - 6);
            if (minX > maxX) {
                continue;
            }
            if (maxX - minX < 1e-12) {
                maxX = minX + 1;
            }
            if (maxY - minY < 1e-12) {
                maxY = minY + 1e-6 + Math.abs(minY) * 0.01;
            }
            double padY = (maxY - minY) * 0.05;
            minY -= padY;
            maxY += padY;
            g.drawString(fmt(maxY), x0 - left + 4, y0 + 10);
            g.drawString(fmt(minY), x0 - left + 4, y0 + h);
            g.drawString(fmt(minX), x0, y0 + h + 14);
            g.drawString(fmt(maxX), x0 + w - 40, y0 + h + 14);
            int ly = y0 + 14;
            for (Series s : panel.series()) {
                g.setColor(s.color());
                g.setStroke(stroke(s.dashed()));
                g.drawLine(x0 + w - 110, ly - 4, x0 + w - 90, ly - 4);
                g.setColor(Color.BLACK);
                g.drawString(s.name(), x0 + w - 86, ly);
                ly += 14;
                draw(g, s, x0, y0, w, h, minX, maxX, minY, maxY);
            }
        }
        g.dispose();
        AtomicFiles.writeAt(png, tmp -> {
            if (!ImageIO.write(img, "png", tmp.toFile())) {
                throw new IOException("no PNG writer in this JVM");
            }
        });
    }

    private static BasicStroke stroke(boolean dashed) {
        return dashed ? new BasicStroke(1.6f, BasicStroke.CAP_BUTT, BasicStroke.JOIN_MITER, 10f, new float[] {6f, 4f}, 0f)
                : new BasicStroke(1.6f);
    }

    private static void draw(Graphics2D g, Series s, int x0, int y0, int w, int h, double minX, double maxX,
                             double minY, double maxY) {
        g.setColor(s.color());
        g.setStroke(stroke(s.dashed()));
        int px = Integer.MIN_VALUE, py = 0;
        for (double[] xy : s.points()) {
            if (!Double.isFinite(xy[0]) || !Double.isFinite(xy[1])) {
                continue;
            }
            int x = x0 + (int) Math.round((xy[0] - minX) / (maxX - minX) * w);
            int y = y0 + h - (int) Math.round((xy[1] - minY) / (maxY - minY) * h);
            if (px != Integer.MIN_VALUE) {
                g.drawLine(px, py, x, y);
            }
            if (s.markers() || s.points().size() == 1) {
                g.fillOval(x - 3, y - 3, 6, 6);
            }
            px = x;
            py = y;
        }
    }

    private static String fmt(double v) {
        return String.format(Locale.ROOT, "%.3g", v);
    }
}
