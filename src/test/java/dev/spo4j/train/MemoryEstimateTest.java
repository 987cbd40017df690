package dev.spo4j.train;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.spo4j.loss.LmHead;
import dev.spo4j.model.LlamaModel;
import dev.spo4j.model.LoraAdapters;
import dev.spo4j.model.LoraConfig;
import dev.spo4j.model.ModelConfig;
import dev.spo4j.model.ModelFolder;
import dev.spo4j.model.Precision;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Path;
import java.util.Map;
import org.junit.jupiter.api.Test;

/**
 * {@link MemoryEstimate}: its parameter counts are the real models' (built and counted), the
 * parts follow the options (bf16 halves weights, LoRA removes the full gradients and moments,
 * checkpointing shrinks activations), and {@code train --dry-run} prints the table.
 * Run: {@code mvn -B -q test -Dspo4j.cuda=OFF -Dtest=MemoryEstimateTest}
 */
class MemoryEstimateTest {
    @Test
    void parameterCountsAreTheBuiltModels() throws IOException {
        for (String fixture : new String[] {"tiny-llama", "tiny-qwen2"}) {
            LlamaModel m = ModelFolder.load(Path.of("test-data", fixture));
            assertEquals(m.parameterCount(), MemoryEstimate.parameters(m.config()), fixture);
            LoraConfig lora = new LoraConfig(3, 6, 0, LoraConfig.ALL_MODULES);
            assertEquals(LoraAdapters.create(m, lora).parameterCount(), MemoryEstimate.adapterParameters(m.config(), lora),
                    fixture + " adapters");
        }
        // Qwen2.5-0.5B: 494,032,768 parameters (its model card's 0.49B)
        ModelConfig qwen = ModelConfig.read(Path.of("bench", "configs", "qwen2.5-0.5b", "config.json"));
        assertEquals(494_032_768L, MemoryEstimate.parameters(qwen));
    }

    @Test
    void partsFollowTheOptions() throws IOException {
        ModelConfig c = ModelConfig.read(Path.of("bench", "configs", "qwen2.5-7b", "config.json"));
        long p = MemoryEstimate.parameters(c);
        Map<String, Long> fp32 = MemoryEstimate.of(c, Precision.FP32, null, false, 4, 2048).parts();
        assertEquals(4 * p, fp32.get("weights"));
        assertEquals(4 * p, fp32.get("gradients"));
        assertEquals(8 * p, fp32.get("optimiser"));
        assertEquals(0L, fp32.get("master copy"));
        Map<String, Long> bf16 = MemoryEstimate.of(c, Precision.BF16, null, false, 4, 2048).parts();
        assertEquals(2 * p, bf16.get("weights"));
        assertEquals(4 * p, bf16.get("master copy"));
        assertEquals(6 * p, bf16.get("gradients"));
        assertEquals(fp32.get("activations") / 2 + 4L * 2 * 4 * 2048 * c.numHiddenLayers() * 3 * c.hiddenSize() / 2,
                bf16.get("activations"), "bf16 halves all but the fp32 norm temporaries");
        LoraConfig lora = new LoraConfig(16, 32, 0, LoraConfig.ALL_MODULES);
        MemoryEstimate l = MemoryEstimate.of(c, Precision.BF16, lora, false, 4, 2048);
        MemoryEstimate lc = MemoryEstimate.of(c, Precision.BF16, lora, true, 4, 2048);
        long a = MemoryEstimate.adapterParameters(c, lora);
        assertEquals(4 * a, l.parts().get("gradients"));
        assertEquals(8 * a, l.parts().get("optimiser"));
        assertEquals(0L, l.parts().get("master copy"));
        assertTrue(lc.parts().get("activations") * 5 < l.parts().get("activations"), "checkpointing keeps ~1/L of them");
        assertTrue(lc.total() < 80L << 30, "Qwen2.5-7B, bf16 + LoRA + checkpointing, 4 pairs x 2048: fits 80 GB");
        assertTrue(MemoryEstimate.of(c, Precision.FP32, null, false, 4, 2048).total() > 80L << 30,
                "the fp32 full fine-tune does not");
    }

    /**
     * With checkpointing the recompute covers one row group (~2048 tokens): more pairs add only
     * their layer inputs; replayed LoRA dropout masks make the whole batch one group.
     */
    @Test
    void checkpointingRecomputesOneRowGroup() throws IOException {
        ModelConfig c = ModelConfig.read(Path.of("bench", "configs", "qwen2.5-0.5b", "config.json"));
        LoraConfig lora = new LoraConfig(16, 16, 0, LoraConfig.ALL_MODULES);
        long two = MemoryEstimate.of(c, Precision.BF16, lora, true, 2, 1024).parts().get("activations");
        long eight = MemoryEstimate.of(c, Precision.BF16, lora, true, 8, 1024).parts().get("activations");
        long inputsPerPair = 2L * 1024 * c.numHiddenLayers() * c.hiddenSize() * 2;  // bf16 layer inputs of 2 sequences
        assertEquals(6 * inputsPerPair, eight - two, "6 more pairs: only their layer inputs");
        LoraConfig dropout = new LoraConfig(16, 16, 0.05, LoraConfig.ALL_MODULES);
        long replayed = MemoryEstimate.of(c, Precision.BF16, dropout, true, 8, 1024).parts().get("activations");
        assertTrue(replayed > 3 * eight, "dropout replay recomputes all 16 sequences at once: " + replayed + " vs " + eight);
        // short sequences: the group holds whole rows, at most the batch
        long shortSeq = MemoryEstimate.of(c, Precision.BF16, lora, true, 2, 64).parts().get("activations");
        assertEquals(shortSeq, MemoryEstimate.of(c, Precision.BF16, dropout, true, 2, 64).parts().get("activations"),
                "a batch smaller than one group is one group either way");
    }

    /** The runtime allowance: the process around the model on the CPU, device-memory slack on CUDA. */
    @Test
    void runtimeDependsOnTheDevice() throws IOException {
        ModelConfig c = ModelConfig.read(Path.of("bench", "configs", "qwen2.5-0.5b", "config.json"));
        long cpu = MemoryEstimate.of(c, Precision.BF16, null, true, 4, 1024, LmHead.FUSED, 256L << 20, false).parts()
                .get("runtime");
        long cuda = MemoryEstimate.of(c, Precision.BF16, null, true, 4, 1024, LmHead.FUSED, 256L << 20, true).parts()
                .get("runtime");
        assertEquals(MemoryEstimate.RUNTIME_CPU, cpu);
        assertEquals(MemoryEstimate.RUNTIME_CUDA, cuda);
        assertTrue(cpu > cuda);
    }

    /** The fused LM head keeps two chunks of fp32 logits, [N] lse and log-probs, fp32 dL/dh, and a bf16 head's fp32 dW. */
    @Test
    void fusedHeadKeepsChunksInsteadOfTheLogits() throws IOException {
        ModelConfig c = ModelConfig.read(Path.of("bench", "configs", "qwen2.5-7b", "config.json"));
        LoraConfig lora = new LoraConfig(16, 32, 0, LoraConfig.ALL_MODULES);
        long n = 2L * 4 * 2048, chunk = 256L << 20, h = c.hiddenSize(), v = c.vocabSize();
        MemoryEstimate mat = MemoryEstimate.of(c, Precision.BF16, lora, true, 4, 2048);
        MemoryEstimate fused = MemoryEstimate.of(c, Precision.BF16, lora, true, 4, 2048, LmHead.FUSED, chunk);
        assertEquals(n * v * 2, mat.parts().get("LM head"), "the bf16 logits, their gradient written over them");
        assertEquals(2 * chunk + 2 * n * 4 + n * h * 4, fused.parts().get("LM head"));
        assertEquals(mat.total() - mat.parts().get("LM head"), fused.total() - fused.parts().get("LM head"),
                "only the LM head part changes");
        Map<String, Long> full = MemoryEstimate.of(c, Precision.BF16, null, true, 4, 2048, LmHead.FUSED, chunk).parts();
        assertEquals(2 * chunk + 2 * n * 4 + n * h * 4 + v * h * 4, full.get("LM head"), "a trained bf16 head's fp32 dW");
        // a batch whose logits are smaller than the budget keeps no more than its logits
        Map<String, Long> tiny = MemoryEstimate.of(c, Precision.FP32, lora, false, 1, 4, LmHead.FUSED, chunk).parts();
        assertEquals(2 * (2L * 4 * v * 4) + 2 * 8 * 4 + 8 * h * 4, tiny.get("LM head"));
    }

    @Test
    void dryRunPrintsTheTable() {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        PrintStream old = System.out;
        System.setOut(new PrintStream(out));
        int code;
        try {
            code = dev.spo4j.cli.Main.run("train", "--dry-run", "--model", "bench/configs/qwen2.5-0.5b",
                    "--dtype", "bf16", "--lora-r", "16", "--gradient-checkpointing", "--batch-size", "4",
                    "--max-length", "1024");
        } finally {
            System.setOut(old);
        }
        assertEquals(0, code, out.toString());
        String s = out.toString();
        for (String part : new String[] {"weights", "master copy", "adapters", "gradients", "optimiser", "activations",
            "LM head", "total", "resident memory of the process",
            "bfloat16, LoRA r 16, activation checkpointing, fused LM head, 4 pairs x 1024 tokens",
            // 256 MiB hold 883 rows of 151936 bf16 logits: pairs of up to 441 tokens
            "fused LM head: single pass over chunks of whole pairs for batches padded to at most 441 tokens"}) {
            assertTrue(s.contains(part), part + " missing from:\n" + s);
        }
    }

    /**
     * The regime line (train's start and --dry-run) at Qwen2.5-0.5B's head, V = 151936, H = 896:
     * a pair-separable loss whose pairs fit a chunk, one whose pairs do not (then the longest
     * padded length that does), a loss that couples the pairs, and a budget too small for two
     * rows beside a bf16 weight gradient's product slice.
     */
    @Test
    void headRegimeSaysWhichPassAStepTakes() throws IOException {
        ModelConfig c = ModelConfig.read(Path.of("bench/configs/qwen2.5-0.5b").resolve(ModelFolder.CONFIG));
        org.bytedeco.pytorch.global.torch.ScalarType bf16 = Precision.BF16.scalarType();
        // 256 MiB / (151936 x 2 B) = 883 rows: one pair of 256 tokens (512 rows), pairs of <= 441 tokens
        assertEquals("fused LM head: single pass over chunks of whole pairs (1 pair of --max-length 256 tokens per "
                + "256 MiB chunk)", config("--max-length", "256").headRegime(c, bf16, false));
        assertEquals("fused LM head: single pass over chunks of whole pairs (3 pairs of --max-length 128 tokens per "
                + "256 MiB chunk)", config("--max-length", "128").headRegime(c, bf16, false));
        assertEquals("fused LM head: single pass over chunks of whole pairs for batches padded to at most 441 tokens, "
                + "recompute regime beyond (256 MiB chunks, --lm-head-chunk-mb)",
                config("--max-length", "1024").headRegime(c, bf16, false));
        assertEquals("fused LM head in its recompute regime (bco-pair couples the pairs of a batch), 256 MiB chunks",
                config("--loss", "bco-pair").headRegime(c, bf16, false));
        // 1 MiB: 73 rows of the trained head's bf16 dW product slice (130816 B) leave 917760 B, 3 rows
        // of logits (a pair of 1 token); fp32 rows of 607744 B: 1 row, no pair
        assertEquals("fused LM head: single pass over chunks of whole pairs (1 pair of --max-length 1 token per 1 MiB "
                + "chunk)", config("--lm-head-chunk-mb", "1", "--max-length", "1").headRegime(c, bf16, true));
        // chunks of one pair (2 rows) by 2082 dW slices of 73 rows: 8 pairs (the default batch) take 8 x 2082
        // products, 64 pairs 64 x 2082 = 133248, over a pass's limit of 65536 (LmHeadLogProbs.MAX_CALLS)
        assertEquals("fused LM head in its recompute regime (a batch of 64 pairs would take more chunk x "
                + "weight-gradient products than a pass allows at 1 MiB, --lm-head-chunk-mb)", config(
                "--lm-head-chunk-mb", "1", "--max-length", "1", "--batch-size", "64").headRegime(c, bf16, true));
        assertEquals("fused LM head in its recompute regime (two rows of logits exceed the 1 MiB chunks beside the "
                + "weight gradient's, --lm-head-chunk-mb)", config("--lm-head-chunk-mb", "1").headRegime(c,
                Precision.FP32.scalarType(), true));
    }

    private static TrainConfig config(String... args) {
        TrainConfig t = new TrainConfig();
        new picocli.CommandLine(t).registerConverter(dev.spo4j.loss.LossType.class, dev.spo4j.loss.LossType::parse)
                .parseArgs(args);
        return t;
    }
}
