package dev.spo4j.cli;

import dev.spo4j.train.EmbeddedDefault;
import dev.spo4j.train.TrainConfig;
import dev.spo4j.train.Trainer;
import java.nio.file.Path;
import java.time.LocalDateTime;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

@Command(name = "train", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Align a model with a preference loss. With no --model and --data: the embedded default,",
                "a tiny Llama-style model and a synthetic preference set ranked by a known gold reward (SPO)."})
final class TrainCommand implements Callable<Integer> {
    @picocli.CommandLine.Spec
    picocli.CommandLine.Model.CommandSpec spec;

    @Option(names = "--model", paramLabel = "DIR", description = "Hugging Face model folder (config.json, model.safetensors, tokenizer.json)")
    Path model;
    @Option(names = "--data", paramLabel = "FILE", description = "JSONL: prompt, chosen, rejected [, score_chosen, score_rejected, ref_chosen_logps, ref_rejected_logps]")
    Path data;
    @Option(names = "--eval-data", paramLabel = "FILE", description = "JSONL evaluated every --eval-every steps and at the end")
    Path evalData;
    @Option(names = "--ref-model", paramLabel = "DIR", description = "reference model (default: a frozen copy of the initial policy; precomputed ref_*_logps win)")
    Path refModel;
    @Option(names = "--out", paramLabel = "RUN_DIR", description = "run folder (default: runs/<loss>-<time>)")
    Path out;
    @Option(names = "--resume", paramLabel = "DIR", description = "continue a run from its newest checkpoint (or this checkpoint)")
    Path resume;

    @Option(names = "--loss", description = "spo | dpo | ipo | hinge (default: ${DEFAULT-VALUE})", defaultValue = "spo")
    String loss;
    @Option(names = "--beta", description = "KL weight beta (default: ${DEFAULT-VALUE})", defaultValue = "0.1")
    double beta;
    @Option(names = "--margin", description = "SPO target margin m0 for pairs without scores (default: ${DEFAULT-VALUE})", defaultValue = "1.0")
    double margin;
    @Option(names = "--reward-scale", description = "SPO gamma: m = gamma (score_chosen - score_rejected) (default: ${DEFAULT-VALUE})", defaultValue = "1.0")
    double rewardScale;
    @Option(names = "--label-smoothing", description = "DPO eps in [0, 0.5): cDPO (default: ${DEFAULT-VALUE})", defaultValue = "0")
    double labelSmoothing;
    @Option(names = "--length-normalised", arity = "1", paramLabel = "BOOL", description = "mean instead of summed token log-probs (default: true for ipo only)")
    Boolean lengthNormalised;
    @Option(names = "--sft-weight", description = "alpha of an added SFT term alpha * NLL(chosen) (default: ${DEFAULT-VALUE})", defaultValue = "0")
    double sftWeight;
    @Option(names = "--loss-impl", description = "fused (spo4j kernels) | libtorch (composite ops) (default: ${DEFAULT-VALUE})", defaultValue = "fused")
    String lossImpl;

    @Option(names = "--lr", description = "peak learning rate (default: 5e-6; 2e-3 for the embedded default)")
    Double lr;
    @Option(names = "--schedule", description = "cosine | linear | constant after warm-up (default: ${DEFAULT-VALUE})", defaultValue = "cosine")
    String schedule;
    @Option(names = "--warmup-steps", description = "warm-up steps (default: --warmup-ratio of the total)", defaultValue = "0")
    int warmupSteps;
    @Option(names = "--warmup-ratio", description = "(default: ${DEFAULT-VALUE})", defaultValue = "0.1")
    double warmupRatio;
    @Option(names = "--weight-decay", description = "AdamW weight decay (default: ${DEFAULT-VALUE})", defaultValue = "0")
    double weightDecay;
    @Option(names = "--max-grad-norm", description = "clip the global gradient norm; 0 = off (default: ${DEFAULT-VALUE})", defaultValue = "1.0")
    double maxGradNorm;
    @Option(names = "--batch-size", description = "pairs per micro-batch per process (default: 8; 16 for the embedded default); "
            + "a step's global batch is batch-size x processes x grad-accum")
    Integer batchSize;
    @Option(names = "--grad-accum", description = "micro-batches per optimiser step (default: ${DEFAULT-VALUE})", defaultValue = "1")
    int gradAccum;
    @Option(names = "--epochs", description = "(default: ${DEFAULT-VALUE})", defaultValue = "1")
    int epochs;
    @Option(names = "--max-steps", description = "optimiser steps; overrides --epochs (default: epochs; 600 for the embedded default)")
    Integer maxSteps;
    @Option(names = "--max-length", description = "tokens per sequence: the prompt is cut from the left first (default: ${DEFAULT-VALUE})", defaultValue = "512")
    int maxLength;
    @Option(names = "--seed", description = "(default: ${DEFAULT-VALUE})", defaultValue = "42")
    long seed;
    @Option(names = "--threads", description = "CPU threads for LibTorch and the kernels; 0 = LibTorch's default (default: ${DEFAULT-VALUE})", defaultValue = "0")
    int threads;
    @Option(names = "--device", description = "cpu | cuda | cuda:N (CUDA needs the -Pgpu build) (default: ${DEFAULT-VALUE})", defaultValue = "cpu")
    String device;
    @Option(names = "--log-every", description = "(default: ${DEFAULT-VALUE})", defaultValue = "1")
    int logEvery;
    @Option(names = "--eval-every", description = "steps between evaluations; 0 = at the end (default: 0; 50 for the embedded default)", defaultValue = "0")
    int evalEvery;
    @Option(names = "--checkpoint-every", description = "steps between checkpoints; 0 = at the end (default: ${DEFAULT-VALUE})", defaultValue = "0")
    int checkpointEvery;
    @Option(names = "--keep-checkpoints", description = "(default: ${DEFAULT-VALUE})", defaultValue = "2")
    int keepCheckpoints;
    @Option(names = "--nproc-per-node", paramLabel = "N", description = "data parallel: start N worker processes on this "
            + "machine (torchrun-style; for several machines set RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT instead) (default: 1)",
            defaultValue = "1")
    int nprocPerNode;
    @Option(names = "--dist-timeout", paramLabel = "SECONDS", description = "data parallel: how long a rank waits for its "
            + "peers (rendezvous and each collective) before the job fails (default: ${DEFAULT-VALUE})", defaultValue = "300")
    double distTimeout;
    @Option(names = "--verbose", description = "stack traces on errors")
    boolean verbose;

    @Override
    public Integer call() throws Exception {
        if (nprocPerNode < 1) {
            throw new IllegalArgumentException("--nproc-per-node = " + nprocPerNode + " (expected >= 1)");
        }
        if (nprocPerNode > 1) {
            if (System.getenv("WORLD_SIZE") != null) {
                throw new IllegalArgumentException("--nproc-per-node with WORLD_SIZE already set: either launch the "
                        + "workers yourself with RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT, or let --nproc-per-node do it");
            }
            return LocalLauncher.launch(nprocPerNode, workerArgs(), System.out, System.err);
        }
        LocalLauncher.exitWithLauncher();
        Trainer.Summary s;
        if (resume != null) {
            s = Trainer.resume(resume, maxSteps == null ? -1 : maxSteps, System.out);
        } else {
            TrainConfig c = new TrainConfig();
            c.model = model == null ? null : model.toString();
            c.data = data == null ? null : data.toString();
            c.evalData = evalData == null ? null : evalData.toString();
            c.refModel = refModel == null ? null : refModel.toString();
            c.loss = loss;
            c.beta = beta;
            c.margin = margin;
            c.rewardScale = rewardScale;
            c.labelSmoothing = labelSmoothing;
            c.lengthNormalised = lengthNormalised;
            c.sftWeight = sftWeight;
            c.lossImpl = lossImpl;
            c.schedule = schedule;
            c.warmupSteps = warmupSteps;
            c.warmupRatio = warmupRatio;
            c.weightDecay = weightDecay;
            c.maxGradNorm = maxGradNorm;
            c.gradAccum = gradAccum;
            c.epochs = epochs;
            c.maxLength = maxLength;
            c.seed = seed;
            c.threads = threads;
            c.device = device;
            c.logEvery = logEvery;
            c.evalEvery = evalEvery;
            c.checkpointEvery = checkpointEvery;
            c.keepCheckpoints = keepCheckpoints;
            c.distTimeout = distTimeout;
            if (lr != null) {
                c.lr = lr;
            }
            if (batchSize != null) {
                c.batchSize = batchSize;
            }
            if (maxSteps != null) {
                c.maxSteps = maxSteps;
            }
            if (model == null && data == null) {
                EmbeddedDefault.applyDefaults(c, lr != null, batchSize != null, maxSteps != null);
            }
            c.out = (out != null ? out : defaultOut()).toString();
            s = new Trainer(c, System.out).run();
        }
        if (System.getenv("RANK") == null || System.getenv("RANK").trim().equals("0")) {
            print(s);
        }
        return 0;
    }

    /** This command's arguments without --nproc-per-node, and with a fixed --out (every worker writes the same run). */
    private List<String> workerArgs() {
        List<String> args = new ArrayList<>(spec.commandLine().getParseResult().originalArgs());
        List<String> out = new ArrayList<>();
        for (int i = 0; i < args.size(); i++) {
            String a = args.get(i);
            if (a.equals("--nproc-per-node")) {
                i++;
            } else if (!a.startsWith("--nproc-per-node=")) {
                out.add(a);
            }
        }
        if (!out.contains("train")) {
            out.add(0, "train");
        }
        if (this.out == null && resume == null) {
            out.add("--out");
            out.add(defaultOut().toString());
        }
        return out;
    }

    private Path defaultOut() {
        return Path.of("runs", loss + "-" + LocalDateTime.now().format(DateTimeFormatter.ofPattern("yyyyMMdd-HHmmss")));
    }

    private static void print(Trainer.Summary s) {
        Map<String, Double> t = s.lastTrain(), e = s.eval();
        System.out.println();
        System.out.printf(Locale.ROOT, "done: %d steps in %.1f s (%.0f tokens/s)%n", s.steps(), s.seconds(), s.tokensPerSecond());
        System.out.printf(Locale.ROOT, "train (last step): loss %.4f  accuracy %.3f  margin %+.4f%n",
                t.getOrDefault("loss", Double.NaN), t.getOrDefault("rewards/accuracies", Double.NaN),
                t.getOrDefault("rewards/margins", Double.NaN));
        if (!e.isEmpty()) {
            System.out.printf(Locale.ROOT, "eval:              loss %.4f  accuracy %.3f  margin %+.4f%n",
                    e.getOrDefault("eval/loss", Double.NaN), e.getOrDefault("eval/rewards/accuracies", Double.NaN),
                    e.getOrDefault("eval/rewards/margins", Double.NaN));
        }
        System.out.println("run folder: " + s.runDir() + "  (metrics.jsonl, metrics.png, checkpoints/, final-model/)");
    }
}
