package dev.spo4j.train;

import static dev.spo4j.testing.RunFolders.metrics;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.JsonObject;
import dev.spo4j.cli.Main;
import dev.spo4j.data.PreferenceDataset;
import dev.spo4j.loss.LmHead;
import dev.spo4j.loss.LossImpl;
import dev.spo4j.synthetic.EmbeddedDefault;
import dev.spo4j.synthetic.SyntheticPreferences;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The trainer end to end on the embedded default (tiny Llama, synthetic preferences):
 * fused vs LibTorch trajectories, kill -9 and resume, the CLI's outputs and errors.
 */
class TrainerTest {
    static final PrintStream QUIET = new PrintStream(new ByteArrayOutputStream());

    static TrainConfig tiny(Path out, int steps) {
        TrainConfig c = TrainConfig.embeddedDefault();
        c.out = out.toString();
        c.maxSteps = steps;
        c.batchSize = 4;
        c.evalEvery = 0;
        c.threads = 2;
        c.optim.warmupSteps = 2;
        return c;
    }

    /**
     * The default (fused LM head: log-probs from the hidden states), the fused kernel over
     * materialised logits, and LibTorch's composite over materialised logits follow the same
     * trajectory within fp32 rounding.
     */
    @Test
    void fusedAndLibTorchFollowTheSameTrajectory(@TempDir Path tmp) throws IOException {
        TrainConfig fused = tiny(tmp.resolve("fused"), 8);
        TrainConfig materialised = tiny(tmp.resolve("materialised"), 8);
        materialised.lmHead = LmHead.MATERIALISED;
        TrainConfig composite = tiny(tmp.resolve("libtorch"), 8);
        composite.lossImpl = LossImpl.LIBTORCH;
        composite.lmHead = LmHead.MATERIALISED;
        assertEquals(LmHead.FUSED, fused.lmHead);
        new Trainer(fused, QUIET).run();
        new Trainer(materialised, QUIET).run();
        new Trainer(composite, QUIET).run();
        List<JsonObject> a = metrics(tmp.resolve("fused"));
        assertEquals(8, a.size());
        for (String other : List.of("materialised", "libtorch")) {
            List<JsonObject> b = metrics(tmp.resolve(other));
            assertEquals(8, b.size());
            for (int i = 0; i < 8; i++) {
                for (String k : List.of("loss", "rewards/margins", "rewards/accuracies", "logps/chosen", "grad_norm",
                        "entropy", "logits/chosen", "logits/rejected")) {
                    double x = a.get(i).get(k).getAsDouble(), y = b.get(i).get(k).getAsDouble();
                    assertEquals(y, x, 2e-4 * Math.max(1, Math.abs(y)), other + " step " + (i + 1) + " " + k);
                }
            }
        }
        // and training did something: the margin grew from 0
        assertEquals(0.0, a.get(0).get("rewards/margins").getAsDouble(), 1e-4);
        assertTrue(a.get(7).get("rewards/margins").getAsDouble() > 0.01, "margin after 8 steps " + a.get(7));
    }

    /** A run killed with SIGKILL after a checkpoint and resumed logs what an uninterrupted run logs. */
    @Test
    void killedAndResumedRunMatchesUninterruptedRun(@TempDir Path tmp) throws Exception {
        int steps = 40;
        List<String> args = List.of("train", "--max-steps", String.valueOf(steps), "--batch-size", "4",
                "--threads", "2", "--checkpoint-every", "5", "--keep-checkpoints", "3", "--eval-every", "0");
        Path whole = tmp.resolve("whole"), killed = tmp.resolve("killed");
        assertEquals(0, cli(args, whole).waitFor());
        Process p = cli(args, killed);
        Path firstCheckpoint = killed.resolve("checkpoints").resolve("step-0000005");
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(120);
        while (!Files.exists(firstCheckpoint) && p.isAlive() && System.nanoTime() < deadline) {
            Thread.sleep(5);
        }
        assertTrue(p.isAlive(), "the run ended before it could be killed; make it longer");
        p.destroyForcibly();  // SIGKILL
        p.waitFor();
        List<Path> left = Checkpoints.list(killed);
        assertFalse(left.isEmpty());
        assertTrue(Checkpoints.readState(left.get(left.size() - 1)).step < steps);
        Process resumed = cli(List.of("train", "--resume", killed.toString()), null);
        assertEquals(0, resumed.waitFor());
        List<JsonObject> a = metrics(whole), b = metrics(killed);
        assertEquals(steps, a.size());
        assertEquals(steps, b.size());
        for (int i = 0; i < steps; i++) {
            for (String k : a.get(i).keySet()) {
                if (!k.equals("tokens_per_second")) {
                    assertEquals(a.get(i).get(k).getAsDouble(), b.get(i).get(k).getAsDouble(), 0.0,
                            "step " + (i + 1) + " " + k);
                }
            }
        }
    }

    /** The CLI in a child JVM (so that it can be killed), quiet, in the run folder {@code out}. */
    static Process cli(List<String> args, Path out) throws IOException {
        List<String> cmd = new ArrayList<>(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "-cp", System.getProperty("java.class.path"), Main.class.getName()));
        cmd.addAll(args);
        if (out != null) {
            cmd.add("--out");
            cmd.add(out.toString());
        }
        ProcessBuilder pb = new ProcessBuilder(cmd).redirectErrorStream(true)
                .redirectOutput(ProcessBuilder.Redirect.DISCARD);
        pb.environment().put("OMP_NUM_THREADS", "2");
        pb.environment().put("OMP_WAIT_POLICY", "passive");
        return pb.start();
    }

    @Test
    void embeddedDefaultWritesACompleteRunFolder(@TempDir Path tmp) throws IOException {
        Path run = tmp.resolve("run");
        assertEquals(0, Main.run("train", "--max-steps", "4", "--batch-size", "4", "--eval-every", "2",
                "--threads", "2", "--out", run.toString()));
        for (String f : List.of("config.json", "reference_logps.json", "metrics.jsonl", "metrics.png",
                "final-model/config.json", "final-model/model.safetensors", "final-model/tokenizer.json")) {
            assertTrue(Files.exists(run.resolve(f)), f);
        }
        assertEquals(1, Checkpoints.list(run).size());
        String log = Files.readString(run.resolve("metrics.jsonl"));
        for (String k : List.of("\"loss\"", "\"rewards/chosen\"", "\"rewards/rejected\"", "\"rewards/margins\"",
                "\"rewards/accuracies\"", "\"logps/chosen\"", "\"logps/rejected\"", "\"logits/chosen\"",
                "\"logits/rejected\"", "\"entropy\"", "\"grad_norm\"", "\"learning_rate\"", "\"eval/loss\"")) {
            assertTrue(log.contains(k), k + " missing from metrics.jsonl");
        }
    }

    @Test
    void precomputedReferenceLogpsAreUsedAndMatch(@TempDir Path tmp) throws IOException {
        Path run = tmp.resolve("a");
        new Trainer(tiny(run, 1), QUIET).run();
        Path model = run.resolve("embedded").resolve("tiny-llama");
        Path data = tmp.resolve("pairs.jsonl"), withRefs = tmp.resolve("pairs-ref.jsonl");
        PreferenceDataset.write(data, SyntheticPreferences.generate(EmbeddedDefault.TRAIN_PAIRS, 42));
        assertEquals(0, Main.run("logps", "--model", model.toString(), "--data", data.toString(),
                "--out", withRefs.toString(), "--threads", "2"));
        String first = Files.readAllLines(withRefs).get(0);
        assertTrue(first.contains("ref_chosen_logps") && first.contains("ref_rejected_logps"), first);
        // the default fused LM head and the materialised logits give the same log-probs
        Path viaLogits = tmp.resolve("pairs-ref-materialised.jsonl");
        assertEquals(0, Main.run("logps", "--model", model.toString(), "--data", data.toString(),
                "--out", viaLogits.toString(), "--threads", "2", "--lm-head", "materialised"));
        List<String> fusedLines = Files.readAllLines(withRefs), matLines = Files.readAllLines(viaLogits);
        assertEquals(fusedLines.size(), matLines.size());
        for (int i = 0; i < fusedLines.size(); i++) {
            JsonObject f = com.google.gson.JsonParser.parseString(fusedLines.get(i)).getAsJsonObject();
            JsonObject m = com.google.gson.JsonParser.parseString(matLines.get(i)).getAsJsonObject();
            for (String k : List.of("ref_chosen_logps", "ref_rejected_logps")) {
                double y = m.get(k).getAsDouble();
                assertEquals(y, f.get(k).getAsDouble(), 1e-5 * Math.max(1, Math.abs(y)), "pair " + i + " " + k);
            }
        }

        TrainConfig c = tiny(tmp.resolve("b"), 1);
        c.model = model.toString();
        c.data = withRefs.toString();
        ByteArrayOutputStream console = new ByteArrayOutputStream();
        new Trainer(c, new PrintStream(console)).run();
        assertFalse(console.toString().contains("reference log-probs from"), "a reference model was run: " + console);
        // step 1 starts from the same policy and references: same loss as the embedded run
        assertEquals(metrics(run).get(0).get("loss").getAsDouble(),
                metrics(tmp.resolve("b")).get(0).get("loss").getAsDouble(), 1e-6);
    }

    @Test
    void userErrorsExitNonZeroWithOneLine(@TempDir Path tmp) throws IOException {
        Path bad = tmp.resolve("bad.jsonl");
        Files.writeString(bad, "{\"prompt\": \"a\", \"chosen\": \"b\", \"rejected\": \"c\"}\n{\"prompt\": \"a\", \"chosen\": 3}\n");
        Map<String, List<String>> cases = Map.of(
                "bad.jsonl:2", List.of("train", "--model", tmp.toString(), "--data", bad.toString(),
                        "--out", tmp.resolve("r0").toString()),
                "does not exist", List.of("train", "--model", tmp.resolve("nope").toString(), "--data", bad.toString(),
                        "--out", tmp.resolve("r3").toString()),
                "beta", List.of("train", "--beta", "-1", "--out", tmp.resolve("r1").toString()),
                "unknown loss", List.of("train", "--loss", "kto", "--out", tmp.resolve("r2").toString()),
                "device", List.of("train", "--device", "tpu", "--out", tmp.resolve("r4").toString()),
                "no usable CUDA", List.of("train", "--device", "cuda", "--out", tmp.resolve("r5").toString()),
                "unknown LM head", List.of("train", "--lm-head", "tied", "--out", tmp.resolve("r6").toString()),
                "LM head chunk MiB", List.of("train", "--lm-head-chunk-mb", "0", "--out", tmp.resolve("r7").toString()));
        for (Map.Entry<String, List<String>> e : cases.entrySet()) {
            ByteArrayOutputStream err = new ByteArrayOutputStream();
            PrintStream old = System.err;
            System.setErr(new PrintStream(err));
            int code;
            try {
                code = runWithErr(e.getValue(), err);
            } finally {
                System.setErr(old);
            }
            assertEquals(2, code, e.getKey() + ": " + err);
            String text = err.toString().trim();
            assertTrue(text.startsWith("spo4j: error:") && !text.contains("\tat "), text);
            assertTrue(text.contains(e.getKey()), e.getKey() + " not in: " + text);
            assertFalse(Files.exists(tmp.resolve("r0")), "a run folder was created for bad input");
        }
    }

    static int runWithErr(List<String> args, ByteArrayOutputStream err) {
        picocli.CommandLine cl = new picocli.CommandLine(new Main());
        cl.setErr(new java.io.PrintWriter(err, true));
        return Main.runWith(cl, args.toArray(new String[0]));
    }
}
