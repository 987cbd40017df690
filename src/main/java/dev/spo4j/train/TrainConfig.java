package dev.spo4j.train;

import com.google.gson.Gson;
import com.google.gson.GsonBuilder;
import dev.spo4j.loss.LossImpl;
import dev.spo4j.loss.LossType;
import dev.spo4j.loss.PreferenceLossConfig;
import java.util.ArrayList;
import java.util.List;
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

    /** AdamW, clipping and the learning-rate schedule. */
    @Mixin
    public OptimizerConfig optim = new OptimizerConfig();

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
        if (loss == null || lossImpl == null) {
            throw new IllegalArgumentException("loss and loss implementation must be set (e.g. spo, fused)");
        }
        PreferenceLossConfig lc = lossConfig();
        if (refModel != null && !lc.needsReference()) {
            throw new IllegalArgumentException("--ref-model " + refModel + " does not apply: the " + lossLabel()
                    + " loss is reference-free (it runs no reference model)");
        }
        requireApplies(lc);
        optim.validate();
        positive("batch size", batchSize);
        positive("gradient accumulation", gradAccum);
        positive("epochs", epochs);
        if (maxLength < 2) {
            throw new IllegalArgumentException("max length = " + maxLength + " (expected >= 2)");
        }
        if (maxPromptLength < 0 || maxCompletionLength < 0) {
            throw new IllegalArgumentException("max prompt length = " + maxPromptLength + ", max completion length = "
                    + maxCompletionLength + " (expected >= 0, 0 = no limit)");
        }
        if (saveDtype != null && !saveDtype.equals("auto")) {
            dev.spo4j.model.ModelFolder.scalarType(saveDtype);
        }
        dev.spo4j.data.TokenRule.PromptTruncation.parse(truncationMode == null ? "null" : truncationMode);
        if (maxSteps == 0 || maxSteps < -1) {
            throw new IllegalArgumentException("max steps = " + maxSteps + " (expected > 0, or -1 for epochs)");
        }
        if (!(sftWeight >= 0 && Double.isFinite(sftWeight))) {
            throw new IllegalArgumentException("sft weight = " + sftWeight + " (expected a finite value >= 0)");
        }
        if (device == null || !device.matches("cpu|cuda(:\\d+)?")) {
            throw new IllegalArgumentException("device '" + device + "' (expected cpu, cuda or cuda:N)");
        }
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
