package dev.spo4j.experiment;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import dev.spo4j.data.PreferenceDataset;
import dev.spo4j.data.PreferencePair;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The whole pipeline at toy size: SFT, sampled and labelled pairs, a 2 x 1 x 2 grid, every output. */
class ExperimentTest {
    @Test
    void toyExperimentEndToEnd(@TempDir Path tmp) throws Exception {
        ExperimentConfig c = ExperimentConfig.toy();
        Experiment.Result r = Experiment.run(c, tmp.resolve("exp"), new PrintStream(new ByteArrayOutputStream()));
        Path out = r.runDir();
        for (String f : List.of("measurements.csv", "summary.json", "table.md", "frontier.png", "win_rate.png",
                "logps.png", "grad_norm.png", "pairs.jsonl", "sft.jsonl", "sft-model/model.safetensors")) {
            assertTrue(Files.size(out.resolve(f)) > 0, f);
        }
        // per run: step 0 (the reference) + measurements at steps 2 and 4
        int runs = c.losses.size() * c.betas.size() * c.seeds;
        List<String> csv = Files.readAllLines(out.resolve("measurements.csv"));
        assertEquals(1 + runs * 3, csv.size());
        assertTrue(csv.get(0).startsWith("loss,beta,seed,step,gold_reward,win_rate,kl"));
        for (Experiment.Measurement m : r.rows()) {
            assertTrue(m.winRate() >= 0 && m.winRate() <= 1);
            assertTrue(Double.isFinite(m.kl()) && Double.isFinite(m.logpsChosen()) && m.logpsRejected() < 0);
            if (m.step() == 0) {
                assertEquals(0.0, m.kl());
            } else {
                assertTrue(m.gradNorm() > 0);
            }
        }
        // pairs come from the reference with gold scores; labels mostly agree with the scores
        List<PreferencePair> pairs = PreferenceDataset.read(out.resolve("pairs.jsonl"));
        assertTrue(pairs.size() >= c.pairs / 2);
        for (PreferencePair p : pairs) {
            assertTrue(p.hasScores());
            assertEquals(dev.spo4j.synthetic.SyntheticPreferences.goldReward(p.prompt(), p.chosen()), p.scoreChosen());
        }
        JsonObject s = JsonParser.parseString(Files.readString(out.resolve("summary.json"))).getAsJsonObject();
        assertEquals(c.losses.size() * c.betas.size(), s.getAsJsonArray("results").size());
        JsonObject first = s.getAsJsonArray("results").get(0).getAsJsonObject();
        JsonObject best = first.getAsJsonObject("best_win_rate");
        assertTrue(best.get("lo").getAsDouble() <= best.get("mean").getAsDouble());
        assertEquals(c.seeds, best.getAsJsonArray("per_seed").size());

        // the summary and plots can be rebuilt from the CSV alone
        Files.delete(out.resolve("frontier.png"));
        JsonObject again0 = Experiment.replot(out);
        for (int i = 0; i < s.getAsJsonArray("results").size(); i++) {  // the CSV keeps 5 decimals
            JsonObject a = s.getAsJsonArray("results").get(i).getAsJsonObject();
            JsonObject b = again0.getAsJsonArray("results").get(i).getAsJsonObject();
            assertEquals(a.get("loss"), b.get("loss"));
            assertEquals(a.getAsJsonObject("final_win_rate").get("mean").getAsDouble(),
                    b.getAsJsonObject("final_win_rate").get("mean").getAsDouble(), 1e-4);
        }
        assertTrue(Files.size(out.resolve("frontier.png")) > 0);

        // reproducible from the seed: a second run gives the same measurements
        Experiment.Result again = Experiment.run(c, tmp.resolve("exp2"), new PrintStream(new ByteArrayOutputStream()));
        assertEquals(r.rows(), again.rows());
    }
}
