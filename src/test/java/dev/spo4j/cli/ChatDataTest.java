package dev.spo4j.cli;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.JsonArray;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import dev.spo4j.data.TextTokenizer;
import dev.spo4j.model.LlamaModel;
import dev.spo4j.model.ModelConfig;
import dev.spo4j.model.ModelFolder;
import dev.spo4j.testing.RealTokenizers;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import picocli.CommandLine;

/**
 * End to end with the real Qwen3 tokenizer and chat template on a tiny random Qwen2-shaped
 * model: train on a conversational file and on an UltraFeedback-style (implicit prompt)
 * file, inspect with {@code tokenize}, and bad conversational data stopping the run.
 */
class ChatDataTest {
    @TempDir
    static Path tmp;
    static Path model;

    static final String UF = "{\"prompt\": \"%s\", \"chosen\": [{\"role\": \"user\", \"content\": \"%s\"}, "
            + "{\"role\": \"assistant\", \"content\": \"%s\"}], \"rejected\": [{\"role\": \"user\", \"content\": \"%s\"}, "
            + "{\"role\": \"assistant\", \"content\": \"%s\"}], \"score_chosen\": 8.0, \"score_rejected\": 3.0}";
    static final String CONV = "{\"prompt\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": \"%s\"}], "
            + "\"chosen\": [{\"role\": \"assistant\", \"content\": \"%s\"}], \"rejected\": [{\"role\": \"assistant\", \"content\": \"%s\"}]}";

    @BeforeAll
    static void tinyQwenWithTheRealTokenizer() throws IOException {
        Path qwen = RealTokenizers.folder("qwen3");
        int vocab;
        try (TextTokenizer tok = TextTokenizer.load(qwen)) {
            vocab = tok.vocabSize();
        }
        torch.manual_seed(7);
        LlamaModel m = new LlamaModel(ModelConfig.of(ModelConfig.QWEN2, vocab, 16, 32, 1, 2, 1, 256).withTiedEmbeddings(true));
        model = tmp.resolve("tiny-qwen");
        ModelFolder.save(m, model, qwen, "bfloat16");   // a bf16 checkpoint, as the Hub serves them
    }

    static Path write(String name, String... lines) throws IOException {
        Path f = tmp.resolve(name);
        Files.writeString(f, String.join("\n", lines) + "\n");
        return f;
    }

    static int run(ByteArrayOutputStream err, String... args) {
        CommandLine cl = new CommandLine(new Main());
        cl.setErr(new PrintWriter(err, true));
        return Main.runWith(cl, args);
    }

    private static JsonObject trainOn(Path data, String runName) throws IOException {
        Path out = tmp.resolve(runName);
        ByteArrayOutputStream err = new ByteArrayOutputStream();
        assertEquals(0, run(err, "train", "--model", model.toString(), "--data", data.toString(), "--out", out.toString(),
                "--max-steps", "1", "--batch-size", "2", "--threads", "1", "--max-length", "64"), err.toString());
        List<String> metrics = Files.readAllLines(out.resolve("metrics.jsonl"));
        assertFalse(metrics.isEmpty());
        double loss = JsonParser.parseString(metrics.get(0)).getAsJsonObject().get("loss").getAsDouble();
        assertTrue(Double.isFinite(loss) && loss > 0, "loss " + loss);
        assertTrue(Files.isRegularFile(out.resolve("final-model").resolve("tokenizer_config.json")));
        assertEquals("bfloat16", ModelFolder.torchDtypeOf(out.resolve("final-model")), "final-model in the input's dtype");
        try (java.util.stream.Stream<Path> s = Files.list(out.resolve("checkpoints"))) {
            Path step = s.filter(p -> p.getFileName().toString().startsWith("step-")).findFirst().orElseThrow();
            assertEquals("float32", ModelFolder.torchDtypeOf(step.resolve("model")), "checkpoints keep the training precision");
        }
        return JsonParser.parseString(Files.readString(out.resolve("data.json"))).getAsJsonObject();
    }

    @Test
    void trainsOnConversationalAndUltraFeedbackFiles() throws IOException {
        Path conv = write("conv.jsonl", String.format(CONV, "Capital of France?", "Paris.", "Berlin."),
                String.format(CONV, "2+2?", "4", "5"), String.format(CONV, "Sky colour?", "Blue.", "Pink, surely."));
        JsonObject facts = trainOn(conv, "run-conv");
        assertEquals("conversational", facts.get("format").getAsString());
        assertTrue(facts.get("templated").getAsBoolean());
        assertEquals(3, facts.get("pairs").getAsInt());

        Path uf = write("uf.jsonl", String.format(UF, "Name a fruit.", "Name a fruit.", "Apple.", "Name a fruit.", "A car."),
                String.format(UF, "Say hi.", "Say hi.", "Hi!", "Say hi.", "No."));
        facts = trainOn(uf, "run-uf");
        assertEquals("conversational (implicit prompt)", facts.get("format").getAsString());
        assertEquals(0, facts.get("truncated_pairs").getAsInt());
    }

    @Test
    void tokenizeWritesTheTextsAndIdsTrainUses() throws IOException {
        Path uf = write("uf-tok.jsonl", String.format(UF, "Name a fruit.", "Name a fruit.", "Apple.", "Name a fruit.", "A car."));
        Path out = tmp.resolve("tokens.jsonl");
        ByteArrayOutputStream err = new ByteArrayOutputStream();
        assertEquals(0, run(err, "tokenize", "--model", model.toString(), "--data", uf.toString(), "--out", out.toString()),
                err.toString());
        List<String> lines = Files.readAllLines(out);
        assertEquals(1, lines.size());
        JsonObject o = JsonParser.parseString(lines.get(0)).getAsJsonObject();
        assertEquals("<|im_start|>user\nName a fruit.<|im_end|>\n<|im_start|>assistant\n", o.get("prompt_text").getAsString());
        assertEquals("<think>\n\n</think>\n\nApple.<|im_end|>\n", o.get("chosen_text").getAsString());
        try (TextTokenizer tok = TextTokenizer.load(model)) {
            assertArrayEquals(tok.encode(o.get("prompt_text").getAsString()), longs(o.getAsJsonArray("prompt_input_ids")));
            long[] chosen = longs(o.getAsJsonArray("chosen_input_ids"));
            assertArrayEquals(tok.encode(o.get("chosen_text").getAsString()), chosen);
            assertEquals(tok.eosId(), chosen[chosen.length - 2], "the turn ends with <|im_end|> then a newline, as the template writes");
            assertEquals(1, java.util.Arrays.stream(chosen).filter(x -> x == tok.eosId()).count());
        }

        // a prompt limit with keep_end keeps the assistant header
        assertEquals(0, run(err, "tokenize", "--model", model.toString(), "--data", uf.toString(), "--out", out.toString(),
                "--max-prompt-length", "4", "--truncation-mode", "keep_end"), err.toString());
        o = JsonParser.parseString(Files.readAllLines(out).get(0)).getAsJsonObject();
        assertEquals(4, o.getAsJsonArray("prompt_input_ids").size());
        assertTrue(o.get("truncated").getAsBoolean());
        try (TextTokenizer tok = TextTokenizer.load(model)) {
            assertTrue(tok.decode(longs(o.getAsJsonArray("prompt_input_ids"))).endsWith("assistant\n"));
        }
    }

    @Test
    void generateChatRendersTheUserMessageWithTheGenerationPrompt() throws IOException {
        try (TextTokenizer tok = TextTokenizer.load(model)) {
            assertArrayEquals(tok.encode("<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"),
                    dev.spo4j.generate.Generator.chatPromptIds(tok, "Hi there"));
        }
        java.io.PrintStream old = System.out;
        ByteArrayOutputStream out = new ByteArrayOutputStream(), err = new ByteArrayOutputStream();
        System.setOut(new java.io.PrintStream(out, true));
        int code;
        try {
            code = run(err, "generate", "--model", model.toString(), "--prompt", "Hi there", "--chat",
                    "--max-new-tokens", "3", "--temperature", "0", "--threads", "1");
        } finally {
            System.setOut(old);
        }
        assertEquals(0, code, err.toString());
        JsonObject o = JsonParser.parseString(out.toString().trim()).getAsJsonObject();
        assertEquals("Hi there", o.get("prompt").getAsString());
        assertTrue(o.get("tokens").getAsInt() <= 3);
    }

    @Test
    void badConversationalDataStopsBeforeTheRunFolder() throws IOException {
        Path bad = write("bad.jsonl", String.format(CONV, "a", "b", "c"), String.format(CONV, "a", "b", "c").replace("\"system\"", "\"narrator\""));
        Path out = tmp.resolve("run-bad");
        ByteArrayOutputStream err = new ByteArrayOutputStream();
        assertEquals(2, run(err, "train", "--model", model.toString(), "--data", bad.toString(), "--out", out.toString(),
                "--max-steps", "1"));
        assertTrue(err.toString().contains(bad + ":2: prompt[0] has the unknown role \"narrator\""), err.toString());
        assertFalse(Files.exists(out), "no run folder for bad data");
    }

    private static long[] longs(JsonArray a) {
        long[] out = new long[a.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = a.get(i).getAsLong();
        }
        return out;
    }
}
