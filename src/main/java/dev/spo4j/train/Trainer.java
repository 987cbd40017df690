package dev.spo4j.train;

import com.google.gson.Gson;
import dev.spo4j.data.PreferenceBatch;
import dev.spo4j.data.PreferenceBatches;
import dev.spo4j.data.PreferenceCollator;
import dev.spo4j.data.PreferenceDataset;
import dev.spo4j.data.PreferencePair;
import dev.spo4j.data.TextTokenizer;
import dev.spo4j.model.LlamaModel;
import dev.spo4j.model.ModelFolder;
import java.io.IOException;
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
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;

/**
 * Preference training of a Llama-family model (shared/DESIGN.md, "one training step"): for
 * each optimiser step, {@code gradAccum} micro-batches of B pairs, each one forward of
 * [2B, T] through the policy, {@link PreferenceObjective} (fused kernels or LibTorch's
 * composite) and a backward; then clipping, AdamW and the learning-rate schedule.
 *
 * <p>Reference log-probs come from the data set's precomputed fields when every pair has
 * them, else from {@code refModel}, else from a frozen copy of the initial policy; they are
 * computed once, before the first step, and stored in the run folder. A run folder holds
 * config.json, reference_logps.json, metrics.jsonl, metrics.png, checkpoints/ and
 * final-model/ (Hugging Face layout). On the CPU, with the same thread count, a resumed run
 * repeats an uninterrupted one exactly.
 */
public final class Trainer {
    private static final Gson GSON = new Gson();

    private final TrainConfig cfg;
    private final PrintStream console;
    private final DistributedEnv dist;
    private Device device;
    /** The process group when WORLD_SIZE > 1, else null (and no c10d at all). */
    private DataParallel dp;
    private StepListener listener;

    /** A trainer for this process's place in a job: torchrun's environment, or a single process. */
    public Trainer(TrainConfig config, PrintStream console) {
        this(config, console, DistributedEnv.fromEnvironment());
    }

    /** {@code dist}: this process's rank in a data-parallel job; only rank 0 prints and writes the run folder. */
    public Trainer(TrainConfig config, PrintStream console, DistributedEnv dist) {
        this.cfg = config.copy();
        this.dist = dist;
        this.console = dist.rank() == 0 ? console : new PrintStream(java.io.OutputStream.nullOutputStream());
    }

    /** Calls {@code l} after every optimiser step (see {@link StepListener}); null for none. */
    public Trainer withListener(StepListener l) {
        this.listener = l;
        return this;
    }

    /** How a run ended. */
    public record Summary(Path runDir, Path finalModel, int steps, Map<String, Double> lastTrain,
                          Map<String, Double> eval, double seconds, double tokensPerSecond) {}

    /** Continues the run whose checkpoint (or run folder) is {@code dir}; {@code maxSteps} > 0 overrides the end. */
    public static Summary resume(Path dir, int maxSteps, PrintStream console) {
        Path checkpoint = Checkpoints.resolve(dir);
        Checkpoints.State state = Checkpoints.readState(checkpoint);
        TrainConfig c = TrainConfig.fromJson(state.config);
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
        List<PreferencePair> train = cfg.data == null ? null : PreferenceDataset.read(Path.of(cfg.data));
        List<PreferencePair> eval = cfg.evalData == null ? null : PreferenceDataset.read(Path.of(cfg.evalData));
        cfg.worldSize = dist.worldSize();
        Device device = device(dist.isDistributed() && cfg.device.equals("cuda") ? "cuda:" + dist.localRank() : cfg.device);
        int threads = cfg.threads > 0 ? cfg.threads : torch.get_num_threads();
        torch.set_num_threads(threads);
        Path runDir = Path.of(cfg.out == null ? "runs/spo4j" : cfg.out).toAbsolutePath();
        try {
            Files.createDirectories(runDir);
            if (dist.rank() == 0) {
                Files.writeString(runDir.resolve("config.json"), cfg.toJson());
            }
            if (dist.isDistributed()) {
                dp = new DataParallel(dist, (long) (cfg.distTimeout * 1000), device);
            }
            return train(runDir, threads, device, checkpoint, resumed, train, eval);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        } finally {
            if (dp != null) {
                dp.close();
                dp = null;
            }
        }
    }

    /** The training device; CUDA needs LibTorch's GPU build (-Pgpu) and spo4j's CUDA kernels. */
    static Device device(String name) {
        if (name.startsWith("cuda")) {
            if (!torch.cuda_is_available()) {
                throw new IllegalArgumentException("--device " + name + ": LibTorch has no usable CUDA here "
                        + "(build with -Pgpu on a host with a GPU and the CUDA libraries)");
            }
            dev.spo4j.kernels.CudaKernels.require();
        }
        return new Device(name);
    }

    private Summary train(Path runDir, int threads, Device device, Path checkpoint, Checkpoints.State resumed,
                          List<PreferencePair> train, List<PreferencePair> eval) throws IOException {
        this.device = device;
        long t0 = System.nanoTime();
        Path modelDir;
        if (cfg.model == null) {
            // rank 0 writes the embedded model first; the others then find it (one machine) or write the same one
            if (dp != null && dp.rank() != 0) {
                dp.barrier("waiting for rank 0 to write the embedded model");
            }
            EmbeddedDefault.Prepared d = EmbeddedDefault.prepare(runDir.resolve("embedded"), cfg.seed);
            if (dp != null && dp.rank() == 0) {
                dp.barrier("waiting for the ranks after writing the embedded model");
            }
            modelDir = d.modelDir();
            train = train == null ? d.train() : train;
            eval = eval == null ? d.eval() : eval;
        } else {
            modelDir = Path.of(cfg.model);
        }
        eval = eval == null ? List.of() : eval;
        try (TextTokenizer tokenizer = TextTokenizer.load(modelDir)) {
            PreferenceCollator collator = new PreferenceCollator(tokenizer, cfg.maxLength);
            for (PreferencePair p : train) {
                collator.tokenize(p);  // every pair must fit before the first step: fail early, name the line
            }
            double[][][] refs = references(runDir, modelDir, collator, train, eval, threads, checkpoint != null);
            torch.manual_seed(cfg.seed);
            LlamaModel policy = ModelFolder.load(checkpoint == null ? modelDir : checkpoint.resolve(Checkpoints.MODEL));
            policy.to(device, false);
            List<Tensor> paramList = policy.parameterList();
            TensorVector params = new TensorVector(paramList.toArray(new Tensor[0]));
            AdamW optimizer = Optimizers.adamW(params, cfg.lr, cfg.adamBeta1, cfg.adamBeta2, cfg.adamEps, cfg.weightDecay);
            int step = 0, epoch = 0, index = 0;
            if (checkpoint != null) {
                Checkpoints.loadOptimizer(checkpoint, optimizer, device);
                Checkpoints.restoreGenerator(resumed);
                step = resumed.step;
                epoch = resumed.epoch;
                index = resumed.batchIndex;
            }
            List<Integer> indices = new ArrayList<>();
            for (int i = 0; i < train.size(); i++) {
                indices.add(i);
            }
            // One global batch = batchSize pairs per rank x world size, from the same seeded
            // permutation on every rank; rank r takes positions [r*B, (r+1)*B) of it. So a
            // global batch covers the same pairs whatever the world size.
            int world = dist.worldSize(), rank = dist.rank();
            PreferenceBatches<Integer> batches = new PreferenceBatches<>(indices, cfg.batchSize * world, cfg.seed);
            int stepsPerEpoch = (batches.batchesPerEpoch() + cfg.gradAccum - 1) / cfg.gradAccum;
            int total = cfg.maxSteps > 0 ? cfg.maxSteps : cfg.epochs * stepsPerEpoch;
            int warmup = cfg.warmupSteps > 0 ? cfg.warmupSteps : (int) Math.round(cfg.warmupRatio * total);
            LrSchedule schedule = new LrSchedule(LrSchedule.Kind.parse(cfg.schedule), cfg.lr, warmup, total);
            PreferenceObjective objective = new PreferenceObjective(cfg.lossConfig(), LossImpl.parse(cfg.lossImpl),
                    cfg.sftWeight, threads);
            console.printf(Locale.ROOT, "spo4j: %s (%s) on %d pairs, %s, %d steps of %d x %d pairs, lr %.2g, %d threads%n",
                    cfg.loss, cfg.lossImpl, train.size(), cfg.model == null ? "embedded tiny Llama" : modelDir,
                    total, cfg.gradAccum, cfg.batchSize * world, cfg.lr, threads);
            List<String> keys = null;
            if (dp != null) {
                console.printf(Locale.ROOT, "spo4j: data parallel over %d processes (Gloo%s): %d pairs per rank per "
                        + "micro-batch, global batch %d pairs per step%n", world, device.is_cuda() ? "/NCCL" : "",
                        cfg.batchSize, cfg.batchSize * world * cfg.gradAccum);
                keys = metricNames(policy, objective, collator, train, refs[0]);
                for (Tensor p : policy.parameterList()) {
                    p.mutable_grad().put(torch.zeros_like(p));  // defined everywhere: a rank may get an empty shard
                }
            }
            if (checkpoint != null) {
                console.println("spo4j: resumed from " + checkpoint + " at step " + step);
            }
            ParameterHashes hashes = ParameterHashes.fromEnvironment(rank);
            Map<String, Double> last = Map.of(), lastEval = Map.of();
            double tokens = 0, trainSeconds = 0;
            try (MetricsLog log = new MetricsLog(rank == 0 ? runDir.resolve("metrics.jsonl") : null, step)) {
                ProgressBar bar = new ProgressBar(console, step, total, Math.max(1, total / 20));
                while (step < total) {
                    long s0 = System.nanoTime();
                    Map<String, Double> sums = new LinkedHashMap<>();
                    double stepTokens = 0, allReduceMs = 0;
                    // distributed: per micro-batch {chosen tokens, rejected tokens, and the token-weighted sums of
                    // the token-mean metrics}, so that logits/* and entropy are global token means as in one process
                    double[][] tokenMeans = dp == null ? null : new double[cfg.gradAccum][2 + TOKEN_MEANS.size()];
                    try (PointerScope scope = new PointerScope()) {
                        optimizer.zero_grad(dp == null);  // distributed: keep the zero-filled gradients defined
                        for (int micro = 0; micro < cfg.gradAccum; micro++) {
                            double[] tm = tokenMeans == null ? null : tokenMeans[micro];
                            List<Integer> global = batches.batchAt(epoch, index);
                            if (++index == batches.batchesPerEpoch()) {
                                index = 0;
                                epoch++;
                            }
                            List<Integer> idx = global.subList(Math.min(global.size(), rank * cfg.batchSize),
                                    Math.min(global.size(), (rank + 1) * cfg.batchSize));
                            if (idx.isEmpty()) {
                                continue;  // the epoch's last global batch left this rank nothing
                            }
                            // This shard's share of the global batch's mean: 1 when every rank has B pairs.
                            double share = idx.size() * (double) world / global.size();
                            double weight = idx.size() / (double) global.size();
                            try (PreferenceBatch batch = collator.collate(pick(train, idx))) {
                                Tensor logits = policy.forward(on(batch.inputIds()), on(batch.attentionMask()));
                                PreferenceObjective.Result r = objective.compute(inputs(logits, batch, refs[0], idx));
                                backward(r, policy, share);
                                Map<String, Double> m = r.metricsMap();
                                if (tm != null) {
                                    long pairs = idx.size();
                                    Tensor completion = batch.targets().ne(new Scalar(PreferenceObjective.IGNORE_INDEX));
                                    tm[0] = completion.narrow(0, 0, pairs).sum().item_double();
                                    tm[1] = completion.narrow(0, pairs, pairs).sum().item_double();
                                    for (int k = 0; k < TOKEN_MEANS.size(); k++) {
                                        int kind = TOKEN_MEAN_ROWS.get(k);
                                        tm[2 + k] = m.get(TOKEN_MEANS.get(k)) * (kind == 2 ? tm[0] + tm[1] : tm[kind]);
                                        m.remove(TOKEN_MEANS.get(k));
                                    }
                                }
                                m.forEach((k, v) -> sums.merge(k, v * weight, Double::sum));
                                stepTokens += batch.tokenCount();
                            }
                        }
                        if (cfg.gradAccum > 1) {
                            for (Tensor p : policy.parameterList()) {
                                p.grad().mul_(new Scalar(1.0 / cfg.gradAccum));
                            }
                        }
                        if (dp != null) {
                            allReduceMs = dp.averageGradients(paramList, "at step " + (step + 1));
                            stepTokens = reduceMetrics(sums, keys, stepTokens, step + 1, tokenMeans);
                        }
                        double gradNorm = torch.clip_grad_norm_(params, cfg.maxGradNorm > 0 ? cfg.maxGradNorm : 1e30);
                        double lr = schedule.at(step);
                        Optimizers.setLearningRate(optimizer, lr);
                        optimizer.step();
                        step++;
                        hashes.record(step, policy.parameterList());
                        double seconds = (System.nanoTime() - s0) / 1e9;
                        trainSeconds += seconds;
                        tokens += stepTokens;
                        Map<String, Double> row = new LinkedHashMap<>();
                        row.put("step", (double) step);
                        row.put("epoch", epoch + (double) index / batches.batchesPerEpoch());
                        sums.forEach((k, v) -> row.put(k, v / cfg.gradAccum));
                        row.put("grad_norm", gradNorm);
                        row.put("learning_rate", lr);
                        row.put("tokens_per_second", stepTokens / seconds);
                        if (dp != null) {
                            row.put("allreduce_ms", allReduceMs);
                        }
                        last = row;
                        if (step % cfg.logEvery == 0 || step == total) {
                            log.append(row);
                        }
                        bar.update(step, row.get("loss"), row.get("rewards/margins"), row.get("rewards/accuracies"),
                                tokens / trainSeconds);
                    }
                    if (listener != null) {
                        listener.afterStep(step, policy, Map.copyOf(last));
                    }
                    boolean end = step == total;
                    if (!eval.isEmpty() && ((cfg.evalEvery > 0 && step % cfg.evalEvery == 0) || end)) {
                        lastEval = evaluate(policy, objective, collator, eval, refs[1], step, keys);
                        log.append(lastEval);
                    }
                    if ((cfg.checkpointEvery > 0 && step % cfg.checkpointEvery == 0) || end) {
                        if (rank == 0) {
                            Checkpoints.State st = new Checkpoints.State();
                            st.step = step;
                            st.epoch = epoch;
                            st.batchIndex = index;
                            st.config = cfg.toJson();
                            Checkpoints.save(runDir, policy, optimizer, st, modelDir, cfg.keepCheckpoints);
                        }
                        if (dp != null) {
                            dp.barrier("waiting for rank 0's checkpoint of step " + step);
                        }
                    }
                }
                Path finalModel = runDir.resolve("final-model");
                if (rank == 0) {
                    ModelFolder.save(policy, finalModel, modelDir);
                    MetricsPlot.write(log.rows(), List.of("loss", "rewards/margins", "rewards/accuracies"),
                            "spo4j " + cfg.loss + " (" + cfg.lossImpl + "), beta " + cfg.beta, runDir.resolve("metrics.png"));
                }
                double secs = (System.nanoTime() - t0) / 1e9;
                return new Summary(runDir, finalModel, step, last, lastEval, secs, trainSeconds > 0 ? tokens / trainSeconds : 0);
            }
        }
    }

    /**
     * Back-propagates one micro-batch. {@code share} != 1 (a short shard of the epoch's last
     * global batch) scales this micro-batch's contribution to the accumulated gradient, so that
     * the ranks' average is the global batch's mean.
     */
    private static void backward(PreferenceObjective.Result r, LlamaModel policy, double share) {
        if (share == 1.0) {
            r.backward();
            return;
        }
        for (Tensor p : policy.parameterList()) {
            p.grad().mul_(new Scalar(1.0 / share));
        }
        r.backward();
        for (Tensor p : policy.parameterList()) {
            p.grad().mul_(new Scalar(share));
        }
    }

    /** Metrics that the objective averages over completion tokens: chosen (0), rejected (1) or both (2). */
    private static final List<String> TOKEN_MEANS = List.of("logits/chosen", "logits/rejected", "entropy");
    private static final List<Integer> TOKEN_MEAN_ROWS = List.of(0, 1, 2);

    /**
     * Sums over all ranks, in one all-reduce: the pair-weighted metric means, the token count,
     * and (training) each micro-batch's token counts and token-weighted sums, which become
     * global token means. {@code sums} is replaced by the global figures (keys in the order of
     * {@code keys}); returns the global token count.
     */
    private double reduceMetrics(Map<String, Double> sums, List<String> keys, double stepTokens, int step,
                                 double[][] tokenMeans) {
        int micro = tokenMeans == null ? 0 : tokenMeans.length, width = 2 + TOKEN_MEANS.size();
        double[] v = new double[keys.size() + 1 + micro * width];
        for (int i = 0; i < keys.size(); i++) {
            v[i] = sums.getOrDefault(keys.get(i), 0.0);
        }
        v[keys.size()] = stepTokens;
        for (int m = 0; m < micro; m++) {
            System.arraycopy(tokenMeans[m], 0, v, keys.size() + 1 + m * width, width);
        }
        double[] all = dp.sum(v, (tokenMeans == null ? "eval " : "") + "metrics all-reduce at step " + step);
        sums.clear();
        for (int i = 0; i < keys.size(); i++) {
            String k = keys.get(i);
            int t = TOKEN_MEANS.indexOf(k);
            if (tokenMeans == null || t < 0) {
                sums.put(k, all[i]);
                continue;
            }
            double total = 0;
            for (int m = 0; m < micro; m++) {
                int o = keys.size() + 1 + m * width;
                int kind = TOKEN_MEAN_ROWS.get(t);
                total += all[o + 2 + t] / (kind == 2 ? all[o] + all[o + 1] : all[o + kind]);
            }
            sums.put(k, total);
        }
        return all[keys.size()];
    }

    /** The metric names of this objective, in order (the same on every rank), from one pair without gradients. */
    private List<String> metricNames(LlamaModel policy, PreferenceObjective objective, PreferenceCollator collator,
                                     List<PreferencePair> train, double[][] refs) {
        try (NoGradGuard ng = new NoGradGuard(); PointerScope scope = new PointerScope();
             PreferenceBatch batch = collator.collate(train.subList(0, 1))) {
            Tensor logits = policy.forward(on(batch.inputIds()), on(batch.attentionMask()));
            return new ArrayList<>(objective.evaluate(inputs(logits, batch, refs, List.of(0))).metricsMap().keySet());
        }
    }

    private PreferenceObjective.Inputs inputs(Tensor logits, PreferenceBatch batch, double[][] refs, List<Integer> idx) {
        PreferenceObjective.Inputs in = PreferenceObjective.Inputs.of(logits, on(batch.targets()),
                on(floats(refs[0], idx)), on(floats(refs[1], idx)));
        return batch.hasScores() ? in.withScores(on(batch.scoreChosen()), on(batch.scoreRejected())) : in;
    }

    /** Mean metrics over the eval set (or its first evalBatches batches); distributed: batch b on rank b mod world. */
    private Map<String, Double> evaluate(LlamaModel policy, PreferenceObjective objective, PreferenceCollator collator,
                                         List<PreferencePair> eval, double[][] refs, int step, List<String> keys) {
        Map<String, Double> sums = new LinkedHashMap<>();
        double n = 0;
        int world = dist.worldSize();
        try (NoGradGuard ng = new NoGradGuard()) {
            int b = 0;
            for (int start = 0; start < eval.size() && (cfg.evalBatches == 0 || b < cfg.evalBatches);
                 start += cfg.batchSize, b++) {
                int end = Math.min(eval.size(), start + cfg.batchSize);
                n += end - start;
                if (b % world != dist.rank()) {
                    continue;
                }
                List<Integer> idx = new ArrayList<>();
                for (int i = start; i < end; i++) {
                    idx.add(i);
                }
                try (PointerScope scope = new PointerScope();
                     PreferenceBatch batch = collator.collate(eval.subList(start, end))) {
                    Tensor logits = policy.forward(on(batch.inputIds()), on(batch.attentionMask()));
                    PreferenceObjective.Result r = objective.evaluate(inputs(logits, batch, refs, idx));
                    double w = end - start;
                    r.metricsMap().forEach((k, v) -> sums.merge(k, v * w, Double::sum));
                }
            }
        }
        if (dp != null) {
            reduceMetrics(sums, keys, 0, step, null);
        }
        Map<String, Double> row = new LinkedHashMap<>();
        row.put("step", (double) step);
        for (Map.Entry<String, Double> e : sums.entrySet()) {
            row.put("eval/" + e.getKey(), e.getValue() / n);
        }
        return row;
    }

    /**
     * Reference log-probs {train{chosen, rejected}, eval{chosen, rejected}}, stored in the run
     * folder. Distributed: each rank computes a contiguous shard of the pairs and a sum over
     * ranks assembles them; on resume rank 0 reads the file and broadcasts it.
     */
    private double[][][] references(Path runDir, Path modelDir, PreferenceCollator collator, List<PreferencePair> train,
                                    List<PreferencePair> eval, int threads, boolean resuming) throws IOException {
        Path file = runDir.resolve("reference_logps.json");
        if (dp != null && resuming) {
            double[][][] read = dp.rank() == 0 ? GSON.fromJson(Files.readString(file), double[][][].class) : null;
            return unflatten(dp.broadcastFromRank0(read != null ? flatten(read) : new double[2 * (train.size() + eval.size())],
                    "broadcast of the reference log-probs"), train.size(), eval.size());
        }
        if (resuming && Files.exists(file)) {
            return GSON.fromJson(Files.readString(file), double[][][].class);
        }
        double[][][] out = new double[2][][];
        List<List<PreferencePair>> sets = List.of(train, eval);
        LlamaModel reference = null;
        boolean computed = false;
        for (int s = 0; s < 2; s++) {
            List<PreferencePair> set = sets.get(s);
            double[][] pre = precomputed(set);
            if (pre != null) {
                out[s] = pre;
                continue;
            }
            if (reference == null) {
                Path refDir = cfg.refModel != null ? Path.of(cfg.refModel) : modelDir;
                console.println("spo4j: reference log-probs from " + (cfg.refModel != null ? refDir
                        : "the initial policy (frozen)") + " for " + set.size() + " pairs");
                reference = ModelFolder.load(refDir);
                reference.to(device, false);
                for (Tensor p : reference.parameterList()) {
                    p.set_requires_grad(false);
                }
            }
            if (dp == null) {
                out[s] = ReferenceLogProbs.compute(reference, collator, set, cfg.batchSize, threads);
            } else {
                int n = set.size(), from = (int) ((long) n * dp.rank() / dp.worldSize()),
                        to = (int) ((long) n * (dp.rank() + 1) / dp.worldSize());
                double[][] mine = ReferenceLogProbs.compute(reference, collator, set.subList(from, to), cfg.batchSize,
                        threads);
                out[s] = new double[][] {new double[n], new double[n]};
                System.arraycopy(mine[0], 0, out[s][0], from, to - from);
                System.arraycopy(mine[1], 0, out[s][1], from, to - from);
                computed = true;
            }
        }
        if (reference != null) {
            reference.close();
        }
        if (dp != null && computed) {  // the same decision on every rank: they all hold the same data
            out = unflatten(dp.sum(flatten(out), "all-reduce of the reference log-probs"), train.size(), eval.size());
        }
        if (dist.rank() == 0) {
            Path tmp = runDir.resolve("reference_logps.json.tmp");
            Files.writeString(tmp, GSON.toJson(out));
            Files.move(tmp, file, java.nio.file.StandardCopyOption.REPLACE_EXISTING,
                    java.nio.file.StandardCopyOption.ATOMIC_MOVE);
        }
        return out;
    }

    private static double[] flatten(double[][][] refs) {
        int nt = refs[0][0].length, ne = refs[1][0].length;
        double[] v = new double[2 * (nt + ne)];
        System.arraycopy(refs[0][0], 0, v, 0, nt);
        System.arraycopy(refs[0][1], 0, v, nt, nt);
        System.arraycopy(refs[1][0], 0, v, 2 * nt, ne);
        System.arraycopy(refs[1][1], 0, v, 2 * nt + ne, ne);
        return v;
    }

    private static double[][][] unflatten(double[] v, int nt, int ne) {
        return new double[][][] {
            {java.util.Arrays.copyOfRange(v, 0, nt), java.util.Arrays.copyOfRange(v, nt, 2 * nt)},
            {java.util.Arrays.copyOfRange(v, 2 * nt, 2 * nt + ne), java.util.Arrays.copyOfRange(v, 2 * nt + ne, 2 * (nt + ne))}};
    }

    private static double[][] precomputed(List<PreferencePair> set) {
        double[] c = new double[set.size()], r = new double[set.size()];
        for (int i = 0; i < set.size(); i++) {
            PreferencePair p = set.get(i);
            if (p.refChosenLogps() == null || p.refRejectedLogps() == null) {
                return set.isEmpty() ? new double[][] {c, r} : null;
            }
            c[i] = p.refChosenLogps();
            r[i] = p.refRejectedLogps();
        }
        return new double[][] {c, r};
    }

    /** A batch tensor on the training device (the same tensor on the CPU). */
    private Tensor on(Tensor t) {
        return device.is_cpu() ? t : t.to(device, t.scalar_type());
    }

    private static <T> List<T> pick(List<T> all, List<Integer> idx) {
        List<T> out = new ArrayList<>(idx.size());
        for (int i : idx) {
            out.add(all.get(i));
        }
        return out;
    }

    private static Tensor floats(double[] values, List<Integer> idx) {
        float[] f = new float[idx.size()];
        for (int i = 0; i < f.length; i++) {
            f[i] = (float) values[idx.get(i)];
        }
        Tensor t = torch.empty(new long[] {f.length}, new TensorOptions(torch.ScalarType.Float), null);
        t.data_ptr_float().put(f);
        return t;
    }
}
