package dev.spo4j.train;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.spo4j.cli.Main;
import dev.spo4j.data.SftExample;
import dev.spo4j.data.TextTokenizer;
import dev.spo4j.model.LlamaModel;
import dev.spo4j.model.ModelFolder;
import dev.spo4j.synthetic.EmbeddedDefault;
import dev.spo4j.synthetic.SyntheticPreferences;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** SFT end to end: the loss goes down on a tiny task and the CLI writes a model (the objective's gradient: SftObjectiveTest). */
class SftTrainerTest {

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
        c.optim.lr = 3e-3;
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

        // an example longer than the model's context (256 positions) is refused before any step
        String longAnswer = "the cat is very good ! ".repeat(60);
        try (TextTokenizer tok = TextTokenizer.load(init)) {
            LlamaModel m = ModelFolder.load(init);
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> SftTrainer.train(m, tok,
                    List.of(new SftExample("describe the cat .", longAnswer)), c, null));
            assertTrue(e.getMessage().contains("max_position_embeddings 256"), e.getMessage());
            c.maxLength = 256;  // within the context: trains
            c.maxSteps = 1;
            assertEquals(1, SftTrainer.train(m, tok, List.of(new SftExample("describe the cat .", longAnswer)), c, null)
                    .rows().size());
        }
    }

    /** final-model/ follows train's rule: the input's dtype by default, --save-dtype to choose; a bad name is refused. */
    @Test
    void finalModelIsSavedInTheInputsDtype(@TempDir Path tmp) throws Exception {
        Path init = EmbeddedDefault.prepare(tmp.resolve("e"), 3).modelDir();
        Path bf16 = tmp.resolve("bf16-input");
        ModelFolder.save(ModelFolder.load(init), bf16, init, "bfloat16");
        Path jsonl = tmp.resolve("sft.jsonl");
        SftExample.write(jsonl, List.of(new SftExample("describe the cat .", "the cat is very good !")));
        String[] common = {"--data", jsonl.toString(), "--max-steps", "1", "--batch-size", "1", "--threads", "1"};
        for (String[] c : new String[][] {{bf16.toString(), "auto", "bfloat16"},
            {bf16.toString(), "float32", "float32"}, {init.toString(), "auto", "float32"}}) {
            Path run = tmp.resolve("run-" + c[2] + "-" + c[1] + "-" + Path.of(c[0]).getFileName());
            List<String> args = new ArrayList<>(List.of("sft", "--model", c[0], "--out", run.toString(), "--save-dtype", c[1]));
            args.addAll(List.of(common));
            assertEquals(0, Main.run(args.toArray(String[]::new)), String.join(" ", args));
            Path model = run.resolve("final-model");
            assertTrue(Files.readString(model.resolve("config.json")).contains("\"torch_dtype\": \"" + c[2] + "\""),
                    Files.readString(model.resolve("config.json")));
            for (var t : dev.spo4j.model.SafeTensors.read(model.resolve("model.safetensors")).entrySet()) {
                assertEquals(ModelFolder.scalarType(c[2]), t.getValue().scalar_type().intern(), t.getKey());
            }
        }
        SftConfig bad = new SftConfig();
        bad.model = init.toString();
        bad.data = jsonl.toString();
        bad.out = tmp.resolve("bad").toString();
        bad.saveDtype = "float8";
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> SftTrainer.run(bad, null));
        assertTrue(e.getMessage().contains("'float8'"), e.getMessage());
        assertTrue(!Files.exists(tmp.resolve("bad")), "nothing written for a refused run");
        // --device: a malformed one, and (this LibTorch has no CUDA) a GPU, refused before the run folder
        bad.saveDtype = "auto";
        bad.device = "gpu";
        e = assertThrows(IllegalArgumentException.class, () -> SftTrainer.run(bad, null));
        assertTrue(e.getMessage().contains("device 'gpu' (expected cpu, cuda or cuda:N)"), e.getMessage());
        if (!org.bytedeco.pytorch.global.torch.cuda_is_available()) {
            bad.device = "cuda";
            e = assertThrows(IllegalArgumentException.class, () -> SftTrainer.run(bad, null));
            assertTrue(e.getMessage().contains("--device cuda: LibTorch has no usable CUDA"), e.getMessage());
        }
        assertTrue(!Files.exists(tmp.resolve("bad")), "nothing written for a refused run");
        // an explicit --device cpu trains as the default does
        Path run = tmp.resolve("run-cpu");
        assertEquals(0, Main.run("sft", "--model", init.toString(), "--out", run.toString(), "--device", "cpu",
                "--data", jsonl.toString(), "--max-steps", "1", "--batch-size", "1", "--threads", "1"));
        assertTrue(Files.exists(run.resolve("final-model").resolve("model.safetensors")));
    }
}
