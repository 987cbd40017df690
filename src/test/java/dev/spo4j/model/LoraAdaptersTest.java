package dev.spo4j.model;

import static dev.spo4j.kernels.Tensors.toDoubles;
import static dev.spo4j.testing.AllClose.assertAllClose;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import org.bytedeco.pytorch.BoolOptional;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorArrayRefOptional;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * {@link LoraAdapters} on the golden tiny models: a fresh adapter changes nothing, only the
 * adapters get gradients, disabled adapters give the base bit for bit, the PEFT folder
 * round-trips with PEFT's names and keys, the merge equals the float64 formula
 * W + (alpha/r) B A, and bad settings or a foreign adapter fail clearly.
 * Run: {@code mvn -B -q test -Dspo4j.cuda=OFF -Dtest=LoraAdaptersTest}
 */
class LoraAdaptersTest {
    static final LoraConfig ALL = new LoraConfig(4, 8, 0, LoraConfig.ALL_MODULES);

    static LlamaModel tiny(String fixture) throws IOException {
        return ModelFolder.load(Path.of("test-data", fixture));
    }

    static Tensor ids() {
        return LlamaModelTest.randomIds(2, 9, 61, 7);
    }

    /** B random too (a fresh adapter's B is zero, which would hide a wrong product). */
    static void perturb(LoraAdapters ad, long seed) {
        torch.manual_seed(seed);
        try (NoGradGuard g = new NoGradGuard()) {
            for (Tensor t : ad.parameters()) {
                t.copy_(torch.randn_like(t).mul(new Scalar(0.3)));
            }
        }
    }

    static Tensor logits(LlamaModel m) {
        try (NoGradGuard g = new NoGradGuard()) {
            return m.forward(ids(), null);
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"tiny-llama", "tiny-qwen2", "tiny-qwen3", "tiny-mistral"})
    void freshAdapterForwardEqualsTheBase(String fixture) throws IOException {
        Tensor base = logits(tiny(fixture));
        LlamaModel m = tiny(fixture);
        torch.manual_seed(1);
        LoraAdapters ad = LoraAdapters.create(m, ALL);
        assertEquals(2 * 7 * 2, ad.parameters().size(), "A and B for 7 modules in 2 layers");
        assertTrue(torch.equal(base, logits(m)), "B = 0: the update is exactly zero");
    }

    @Test
    void onlyTheAdaptersGetGradients() throws IOException {
        LlamaModel m = tiny("tiny-llama");
        LoraAdapters ad = LoraAdapters.create(m, ALL);
        perturb(ad, 3);
        Tensor out = m.forward(ids(), null);
        out.backward(torch.ones_like(out), new BoolOptional(), false, new TensorArrayRefOptional());
        for (Map.Entry<String, Tensor> kv : m.stateDict().entrySet()) {
            assertFalse(kv.getValue().requires_grad(), kv.getKey() + " is frozen");
            assertFalse(kv.getValue().grad().defined(), kv.getKey() + " has no gradient");
        }
        for (Map.Entry<String, Tensor> kv : ad.stateDict().entrySet()) {
            Tensor g = kv.getValue().grad();
            assertTrue(g.defined(), kv.getKey() + " has a gradient");
            assertEquals(ScalarType.Float, g.scalar_type().intern());
            assertTrue(g.abs().sum().item_double() > 0, kv.getKey() + " gradient is not zero");
        }
    }

    @Test
    void disabledAdaptersReproduceTheBaseBitForBit() throws IOException {
        Tensor base = logits(tiny("tiny-qwen2"));
        LlamaModel m = tiny("tiny-qwen2");
        LoraAdapters ad = LoraAdapters.create(m, ALL);
        perturb(ad, 5);
        Tensor adapted = logits(m);
        assertFalse(torch.equal(base, adapted), "the perturbed adapter changes the logits");
        ad.setEnabled(false);
        assertTrue(torch.equal(base, logits(m)), "disabled: the base, bit for bit");
        ad.setEnabled(true);
        assertTrue(torch.equal(adapted, logits(m)), "enabled again: the adapted model");
    }

    @Test
    void savedAdapterLoadsBackWithPeftNamesAndKeys(@TempDir Path tmp) throws IOException {
        LlamaModel m = tiny("tiny-llama");
        LoraAdapters ad = LoraAdapters.create(m, new LoraConfig(3, 6, 0.1, List.of("q", "v_proj", "down")));
        perturb(ad, 9);
        Tensor want = logits(m);
        Path dir = tmp.resolve("adapter");
        ad.save(dir, "test-data/tiny-llama", Path.of("test-data", "tiny-llama"));

        JsonObject cfg = JsonParser.parseString(Files.readString(dir.resolve("adapter_config.json"))).getAsJsonObject();
        assertEquals("LORA", cfg.get("peft_type").getAsString());
        assertEquals("CAUSAL_LM", cfg.get("task_type").getAsString());
        assertEquals(3, cfg.get("r").getAsInt());
        assertEquals(6, cfg.get("lora_alpha").getAsInt());
        assertEquals(0.1, cfg.get("lora_dropout").getAsDouble());
        assertEquals("test-data/tiny-llama", cfg.get("base_model_name_or_path").getAsString());
        assertEquals("[\"q_proj\",\"v_proj\",\"down_proj\"]", cfg.get("target_modules").toString());
        Set<String> names = new TreeSet<>(SafeTensors.names(dir.resolve("adapter_model.safetensors")));
        Set<String> expected = new TreeSet<>();
        for (int l = 0; l < 2; l++) {
            for (String mod : List.of("self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj")) {
                expected.add("base_model.model.model.layers." + l + "." + mod + ".lora_A.weight");
                expected.add("base_model.model.model.layers." + l + "." + mod + ".lora_B.weight");
            }
        }
        assertEquals(expected, names);
        Map<String, Tensor> saved = SafeTensors.read(dir.resolve("adapter_model.safetensors"));
        assertEquals(List.of(3L, 32L), shapeOf(saved.get("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight")));
        assertEquals(List.of(32L, 3L), shapeOf(saved.get("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight")));
        assertEquals(List.of(3L, 48L), shapeOf(saved.get("base_model.model.model.layers.1.mlp.down_proj.lora_A.weight")));

        LlamaModel again = tiny("tiny-llama");
        LoraAdapters loaded = LoraAdapters.load(again, dir);
        assertEquals(ad.config(), loaded.config());
        assertTrue(torch.equal(want, logits(again)), "the loaded adapter gives the same logits");
    }

    private static List<Long> shapeOf(Tensor t) {
        List<Long> s = new ArrayList<>();
        for (long d : LlamaModel.shape(t)) {
            s.add(d);
        }
        return s;
    }

    @Test
    void mergeIsTheFormulaAndGivesTheAdaptedLogits() throws IOException {
        LlamaModel m = tiny("tiny-qwen2");
        LoraAdapters ad = LoraAdapters.create(m, new LoraConfig(4, 16, 0, List.of("all-linear")));
        perturb(ad, 11);
        Tensor adapted = logits(m);
        Map<String, Tensor> before = new java.util.LinkedHashMap<>();
        m.stateDict().forEach((k, v) -> before.put(k, v.clone()));
        ad.mergeInto(m);
        ad.setEnabled(false);
        // float64: W + (alpha/r) B A
        for (Map.Entry<String, Tensor> kv : m.stateDict().entrySet()) {
            String name = kv.getKey();
            String path = name.substring(0, name.length() - ".weight".length());
            Tensor a = ad.stateDict().get("base_model.model." + path + ".lora_A.weight");
            if (a == null) {
                assertTrue(torch.equal(before.get(name), kv.getValue()), name + " untouched");
                continue;
            }
            Tensor b = ad.stateDict().get("base_model.model." + path + ".lora_B.weight");
            Tensor truth = before.get(name).to(ScalarType.Double)
                    .add(torch.matmul(b.to(ScalarType.Double), a.to(ScalarType.Double)).mul(new Scalar(16.0 / 4)));
            double[] t = toDoubles(truth);
            // fp32 result of one fp32 product of inner size r = 4 and one add: a few ulps of the magnitudes
            assertAllClose(name, t, toDoubles(kv.getValue()), 1e-6, 1e-6);
        }
        double[] want = toDoubles(adapted), got = toDoubles(logits(m));
        // the merged model runs one matmul where the adapted one runs three: fp32 reassociation only
        assertAllClose("merged vs adapted logits", want, got, 1e-5, 1e-5);
    }

    @Test
    void badSettingsAndForeignAdaptersFailClearly(@TempDir Path tmp) throws IOException {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> new LoraConfig(4, 8, 0, List.of("q", "qq")));
        assertTrue(e.getMessage().contains("'qq' matches no linear layer"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> new LoraConfig(0, 8, 0, LoraConfig.ALL_MODULES));
        assertTrue(e.getMessage().contains("r = 0"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> new LoraConfig(-2, 8, 0, LoraConfig.ALL_MODULES));
        assertTrue(e.getMessage().contains("r = -2"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> new LoraConfig(2, 8, 1.0, LoraConfig.ALL_MODULES));
        assertTrue(e.getMessage().contains("dropout = 1.0"), e.getMessage());

        // an adapter trained on another base: tiny-qwen2 has 1 kv head, tiny-llama 2
        LlamaModel qwen = tiny("tiny-qwen2");
        Path dir = tmp.resolve("qwen-adapter");
        LoraAdapters.create(qwen, ALL).save(dir, "tiny-qwen2", null);
        LlamaModel llama = tiny("tiny-llama");
        e = assertThrows(IllegalArgumentException.class, () -> LoraAdapters.load(llama, dir));
        assertTrue(e.getMessage().contains("self_attn.k_proj.lora_B.weight has shape [8, 4], expected [16, 4]"),
                e.getMessage());
        assertEquals(null, llama.adapters(), "nothing attached after a failed load");
        assertTrue(llama.parameterList().get(0).requires_grad(), "the base is not frozen after a failed load");
    }
}
