package dev.spo4j.bench;

import dev.spo4j.loss.LmHead;
import dev.spo4j.loss.LossImpl;
import dev.spo4j.loss.LossType;
import dev.spo4j.loss.PreferenceLossConfig;
import dev.spo4j.loss.PreferenceObjective;
import dev.spo4j.model.LlamaModel;
import dev.spo4j.model.ModelConfig;
import dev.spo4j.train.Optimizers;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.AdamW;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.TensorVector;
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
 * One whole SPO training step (policy forward of [2B, T], preference objective, backward
 * through the model, clipping, AdamW) on a Llama-style model with V = 32768, where the
 * logits dominate memory: the fused objective ("fused") against LibTorch's composite
 * ("libtorch", --loss-impl libtorch), each with the fused LM head (lmHead = fused: hidden
 * states in, chunks of logits) or the model's materialised logits (lmHead = materialised).
 * {@code model = qwen2.5-2l} is a 2-layer Qwen2.5-0.5B-shaped model (hidden 896, V = 151936,
 * tied head), for {@code -p model=qwen2.5-2l -p vocab=151936 -p seqLen=512}; {@code headMb} is the
 * fused head's chunk budget (which decides its regime, see the field). Tokens/step =
 * 2 B T; the report turns times into tokens/s and measures each path's peak resident memory.
 */
@State(org.openjdk.jmh.annotations.Scope.Benchmark)
// A step is ~0.1-1 s: single invocations, median in the report.
@BenchmarkMode(Mode.SingleShotTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Warmup(iterations = 3)
@Measurement(iterations = 8)
@Fork(1)
public class TrainStepBench {
    @Param({"fused", "libtorch"})
    public String impl;

    @Param({"fused", "materialised"})
    public String lmHead;

    @Param({"llama256"})
    public String model;

    @Param({"32768"})
    public int vocab;

    @Param({"4"})
    public int pairs;

    @Param({"256"})
    public int seqLen;

    @Param({"2"})
    public int threads;

    /**
     * The fused head's chunk budget in MiB: at 256 (the default) a qwen2.5-2l pair of 2 x 512
     * rows (622 MB of fp32 logits) does not fit and the step takes the recompute regime; at
     * 1024 it takes the single pass over chunks of whole pairs.
     */
    @Param({"256"})
    public int headMb;

    Step step;

    /** The model, optimiser and a fixed random batch; also used by BenchReport for memory. */
    static final class Step {
        final LlamaModel model;
        final TensorVector params;
        final AdamW optimizer;
        final PreferenceObjective objective;
        final Tensor ids, mask, targets, refChosen, refRejected;
        final boolean fusedHead;

        Step(String impl, String lmHead, String shape, int vocab, int pairs, int seqLen, int threads, int headMb) {
            torch.set_num_threads(threads);
            torch.manual_seed(11);
            fusedHead = LmHead.parse(lmHead) == LmHead.FUSED;
            String json = switch (shape) {
                case "llama256" -> """
                    {"model_type": "llama", "vocab_size": %d, "hidden_size": 256, "intermediate_size": 688,
                     "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
                     "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "max_position_embeddings": %d}
                    """;
                case "qwen2.5-2l" -> """
                    {"model_type": "qwen2", "vocab_size": %d, "hidden_size": 896, "intermediate_size": 4864,
                     "num_hidden_layers": 2, "num_attention_heads": 14, "num_key_value_heads": 2,
                     "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "max_position_embeddings": %d,
                     "tie_word_embeddings": true}
                    """;
                default -> throw new IllegalArgumentException("model " + shape + " (expected llama256 or qwen2.5-2l)");
            };
            model = new LlamaModel(ModelConfig.parse(json.formatted(vocab, seqLen), "TrainStepBench"));
            params = new TensorVector(model.parameterList().toArray(new Tensor[0]));
            optimizer = Optimizers.adamW(params, 1e-5, 0.9, 0.999, 1e-8, 0.0);
            objective = new PreferenceObjective(PreferenceLossConfig.of(LossType.SPO), LossImpl.parse(impl), 0, threads,
                    (long) headMb << 20);
            int rows = 2 * pairs;
            long[] id = new long[rows * seqLen], tg = new long[rows * seqLen];
            Random rnd = new Random(5);
            for (int r = 0; r < rows; r++) {
                int prompt = seqLen / 4;
                for (int t = 0; t < seqLen; t++) {
                    id[r * seqLen + t] = rnd.nextInt(vocab);
                }
                for (int t = 0; t < seqLen; t++) {
                    tg[r * seqLen + t] = t >= prompt - 1 && t < seqLen - 1 ? id[r * seqLen + t + 1] : -100;
                }
            }
            ids = longs(id, rows, seqLen);
            targets = longs(tg, rows, seqLen);
            mask = torch.ones(new long[] {rows, seqLen}, new TensorOptions(torch.ScalarType.Long));
            refChosen = torch.full(new long[] {pairs}, new org.bytedeco.pytorch.Scalar(-2000.0));
            refRejected = torch.full(new long[] {pairs}, new org.bytedeco.pytorch.Scalar(-2000.0));
        }

        static Tensor longs(long[] v, long... shape) {
            Tensor t = torch.empty(shape, new TensorOptions(torch.ScalarType.Long), null);
            t.data_ptr_long().put(v);
            return t;
        }

        double run() {
            try (PointerScope scope = new PointerScope()) {
                optimizer.zero_grad(true);
                PreferenceObjective.Inputs in = fusedHead
                        ? PreferenceObjective.Inputs.ofHidden(model.hiddenStates(ids, mask), model.headWeight(),
                                targets, refChosen, refRejected)
                        : PreferenceObjective.Inputs.of(model.forward(ids, mask), targets, refChosen, refRejected);
                PreferenceObjective.Result r = objective.compute(in);
                r.backward();
                torch.clip_grad_norm_(params, 1.0);
                optimizer.step();
                return r.loss();
            }
        }
    }

    @Setup
    public void setUp() {
        step = new Step(impl, lmHead, model, vocab, pairs, seqLen, threads, headMb);
    }

    @Benchmark
    public double trainStep() {
        return step.run();
    }
}
