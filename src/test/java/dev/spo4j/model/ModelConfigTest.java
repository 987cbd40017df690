package dev.spo4j.model;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

/**
 * {@link ModelConfig}: reading the fixtures and real-world key variants, Hugging Face
 * defaults, validation messages, and write/read round trips.
 * Run: {@code mvn -B -q test -Dspo4j.cuda=OFF -Dtest=ModelConfigTest}
 */
class ModelConfigTest {
    @TempDir
    Path tmp;

    static final String MINIMAL = "{\"model_type\":\"llama\",\"vocab_size\":100,\"hidden_size\":64,"
            + "\"intermediate_size\":128,\"num_hidden_layers\":2,\"num_attention_heads\":8}";

    static String with(String json, String key, String value) {
        JsonObject o = JsonParser.parseString(json).getAsJsonObject();
        if (value == null) {
            o.remove(key);
        } else {
            o.add(key, JsonParser.parseString(value));
        }
        return o.toString();
    }

    static IllegalArgumentException rejected(String json) {
        return assertThrows(IllegalArgumentException.class, () -> ModelConfig.parse(json, "cfg"));
    }

    @Test
    void readsTheFixtures() throws IOException {
        ModelConfig l = ModelConfig.read(Path.of("test-data/tiny-llama/config.json"));
        assertEquals(new ModelConfig("llama", 61, 32, 48, 2, 4, 2, 8, 1e-6, 10000.0, 64, false, false, false,
                1, List.of(2), null, 0.02), l);
        assertFalse(l.qkvBias());
        assertFalse(l.outputBias());
        ModelConfig q = ModelConfig.read(Path.of("test-data/tiny-qwen2/config.json"));
        assertEquals("qwen2", q.modelType());
        assertTrue(q.tieWordEmbeddings());
        assertTrue(q.qkvBias(), "qwen2 always has q/k/v biases");
        assertFalse(q.outputBias(), "qwen2 has no o_proj bias");
        assertNull(q.bosTokenId());
        assertEquals(List.of(3, 4), q.eosTokenIds());
        assertEquals(1, q.numKeyValueHeads());
        assertEquals(1e6, q.ropeTheta());
    }

    @Test
    void huggingFaceDefaults() {
        ModelConfig c = ModelConfig.parse(MINIMAL, "cfg");
        assertEquals(8, c.numKeyValueHeads());
        assertEquals(8, c.headDim());
        assertEquals(10000.0, c.ropeTheta());
        assertEquals(1e-6, c.rmsNormEps());
        assertFalse(c.tieWordEmbeddings());
        assertFalse(c.attentionBias());
        assertNull(c.bosTokenId());
        assertEquals(List.of(), c.eosTokenIds());
        assertNull(c.ropeScaling());
        assertEquals(0.02, c.initializerRange());
    }

    @Test
    void explicitHeadDimAndAttentionBias() {
        ModelConfig c = ModelConfig.parse(with(with(MINIMAL, "head_dim", "16"), "attention_bias", "true"), "cfg");
        assertEquals(16, c.headDim());
        assertEquals(128, c.qDim());
        assertTrue(c.qkvBias());
        assertTrue(c.outputBias());
        // with head_dim given, heads need not divide hidden (as in Hugging Face)
        ModelConfig odd = ModelConfig.parse(with(with(MINIMAL, "num_attention_heads", "6"), "head_dim", "10"), "cfg");
        assertEquals(60, odd.qDim());
    }

    @Test
    void validationMessagesNameTheProblem() {
        assertTrue(rejected(with(MINIMAL, "model_type", "\"gemma\"")).getMessage().contains("gemma"));
        assertTrue(rejected(with(MINIMAL, "model_type", null)).getMessage().contains("model_type"));
        assertTrue(rejected(with(MINIMAL, "num_attention_heads", "7")).getMessage()
                .contains("num_attention_heads 7 does not divide hidden_size 64"));
        assertTrue(rejected(with(MINIMAL, "num_key_value_heads", "3")).getMessage()
                .contains("num_key_value_heads 3 does not divide num_attention_heads 8"));
        assertTrue(rejected(with(MINIMAL, "vocab_size", null)).getMessage().contains("vocab_size is missing"));
        assertTrue(rejected(with(MINIMAL, "vocab_size", "0")).getMessage().contains("vocab_size is 0"));
        assertTrue(rejected(with(MINIMAL, "vocab_size", "1.5")).getMessage().contains("vocab_size"));
        assertTrue(rejected(with(MINIMAL, "vocab_size", "\"100\"")).getMessage().contains("vocab_size"));
        assertTrue(rejected(with(MINIMAL, "hidden_act", "\"gelu\"")).getMessage().contains("gelu"));
        assertTrue(rejected(with(MINIMAL, "head_dim", "7")).getMessage().contains("head_dim 7"));
        assertTrue(rejected(with(MINIMAL, "rms_norm_eps", "0")).getMessage().contains("rms_norm_eps"));
        assertTrue(rejected(with(MINIMAL, "rope_theta", "-1")).getMessage().contains("rope_theta"));
        assertTrue(rejected(with(MINIMAL, "tie_word_embeddings", "1")).getMessage().contains("tie_word_embeddings"));
        assertTrue(rejected(with(MINIMAL, "rope_scaling", "{\"rope_type\":\"yarn\",\"factor\":4}"))
                .getMessage().contains("yarn"));
        assertTrue(rejected(with(with(MINIMAL, "model_type", "\"qwen2\""), "use_sliding_window", "true"))
                .getMessage().contains("use_sliding_window"));
        assertTrue(rejected("[1]").getMessage().contains("cfg"));
        assertTrue(rejected("{oops").getMessage().contains("cfg"));
    }

    @Test
    void readNamesTheFile() throws IOException {
        Path f = tmp.resolve("config.json");
        Files.writeString(f, with(MINIMAL, "model_type", "\"gpt2\""));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> ModelConfig.read(f));
        assertTrue(e.getMessage().startsWith(f.toString()) && e.getMessage().contains("gpt2"), e.getMessage());
    }

    @Test
    void eosAsIntOrList() {
        assertEquals(List.of(7), ModelConfig.parse(with(MINIMAL, "eos_token_id", "7"), "cfg").eosTokenIds());
        assertEquals(List.of(7, 9), ModelConfig.parse(with(MINIMAL, "eos_token_id", "[7,9]"), "cfg").eosTokenIds());
        assertEquals(List.of(), ModelConfig.parse(with(MINIMAL, "eos_token_id", "null"), "cfg").eosTokenIds());
    }

    @Test
    void ropeScalingVariants() {
        String llama3 = "{\"rope_type\":\"llama3\",\"factor\":8.0,\"low_freq_factor\":1.0,"
                + "\"high_freq_factor\":4.0,\"original_max_position_embeddings\":8192}";
        ModelConfig c = ModelConfig.parse(with(with(with(MINIMAL, "rope_scaling", llama3), "head_dim", "128"),
                "rope_theta", "500000.0"), "cfg");
        assertEquals(new ModelConfig.RopeScaling("llama3", 8, 1, 4, 8192), c.ropeScaling());
        double[] plain = c.withRope(500000.0, null).ropeInverseFrequencies();
        double[] scaled = c.ropeInverseFrequencies();
        // Llama 3.1 rule: wavelength < 8192/4 kept, > 8192/1 divided by 8, smooth in between
        for (int i = 0; i < plain.length; i++) {
            double wavelen = 2 * Math.PI / plain[i];
            if (wavelen < 2048) {
                assertEquals(plain[i], scaled[i], 0.0, "high frequency " + i);
            } else if (wavelen > 8192) {
                assertEquals(plain[i] / 8, scaled[i], 1e-20, "low frequency " + i);
            } else {
                assertTrue(scaled[i] <= plain[i] && scaled[i] >= plain[i] / 8, "medium " + i);
            }
        }
        assertEquals(1.0, scaled[0]);
        ModelConfig lin = ModelConfig.parse(with(MINIMAL, "rope_scaling", "{\"type\":\"linear\",\"factor\":2.0}"), "cfg");
        assertEquals(0.5, lin.ropeInverseFrequencies()[0]);
        ModelConfig dflt = ModelConfig.parse(with(MINIMAL, "rope_scaling", "{\"rope_type\":\"default\"}"), "cfg");
        assertNull(dflt.ropeScaling());
        // transformers 5: rope_parameters carries theta and type
        ModelConfig v5 = ModelConfig.parse(with(MINIMAL, "rope_parameters",
                "{\"rope_type\":\"default\",\"rope_theta\":1000000.0}"), "cfg");
        assertEquals(1e6, v5.ropeTheta());
        assertNull(v5.ropeScaling());
    }

    @Test
    void writeThenReadIsIdentity() throws IOException {
        ModelConfig[] configs = {
            ModelConfig.read(Path.of("test-data/tiny-llama/config.json")),
            ModelConfig.read(Path.of("test-data/tiny-qwen2/config.json")),
            ModelConfig.of("llama", 100, 64, 96, 3, 4, 4, 512).withBiases(true, true)
                .withRope(500000.0, new ModelConfig.RopeScaling("llama3", 8, 1, 4, 8192)),
            ModelConfig.of("llama", 100, 64, 96, 3, 4, 1, 512).withRope(10000.0,
                new ModelConfig.RopeScaling("linear", 2, 0, 0, 0)).withTiedEmbeddings(true),
        };
        for (ModelConfig c : configs) {
            Path f = tmp.resolve("config.json");
            c.write(f);
            assertEquals(c, ModelConfig.read(f));
            JsonObject o = JsonParser.parseString(Files.readString(f)).getAsJsonObject();
            assertEquals("float32", o.get("torch_dtype").getAsString());
            assertEquals(c.modelType().equals("llama") ? "LlamaForCausalLM" : "Qwen2ForCausalLM",
                    o.getAsJsonArray("architectures").get(0).getAsString());
        }
    }

    @org.junit.jupiter.api.Test
    void qwen3AndMistralRoundTripAndSlidingWindowsThatMaskAreRejected() throws java.io.IOException {
        for (String fixture : java.util.List.of("tiny-qwen3", "tiny-mistral")) {
            ModelConfig c = ModelConfig.read(java.nio.file.Path.of("test-data", fixture, "config.json"));
            org.junit.jupiter.api.Assertions.assertEquals(c, ModelConfig.parse(c.toJson("float32"), fixture));
        }
        ModelConfig q = ModelConfig.read(java.nio.file.Path.of("test-data/tiny-qwen3/config.json"));
        org.junit.jupiter.api.Assertions.assertTrue(q.qkNorm());
        org.junit.jupiter.api.Assertions.assertEquals(16, q.headDim(), "explicit head_dim, not hidden / heads");
        org.junit.jupiter.api.Assertions.assertFalse(q.qkvBias());
        String mistral = "{\"model_type\": \"mistral\", \"vocab_size\": 10, \"hidden_size\": 8, \"intermediate_size\": 8, "
                + "\"num_hidden_layers\": 1, \"num_attention_heads\": 2, \"max_position_embeddings\": 32768, \"sliding_window\": %s}";
        IllegalArgumentException e = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
                () -> ModelConfig.parse(String.format(mistral, "4096"), "m"));
        org.junit.jupiter.api.Assertions.assertTrue(e.getMessage().contains("sliding_window 4096"), e.getMessage());
        ModelConfig.parse(String.format(mistral, "null"), "m");
        ModelConfig.parse(String.format(mistral, "32768"), "m");
    }
}
