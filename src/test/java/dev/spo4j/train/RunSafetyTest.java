package dev.spo4j.train;

import static dev.spo4j.testing.RunFolders.metrics;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.JsonObject;
import dev.spo4j.data.PreferenceDataset;
import dev.spo4j.data.PreferencePair;
import dev.spo4j.synthetic.EmbeddedDefault;
import dev.spo4j.synthetic.SyntheticPreferences;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A run folder belongs to one run (refused when taken, moved runs resume where they are, changed
 * inputs and other settings refused on resume), early errors leave no folder, and non-finite
 * steps are skipped, counted and finally stop the run. Through the CLI, as a user meets them.
 */
class RunSafetyTest {
    /** exit code and stderr of one CLI call (in this JVM). */
    record Outcome(int code, String err, String out) {}

    static Outcome cli(String... args) {
        ByteArrayOutputStream err = new ByteArrayOutputStream(), out = new ByteArrayOutputStream();
        PrintStream oldOut = System.out;
        System.setOut(new PrintStream(out));
        try {
            int code = TrainerTest.runWithErr(List.of(args), err);
            return new Outcome(code, err.toString().trim(), out.toString());
        } finally {
            System.setOut(oldOut);
        }
    }

    /** The embedded tiny model and 16 synthetic pairs (with scores), shared by the tests. */
    @TempDir
    static Path shared;
    static Path model, data;

    @BeforeAll
    static void prepare() throws IOException {
        model = EmbeddedDefault.prepare(shared.resolve("embedded"), 42).modelDir();
        data = shared.resolve("pairs.jsonl");
        PreferenceDataset.write(data, SyntheticPreferences.generate(16, 7));
    }

    static List<String> tiny(Path out, String... more) {
        List<String> a = new ArrayList<>(List.of("train", "--max-steps", "2", "--batch-size", "4", "--eval-every", "0",
                "--threads", "1", "--out", out.toString(), "--model", model.toString()));
        if (!List.of(more).contains("--data")) {
            a.addAll(List.of("--data", data.toString()));
        }
        a.addAll(List.of(more));
        return a;
    }

    static Outcome cli(List<String> args) {
        return cli(args.toArray(new String[0]));
    }

    @Test
    void aTakenRunFolderIsRefusedUnlessOverwrite(@TempDir Path tmp) throws IOException {
        Path run = tmp.resolve("run");
        assertEquals(0, cli(tiny(run)).code());
        byte[] before = Files.readAllBytes(run.resolve("metrics.jsonl"));
        Outcome second = cli(tiny(run, "--loss", "dpo"));
        assertEquals(2, second.code(), second.err());
        assertTrue(second.err().contains("is not empty") && second.err().contains("--resume")
                && second.err().contains("--overwrite"), second.err());
        assertArrayEquals(before, Files.readAllBytes(run.resolve("metrics.jsonl")), "the first run was touched");
        assertEquals(0, cli(tiny(run, "--loss", "dpo", "--overwrite")).code());
        assertTrue(Files.readString(run.resolve("config.json")).toLowerCase(java.util.Locale.ROOT).contains("\"dpo\""),
                Files.readString(run.resolve("config.json")));

        Path notARun = Files.createDirectories(tmp.resolve("mine"));
        Files.writeString(notARun.resolve("notes.txt"), "keep me");
        Outcome o = cli(tiny(notARun, "--overwrite"));
        assertEquals(2, o.code(), o.err());
        assertTrue(o.err().contains("holds no spo4j run"), o.err());
        assertEquals("keep me", Files.readString(notARun.resolve("notes.txt")));

        Outcome empty = cli(tiny(Path.of("")));
        assertEquals(2, empty.code(), empty.err());
        assertTrue(empty.err().contains("--out"), empty.err());
    }

    @Test
    void aMovedRunResumesWhereItIsNow(@TempDir Path tmp) throws IOException {
        Path first = tmp.resolve("first"), moved = tmp.resolve("moved");
        assertEquals(0, cli(tiny(first, "--checkpoint-every", "1")).code());
        Files.move(first, moved);
        Outcome o = cli("train", "--resume", moved.toString(), "--max-steps", "3");
        assertEquals(0, o.code(), o.err());
        assertFalse(Files.exists(first), "the resumed run wrote to the folder's old place");
        assertEquals(3, metrics(moved).size());

        Outcome done = cli("train", "--resume", moved.toString());
        assertEquals(2, done.code(), done.err());
        assertTrue(done.err().contains("already finished") && done.err().contains("step 3"), done.err());
        // said first, and alone: no "resumed from ... at step 3", no reference pass, no loss NaN
        for (String said : List.of(done.err(), done.out())) {
            assertFalse(said.contains("resumed from") || said.contains("reference log-probs") || said.contains("NaN"),
                    said);
        }

        Outcome other = cli("train", "--resume", moved.toString(), "--max-steps", "4", "--beta", "0.5", "--out", "x");
        assertEquals(2, other.code(), other.err());
        assertTrue(other.err().contains("--beta, --out with --resume") || other.err().contains("--out, --beta with --resume"),
                other.err());
    }

    @Test
    void changedDataIsRefusedOnResume(@TempDir Path tmp) throws IOException {
        Path data = tmp.resolve("pairs.jsonl");
        PreferenceDataset.write(data, SyntheticPreferences.generate(16, 8));
        Path run = tmp.resolve("run");
        assertEquals(0, cli(tiny(run, "--data", data.toString(), "--checkpoint-every", "1")).code());
        List<String> lines = Files.readAllLines(data);
        Files.writeString(data, lines.get(1) + "\n", StandardOpenOption.APPEND);
        Outcome o = cli("train", "--resume", run.toString(), "--max-steps", "3");
        assertEquals(2, o.code(), o.err());
        assertTrue(o.err().contains("--data " + data.toAbsolutePath()) && o.err().contains("changed"), o.err());
        assertEquals(2, metrics(run).size(), "the refused resume wrote steps");
    }

    @Test
    void anEarlyErrorLeavesNoRunFolder(@TempDir Path tmp) throws IOException {
        Path run = tmp.resolve("run");
        // a broken reference model is found when it is loaded, after the folder was made
        Path broken = Files.createDirectories(tmp.resolve("broken-ref"));
        Files.writeString(broken.resolve("config.json"), "{\"model_type\": \"llama\"}");
        Outcome o = cli(tiny(run, "--ref-model", broken.toString()));
        assertTrue(o.code() != 0, o.err());
        assertTrue(o.err().contains("config.json"), o.err());
        Outcome ref = cli(tiny(run, "--ref-model", tmp.resolve("no-such-model").toString()));
        assertEquals(2, ref.code(), ref.err());
        assertTrue(ref.err().contains("--ref-model") && ref.err().contains("does not exist"), ref.err());
        assertFalse(Files.exists(run), "a failed run left " + run);
    }

    @Test
    void nonFiniteStepsAreSkippedAndStopTheRun(@TempDir Path tmp) throws IOException {
        Path run = tmp.resolve("run");
        // margins gamma * (score difference) overflow to inf: every step's loss is not finite
        List<String> args = tiny(run, "--reward-scale", "1e300");
        args.set(args.indexOf("--max-steps") + 1, "20");
        Outcome o = cli(args);
        assertEquals(1, o.code(), o.err());
        assertTrue(o.err().contains(Trainer.MAX_NONFINITE_IN_A_ROW + " steps in a row") && o.err().contains("--lr"),
                o.err());
        List<JsonObject> rows = metrics(run);
        assertEquals(Trainer.MAX_NONFINITE_IN_A_ROW - 1, rows.size());
        for (int i = 0; i < rows.size(); i++) {
            assertEquals(i + 1, rows.get(i).get("skipped_steps").getAsInt());
        }
        assertFalse(Files.exists(run.resolve("final-model")), "a diverged run must not write a final model");
    }

    /**
     * The newest checkpoint's optimizer.pt cut in half, an empty trainer_state.json in another
     * case, a torn last line of metrics.jsonl and of reference_logps.json, leftovers of an
     * interrupted deletion: the resume falls back to the newest good checkpoint, names the bad
     * file, repairs the logs and ends with the same metrics as an uninterrupted run.
     */
    @Test
    void damagedCheckpointsFallBackAndTornLogsAreRepaired(@TempDir Path tmp) throws IOException {
        Path whole = tmp.resolve("whole"), run = tmp.resolve("run");
        List<String> args = tiny(whole, "--checkpoint-every", "1", "--keep-checkpoints", "3");
        args.set(args.indexOf("--max-steps") + 1, "4");
        assertEquals(0, cli(args).code());
        assertEquals(0, cli(tiny(run, "--checkpoint-every", "1", "--keep-checkpoints", "3")).code());
        Path ck2 = run.resolve("checkpoints").resolve("step-0000002");
        assertTrue(Files.exists(ck2.resolve(Checkpoints.MANIFEST)));
        byte[] opt = Files.readAllBytes(ck2.resolve("optimizer.pt"));
        Files.write(ck2.resolve("optimizer.pt"), java.util.Arrays.copyOf(opt, opt.length / 2));
        Files.writeString(run.resolve("metrics.jsonl"), "{\"step\": 3.0, \"lo", StandardOpenOption.APPEND);
        String refs = Files.readString(run.resolve("reference_logps.json"));
        Files.writeString(run.resolve("reference_logps.json"), refs.substring(0, refs.length() / 2));
        Path leftover = Files.createDirectories(run.resolve("checkpoints").resolve(".step-0000000.1a2b.del").resolve("model"));

        Outcome o = cli("train", "--resume", run.toString(), "--max-steps", "4");
        assertEquals(0, o.code(), o.err() + o.out());
        assertTrue(o.out().contains("step-0000002 is damaged") && o.out().contains("optimizer.pt")
                && o.out().contains("resuming from step-0000001"), o.out());
        assertTrue(o.out().contains("reference_logps.json cannot be used"), o.out());
        assertFalse(Files.exists(leftover.getParent()), "leftover of an interrupted deletion");
        List<JsonObject> a = metrics(whole), b = metrics(run);
        assertEquals(4, b.size());
        for (int i = 0; i < 4; i++) {
            assertEquals(a.get(i).get("loss").getAsDouble(), b.get(i).get("loss").getAsDouble(), 0.0, "step " + (i + 1));
        }

        // an empty trainer_state.json in the newest checkpoint: the one before it is used
        Path ck4 = run.resolve("checkpoints").resolve("step-0000004");
        Files.writeString(ck4.resolve(Checkpoints.STATE), "");
        Outcome e = cli("train", "--resume", run.toString(), "--max-steps", "5");
        assertEquals(0, e.code(), e.err() + e.out());
        assertTrue(e.out().contains("step-0000004 is damaged") && e.out().contains(Checkpoints.STATE), e.out());
        // a damaged checkpoint named directly is refused, naming the file
        Path ck5 = run.resolve("checkpoints").resolve("step-0000005");
        Files.write(ck5.resolve("model").resolve("model.safetensors"), new byte[] {1, 2, 3});
        Outcome d = cli("train", "--resume", ck5.toString(), "--max-steps", "6");
        assertEquals(2, d.code(), d.err());
        assertTrue(d.err().contains("model.safetensors") && d.err().contains("manifest"), d.err());
    }

    @Test
    void oneGpuForEveryRankIsRefused(@TempDir Path tmp) {
        Path run = tmp.resolve("run");
        TrainConfig c = configOf(List.of("--device", "cuda:1", "--out", run.toString()));
        Trainer t = new Trainer(c, new PrintStream(new ByteArrayOutputStream()),
                new dev.spo4j.train.dist.DistributedEnv(0, 2, 0, "127.0.0.1", 29500));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, t::run);
        assertTrue(e.getMessage().startsWith("--device cuda:1 with 2 processes")
                && e.getMessage().contains("cuda:LOCAL_RANK"), e.getMessage());
        assertFalse(Files.exists(run), "refused before the run folder is made");
    }

    @Test
    void nonFiniteComputedReferenceLogProbsNameThePair() {
        List<PreferencePair> batch = List.of(PreferencePair.of("p", "a", "b").withSource("d.jsonl:1"),
                PreferencePair.of("q", "c", "d").withSource("d.jsonl:2"));
        ReferenceLogProbs.requireFinite(new double[] {-3, -4, -5, -6}, batch);  // chosen 1, 2, rejected 1, 2
        for (double bad : new double[] {Double.NaN, Double.NEGATIVE_INFINITY, Double.POSITIVE_INFINITY}) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> ReferenceLogProbs.requireFinite(new double[] {-3, -4, -5, bad}, batch));
            assertTrue(e.getMessage().startsWith("d.jsonl:2: ") && e.getMessage().contains("rejected completion is "
                    + bad) && e.getMessage().contains("expected a finite number"), e.getMessage());
        }
        IllegalArgumentException c = assertThrows(IllegalArgumentException.class,
                () -> ReferenceLogProbs.requireFinite(new double[] {Double.NaN, -4, -5, -6}, batch));
        assertTrue(c.getMessage().startsWith("d.jsonl:1: ") && c.getMessage().contains("chosen completion is NaN"),
                c.getMessage());
    }

    @Test
    void positiveReferenceLogProbsAreRejected() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> PreferencePair.of("p", "a", "b").withSource("d.jsonl:3").withReferenceLogps(5.0, -1.0));
        assertTrue(e.getMessage().contains("d.jsonl:3") && e.getMessage().contains("ref_chosen_logps")
                && e.getMessage().contains("<= 0"), e.getMessage());
    }

    @Test
    void lossOptionsThatDoNotApplyAreRefusedByName(@TempDir Path tmp) {
        Path run = tmp.resolve("run");
        Outcome o = cli(tiny(run, "--loss", "spo", "--label-smoothing", "0.2"));
        assertEquals(2, o.code(), o.err());
        assertTrue(o.err().contains("--label-smoothing 0.2 does not apply: the spo loss does not use it")
                && o.err().contains("dpo"), o.err());
        assertFalse(Files.exists(run), "refused before the run folder is made");
        for (List<String> bad : List.of(List.of("--loss", "dpo", "--margin", "2"), List.of("--loss", "dpo", "--reward-scale", "3"),
                List.of("--loss", "spo", "--simpo-gamma", "1"), List.of("--loss", "dpo", "--margin-floor", "0.5"),
                List.of("--loss", "dpo", "--discopop-tau", "0.1"))) {
            TrainConfig c = configOf(bad);
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, c::validate);
            assertTrue(e.getMessage().startsWith(bad.get(2) + " ") && e.getMessage().contains("does not apply"),
                    e.getMessage());
        }
        // what the loss reads is accepted, in a mix when one term reads it, and defaults given explicitly pass
        for (List<String> good : List.of(List.of("--loss", "dpo", "--label-smoothing", "0.2"),
                List.of("--loss", "spo", "--margin", "2", "--reward-scale", "3"),
                List.of("--loss-weights", "spo=1,dpo=0.5", "--label-smoothing", "0.1"),
                List.of("--loss", "spo-exp", "--margin-floor", "0.5"), List.of("--loss", "simpo", "--simpo-gamma", "1"),
                List.of("--loss", "dpo", "--margin", "1.0", "--label-smoothing", "0"))) {
            configOf(good).validate();
        }
    }

    private static TrainConfig configOf(List<String> args) {
        TrainConfig c = new TrainConfig();
        new picocli.CommandLine(c).registerConverter(dev.spo4j.loss.LossType.class, dev.spo4j.loss.LossType::parse)
                .parseArgs(args.toArray(new String[0]));
        return c;
    }

    @Test
    void nanOptionValuesNameTheOption() {
        for (String opt : List.of("--beta", "--lr", "--margin", "--reward-scale", "--max-grad-norm", "--sft-weight")) {
            for (String v : List.of("NaN", "Infinity", "-Infinity")) {
                Outcome t = cli("train", opt, v, "--out", "unused");
                assertEquals(2, t.code(), t.err());
                assertTrue(t.err().contains(opt) && t.err().contains("not a finite number"), t.err());
            }
        }
        assertFalse(Files.exists(Path.of("unused")));
    }

    @Test
    void tooManyThreadsAreCappedAtTheCpus() {
        TrainConfig c = new TrainConfig();
        c.threads = 100_000;
        ByteArrayOutputStream console = new ByteArrayOutputStream();
        int n = Trainer.threadCount(c, new PrintStream(console));
        assertEquals(Runtime.getRuntime().availableProcessors(), n);
        assertTrue(console.toString().contains("--threads 100000"), console.toString());
        c.threads = 0;
        assertEquals(1, Trainer.threadCount(c, new PrintStream(console)), "the embedded model trains on one thread");
    }
}
