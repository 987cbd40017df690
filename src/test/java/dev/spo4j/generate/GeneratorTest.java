package dev.spo4j.generate;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.spo4j.model.LlamaModel;
import dev.spo4j.model.LoraAdapters;
import dev.spo4j.model.LoraConfig;
import dev.spo4j.model.ModelConfig;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/** Batched sampling: seeds, greedy = step-by-step arg-max, top-k 1 = greedy, EOS, padding. */
class GeneratorTest {
    static final int V = 23;
    static LlamaModel model;
    static final List<long[]> PROMPTS = List.of(new long[] {1, 5, 6}, new long[] {1, 7}, new long[] {1, 8, 9, 10, 11});

    @BeforeAll
    static void setUp() {
        torch.set_num_threads(2);
        torch.manual_seed(3);
        // a larger init range than HF's 0.02 so that the logits are far from uniform
        ModelConfig c = ModelConfig.of("llama", V, 32, 64, 2, 4, 2, 64);
        model = new LlamaModel(new ModelConfig(c.modelType(), V, 32, 64, 2, 4, 2, c.headDim(), 1e-6, 10000.0, 64,
                false, false, false, null, List.of(), null, 0.5));
    }

    @Test
    void sameSeedSameSamplesOtherSeedOtherSamples() {
        GenerationConfig a = new GenerationConfig(1.0, 0, 1.0, 12, 7);
        List<Generator.Sample> x = Generator.generate(model, PROMPTS, null, a);
        List<Generator.Sample> y = Generator.generate(model, PROMPTS, null, a);
        List<Generator.Sample> z = Generator.generate(model, PROMPTS, null, new GenerationConfig(1.0, 0, 1.0, 12, 8));
        boolean differs = false;
        for (int i = 0; i < PROMPTS.size(); i++) {
            assertArrayEquals(x.get(i).tokens(), y.get(i).tokens());
            assertEquals(12, x.get(i).tokens().length, "no EOS: max new tokens");
            differs |= !Arrays.equals(x.get(i).tokens(), z.get(i).tokens());
        }
        assertTrue(differs, "another seed gives other samples");
    }

    @Test
    void greedyIsTheArgMaxOfTheModelsLogitsAtEveryStep() {
        List<Generator.Sample> g = Generator.generate(model, PROMPTS, null, GenerationConfig.greedy(8));
        for (int i = 0; i < PROMPTS.size(); i++) {
            long[] seq = PROMPTS.get(i).clone();
            for (long tok : g.get(i).tokens()) {
                assertEquals(argMaxNext(seq), tok, "prompt " + i);
                seq = Arrays.copyOf(seq, seq.length + 1);
                seq[seq.length - 1] = tok;
            }
        }
    }

    @Test
    void batchedEqualsOneByOne() {
        GenerationConfig c = new GenerationConfig(0.0, 0, 1.0, 6, 0);
        List<Generator.Sample> all = Generator.generate(model, PROMPTS, null, c);
        for (int i = 0; i < PROMPTS.size(); i++) {
            assertArrayEquals(Generator.generate(model, List.of(PROMPTS.get(i)), null, c).get(0).tokens(),
                    all.get(i).tokens(), "right padding must not change a row");
        }
    }

    @Test
    void topKOneIsGreedyAtAnyTemperature() {
        List<Generator.Sample> greedy = Generator.generate(model, PROMPTS, null, GenerationConfig.greedy(10));
        List<Generator.Sample> k1 = Generator.generate(model, PROMPTS, null, new GenerationConfig(2.0, 1, 1.0, 10, 99));
        List<Generator.Sample> p0 = Generator.generate(model, PROMPTS, null, new GenerationConfig(1.0, 0, 1e-6, 10, 5));
        for (int i = 0; i < PROMPTS.size(); i++) {
            assertArrayEquals(greedy.get(i).tokens(), k1.get(i).tokens());
            assertArrayEquals(greedy.get(i).tokens(), p0.get(i).tokens(), "a tiny top-p keeps only the top token");
        }
    }

    @Test
    void eosStopsASequenceAndIsNotReturned() {
        long[] free = Generator.generate(model, List.of(PROMPTS.get(0)), null, GenerationConfig.greedy(10)).get(0).tokens();
        int j = 1;  // the first position whose token did not occur before it
        while (j < free.length && contains(free, j, free[j])) {
            j++;
        }
        if (j == free.length) {
            j = 0;
        }
        long eos = free[j];
        Generator.Sample s = Generator.generate(model, List.of(PROMPTS.get(0), PROMPTS.get(1)), eos,
                GenerationConfig.greedy(10)).get(0);
        assertArrayEquals(Arrays.copyOf(free, j), s.tokens());
        assertTrue(s.endedWithEos());
        assertFalse(Generator.generate(model, List.of(PROMPTS.get(0)), null, GenerationConfig.greedy(3)).get(0)
                .endedWithEos());
    }

    @Test
    void kvCacheGivesTheRecomputedSamples() {
        for (LlamaModel.Attention att : LlamaModel.Attention.values()) {
            model.setAttention(att);
            try {
                for (GenerationConfig c : List.of(GenerationConfig.greedy(12), new GenerationConfig(1.0, 0, 1.0, 12, 3),
                        new GenerationConfig(0.7, 5, 0.9, 9, 11))) {
                    List<Generator.Sample> cached = Generator.generate(model, PROMPTS, c);
                    List<Generator.Sample> full = Generator.generateRecomputing(model, PROMPTS, c);
                    for (int i = 0; i < PROMPTS.size(); i++) {
                        assertArrayEquals(full.get(i).tokens(), cached.get(i).tokens(), att + " row " + i);
                    }
                }
                // with an EOS that stops some rows early, the others go on from their own cache rows
                long[] free = Generator.generate(model, List.of(PROMPTS.get(0)), null, GenerationConfig.greedy(10)).get(0).tokens();
                List<Generator.Sample> a = Generator.generate(model, PROMPTS, GenerationConfig.greedy(10), free[1]);
                List<Generator.Sample> b = Generator.generateRecomputing(model, PROMPTS, GenerationConfig.greedy(10), free[1]);
                for (int i = 0; i < PROMPTS.size(); i++) {
                    assertArrayEquals(b.get(i).tokens(), a.get(i).tokens());
                    assertEquals(b.get(i).endedWithEos(), a.get(i).endedWithEos());
                }
            } finally {
                model.setAttention(LlamaModel.Attention.SDPA);
            }
        }
    }

    /** The KV cache's prefill and decode run every projection through its LoRA adapter, as the plain forward does. */
    @Test
    void kvCacheGivesTheRecomputedSamplesWithLoraAdapters() {
        torch.manual_seed(3);
        ModelConfig c = model.config();
        LlamaModel adapted = new LlamaModel(c);
        adapted.loadStateDict(model.stateDict());
        LoraAdapters ad = LoraAdapters.create(adapted, new LoraConfig(4, 8, 0.0, LoraConfig.ALL_MODULES));
        torch.manual_seed(5);
        try (NoGradGuard g = new NoGradGuard()) {
            for (Tensor t : ad.parameters()) {  // B starts at zero: make every adapter change its projection
                t.copy_(torch.randn_like(t).mul(new org.bytedeco.pytorch.Scalar(0.5)));
            }
        }
        GenerationConfig greedy = GenerationConfig.greedy(12);
        List<Generator.Sample> base = Generator.generate(model, PROMPTS, greedy);
        for (LlamaModel.Attention att : LlamaModel.Attention.values()) {
            adapted.setAttention(att);
            List<Generator.Sample> cached = Generator.generate(adapted, PROMPTS, greedy);
            List<Generator.Sample> full = Generator.generateRecomputing(adapted, PROMPTS, greedy);
            boolean differs = false;
            for (int i = 0; i < PROMPTS.size(); i++) {
                assertArrayEquals(full.get(i).tokens(), cached.get(i).tokens(), att + " row " + i);
                differs |= !Arrays.equals(base.get(i).tokens(), cached.get(i).tokens());
            }
            assertTrue(differs, att + ": the adapters changed no generated token");
        }
    }

    @Test
    void anyOfSeveralEosIdsStopsASequence() {
        long[] free = Generator.generate(model, List.of(PROMPTS.get(0)), null, GenerationConfig.greedy(10)).get(0).tokens();
        // stop ids: one never produced, then the third greedy token: the row stops there
        long never = -5;
        Generator.Sample s = Generator.generate(model, List.of(PROMPTS.get(0)), GenerationConfig.greedy(10), never, free[2]).get(0);
        assertTrue(s.endedWithEos());
        int first = 0;                     // the first greedy position holding that token
        while (free[first] != free[2]) {
            first++;
        }
        assertArrayEquals(java.util.Arrays.copyOf(free, first), s.tokens());
    }

    @Test
    void pickRespectsTopKAndTopP() {
        float[] logits = {0f, 3f, 2f, 1f, -5f};
        Random rnd = new Random(1);
        int[] counts = new int[5];
        for (int i = 0; i < 4000; i++) {
            counts[Generator.pick(logits.clone(), new GenerationConfig(1.0, 2, 1.0, 1, 0), rnd)]++;
        }
        assertEquals(0, counts[0] + counts[3] + counts[4], "top-2 keeps ids 1 and 2");
        double expected = 1 / (1 + Math.exp(-1));  // p(1) / (p(1) + p(2))
        assertEquals(expected, counts[1] / 4000.0, 0.03);
        // top-p 0.7: p(1) = 0.64 < 0.7, so ids 1 and 2 are kept
        for (int i = 0; i < 200; i++) {
            int t = Generator.pick(logits.clone(), new GenerationConfig(1.0, 0, 0.7, 1, 0), rnd);
            assertTrue(t == 1 || t == 2);
        }
        assertNotEquals(-1, Generator.pick(logits.clone(), new GenerationConfig(0.5, 0, 1.0, 1, 0), rnd));
    }

    @Test
    void badSettingsAreRejected() {
        assertThrows(IllegalArgumentException.class, () -> new GenerationConfig(-1, 0, 1, 5, 0));
        assertThrows(IllegalArgumentException.class, () -> new GenerationConfig(1, -1, 1, 5, 0));
        assertThrows(IllegalArgumentException.class, () -> new GenerationConfig(1, 0, 0, 5, 0));
        assertThrows(IllegalArgumentException.class, () -> new GenerationConfig(1, 0, 1, 0, 0));
        assertThrows(IllegalArgumentException.class,
                () -> Generator.generate(model, List.of(new long[] {1, V}), null, GenerationConfig.greedy(2)));
    }

    @Test
    void promptPlusNewTokensMustFitTheModelsContext() {
        long[] long60 = new long[60];
        Arrays.fill(long60, 4);
        long60[0] = 1;
        // 60 + 5 > max_position_embeddings 64: refused before any forward, in both paths
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> Generator.generate(model, List.of(PROMPTS.get(0), long60), null, GenerationConfig.greedy(5)));
        assertTrue(e.getMessage().startsWith("prompt 1 has 60 tokens; with 5 new tokens that is 65 positions")
                && e.getMessage().contains("max_position_embeddings 64"), e.getMessage());
        assertThrows(IllegalArgumentException.class,
                () -> Generator.generateRecomputing(model, List.of(long60), GenerationConfig.greedy(5)));
        assertEquals(4, Generator.generate(model, List.of(long60), null, GenerationConfig.greedy(4)).get(0).tokens().length);
    }

    @Test
    void nonFiniteLogitsAreAnErrorNotEmptyCompletions() {
        ModelConfig c = model.config();
        LlamaModel nan = new LlamaModel(c);
        try (NoGradGuard ng = new NoGradGuard()) {
            nan.parameterList().get(0).fill_(new org.bytedeco.pytorch.Scalar(Double.NaN));
        }
        for (GenerationConfig g : List.of(GenerationConfig.greedy(3), new GenerationConfig(1.0, 5, 0.9, 3, 1))) {
            dev.spo4j.kernels.NonFiniteLogitsException e = assertThrows(dev.spo4j.kernels.NonFiniteLogitsException.class,
                    () -> Generator.generate(nan, PROMPTS, null, g));
            assertTrue(e.getMessage().startsWith("generation: prompt 0, new token 0: logit 0 is NaN"), e.getMessage());
            assertThrows(dev.spo4j.kernels.NonFiniteLogitsException.class,
                    () -> Generator.generateRecomputing(nan, PROMPTS, g));
        }
        float[] inf = new float[V];
        inf[3] = Float.POSITIVE_INFINITY;
        assertTrue(assertThrows(IllegalArgumentException.class, () -> Generator.requireFinite(inf, 2, 7)).getMessage()
                .contains("prompt 2, new token 7: logit 3 is Infinity"));
        float[] masked = new float[V];
        Arrays.fill(masked, Float.NEGATIVE_INFINITY);
        assertTrue(assertThrows(IllegalArgumentException.class, () -> Generator.requireFinite(masked, 0, 0)).getMessage()
                .contains("every logit is -inf"));
        masked[5] = 0;
        Generator.requireFinite(masked, 0, 0);  // -inf beside a finite logit is a masked token: fine
    }

    private static boolean contains(long[] a, int before, long v) {
        for (int k = 0; k < before; k++) {
            if (a[k] == v) {
                return true;
            }
        }
        return false;
    }

    /** Arg-max of the logits at the last position of an unpadded forward of {@code seq}. */
    private static long argMaxNext(long[] seq) {
        try (NoGradGuard ng = new NoGradGuard()) {
            Tensor ids = torch.empty(new long[] {1, seq.length}, new TensorOptions(torch.ScalarType.Long), null);
            ids.data_ptr_long().put(seq);
            Tensor logits = model.forward(ids, null).select(1, seq.length - 1).contiguous();
            float[] f = new float[V];
            logits.data_ptr_float().get(f);
            int best = 0;
            for (int v = 1; v < V; v++) {
                if (f[v] > f[best]) {
                    best = v;
                }
            }
            return best;
        }
    }
}
