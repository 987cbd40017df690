package dev.spo4j.train;

import static dev.spo4j.testing.RunFolders.metrics;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.JsonObject;
import dev.spo4j.model.LlamaModel;
import dev.spo4j.model.LoraAdapters;
import dev.spo4j.model.LoraConfig;
import dev.spo4j.model.ModelFolder;
import dev.spo4j.data.PreferenceDataset;
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
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * LoRA training end to end on the embedded default: the base (adapters off) is the reference,
 * only adapters change, the PEFT folder is written, a SIGKILLed run resumes exactly, and bad
 * LoRA settings fail before a run folder exists.
 * Run: {@code mvn -B -q test -Dspo4j.cuda=OFF -Dtest=LoraTrainingTest}
 */
class LoraTrainingTest {
    static final PrintStream QUIET = TrainerTest.QUIET;

    /** The embedded tiny model with 32 training pairs (the embedded default's 2048 make each run's reference slow). */
    static TrainConfig small(Path out, int steps) throws IOException {
        Path root = out.getParent().resolve("data");
        Path model = EmbeddedDefault.prepare(root, 42).modelDir();
        Path data = root.resolve("pairs.jsonl");
        if (!Files.exists(data)) {
            PreferenceDataset.write(data, SyntheticPreferences.generate(32, 42));
        }
        TrainConfig c = TrainerTest.tiny(out, steps);
        c.model = model.toString();
        c.data = data.toString();
        return c;
    }

    static List<String> smallArgs(Path out) throws IOException {
        TrainConfig c = small(out, 1);
        return List.of("--model", c.model, "--data", c.data);
    }

    static TrainConfig lora(Path out, int steps) throws IOException {
        TrainConfig c = small(out, steps);
        c.loraR = 4;
        c.loraAlpha = 8;
        c.optim.lr = 1e-2;
        return c;
    }

    @Test
    void trainsOnlyTheAdaptersAgainstTheBaseAsReference(@TempDir Path tmp) throws IOException {
        Path full = tmp.resolve("full"), run = tmp.resolve("lora");
        new Trainer(small(full, 1), QUIET).run();
        List<Map<String, Tensor>> seen = new ArrayList<>();
        new Trainer(lora(run, 8), QUIET).withListener((step, model, row) -> {
            if (step == 8) {
                seen.add(model.stateDict());
                seen.add(model.adapters().stateDict());
            }
        }).run();
        // the reference of the LoRA run (base, adapters off) is the full run's frozen initial policy, bit for bit
        assertEquals(Files.readString(full.resolve("reference_logps.json")),
                Files.readString(run.resolve("reference_logps.json")));
        // and step 1 starts where full fine-tuning starts: B = 0 leaves the policy equal to the reference
        assertEquals(0.0, metrics(run).get(0).get("rewards/margins").getAsDouble(), 1e-4);
        List<JsonObject> m = metrics(run);
        // the adapters moved the policy away from the reference (8 steps of 4-pair batches are too
        // few for the sign of one batch's margin to be a property: it follows the adapters' draws)
        assertTrue(Math.abs(m.get(7).get("rewards/chosen").getAsDouble()) > 1e-3
                && Math.abs(m.get(7).get("rewards/margins").getAsDouble()) > 1e-4, "LoRA training moved the policy: " + m.get(7));

        LlamaModel base = ModelFolder.load(Path.of(lora(run, 1).model));
        for (Map.Entry<String, Tensor> kv : base.stateDict().entrySet()) {
            assertTrue(torch.equal(kv.getValue(), seen.get(0).get(kv.getKey())), kv.getKey() + " stayed frozen");
        }
        Path adapter = run.resolve("final-adapter");
        for (String f : List.of("adapter_config.json", "adapter_model.safetensors", "tokenizer.json")) {
            assertTrue(Files.exists(adapter.resolve(f)), f);
        }
        assertFalse(Files.exists(run.resolve("final-model")), "no full model copy for a LoRA run");
        LoraAdapters loaded = LoraAdapters.load(base, adapter);
        assertEquals(new LoraConfig(4, 8, 0, LoraConfig.ALL_MODULES), loaded.config());
        for (Map.Entry<String, Tensor> kv : loaded.stateDict().entrySet()) {
            assertTrue(torch.equal(kv.getValue(), seen.get(1).get(kv.getKey())), kv.getKey() + " saved as trained");
        }
        assertTrue(Files.exists(Checkpoints.list(run).get(0).resolve(Checkpoints.ADAPTER).resolve("adapter_model.safetensors")));
        assertFalse(Files.exists(Checkpoints.list(run).get(0).resolve(Checkpoints.MODEL)), "no base copy in checkpoints");
    }

    /** logps with --adapter scores base + adapter; merge writes a model that scores the same, in the base's dtype. */
    @Test
    void mergedModelScoresLikeBasePlusAdapter(@TempDir Path tmp) throws IOException {
        TrainConfig c = lora(tmp.resolve("run"), 3);
        new Trainer(c, QUIET).run();
        Path adapter = tmp.resolve("run").resolve("final-adapter"), merged = tmp.resolve("merged");
        Path base = tmp.resolve("base.jsonl"), withAdapter = tmp.resolve("adapter.jsonl"), ofMerged = tmp.resolve("m.jsonl");
        assertEquals(0, dev.spo4j.cli.Main.run("logps", "--model", c.model, "--data", c.data, "--out", base.toString(),
                "--threads", "2", "--device", "cpu"));
        // a device this build cannot use, or a malformed one: refused (exit 2) before the output exists
        Path refused = tmp.resolve("refused.jsonl");
        for (String d : org.bytedeco.pytorch.global.torch.cuda_is_available() ? new String[] {"gpu"}
                : new String[] {"gpu", "cuda", "cuda:1"}) {
            assertEquals(2, dev.spo4j.cli.Main.run("logps", "--model", c.model, "--data", c.data, "--out",
                    refused.toString(), "--device", d), d);
            assertTrue(!java.nio.file.Files.exists(refused), d);
        }
        assertEquals(0, dev.spo4j.cli.Main.run("logps", "--model", c.model, "--adapter", adapter.toString(),
                "--data", c.data, "--out", withAdapter.toString(), "--threads", "2"));
        assertEquals(0, dev.spo4j.cli.Main.run("merge", "--model", c.model, "--adapter", adapter.toString(),
                "--out", merged.toString()));
        assertEquals(0, dev.spo4j.cli.Main.run("logps", "--model", merged.toString(), "--data", c.data,
                "--out", ofMerged.toString(), "--threads", "2"));
        List<dev.spo4j.data.PreferencePair> b = PreferenceDataset.read(base), a = PreferenceDataset.read(withAdapter),
                m = PreferenceDataset.read(ofMerged);
        double moved = 0;
        for (int i = 0; i < a.size(); i++) {
            moved = Math.max(moved, Math.abs(a.get(i).refChosenLogps() - b.get(i).refChosenLogps()));
            // one fp32 matmul against three (x W^T + s (x A^T) B^T): rounding of the sum only
            assertEquals(a.get(i).refChosenLogps(), m.get(i).refChosenLogps(), 1e-4 * Math.abs(a.get(i).refChosenLogps()));
            assertEquals(a.get(i).refRejectedLogps(), m.get(i).refRejectedLogps(),
                    1e-4 * Math.abs(a.get(i).refRejectedLogps()));
        }
        assertTrue(moved > 1e-3, "the trained adapter changes the log-probs: " + moved);

        // a bf16 base gives a bf16 merged model
        LlamaModel fp = ModelFolder.load(Path.of(c.model));
        fp.to(org.bytedeco.pytorch.global.torch.ScalarType.BFloat16, false);
        Path bfBase = tmp.resolve("bf16-base");
        ModelFolder.save(fp, bfBase, Path.of(c.model));
        assertEquals(0, dev.spo4j.cli.Main.run("merge", "--model", bfBase.toString(), "--adapter", adapter.toString(),
                "--out", tmp.resolve("bf16-merged").toString()));
        assertTrue(Files.readString(tmp.resolve("bf16-merged").resolve("config.json")).contains("bfloat16"));
        for (Tensor t : dev.spo4j.model.SafeTensors.read(tmp.resolve("bf16-merged").resolve("model.safetensors")).values()) {
            assertEquals(org.bytedeco.pytorch.global.torch.ScalarType.BFloat16, t.scalar_type().intern());
        }
    }

    @Test
    void continuesFromAnAdapter(@TempDir Path tmp) throws IOException {
        Path first = tmp.resolve("first"), second = tmp.resolve("second");
        new Trainer(lora(first, 3), QUIET).run();
        TrainConfig c = small(second, 1);
        c.adapter = first.resolve("final-adapter").toString();
        c.optim.lr = 1e-2;
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        new Trainer(c, new PrintStream(out)).run();
        assertTrue(out.toString().contains("LoRA r 4, alpha 8.0"), out.toString());
        // the continued policy starts from the trained adapter: its first margin is not the base's 0
        double margin = metrics(second).get(0).get("rewards/margins").getAsDouble();
        assertTrue(Math.abs(margin) > 1e-6, "continued from the adapter: margin " + margin);
    }

    /**
     * A LoRA run with adapter dropout, a bf16 base and activation checkpointing, killed with
     * SIGKILL and resumed, logs what an uninterrupted one logs.
     */
    @Test
    void killedAndResumedLoraRunMatchesUninterruptedRun(@TempDir Path tmp) throws Exception {
        int steps = 24;
        List<String> args = new ArrayList<>(List.of("train", "--max-steps", String.valueOf(steps), "--batch-size", "4",
                "--threads", "2", "--checkpoint-every", "4", "--keep-checkpoints", "2", "--eval-every", "0",
                "--lora-r", "4", "--lora-alpha", "8", "--lora-dropout", "0.1", "--lora-target-modules", "q,v,down",
                "--lr", "1e-2", "--dtype", "bf16", "--gradient-checkpointing"));
        args.addAll(smallArgs(tmp.resolve("x")));
        Path whole = tmp.resolve("whole"), killed = tmp.resolve("killed");
        assertEquals(0, TrainerTest.cli(args, whole).waitFor());
        Process p = TrainerTest.cli(args, killed);
        Path firstCheckpoint = killed.resolve("checkpoints").resolve("step-0000004");
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
        assertEquals(0, TrainerTest.cli(List.of("train", "--resume", killed.toString()), null).waitFor());
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
        assertTrue(Files.readString(whole.resolve("final-adapter/adapter_config.json")).contains("\"lora_dropout\": 0.1"));
    }

    @Test
    void badLoraSettingsFailBeforeARunFolderExists(@TempDir Path tmp) throws IOException {
        // an adapter made for another shape of base
        LlamaModel other = new LlamaModel(dev.spo4j.model.ModelConfig.of("qwen2", 40, 16, 24, 2, 4, 2, 64));
        Path foreign = tmp.resolve("foreign");
        LoraAdapters.create(other, new LoraConfig(2, 4, 0, LoraConfig.ALL_MODULES)).save(foreign, "other", null);
        Path missing = tmp.resolve("no-such-adapter");
        TrainConfig s = small(tmp.resolve("x"), 1);
        Path tinyDir = Path.of(s.model), data = Path.of(s.data);
        Map<String, List<String>> cases = Map.of(
                "r = 0", List.of("train", "--lora-r", "0", "--model", s.model, "--data", s.data, "--out", tmp.resolve("r0").toString()),
                "'qq' matches no linear layer", List.of("train", "--lora-r", "4", "--lora-target-modules", "q,qq",
                        "--model", s.model, "--data", s.data,
                        "--out", tmp.resolve("r1").toString()),
                "does not fit", List.of("train", "--model", tinyDir.toString(),
                        "--data", data.toString(), "--adapter", foreign.toString(),
                        "--out", tmp.resolve("r2").toString()),
                "adapter folder", List.of("train", "--adapter", missing.toString(), "--out", tmp.resolve("r3").toString()),
                "give one of them", List.of("train", "--adapter", foreign.toString(), "--lora-r", "2",
                        "--out", tmp.resolve("r4").toString()));
        for (Map.Entry<String, List<String>> e : cases.entrySet()) {
            ByteArrayOutputStream err = new ByteArrayOutputStream();
            int code = TrainerTest.runWithErr(e.getValue(), err);
            String text = err.toString().trim();
            assertEquals(2, code, e.getKey() + ": " + text);
            assertTrue(text.contains(e.getKey()), e.getKey() + " not in: " + text);
        }
        for (int r = 0; r < 5; r++) {
            assertFalse(Files.exists(tmp.resolve("r" + r)), "a run folder was created for bad input r" + r);
        }
    }
}
