package dev.spo4j.experiment;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import dev.spo4j.data.PreferenceDataset;
import dev.spo4j.data.PreferencePair;
import dev.spo4j.synthetic.SyntheticPreferences;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The whole pipeline at toy size: SFT, sampled and annotated pairs, a 4-arm grid with the lr check, every output. */
class ExperimentTest {
    @Test
    void toyExperimentEndToEnd(@TempDir Path tmp) throws Exception {
        ExperimentConfig c = ExperimentConfig.toy();
        Experiment.Result r = Experiment.run(c, tmp.resolve("exp"), new PrintStream(new ByteArrayOutputStream()));
        Path out = r.runDir();
        for (String f : List.of("measurements.csv", "gradients.csv", "reference_curves.csv", "summary.json", "table.md",
                "frontier.png", "win_rate.png", "logps.png", "grad_norm.png", "proxy_vs_gold.png", "gradient_profile.png",
                "pairs-proxy.jsonl", "pairs-gold.jsonl", "pairs-labels.jsonl", "pairs-labels-n30.jsonl", "sft.jsonl",
                "sft-model/model.safetensors")) {
            assertTrue(Files.size(out.resolve(f)) > 0, f);
        }
        // per run: step 0 (the reference) + measurements at steps 1, 2 and 4; the grid plus the lr check
        int runs = c.arms.size() * (c.betas.size() * c.seeds + c.lrCheckFactors.size());
        List<String> csv = Files.readAllLines(out.resolve("measurements.csv"));
        assertEquals(1 + runs * 4, csv.size());
        assertTrue(csv.get(0).startsWith("arm,beta,lr,seed,step,gold_reward,proxy_reward,win_rate,kl"));
        for (Experiment.Measurement m : r.rows()) {
            assertTrue(m.winRate() >= 0 && m.winRate() <= 1);
            assertTrue(m.eosRate() >= 0 && m.eosRate() <= 1);
            assertTrue(Double.isFinite(m.kl()) && Double.isFinite(m.logpsChosen()) && m.logpsRejected() < 0);
            if (m.step() == 0) {
                assertEquals(0.0, m.kl());
            } else {
                assertTrue(m.gradNorm() > 0);
                assertTrue(m.clipRate() >= 0 && m.clipRate() <= 1);
            }
        }
        // one gradient row per tracked pair per measurement, the gradient of the run's own loss
        assertEquals(runs * 4 * c.logpsPairs, r.gradients().size());
        for (Experiment.GradientRow g : r.gradients()) {
            assertTrue(Double.isFinite(g.gradChosen()) && Double.isFinite(g.gradRejected()), g.toString());
            if (g.arm().equals("dpo-n30")) {  // DPO pushes the chosen up and the rejected down, always
                assertTrue(g.gradChosen() < 0 && g.gradRejected() > 0, g.toString());
            }
        }
        // the four views of the same pairs
        List<PreferencePair> proxy = PreferenceDataset.read(out.resolve("pairs-proxy.jsonl"));
        List<PreferencePair> gold = PreferenceDataset.read(out.resolve("pairs-gold.jsonl"));
        List<PreferencePair> labels = PreferenceDataset.read(out.resolve("pairs-labels.jsonl"));
        List<PreferencePair> noisy = PreferenceDataset.read(out.resolve("pairs-labels-n30.jsonl"));
        assertTrue(proxy.size() >= c.pairs / 2);
        int flipped = 0;
        for (int i = 0; i < proxy.size(); i++) {
            PreferencePair p = proxy.get(i), g = gold.get(i);
            assertTrue(p.scoreChosen() >= p.scoreRejected());
            assertEquals(SyntheticPreferences.goldReward(g.prompt(), g.chosen()), g.scoreChosen());
            assertTrue(g.scoreChosen() >= g.scoreRejected());
            assertEquals(p.chosen(), labels.get(i).chosen());
            assertFalse(labels.get(i).hasScores());
            flipped += noisy.get(i).chosen().equals(p.chosen()) ? 0 : 1;
        }
        assertTrue(flipped > 0 && flipped < proxy.size() / 2, flipped + " of " + proxy.size() + " flipped");

        JsonObject s = JsonParser.parseString(Files.readString(out.resolve("summary.json"))).getAsJsonObject();
        assertEquals(c.arms.size() * c.betas.size(), s.getAsJsonArray("results").size());
        JsonObject first = s.getAsJsonArray("results").get(0).getAsJsonObject();
        JsonObject gr = first.getAsJsonObject("final_gold_reward");
        assertTrue(gr.get("lo").getAsDouble() <= gr.get("mean").getAsDouble());
        assertEquals(c.seeds, gr.getAsJsonArray("per_seed").size());
        assertEquals(c.arms.size() * c.lrCheckFactors.size(), s.getAsJsonArray("learning_rate_check").size());
        assertTrue(s.getAsJsonArray("reference_curves").size() > 0);
        assertEquals(c.arms.size(), s.getAsJsonArray("gradient_profile").size());

        // the summary and plots can be rebuilt from the CSV files alone
        Files.delete(out.resolve("frontier.png"));
        JsonObject again0 = Experiment.replot(out);
        for (int i = 0; i < s.getAsJsonArray("results").size(); i++) {  // the CSV keeps 5 decimals
            JsonObject a = s.getAsJsonArray("results").get(i).getAsJsonObject();
            JsonObject b = again0.getAsJsonArray("results").get(i).getAsJsonObject();
            assertEquals(a.get("arm"), b.get("arm"));
            assertEquals(a.getAsJsonObject("final_gold_reward").get("mean").getAsDouble(),
                    b.getAsJsonObject("final_gold_reward").get("mean").getAsDouble(), 1e-4);
        }
        assertTrue(Files.size(out.resolve("frontier.png")) > 0);
        assertTrue(Files.readString(out.resolve("config.json")).contains("kernel_simd_path"));

        // committed results keep gradients.csv gzipped: --replot reads that too, with the same profile
        Path gradCsv = out.resolve("gradients.csv");
        try (java.io.OutputStream gz = new java.util.zip.GZIPOutputStream(Files.newOutputStream(
                out.resolve("gradients.csv.gz")))) {
            Files.copy(gradCsv, gz);
        }
        Files.delete(gradCsv);
        JsonObject fromGz = Experiment.replot(out);
        assertEquals(again0.get("gradient_profile"), fromGz.get("gradient_profile"));

        // reproducible from the seed: a second run gives the same measurements
        Experiment.Result again = Experiment.run(c, tmp.resolve("exp2"), new PrintStream(new ByteArrayOutputStream()));
        assertEquals(r.rows(), again.rows());
    }

    @Test
    void goldAtMatchedKlInterpolatesTheFirstCrossing() {
        List<Experiment.Measurement> run = List.of(m(0, 0, 1.0), m(10, 1.0, 2.0), m(20, 3.0, 4.0), m(30, 1.5, 0.0));
        assertEquals(3.0, ExperimentSummary.goldAtKl(run, 2.0), 1e-12);
        assertEquals(1.5, ExperimentSummary.goldAtKl(run, 0.5), 1e-12);
        assertTrue(Double.isNaN(ExperimentSummary.goldAtKl(run, 4.0)));
    }

    @Test
    void badSettingsAreRejectedWithTheValue() {
        ExperimentConfig c = ExperimentConfig.toy();
        c.lr = Double.NaN;
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, c::validate);
        assertTrue(e.getMessage().contains("learning rate NaN"), e.getMessage());
        c = ExperimentConfig.toy();
        c.betas = List.of(0.1, -1.0);
        e = assertThrows(IllegalArgumentException.class, c::validate);
        assertTrue(e.getMessage().contains("beta -1.0"), e.getMessage());
        c = ExperimentConfig.toy();
        c.lrCheckFactors = List.of(0.0);
        e = assertThrows(IllegalArgumentException.class, c::validate);
        assertTrue(e.getMessage().contains("factor 0.0"), e.getMessage());
        c = ExperimentConfig.toy();
        c.arms = List.of("spo", "dpo-n99");
        assertThrows(IllegalArgumentException.class, c::validate);
    }

    private static Experiment.Measurement m(int step, double kl, double gold) {
        return new Experiment.Measurement("spo", 0.1, 1e-3, 0, step, gold, 0, 0.5, kl, -1, -2, 1, 0, 0, 5, 1);
    }
}
