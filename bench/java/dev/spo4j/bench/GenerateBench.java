package dev.spo4j.bench;

import dev.spo4j.generate.GenerationConfig;
import dev.spo4j.generate.Generator;
import dev.spo4j.model.LlamaModel;
import dev.spo4j.model.ModelConfig;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.bytedeco.pytorch.global.torch;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.Warmup;

/**
 * Greedy generation of {@code newTokens} tokens after a 32-token prompt, one row, on a
 * Llama-style model (hidden 256, 4 layers, V = 32768): with the KV cache ("cached": one query
 * per token against the cached keys) and without ("recomputing": a forward over the whole
 * prefix per token). tokens/s = newTokens / time. Both give the same tokens
 * ({@code GeneratorTest.kvCacheGivesTheRecomputedSamples}).
 */
@State(org.openjdk.jmh.annotations.Scope.Benchmark)
// A call is ~1-30 s: single invocations.
@BenchmarkMode(Mode.SingleShotTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Warmup(iterations = 1)
@Measurement(iterations = 3)
@Fork(1)
public class GenerateBench {
    @Param({"cached", "recomputing"})
    public String impl;

    @Param({"256"})
    public int newTokens;

    @Param({"1"})
    public int threads;

    LlamaModel model;
    List<long[]> prompt;
    GenerationConfig cfg;

    @Setup
    public void setUp() {
        torch.set_num_threads(threads);
        torch.manual_seed(5);
        model = new LlamaModel(ModelConfig.parse("""
                {"model_type": "llama", "vocab_size": 32768, "hidden_size": 256, "intermediate_size": 688,
                 "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
                 "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "max_position_embeddings": 512}
                """, "GenerateBench"));
        long[] p = new long[32];
        for (int i = 0; i < p.length; i++) {
            p[i] = 1 + 37L * i % 32000;
        }
        prompt = List.of(p);
        cfg = GenerationConfig.greedy(newTokens);
    }

    @Benchmark
    public Object generate() {
        return impl.equals("cached") ? Generator.generate(model, prompt, cfg)
                : Generator.generateRecomputing(model, prompt, cfg);
    }
}
