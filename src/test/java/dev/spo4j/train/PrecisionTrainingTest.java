package dev.spo4j.train;

import static dev.spo4j.testing.RunFolders.metrics;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.JsonObject;
import dev.spo4j.loss.LmHead;
import dev.spo4j.model.SafeTensors;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.junit.jupiter.api.io.TempDir;

/**
 * Mixed precision and activation checkpointing in training: bf16 follows the fp32 trajectory
 * within a derived tolerance while masters and checkpoints stay fp32; checkpointing repeats the
 * plain run; fp16 and unknown dtypes are refused before a run folder exists.
 * Run: {@code mvn -B -q test -Dspo4j.cuda=OFF -Dtest=PrecisionTrainingTest}
 */
class PrecisionTrainingTest {
    @Test
    void bf16FollowsTheFp32TrajectoryWithFp32Masters(@TempDir Path tmp) throws IOException {
        int steps = 6;
        TrainConfig fp32 = LoraTrainingTest.small(tmp.resolve("fp32"), steps);
        TrainConfig bf16 = LoraTrainingTest.small(tmp.resolve("bf16"), steps);
        bf16.dtype = "bf16";
        new Trainer(fp32, LoraTrainingTest.QUIET).run();
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        new Trainer(bf16, new PrintStream(out)).run();
        assertTrue(out.toString().contains("bfloat16 weights and activations, fp32 master weights and AdamW state"),
                out.toString());
        List<JsonObject> a = metrics(tmp.resolve("fp32")), b = metrics(tmp.resolve("bf16"));
        assertEquals(steps, b.size());
        double worst = 0;
        for (int i = 0; i < steps; i++) {
            double x = a.get(i).get("loss").getAsDouble(), y = b.get(i).get("loss").getAsDouble();
            double cx = a.get(i).get("logps/chosen").getAsDouble(), cy = b.get(i).get("logps/chosen").getAsDouble();
            // Tolerance, derived: bf16 keeps 8 significant bits, unit roundoff u = 2^-8 ~ 3.9e-3 per
            // rounding. A sequence log-prob is a sum over n ~ 10-20 completion tokens of
            // log-softmax values of size |log p| ~ log V ~ 5 (V = vocabulary); each carries the
            // rounding of the logits, ~ a few u relative, so the sum is off by up to
            // n · 5 · 4u ~ 1.6 in the worst case, ~ sqrt(n) of that when signs mix: we allow
            // 4u · |logps| per sequence. The loss sees margins through beta = 0.1, the policy and
            // reference both in bf16 (their roundings of the same weights cancel at step 1), so
            // the loss moves by at most beta · (2 · 4u · |logps|): 0.04 for |logps| ~ 12.
            double u = Math.pow(2, -8);
            assertEquals(cx, cy, 4 * u * Math.abs(cx), "step " + (i + 1) + " logps/chosen");
            assertEquals(x, y, 0.1 * 2 * 4 * u * Math.abs(cx), "step " + (i + 1) + " loss");
            worst = Math.max(worst, Math.abs(x - y));
        }
        System.out.println("bf16 vs fp32 worst loss difference over " + steps + " steps: " + worst);
        // checkpoints and the final model hold the fp32 masters
        Path ckpt = Checkpoints.list(tmp.resolve("bf16")).get(0);
        for (Path dir : List.of(ckpt.resolve(Checkpoints.MODEL), tmp.resolve("bf16").resolve("final-model"))) {
            Map<String, Tensor> w = SafeTensors.read(dir.resolve("model.safetensors"));
            for (Map.Entry<String, Tensor> kv : w.entrySet()) {
                assertEquals(ScalarType.Float, kv.getValue().scalar_type().intern(), dir + " " + kv.getKey());
            }
        }
    }

    /** Checkpoints of a bf16 full fine-tune hold the fp32 masters and moments: a resumed run repeats the rest exactly. */
    @Test
    void bf16FullFineTuneResumesExactly(@TempDir Path tmp) throws IOException {
        Path run = tmp.resolve("run");
        TrainConfig c = LoraTrainingTest.small(run, 4);
        c.dtype = "bf16";
        c.checkpointEvery = 2;
        c.keepCheckpoints = 2;
        new Trainer(c, LoraTrainingTest.QUIET).run();
        List<JsonObject> whole = metrics(run);
        Trainer.resume(run.resolve("checkpoints").resolve("step-0000002"), 4, LoraTrainingTest.QUIET);
        List<JsonObject> resumed = metrics(run);
        assertEquals(4, resumed.size());
        for (int i = 0; i < 4; i++) {
            for (String k : whole.get(i).keySet()) {
                if (!k.equals("tokens_per_second")) {
                    assertEquals(whole.get(i).get(k).getAsDouble(), resumed.get(i).get(k).getAsDouble(), 0.0,
                            "step " + (i + 1) + " " + k);
                }
            }
        }
    }

    /** With either LM head: the fused one reads the recomputed forward's hidden states, the materialised one its logits. */
    @ParameterizedTest
    @EnumSource(LmHead.class)
    void gradientCheckpointingRepeatsThePlainRun(LmHead head, @TempDir Path tmp) throws IOException {
        TrainConfig plain = LoraTrainingTest.small(tmp.resolve("plain"), 4);
        TrainConfig ckpt = LoraTrainingTest.small(tmp.resolve("ckpt"), 4);
        plain.lmHead = head;
        ckpt.lmHead = head;
        ckpt.gradientCheckpointing = true;
        new Trainer(plain, LoraTrainingTest.QUIET).run();
        new Trainer(ckpt, LoraTrainingTest.QUIET).run();
        List<JsonObject> a = metrics(tmp.resolve("plain")), b = metrics(tmp.resolve("ckpt"));
        for (int i = 0; i < 4; i++) {
            for (String k : List.of("loss", "rewards/margins", "logps/chosen", "grad_norm")) {
                double x = a.get(i).get(k).getAsDouble(), y = b.get(i).get(k).getAsDouble();
                // same gradients to fp32 rounding (the tied head's sum order), carried through AdamW
                assertEquals(x, y, 1e-5 * Math.max(1, Math.abs(x)), "step " + (i + 1) + " " + k);
            }
        }
    }

    @Test
    void fp16AndUnknownDtypesAreRefusedBeforeARunFolderExists(@TempDir Path tmp) throws IOException {
        TrainConfig s = LoraTrainingTest.small(tmp.resolve("x"), 1);
        Map<String, List<String>> cases = Map.of(
                "needs loss scaling", List.of("train", "--dtype", "fp16", "--model", s.model, "--data", s.data,
                        "--out", tmp.resolve("r0").toString()),
                "dtype 'fp8' (expected bf16, fp16 or fp32)", List.of("train", "--dtype", "fp8", "--model", s.model,
                        "--data", s.data, "--out", tmp.resolve("r1").toString()));
        for (Map.Entry<String, List<String>> e : cases.entrySet()) {
            ByteArrayOutputStream err = new ByteArrayOutputStream();
            int code = TrainerTest.runWithErr(e.getValue(), err);
            String text = err.toString().trim();
            assertEquals(2, code, e.getKey() + ": " + text);
            assertTrue(text.contains(e.getKey()), e.getKey() + " not in: " + text);
        }
        assertFalse(Files.exists(tmp.resolve("r0")));
        assertFalse(Files.exists(tmp.resolve("r1")));
    }
}
