package dev.spo4j.train.dist;

import static dev.spo4j.testing.RunFolders.metrics;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.JsonObject;
import dev.spo4j.cli.Main;
import dev.spo4j.data.PreferenceDataset;
import dev.spo4j.synthetic.EmbeddedDefault;
import dev.spo4j.synthetic.SyntheticPreferences;
import dev.spo4j.train.Checkpoints;
import java.io.IOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Data parallel on loopback with two worker JVMs (the machine has 2 cores: one LibTorch
 * thread per process): one process with a global batch of 8 and two with 4 each follow the
 * same trajectory; the ranks hold bit-identical parameters after every step; a killed rank or
 * a peer that never arrives ends the job within the timeout, naming the rank; a killed job
 * resumes with the same world size.
 */
class DataParallelTest {
    /**
     * Metrics compared between 1 and 2 processes. fp32 sums in another order (two half-batch
     * forwards, a bucketed all-reduce) differ by ~1e-6 relative here; 1e-4 leaves room for
     * the 4 AdamW steps to amplify that, and is far below what a wrong shard or scale gives.
     */
    static final List<String> COMPARED = List.of("loss", "rewards/chosen", "rewards/rejected", "rewards/margins",
            "logps/chosen", "logps/rejected", "logits/chosen", "logits/rejected", "entropy", "grad_norm",
            "learning_rate", "epoch");
    static final double RTOL = 1e-4;

    @Test
    void twoProcessesFollowTheSingleProcessTrajectoryWithIdenticalParameters(@TempDir Path tmp) throws Exception {
        int steps = 4;
        List<String> common = List.of("train", "--max-steps", String.valueOf(steps), "--grad-accum", "2",
                "--threads", "1", "--eval-every", "0", "--dist-timeout", "60");
        Path one = tmp.resolve("one"), two = tmp.resolve("two"), hashes = tmp.resolve("hashes");
        assertEquals(0, run(with(common, "--batch-size", "8", "--out", one.toString()), null, tmp.resolve("one.log")));
        assertEquals(0, run(with(common, "--batch-size", "4", "--nproc-per-node", "2", "--out", two.toString()),
                hashes, tmp.resolve("two.log")), Files.readString(tmp.resolve("two.log")));
        compare(metrics(one), metrics(two), steps);
        assertSameParameters(hashes, steps);
        for (JsonObject row : metrics(two)) {
            assertTrue(row.get("allreduce_ms").getAsDouble() > 0, "allreduce_ms in " + row);
        }
        // rank 0 alone wrote the run folder: a complete final model and one checkpoint
        assertTrue(Files.exists(two.resolve("final-model/model.safetensors")));
        assertEquals(1, Checkpoints.list(two).size());
    }

    /**
     * 10 pairs, 4 per rank: each epoch's second global batch holds 2 pairs, all on rank 0, and
     * rank 1 gets none; the 2 ranks still reproduce one process with batches of 8 and 2.
     */
    @Test
    void shortAndEmptyShardsAtTheEpochEndKeepTheGlobalMean(@TempDir Path tmp) throws Exception {
        Path model = EmbeddedDefault.prepare(tmp.resolve("embedded"), 42).modelDir();
        Path data = tmp.resolve("pairs.jsonl");
        PreferenceDataset.write(data, SyntheticPreferences.generate(10, 7));
        int steps = 4;  // two epochs
        List<String> common = List.of("train", "--model", model.toString(), "--data", data.toString(), "--lr", "2e-3",
                "--max-steps", String.valueOf(steps), "--threads", "1", "--dist-timeout", "60", "--warmup-steps", "1");
        Path one = tmp.resolve("one"), two = tmp.resolve("two"), hashes = tmp.resolve("hashes");
        assertEquals(0, run(with(common, "--batch-size", "8", "--out", one.toString()), null, tmp.resolve("one.log")));
        assertEquals(0, run(with(common, "--batch-size", "4", "--nproc-per-node", "2", "--out", two.toString()),
                hashes, tmp.resolve("two.log")), Files.readString(tmp.resolve("two.log")));
        compare(metrics(one), metrics(two), steps);
        assertSameParameters(hashes, steps);
    }

    @Test
    void aPeerThatNeverArrivesEndsTheJobWithinTheTimeout(@TempDir Path tmp) throws Exception {
        Path out = tmp.resolve("run"), log = tmp.resolve("rank0.log");
        ProcessBuilder pb = child(List.of("train", "--max-steps", "2", "--batch-size", "4", "--threads", "1",
                "--dist-timeout", "3", "--out", out.toString()), null, log);
        pb.environment().putAll(Map.of("RANK", "0", "WORLD_SIZE", "2", "MASTER_ADDR", "127.0.0.1",
                "MASTER_PORT", String.valueOf(freePort())));
        long t0 = System.nanoTime();
        Process p = pb.start();
        assertTrue(p.waitFor(60, TimeUnit.SECONDS), "rank 0 still waits for its peer after 60 s");
        double seconds = (System.nanoTime() - t0) / 1e9;
        String text = Files.readString(log);
        assertEquals(1, p.exitValue(), text);
        assertTrue(text.contains("rank 0: rendezvous of 2 ranks did not complete within 3.0 s: rank 1 never arrived"), text);
        assertTrue(seconds < 30, "took " + seconds + " s");
        assertFalse(Files.exists(out.resolve("checkpoints")));
    }

    @Test
    void aKilledRankStopsTheJobAndTheRunResumesWithTheSameWorldSize(@TempDir Path tmp) throws Exception {
        Path out = tmp.resolve("run"), log = tmp.resolve("launcher.log");
        Process launcher = child(List.of("train", "--nproc-per-node", "2", "--max-steps", "400", "--batch-size", "4",
                "--threads", "1", "--checkpoint-every", "3", "--eval-every", "0", "--dist-timeout", "30",
                "--out", out.toString()), null, log).start();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(120);
        while (Checkpoints.list(out).isEmpty() && launcher.isAlive() && System.nanoTime() < deadline) {
            Thread.sleep(20);
        }
        assertTrue(launcher.isAlive(), "the job ended before a rank could be killed: " + Files.readString(log));
        List<ProcessHandle> workers = launcher.toHandle().children().toList();
        assertEquals(2, workers.size());
        ProcessHandle victim = workers.get(1);
        victim.destroyForcibly();  // SIGKILL, mid-run
        long t0 = System.nanoTime();
        assertTrue(launcher.waitFor(60, TimeUnit.SECONDS), "the job still runs 60 s after a rank was killed");
        double seconds = (System.nanoTime() - t0) / 1e9;
        String text = Files.readString(log);
        assertEquals(1, launcher.exitValue(), text);
        Matcher m = Pattern.compile("rank (\\d) (exited )?with code 137 \\(killed\\)").matcher(text);
        assertTrue(m.find(), text);
        assertTrue(seconds < 30, "took " + seconds + " s");
        for (ProcessHandle w : workers) {
            assertFalse(w.isAlive(), "worker " + w.pid() + " outlived the job");
        }
        // every checkpoint folder is complete (a partial one would be a hidden .tmp folder)
        try (Stream<Path> s = Files.list(out.resolve("checkpoints"))) {
            for (Path c : s.filter(c -> c.getFileName().toString().startsWith("step-")).toList()) {
                assertTrue(Files.exists(c.resolve("trainer_state.json")) && Files.exists(c.resolve("optimizer.pt")), c.toString());
            }
        }
        int at = Checkpoints.readState(Checkpoints.resolve(out)).step;

        // one process cannot continue a two-process run
        assertEquals(2, run(List.of("train", "--resume", out.toString()), null, tmp.resolve("single.log")));
        assertTrue(Files.readString(tmp.resolve("single.log")).contains("resume with the same world size"));

        // two can, and the log then runs on from the checkpoint
        int until = at + 3;
        assertEquals(0, run(List.of("train", "--nproc-per-node", "2", "--resume", out.toString(), "--max-steps",
                String.valueOf(until)), null, tmp.resolve("resume.log")), Files.readString(tmp.resolve("resume.log")));
        List<JsonObject> rows = metrics(out);
        assertEquals(until, rows.size());
        for (int i = 0; i < until; i++) {
            assertEquals(i + 1, rows.get(i).get("step").getAsInt());
        }
    }

    /**
     * Two processes, LoRA with adapter dropout: a run stopped at a checkpoint and resumed logs,
     * bit for bit, what an uninterrupted one logs, and ends with the same parameters. Each
     * rank's micro-batches have their own padded lengths, so the ranks' generators draw
     * different amounts and their states part: every rank must get its own state back. The
     * schedule is constant after one warm-up step, so the shorter first run has the same rates.
     */
    @Test
    void aResumedTwoProcessRunWithDropoutFollowsTheUninterruptedOne(@TempDir Path tmp) throws Exception {
        List<String> common = List.of("train", "--nproc-per-node", "2", "--batch-size", "2", "--threads", "1",
                "--eval-every", "0", "--dist-timeout", "60", "--checkpoint-every", "2", "--schedule", "constant",
                "--warmup-steps", "1", "--lr", "1e-2", "--lora-r", "4", "--lora-alpha", "8", "--lora-dropout", "0.2");
        int first = 2, steps = 4;
        Path whole = tmp.resolve("whole"), stopped = tmp.resolve("stopped");
        Path hashesWhole = tmp.resolve("hashes-whole"), hashesStopped = tmp.resolve("hashes-stopped");
        assertEquals(0, run(with(common, "--max-steps", String.valueOf(steps), "--out", whole.toString()), hashesWhole,
                tmp.resolve("whole.log")), Files.readString(tmp.resolve("whole.log")));
        assertEquals(0, run(with(common, "--max-steps", String.valueOf(first), "--out", stopped.toString()), null,
                tmp.resolve("first.log")), Files.readString(tmp.resolve("first.log")));
        Checkpoints.State at = Checkpoints.readState(Checkpoints.resolve(stopped));
        assertEquals(first, at.step);
        assertEquals(2, at.rankRngStates.length);
        assertFalse(at.rankRngStates[0].equals(at.rankRngStates[1]), "the ranks' generator states agree: the test "
                + "needs micro-batches of different lengths on the two ranks");
        assertEquals(0, run(List.of("train", "--nproc-per-node", "2", "--resume", stopped.toString(), "--max-steps",
                String.valueOf(steps)), hashesStopped, tmp.resolve("resume.log")), Files.readString(tmp.resolve("resume.log")));
        List<JsonObject> a = metrics(whole), b = metrics(stopped);
        assertEquals(steps, a.size());
        assertEquals(steps, b.size());
        for (int i = 0; i < steps; i++) {
            for (String k : a.get(i).keySet()) {
                if (!k.equals("tokens_per_second") && !k.equals("allreduce_ms")) {
                    assertEquals(a.get(i).get(k).getAsDouble(), b.get(i).get(k).getAsDouble(), 0.0,
                            "step " + (i + 1) + " " + k);
                }
            }
        }
        List<String> wholeParams = Files.readAllLines(hashesWhole.resolve("params-rank1.txt"));
        List<String> resumedParams = Files.readAllLines(hashesStopped.resolve("params-rank1.txt"));
        assertEquals(wholeParams.get(steps - 1), resumedParams.get(resumedParams.size() - 1),
                "rank 1's parameters after step " + steps);
    }

    static void compare(List<JsonObject> a, List<JsonObject> b, int steps) {
        assertEquals(steps, a.size());
        assertEquals(steps, b.size());
        for (int i = 0; i < steps; i++) {
            for (String k : COMPARED) {
                double x = a.get(i).get(k).getAsDouble(), y = b.get(i).get(k).getAsDouble();
                assertEquals(x, y, RTOL * Math.max(1, Math.abs(x)), "step " + (i + 1) + " " + k);
            }
            if (i > 0) {  // at step 1 policy = reference: margins are +-1e-8 noise and accuracy counts their signs
                assertEquals(a.get(i).get("rewards/accuracies").getAsDouble(),
                        b.get(i).get("rewards/accuracies").getAsDouble(), 1e-9, "step " + (i + 1) + " accuracy");
            }
        }
    }

    static void assertSameParameters(Path hashes, int steps) throws IOException {
        List<String> r0 = Files.readAllLines(hashes.resolve("params-rank0.txt"));
        List<String> r1 = Files.readAllLines(hashes.resolve("params-rank1.txt"));
        assertEquals(steps, r0.size());
        assertEquals(r0, r1, "parameters differ between ranks");
    }

    static List<String> with(List<String> base, String... more) {
        List<String> out = new ArrayList<>(base);
        out.addAll(List.of(more));
        return out;
    }

    /** The CLI in a child JVM, its output in {@code log}; returns the exit code (5 minutes at most). */
    static int run(List<String> args, Path hashes, Path log) throws Exception {
        Process p = child(args, hashes, log).start();
        if (!p.waitFor(5, TimeUnit.MINUTES)) {
            p.destroyForcibly();
            throw new AssertionError("timed out: " + args);
        }
        return p.exitValue();
    }

    static ProcessBuilder child(List<String> args, Path hashes, Path log) {
        List<String> cmd = new ArrayList<>(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "-cp", System.getProperty("java.class.path"), Main.class.getName()));
        cmd.addAll(args);
        ProcessBuilder pb = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(log.toFile());
        pb.environment().put("OMP_NUM_THREADS", "1");  // two processes on two cores
        pb.environment().put("OMP_WAIT_POLICY", "passive");
        for (String k : List.of("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")) {
            pb.environment().remove(k);
        }
        if (hashes != null) {
            pb.environment().put(ParameterHashes.ENV, hashes.toString());
        }
        return pb;
    }

    static int freePort() throws IOException {
        try (ServerSocket s = new ServerSocket(0, 1, InetAddress.getByName("127.0.0.1"))) {
            return s.getLocalPort();
        }
    }
}
