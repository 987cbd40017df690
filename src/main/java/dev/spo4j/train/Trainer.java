package dev.spo4j.train;

import dev.spo4j.data.Batches;
import dev.spo4j.data.ChatTemplate;
import dev.spo4j.data.PreferenceFormats;
import dev.spo4j.data.TokenizedPair;
import dev.spo4j.data.PreferenceBatch;
import dev.spo4j.data.PreferenceCollator;
import dev.spo4j.data.PreferenceDataset;
import dev.spo4j.data.PreferencePair;
import dev.spo4j.data.TextTokenizer;
import dev.spo4j.io.AtomicFiles;
import dev.spo4j.kernels.CudaKernels;
import dev.spo4j.kernels.NonFiniteLogitsException;
import dev.spo4j.kernels.Tensors;
import dev.spo4j.loss.LmHead;
import dev.spo4j.loss.LossImpl;
import dev.spo4j.loss.MetricSums;
import dev.spo4j.loss.PreferenceObjective;
import dev.spo4j.model.LlamaModel;
import dev.spo4j.model.LoraAdapters;
import dev.spo4j.model.LoraConfig;
import dev.spo4j.model.ModelConfig;
import dev.spo4j.model.ModelFolder;
import dev.spo4j.model.Precision;
import dev.spo4j.report.MetricsLog;
import dev.spo4j.report.MetricsPlot;
import dev.spo4j.report.ProgressBar;
import dev.spo4j.synthetic.EmbeddedDefault;
import dev.spo4j.train.dist.DataParallel;
import dev.spo4j.train.dist.DistributedEnv;
import dev.spo4j.train.dist.MetricReduction;
import dev.spo4j.train.dist.ParameterHashes;
import dev.spo4j.train.dist.Shard;
import java.io.IOException;
import java.io.OutputStream;
import java.io.PrintStream;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.AdamW;
import org.bytedeco.pytorch.Device;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch_cuda;

/**
 * Preference training of a Llama-family model ({@code src/site/markdown/DESIGN.md}, "one
 * training step"): for each optimiser step, {@code gradAccum} micro-batches of B pairs, each
 * one forward of [2B, T] through the policy, {@link PreferenceObjective} (fused kernels or
 * LibTorch's composite) and a backward; then the data-parallel gradient average, clipping,
 * AdamW and the learning-rate schedule; then logging, evaluation and checkpoints.
 *
 * <p>Reference log-probs come from the data set's precomputed fields when every pair has
 * them, else from {@code refModel}, else from a frozen copy of the initial policy; they are
 * computed once, before the first step, and stored in the run folder
 * ({@link ReferenceLogProbs}). A run folder holds config.json, reference_logps.json,
 * metrics.jsonl, metrics.png, checkpoints/ and final-model/ (Hugging Face layout). On the
 * CPU, with the same thread count, a resumed run repeats an uninterrupted one exactly.
 *
 * <p>Data parallel (WORLD_SIZE &gt; 1): each rank trains on its {@link Shard} of every global
 * batch, gradients and metrics are summed over ranks ({@link DataParallel},
 * {@link MetricReduction}), and only rank 0 prints and writes the run folder.
 */
public final class Trainer {
    private final TrainConfig cfg;
    private final PrintStream console;
    private final DistributedEnv dist;
    private StepListener listener;
    private boolean overwrite;
    /** Whether this run got as far as its first optimiser step (its folder then holds a run worth keeping). */
    private volatile boolean stepped;

    /** Steps in a row with a non-finite loss or gradient norm after which a run stops. */
    public static final int MAX_NONFINITE_IN_A_ROW = 5;
    /** Whether the training texts were rendered by the model's chat template (conversational data). */
    private boolean templated;
    private String dataFormat = "standard";

    /** A trainer for this process's place in a job: torchrun's environment, or a single process. */
    public Trainer(TrainConfig config, PrintStream console) {
        this(config, console, DistributedEnv.fromEnvironment());
    }

    /** {@code dist}: this process's rank in a data-parallel job; only rank 0 prints and writes the run folder. */
    public Trainer(TrainConfig config, PrintStream console, DistributedEnv dist) {
        this.cfg = config.copy();
        this.dist = dist;
        this.console = dist.rank() == 0 ? console : new PrintStream(OutputStream.nullOutputStream());
    }

    /** Lets a new run replace an earlier run in its folder (--overwrite); otherwise a non-empty folder is refused. */
    public Trainer withOverwrite(boolean overwrite) {
        this.overwrite = overwrite;
        return this;
    }

    /** Calls {@code l} after every optimiser step (see {@link StepListener}); null for none. */
    public Trainer withListener(StepListener l) {
        this.listener = l;
        return this;
    }

    /**
     * How a run ended.
     *
     * @param runDir          the run folder
     * @param finalModel      its final-model folder
     * @param steps           optimiser steps done
     * @param lastTrain       the last step's metrics
     * @param eval            the last evaluation's metrics (empty without eval data)
     * @param seconds         wall time of the whole run
     * @param tokensPerSecond tokens over the training steps' time
     */
    public record Summary(Path runDir, Path finalModel, int steps, Map<String, Double> lastTrain,
                          Map<String, Double> eval, double seconds, double tokensPerSecond) {}

    /** Continues the run whose checkpoint (or run folder) is {@code dir}; {@code maxSteps} &gt; 0 overrides the end. */
    public static Summary resume(Path dir, int maxSteps, PrintStream console) {
        Path checkpoint = Checkpoints.resolve(dir, console);
        Checkpoints.State state = Checkpoints.readState(checkpoint);
        TrainConfig c = Checkpoints.config(checkpoint, state);
        // the run folder is where the checkpoint is now, not where the run was started (it may have moved)
        Path parent = checkpoint.toAbsolutePath().getParent();
        if (parent != null && parent.getFileName() != null && parent.getFileName().toString().equals("checkpoints")) {
            c.out = parent.getParent().toString();
        }
        if (maxSteps > 0) {
            c.maxSteps = maxSteps;
        }
        DistributedEnv env = DistributedEnv.fromEnvironment();
        int written = Math.max(1, c.worldSize);
        if (written != env.worldSize()) {
            throw new IllegalArgumentException("the checkpoint " + checkpoint + " was written by " + written
                    + " process(es) and this run has WORLD_SIZE " + env.worldSize() + ": resume with the same world size"
                    + (written > 1 ? " (e.g. train --nproc-per-node " + written + " --resume ...)" : ""));
        }
        return new Trainer(c, console, env).run(checkpoint, state);
    }

    /** Runs the configured training from the start. */
    public Summary run() {
        return run(null, null);
    }

    private Summary run(Path checkpoint, Checkpoints.State resumed) {
        // Everything the user gave is checked before the run folder is created.
        cfg.validate();
        if (cfg.model != null && !Files.isDirectory(Path.of(cfg.model))) {
            throw new IllegalArgumentException("model folder " + cfg.model + " does not exist");
        }
        if (cfg.model != null && cfg.data == null) {
            throw new IllegalArgumentException("--data is required with --model (or give neither for the embedded default)");
        }
        if (cfg.adapter != null && cfg.model != null) {  // an adapter for another base fails here, not after loading
            try {
                LoraAdapters.checkFits(ModelConfig.read(Path.of(cfg.model).resolve(ModelFolder.CONFIG)),
                        Path.of(cfg.adapter));
            } catch (IOException e) {
                throw new UncheckedIOException("cannot read " + cfg.adapter + " or " + cfg.model, e);
            }
        }
        // TRL's dataset formats; conversational records are rendered by the model's chat template here,
        // so that a bad record (or a template that raises) stops the run before its folder exists
        ChatTemplate template = cfg.model == null ? null : ChatTemplate.forModel(Path.of(cfg.model));
        PreferenceFormats.Loaded trainData = cfg.data == null ? null : PreferenceFormats.read(Path.of(cfg.data), template);
        PreferenceFormats.Loaded evalData = cfg.evalData == null ? null
                : PreferenceFormats.read(Path.of(cfg.evalData), template);
        if (trainData != null && evalData != null && trainData.templated() != evalData.templated()) {
            throw new IllegalArgumentException(cfg.evalData + " is " + evalData.format() + " but " + cfg.data + " is "
                    + trainData.format() + " (expected both conversational or both standard)");
        }
        templated = trainData != null && trainData.templated();
        dataFormat = trainData == null ? "standard" : trainData.format();
        if (trainData != null && dist.rank() == 0) {
            console.println("spo4j: " + cfg.data + ": " + trainData.pairs().size() + " pairs, " + trainData.format()
                    + (templated ? ", rendered with the model's chat template" : ""));
        }
        List<PreferencePair> train = trainData == null ? null : trainData.pairs();
        List<PreferencePair> eval = evalData == null ? null : evalData.pairs();
        cfg.worldSize = dist.worldSize();
        if (checkpoint == null) {  // inputs by absolute path: a resume may start in another working folder
            cfg.model = absolute(cfg.model);
            cfg.data = absolute(cfg.data);
            cfg.evalData = absolute(cfg.evalData);
            cfg.refModel = absolute(cfg.refModel);
        }
        if (dist.isDistributed() && cfg.device.startsWith("cuda:")) {  // one GPU for every rank: NCCL refuses it
            throw new IllegalArgumentException("--device " + cfg.device + " with " + dist.worldSize() + " processes "
                    + "(expected --device cuda: each rank takes cuda:LOCAL_RANK)");
        }
        Device device = device(dist.isDistributed() && cfg.device.equals("cuda") ? "cuda:" + dist.localRank() : cfg.device);
        int threads = threadCount(cfg, console);
        dev.spo4j.kernels.OpenMp.setThreads(threads);
        if (cfg.out != null && cfg.out.isBlank()) {
            throw new IllegalArgumentException("--out '" + cfg.out + "' is empty (expected a folder for the run)");
        }
        Path runDir = Path.of(cfg.out == null ? "runs/spo4j" : cfg.out).toAbsolutePath();
        Map<String, String> fingerprint = RunFolder.fingerprint(cfg);
        boolean created = false;
        if (dist.rank() == 0) {
            if (checkpoint == null) {
                created = RunFolder.claim(runDir, overwrite);
            } else {
                RunFolder.check(runDir, fingerprint);
            }
        }
        DataParallel dp = null;
        try {
            Files.createDirectories(runDir);
            if (dist.rank() == 0 && checkpoint == null) {
                AtomicFiles.writeString(runDir.resolve("config.json"), cfg.toJson());
                RunFolder.record(runDir, fingerprint);
            }
            if (dist.isDistributed()) {
                dp = new DataParallel(dist, (long) (cfg.distTimeout * 1000), device);
            }
            return new Run(runDir, threads, device, dp).train(checkpoint, resumed, train, eval);
        } catch (IOException e) {
            removeIfUnused(created, runDir);
            throw new UncheckedIOException(e);
        } catch (RuntimeException | Error e) {
            removeIfUnused(created, runDir);
            throw e;
        } finally {
            if (dp != null) {
                dp.close();
            }
        }
    }

    /** Models narrower than this train on one thread by default: more threads only wait on each other. */
    static final int ONE_THREAD_BELOW_HIDDEN = 512;

    /**
     * The threads a run uses: --threads, at most the CPUs this process may use (affinity and
     * cgroup quota, as the JVM sees them); by default (0) those CPUs, or one for a narrow model
     * (the embedded default's hidden size is 128), whose per-op work is too small to split.
     */
    static int threadCount(TrainConfig cfg, PrintStream console) {
        int cpus = Math.max(1, Runtime.getRuntime().availableProcessors());
        if (cfg.threads > cpus) {
            console.printf(Locale.ROOT, "spo4j: warning: --threads %d is more than the %d CPU(s) this process may use; "
                    + "using %d%n", cfg.threads, cpus, cpus);
            return cpus;
        }
        if (cfg.threads > 0) {
            return cfg.threads;
        }
        int hidden = 128;  // the embedded default
        if (cfg.model != null) {
            try {
                hidden = ModelConfig.read(Path.of(cfg.model).resolve(ModelFolder.CONFIG)).hiddenSize();
            } catch (IOException | RuntimeException e) {
                hidden = Integer.MAX_VALUE;  // the model's own load reports the problem
            }
        }
        return hidden < ONE_THREAD_BELOW_HIDDEN ? 1 : cpus;
    }

    /** A run that failed before its first step leaves no folder behind when it created the folder. */
    private void removeIfUnused(boolean created, Path runDir) {
        if (created && !stepped) {
            try {
                AtomicFiles.deleteTree(runDir);
            } catch (IOException | RuntimeException ignored) {
                // the failure being reported matters more than the leftover folder
            }
        }
    }

    private static String absolute(String path) {
        return path == null ? null : Path.of(path).toAbsolutePath().normalize().toString();
    }

    /**
     * The device {@code name} names (cpu, cuda, cuda:N), checked: a GPU needs LibTorch's CUDA and
     * spo4j's CUDA kernels (IllegalArgumentException otherwise); cuda:N becomes this thread's
     * current device.
     */
    public static Device device(String name) {
        TrainConfig.requireDeviceName(name);
        if (name.startsWith("cuda")) {
            if (!torch.cuda_is_available()) {
                throw new IllegalArgumentException("--device " + name + ": LibTorch has no usable CUDA here "
                        + "(build with -Pgpu on a host with a GPU and the CUDA libraries)");
            }
            CudaKernels.require();
            Device d = new Device(name);
            if (d.has_index()) {
                long count = torch.cuda_device_count();
                if (d.index() >= count) {
                    throw new IllegalArgumentException("device " + name + ": no such GPU (expected an index below "
                            + "the " + count + " visible to LibTorch; a data-parallel rank takes cuda:LOCAL_RANK)");
                }
                // This thread's current device, as torch.cuda.set_device(local_rank) does in a
                // PyTorch data-parallel rank: LibTorch's guards and spo4j's kernels then never switch
                // devices, and no rank of a run makes a CUDA context on GPU 0 by switching back to it.
                torch_cuda.set_device(d.index());
            }
            return d;
        }
        return new Device(name);
    }

    /** One run's state: where it writes, what it trains on, and the data-parallel group (null in one process). */
    private final class Run {
        final Path runDir;
        final int threads;
        final Device device;
        final DataParallel dp;
        final int rank, world;
        PreferenceCollator collator;
        PreferenceObjective objective;
        LlamaModel policy;
        /** A LoRA run's adapters (the only trained tensors), else null. */
        LoraAdapters adapters;
        /** The run's weights and activations dtype. */
        Precision precision;
        /** Mixed-precision full fine-tuning's fp32 masters and low-precision working copy, else null. */
        MasterWeights mixed;
        /** The trained tensors (fp32: adapters, masters or the model's own parameters). */
        List<Tensor> params;
        /** The tensors autograd writes gradients into ({@link #params}, or the working copy's). */
        List<Tensor> gradParams;
        TensorVector paramVector;
        AdamW optimizer;
        List<PreferencePair> train;
        double[][][] refs;
        Batches<Integer> batches;
        /** Optimiser steps done, and the data position: the next global batch is batch {@code index} of {@code epoch}. */
        int step, epoch, index;
        double tokens, trainSeconds;
        /** Steps skipped for a non-finite loss or gradient norm: in all, and in a row up to now. */
        int skipped, skippedInARow;

        Run(Path runDir, int threads, Device device, DataParallel dp) {
            this.runDir = runDir;
            this.threads = threads;
            this.device = device;
            this.dp = dp;
            this.rank = dist.rank();
            this.world = dist.worldSize();
        }

        Summary train(Path checkpoint, Checkpoints.State resumed, List<PreferencePair> trainPairs,
                      List<PreferencePair> eval) throws IOException {
            long t0 = System.nanoTime();
            Path modelDir;
            if (cfg.model == null) {
                // rank 0 writes the embedded model first; the others then find it (one machine) or write the same one
                if (dp != null && rank != 0) {
                    dp.barrier("waiting for rank 0 to write the embedded model");
                }
                EmbeddedDefault.Prepared d = EmbeddedDefault.prepare(runDir.resolve("embedded"), cfg.seed);
                if (dp != null && rank == 0) {
                    dp.barrier("waiting for the ranks after writing the embedded model");
                }
                modelDir = d.modelDir();
                trainPairs = trainPairs == null ? d.train() : trainPairs;
                eval = eval == null ? d.eval() : eval;
            } else {
                modelDir = Path.of(cfg.model);
            }
            train = trainPairs;
            eval = eval == null ? List.of() : eval;
            if (checkpoint != null && resumed.step >= totalSteps(train.size())) {
                // before anything is loaded or printed: nothing is left to do
                throw new IllegalArgumentException("the run in " + runDir + " already finished: its checkpoint "
                        + checkpoint.getFileName() + " is at step " + resumed.step + " of " + totalSteps(train.size())
                        + "; give --max-steps above " + resumed.step + " to train it further");
            }
            try (TextTokenizer tokenizer = TextTokenizer.load(modelDir)) {
                // token ids checked against the model's vocabulary when tokenized, so that the
                // loss kernels can skip their own (synchronising, on CUDA) target check
                collator = cfg.collator(tokenizer, modelDir, templated);
                // every pair must fit before the first step: fail early, name the line
                long cut = collator.tokenizeAll(train).stream().filter(TokenizedPair::truncated).count();
                if (cut > 0 && rank == 0) {
                    console.printf(Locale.ROOT, "spo4j: %d of %d training pairs truncated (max length %d, max prompt "
                            + "length %d, max completion length %d, %s)%n", cut, train.size(), cfg.maxLength,
                            cfg.maxPromptLength, cfg.maxCompletionLength, cfg.truncationMode);
                }
                if (rank == 0) {   // the data facts beside config.json: format, pairs, how many were truncated
                    com.google.gson.JsonObject facts = new com.google.gson.JsonObject();
                    facts.addProperty("format", dataFormat);
                    facts.addProperty("templated", templated);
                    facts.addProperty("pairs", train.size());
                    facts.addProperty("truncated_pairs", cut);
                    Files.writeString(runDir.resolve("data.json"), facts + "\n");
                }
                precision = cfg.precision(device.is_cuda(), modelDir);
                int total;
                if (cfg.lora()) {  // the policy's base (adapters off) is the reference: load it first
                    total = prepare(modelDir, checkpoint, resumed);
                    refs = ReferenceLogProbs.forRun(cfg, runDir, modelDir, collator, train, eval, threads, device,
                            checkpoint != null, dp, console, policy, precision);
                } else {  // the reference is computed and closed before the policy is loaded
                    refs = ReferenceLogProbs.forRun(cfg, runDir, modelDir, collator, train, eval, threads, device,
                            checkpoint != null, dp, console, null, precision);
                    total = prepare(modelDir, checkpoint, resumed);
                }
                LrSchedule schedule = cfg.optim.schedule(total);
                ParameterHashes hashes = ParameterHashes.fromEnvironment(rank);
                Map<String, Double> last = Map.of(), lastEval = Map.of();
                try (MetricsLog log = new MetricsLog(rank == 0 ? runDir.resolve("metrics.jsonl") : null, step)) {
                    ProgressBar bar = new ProgressBar(console, step, total, Math.max(1, total / 20));
                    while (step < total) {
                        try (PointerScope scope = new PointerScope()) {
                            last = step(schedule.at(step));
                            hashes.record(step, params);
                        }
                        stepped = true;
                        if (step % cfg.logEvery == 0 || step == total) {
                            log.append(last);
                        }
                        bar.update(step, last.get("loss"), last.get("rewards/margins"), last.get("rewards/accuracies"),
                                tokens / trainSeconds);
                        if (listener != null) {
                            listener.afterStep(step, policy, Map.copyOf(last));
                        }
                        boolean end = step == total;
                        if (!eval.isEmpty() && ((cfg.evalEvery > 0 && step % cfg.evalEvery == 0) || end)) {
                            lastEval = evaluate(eval, refs[1]);
                            log.append(lastEval);
                        }
                        if ((cfg.checkpointEvery > 0 && step % cfg.checkpointEvery == 0) || end) {
                            checkpoint(modelDir);
                        }
                    }
                    Path finalModel = runDir.resolve(adapters != null ? "final-adapter" : "final-model");
                    if (rank == 0) {
                        if (adapters != null) {
                            adapters.save(finalModel, modelDir.toString(), modelDir);
                        } else {
                            // final-model/ in the input's dtype (or --save-dtype); checkpoints keep the training precision
                            String saveDtype = cfg.saveDtype == null || cfg.saveDtype.equals("auto")
                                    ? ModelFolder.torchDtypeOf(modelDir) : cfg.saveDtype;
                            ModelFolder.save(mixed != null ? mixed.master() : policy, finalModel, modelDir, saveDtype);
                        }
                        MetricsPlot.write(log.rows(), List.of("loss", "rewards/margins", "rewards/accuracies"),
                                "spo4j " + cfg.lossLabel() + " (" + cfg.lossImpl + "), beta " + cfg.beta, runDir.resolve("metrics.png"));
                    }
                    double secs = (System.nanoTime() - t0) / 1e9;
                    return new Summary(runDir, finalModel, step, last, lastEval, secs, trainSeconds > 0 ? tokens / trainSeconds : 0);
                }
            }
        }

        /** The run's optimiser steps: --max-steps, or the epochs over {@code pairs} in global batches. */
        private int totalSteps(int pairs) {
            int batchesPerEpoch = (pairs + cfg.batchSize * world - 1) / (cfg.batchSize * world);
            int stepsPerEpoch = (batchesPerEpoch + cfg.gradAccum - 1) / cfg.gradAccum;
            return cfg.maxSteps > 0 ? cfg.maxSteps : cfg.epochs * stepsPerEpoch;
        }

        /** Loads the policy and AdamW (from the checkpoint when resuming), lays out the batches; returns the total steps. */
        private int prepare(Path modelDir, Path checkpoint, Checkpoints.State resumed) throws IOException {
            torch.manual_seed(cfg.seed);
            if (cfg.lora()) {  // a frozen base and fp32 adapters: new, the --adapter's, or the checkpoint's
                policy = ModelFolder.load(modelDir, precision.scalarType());  // frozen: no master copy needed
                policy.to(device, precision.scalarType(), false);
                adapters = checkpoint != null ? LoraAdapters.load(policy, checkpoint.resolve(Checkpoints.ADAPTER))
                        : cfg.adapter != null ? LoraAdapters.load(policy, Path.of(cfg.adapter))
                        : LoraAdapters.create(policy, cfg.loraConfig());
                params = adapters.parameters();
            } else {
                policy = ModelFolder.load(checkpoint == null ? modelDir : checkpoint.resolve(Checkpoints.MODEL));
                policy.to(device, false);
                params = policy.parameterList();
                if (precision != Precision.FP32) {  // AdamW on fp32 masters, forward/backward on a bf16 copy
                    mixed = new MasterWeights(policy, precision, device);
                    policy = mixed.work();
                    gradParams = mixed.workParameters();
                }
            }
            if (gradParams == null) {
                gradParams = params;
            }
            paramVector = new TensorVector(params.toArray(new Tensor[0]));
            optimizer = cfg.optim.adamW(paramVector);
            if (checkpoint != null) {
                Checkpoints.loadOptimizer(checkpoint, optimizer, device);
                Checkpoints.restoreGenerator(resumed, device, rank);
                step = resumed.step;
                epoch = resumed.epoch;
                index = resumed.batchIndex;
            }
            List<Integer> indices = new ArrayList<>();
            for (int i = 0; i < train.size(); i++) {
                indices.add(i);
            }
            // One global batch = batchSize pairs per rank x world size, from the same seeded order on every rank.
            batches = new Batches<>(indices, cfg.batchSize * world, cfg.seed);
            int total = totalSteps(train.size());
            objective = new PreferenceObjective(cfg.lossConfig(), cfg.lossImpl, cfg.sftWeight, threads,
                    cfg.lmHeadChunkBytes());
            if (checkpoint != null && resumed.lossState != null) {  // bco-pair's running mean
                objective.loss().restoreBcoState(resumed.lossState[0], resumed.lossState[1]);
            }
            console.printf(Locale.ROOT, "spo4j: %s (%s, %s LM head) on %d pairs, %s, %d steps of %d x %d pairs, "
                    + "lr %.2g, %d threads%n", cfg.lossLabel(), cfg.lossImpl, cfg.lmHead, train.size(),
                    cfg.model == null ? "embedded tiny Llama" : modelDir,
                    total, cfg.gradAccum, cfg.batchSize * world, cfg.optim.lr, threads);
            if (dp != null) {
                console.printf(Locale.ROOT, "spo4j: data parallel over %d processes (Gloo%s): %d pairs per rank per "
                        + "micro-batch, global batch %d pairs per step%n", world, device.is_cuda() ? "/NCCL" : "",
                        cfg.batchSize, cfg.batchSize * world * cfg.gradAccum);
                for (Tensor p : params) {
                    p.mutable_grad().put(torch.zeros_like(p));  // defined everywhere: a rank may get an empty shard
                }
            }
            if (precision != Precision.FP32 || cfg.gradientCheckpointing) {
                console.printf(Locale.ROOT, "spo4j: %s weights and activations%s%s%n", precision.torchDtype(),
                        mixed != null ? ", fp32 master weights and AdamW state" : adapters != null ? " (frozen base), fp32 adapters" : "",
                        cfg.gradientCheckpointing ? ", activation checkpointing" : "");
            }
            if (adapters != null) {
                LoraConfig lc = adapters.config();
                console.printf(Locale.ROOT, "spo4j: LoRA r %d, alpha %s, dropout %s on %s: %d trainable of %d parameters%n",
                        lc.r(), lc.alpha(), lc.dropout(), String.join(",", lc.targetModules()), adapters.parameterCount(),
                        policy.parameterCount());
            }
            if (cfg.lmHead == LmHead.FUSED && cfg.lossImpl == LossImpl.FUSED) {  // libtorch: torch.linear
                console.println("spo4j: " + cfg.headRegime(policy.config(), precision.scalarType(),
                        policy.headWeight().requires_grad()));
            }
            if (checkpoint != null) {
                console.println("spo4j: resumed from " + checkpoint + " at step " + step);
            }
            return total;
        }

        /**
         * One optimiser step at learning rate {@code lr}: accumulate gradAccum micro-batches
         * (each this rank's shard of a global batch), reduce over ranks, clip, update. Returns
         * the step's metrics row.
         */
        private Map<String, Double> step(double lr) {
            long s0 = System.nanoTime();
            optimizer.zero_grad(dp == null);  // distributed: keep the zero-filled gradients defined
            List<MetricSums> micro = new ArrayList<>(cfg.gradAccum);
            double stepTokens = 0;
            String nonFiniteLogits = null;
            int firstEpoch = epoch, firstBatch = index;
            for (int m = 0; m < cfg.gradAccum; m++) {
                Shard<Integer> shard = Shard.of(batches.batchAt(epoch, index), rank, world, cfg.batchSize);
                if (++index == batches.batchesPerEpoch()) {
                    index = 0;
                    epoch++;
                }
                MetricSums sums = new MetricSums();
                if (!shard.isEmpty()) {  // the epoch's last global batch may leave this rank nothing
                    try (PreferenceBatch batch = collator.collate(pick(train, shard.items()))) {
                        LlamaModel.Recomputed fw = cfg.gradientCheckpointing
                                ? policy.forwardRecomputed(on(batch.inputIds()), on(batch.attentionMask())) : null;
                        PreferenceObjective.Result r = objective.compute(fw == null ? inputs(batch, refs[0], shard.items())
                                : inputs(batch, refs[0], shard.items(), fw));
                        backward(r, fw, gradParams, shard.share());
                        if (mixed != null) {
                            mixed.accumulate();  // fp32 sums over micro-batches
                        }
                        sums = r.metricSums();
                        stepTokens += batch.tokenCount();
                    } catch (NonFiniteLogitsException e) {  // NaN or infinite weights: a non-finite step
                        nonFiniteLogits = e.getMessage();
                        sums = new MetricSums();
                        sums.addMean("loss", Double.NaN, 1);
                    }
                }
                micro.add(sums);
            }
            if (cfg.gradAccum > 1) {
                scale(params, 1.0 / cfg.gradAccum);
            }
            double allReduceMs = 0;
            if (dp != null) {
                allReduceMs = dp.averageGradients(params, "at step " + (step + 1));
                MetricReduction.Reduced all = MetricReduction.allReduce(dp, objective.metricNames(), micro, stepTokens,
                        "metrics all-reduce at step " + (step + 1));
                micro = all.parts();
                stepTokens = all.tokens();
            }
            double gradNorm = torch.clip_grad_norm_(paramVector, cfg.optim.maxGradNorm > 0 ? cfg.optim.maxGradNorm : 1e30);
            Map<String, Double> means = meanOverParts(micro);
            double loss = means.getOrDefault("loss", Double.NaN);
            // A non-finite loss or gradient norm never reaches the weights (as a mixed-precision
            // loss scaler skips an overflowing step): the step is counted, logged and skipped.
            boolean finite = Double.isFinite(loss) && Double.isFinite(gradNorm);
            if (finite) {
                Optimizers.setLearningRate(optimizer, lr);
                optimizer.step();
                if (mixed != null) {
                    mixed.copyToWork();
                }
                skippedInARow = 0;
            } else {
                skipped++;
                skippedInARow++;
                console.printf(Locale.ROOT, "%nspo4j: warning: step %d skipped: loss %s, gradient norm %s (epoch %d, "
                        + "from batch %d)%s; the weights were not updated%n", step + 1, loss, gradNorm,
                        firstEpoch, firstBatch, nonFiniteLogits == null ? "" : ": " + nonFiniteLogits);
                if (skippedInARow >= MAX_NONFINITE_IN_A_ROW) {
                    List<Path> good = rank == 0 ? Checkpoints.list(runDir) : List.of();
                    throw new NonFiniteTrainingException("stopped at step " + (step + 1) + ": " + skippedInARow
                            + " steps in a row had a non-finite loss or gradient norm (the run diverged: try a lower "
                            + "--lr, --max-grad-norm, or check the data's scores); the weights were not updated by "
                            + "those steps" + (good.isEmpty() ? "" : "; the last checkpoint is "
                            + good.get(good.size() - 1)));
                }
            }
            step++;
            double seconds = (System.nanoTime() - s0) / 1e9;
            trainSeconds += seconds;
            tokens += stepTokens;
            Map<String, Double> row = new LinkedHashMap<>();
            row.put("step", (double) step);
            row.put("epoch", epoch + (double) index / batches.batchesPerEpoch());
            row.putAll(means);
            row.put("grad_norm", gradNorm);
            if (skipped > 0) {
                row.put("skipped_steps", (double) skipped);
            }
            row.put("learning_rate", lr);
            row.put("tokens_per_second", stepTokens / seconds);
            if (dp != null) {
                row.put("allreduce_ms", allReduceMs);
            }
            return row;
        }

        /**
         * Rank 0 writes the checkpoint while the other ranks wait at a barrier. Every rank's
         * generator states go in first (an all-gather): the ranks draw LoRA dropout for their own
         * micro-batches, so their states part, and each resumes from its own.
         */
        private void checkpoint(Path modelDir) {
            String[] rankCpu = null, rankDevice = null;
            if (dp != null) {
                String what = "gathering the ranks' generator states for the checkpoint of step " + step;
                rankCpu = base64(dp.allGather(Checkpoints.cpuGeneratorState(), what));
                byte[] onDevice = Checkpoints.deviceGeneratorState(device);
                rankDevice = onDevice == null ? null : base64(dp.allGather(onDevice, what));
            }
            if (rank == 0) {
                Checkpoints.State st = new Checkpoints.State();
                st.step = step;
                st.epoch = epoch;
                st.batchIndex = index;
                st.config = cfg.toJson();
                st.lossState = objective.loss().bcoState();
                st.rankRngStates = rankCpu;
                st.rankDeviceRngStates = rankDevice;
                Checkpoints.save(runDir, mixed != null ? mixed.master() : policy, adapters, optimizer, st, modelDir,
                        cfg.keepCheckpoints);
            }
            if (dp != null) {
                dp.barrier("waiting for rank 0's checkpoint of step " + step);
            }
        }

        private String[] base64(byte[][] states) {
            String[] out = new String[states.length];
            for (int i = 0; i < states.length; i++) {
                out[i] = java.util.Base64.getEncoder().encodeToString(states[i]);
            }
            return out;
        }

        /**
         * Mean metrics over the eval set (or its first evalBatches batches), each batch's means
         * weighted by its pairs; data parallel: batch b on rank b mod world.
         */
        private Map<String, Double> evaluate(List<PreferencePair> eval, double[][] evalRefs) {
            MetricSums sums = new MetricSums();
            try (NoGradGuard ng = new NoGradGuard()) {
                int b = 0;
                for (int start = 0; start < eval.size() && (cfg.evalBatches == 0 || b < cfg.evalBatches);
                     start += cfg.batchSize, b++) {
                    int end = Math.min(eval.size(), start + cfg.batchSize);
                    if (b % world != rank) {
                        continue;
                    }
                    List<Integer> idx = new ArrayList<>();
                    for (int i = start; i < end; i++) {
                        idx.add(i);
                    }
                    try (PointerScope scope = new PointerScope();
                         PreferenceBatch batch = collator.collate(eval.subList(start, end))) {
                        PreferenceObjective.Result r = objective.evaluate(inputs(batch, evalRefs, idx));
                        double pairs = idx.size();
                        r.metricsMap().forEach((k, v) -> sums.addMean(k, v, pairs));
                    }
                }
            }
            MetricSums all = dp == null ? sums : MetricReduction.allReduce(dp, objective.metricNames(), List.of(sums), 0,
                    "eval metrics all-reduce at step " + step).parts().get(0);
            Map<String, Double> row = new LinkedHashMap<>();
            row.put("step", (double) step);
            all.means().forEach((k, v) -> row.put("eval/" + k, v));
            return row;
        }

        private PreferenceObjective.Inputs inputs(PreferenceBatch batch, double[][] refs, List<Integer> idx) {
            return inputs(batch, refs, idx, null);
        }

        /**
         * The objective's inputs for a batch: through the fused LM head from the final hidden
         * states, or from the materialised logits ({@code --lm-head}); from the activation-
         * checkpointed forward {@code fw} when not null, else from a plain forward.
         */
        private PreferenceObjective.Inputs inputs(PreferenceBatch batch, double[][] refs, List<Integer> idx,
                                                  LlamaModel.Recomputed fw) {
            Tensor refC = on(pickFloats(refs[0], idx)), refR = on(pickFloats(refs[1], idx));
            PreferenceObjective.Inputs in;
            if (cfg.lmHead == LmHead.FUSED) {
                Tensor hidden = fw != null ? fw.hiddenStates()
                        : policy.hiddenStates(on(batch.inputIds()), on(batch.attentionMask()));
                in = PreferenceObjective.Inputs.ofHidden(hidden, policy.headWeight(), on(batch.targets()), refC, refR);
            } else {
                Tensor logits = fw != null ? fw.logits() : policy.forward(on(batch.inputIds()), on(batch.attentionMask()));
                in = PreferenceObjective.Inputs.of(logits, on(batch.targets()), refC, refR);
            }
            in = in.withTargetsChecked(collator.vocabSize());  // checked when tokenized
            return batch.hasScores() ? in.withScores(on(batch.scoreChosen()), on(batch.scoreRejected())) : in;
        }

        /** A batch tensor on the training device (the same tensor on the CPU). */
        private Tensor on(Tensor t) {
            return device.is_cpu() ? t : t.to(device, t.scalar_type().intern());
        }
    }

    /**
     * Back-propagates one micro-batch (then, with activation checkpointing, recomputes the
     * decoder layers of {@code fw} to carry the gradient on into the parameters). {@code share} != 1 (a short shard of the epoch's last
     * global batch) scales this micro-batch's contribution to the accumulated gradient, so that
     * the ranks' average is the global batch's mean.
     */
    private static void backward(PreferenceObjective.Result r, LlamaModel.Recomputed fw, List<Tensor> params,
                                 double share) {
        if (share != 1.0) {
            scale(params, 1.0 / share);
        }
        r.backward();
        if (fw != null) {  // activation checkpointing: the decoder's layers back-propagate now
            fw.backward();
        }
        if (share != 1.0) {
            scale(params, share);
        }
    }

    private static void scale(List<Tensor> params, double factor) {
        for (Tensor p : params) {
            Tensor g = p.grad();
            if (g.defined()) {  // undefined before a parameter's first backward (a short shard's rank)
                g.mul_(new Scalar(factor));
            }
        }
    }

    /** Each metric's mean over the parts (micro-batches), each part's mean being its sum / weight. */
    private static Map<String, Double> meanOverParts(List<MetricSums> parts) {
        Map<String, Double> out = new LinkedHashMap<>();
        for (MetricSums p : parts) {
            p.means().forEach((k, v) -> out.merge(k, v / parts.size(), Double::sum));
        }
        return out;
    }

    private static <T> List<T> pick(List<T> all, List<Integer> idx) {
        List<T> out = new ArrayList<>(idx.size());
        for (int i : idx) {
            out.add(all.get(i));
        }
        return out;
    }

    private static Tensor pickFloats(double[] values, List<Integer> idx) {
        double[] v = new double[idx.size()];
        for (int i = 0; i < v.length; i++) {
            v[i] = values[idx.get(i)];
        }
        return Tensors.floats(v);
    }
}
