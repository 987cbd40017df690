package dev.spo4j.model;

import static dev.spo4j.kernels.Tensors.toDoubles;
import static dev.spo4j.testing.AllClose.assertAllClose;
import static dev.spo4j.testing.AllClose.maxAbsDiff;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.stream.Stream;
import org.bytedeco.javacpp.LongPointer;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.AdamW;
import org.bytedeco.pytorch.AdamWOptions;
import org.bytedeco.pytorch.BoolOptional;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.StringTensorDict;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorArrayRefOptional;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.EnumSource;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * {@link LlamaModel} against the golden logits of an independent float64 NumPy forward
 * (test-data/tiny-llama/gen_tiny_llama.py), plus properties that hold for any causal LM:
 * causality, batch independence, padding invariance, finite gradients; and the strict
 * state-dict contract.
 * Run: {@code mvn -B -q test -Dspo4j.cuda=OFF -Dtest=LlamaModelTest}
 */
class LlamaModelTest {
    /**
     * fp32 against a float64 truth: the fixture's logits are O(1) (max |logit| ~6) and the
     * NumPy model run in float32 is off by up to ~4e-6, so 1e-5 + 1e-5 |ref| leaves room for
     * a different summation order and nothing more.
     */
    static final double ATOL = 1e-5, RTOL = 1e-5;

    static Tensor randomIds(int b, int t, int vocab, long seed) {
        Random r = new Random(seed);
        long[] v = new long[b * t];
        for (int i = 0; i < v.length; i++) {
            v[i] = r.nextInt(vocab);
        }
        Tensor ids = torch.empty(new long[] {b, t}, new TensorOptions(ScalarType.Long), null);
        new LongPointer(ids.data_ptr()).put(v);
        return ids;
    }

    static Tensor mask(long[][] rows) {
        int b = rows.length, t = rows[0].length;
        long[] flat = new long[b * t];
        for (int i = 0; i < b; i++) {
            System.arraycopy(rows[i], 0, flat, i * t, t);
        }
        Tensor m = torch.empty(new long[] {b, t}, new TensorOptions(ScalarType.Long), null);
        new LongPointer(m.data_ptr()).put(flat);
        return m;
    }

    static ModelConfig smallConfig(String type, boolean tied) {
        return ModelConfig.of(type, 53, 24, 40, 2, 6, 2, 128).withTiedEmbeddings(tied).withRope(10000.0, null);
    }

    /** A random model with wide weights (std 0.2) so that logits are O(1) and sensitive. */
    static LlamaModel randomModel(ModelConfig c, long seed) {
        torch.manual_seed(seed);
        LlamaModel m = new LlamaModel(c);
        try (org.bytedeco.pytorch.NoGradGuard g = new org.bytedeco.pytorch.NoGradGuard()) {
            for (Map.Entry<String, Tensor> kv : m.stateDict().entrySet()) {
                Tensor p = kv.getValue();
                if (kv.getKey().endsWith("norm.weight")) {
                    p.copy_(torch.ones_like(p).add(torch.randn_like(p).mul(new Scalar(0.1))));
                } else {
                    p.copy_(torch.randn_like(p).mul(new Scalar(0.2)));
                }
            }
        }
        return m;
    }

    static void backward(Tensor out, Tensor grad) {
        out.backward(grad, new BoolOptional(), false, new TensorArrayRefOptional());
    }

    // ---------------------------------------------------------------- golden

    static Stream<Arguments> goldenCases() {
        List<Arguments> a = new ArrayList<>();
        for (String fixture : List.of("tiny-llama", "tiny-qwen2", "tiny-qwen3", "tiny-mistral")) {
            for (LlamaModel.Attention att : LlamaModel.Attention.values()) {
                a.add(Arguments.of(fixture, att));
            }
        }
        return a.stream();
    }

    @ParameterizedTest(name = "{0} {1}")
    @MethodSource("goldenCases")
    void matchesTheFloat64Reference(String fixture, LlamaModel.Attention attention) throws IOException {
        Path dir = Path.of("test-data", fixture);
        LlamaModel m = ModelFolder.load(dir).setAttention(attention);
        Map<String, Tensor> g = SafeTensors.read(dir.resolve("expected_logits.safetensors"));
        Tensor ids = g.get("input_ids"), mask = g.get("attention_mask"), expected = g.get("logits");
        Tensor logits = m.forward(ids, mask);
        assertSame(ScalarType.Float, logits.scalar_type().intern());
        assertArrayEquals(LlamaModel.shape(expected), LlamaModel.shape(logits));
        long t = ids.size(1);
        long real = mask.select(0, 1).sum().item_long();  // the second row is right-padded
        double max = 0;
        for (int b = 0; b < 2; b++) {
            long n = b == 0 ? t : real;
            double[] want = toDoubles(expected.select(0, b).narrow(0, 0, n));
            double[] got = toDoubles(logits.select(0, b).narrow(0, 0, n));
            assertAllClose(fixture + " " + attention + " row " + b, want, got, ATOL, RTOL);
            max = Math.max(max, maxAbsDiff(want, got));
        }
        Tensor padded = logits.select(0, 1).narrow(0, real, t - real);
        assertTrue(torch.isfinite(padded).all().item_bool(), "padded positions are finite");
        if (attention == LlamaModel.Attention.EAGER) {
            // the eager path is Hugging Face's eager mask, padded query rows included
            assertAllClose(fixture + " eager padded rows", toDoubles(expected.select(0, 1).narrow(0, real, t - real)),
                    toDoubles(padded), ATOL, RTOL);
        }
        System.out.printf("golden %s %s: max |logit - float64 reference| = %.3g%n", fixture, attention, max);
    }

    // ---------------------------------------------------------------- properties

    @ParameterizedTest
    @EnumSource(LlamaModel.Attention.class)
    void causal(LlamaModel.Attention attention) {
        LlamaModel m = randomModel(smallConfig("llama", false), 1).setAttention(attention);
        int t = 11, cut = 6;
        Tensor ids = randomIds(2, t, 53, 3);
        Tensor changed = ids.clone();
        changed.narrow(1, cut, t - cut).copy_(randomIds(2, t - cut, 53, 4));
        Tensor a = m.forward(ids, null), b = m.forward(changed, null);
        assertAllClose("prefix logits unchanged", toDoubles(a.narrow(1, 0, cut)), toDoubles(b.narrow(1, 0, cut)), 1e-6, 0);
        assertTrue(maxAbsDiff(toDoubles(a.narrow(1, cut, t - cut)), toDoubles(b.narrow(1, cut, t - cut))) > 1e-2,
                "later logits do change");
    }

    @ParameterizedTest
    @EnumSource(LlamaModel.Attention.class)
    void rightPaddingAndBatchingDoNotChangeRealPositions(LlamaModel.Attention attention) {
        LlamaModel m = randomModel(smallConfig("qwen2", true), 2).setAttention(attention);
        int t = 10;
        Tensor ids = randomIds(3, t, 53, 5);
        Tensor mask = mask(new long[][] {
            {1, 1, 1, 1, 1, 1, 1, 1, 1, 1},
            {1, 1, 1, 1, 0, 0, 0, 0, 0, 0},
            {1, 1, 1, 1, 1, 1, 1, 1, 1, 0}});
        Tensor batch = m.forward(ids, mask);
        long[] lengths = {10, 4, 9};
        for (int b = 0; b < 3; b++) {
            Tensor alone = m.forward(ids.narrow(0, b, 1).narrow(1, 0, lengths[b]).contiguous(), null);
            assertAllClose("row " + b, toDoubles(alone.select(0, 0)),
                    toDoubles(batch.select(0, b).narrow(0, 0, lengths[b])), 2e-6, 1e-6);
        }
        assertTrue(torch.isfinite(batch).all().item_bool());
    }

    @Test
    void generalMasksAgreeBetweenSdpaAndEager() {
        LlamaModel m = randomModel(smallConfig("llama", false), 3);
        Tensor ids = randomIds(3, 7, 53, 6);
        Tensor mask = mask(new long[][] {
            {0, 0, 1, 1, 1, 1, 1},     // left padding: rows 0-1 see no key at all
            {1, 1, 0, 1, 1, 0, 1},     // holes
            {0, 0, 0, 0, 0, 0, 0}});   // all padding
        Tensor sdpa = m.setAttention(LlamaModel.Attention.SDPA).forward(ids, mask);
        Tensor eager = m.setAttention(LlamaModel.Attention.EAGER).forward(ids, mask);
        assertTrue(torch.isfinite(sdpa).all().item_bool() && torch.isfinite(eager).all().item_bool());
        assertAllClose("sdpa vs eager", toDoubles(eager), toDoubles(sdpa), 2e-6, 1e-6);
        Tensor boolMask = mask.ne(new Scalar(0));
        assertTrue(torch.equal(eager, m.forward(ids, boolMask)), "bool mask = int64 mask");
    }

    @Test
    void gradientsReachEveryParameterAndAgreeBetweenPaths() {
        for (boolean tied : new boolean[] {false, true}) {
            ModelConfig c = smallConfig(tied ? "qwen2" : "llama", tied);
            Tensor ids = randomIds(2, 8, 53, 7);
            Tensor mask = mask(new long[][] {{1, 1, 1, 1, 1, 1, 1, 1}, {1, 1, 1, 1, 1, 0, 0, 0}});
            Map<String, double[]> grads = new LinkedHashMap<>();
            for (LlamaModel.Attention att : LlamaModel.Attention.values()) {
                LlamaModel m = randomModel(c, 4).setAttention(att);
                Tensor logits = m.forward(ids, mask);
                // weight only the real positions, as the preference loss does
                Tensor w = mask.to(ScalarType.Float).unsqueeze(2).expand_as(logits);
                Tensor loss = logits.mul(w).sum();
                backward(loss, torch.ones_like(loss));
                for (Map.Entry<String, Tensor> kv : m.stateDict().entrySet()) {
                    Tensor grad = kv.getValue().grad();
                    assertTrue(grad.defined(), kv.getKey() + " has a gradient");
                    assertArrayEquals(LlamaModel.shape(kv.getValue()), LlamaModel.shape(grad), kv.getKey());
                    double[] g = toDoubles(grad);
                    for (double x : g) {
                        assertTrue(Double.isFinite(x), kv.getKey() + " gradient is finite");
                    }
                    double[] other = grads.putIfAbsent(kv.getKey(), g);
                    if (other != null) {
                        assertAllClose(kv.getKey() + " grad sdpa vs eager", other, g, 1e-4, 1e-4);
                    }
                }
                assertEquals(tied ? 0 : 1, m.stateDict().keySet().stream().filter(k -> k.equals("lm_head.weight")).count());
            }
        }
    }

    @Test
    void backwardWithAllPaddingRowsIsFinite() {
        LlamaModel m = randomModel(smallConfig("llama", false), 5);
        Tensor ids = randomIds(2, 5, 53, 8);
        Tensor mask = mask(new long[][] {{0, 0, 0, 0, 0}, {0, 1, 1, 1, 1}});
        for (LlamaModel.Attention att : LlamaModel.Attention.values()) {
            Tensor logits = m.setAttention(att).forward(ids, mask);
            Tensor loss = logits.sum();
            backward(loss, torch.ones_like(loss));
            for (Map.Entry<String, Tensor> kv : m.stateDict().entrySet()) {
                assertTrue(torch.isfinite(kv.getValue().grad()).all().item_bool(), att + " " + kv.getKey());
            }
        }
    }

    @Test
    void optimiserStepThroughModuleParameters() {
        LlamaModel m = randomModel(smallConfig("llama", false), 6);
        TensorVector params = m.parameters();
        assertEquals(m.parameterList().size(), params.size());
        AdamW opt = new AdamW(params, new AdamWOptions(1e-2));
        Tensor ids = randomIds(2, 6, 53, 9);
        Tensor before = m.stateDict().get("model.layers.1.mlp.down_proj.weight").clone();
        for (int step = 0; step < 2; step++) {
            opt.zero_grad();
            Tensor loss = m.forward(ids, null).pow(new Scalar(2.0)).mean();
            backward(loss, torch.ones_like(loss));
            opt.step();
        }
        assertFalse(torch.equal(before, m.stateDict().get("model.layers.1.mlp.down_proj.weight")),
                "AdamW over parameters() moves the live weights");
    }

    // ---------------------------------------------------------------- parameters

    @Test
    void stateDictNamesAndOrderAreHuggingFaces() {
        ModelConfig c = ModelConfig.of("llama", 53, 24, 40, 1, 6, 2, 64).withBiases(true, true);
        LlamaModel m = new LlamaModel(c);
        String p = "model.layers.0.";
        assertEquals(List.of("model.embed_tokens.weight",
                p + "self_attn.q_proj.weight", p + "self_attn.q_proj.bias",
                p + "self_attn.k_proj.weight", p + "self_attn.k_proj.bias",
                p + "self_attn.v_proj.weight", p + "self_attn.v_proj.bias",
                p + "self_attn.o_proj.weight", p + "self_attn.o_proj.bias",
                p + "mlp.gate_proj.weight", p + "mlp.gate_proj.bias",
                p + "mlp.up_proj.weight", p + "mlp.up_proj.bias",
                p + "mlp.down_proj.weight", p + "mlp.down_proj.bias",
                p + "input_layernorm.weight", p + "post_attention_layernorm.weight",
                "model.norm.weight", "lm_head.weight"), List.copyOf(m.stateDict().keySet()));
        // the module tree carries the same names, in the same order, over the same tensors
        StringTensorDict named = m.named_parameters();
        assertEquals(m.stateDict().size(), named.size());
        int i = 0;
        for (Map.Entry<String, Tensor> kv : m.stateDict().entrySet()) {
            assertEquals(kv.getKey(), named.get(i).key().getString());
            assertEquals(kv.getValue().data_ptr().address(), named.get(i).value().data_ptr().address());
            assertTrue(kv.getValue().requires_grad(), kv.getKey());
            i++;
        }
        assertArrayEquals(new long[] {8, 24}, LlamaModel.shape(m.stateDict().get(p + "self_attn.k_proj.weight")));
        long expected = 53 * 24 * 2 + (24 * 24 + 24) + 2 * (8 * 24 + 8) + (24 * 24 + 24)
                + 2 * (40 * 24 + 40) + (24 * 40 + 24) + 24 * 3;
        assertEquals(expected, m.parameterCount());
    }

    @Test
    void qwen2HasQkvBiasesOnlyAndTiedHead() {
        LlamaModel m = new LlamaModel(smallConfig("qwen2", true));
        Map<String, Tensor> sd = m.stateDict();
        assertTrue(sd.containsKey("model.layers.1.self_attn.v_proj.bias"));
        assertFalse(sd.containsKey("model.layers.1.self_attn.o_proj.bias"));
        assertFalse(sd.containsKey("model.layers.1.mlp.up_proj.bias"));
        assertFalse(sd.containsKey("lm_head.weight"));
    }

    @Test
    void initialisationLikeHuggingFace() {
        ModelConfig c = ModelConfig.of("qwen2", 500, 64, 96, 1, 4, 4, 64);
        torch.manual_seed(11);
        Map<String, Tensor> a = new LlamaModel(c).stateDict();
        torch.manual_seed(11);
        Map<String, Tensor> b = new LlamaModel(c).stateDict();
        for (String k : a.keySet()) {
            assertTrue(torch.equal(a.get(k), b.get(k)), "seeded init is reproducible: " + k);
        }
        assertEquals(0.0, a.get("model.layers.0.self_attn.q_proj.bias").abs().max().item_double());
        assertEquals(1.0, a.get("model.norm.weight").min().item_double());
        assertEquals(1.0, a.get("model.layers.0.input_layernorm.weight").max().item_double());
        double std = a.get("model.embed_tokens.weight").std().item_double();
        assertEquals(0.02, std, 0.001);
        assertEquals(0.02, a.get("model.layers.0.mlp.up_proj.weight").std().item_double(), 0.001);
    }

    @Test
    void strictLoadingNamesTheTensor() throws IOException {
        LlamaModel m = ModelFolder.load(Path.of("test-data/tiny-llama"));
        Map<String, Tensor> good = SafeTensors.read(Path.of("test-data/tiny-llama/model.safetensors"));
        Tensor before = m.stateDict().get("model.norm.weight").clone();

        Map<String, Tensor> missing = new LinkedHashMap<>(good);
        missing.remove("model.layers.1.mlp.up_proj.weight");
        assertMessage(m, missing, "missing [model.layers.1.mlp.up_proj.weight]");

        Map<String, Tensor> extra = new LinkedHashMap<>(good);
        extra.put("model.layers.0.self_attn.rotary_emb.inv_freq", torch.ones(4));
        assertMessage(m, extra, "unexpected [model.layers.0.self_attn.rotary_emb.inv_freq]");

        Map<String, Tensor> shape = new LinkedHashMap<>(good);
        shape.put("model.norm.weight", torch.zeros(new long[] {31}, new TensorOptions(ScalarType.Float)));
        assertMessage(m, shape, "model.norm.weight has shape [31], expected [32]");

        Map<String, Tensor> ints = new LinkedHashMap<>(good);
        ints.put("model.norm.weight", torch.zeros(new long[] {32}, new TensorOptions(ScalarType.Long)));
        assertMessage(m, ints, "model.norm.weight has dtype Long");

        assertTrue(torch.equal(before, m.stateDict().get("model.norm.weight")), "a failed load copies nothing");

        // half-precision weights are converted to the fp32 parameters
        Map<String, Tensor> half = new LinkedHashMap<>();
        good.forEach((k, v) -> half.put(k, v.to(ScalarType.BFloat16)));
        m.loadStateDict(half);
        assertSame(ScalarType.Float, m.stateDict().get("model.norm.weight").scalar_type().intern());
        assertTrue(torch.equal(good.get("model.norm.weight").to(ScalarType.BFloat16).to(ScalarType.Float),
                m.stateDict().get("model.norm.weight")));
    }

    @Test
    void tiedModelAcceptsOnlyAnIdenticalHead() throws IOException {
        Path dir = Path.of("test-data/tiny-qwen2");
        LlamaModel m = ModelFolder.load(dir);
        Map<String, Tensor> w = new LinkedHashMap<>(SafeTensors.read(dir.resolve("model.safetensors")));
        w.put("lm_head.weight", w.get("model.embed_tokens.weight").clone());
        m.loadStateDict(w);
        w.put("lm_head.weight", w.get("model.embed_tokens.weight").add(new Scalar(1.0)));
        assertMessage(m, w, "lm_head.weight is present and differs");
    }

    private static void assertMessage(LlamaModel m, Map<String, Tensor> w, String fragment) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> m.loadStateDict(w));
        assertTrue(e.getMessage().contains(fragment), e.getMessage());
    }

    @Test
    void inputValidation() {
        LlamaModel m = new LlamaModel(smallConfig("llama", false));
        Tensor ids = randomIds(2, 4, 53, 1);
        assertBad("dtype", () -> m.forward(ids.to(ScalarType.Int), null));
        assertBad("shape", () -> m.forward(ids.reshape(8), null));
        assertBad("shape", () -> m.forward(ids.narrow(1, 0, 0), null));
        assertBad("null", () -> m.forward(null, null));
        Tensor high = ids.clone();
        high.select(0, 1).select(0, 2).fill_(new Scalar(53));
        assertBad("token id 53 outside [0, 53)", () -> m.forward(high, null));
        Tensor low = ids.clone();
        low.select(0, 0).select(0, 0).fill_(new Scalar(-1));
        assertBad("token id -1", () -> m.forward(low, null));
        assertBad("attentionMask has shape", () -> m.forward(ids, torch.ones(2, 5).to(ScalarType.Long)));
        assertBad("attentionMask has dtype", () -> m.forward(ids, torch.ones(2, 4)));
    }

    private static void assertBad(String fragment, org.junit.jupiter.api.function.Executable call) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, call);
        assertTrue(e.getMessage().contains(fragment), e.getMessage());
    }

    /** Module.to(dtype) replaces the parameters' data in place, so the Java handles follow. */
    @Test
    void moduleCastToBFloat16() throws IOException {
        Path dir = Path.of("test-data/tiny-llama");
        LlamaModel m = ModelFolder.load(dir);
        Map<String, Tensor> g = SafeTensors.read(dir.resolve("expected_logits.safetensors"));
        Tensor fp32 = m.forward(g.get("input_ids"), null);
        Tensor handle = m.stateDict().get("model.norm.weight");
        m.to(ScalarType.BFloat16, false);
        assertSame(ScalarType.BFloat16, handle.scalar_type().intern());
        for (LlamaModel.Attention att : LlamaModel.Attention.values()) {
            Tensor bf16 = m.setAttention(att).forward(g.get("input_ids"), g.get("attention_mask"));
            assertSame(ScalarType.BFloat16, bf16.scalar_type().intern());
            // bf16 keeps 8 bits of mantissa: logits of size ~5 move by a few hundredths
            assertAllClose("bf16 " + att, toDoubles(fp32.select(0, 0)), toDoubles(bf16.select(0, 0)), 0.15, 0.02);
        }
    }

    @Test
    void survivesThePointerScopeItWasCreatedIn() {
        LlamaModel m;
        Tensor ids = randomIds(1, 5, 53, 2);
        double[] inside;
        try (PointerScope scope = new PointerScope()) {
            m = randomModel(smallConfig("llama", false), 8);
            inside = toDoubles(m.forward(ids, null));
        }
        System.gc();
        double[] after;
        try (PointerScope scope = new PointerScope()) {
            after = toDoubles(m.forward(ids, null));
        }
        assertArrayEquals(inside, after);
        assertNotNull(m.stateDict().get("model.norm.weight"));
        assertEquals(m.parameterList().size(), m.parameters().size());
    }

    /**
     * close() frees the weights at once: afterwards a caller's own handle on a parameter is its
     * only reference (a plain Pointer.close() left the retained parameter handles and module
     * peers holding every weight until a garbage collection, which does not see native memory).
     */
    @Test
    void closeReleasesEveryParameter() {
        LlamaModel m = new LlamaModel(smallConfig("llama", false));
        java.util.List<Tensor> ours = new java.util.ArrayList<>();
        for (Tensor p : m.parameterList()) {
            ours.add(new Tensor(p));  // an independent handle on the same tensor
        }
        for (Tensor t : ours) {
            assertTrue(t.use_count() >= 3, "the module, its handle and ours: " + t.use_count());
        }
        m.close();
        m.close();  // a second close does nothing
        for (Tensor t : ours) {
            assertEquals(1, t.use_count(), "only our handle is left");
        }
    }
}
