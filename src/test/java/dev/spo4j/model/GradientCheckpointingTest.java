package dev.spo4j.model;

import static dev.spo4j.kernels.Tensors.toDoubles;
import static dev.spo4j.testing.AllClose.assertAllClose;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.stream.Stream;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * {@link LlamaModel.Recomputed} (activation checkpointing) gives the gradients of a plain
 * forward and backward on the golden tiny models, padded batch, both attention paths, with
 * and without LoRA adapters (dropout masks replayed).
 * Run: {@code mvn -B -q test -Dspo4j.cuda=OFF -Dtest=GradientCheckpointingTest}
 */
class GradientCheckpointingTest {
    static Stream<Arguments> cases() {
        return Stream.of(
                Arguments.of("tiny-llama", LlamaModel.Attention.SDPA, false),
                Arguments.of("tiny-llama", LlamaModel.Attention.EAGER, false),
                Arguments.of("tiny-qwen2", LlamaModel.Attention.SDPA, false),
                Arguments.of("tiny-qwen2", LlamaModel.Attention.EAGER, false),
                Arguments.of("tiny-llama", LlamaModel.Attention.SDPA, true),
                Arguments.of("tiny-qwen2", LlamaModel.Attention.EAGER, true),
                Arguments.of("tiny-qwen3", LlamaModel.Attention.SDPA, false),
                Arguments.of("tiny-qwen3", LlamaModel.Attention.SDPA, true));
    }

    /** Gradients of sum(w * logits) for a fixed random w: by name, model parameters or adapters. */
    static Map<String, double[]> gradients(String fixture, LlamaModel.Attention att, boolean lora, boolean recompute)
            throws IOException {
        LlamaModel m = ModelFolder.load(Path.of("test-data", fixture)).setAttention(att);
        Map<String, Tensor> trained = m.stateDict();
        if (lora) {
            torch.manual_seed(3);
            LoraAdapters ad = LoraAdapters.create(m, new LoraConfig(4, 8, 0.25, LoraConfig.ALL_MODULES));
            LoraAdaptersTest.perturb(ad, 4);
            trained = ad.stateDict();
        }
        Map<String, Tensor> g = SafeTensors.read(Path.of("test-data", fixture, "expected_logits.safetensors"));
        Tensor ids = g.get("input_ids"), mask = g.get("attention_mask");  // the second row is right-padded
        torch.manual_seed(17);
        Tensor w = torch.randn(new long[] {ids.size(0), ids.size(1), m.config().vocabSize()});
        torch.manual_seed(99);  // the dropout masks' seed
        Tensor loss;
        if (recompute) {
            LlamaModel.Recomputed fw = m.forwardRecomputed(ids, mask);
            loss = fw.logits().mul(w).sum();
            LlamaModelTest.backward(loss, torch.ones_like(loss));
            fw.backward();
        } else {
            loss = m.forward(ids, mask).mul(w).sum();
            LlamaModelTest.backward(loss, torch.ones_like(loss));
        }
        Map<String, double[]> out = new LinkedHashMap<>();
        trained.forEach((k, v) -> out.put(k, toDoubles(v.grad())));
        out.put("next random draw", new double[] {torch.rand(new long[] {1}).item_double()});
        return out;
    }

    @ParameterizedTest(name = "{0} {1} lora={2}")
    @MethodSource("cases")
    void sameGradientsAsAPlainBackward(String fixture, LlamaModel.Attention att, boolean lora) throws IOException {
        Map<String, double[]> plain = gradients(fixture, att, lora, false);
        Map<String, double[]> recomputed = gradients(fixture, att, lora, true);
        assertEquals(plain.keySet(), recomputed.keySet());
        for (String k : plain.keySet()) {
            // the same fp32 operations on the same values; the tied embedding's two contributions
            // (head, lookup) may be summed in another order: fp32 rounding of O(1) gradients only
            assertAllClose(k, plain.get(k), recomputed.get(k), 1e-6, 1e-6);
        }
        assertTrue(plain.size() > 10);
    }

    @org.junit.jupiter.api.Test
    void backwardNeedsTheLossBackwardFirst() throws IOException {
        LlamaModel m = ModelFolder.load(Path.of("test-data", "tiny-llama"));
        LlamaModel.Recomputed fw = m.forwardRecomputed(LlamaModelTest.randomIds(1, 5, 61, 1), null);
        IllegalStateException e = assertThrows(IllegalStateException.class, fw::backward);
        assertTrue(e.getMessage().contains("run the loss's backward first"), e.getMessage());
    }
}
