package dev.spo4j.experiment;

import dev.spo4j.report.Chart;
import java.awt.Color;
import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/** The experiment's PNG plots, drawn from the measurements alone (so {@code --replot} can redraw them). */
final class ExperimentPlots {
    private ExperimentPlots() {}

    /** Means over seeds per step of one arm at one beta and the main lr: [step, gold, win, kl, chosen, rejected, grad, proxy]. */
    static Map<Integer, double[]> meansBySteps(List<Experiment.Measurement> rows, String arm, double beta, double lr) {
        Map<Integer, double[]> sums = new TreeMap<>();
        for (Experiment.Measurement m : rows) {
            if (m.arm().equals(arm) && m.beta() == beta && m.lr() == lr) {
                double[] a = sums.computeIfAbsent(m.step(), k -> new double[9]);
                a[0] = m.step();
                a[1] += m.goldReward();
                a[2] += m.winRate();
                a[3] += m.kl();
                a[4] += m.logpsChosen();
                a[5] += m.logpsRejected();
                a[6] += m.gradNorm();
                a[7] += m.proxyReward();
                a[8]++;
            }
        }
        for (double[] a : sums.values()) {
            for (int k = 1; k < 8; k++) {
                a[k] /= a[8];
            }
        }
        return sums;
    }

    static void write(ExperimentConfig cfg, List<Experiment.Measurement> rows, List<Experiment.GradientRow> grads,
                      List<ReferenceCurves.Point> curves, Experiment.Measurement ref, Path out) throws IOException {
        List<Chart.Panel> frontier = new ArrayList<>(), win = new ArrayList<>(), logps = new ArrayList<>(),
                grad = new ArrayList<>(), proxy = new ArrayList<>();
        List<Chart.Series> envelope = new ArrayList<>();
        for (String arm : cfg.arms) {
            List<double[]> pts = new ArrayList<>();
            for (double level : ExperimentSummary.KL_LEVELS) {
                double[] v = ExperimentSummary.frontierAt(cfg, rows, arm, level);
                double[] ok = java.util.Arrays.stream(v).filter(x -> !Double.isNaN(x)).toArray();
                if (ok.length > 0) {
                    pts.add(new double[] {Math.log(level) / Math.log(2), Stats.mean(ok)});
                }
            }
            envelope.add(new Chart.Series(arm, Chart.colorOf(arm), arm.endsWith("-n30"), true, pts));
        }
        for (String kind : List.of("kl-optimal", "best-of-n-gold", "best-of-n-proxy")) {
            List<double[]> pts = new ArrayList<>();
            for (ReferenceCurves.Point p : curves) {
                if (p.kind().equals(kind) && p.kl() > 0.25 && p.kl() <= 32) {
                    pts.add(new double[] {Math.log(p.kl()) / Math.log(2), p.gold()});
                }
            }
            pts.sort((x, y) -> Double.compare(x[0], y[0]));
            envelope.add(new Chart.Series(kind, Color.BLACK, !kind.equals("kl-optimal"), false, pts));
        }
        frontier.add(new Chart.Panel("frontier over beta at matched KL (mean over seeds)", "log2 KL(pi||pi_ref)",
                "gold reward", envelope));
        for (double beta : cfg.betas) {
            List<Chart.Series> f = new ArrayList<>(), w = new ArrayList<>(), l = new ArrayList<>(), g = new ArrayList<>(),
                    p = new ArrayList<>();
            for (String arm : cfg.arms) {
                Color c = Chart.colorOf(arm);
                boolean dashed = arm.endsWith("-n30");
                List<double[]> fp = new ArrayList<>(), wp = new ArrayList<>(), cp = new ArrayList<>(),
                        rp = new ArrayList<>(), gp = new ArrayList<>(), pp = new ArrayList<>();
                for (double[] a : meansBySteps(rows, arm, beta, cfg.lr).values()) {
                    fp.add(new double[] {a[3], a[1]});
                    wp.add(new double[] {a[0], a[2]});
                    cp.add(new double[] {a[0], a[4]});
                    rp.add(new double[] {a[0], a[5]});
                    pp.add(new double[] {a[7], a[1]});
                    if (a[0] > 0) {
                        gp.add(new double[] {a[0], a[6]});
                    }
                }
                f.add(new Chart.Series(arm, c, dashed, true, fp));
                w.add(new Chart.Series(arm, c, dashed, false, wp));
                l.add(new Chart.Series(arm + " chosen", c, false, false, cp));
                l.add(new Chart.Series(arm + " rejected", c, true, false, rp));
                g.add(new Chart.Series(arm, c, dashed, false, gp));
                p.add(new Chart.Series(arm, c, dashed, true, pp));
            }
            f.add(new Chart.Series("reference", Color.BLACK, false, true, List.of(new double[] {0, ref.goldReward()})));
            String b = "beta " + beta;
            frontier.add(new Chart.Panel(b + " (points: steps, mean over seeds)", "KL(pi||pi_ref)", "gold reward", f));
            win.add(new Chart.Panel(b, "step", "win rate vs reference", w));
            logps.add(new Chart.Panel(b + " (solid chosen, dashed rejected)", "step", "log pi (train pairs)", l));
            grad.add(new Chart.Panel(b, "step", "grad norm (pre-clip)", g));
            proxy.add(new Chart.Panel(b + " (points: steps)", "proxy reward", "gold reward", p));
        }
        Chart.write(frontier, "Gold reward vs KL", out.resolve("frontier.png"));
        Chart.write(win, "Win rate vs reference samples (gold reward judge)", out.resolve("win_rate.png"));
        Chart.write(logps, "Summed log-probs of tracked training pairs", out.resolve("logps.png"));
        Chart.write(grad, "Gradient norm before clipping", out.resolve("grad_norm.png"));
        Chart.write(proxy, "Proxy reward against gold reward (over-optimisation)", out.resolve("proxy_vs_gold.png"));

        List<Chart.Series> prof = new ArrayList<>();
        for (var el : ExperimentSummary.gradientProfile(cfg, grads)) {
            var a = el.getAsJsonObject();
            String arm = a.get("arm").getAsString();
            List<double[]> pts = new ArrayList<>();
            for (var b : a.getAsJsonArray("bins")) {
                var bin = b.getAsJsonObject();
                double g = bin.get("mean_abs_grad_rejected").getAsDouble();
                if (bin.get("pairs").getAsInt() > 0 && g > 0) {
                    pts.add(new double[] {0.5 * (bin.get("logp_rejected_lo").getAsDouble()
                            + bin.get("logp_rejected_hi").getAsDouble()), Math.log10(g)});
                }
            }
            prof.add(new Chart.Series(arm, Chart.colorOf(arm), arm.endsWith("-n30"), true, pts));
        }
        Chart.write(List.of(new Chart.Panel("per-pair gradient, binned (all betas, seeds, steps)", "log pi(y_l)",
                "log10 mean |d loss / d log pi(y_l)|", prof)), "Measured gradient profile", out.resolve("gradient_profile.png"));
    }
}
