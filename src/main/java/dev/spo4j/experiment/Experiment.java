package dev.spo4j.experiment;

import com.google.gson.GsonBuilder;
import com.google.gson.JsonArray;
import com.google.gson.JsonObject;
import dev.spo4j.data.PreferenceCollator;
import dev.spo4j.data.PreferenceDataset;
import dev.spo4j.data.PreferencePair;
import dev.spo4j.data.SftExample;
import dev.spo4j.data.TextTokenizer;
import dev.spo4j.data.TokenizedPair;
import dev.spo4j.generate.GenerationConfig;
import dev.spo4j.generate.Generator;
import dev.spo4j.io.AtomicFiles;
import dev.spo4j.kernels.LmHeadLogProbs;
import dev.spo4j.kernels.Tensors;
import dev.spo4j.loss.LmHead;
import dev.spo4j.loss.LossType;
import dev.spo4j.loss.PreferenceLoss;
import dev.spo4j.model.LlamaModel;
import dev.spo4j.model.ModelConfig;
import dev.spo4j.model.ModelFolder;
import dev.spo4j.synthetic.EmbeddedDefault;
import dev.spo4j.synthetic.SyntheticPreferences;
import dev.spo4j.train.ReferenceLogProbs;
import dev.spo4j.train.SequenceLogProbs;
import dev.spo4j.train.SftConfig;
import dev.spo4j.train.SftTrainer;
import dev.spo4j.train.TrainConfig;
import dev.spo4j.train.Trainer;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Random;
import java.util.Set;
import java.util.TreeMap;
import org.bytedeco.pytorch.global.torch;

/**
 * SPO (squared and asymmetric) against DPO, soft-DPO, cDPO, IPO and SPO without scores on a
 * task with a known gold reward and a hackable proxy annotator, in the setting of the DPO
 * paper's controlled experiment (gold reward against KL), reproducible from one seed:
 * <ol>
 *   <li>the synthetic language, its prompts and its gold reward r(x, y) of
 *       {@link SyntheticPreferences};</li>
 *   <li>a small Llama-style model, randomly initialised from the seed, fine-tuned
 *       ({@link SftTrainer}) on prompt + completion where the completions are drawn from
 *       the synthetic grammar → the reference policy πref;</li>
 *   <li>two samples per training prompt from πref (temperature 1), scored by the
 *       {@link ProxyAnnotator} (gold + a per-word bonus the gold reward does not pay + noise)
 *       and ordered by that score; pairs whose two samples are equal or empty are resampled
 *       once, then dropped. Each {@link Arm} gets one view of these pairs: the proxy scores
 *       (spo, spo-exp, soft-dpo: the same information in three shapes), the labels alone
 *       (dpo, cdpo, ipo, spo-m0; {@code -n30}: 30% flipped), or the gold order and scores
 *       (spo-gold, the ceiling);</li>
 *   <li>each arm × β × seed trained by the preference {@link Trainer} from πref with the same
 *       settings, plus a learning-rate check (every arm at one β and seed, lr scaled);</li>
 *   <li>at steps 1, 2, 4, ... and then every {@code evalEvery} steps, through a {@link dev.spo4j.train.StepListener}: one
 *       sample per held-out prompt from the policy (temperature 1) → mean gold reward and
 *       mean noiseless proxy reward; win rate against one fixed πref sample per prompt judged
 *       by the gold reward (ties 1/2); KL(π‖πref) ≈ mean over those samples of log π(y|x) −
 *       log πref(y|x) (EOS included), with the rate of samples that ended with EOS; the mean
 *       summed log-probs of the tracked training pairs and, per pair, the loss's gradient with
 *       respect to them (the kernel's, at the policy's current log-probs: the measured
 *       gradient profile); the gradient norm before clipping, the fraction of clipped steps
 *       and the training loss over the steps since the previous measurement. Step 0 is πref.</li>
 *   <li>reference curves from a pool of πref samples per held-out prompt
 *       ({@link ReferenceCurves}): the KL-optimal policy πref·exp(r/β) by reweighting, and
 *       best-of-n selected by gold and by the proxy.</li>
 * </ol>
 * The run folder gets {@code measurements.csv}, {@code gradients.csv},
 * {@code reference_curves.csv}, {@code summary.json}, {@code table.md}, the plots,
 * {@code config.json} (with the machine, ISA, threads and library versions the numbers
 * depend on), the models, the pairs files and each run's metrics under {@code runs/}.
 *
 * <p>"Held-out prompts" are a fresh draw of the prompt distribution (another seed); the
 * language has only 288 distinct prompts, so their texts also occur among the training
 * prompts: what is held out is the samples, not the prompt texts.
 */
public final class Experiment {
    private static final PrintStream QUIET = new PrintStream(new ByteArrayOutputStream() {
        @Override
        public synchronized void write(byte[] b, int off, int len) {
            // discard the trainer's progress output
        }
    });

    private Experiment() {}

    /**
     * One row of measurements.csv: one training run (arm, beta, lr, seed) measured after
     * {@code step} optimiser steps.
     *
     * @param arm           the grid's arm name (see {@link Arm})
     * @param beta          the run's beta
     * @param lr            the run's peak learning rate
     * @param seed          the run's training seed, 0 to {@link ExperimentConfig#seeds} - 1
     * @param step          optimiser steps done; 0 is πref itself
     * @param goldReward    mean gold reward of one policy sample per held-out prompt
     * @param proxyReward   mean noiseless proxy reward of the same samples
     * @param winRate       fraction of held-out prompts whose policy sample beats the fixed πref
     *                      sample by gold reward (ties count 1/2)
     * @param kl            KL(π‖πref) estimate in nats: mean of log π(y|x) − log πref(y|x) over
     *                      those samples (0 at step 0)
     * @param logpsChosen   mean summed policy log-prob of the tracked training pairs' chosen
     *                      completions
     * @param logpsRejected the same for their rejected completions
     * @param gradNorm      mean gradient norm (before clipping) over the steps since the
     *                      previous row; NaN at step 0
     * @param clipRate      fraction of those steps whose gradient was clipped; NaN at step 0
     * @param trainLoss     mean training loss over those steps; NaN at step 0
     * @param meanLength    mean sample length in tokens, EOS not counted
     * @param eosRate       fraction of samples that ended with EOS
     */
    public record Measurement(String arm, double beta, double lr, int seed, int step, double goldReward,
                              double proxyReward, double winRate, double kl, double logpsChosen, double logpsRejected,
                              double gradNorm, double clipRate, double trainLoss, double meanLength, double eosRate) {}

    /**
     * One row of gradients.csv: a tracked training pair of one run at one measurement, with the
     * gradient of that run's per-pair loss with respect to the policy's summed log-probs.
     *
     * @param arm           the arm
     * @param beta          the run's beta
     * @param seed          the run's seed
     * @param step          optimiser steps done
     * @param pair          the pair's index in the arm's pairs file
     * @param logpChosen    log π(y_w|x) summed over the chosen completion
     * @param logpRejected  log π(y_l|x)
     * @param gradChosen    ∂ℓ/∂log π(y_w|x) of this pair's loss ℓ
     * @param gradRejected  ∂ℓ/∂log π(y_l|x)
     */
    public record GradientRow(String arm, double beta, int seed, int step, int pair, double logpChosen,
                              double logpRejected, double gradChosen, double gradRejected) {}

    /**
     * What {@link #run} produced.
     *
     * @param runDir  the run folder (absolute)
     * @param rows      every row of measurements.csv, in the order written
     * @param gradients every row of gradients.csv
     * @param curves    the reference curves (reference_curves.csv)
     * @param summary   the content of summary.json
     * @param seconds   wall time of the whole experiment
     */
    public record Result(Path runDir, List<Measurement> rows, List<GradientRow> gradients,
                         List<ReferenceCurves.Point> curves, JsonObject summary, double seconds) {}

    /** Everything fixed before the grid: tokenizer, reference, pairs, held-out prompts and reference samples. */
    private static final class Setup {
        TextTokenizer tok;
        LlamaModel reference;
        Path sftDir;
        ProxyAnnotator proxy;
        /** Per pairs file: the tracked pairs and their reference log-probs [2][n]. */
        final Map<String, List<PreferencePair>> tracked = new TreeMap<>();
        final Map<String, double[][]> trackedRef = new TreeMap<>();
        /** Per pairs file: the tracked pairs' completion token counts [2][n] (EOS included). */
        final Map<String, double[][]> trackedTokens = new TreeMap<>();
        List<String> heldOut;
        List<long[]> heldOutIds;
        double[] refRewards;
        PreferenceCollator collator;
    }

    /**
     * Runs the whole experiment into the folder {@code out} (created if missing), printing
     * progress to {@code console}. Validates {@code cfg} first and sets LibTorch's thread count
     * to {@link ExperimentConfig#threads}. I/O errors surface as {@link UncheckedIOException}.
     */
    public static Result run(ExperimentConfig cfg, Path out, PrintStream console) {
        cfg.validate();
        long t0 = System.nanoTime();
        dev.spo4j.kernels.OpenMp.setThreads(cfg.threads);
        try {
            out = out.toAbsolutePath();
            Files.createDirectories(out);
            cfg.environment = RunEnvironment.describe(cfg.threads);
            Files.writeString(out.resolve("config.json"), cfg.toJson());
            Setup s = new Setup();
            JsonObject setupInfo = prepare(cfg, out, s, console);
            List<ReferenceCurves.Point> curves = referenceCurves(cfg, s);
            writeCurves(out.resolve("reference_curves.csv"), curves);
            List<Measurement> rows = new ArrayList<>();
            List<GradientRow> grads = new ArrayList<>();
            Measurement ref = measure(cfg, s, s.reference, null, "reference", 0, 0, 0, 0, seedFor(cfg, 9), null, grads);
            console.printf(Locale.ROOT, "experiment: reference: gold reward %.3f, proxy %.3f, length %.1f, EOS rate %.3f%n",
                    ref.goldReward(), ref.proxyReward(), ref.meanLength(), ref.eosRate());
            List<double[]> grid = new ArrayList<>();  // {beta, lr, seed}
            for (double beta : cfg.betas) {
                for (int seed = 0; seed < cfg.seeds; seed++) {
                    grid.add(new double[] {beta, cfg.lr, seed});
                }
            }
            for (double f : cfg.lrCheckFactors) {
                grid.add(new double[] {cfg.lrCheckBeta, cfg.lr * f, 0});
            }
            for (String armName : cfg.arms) {
                Arm arm = Arm.parse(armName);
                for (double[] g : grid) {
                    long r0 = System.nanoTime();
                    List<Measurement> runRows = trainOne(cfg, s, out, arm, g[0], g[1], (int) g[2], ref, grads);
                    rows.addAll(runRows);
                    Measurement last = runRows.get(runRows.size() - 1);
                    console.printf(Locale.ROOT, "experiment: %-10s beta %.2f lr %.1e seed %d: %d steps in %.0f s, gold %.3f "
                                    + "(proxy %.3f), win rate %.3f, KL %.2f, EOS %.2f, clipped %.0f%%%n", arm.name(), g[0],
                            g[1], (int) g[2], cfg.steps, (System.nanoTime() - r0) / 1e9, last.goldReward(),
                            last.proxyReward(), last.winRate(), last.kl(), last.eosRate(), 100 * last.clipRate());
                }
            }
            writeCsv(out.resolve("measurements.csv"), rows);
            writeGradients(out.resolve("gradients.csv"), grads);
            double seconds = (System.nanoTime() - t0) / 1e9;
            JsonObject summary = ExperimentSummary.summarise(cfg, rows, grads, curves, ref, setupInfo, seconds);
            Files.writeString(out.resolve("summary.json"),
                    new GsonBuilder().setPrettyPrinting().serializeSpecialFloatingPointValues().create().toJson(summary));
            Files.writeString(out.resolve("table.md"), ExperimentSummary.table(summary));
            ExperimentPlots.write(cfg, rows, grads, curves, ref, out);
            s.tok.close();
            console.printf(Locale.ROOT, "experiment: done in %.0f s; results in %s%n", seconds, out);
            return new Result(out, rows, grads, curves, summary, seconds);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /**
     * Rewrites summary.json, table.md and the plots of a finished run folder from its
     * config.json, the CSV files (gradients.csv may be gzipped) and the setup facts of its
     * summary.json (no training).
     */
    public static JsonObject replot(Path out) throws IOException {
        ExperimentConfig cfg = new com.google.gson.Gson().fromJson(Files.readString(out.resolve("config.json")),
                ExperimentConfig.class);
        JsonObject old = com.google.gson.JsonParser.parseString(Files.readString(out.resolve("summary.json")))
                .getAsJsonObject();
        List<Measurement> rows = readCsv(out.resolve("measurements.csv"));
        List<GradientRow> grads = readGradients(out.resolve("gradients.csv"));
        List<ReferenceCurves.Point> curves = readCurves(out.resolve("reference_curves.csv"));
        Measurement ref = rows.stream().filter(m -> m.step() == 0).findFirst().orElseThrow();
        JsonObject summary = ExperimentSummary.summarise(cfg, rows, grads, curves, ref, old.getAsJsonObject("setup"),
                old.get("seconds").getAsDouble());
        Files.writeString(out.resolve("summary.json"),
                new GsonBuilder().setPrettyPrinting().serializeSpecialFloatingPointValues().create().toJson(summary));
        Files.writeString(out.resolve("table.md"), ExperimentSummary.table(summary));
        ExperimentPlots.write(cfg, rows, grads, curves, ref, out);
        return summary;
    }

    /** A seed for stage {@code stage}, derived from the experiment's seed. */
    static long seedFor(ExperimentConfig cfg, int stage) {
        return cfg.seed * 1_000_003L + stage * 7919L;
    }

    private static JsonObject prepare(ExperimentConfig cfg, Path out, Setup s, PrintStream console) throws IOException {
        JsonObject info = new JsonObject();
        // 1. tokenizer + randomly initialised model
        Path init = out.resolve("init-model");
        Path staging = out.resolve("tokenizer");
        SyntheticPreferences.writeTokenizer(staging);
        Path config = staging.resolve("config.json");
        EmbeddedDefault.writeSyntheticConfig(config, cfg.hidden, cfg.intermediate, cfg.layers, cfg.heads, cfg.kvHeads);
        torch.manual_seed(seedFor(cfg, 0));
        LlamaModel initModel = new LlamaModel(ModelConfig.read(config));
        ModelFolder.save(initModel, init, staging);
        initModel.close();
        s.tok = TextTokenizer.load(init);
        s.collator = new PreferenceCollator(s.tok, 160);
        s.proxy = new ProxyAnnotator(cfg.proxyLengthBonus, cfg.proxyNoiseSd);

        // 2. SFT on grammar completions -> reference
        List<SftExample> sft = new ArrayList<>();
        for (PreferencePair p : SyntheticPreferences.generate(cfg.sftPrompts, seedFor(cfg, 1))) {
            sft.add(new SftExample(p.prompt(), p.chosen()));
            sft.add(new SftExample(p.prompt(), p.rejected()));
        }
        SftExample.write(out.resolve("sft.jsonl"), sft);
        SftConfig sc = new SftConfig();
        sc.optim.lr = cfg.sftLr;
        sc.batchSize = cfg.sftBatch;
        sc.maxSteps = cfg.sftSteps;
        sc.seed = seedFor(cfg, 1);
        sc.threads = cfg.threads;
        sc.lmHead = cfg.lmHead;
        sc.logEvery = Math.max(1, cfg.sftSteps / 5);
        LlamaModel model = ModelFolder.load(init);
        long t = System.nanoTime();
        SftTrainer.Summary ss = SftTrainer.train(model, s.tok, sft, sc, null);
        s.sftDir = out.resolve("sft-model");
        ModelFolder.save(model, s.sftDir, init);
        s.reference = model;
        console.printf(Locale.ROOT, "experiment: SFT %d steps on %d examples: loss %.3f -> %.3f (%.0f s)%n",
                ss.steps(), sft.size(), ss.firstLoss(), ss.lastLoss(), (System.nanoTime() - t) / 1e9);
        info.addProperty("sft_first_loss", ss.firstLoss());
        info.addProperty("sft_last_loss", ss.lastLoss());

        // 3. preference pairs from the reference, scored by the proxy annotator
        t = System.nanoTime();
        List<String> prompts = new ArrayList<>();
        for (PreferencePair p : SyntheticPreferences.generate(cfg.pairs, seedFor(cfg, 2))) {
            prompts.add(p.prompt());
        }
        List<long[]> ids = promptIds(s.tok, prompts);
        List<String> a = texts(s, ids, cfg.maxNewTokens, seedFor(cfg, 3)), b = texts(s, ids, cfg.maxNewTokens, seedFor(cfg, 4)),
                c = texts(s, ids, cfg.maxNewTokens, seedFor(cfg, 5));
        Random annotator = new Random(seedFor(cfg, 6)), flips = new Random(seedFor(cfg, 10));
        List<PreferencePair> proxyPairs = new ArrayList<>(), goldPairs = new ArrayList<>(), labels = new ArrayList<>(),
                noisy = new ArrayList<>();
        int dropped = 0, proxyAgrees = 0, goldTies = 0;
        for (int i = 0; i < prompts.size(); i++) {
            String x = a.get(i), y = b.get(i).equals(x) || b.get(i).isBlank() ? c.get(i) : b.get(i);
            if (x.isBlank() || y.isBlank() || x.equals(y)) {
                dropped++;
                continue;
            }
            String prompt = prompts.get(i), src = "experiment:" + (i + 1);
            PreferencePair p = ProxyAnnotator.byScore(prompt, x, y, s.proxy.score(prompt, x, annotator),
                    s.proxy.score(prompt, y, annotator), src);
            double gx = SyntheticPreferences.goldReward(prompt, x), gy = SyntheticPreferences.goldReward(prompt, y);
            PreferencePair g = ProxyAnnotator.byScore(prompt, x, y, gx, gy, src);
            double gc = SyntheticPreferences.goldReward(prompt, p.chosen()), gr = SyntheticPreferences.goldReward(prompt, p.rejected());
            proxyAgrees += gc > gr ? 1 : 0;
            goldTies += gx == gy ? 1 : 0;
            proxyPairs.add(p);
            goldPairs.add(g);
            labels.add(ProxyAnnotator.labelOnly(p, 0, flips));
        }
        if (proxyPairs.size() < 2) {
            throw new IllegalStateException("the reference produced fewer than 2 usable pairs (" + dropped
                    + " dropped): it does not generate varied completions");
        }
        Random noise = new Random(seedFor(cfg, 11));
        for (PreferencePair p : proxyPairs) {
            noisy.add(ProxyAnnotator.labelOnly(p, Arm.NOISE, noise));
        }
        Map<String, List<PreferencePair>> files = Map.of("pairs-proxy.jsonl", proxyPairs, "pairs-gold.jsonl", goldPairs,
                "pairs-labels.jsonl", labels, "pairs-labels-n30.jsonl", noisy);
        for (Map.Entry<String, List<PreferencePair>> f : files.entrySet()) {
            PreferenceDataset.write(out.resolve(f.getKey()), f.getValue());
            List<PreferencePair> tracked = f.getValue().subList(0, Math.min(cfg.logpsPairs, f.getValue().size()));
            s.tracked.put(f.getKey(), tracked);
            s.trackedRef.put(f.getKey(), ReferenceLogProbs.compute(s.reference, s.collator, tracked, 32, cfg.threads,
                    cfg.lmHead, LmHeadLogProbs.DEFAULT_CHUNK_BYTES));
            double[][] tokens = new double[2][tracked.size()];
            for (int i = 0; i < tracked.size(); i++) {
                TokenizedPair tp = s.collator.tokenize(tracked.get(i));
                tokens[0][i] = tp.chosen().length;
                tokens[1][i] = tp.rejected().length;
            }
            s.trackedTokens.put(f.getKey(), tokens);
        }
        int n = proxyPairs.size();
        Set<String> distinct = new HashSet<>(a);
        console.printf(Locale.ROOT, "experiment: %d pairs from the reference (%d dropped); the proxy's chosen has the "
                        + "higher gold reward in %.1f%%, gold ties %.1f%%; %d distinct samples of %d (%.0f s)%n", n, dropped,
                100.0 * proxyAgrees / n, 100.0 * goldTies / n, distinct.size(), a.size(), (System.nanoTime() - t) / 1e9);
        info.addProperty("pairs", n);
        info.addProperty("pairs_dropped", dropped);
        info.addProperty("proxy_order_agrees_with_gold", (double) proxyAgrees / n);
        info.addProperty("gold_ties", (double) goldTies / n);
        info.addProperty("reference_distinct_sample_fraction", (double) distinct.size() / a.size());

        // held-out prompts and the fixed reference samples the win rate compares against
        s.heldOut = new ArrayList<>();
        for (PreferencePair p : SyntheticPreferences.generate(cfg.heldOutPrompts, seedFor(cfg, 7))) {
            s.heldOut.add(p.prompt());
        }
        s.heldOutIds = promptIds(s.tok, s.heldOut);
        List<Generator.Sample> refSamples = Generator.generate(s.reference, s.heldOutIds, s.tok.eosId(),
                GenerationConfig.sampling(cfg.maxNewTokens, seedFor(cfg, 8)));
        s.refRewards = new double[refSamples.size()];
        for (int i = 0; i < refSamples.size(); i++) {
            s.refRewards[i] = SyntheticPreferences.goldReward(s.heldOut.get(i), s.tok.decode(refSamples.get(i).tokens()));
        }
        return info;
    }

    /** The KL-optimal and best-of-n curves from {@link ExperimentConfig#referencePool} πref samples per held-out prompt. */
    private static List<ReferenceCurves.Point> referenceCurves(ExperimentConfig cfg, Setup s) {
        int pool = cfg.referencePool, n = s.heldOut.size();
        double[][] gold = new double[n][pool], proxy = new double[n][pool];
        Random annotator = new Random(seedFor(cfg, 12));
        for (int k = 0; k < pool; k++) {
            List<String> samples = texts(s, s.heldOutIds, cfg.maxNewTokens, seedFor(cfg, 13) + k);
            for (int i = 0; i < n; i++) {
                gold[i][k] = SyntheticPreferences.goldReward(s.heldOut.get(i), samples.get(i));
                proxy[i][k] = s.proxy.score(s.heldOut.get(i), samples.get(i), annotator);
            }
        }
        double[] betas = new double[25];
        for (int i = 0; i < betas.length; i++) {
            betas[i] = Math.pow(10, 1.5 - 0.1 * i);  // 31.6 down to 0.13
        }
        return ReferenceCurves.all(gold, proxy, betas);
    }

    private static List<String> texts(Setup s, List<long[]> ids, int maxNewTokens, long seed) {
        List<String> out = new ArrayList<>();
        for (Generator.Sample g : Generator.generate(s.reference, ids, s.tok.eosId(),
                GenerationConfig.sampling(maxNewTokens, seed))) {
            out.add(s.tok.decode(g.tokens()));
        }
        return out;
    }

    private static List<long[]> promptIds(TextTokenizer tok, List<String> prompts) {
        List<long[]> ids = new ArrayList<>();
        for (String p : prompts) {
            ids.add(Generator.promptIds(tok, p));
        }
        return ids;
    }

    /** The trainer's settings for one run of the grid. */
    static TrainConfig trainConfig(ExperimentConfig cfg, Path out, Arm arm, double beta, double lr, int seed,
                                   String name) {
        TrainConfig tc = new TrainConfig();
        tc.data = out.resolve(arm.pairsFile()).toString();
        tc.out = out.resolve("runs").resolve(name).toString();
        tc.loss = arm.loss();
        tc.labelSmoothing = arm.cdpo() ? cfg.cdpoLabelSmoothing : 0.0;
        tc.beta = beta;
        tc.optim.lr = lr;
        tc.optim.schedule = cfg.schedule;
        tc.optim.warmupSteps = cfg.warmupSteps;
        tc.optim.maxGradNorm = cfg.maxGradNorm;
        tc.batchSize = cfg.batchSize;
        tc.maxSteps = cfg.steps;
        tc.maxLength = 160;
        tc.seed = seedFor(cfg, 100 + seed);
        tc.threads = cfg.threads;
        tc.lmHead = cfg.lmHead;
        tc.checkpointEvery = 0;
        tc.keepCheckpoints = 1;
        return tc;
    }

    private static List<Measurement> trainOne(ExperimentConfig cfg, Setup s, Path out, Arm arm, double beta, double lr,
                                              int seed, Measurement ref, List<GradientRow> grads) throws IOException {
        String name = String.format(Locale.ROOT, "%s-beta%s-lr%s-seed%d", arm.name(), beta, lr, seed);
        TrainConfig tc = trainConfig(cfg, out, arm, beta, lr, seed, name);
        tc.model = s.sftDir.toString();
        PreferenceLoss loss = new PreferenceLoss(tc.lossConfig());
        List<Measurement> rows = new ArrayList<>();
        double[][] refLps = s.trackedRef.get(arm.pairsFile());
        rows.add(new Measurement(arm.name(), beta, lr, seed, 0, ref.goldReward(), ref.proxyReward(), ref.winRate(),
                ref.kl(), mean(refLps[0]), mean(refLps[1]), Double.NaN, Double.NaN, Double.NaN, ref.meanLength(),
                ref.eosRate()));
        gradientProfile(s, arm, beta, seed, 0, loss, s.trackedRef.get(arm.pairsFile())[0],
                s.trackedRef.get(arm.pairsFile())[1], grads);
        double[] acc = new double[4];  // grad-norm sum, clipped steps, loss sum, steps since the last measurement
        new Trainer(tc, QUIET).withOverwrite(true).withListener((step, policy, m) -> {
            double g = m.getOrDefault("grad_norm", Double.NaN);
            acc[0] += g;
            acc[1] += cfg.maxGradNorm > 0 && g > cfg.maxGradNorm ? 1 : 0;
            acc[2] += m.getOrDefault("loss", Double.NaN);
            acc[3]++;
            if (cfg.measures(step)) {
                rows.add(measure(cfg, s, policy, arm, arm.name(), beta, lr, seed, step,
                        seedFor(cfg, 9) + 1000L * (seed + 1) + step, new double[] {acc[0] / acc[3], acc[1] / acc[3],
                                acc[2] / acc[3]}, grads, loss));
                acc[0] = acc[1] = acc[2] = acc[3] = 0;
            }
        }).run();
        Path runDir = Path.of(tc.out);
        AtomicFiles.deleteTree(runDir.resolve("checkpoints"));
        AtomicFiles.deleteTree(runDir.resolve("final-model"));
        return rows;
    }

    /**
     * The per-pair loss gradient at the policy's log-probs of the arm's tracked pairs, from the
     * same kernel and settings the trainer uses (the batch mean's gradient times the pair count:
     * the gradient of the pair's own loss).
     */
    private static void gradientProfile(Setup s, Arm arm, double beta, int seed, int step, PreferenceLoss loss,
                                        double[] chosen, double[] rejected, List<GradientRow> grads) {
        List<PreferencePair> tracked = s.tracked.get(arm.pairsFile());
        double[][] ref = s.trackedRef.get(arm.pairsFile());
        int n = tracked.size();
        PreferenceLoss.Inputs in = PreferenceLoss.Inputs.of(Tensors.floats(chosen), Tensors.floats(rejected),
                Tensors.floats(ref[0]), Tensors.floats(ref[1]));
        if (tracked.get(0).hasScores()) {
            double[] sc = new double[n], sr = new double[n];
            for (int i = 0; i < n; i++) {
                sc[i] = tracked.get(i).scoreChosen();
                sr[i] = tracked.get(i).scoreRejected();
            }
            in = in.withScores(Tensors.floats(sc), Tensors.floats(sr));
        }
        if (loss.config().lengthNormalised()) {  // IPO: the loss sees mean per-token log-probs, as in training
            double[][] tokens = s.trackedTokens.get(arm.pairsFile());
            in = in.withTokenCounts(Tensors.floats(tokens[0]), Tensors.floats(tokens[1]));
        }
        PreferenceLoss.Result r = loss.compute(in);
        double[] gc = Tensors.toDoubles(r.gradChosen()), gr = Tensors.toDoubles(r.gradRejected());
        for (int i = 0; i < n; i++) {
            grads.add(new GradientRow(arm.name(), beta, seed, step, i, chosen[i], rejected[i], n * gc[i], n * gr[i]));
        }
    }

    private static Measurement measure(ExperimentConfig cfg, Setup s, LlamaModel policy, Arm arm, String name,
                                       double beta, double lr, int seed, int step, long sampleSeed, double[] window,
                                       List<GradientRow> grads, PreferenceLoss... loss) {
        List<Generator.Sample> samples = Generator.generate(policy, s.heldOutIds, s.tok.eosId(),
                GenerationConfig.sampling(cfg.maxNewTokens, sampleSeed));
        int n = samples.size();
        double reward = 0, proxy = 0, win = 0, length = 0, eos = 0;
        List<long[]> scored = new ArrayList<>(n);
        for (int i = 0; i < n; i++) {
            Generator.Sample g = samples.get(i);
            String text = s.tok.decode(g.tokens());
            double r = SyntheticPreferences.goldReward(s.heldOut.get(i), text);
            reward += r;
            proxy += s.proxy.systematic(s.heldOut.get(i), text);
            win += r > s.refRewards[i] ? 1 : r == s.refRewards[i] ? 0.5 : 0;
            length += g.tokens().length;
            eos += g.endedWithEos() ? 1 : 0;
            long[] y = g.tokens();
            if (g.endedWithEos()) {
                y = java.util.Arrays.copyOf(y, y.length + 1);
                y[y.length - 1] = s.tok.eosId();
            }
            scored.add(y);
        }
        double kl = 0;
        if (policy != s.reference) {
            double[] lp = SequenceLogProbs.of(policy, s.heldOutIds, scored, 64, cfg.threads, cfg.lmHead,
                    LmHeadLogProbs.DEFAULT_CHUNK_BYTES);
            double[] lr0 = SequenceLogProbs.of(s.reference, s.heldOutIds, scored, 64, cfg.threads, cfg.lmHead,
                    LmHeadLogProbs.DEFAULT_CHUNK_BYTES);
            for (int i = 0; i < n; i++) {
                kl += (lp[i] - lr0[i]) / n;
            }
        }
        String file = arm == null ? "pairs-proxy.jsonl" : arm.pairsFile();
        double[][] lps = arm == null ? s.trackedRef.get(file)
                : ReferenceLogProbs.compute(policy, s.collator, s.tracked.get(file), 32, cfg.threads, cfg.lmHead,
                        LmHeadLogProbs.DEFAULT_CHUNK_BYTES);
        if (arm != null) {
            gradientProfile(s, arm, beta, seed, step, loss[0], lps[0], lps[1], grads);
        }
        double[] w = window == null ? new double[] {Double.NaN, Double.NaN, Double.NaN} : window;
        return new Measurement(name, beta, lr, seed, step, reward / n, proxy / n, win / n, kl, mean(lps[0]),
                mean(lps[1]), w[0], w[1], w[2], length / n, eos / n);
    }

    static double mean(double[] v) {
        double s = 0;
        for (double x : v) {
            s += x;
        }
        return s / v.length;
    }

    private static final String CSV_HEADER = "arm,beta,lr,seed,step,gold_reward,proxy_reward,win_rate,kl,logps_chosen,"
            + "logps_rejected,grad_norm,clip_rate,train_loss,mean_length,eos_rate";

    private static void writeCsv(Path file, List<Measurement> rows) throws IOException {
        StringBuilder sb = new StringBuilder(CSV_HEADER).append('\n');
        for (Measurement m : rows) {
            sb.append(String.format(Locale.ROOT, "%s,%s,%s,%d,%d,%.5f,%.5f,%.5f,%.5f,%.4f,%.4f,%.5g,%.4f,%.5g,%.3f,%.4f%n",
                    m.arm(), m.beta(), m.lr(), m.seed(), m.step(), m.goldReward(), m.proxyReward(), m.winRate(), m.kl(),
                    m.logpsChosen(), m.logpsRejected(), m.gradNorm(), m.clipRate(), m.trainLoss(), m.meanLength(),
                    m.eosRate()));
        }
        AtomicFiles.writeString(file, sb.toString());
    }

    static List<Measurement> readCsv(Path file) throws IOException {
        List<String> lines = Files.readAllLines(file);
        if (lines.isEmpty() || !lines.get(0).equals(CSV_HEADER)) {
            throw new IOException(file + ": not a measurements.csv of this version (expected the header " + CSV_HEADER + ")");
        }
        List<Measurement> rows = new ArrayList<>();
        for (String line : lines.subList(1, lines.size())) {
            String[] f = line.split(",");
            double[] d = new double[f.length];
            for (int i = 5; i < f.length; i++) {
                d[i] = Double.parseDouble(f[i]);
            }
            rows.add(new Measurement(f[0], Double.parseDouble(f[1]), Double.parseDouble(f[2]), Integer.parseInt(f[3]),
                    Integer.parseInt(f[4]), d[5], d[6], d[7], d[8], d[9], d[10], d[11], d[12], d[13], d[14], d[15]));
        }
        return rows;
    }

    private static void writeGradients(Path file, List<GradientRow> rows) throws IOException {
        StringBuilder sb = new StringBuilder("arm,beta,seed,step,pair,logp_chosen,logp_rejected,grad_chosen,grad_rejected\n");
        for (GradientRow g : rows) {
            sb.append(String.format(Locale.ROOT, "%s,%s,%d,%d,%d,%.4f,%.4f,%.6g,%.6g%n", g.arm(), g.beta(), g.seed(),
                    g.step(), g.pair(), g.logpChosen(), g.logpRejected(), g.gradChosen(), g.gradRejected()));
        }
        AtomicFiles.writeString(file, sb.toString());
    }

    /** Reads gradients.csv, or gradients.csv.gz beside it when only that exists (as committed results keep it). */
    static List<GradientRow> readGradients(Path file) throws IOException {
        Path gz = file.resolveSibling(file.getFileName() + ".gz");
        List<String> lines;
        if (!Files.exists(file) && Files.exists(gz)) {
            try (java.io.BufferedReader r = new java.io.BufferedReader(new java.io.InputStreamReader(
                    new java.util.zip.GZIPInputStream(Files.newInputStream(gz)), java.nio.charset.StandardCharsets.UTF_8))) {
                lines = r.lines().toList();
            }
        } else {
            lines = Files.readAllLines(file);
        }
        List<GradientRow> rows = new ArrayList<>();
        for (String line : lines.subList(1, lines.size())) {
            String[] f = line.split(",");
            rows.add(new GradientRow(f[0], Double.parseDouble(f[1]), Integer.parseInt(f[2]), Integer.parseInt(f[3]),
                    Integer.parseInt(f[4]), Double.parseDouble(f[5]), Double.parseDouble(f[6]), Double.parseDouble(f[7]),
                    Double.parseDouble(f[8])));
        }
        return rows;
    }

    private static void writeCurves(Path file, List<ReferenceCurves.Point> points) throws IOException {
        StringBuilder sb = new StringBuilder("kind,param,kl,gold,ess\n");
        for (ReferenceCurves.Point p : points) {
            sb.append(String.format(Locale.ROOT, "%s,%.6g,%.6g,%.6g,%.6g%n", p.kind(), p.param(), p.kl(), p.gold(), p.ess()));
        }
        AtomicFiles.writeString(file, sb.toString());
    }

    static List<ReferenceCurves.Point> readCurves(Path file) throws IOException {
        List<String> lines = Files.readAllLines(file);
        List<ReferenceCurves.Point> points = new ArrayList<>();
        for (String line : lines.subList(1, lines.size())) {
            String[] f = line.split(",");
            points.add(new ReferenceCurves.Point(f[0], Double.parseDouble(f[1]), Double.parseDouble(f[2]),
                    Double.parseDouble(f[3]), Double.parseDouble(f[4])));
        }
        return points;
    }

    static JsonArray array(double[] v) {
        JsonArray a = new JsonArray();
        for (double x : v) {
            a.add(x);
        }
        return a;
    }
}
