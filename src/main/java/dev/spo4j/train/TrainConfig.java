package dev.spo4j.train;

import com.google.gson.Gson;
import com.google.gson.GsonBuilder;
import dev.spo4j.kernels.LmHeadLogProbs;
import dev.spo4j.loss.LmHead;
import dev.spo4j.loss.LossImpl;
import dev.spo4j.loss.LossType;
import dev.spo4j.loss.PreferenceLossConfig;
import dev.spo4j.model.ModelConfig;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import org.bytedeco.pytorch.global.torch.ScalarType;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/**
 * Everything a preference training run needs, with TRL-like defaults; serialised into each
 * run folder and checkpoint so that {@code --resume} continues the same run. Null
 * model/data mean the embedded default (a tiny Llama-style model and a synthetic preference
 * set ranked by a known gold reward; {@link #embeddedDefault()}).
 *
 * <p>This is the one place where the run's settings and their defaults are defined: the field
 * initialisers are the defaults, the picocli annotations make each field a {@code train}
 * option (the command mixes this class in), and Java callers set the fields directly.
 * Settings objects like this one are mutable; the values handed to the objective and the
 * kernels ({@link PreferenceLossConfig}, {@link LrSchedule}) are immutable records built from
 * them.
 */
public final class TrainConfig {
    /** Hugging Face model folder; null, with {@link #data} null, for the embedded default. */
    @Option(names = "--model", paramLabel = "DIR", description = "Hugging Face model folder (config.json, model.safetensors, tokenizer.json)")
    public String model;
    /** JSONL preference pairs to train on; required with {@link #model}. */
    @Option(names = "--data", paramLabel = "FILE", description = "JSONL: prompt, chosen, rejected [, score_chosen, score_rejected, ref_chosen_logps, ref_rejected_logps]")
    public String data;
    /**
     * JSONL pairs evaluated every {@link #evalEvery} steps and at the end; null for none (the
     * embedded default brings its own).
     */
    @Option(names = "--eval-data", paramLabel = "FILE", description = "JSONL evaluated every --eval-every steps and at the end")
    public String evalData;
    /**
     * Reference model folder; null: a frozen copy of the initial policy. Precomputed
     * ref_*_logps in the data win over either.
     */
    @Option(names = "--ref-model", paramLabel = "DIR", description = "reference model (default: a frozen copy of the initial policy; precomputed ref_*_logps win)")
    public String refModel;
    /** Run folder; null: runs/spo4j (the {@code train} command fills in {@code runs/<loss>-<time>}). */
    @Option(names = "--out", paramLabel = "RUN_DIR", description = "run folder (default: runs/<loss>-<time>)")
    public String out;

    /** The preference loss. */
    @Option(names = "--loss", description = "${COMPLETION-CANDIDATES} (default: ${DEFAULT-VALUE}); TRL's loss_type "
            + "names are accepted (sigmoid = dpo, exo_pair = exo-pair, ...); simpo and cpo use no reference model; "
            + "spo-exp is a reconstruction of the asymmetric SPO of the paper's later version, not its exact formula; "
            + "formulas: src/site/markdown/LOSSES.md")
    public LossType loss = LossType.SPO;
    /** TRL's loss_type list with loss_weights: LOSS=W entries summed; empty: {@link #loss} alone. */
    @Option(names = "--loss-weights", split = ",", paramLabel = "LOSS=W", description = "a weighted sum of losses, "
            + "as TRL's loss_type list with loss_weights (e.g. dpo=1,bco-pair=0.5); replaces --loss")
    public List<String> lossWeights = new ArrayList<>();
    /** discopop's temperature. */
    @Option(names = "--discopop-tau", description = "discopop: temperature tau of the log-ratio modulation (default: ${DEFAULT-VALUE})")
    public double discopopTau = PreferenceLossConfig.DEFAULT_DISCOPOP_TAU;
    /** simpo's target reward margin. */
    @Option(names = "--simpo-gamma", description = "simpo: target reward margin gamma (default: ${DEFAULT-VALUE})")
    public double simpoGamma = PreferenceLossConfig.DEFAULT_SIMPO_GAMMA;
    /** KL weight beta. */
    @Option(names = "--beta", description = "KL weight beta (default: ${DEFAULT-VALUE})")
    public double beta = PreferenceLossConfig.DEFAULT_BETA;
    /** SPO's target margin m0 for pairs without scores. */
    @Option(names = "--margin", description = "target margin m0 for pairs without scores (spo, soft-dpo, spo-exp) (default: ${DEFAULT-VALUE})")
    public double margin = PreferenceLossConfig.DEFAULT_MARGIN;
    /** SPO's gamma: m = gamma (score_chosen - score_rejected). */
    @Option(names = "--reward-scale", description = "gamma: m = gamma (score_chosen - score_rejected); soft-dpo's label is sigmoid(m) (default: ${DEFAULT-VALUE})")
    public double rewardScale = PreferenceLossConfig.DEFAULT_REWARD_SCALE;
    /** DPO's label smoothing eps in [0, 0.5); above 0 it is cDPO. */
    @Option(names = "--label-smoothing", description = "eps in [0, 0.5): cDPO for dpo; also robust, exo-pair, aot, aot-pair, simpo, cpo (default: ${DEFAULT-VALUE})")
    public double labelSmoothing = 0.0;
    /** spo-exp's floor on |m|. */
    @Option(names = "--margin-floor", description = "spo-exp: |m| is raised to at least this (default: ${DEFAULT-VALUE})")
    public double marginFloor = PreferenceLossConfig.DEFAULT_MARGIN_FLOOR;
    /** null: the loss's default (IPO yes, others no). */
    @Option(names = "--length-normalised", arity = "1", paramLabel = "BOOL", description = "mean instead of summed token log-probs (default: true for ipo and simpo only)")
    public Boolean lengthNormalised;
    /** alpha of an added SFT term alpha * NLL(chosen); 0 for none. */
    @Option(names = "--sft-weight", description = "alpha of an added SFT term alpha * NLL(chosen) (default: ${DEFAULT-VALUE})")
    public double sftWeight = 0.0;
    /** How the loss is computed: spo4j's fused kernels or LibTorch's composite ops. */
    @Option(names = "--loss-impl", description = "fused (spo4j kernels) | libtorch (composite ops) (default: ${DEFAULT-VALUE})")
    public LossImpl lossImpl = LossImpl.FUSED;
    /** How the LM head meets the log-probs: fused (from the hidden states, in chunks) or the full logits. */
    @Option(names = "--lm-head", description = "fused (log-probs from the hidden states, one chunk of logits at a time) "
            + "| materialised (the model's full logits) (default: ${DEFAULT-VALUE})")
    public LmHead lmHead = LmHead.FUSED;
    /** The fused head's chunk budget in MiB of logits. */
    @Option(names = "--lm-head-chunk-mb", paramLabel = "MIB", description = "fused LM head: MiB of logits in flight "
            + "at most (default: ${DEFAULT-VALUE})")
    public int lmHeadChunkMb = (int) (LmHeadLogProbs.DEFAULT_CHUNK_BYTES >> 20);

    /** AdamW, clipping and the learning-rate schedule. */
    @Mixin
    public OptimizerConfig optim = new OptimizerConfig();

    /** LoRA rank; null: full fine-tuning (every parameter trained). */
    @Option(names = "--lora-r", paramLabel = "R", description = "train low-rank adapters of rank R on a frozen base (PEFT's LoRA); "
            + "the reference is the base with the adapters off (default: full fine-tuning)")
    public Integer loraR;
    /** LoRA alpha: the adapters' update is scaled by alpha / r. */
    @Option(names = "--lora-alpha", description = "LoRA update scale alpha / r (default: ${DEFAULT-VALUE})")
    public double loraAlpha = 16;
    /** Dropout on the adapters' inputs while training. */
    @Option(names = "--lora-dropout", description = "dropout on the adapters' inputs in training (default: ${DEFAULT-VALUE})")
    public double loraDropout = 0.0;
    /** The adapted projections (q, k, v, o, gate, up, down; or PEFT's q_proj, ...; or all-linear). */
    @Option(names = "--lora-target-modules", split = ",", paramLabel = "M", description = "adapted projections, comma-separated: "
            + "q,k,v,o,gate,up,down or their _proj names, or all-linear (default: all seven)")
    public java.util.List<String> loraTargetModules = new java.util.ArrayList<>(
            java.util.List.of("q", "k", "v", "o", "gate", "up", "down"));
    /** A PEFT LoRA adapter folder to continue training (its adapter_config.json sets r, alpha, dropout, modules). */
    @Option(names = "--adapter", paramLabel = "DIR", description = "continue training this PEFT LoRA adapter (e.g. an SFT "
            + "adapter); its adapter_config.json sets the LoRA settings")
    public String adapter;

    /** Weights and activations dtype: bf16, fp16 (refused) or fp32; null: fp32 on the CPU, the checkpoint's torch_dtype on CUDA. */
    @Option(names = "--dtype", paramLabel = "DTYPE", description = "bf16 | fp32 weights and activations; trained weights keep "
            + "an fp32 master copy and fp32 AdamW state (default: fp32 on the CPU, the checkpoint's torch_dtype on CUDA)")
    public String dtype;

    /** Activation checkpointing: keep each decoder layer's input only and recompute the layer in the backward. */
    @Option(names = "--gradient-checkpointing", description = "keep only each decoder layer's input and recompute the "
            + "layer in the backward: activation memory of one layer instead of all, about one more forward of time")
    public boolean gradientCheckpointing;

    /** Pairs per micro-batch per process (TRL's per_device_train_batch_size): a step's global batch is batchSize x WORLD_SIZE x gradAccum. */
    @Option(names = "--batch-size", description = "pairs per micro-batch per process; a step's global batch is batch-size x processes x grad-accum (default: ${DEFAULT-VALUE})")
    public int batchSize = 8;
    /** Micro-batches per optimiser step. */
    @Option(names = "--grad-accum", description = "micro-batches per optimiser step (default: ${DEFAULT-VALUE})")
    public int gradAccum = 1;
    /** Passes over the training pairs, unless {@link #maxSteps} is set. */
    @Option(names = "--epochs", description = "(default: ${DEFAULT-VALUE})")
    public int epochs = 1;
    /** Optimiser steps; overrides {@link #epochs} when &gt; 0 (-1: epochs). */
    @Option(names = "--max-steps", description = "optimiser steps; overrides --epochs when > 0 (default: ${DEFAULT-VALUE})")
    public int maxSteps = -1;
    /** Tokens per sequence at most: the prompt is cut from the left first. */
    @Option(names = "--max-length", description = "tokens per sequence: the prompt is cut from the left first (default: ${DEFAULT-VALUE})")
    public int maxLength = 512;
    /** dtype of final-model/: "auto" (the input model's torch_dtype), float32, bfloat16 or float16. */
    @Option(names = "--save-dtype", description = "dtype of final-model/: auto (the input model's torch_dtype), float32, "
            + "bfloat16, float16; checkpoints keep the training precision (default: ${DEFAULT-VALUE})")
    public String saveDtype = "auto";
    /** TRL's max_prompt_length: prompt tokens kept (by {@link #truncationMode}); 0 = no limit. */
    @Option(names = "--max-prompt-length", description = "prompt tokens kept, by --truncation-mode; 0 = no limit (default: ${DEFAULT-VALUE})")
    public int maxPromptLength = 0;
    /** TRL's max_completion_length: completion tokens kept (its start); 0 = no limit. */
    @Option(names = "--max-completion-length", description = "completion tokens kept (the first ones); 0 = no limit (default: ${DEFAULT-VALUE})")
    public int maxCompletionLength = 0;
    /** TRL's truncation_mode for the prompt: keep_end (its last tokens) or keep_start. */
    @Option(names = "--truncation-mode", description = "keep_end | keep_start: which end of a long prompt stays (default: ${DEFAULT-VALUE})")
    public String truncationMode = "keep_end";
    /** Seed of LibTorch's generator, the batch order and the embedded default's model and data. */
    @Option(names = "--seed", description = "(default: ${DEFAULT-VALUE})")
    public long seed = 42;
    /** CPU threads for LibTorch and the kernels; 0 keeps LibTorch's default. */
    @Option(names = "--threads", description = "CPU threads for LibTorch and the kernels; 0 = LibTorch's default (default: ${DEFAULT-VALUE})")
    public int threads = 0;
    /** "cpu", "cuda" or "cuda:N". */
    @Option(names = "--device", description = "cpu | cuda | cuda:N (CUDA needs the -Pgpu build) (default: ${DEFAULT-VALUE})")
    public String device = "cpu";

    /** Data parallel: seconds a rank waits for its peers (rendezvous, each collective) before the job fails. */
    @Option(names = "--dist-timeout", paramLabel = "SECONDS", description = "data parallel: how long a rank waits for its "
            + "peers (rendezvous and each collective) before the job fails (default: ${DEFAULT-VALUE})")
    public double distTimeout = 300;
    /** Processes that trained this run (set by the trainer from WORLD_SIZE; a resume must use as many). */
    public int worldSize = 1;

    /** Steps between rows of metrics.jsonl; the last step is always logged. */
    @Option(names = "--log-every", description = "(default: ${DEFAULT-VALUE})")
    public int logEvery = 1;
    /** Steps between evaluations; 0: only at the end. */
    @Option(names = "--eval-every", description = "steps between evaluations; 0 = at the end (default: ${DEFAULT-VALUE})")
    public int evalEvery = 0;
    /** Batches of the eval data evaluated (the first ones); 0: all of them. */
    @Option(names = "--eval-batches", description = "evaluate the first N batches of the eval data; 0 = all (default: ${DEFAULT-VALUE})")
    public int evalBatches = 0;
    /** Steps between checkpoints; 0: only at the end. */
    @Option(names = "--checkpoint-every", description = "steps between checkpoints; 0 = at the end (default: ${DEFAULT-VALUE})")
    public int checkpointEvery = 0;
    /** Checkpoints kept in the run folder, the newest ones. */
    @Option(names = "--keep-checkpoints", description = "(default: ${DEFAULT-VALUE})")
    public int keepCheckpoints = 2;

    private static final Gson GSON = new GsonBuilder().setPrettyPrinting().serializeNulls().create();

    /**
     * The embedded default's settings (what {@code train} does without --model and --data): a
     * tiny randomly initialised model learns at a higher rate than a pretrained one, so lr 2e-3,
     * 16 pairs a batch, 600 steps, an evaluation every 50.
     */
    public static TrainConfig embeddedDefault() {
        TrainConfig c = new TrainConfig();
        c.optim.lr = 2e-3;
        c.batchSize = 16;
        c.maxSteps = 600;
        c.evalEvery = 50;
        return c;
    }

    /** Whether this run trains LoRA adapters ({@link #loraR} or {@link #adapter} set). */
    public boolean lora() {
        return loraR != null || adapter != null;
    }

    /**
     * The LoRA settings of the options, or of the {@link #adapter}'s adapter_config.json; null
     * for full fine-tuning. IllegalArgumentException for bad values.
     */
    public dev.spo4j.model.LoraConfig loraConfig() {
        if (adapter != null) {
            if (loraR != null) {
                throw new IllegalArgumentException("--lora-r " + loraR + " with --adapter " + adapter
                        + ": the adapter's adapter_config.json sets the rank; give one of them");
            }
            try {
                return dev.spo4j.model.LoraAdapters.readConfig(java.nio.file.Path.of(adapter));
            } catch (java.io.IOException e) {
                throw new java.io.UncheckedIOException("cannot read the adapter " + adapter, e);
            }
        }
        return loraR == null ? null : new dev.spo4j.model.LoraConfig(loraR, loraAlpha, loraDropout, loraTargetModules);
    }

    /**
     * The run's precision: {@link #dtype}, or by default fp32 on the CPU and the model
     * folder's torch_dtype on CUDA. fp16 is refused (it needs loss scaling, not implemented).
     */
    public dev.spo4j.model.Precision precision(boolean cuda, java.nio.file.Path modelDir) {
        dev.spo4j.model.Precision p;
        try {
            p = dtype != null ? dev.spo4j.model.Precision.parse(dtype)
                    : cuda && modelDir != null ? dev.spo4j.model.Precision.ofFolder(modelDir) : dev.spo4j.model.Precision.FP32;
        } catch (java.io.IOException e) {
            throw new java.io.UncheckedIOException("cannot read the torch_dtype of " + modelDir, e);
        }
        if (p == dev.spo4j.model.Precision.FP16) {
            throw new IllegalArgumentException("dtype fp16" + (dtype == null ? " (the checkpoint's torch_dtype)" : "")
                    + " needs loss scaling, which spo4j does not implement: use --dtype bf16 (same memory, fp32's "
                    + "exponent range) or --dtype fp32");
        }
        return p;
    }

    /** The fused LM head's chunk budget in bytes. */
    public long lmHeadChunkBytes() {
        return (long) lmHeadChunkMb << 20;
    }

    /**
     * Which regime the fused LM head takes in a training step for this loss, model, dtype and
     * budget, in words: the single pass over chunks of whole pairs when the loss is a sum over
     * pairs and a pair of {@code --max-length} tokens fits a chunk, else the recompute regime
     * (for all batches, or for those padded beyond the longest length that fits).
     *
     * @param headTrained whether the head weight gets a gradient (not under LoRA)
     */
    public String headRegime(ModelConfig mc, ScalarType dtype, boolean headTrained) {
        long mib = lmHeadChunkBytes() >> 20;
        if (!lossConfig().pairSeparable()) {
            return "fused LM head in its recompute regime (" + lossLabel() + " couples the pairs of a batch), "
                    + mib + " MiB chunks";
        }
        LmHeadLogProbs head = new LmHeadLogProbs(lmHeadChunkBytes(), 1);
        long rows = head.singlePassRows(mc.vocabSize(), mc.hiddenSize(), dtype, headTrained);
        if (rows < 2) {
            return "fused LM head in its recompute regime (two rows of logits exceed the " + mib
                    + " MiB chunks beside the weight gradient's, --lm-head-chunk-mb)";
        }
        if (rows / 2 >= maxLength) {
            long pairs = rows / (2L * maxLength);
            if (!head.groupsFit(2L * batchSize * maxLength, 2L * maxLength, mc.vocabSize(), mc.hiddenSize(), dtype,
                    headTrained)) {
                return "fused LM head in its recompute regime (a batch of " + batchSize + " pairs would take more "
                        + "chunk x weight-gradient products than a pass allows at " + mib + " MiB, --lm-head-chunk-mb)";
            }
            return String.format(Locale.ROOT, "fused LM head: single pass over chunks of whole pairs (%d pair%s of "
                    + "--max-length %d token%s per %d MiB chunk)", pairs, pairs == 1 ? "" : "s", maxLength,
                    maxLength == 1 ? "" : "s", mib);
        }
        return String.format(Locale.ROOT, "fused LM head: single pass over chunks of whole pairs for "
                + "batches padded to at most %d tokens, recompute regime beyond (%d MiB chunks, --lm-head-chunk-mb)",
                rows / 2, mib);
    }

    /** A device name of the form train, sft, logps and generate take: cpu, cuda or cuda:N. */
    static void requireDeviceName(String device) {
        if (device == null || !device.matches("cpu|cuda(:\\d+)?")) {
            throw new IllegalArgumentException("device '" + device + "' (expected cpu, cuda or cuda:N)");
        }
    }

    /** The loss settings as the objective takes them. */
    public PreferenceLossConfig lossConfig() {
        List<PreferenceLossConfig.WeightedLoss> mix = PreferenceLossConfig.parseWeights(lossWeights);
        PreferenceLossConfig c = PreferenceLossConfig.of(mix.isEmpty() ? loss : mix.get(0).type()).withBeta(beta)
                .withMargin(margin).withRewardScale(rewardScale).withLabelSmoothing(labelSmoothing);
        c = c.withMarginFloor(marginFloor).withDiscopopTau(discopopTau).withSimpoGamma(simpoGamma).withMix(mix);
        return lengthNormalised == null ? c : c.withLengthNormalised(lengthNormalised);
    }

    /** The loss's name for labels and folder names: its id, or the weighted terms ("dpo+bco-pair"). */
    public String lossLabel() {
        List<PreferenceLossConfig.WeightedLoss> mix = PreferenceLossConfig.parseWeights(lossWeights);
        if (mix.isEmpty()) {
            return loss.id();
        }
        StringBuilder b = new StringBuilder();
        for (PreferenceLossConfig.WeightedLoss w : mix) {
            b.append(b.length() == 0 ? "" : "+").append(w.type().id());
        }
        return b.toString();
    }

    /** Throws IllegalArgumentException naming the first bad setting. */
    public void validate() {
        if (loss == null || lossImpl == null || lmHead == null) {
            throw new IllegalArgumentException("loss, loss implementation and LM head must be set (e.g. spo, fused, "
                    + "fused)");
        }
        positive("LM head chunk MiB", lmHeadChunkMb);
        PreferenceLossConfig lc = lossConfig();
        if (refModel != null && !lc.needsReference()) {
            throw new IllegalArgumentException("--ref-model " + refModel + " does not apply: the " + lossLabel()
                    + " loss is reference-free (it runs no reference model)");
        }
        requireApplies(lc);
        optim.validate();
        if (adapter != null && !java.nio.file.Files.isDirectory(java.nio.file.Path.of(adapter))) {
            throw new IllegalArgumentException("adapter folder " + adapter + " does not exist");
        }
        loraConfig();
        if (dtype != null) {
            precision(false, null);  // names an unknown dtype; refuses fp16
        }
        positive("batch size", batchSize);
        positive("gradient accumulation", gradAccum);
        positive("epochs", epochs);
        validateLengths();
        if (saveDtype != null && !saveDtype.equals("auto")) {
            dev.spo4j.model.ModelFolder.scalarType(saveDtype);
        }
        if (maxSteps == 0 || maxSteps < -1) {
            throw new IllegalArgumentException("max steps = " + maxSteps + " (expected > 0, or -1 for epochs)");
        }
        if (!(sftWeight >= 0 && Double.isFinite(sftWeight))) {
            throw new IllegalArgumentException("sft weight = " + sftWeight + " (expected a finite value >= 0)");
        }
        requireDeviceName(device);
        if (!(distTimeout > 0 && Double.isFinite(distTimeout))) {
            throw new IllegalArgumentException("dist timeout = " + distTimeout + " s (expected a finite value > 0)");
        }
        if (threads < 0 || keepCheckpoints < 1 || logEvery < 1 || evalEvery < 0 || evalBatches < 0
                || checkpointEvery < 0) {
            throw new IllegalArgumentException("threads >= 0, keep-checkpoints >= 1, log-every >= 1, "
                    + "eval-every >= 0, eval-batches >= 0 and checkpoint-every >= 0 are required");
        }
    }

    /**
     * A loss option set away from its default for a loss (or mix of losses) that does not read it
     * is refused by name: it would be ignored silently.
     */
    private void requireApplies(PreferenceLossConfig lc) {
        List<LossType> types = new java.util.ArrayList<>();
        for (PreferenceLossConfig.WeightedLoss w : lc.mix()) {
            types.add(w.type());
        }
        if (types.isEmpty()) {
            types.add(lc.type());
        }
        notApplied("--label-smoothing", labelSmoothing, 0.0, types, LossType::usesLabelSmoothing);
        notApplied("--margin", margin, PreferenceLossConfig.DEFAULT_MARGIN, types, LossType::usesMargin);
        notApplied("--reward-scale", rewardScale, PreferenceLossConfig.DEFAULT_REWARD_SCALE, types, LossType::usesMargin);
        notApplied("--margin-floor", marginFloor, PreferenceLossConfig.DEFAULT_MARGIN_FLOOR, types,
                t -> t == LossType.SPO_EXP);
        notApplied("--discopop-tau", discopopTau, PreferenceLossConfig.DEFAULT_DISCOPOP_TAU, types,
                t -> t == LossType.DISCOPOP);
        notApplied("--simpo-gamma", simpoGamma, PreferenceLossConfig.DEFAULT_SIMPO_GAMMA, types,
                t -> t == LossType.SIMPO);
    }

    private void notApplied(String option, double value, double unset, List<LossType> types,
                            java.util.function.Predicate<LossType> reads) {
        if (value == unset || types.stream().anyMatch(reads)) {
            return;
        }
        StringBuilder users = new StringBuilder();
        for (LossType t : LossType.values()) {
            if (reads.test(t)) {
                users.append(users.length() == 0 ? "" : ", ").append(t.id());
            }
        }
        throw new IllegalArgumentException(option + " " + value + " does not apply: the " + lossLabel()
                + " loss does not use it (it applies to " + users + ")");
    }

    static void positive(String name, int v) {
        if (v < 1) {
            throw new IllegalArgumentException(name + " = " + v + " (expected >= 1)");
        }
    }

    /** The settings as pretty-printed JSON (the run folder's config.json). */
    /**
     * Checks {@link #maxLength}, {@link #maxPromptLength}, {@link #maxCompletionLength} and
     * {@link #truncationMode}: the settings of {@link #collator} (part of {@link #validate}).
     */
    public void validateLengths() {
        if (maxLength < 2) {
            throw new IllegalArgumentException("max length = " + maxLength + " (expected >= 2)");
        }
        if (maxPromptLength < 0 || maxCompletionLength < 0) {
            throw new IllegalArgumentException("max prompt length = " + maxPromptLength + ", max completion length = "
                    + maxCompletionLength + " (expected >= 0, 0 = no limit)");
        }
        dev.spo4j.data.TokenRule.PromptTruncation.parse(truncationMode == null ? "null" : truncationMode);
    }

    /**
     * The collator {@code train} tokenizes pairs with, for the model in {@code modelDir}: the
     * token rule for {@code templated} (chat-template rendered) or plain-text pairs, the length
     * limits and truncation mode of these settings, and token ids checked against the vocabulary
     * size and context length (max_position_embeddings) of the folder's config.json.
     * {@code logps} and {@code tokenize} use the same one.
     */
    public dev.spo4j.data.PreferenceCollator collator(dev.spo4j.data.TextTokenizer tokenizer, java.nio.file.Path modelDir,
                                                      boolean templated) throws java.io.IOException {
        dev.spo4j.model.ModelConfig mc = dev.spo4j.model.ModelConfig.read(modelDir.resolve(dev.spo4j.model.ModelFolder.CONFIG));
        // every row is checked against the vocabulary and the model's context before the first forward
        return new dev.spo4j.data.PreferenceCollator(tokenizer, maxLength, mc.vocabSize()).withLimits(limits(templated))
                .withMaxPositions(mc.maxPositionEmbeddings());
    }

    /** The collator's limits from {@link #maxPromptLength}, {@link #maxCompletionLength}, {@link #truncationMode}. */
    public dev.spo4j.data.PreferenceCollator.Limits limits(boolean templated) {
        return new dev.spo4j.data.PreferenceCollator.Limits(templated, maxPromptLength, maxCompletionLength,
                dev.spo4j.data.TokenRule.PromptTruncation.parse(truncationMode == null ? "keep_end" : truncationMode));
    }

    public String toJson() {
        return GSON.toJson(this);
    }

    /** The inverse of {@link #toJson()}. */
    public static TrainConfig fromJson(String json) {
        return GSON.fromJson(json, TrainConfig.class);
    }

    /** A deep copy. */
    public TrainConfig copy() {
        return fromJson(toJson());
    }
}
