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
    private Device device;
    private StepListener listener;

    public Trainer(TrainConfig config, PrintStream console) {
        this.cfg = config.copy();
        this.console = console;
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
        return new Trainer(c, console).run(checkpoint, state);
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
        Device device = device(cfg.device);
        int threads = cfg.threads > 0 ? cfg.threads : torch.get_num_threads();
        torch.set_num_threads(threads);
        Path runDir = Path.of(cfg.out == null ? "runs/spo4j" : cfg.out).toAbsolutePath();
        try {
            Files.createDirectories(runDir);
            Files.writeString(runDir.resolve("config.json"), cfg.toJson());
            return train(runDir, threads, device, checkpoint, resumed, train, eval);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
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
            EmbeddedDefault.Prepared d = EmbeddedDefault.prepare(runDir.resolve("embedded"), cfg.seed);
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
            TensorVector params = new TensorVector(policy.parameterList().toArray(new Tensor[0]));
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
            PreferenceBatches<Integer> batches = new PreferenceBatches<>(indices, cfg.batchSize, cfg.seed);
            int stepsPerEpoch = (batches.batchesPerEpoch() + cfg.gradAccum - 1) / cfg.gradAccum;
            int total = cfg.maxSteps > 0 ? cfg.maxSteps : cfg.epochs * stepsPerEpoch;
            int warmup = cfg.warmupSteps > 0 ? cfg.warmupSteps : (int) Math.round(cfg.warmupRatio * total);
            LrSchedule schedule = new LrSchedule(LrSchedule.Kind.parse(cfg.schedule), cfg.lr, warmup, total);
            PreferenceObjective objective = new PreferenceObjective(cfg.lossConfig(), LossImpl.parse(cfg.lossImpl),
                    cfg.sftWeight, threads);
            console.printf(Locale.ROOT, "spo4j: %s (%s) on %d pairs, %s, %d steps of %d x %d pairs, lr %.2g, %d threads%n",
                    cfg.loss, cfg.lossImpl, train.size(), cfg.model == null ? "embedded tiny Llama" : modelDir,
                    total, cfg.gradAccum, cfg.batchSize, cfg.lr, threads);
            if (checkpoint != null) {
                console.println("spo4j: resumed from " + checkpoint + " at step " + step);
            }
            Map<String, Double> last = Map.of(), lastEval = Map.of();
            double tokens = 0, trainSeconds = 0;
            try (MetricsLog log = new MetricsLog(runDir.resolve("metrics.jsonl"), step)) {
                ProgressBar bar = new ProgressBar(console, step, total, Math.max(1, total / 20));
                while (step < total) {
                    long s0 = System.nanoTime();
                    Map<String, Double> sums = new LinkedHashMap<>();
                    double stepTokens = 0;
                    try (PointerScope scope = new PointerScope()) {
                        optimizer.zero_grad(true);
                        for (int micro = 0; micro < cfg.gradAccum; micro++) {
                            List<Integer> idx = batches.batchAt(epoch, index);
                            if (++index == batches.batchesPerEpoch()) {
                                index = 0;
                                epoch++;
                            }
                            try (PreferenceBatch batch = collator.collate(pick(train, idx))) {
                                Tensor logits = policy.forward(on(batch.inputIds()), on(batch.attentionMask()));
                                PreferenceObjective.Result r = objective.compute(inputs(logits, batch, refs[0], idx));
                                r.backward();
                                r.metricsMap().forEach((k, v) -> sums.merge(k, v, Double::sum));
                                stepTokens += batch.tokenCount();
                            }
                        }
                        if (cfg.gradAccum > 1) {
                            for (Tensor p : policy.parameterList()) {
                                p.grad().mul_(new Scalar(1.0 / cfg.gradAccum));
                            }
                        }
                        double gradNorm = torch.clip_grad_norm_(params, cfg.maxGradNorm > 0 ? cfg.maxGradNorm : 1e30);
                        double lr = schedule.at(step);
                        Optimizers.setLearningRate(optimizer, lr);
                        optimizer.step();
                        step++;
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
                        lastEval = evaluate(policy, objective, collator, eval, refs[1], step);
                        log.append(lastEval);
                    }
                    if ((cfg.checkpointEvery > 0 && step % cfg.checkpointEvery == 0) || end) {
                        Checkpoints.State st = new Checkpoints.State();
                        st.step = step;
                        st.epoch = epoch;
                        st.batchIndex = index;
                        st.config = cfg.toJson();
                        Checkpoints.save(runDir, policy, optimizer, st, modelDir, cfg.keepCheckpoints);
                    }
                }
                Path finalModel = runDir.resolve("final-model");
                ModelFolder.save(policy, finalModel, modelDir);
                MetricsPlot.write(log.rows(), List.of("loss", "rewards/margins", "rewards/accuracies"),
                        "spo4j " + cfg.loss + " (" + cfg.lossImpl + "), beta " + cfg.beta, runDir.resolve("metrics.png"));
                double secs = (System.nanoTime() - t0) / 1e9;
                return new Summary(runDir, finalModel, step, last, lastEval, secs, trainSeconds > 0 ? tokens / trainSeconds : 0);
            }
        }
    }

    private PreferenceObjective.Inputs inputs(Tensor logits, PreferenceBatch batch, double[][] refs, List<Integer> idx) {
        PreferenceObjective.Inputs in = PreferenceObjective.Inputs.of(logits, on(batch.targets()),
                on(floats(refs[0], idx)), on(floats(refs[1], idx)));
        return batch.hasScores() ? in.withScores(on(batch.scoreChosen()), on(batch.scoreRejected())) : in;
    }

    private Map<String, Double> evaluate(LlamaModel policy, PreferenceObjective objective, PreferenceCollator collator,
                                         List<PreferencePair> eval, double[][] refs, int step) {
        Map<String, Double> sums = new LinkedHashMap<>();
        int batches = 0;
        try (NoGradGuard ng = new NoGradGuard()) {
            for (int start = 0; start < eval.size(); start += cfg.batchSize) {
                if (cfg.evalBatches > 0 && batches == cfg.evalBatches) {
                    break;
                }
                int end = Math.min(eval.size(), start + cfg.batchSize);
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
                batches++;
            }
        }
        double n = 0;
        for (int start = 0, b = 0; start < eval.size() && (cfg.evalBatches == 0 || b < cfg.evalBatches);
             start += cfg.batchSize, b++) {
            n += Math.min(eval.size(), start + cfg.batchSize) - start;
        }
        Map<String, Double> row = new LinkedHashMap<>();
        row.put("step", (double) step);
        for (Map.Entry<String, Double> e : sums.entrySet()) {
            row.put("eval/" + e.getKey(), e.getValue() / n);
        }
        return row;
    }

    /** Reference log-probs {train{chosen, rejected}, eval{chosen, rejected}}, stored in the run folder. */
    private double[][][] references(Path runDir, Path modelDir, PreferenceCollator collator, List<PreferencePair> train,
                                    List<PreferencePair> eval, int threads, boolean resuming) throws IOException {
        Path file = runDir.resolve("reference_logps.json");
        if (resuming && Files.exists(file)) {
            return GSON.fromJson(Files.readString(file), double[][][].class);
        }
        double[][][] out = new double[2][][];
        List<List<PreferencePair>> sets = List.of(train, eval);
        LlamaModel reference = null;
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
            out[s] = ReferenceLogProbs.compute(reference, collator, set, cfg.batchSize, threads);
        }
        if (reference != null) {
            reference.close();
        }
        Path tmp = runDir.resolve("reference_logps.json.tmp");
        Files.writeString(tmp, GSON.toJson(out));
        Files.move(tmp, file, java.nio.file.StandardCopyOption.REPLACE_EXISTING,
                java.nio.file.StandardCopyOption.ATOMIC_MOVE);
        return out;
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
