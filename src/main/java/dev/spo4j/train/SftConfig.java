package dev.spo4j.train;

import dev.spo4j.kernels.LmHeadLogProbs;
import dev.spo4j.loss.LmHead;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/**
 * Settings of a supervised fine-tuning run ({@link SftTrainer}): the defaults are the field
 * initialisers and each field is an {@code sft} option, as for {@link TrainConfig}; the
 * optimiser settings are the preference trainer's ({@link OptimizerConfig}) with SFT's
 * defaults (lr 1e-3, 5% warm-up).
 */
public final class SftConfig {
    /** Hugging Face model folder to fine-tune (weights and tokenizer). */
    @Option(names = "--model", required = true, paramLabel = "DIR", description = "Hugging Face model folder")
    public String model;
    /** JSONL file of prompt/completion records. */
    @Option(names = "--data", required = true, paramLabel = "FILE", description = "JSONL: prompt, completion")
    public String data;
    /** Run folder for final-model/, metrics.jsonl and metrics.png; null: runs/sft. */
    @Option(names = "--out", required = true, paramLabel = "RUN_DIR", description = "run folder: final-model/, metrics.jsonl, metrics.png")
    public String out;

    /** AdamW, clipping and the learning-rate schedule. */
    @Mixin
    public OptimizerConfig optim = OptimizerConfig.withDefaults(1e-3, 0.05);

    /** Examples per batch. */
    @Option(names = "--batch-size", description = "(default: ${DEFAULT-VALUE})")
    public int batchSize = 16;
    /** Passes over the data, unless {@link #maxSteps} is set. */
    @Option(names = "--epochs", description = "(default: ${DEFAULT-VALUE})")
    public int epochs = 1;
    /** Optimiser steps; overrides {@link #epochs} when &gt; 0 (-1: epochs). */
    @Option(names = "--max-steps", description = "overrides --epochs when > 0 (default: ${DEFAULT-VALUE})")
    public int maxSteps = -1;
    /** Tokens per row at most: the prompt is cut from the left first. */
    @Option(names = "--max-length", description = "(default: ${DEFAULT-VALUE})")
    public int maxLength = 512;
    /** Seed of LibTorch's generator and of the batch order. */
    @Option(names = "--seed", description = "(default: ${DEFAULT-VALUE})")
    public long seed = 42;
    /** LibTorch threads; 0 keeps LibTorch's default. */
    @Option(names = "--threads", description = "0 = LibTorch's default (default: ${DEFAULT-VALUE})")
    public int threads = 0;
    /** How the LM head meets the log-probs: fused (from the hidden states, in chunks) or the full logits. */
    @Option(names = "--lm-head", description = "fused (log-probs from the hidden states, one chunk of logits at a time) "
            + "| materialised (the model's full logits) (default: ${DEFAULT-VALUE})")
    public LmHead lmHead = LmHead.FUSED;
    /** The fused head's chunk budget in MiB of logits. */
    @Option(names = "--lm-head-chunk-mb", paramLabel = "MIB", description = "fused LM head: MiB of logits in flight "
            + "at most (default: ${DEFAULT-VALUE})")
    public int lmHeadChunkMb = (int) (LmHeadLogProbs.DEFAULT_CHUNK_BYTES >> 20);
    /** Steps between metric rows and console lines; the last step is always logged. */
    @Option(names = "--log-every", description = "(default: ${DEFAULT-VALUE})")
    public int logEvery = 10;

    /** LoRA rank; null: full fine-tuning. The run then writes final-adapter/ (PEFT layout) instead of final-model/. */
    @Option(names = "--lora-r", paramLabel = "R", description = "train LoRA adapters of rank R on a frozen base; writes "
            + "final-adapter/ (PEFT) (default: full fine-tuning)")
    public Integer loraR;
    /** LoRA alpha (update scale alpha / r). */
    @Option(names = "--lora-alpha", description = "(default: ${DEFAULT-VALUE})")
    public double loraAlpha = 16;
    /** Dropout on the adapters' inputs. */
    @Option(names = "--lora-dropout", description = "(default: ${DEFAULT-VALUE})")
    public double loraDropout = 0.0;
    /** Adapted projections. */
    @Option(names = "--lora-target-modules", split = ",", paramLabel = "M", description = "q,k,v,o,gate,up,down (default), "
            + "their _proj names, or all-linear")
    public java.util.List<String> loraTargetModules = new java.util.ArrayList<>(
            java.util.List.of("q", "k", "v", "o", "gate", "up", "down"));
    /** Weights and activations dtype (bf16 or fp32); null: fp32. */
    @Option(names = "--dtype", paramLabel = "DTYPE", description = "bf16 | fp32; full fine-tuning keeps fp32 masters and "
            + "AdamW state (default: fp32)")
    public String dtype;

    @Option(names = "--device", description = "cpu | cuda | cuda:N (CUDA needs the -Pgpu build) (default: ${DEFAULT-VALUE})")
    public String device = "cpu";

    /** dtype of final-model/: "auto" (the input model's torch_dtype), float32, bfloat16 or float16. */
    @Option(names = "--save-dtype", description = "dtype of final-model/ (full fine-tuning): auto (the input model's "
            + "torch_dtype), float32, bfloat16, float16 (default: ${DEFAULT-VALUE})")
    public String saveDtype = "auto";

    /** The LoRA settings, or null for full fine-tuning. */
    public dev.spo4j.model.LoraConfig loraConfig() {
        return loraR == null ? null : new dev.spo4j.model.LoraConfig(loraR, loraAlpha, loraDropout, loraTargetModules);
    }

    /** The precision ({@link #dtype}, fp32 by default); fp16 refused. */
    public dev.spo4j.model.Precision precision() {
        dev.spo4j.model.Precision p = dtype == null ? dev.spo4j.model.Precision.FP32 : dev.spo4j.model.Precision.parse(dtype);
        if (p == dev.spo4j.model.Precision.FP16) {
            throw new IllegalArgumentException("dtype fp16 needs loss scaling, which spo4j does not implement: "
                    + "use --dtype bf16 or fp32");
        }
        return p;
    }

    /** Throws IllegalArgumentException naming the first bad setting. */
    public void validate() {
        optim.validate();
        loraConfig();
        precision();
        if (saveDtype == null) {
            throw new IllegalArgumentException("--save-dtype is null (expected auto, float32, bfloat16 or float16)");
        }
        if (!saveDtype.equals("auto")) {
            dev.spo4j.model.ModelFolder.scalarType(saveDtype);  // names an unknown dtype
        }
        if (batchSize < 1 || epochs < 1 || maxLength < 2 || maxSteps == 0 || maxSteps < -1 || logEvery < 1
                || threads < 0 || lmHead == null || lmHeadChunkMb < 1) {
            throw new IllegalArgumentException("sft: batch size, epochs, log-every, LM head chunk MiB >= 1, "
                    + "max length >= 2, max steps > 0 or -1, threads >= 0 and an LM head are required");
        }
    }
}
