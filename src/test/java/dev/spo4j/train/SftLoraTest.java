package dev.spo4j.train;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.spo4j.cli.Main;
import dev.spo4j.data.SftExample;
import dev.spo4j.data.TextTokenizer;
import dev.spo4j.model.LlamaModel;
import dev.spo4j.model.LoraAdapters;
import dev.spo4j.model.LoraConfig;
import dev.spo4j.model.ModelFolder;
import dev.spo4j.synthetic.EmbeddedDefault;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * SFT with LoRA on a bf16 base and with bf16 full fine-tuning (fp32 masters): the loss falls,
 * the base stays frozen, the adapter is written in PEFT's layout and loads back.
 * Run: {@code mvn -B -q test -Dspo4j.cuda=OFF -Dtest=SftLoraTest}
 */
class SftLoraTest {
    static List<SftExample> data() {
        List<SftExample> data = new ArrayList<>();
        for (int i = 0; i < 8; i++) {
            data.add(new SftExample("describe the cat .", "the cat is very good !"));
            data.add(new SftExample("tell me about a dog .", "a dog likes the river ."));
        }
        return data;
    }

    @Test
    void loraOnABf16BaseLearnsAndWritesAnAdapter(@TempDir Path tmp) throws Exception {
        Path init = EmbeddedDefault.prepare(tmp.resolve("e"), 3).modelDir();
        Path jsonl = tmp.resolve("sft.jsonl");
        SftExample.write(jsonl, data());
        assertEquals(0, Main.run("sft", "--model", init.toString(), "--data", jsonl.toString(), "--out",
                tmp.resolve("run").toString(), "--max-steps", "20", "--batch-size", "8", "--threads", "2",
                "--lr", "1e-2", "--lora-r", "8", "--lora-alpha", "16", "--dtype", "bf16", "--log-every", "1"));
        Path adapter = tmp.resolve("run").resolve("final-adapter");
        assertTrue(Files.exists(adapter.resolve("adapter_model.safetensors")));
        assertFalse(Files.exists(tmp.resolve("run").resolve("final-model")));
        List<com.google.gson.JsonObject> rows = dev.spo4j.testing.RunFolders.metrics(tmp.resolve("run"));
        double first = rows.get(0).get("loss").getAsDouble(), last = rows.get(rows.size() - 1).get("loss").getAsDouble();
        assertTrue(last < 0.7 * first, first + " -> " + last);
        LlamaModel base = ModelFolder.load(init);
        assertEquals(new LoraConfig(8, 16, 0, LoraConfig.ALL_MODULES), LoraAdapters.load(base, adapter).config());
    }

    @Test
    void bf16FullFineTuningKeepsFp32Masters(@TempDir Path tmp) throws Exception {
        Path init = EmbeddedDefault.prepare(tmp.resolve("e"), 3).modelDir();
        SftConfig c = new SftConfig();
        c.batchSize = 8;
        c.maxSteps = 15;
        c.optim.lr = 3e-3;
        c.threads = 2;
        c.logEvery = 1;
        c.dtype = "bf16";
        try (TextTokenizer tok = TextTokenizer.load(init)) {
            LlamaModel m = ModelFolder.load(init);
            Tensor before = m.stateDict().get("model.layers.0.mlp.down_proj.weight").clone();
            SftTrainer.Summary s = SftTrainer.train(m, tok, data(), c, null);
            assertTrue(s.lastLoss() < 0.7 * s.firstLoss(), s.firstLoss() + " -> " + s.lastLoss());
            Tensor after = m.stateDict().get("model.layers.0.mlp.down_proj.weight");
            assertEquals(ScalarType.Float, after.scalar_type().intern(), "the master stays fp32");
            // AdamW's first steps move each weight by ~lr; fp32 masters keep updates that bf16 would round away
            Tensor moved = after.sub(before).abs();
            assertTrue(moved.max().item_double() > 0, "the masters were updated");
            Tensor roundTrip = after.to(ScalarType.BFloat16).to(ScalarType.Float);
            assertFalse(torch.equal(after, roundTrip), "the masters hold more than bf16's 8 bits");
        }
    }
}
