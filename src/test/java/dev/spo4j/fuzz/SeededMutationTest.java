package dev.spo4j.fuzz;

import static org.junit.jupiter.api.Assertions.fail;

import dev.spo4j.data.PreferenceDataset;
import dev.spo4j.data.PreferencePair;
import dev.spo4j.model.ModelConfig;
import dev.spo4j.model.SafeTensors;
import dev.spo4j.train.Checkpoints;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Seeded mutation fuzzing of the readers of user files: the JSONL pair reader, the safetensors
 * reader, config.json, trainer_state.json, conversational records through a chat template, and
 * the chat template's source. Each starts from a valid file, applies a few
 * random byte-level mutations (flips, interesting bytes, deletions, duplications, insertions,
 * truncation) and requires the reader to either succeed or throw a user error
 * (IllegalArgumentException, or an I/O exception) whose message names the file; anything else
 * (NullPointerException, an index error, a raw parser exception, an Error) fails with the seed
 * and the iteration, so the case can be replayed. The budget is fixed (ITERATIONS per target,
 * seed SEED) so that a run is reproducible and short.
 */
class SeededMutationTest {
    static final long SEED = 20261202L;
    static final int ITERATIONS = 400;

    /** A reader under test: reads {@code file}; returns normally or throws. */
    @FunctionalInterface
    interface Reader {
        void read(Path file) throws Exception;
    }

    static byte[] mutate(byte[] in, SplittableRandom r) {
        byte[] b = in.clone();
        int n = 1 + r.nextInt(4);
        for (int k = 0; k < n && b.length > 0; k++) {
            int at = r.nextInt(b.length);
            switch (r.nextInt(7)) {
                case 0 -> b[at] ^= (byte) (1 << r.nextInt(8));
                case 1 -> b[at] = new byte[] {0, (byte) 0xff, '"', '{', '}', ',', ':', '\n', '-', '9', (byte) 0x80,
                        (byte) 0xc3}[r.nextInt(12)];
                case 2 -> {  // delete a range
                    int len = Math.min(b.length - at, 1 + r.nextInt(16));
                    byte[] c = new byte[b.length - len];
                    System.arraycopy(b, 0, c, 0, at);
                    System.arraycopy(b, at + len, c, at, b.length - at - len);
                    b = c;
                }
                case 3 -> {  // duplicate a range
                    int len = Math.min(b.length - at, 1 + r.nextInt(32));
                    byte[] c = new byte[b.length + len];
                    System.arraycopy(b, 0, c, 0, at + len);
                    System.arraycopy(b, at, c, at + len, b.length - at);
                    b = c;
                }
                case 4 -> {  // insert a token
                    byte[] tok = List.of("null", "1e309", "-1", "NaN", "[]", "{}", "\"x\"", "99999999999999999999",
                            "\"\\ud800\"", "true").get(r.nextInt(10)).getBytes(StandardCharsets.UTF_8);
                    byte[] c = new byte[b.length + tok.length];
                    System.arraycopy(b, 0, c, 0, at);
                    System.arraycopy(tok, 0, c, at, tok.length);
                    System.arraycopy(b, at, c, at + tok.length, b.length - at);
                    b = c;
                }
                case 5 -> b = Arrays.copyOf(b, at);  // truncate
                default -> {  // overwrite 8 bytes with a random little-endian number (safetensors' header length)
                    long v = r.nextBoolean() ? r.nextLong() : r.nextInt(1 << 20);
                    for (int i = 0; i < 8 && at + i < b.length; i++) {
                        b[at + i] = (byte) (v >>> (8 * i));
                    }
                }
            }
        }
        return b;
    }

    /** Runs the budget on one target; returns the counts {accepted, rejected}; fails on the first bad outcome. */
    static int[] fuzz(String target, byte[] valid, Path dir, String fileName, Reader reader) throws IOException {
        SplittableRandom r = new SplittableRandom(SEED ^ target.hashCode());
        int accepted = 0, rejected = 0;
        Path file = dir.resolve(fileName);
        for (int i = 0; i < ITERATIONS; i++) {
            byte[] input = mutate(valid, r);
            Files.write(file, input);
            try {
                reader.read(file);
                accepted++;
            } catch (IllegalArgumentException | UncheckedIOException | IOException e) {
                String m = String.valueOf(e.getMessage());
                if (!m.contains(fileName)) {
                    fail(target + " iteration " + i + " (seed " + SEED + "): the message does not name the file: "
                            + m + "\ninput: " + printable(input));
                }
                rejected++;
            } catch (Throwable t) {
                throw new AssertionError(target + " iteration " + i + " (seed " + SEED + "): " + t
                        + "\ninput: " + printable(input), t);
            }
        }
        return new int[] {accepted, rejected};
    }

    static String printable(byte[] b) {
        String s = new String(b, 0, Math.min(b.length, 600), StandardCharsets.ISO_8859_1);
        return s.replaceAll("[^\\x20-\\x7e\\n]", "?");
    }

    @Test
    void jsonlPairs(@TempDir Path tmp) throws IOException {
        List<PreferencePair> pairs = new ArrayList<>();
        pairs.add(PreferencePair.of("What is 2+2?", " 4", " 5"));
        pairs.add(PreferencePair.of("Say hi", " hi", " no").withScores(1.5, -0.5));
        pairs.add(PreferencePair.of("", " é ü", " x").withReferenceLogps(-3.25, -7.0));
        Path valid = tmp.resolve("valid.jsonl");
        PreferenceDataset.write(valid, pairs);
        fuzz("jsonl", Files.readAllBytes(valid), tmp, "pairs.jsonl", PreferenceDataset::read);
    }

    @Test
    void safetensors(@TempDir Path tmp) throws IOException {
        Map<String, Tensor> t = new LinkedHashMap<>();
        t.put("a.weight", torch.arange(new org.bytedeco.pytorch.Scalar(6)).reshape(2, 3).to(torch.ScalarType.Float));
        t.put("b", torch.ones(4).to(torch.ScalarType.BFloat16));
        Path valid = tmp.resolve("valid.safetensors");
        SafeTensors.write(valid, t, Map.of("format", "pt"));
        fuzz("safetensors", Files.readAllBytes(valid), tmp, "model.safetensors", f -> {
            Map<String, Tensor> read = SafeTensors.read(f);
            read.values().forEach(Tensor::close);
        });
    }

    @Test
    void modelConfig(@TempDir Path tmp) throws IOException {
        byte[] valid = Files.readAllBytes(Path.of("test-data", "tiny-llama", "config.json"));
        fuzz("config.json", valid, tmp, "config.json", ModelConfig::read);
    }

    @Test
    void trainerState(@TempDir Path tmp) throws IOException {
        String valid = """
                {
                  "step": 3,
                  "epoch": 0,
                  "batchIndex": 3,
                  "config": "{\\n  \\"loss\\": \\"SPO\\",\\n  \\"beta\\": 0.1\\n}",
                  "rngState": "AAECAw=="
                }
                """;
        Path ck = Files.createDirectories(tmp.resolve("step-0000003"));
        fuzz("trainer_state.json", valid.getBytes(StandardCharsets.UTF_8), ck, "trainer_state.json",
                f -> Checkpoints.config(f.getParent(), Checkpoints.readState(f.getParent())));
    }

    /** A template with what real ones use: a system branch, a loop, conditions, raise_exception, a generation prompt. */
    static final String TEMPLATE = "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
            + "{% set sys = messages[0]['content'] %}{% set rest = messages[1:] %}{% else %}{% set sys = '' %}"
            + "{% set rest = messages %}{% endif %}{% if sys %}<|sys|>{{ sys | trim }}<|end|>{% endif %}"
            + "{% for m in rest %}{% if m['role'] not in ['user', 'assistant'] %}"
            + "{{ raise_exception('unknown role ' + m['role']) }}{% endif %}"
            + "<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
            + "{% if add_generation_prompt %}<|assistant|>{% endif %}";

    @Test
    void conversationalRecordsThroughTheChatTemplate(@TempDir Path tmp) throws IOException {
        dev.spo4j.data.ChatTemplate template = dev.spo4j.data.ChatTemplate.of(TEMPLATE, Map.of("bos_token", "<s>"));
        String valid = String.join("\n",
                "{\"prompt\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": \"2+2?\"}], "
                        + "\"chosen\": [{\"role\": \"assistant\", \"content\": \"4\"}], "
                        + "\"rejected\": [{\"role\": \"assistant\", \"content\": \"5\"}], \"score_chosen\": 1, \"score_rejected\": 0}",
                "{\"chosen\": [{\"role\": \"user\", \"content\": \"Hi \u00e9\"}, {\"role\": \"assistant\", \"content\": \"Hello\"}], "
                        + "\"rejected\": [{\"role\": \"user\", \"content\": \"Hi \u00e9\"}, {\"role\": \"assistant\", \"content\": \"No\"}]}")
                + "\n";
        // the valid file reads: the fuzz starts from an accepted input
        dev.spo4j.data.PreferenceFormats.read(writeValid(tmp, valid), template);
        int[] counts = fuzz("conversational", valid.getBytes(StandardCharsets.UTF_8), tmp, "chat.jsonl",
                f -> dev.spo4j.data.PreferenceFormats.read(f, template));
        org.junit.jupiter.api.Assertions.assertTrue(counts[0] > 0 && counts[1] > 0,
                "mutations both pass and fail: " + Arrays.toString(counts));
    }

    @Test
    void chatTemplateSource(@TempDir Path tmp) throws IOException {
        List<Map<String, Object>> messages = List.of(Map.of("role", "system", "content", "Be brief."),
                Map.of("role", "user", "content", "2+2?"), Map.of("role", "assistant", "content", "4"));
        // a mutated template either renders or fails as a TemplateException (an IllegalArgumentException)
        int[] counts = fuzz("chat template", TEMPLATE.getBytes(StandardCharsets.UTF_8), tmp, "chat_template.jinja", f -> {
            String source = Files.readString(f, StandardCharsets.ISO_8859_1);
            try {
                dev.spo4j.data.ChatTemplate.of(source, Map.of("bos_token", "<s>")).render(messages, true);
            } catch (dev.spo4j.data.ChatTemplate.TemplateException e) {
                throw new IllegalArgumentException(f.getFileName() + ": " + e.getMessage(), e);
            }
        });
        org.junit.jupiter.api.Assertions.assertTrue(counts[0] > 0 && counts[1] > 0,
                "mutations both pass and fail: " + Arrays.toString(counts));
    }

    private static Path writeValid(Path dir, String text) throws IOException {
        Path f = dir.resolve("valid-chat.jsonl");
        Files.writeString(f, text);
        return f;
    }
}
