package dev.spo4j.train;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.spo4j.cli.Main;
import dev.spo4j.data.SftExample;
import dev.spo4j.data.SyntheticPreferences;
import dev.spo4j.data.TextTokenizer;
import dev.spo4j.model.LlamaModel;
import dev.spo4j.model.ModelFolder;
import dev.spo4j.testing.AllClose;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** SFT through the fused kernel: gradient = LibTorch's cross-entropy, loss goes down, CLI writes a model. */
class SftTrainerTest {

    @Test
    void gradientMatchesLibTorchCrossEntropy() {
        torch.manual_seed(5);
        long b = 3, t = 7, v = 29;
        Tensor z = torch.randn(new long[] {b, t, v}).mul(new Scalar(3.0));
        z.set_requires_grad(true);
        long[] tg = new long[(int) (b * t)];
        java.util.Random rnd = new java.util.Random(2);
        int scored = 0;
        for (int i = 0; i < tg.length; i++) {
            tg[i] = rnd.nextInt(3) == 0 ? -100 : rnd.nextInt((int) v);
            scored += tg[i] >= 0 ? 1 : 0;
        }
        Tensor targets = torch.empty(new long[] {b, t}, new TensorOptions(torch.ScalarType.Long), null);
        targets.data_ptr_long().put(tg);

        Tensor logits = z.mul(new Scalar(1.0));  // a non-leaf the kernel may overwrite
        SftObjective.Result r = new SftObjective(2).compute(logits, targets);
        r.backward();
        Tensor fusedGrad = z.grad().clone();
        assertEquals(scored, r.tokens());

        Tensor z2 = z.detach().clone();
        z2.set_requires_grad(true);
        Tensor flat = targets.view(-1);
        Tensor keep = flat.ne(new Scalar(-100));
        Tensor ls = torch.log_softmax(z2.view(-1, v), 1);
        Tensor picked = torch.gather(ls, 1, flat.clamp_min(new Scalar(0L)).unsqueeze(1)).squeeze(1);
        Tensor loss = picked.mul(keep.to(torch.ScalarType.Float)).sum().neg().div(new Scalar((double) scored));
        loss.backward();
        Tensor refGrad = z2.grad().clone();
        assertEquals(loss.item_double(), r.loss(), 1e-5);
        AllClose.assertAllClose("dL/dlogits", toDoubles(refGrad), toDoubles(fusedGrad), 1e-6, 1e-4);
    }

    @Test
    void lossDecreasesOnATinyTaskAndTheCliWritesAModel(@TempDir Path tmp) throws Exception {
        Path init = EmbeddedDefault.prepare(tmp.resolve("e"), 3).modelDir();
        List<SftExample> data = new ArrayList<>();
        for (int i = 0; i < 8; i++) {
            data.add(new SftExample("describe the cat .", "the cat is very good !"));
            data.add(new SftExample("tell me about a dog .", "a dog likes the river ."));
        }
        SftConfig c = new SftConfig();
        c.batchSize = 8;
        c.maxSteps = 30;
        c.lr = 3e-3;
        c.threads = 2;
        c.logEvery = 1;
        try (TextTokenizer tok = TextTokenizer.load(init)) {
            LlamaModel m = ModelFolder.load(init);
            SftTrainer.Summary s = SftTrainer.train(m, tok, data, c, null);
            assertEquals(30, s.rows().size());
            assertTrue(s.lastLoss() < 0.3 * s.firstLoss(), s.firstLoss() + " -> " + s.lastLoss());
        }
        Path jsonl = tmp.resolve("sft.jsonl");
        SftExample.write(jsonl, data);
        assertEquals(data, SftExample.read(jsonl));
        int rc = Main.run("sft", "--model", init.toString(), "--data", jsonl.toString(), "--out",
                tmp.resolve("run").toString(), "--max-steps", "3", "--batch-size", "4", "--threads", "2");
        assertEquals(0, rc);
        assertTrue(Files.exists(tmp.resolve("run/final-model/model.safetensors")));
        assertTrue(Files.exists(tmp.resolve("run/metrics.jsonl")));
        Files.writeString(tmp.resolve("bad.jsonl"), "{\"prompt\": \"x\"}\n");
        assertThrows(IllegalArgumentException.class, () -> SftExample.read(tmp.resolve("bad.jsonl")));
        assertTrue(SyntheticPreferences.vocabSize() > 0);
    }

    private static double[] toDoubles(Tensor t) {
        Tensor c = t.contiguous().view(-1).to(torch.ScalarType.Double).contiguous();
        double[] d = new double[(int) c.numel()];
        c.data_ptr_double().get(d);
        return d;
    }
}
