package dev.spo4j.experiment;

import com.google.gson.JsonArray;
import com.google.gson.JsonObject;
import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Set;

/**
 * The experiment's summary.json and its Markdown table, from the measurements alone:
 * <ul>
 *   <li>per arm and β (main learning rate): final gold and proxy reward, KL, win rate, EOS
 *       rate, the fraction of clipped steps and collapses (measurements whose mean sample
 *       length is below one token), with 95% Student-t intervals over seeds;</li>
 *   <li>the frontier at matched KL: per arm and seed, the gold reward where the run's
 *       trajectory first reaches KL = L (linear between measurements), the best over β; then
 *       paired differences between arms over seeds (same seed = same training seed and data
 *       order) with a paired t-test. A seed that does not reach L in both arms is left out and
 *       the count says so;</li>
 *   <li>over-optimisation: the peak gold reward over steps and the final one;</li>
 *   <li>the measured gradient profile: per arm, the mean ∂ℓ/∂log π of the rejected and chosen
 *       completions binned by log π(y_l);</li>
 *   <li>the learning-rate check and the reference curves.</li>
 * </ul>
 * Nothing is selected on the samples it is reported on: "final" is the last step, and the
 * matched-KL values are read at fixed KL levels.
 */
public final class ExperimentSummary {
    private ExperimentSummary() {}

    /** The KL levels (nats) at which arms are compared. */
    static final double[] KL_LEVELS = {0.5, 1, 2, 4, 8, 16};
    /** Bins of the gradient profile. */
    static final int GRADIENT_BINS = 8;

    /** {mean, lo, hi} of a 95% t-interval; lo = hi = mean for one value. */
    public static double[] tInterval(double[] v) {
        return Stats.tInterval(v);
    }

    /** The rows of one run, in step order. */
    static List<Experiment.Measurement> run(List<Experiment.Measurement> rows, String arm, double beta, double lr, int seed) {
        List<Experiment.Measurement> out = new ArrayList<>();
        for (Experiment.Measurement m : rows) {
            if (m.arm().equals(arm) && m.beta() == beta && m.lr() == lr && m.seed() == seed) {
                out.add(m);
            }
        }
        return out;
    }

    /**
     * The gold reward where a trajectory first reaches KL = level, linear between the two
     * measurements around the crossing; NaN if it never does.
     */
    static double goldAtKl(List<Experiment.Measurement> run, double level) {
        for (int i = 1; i < run.size(); i++) {
            Experiment.Measurement a = run.get(i - 1), b = run.get(i);
            if (a.kl() < level && b.kl() >= level) {
                double t = (level - a.kl()) / (b.kl() - a.kl());
                return a.goldReward() + t * (b.goldReward() - a.goldReward());
            }
        }
        return Double.NaN;
    }

    /** Per seed: the best over β of {@link #goldAtKl} (NaN where no β reaches the level). */
    static double[] frontierAt(ExperimentConfig cfg, List<Experiment.Measurement> rows, String arm, double level) {
        double[] v = new double[cfg.seeds];
        for (int s = 0; s < cfg.seeds; s++) {
            v[s] = Double.NaN;
            for (double beta : cfg.betas) {
                double g = goldAtKl(run(rows, arm, beta, cfg.lr, s), level);
                if (!Double.isNaN(g) && (Double.isNaN(v[s]) || g > v[s])) {
                    v[s] = g;
                }
            }
        }
        return v;
    }

    static JsonObject summarise(ExperimentConfig cfg, List<Experiment.Measurement> rows,
                                List<Experiment.GradientRow> grads, List<ReferenceCurves.Point> curves,
                                Experiment.Measurement ref, JsonObject setup, double seconds) {
        JsonObject o = new JsonObject();
        o.addProperty("preset", cfg.preset);
        o.addProperty("seconds", seconds);
        o.addProperty("interval", "95% Student t over seeds: mean +- t(0.975, n-1) sd / sqrt(n); paired tests over seeds");
        o.add("setup", setup);
        JsonObject r = new JsonObject();
        r.addProperty("gold_reward", ref.goldReward());
        r.addProperty("proxy_reward", ref.proxyReward());
        r.addProperty("mean_length", ref.meanLength());
        r.addProperty("eos_rate", ref.eosRate());
        o.add("reference", r);

        double minEos = 1;
        int collapsedRuns = 0, runs = 0;
        JsonArray results = new JsonArray();
        for (String arm : cfg.arms) {
            for (double beta : cfg.betas) {
                int n = cfg.seeds;
                double[] gold = new double[n], proxy = new double[n], kl = new double[n], win = new double[n],
                        eos = new double[n], clip = new double[n], peak = new double[n], len = new double[n];
                int collapses = 0;
                JsonArray collapseAt = new JsonArray();
                for (int s = 0; s < n; s++) {
                    List<Experiment.Measurement> mine = run(rows, arm, beta, cfg.lr, s);
                    Experiment.Measurement f = mine.get(mine.size() - 1);
                    gold[s] = f.goldReward();
                    proxy[s] = f.proxyReward();
                    kl[s] = f.kl();
                    win[s] = f.winRate();
                    eos[s] = f.eosRate();
                    len[s] = f.meanLength();
                    double clipSum = 0;
                    int windows = 0;
                    peak[s] = Double.NEGATIVE_INFINITY;
                    boolean collapsed = false;
                    for (Experiment.Measurement m : mine) {
                        peak[s] = Math.max(peak[s], m.goldReward());
                        minEos = Math.min(minEos, m.eosRate());
                        if (m.step() > 0) {
                            clipSum += m.clipRate();
                            windows++;
                            if (m.meanLength() < 1) {
                                collapses++;
                                collapsed = true;
                                collapseAt.add(String.format(Locale.ROOT, "seed %d step %d", s, m.step()));
                            }
                        }
                    }
                    clip[s] = clipSum / Math.max(1, windows);
                    collapsedRuns += collapsed ? 1 : 0;
                    runs++;
                }
                JsonObject e = new JsonObject();
                e.addProperty("arm", arm);
                e.addProperty("beta", beta);
                e.addProperty("seeds", n);
                e.add("final_gold_reward", ci(gold));
                e.add("final_proxy_reward", ci(proxy));
                e.add("final_kl", ci(kl));
                e.add("final_win_rate", ci(win));
                e.add("final_eos_rate", ci(eos));
                e.add("final_mean_length", ci(len));
                e.add("clip_rate", ci(clip));
                e.add("peak_gold_reward", ci(peak));
                e.addProperty("collapsed_measurements", collapses);
                e.add("collapsed_at", collapseAt);
                results.add(e);
            }
        }
        o.add("results", results);
        o.addProperty("min_eos_rate", minEos);
        o.addProperty("runs", runs);
        o.addProperty("runs_with_a_collapse", collapsedRuns);

        // the frontier at matched KL, and paired comparisons
        JsonArray frontier = new JsonArray();
        for (String arm : cfg.arms) {
            JsonObject a = new JsonObject();
            a.addProperty("arm", arm);
            JsonArray levels = new JsonArray();
            for (double level : KL_LEVELS) {
                double[] v = frontierAt(cfg, rows, arm, level);
                double[] ok = java.util.Arrays.stream(v).filter(x -> !Double.isNaN(x)).toArray();
                JsonObject l = new JsonObject();
                l.addProperty("kl", level);
                l.addProperty("seeds_reaching", ok.length);
                l.add("gold", ok.length == 0 ? new JsonObject() : ci(ok));
                levels.add(l);
            }
            a.add("levels", levels);
            frontier.add(a);
        }
        o.add("frontier_at_matched_kl", frontier);
        JsonArray comparisons = new JsonArray();
        for (String[] pair : comparisonPairs(cfg)) {
            for (double level : KL_LEVELS) {
                double[] x = frontierAt(cfg, rows, pair[0], level), y = frontierAt(cfg, rows, pair[1], level);
                List<double[]> both = new ArrayList<>();
                for (int s = 0; s < x.length; s++) {
                    if (!Double.isNaN(x[s]) && !Double.isNaN(y[s])) {
                        both.add(new double[] {x[s], y[s]});
                    }
                }
                JsonObject c = new JsonObject();
                c.addProperty("a", pair[0]);
                c.addProperty("b", pair[1]);
                c.addProperty("kl", level);
                c.addProperty("seeds", both.size());
                if (!both.isEmpty()) {
                    double[] p = Stats.paired(both.stream().mapToDouble(d -> d[0]).toArray(),
                            both.stream().mapToDouble(d -> d[1]).toArray());
                    c.addProperty("gold_difference", p[0]);
                    c.addProperty("lo", p[1]);
                    c.addProperty("hi", p[2]);
                    c.addProperty("p", p[3]);
                }
                comparisons.add(c);
            }
        }
        o.add("paired_at_matched_kl", comparisons);

        o.add("gradient_profile", gradientProfile(cfg, grads));

        JsonArray lrCheck = new JsonArray();
        for (String arm : cfg.arms) {
            for (double f : cfg.lrCheckFactors) {
                List<Experiment.Measurement> mine = run(rows, arm, cfg.lrCheckBeta, cfg.lr * f, 0);
                if (mine.isEmpty()) {
                    continue;
                }
                Experiment.Measurement last = mine.get(mine.size() - 1);
                JsonObject c = new JsonObject();
                c.addProperty("arm", arm);
                c.addProperty("beta", cfg.lrCheckBeta);
                c.addProperty("lr", cfg.lr * f);
                c.addProperty("final_gold_reward", last.goldReward());
                c.addProperty("final_kl", last.kl());
                c.addProperty("gold_at_kl_2", goldAtKl(mine, 2));
                List<Experiment.Measurement> base = run(rows, arm, cfg.lrCheckBeta, cfg.lr, 0);
                if (!base.isEmpty()) {
                    c.addProperty("main_lr_final_gold_reward", base.get(base.size() - 1).goldReward());
                    c.addProperty("main_lr_final_kl", base.get(base.size() - 1).kl());
                    c.addProperty("main_lr_gold_at_kl_2", goldAtKl(base, 2));
                }
                lrCheck.add(c);
            }
        }
        o.add("learning_rate_check", lrCheck);

        JsonArray cs = new JsonArray();
        for (ReferenceCurves.Point p : curves) {
            JsonObject c = new JsonObject();
            c.addProperty("kind", p.kind());
            c.addProperty("param", p.param());
            c.addProperty("kl", p.kl());
            c.addProperty("gold", p.gold());
            c.addProperty("ess", p.ess());
            cs.add(c);
        }
        o.add("reference_curves", cs);
        return o;
    }

    /** SPO (both forms) against every other arm, then each label-only arm against its noisy twin. */
    static List<String[]> comparisonPairs(ExperimentConfig cfg) {
        Set<String> arms = new LinkedHashSet<>(cfg.arms);
        List<String[]> out = new ArrayList<>();
        for (String a : List.of("spo", "spo-exp")) {
            if (!arms.contains(a)) {
                continue;
            }
            for (String b : arms) {
                if (!b.equals(a) && !(a.equals("spo-exp") && b.equals("spo"))) {
                    out.add(new String[] {a, b});
                }
            }
        }
        for (String b : arms) {
            if (b.endsWith("-n30") && arms.contains(b.substring(0, b.length() - 4))) {
                out.add(new String[] {b.substring(0, b.length() - 4), b});
            }
        }
        return out;
    }

    /** Per arm: the mean per-pair gradients binned by log π(y_l), over every β, seed and measured step after 0. */
    static JsonArray gradientProfile(ExperimentConfig cfg, List<Experiment.GradientRow> grads) {
        double lo = Double.POSITIVE_INFINITY, hi = Double.NEGATIVE_INFINITY;
        for (Experiment.GradientRow g : grads) {
            lo = Math.min(lo, g.logpRejected());
            hi = Math.max(hi, g.logpRejected());
        }
        JsonArray out = new JsonArray();
        if (grads.isEmpty() || !(hi > lo)) {
            return out;
        }
        double width = (hi - lo) / GRADIENT_BINS;
        for (String arm : cfg.arms) {
            double[] sumR = new double[GRADIENT_BINS], sumC = new double[GRADIENT_BINS], absR = new double[GRADIENT_BINS];
            int[] count = new int[GRADIENT_BINS];
            for (Experiment.GradientRow g : grads) {
                if (!g.arm().equals(arm)) {
                    continue;
                }
                int b = Math.min(GRADIENT_BINS - 1, (int) ((g.logpRejected() - lo) / width));
                sumR[b] += g.gradRejected();
                absR[b] += Math.abs(g.gradRejected());
                sumC[b] += g.gradChosen();
                count[b]++;
            }
            JsonObject a = new JsonObject();
            a.addProperty("arm", arm);
            JsonArray bins = new JsonArray();
            for (int b = 0; b < GRADIENT_BINS; b++) {
                JsonObject e = new JsonObject();
                e.addProperty("logp_rejected_lo", lo + b * width);
                e.addProperty("logp_rejected_hi", lo + (b + 1) * width);
                e.addProperty("pairs", count[b]);
                e.addProperty("mean_grad_rejected", count[b] == 0 ? Double.NaN : sumR[b] / count[b]);
                e.addProperty("mean_abs_grad_rejected", count[b] == 0 ? Double.NaN : absR[b] / count[b]);
                e.addProperty("mean_grad_chosen", count[b] == 0 ? Double.NaN : sumC[b] / count[b]);
                bins.add(e);
            }
            a.add("bins", bins);
            out.add(a);
        }
        return out;
    }

    private static JsonObject ci(double[] v) {
        double[] t = tInterval(v);
        JsonObject o = new JsonObject();
        o.addProperty("mean", t[0]);
        o.addProperty("lo", t[1]);
        o.addProperty("hi", t[2]);
        o.add("per_seed", Experiment.array(v));
        return o;
    }

    /** The Markdown tables of summary.json. */
    public static String table(JsonObject summary) {
        StringBuilder sb = new StringBuilder();
        JsonObject ref = summary.getAsJsonObject("reference");
        sb.append(String.format(Locale.ROOT, "Reference (SFT) policy: gold reward %.3f, proxy reward %.3f, mean length "
                        + "%.1f tokens, EOS rate %.3f. Lowest EOS rate of any measurement: %.3f. Runs with a collapse "
                        + "(mean length < 1 token at some measurement): %d of %d.%n%n", ref.get("gold_reward").getAsDouble(),
                ref.get("proxy_reward").getAsDouble(), ref.get("mean_length").getAsDouble(),
                ref.get("eos_rate").getAsDouble(), summary.get("min_eos_rate").getAsDouble(),
                summary.get("runs_with_a_collapse").getAsInt(), summary.get("runs").getAsInt()));
        sb.append("Final step, mean over seeds [95% Student-t interval]; KL in nats.\n\n");
        sb.append("| arm | beta | gold [95% CI] | peak gold | proxy | KL [95% CI] | win rate | EOS rate | clipped | collapses |\n");
        sb.append("|---|---:|---|---:|---:|---|---:|---:|---:|---:|\n");
        for (var el : summary.getAsJsonArray("results")) {
            JsonObject e = el.getAsJsonObject();
            sb.append(String.format(Locale.ROOT, "| %s | %s | %s | %.2f | %.2f | %s | %.3f | %.3f | %.2f | %d |%n",
                    e.get("arm").getAsString(), e.get("beta").getAsString(), interval(e, "final_gold_reward"),
                    mean(e, "peak_gold_reward"), mean(e, "final_proxy_reward"), interval(e, "final_kl"),
                    mean(e, "final_win_rate"), mean(e, "final_eos_rate"), mean(e, "clip_rate"),
                    e.get("collapsed_measurements").getAsInt()));
        }
        sb.append("\nGold reward at matched KL (per seed the best over beta where the run first reaches the KL; "
                + "seeds reaching it in brackets).\n\n| arm |");
        for (double l : KL_LEVELS) {
            sb.append(" KL ").append(l).append(" |");
        }
        sb.append("\n|---|").append("---|".repeat(KL_LEVELS.length)).append('\n');
        for (var el : summary.getAsJsonArray("frontier_at_matched_kl")) {
            JsonObject a = el.getAsJsonObject();
            sb.append("| ").append(a.get("arm").getAsString()).append(" |");
            for (var lv : a.getAsJsonArray("levels")) {
                JsonObject l = lv.getAsJsonObject();
                JsonObject g = l.getAsJsonObject("gold");
                sb.append(g.has("mean") ? String.format(Locale.ROOT, " %.2f ± %.2f (%d) |", g.get("mean").getAsDouble(),
                        g.get("hi").getAsDouble() - g.get("mean").getAsDouble(), l.get("seeds_reaching").getAsInt())
                        : " – |");
            }
            sb.append('\n');
        }
        sb.append("\nPaired differences of gold reward at matched KL (a − b over seeds, 95% CI, paired t-test p).\n\n");
        sb.append("| a | b | KL | seeds | a − b [95% CI] | p |\n|---|---|---:|---:|---|---:|\n");
        for (var el : summary.getAsJsonArray("paired_at_matched_kl")) {
            JsonObject c = el.getAsJsonObject();
            if (!c.has("gold_difference")) {
                continue;
            }
            sb.append(String.format(Locale.ROOT, "| %s | %s | %s | %d | %+.2f [%.2f, %.2f] | %.3f |%n",
                    c.get("a").getAsString(), c.get("b").getAsString(), c.get("kl").getAsString(),
                    c.get("seeds").getAsInt(), c.get("gold_difference").getAsDouble(), c.get("lo").getAsDouble(),
                    c.get("hi").getAsDouble(), c.get("p").getAsDouble()));
        }
        sb.append("\nMeasured gradient profile: mean ∂ℓ/∂log π(y_l) of a pair's own loss, binned by log π(y_l) "
                + "(all betas, seeds and measured steps).\n\n");
        JsonArray prof = summary.getAsJsonArray("gradient_profile");
        if (!prof.isEmpty()) {
            sb.append("| arm |");
            for (var b : prof.get(0).getAsJsonObject().getAsJsonArray("bins")) {
                JsonObject bin = b.getAsJsonObject();
                sb.append(String.format(Locale.ROOT, " [%.0f, %.0f) |", bin.get("logp_rejected_lo").getAsDouble(),
                        bin.get("logp_rejected_hi").getAsDouble()));
            }
            sb.append("\n|---|").append("---:|".repeat(GRADIENT_BINS)).append('\n');
            for (var el : prof) {
                JsonObject a = el.getAsJsonObject();
                sb.append("| ").append(a.get("arm").getAsString()).append(" |");
                for (var b : a.getAsJsonArray("bins")) {
                    JsonObject bin = b.getAsJsonObject();
                    sb.append(bin.get("pairs").getAsInt() == 0 ? " – |" : String.format(Locale.ROOT, " %.3g |",
                            bin.get("mean_grad_rejected").getAsDouble()));
                }
                sb.append('\n');
            }
        }
        JsonArray lr = summary.getAsJsonArray("learning_rate_check");
        if (!lr.isEmpty()) {
            sb.append("\nLearning-rate check (seed 0): final gold / KL at lr against the main lr.\n\n");
            sb.append("| arm | beta | lr | gold | KL | gold (main lr) | KL (main lr) |\n|---|---:|---:|---:|---:|---:|---:|\n");
            for (var el : lr) {
                JsonObject c = el.getAsJsonObject();
                sb.append(String.format(Locale.ROOT, "| %s | %s | %.1e | %.2f | %.2f | %s | %s |%n", c.get("arm").getAsString(),
                        c.get("beta").getAsString(), c.get("lr").getAsDouble(), c.get("final_gold_reward").getAsDouble(),
                        c.get("final_kl").getAsDouble(), opt(c, "main_lr_final_gold_reward"), opt(c, "main_lr_final_kl")));
            }
        }
        return sb.toString();
    }

    private static String opt(JsonObject c, String k) {
        return c.has(k) ? String.format(Locale.ROOT, "%.2f", c.get(k).getAsDouble()) : "–";
    }

    private static double mean(JsonObject e, String k) {
        return e.getAsJsonObject(k).get("mean").getAsDouble();
    }

    private static String interval(JsonObject e, String k) {
        JsonObject o = e.getAsJsonObject(k);
        return String.format(Locale.ROOT, "%.3f [%.3f, %.3f]", o.get("mean").getAsDouble(), o.get("lo").getAsDouble(),
                o.get("hi").getAsDouble());
    }
}
