package dev.spo4j.experiment;

import com.google.gson.JsonArray;
import com.google.gson.JsonObject;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * The experiment's summary.json and its Markdown table: per loss and β, over seeds, the best
 * and the final win rate with a 95% confidence interval, the KL and gold reward at those
 * points, and the lowest chosen/rejected log-probs reached.
 *
 * <p>Intervals are Student-t intervals over the per-seed values: mean ± t(0.975, n−1)·sd/√n
 * (sd with n−1). "Best" is the maximum over the measured steps of one seed's win rate; it is
 * chosen on the same samples it is reported on, so it is optimistic; "final" is not.
 */
public final class ExperimentSummary {
    private ExperimentSummary() {}

    /** t(0.975, df) for df = 1..30; 1.96 beyond. */
    private static final double[] T975 = {12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
            2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
            2.060, 2.056, 2.052, 2.048, 2.045, 2.042};

    static double t975(int df) {
        return df < 1 ? Double.NaN : df <= T975.length ? T975[df - 1] : 1.96;
    }

    /** {mean, lo, hi} of a 95% t-interval; lo = hi = mean for one value. */
    public static double[] tInterval(double[] v) {
        int n = v.length;
        double m = Experiment.mean(v);
        if (n < 2) {
            return new double[] {m, m, m};
        }
        double ss = 0;
        for (double x : v) {
            ss += (x - m) * (x - m);
        }
        double half = t975(n - 1) * Math.sqrt(ss / (n - 1)) / Math.sqrt(n);
        return new double[] {m, m - half, m + half};
    }

    static JsonObject summarise(ExperimentConfig cfg, List<Experiment.Measurement> rows, Experiment.Measurement ref,
                                JsonObject setup, double seconds) {
        JsonObject o = new JsonObject();
        o.addProperty("preset", cfg.preset);
        o.addProperty("seconds", seconds);
        o.addProperty("interval", "95% Student t over seeds: mean +- t(0.975, n-1) sd / sqrt(n)");
        o.addProperty("best_note", "best = max over measured steps of each seed's win rate (selected on the "
                + "evaluation samples themselves, so optimistic); final = last step");
        o.add("setup", setup);
        JsonObject r = new JsonObject();
        r.addProperty("gold_reward", ref.goldReward());
        r.addProperty("win_rate_vs_own_samples", ref.winRate());
        r.addProperty("mean_length", ref.meanLength());
        r.addProperty("eos_rate", ref.eosRate());
        r.addProperty("logps_chosen", ref.logpsChosen());
        r.addProperty("logps_rejected", ref.logpsRejected());
        o.add("reference", r);
        JsonArray results = new JsonArray();
        for (String loss : cfg.losses) {
            for (double beta : cfg.betas) {
                int n = cfg.seeds;
                double[] best = new double[n], bestStep = new double[n], klBest = new double[n], goldBest = new double[n];
                double[] fin = new double[n], klFin = new double[n], goldFin = new double[n];
                double[] minC = new double[n], minR = new double[n], finC = new double[n], finR = new double[n];
                double[] lenFin = new double[n];
                for (int s = 0; s < n; s++) {
                    List<Experiment.Measurement> mine = new ArrayList<>();
                    for (Experiment.Measurement m : rows) {
                        if (m.loss().equals(loss) && m.beta() == beta && m.seed() == s) {
                            mine.add(m);
                        }
                    }
                    Experiment.Measurement b = null;
                    minC[s] = minR[s] = Double.POSITIVE_INFINITY;
                    for (Experiment.Measurement m : mine) {
                        if (m.step() > 0 && (b == null || m.winRate() > b.winRate())) {
                            b = m;
                        }
                        minC[s] = Math.min(minC[s], m.logpsChosen());
                        minR[s] = Math.min(minR[s], m.logpsRejected());
                    }
                    Experiment.Measurement f = mine.get(mine.size() - 1);
                    best[s] = b.winRate();
                    bestStep[s] = b.step();
                    klBest[s] = b.kl();
                    goldBest[s] = b.goldReward();
                    fin[s] = f.winRate();
                    klFin[s] = f.kl();
                    goldFin[s] = f.goldReward();
                    finC[s] = f.logpsChosen();
                    finR[s] = f.logpsRejected();
                    lenFin[s] = f.meanLength();
                }
                JsonObject e = new JsonObject();
                e.addProperty("loss", loss);
                e.addProperty("beta", beta);
                e.addProperty("seeds", n);
                e.add("best_win_rate", ci(best));
                e.add("best_step", ci(bestStep));
                e.add("kl_at_best", ci(klBest));
                e.add("gold_reward_at_best", ci(goldBest));
                e.add("final_win_rate", ci(fin));
                e.add("kl_final", ci(klFin));
                e.add("gold_reward_final", ci(goldFin));
                e.add("min_logps_chosen", ci(minC));
                e.add("min_logps_rejected", ci(minR));
                e.add("final_logps_chosen", ci(finC));
                e.add("final_logps_rejected", ci(finR));
                e.add("final_mean_length", ci(lenFin));
                results.add(e);
            }
        }
        o.add("results", results);
        return o;
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

    /** The Markdown table of summary.json's results. */
    public static String table(JsonObject summary) {
        StringBuilder sb = new StringBuilder();
        JsonObject ref = summary.getAsJsonObject("reference");
        sb.append(String.format(Locale.ROOT, "Reference (SFT) policy: gold reward %.3f, mean length %.1f tokens, "
                        + "logps chosen/rejected %.1f / %.1f.%n%n", ref.get("gold_reward").getAsDouble(),
                ref.get("mean_length").getAsDouble(), ref.get("logps_chosen").getAsDouble(),
                ref.get("logps_rejected").getAsDouble()));
        sb.append("Win rates: mean over seeds [95% Student-t interval over seeds, clipped to [0, 1]]; KL in nats; "
                + "log-probs summed over the completion; length in tokens.\n\n");
        sb.append("| loss | beta | best win rate [95% CI] | KL at best | gold at best | final win rate [95% CI] "
                + "| KL final | gold final | min logps chosen | min logps rejected | final length |\n");
        sb.append("|---|---:|---|---:|---:|---|---:|---:|---:|---:|---:|\n");
        for (var el : summary.getAsJsonArray("results")) {
            JsonObject e = el.getAsJsonObject();
            sb.append(String.format(Locale.ROOT, "| %s | %s | %s | %.2f | %.2f | %s | %.2f | %.2f | %.1f | %.1f | %.1f |%n",
                    e.get("loss").getAsString(), e.get("beta").getAsString(), interval(e, "best_win_rate"),
                    mean(e, "kl_at_best"), mean(e, "gold_reward_at_best"), interval(e, "final_win_rate"),
                    mean(e, "kl_final"), mean(e, "gold_reward_final"), mean(e, "min_logps_chosen"),
                    mean(e, "min_logps_rejected"), mean(e, "final_mean_length")));
        }
        return sb.toString();
    }

    private static double mean(JsonObject e, String k) {
        return e.getAsJsonObject(k).get("mean").getAsDouble();
    }

    private static String interval(JsonObject e, String k) {
        JsonObject o = e.getAsJsonObject(k);
        return String.format(Locale.ROOT, "%.3f [%.3f, %.3f]", o.get("mean").getAsDouble(),
                Math.max(0, o.get("lo").getAsDouble()), Math.min(1, o.get("hi").getAsDouble()));
    }
}
