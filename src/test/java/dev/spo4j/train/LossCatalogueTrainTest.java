package dev.spo4j.train;

import static dev.spo4j.testing.RunFolders.metrics;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.JsonObject;
import dev.spo4j.cli.Main;
import dev.spo4j.data.PreferenceDataset;
import dev.spo4j.data.PreferencePair;
import dev.spo4j.synthetic.EmbeddedDefault;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The trainer with the losses of TRL's catalogue: a reference-free loss (simpo) runs without
 * a reference pass, and bco-pair's running mean goes into its checkpoints.
 */
class LossCatalogueTrainTest {
    @Test
    void simpoTrainsWithoutAReferencePass(@TempDir Path tmp) throws IOException {
        Path run = tmp.resolve("simpo"), data = smallData(tmp, "train.jsonl", false);
        // a reference model does not apply to a reference-free loss: refused before anything is written
        assertEquals(2, Main.run("train", "--loss", "simpo", "--max-steps", "3", "--ref-model",
                tmp.resolve("some-model").toString(), "--data", data.toString(), "--out", run.toString()));
        assertFalse(Files.exists(run));
        // no reference log-probs in the data: a run that made a reference pass would write them
        assertEquals(0, Main.run("train", "--loss", "simpo", "--max-steps", "3", "--batch-size", "4",
                "--eval-every", "0", "--threads", "2",
                "--data", data.toString(), "--eval-data", data.toString(), "--out", run.toString()));
        assertFalse(Files.exists(run.resolve(ReferenceLogProbs.FILE)), "no reference log-probs are computed");
        assertTrue(Files.exists(run.resolve("metrics.jsonl")));
        List<JsonObject> m = metrics(run);
        assertEquals(3, m.size());
        for (JsonObject row : m) {
            double loss = row.get("loss").getAsDouble();
            assertTrue(Double.isFinite(loss) && loss > 0, "loss " + loss);
            // without a reference, rewards are beta times the policy's (mean token) log-probs: negative
            assertTrue(row.get("rewards/chosen").getAsDouble() < 0, row.toString());
        }
    }

    /** 16 of the embedded default's pairs, with precomputed reference log-probs (no reference pass) or without. */
    static Path smallData(Path tmp, String name, boolean refs) {
        EmbeddedDefault.Prepared d = EmbeddedDefault.prepare(tmp.resolve("embedded"), 1);
        List<PreferencePair> pairs = new ArrayList<>();
        for (PreferencePair p : d.train().subList(0, 16)) {
            pairs.add(new PreferencePair(p.prompt(), p.chosen(), p.rejected(), null, null, refs ? -20.0 : null,
                    refs ? -22.0 : null, null));
        }
        Path file = tmp.resolve(name);
        PreferenceDataset.write(file, pairs);
        return file;
    }

    @Test
    void bcoPairKeepsItsRunningMeanInCheckpoints(@TempDir Path tmp) throws IOException {
        Path run = tmp.resolve("bco"), data = smallData(tmp, "train.jsonl", true);
        assertEquals(0, Main.run("train", "--loss", "bco_pair", "--max-steps", "4", "--batch-size", "4",
                "--grad-accum", "2", "--checkpoint-every", "2", "--keep-checkpoints", "2", "--eval-every", "0",
                "--data", data.toString(), "--eval-data", data.toString(), "--threads", "2",
                "--out", run.toString()));
        List<Path> cps = Checkpoints.list(run);
        assertEquals(2, cps.size());
        double[] at2 = Checkpoints.readState(cps.get(0)).lossState;
        double[] at4 = Checkpoints.readState(cps.get(1)).lossState;
        assertNotNull(at2);
        assertEquals(4.0, at2[1], 0.0, "2 steps x 2 micro-batches");
        assertEquals(8.0, at4[1], 0.0, "4 steps x 2 micro-batches");
        assertTrue(Double.isFinite(at4[0]) && at4[0] != at2[0], "the running mean moves: " + at2[0] + " " + at4[0]);

        Path dpo = tmp.resolve("dpo");
        assertEquals(0, Main.run("train", "--loss", "dpo", "--max-steps", "2", "--batch-size", "4",
                "--checkpoint-every", "2", "--eval-every", "0", "--data", data.toString(), "--eval-data",
                data.toString(), "--threads", "2", "--out", dpo.toString()));
        assertNull(Checkpoints.readState(Checkpoints.list(dpo).get(0)).lossState, "no state for a stateless loss");
    }
}
