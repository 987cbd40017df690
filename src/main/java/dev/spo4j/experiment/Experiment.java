package dev.spo4j.experiment;

import com.google.gson.GsonBuilder;
import com.google.gson.JsonArray;
import com.google.gson.JsonObject;
import dev.spo4j.data.PreferenceCollator;
import dev.spo4j.data.PreferenceDataset;
import dev.spo4j.data.PreferencePair;
import dev.spo4j.data.SftExample;
import dev.spo4j.data.TextTokenizer;
import dev.spo4j.generate.GenerationConfig;
import dev.spo4j.generate.Generator;
import dev.spo4j.io.AtomicFiles;
import dev.spo4j.kernels.LmHeadLogProbs;
import dev.spo4j.loss.LmHead;
import dev.spo4j.loss.LossType;
import dev.spo4j.model.LlamaModel;
import dev.spo4j.model.ModelConfig;
import dev.spo4j.model.ModelFolder;
import dev.spo4j.report.Chart;
import dev.spo4j.synthetic.EmbeddedDefault;
import dev.spo4j.synthetic.SyntheticPreferences;
import dev.spo4j.train.ReferenceLogProbs;
import dev.spo4j.train.SequenceLogProbs;
import dev.spo4j.train.SftConfig;
import dev.spo4j.train.SftTrainer;
import dev.spo4j.train.TrainConfig;
import dev.spo4j.train.Trainer;
import java.awt.Color;
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
 * SPO vs DPO vs IPO vs cDPO on a task with a known gold reward, in the setting of the DPO
 * paper's controlled experiment (a reward-vs-KL frontier), reproducible from one seed:
 * <ol>
 *   <li>the synthetic language, its prompts and its gold reward r(x, y) of
 *       {@link SyntheticPreferences};</li>
 *   <li>a small Llama-style model, randomly initialised from the seed, fine-tuned
 *       ({@link SftTrainer}) on prompt + completion where the completions are drawn from
 *       the synthetic grammar (both completions of each synthetic pair, so the SFT data is
 *       not tilted towards the reward) → the reference policy πref;</li>
 *   <li>two samples per training prompt from πref ({@link Generator}, temperature 1),
 *       labelled by {@link BradleyTerry} on the gold reward (noisy), gold rewards kept as
 *       score_chosen/score_rejected; pairs whose two samples are equal or empty are
 *       resampled once, then dropped;</li>
 *   <li>each loss × β × seed trained by the preference {@link Trainer} from πref on the same
 *       pairs with the same settings (cDPO = DPO with label smoothing
 *       {@link ExperimentConfig#cdpoLabelSmoothing}). SPO's target margin comes from the
 *       pairs' gold scores (m = score_chosen - score_rejected), information the other losses
 *       do not get; {@code spo-m0} is the control: SPO on the same pairs with the scores
 *       removed, so its target is the constant margin m0 = 1 (labels only, like DPO);</li>
 *   <li>every {@code evalEvery} steps, through a {@link dev.spo4j.train.StepListener}: one
 *       sample per held-out prompt from the policy (temperature 1) → mean gold reward; win
 *       rate against one fixed πref sample per prompt judged by the gold reward (ties 1/2);
 *       KL(π‖πref) ≈ mean over those samples of log π(y|x) − log πref(y|x) (EOS included);
 *       the mean summed log-probs of a fixed subset of training pairs' chosen and rejected
 *       completions; the gradient norm (before clipping) and training loss, averaged over
 *       the steps since the previous measurement. Step 0 is πref itself.</li>
 * </ol>
 * The run folder gets {@code measurements.csv}, {@code summary.json}, {@code table.md},
 * {@code frontier.png}, {@code win_rate.png}, {@code logps.png}, {@code grad_norm.png},
 * {@code config.json}, the models ({@code init-model/}, {@code sft-model/}), the pairs
 * ({@code pairs.jsonl}, {@code sft.jsonl}) and each training run's metrics under
 * {@code runs/} (checkpoints deleted).
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
     * One row of measurements.csv: one training run (loss, beta, seed) measured after
     * {@code step} optimiser steps.
     *
     * @param loss          the grid's loss name ("spo", "spo-m0", "dpo", "ipo", "cdpo", "hinge")
     * @param beta          the run's beta
     * @param seed          the run's training seed, 0 to {@link ExperimentConfig#seeds} - 1
     * @param step          optimiser steps done; 0 is πref itself
     * @param goldReward    mean gold reward of one policy sample per held-out prompt
     * @param winRate       fraction of held-out prompts whose policy sample beats the fixed πref
     *                      sample by gold reward (ties count 1/2)
     * @param kl            KL(π‖πref) estimate in nats: mean of log π(y|x) − log πref(y|x) over
     *                      those samples (0 at step 0)
     * @param logpsChosen   mean summed policy log-prob of the tracked training pairs' chosen
     *                      completions
     * @param logpsRejected the same for their rejected completions
     * @param gradNorm      mean gradient norm (before clipping) over the steps since the
     *                      previous row; NaN at step 0
     * @param trainLoss     mean training loss over those steps; NaN at step 0
     * @param meanLength    mean sample length in tokens, EOS not counted
     * @param eosRate       fraction of samples that ended with EOS
     */
    public record Measurement(String loss, double beta, int seed, int step, double goldReward, double winRate,
                              double kl, double logpsChosen, double logpsRejected, double gradNorm,
                              double trainLoss, double meanLength, double eosRate) {}

    /**
     * What {@link #run} produced.
     *
     * @param runDir  the run folder (absolute)
     * @param rows    every row of measurements.csv, in the order written
     * @param summary the content of summary.json
     * @param seconds wall time of the whole experiment
     */
    public record Result(Path runDir, List<Measurement> rows, JsonObject summary, double seconds) {}

    /** Everything fixed before the grid: tokenizer, reference, pairs, held-out prompts and reference samples. */
    private static final class Setup {
        TextTokenizer tok;
        LlamaModel reference;
        Path sftDir;
        List<PreferencePair> pairs;
        List<PreferencePair> logpsPairs;
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
        torch.set_num_threads(cfg.threads);
        try {
            out = out.toAbsolutePath();
            Files.createDirectories(out);
            Files.writeString(out.resolve("config.json"), cfg.toJson());
            Setup s = new Setup();
            JsonObject setupInfo = prepare(cfg, out, s, console);
            List<Measurement> rows = new ArrayList<>();
            Measurement ref = measure(cfg, s, s.reference, "reference", 0, 0, 0, seedFor(cfg, 9), Double.NaN,
                    Double.NaN);
            console.printf(Locale.ROOT, "experiment: reference: gold reward %.3f, win rate vs itself %.3f, length %.1f%n",
                    ref.goldReward(), ref.winRate(), ref.meanLength());
            for (String loss : cfg.losses) {
                for (double beta : cfg.betas) {
                    for (int seed = 0; seed < cfg.seeds; seed++) {
                        long r0 = System.nanoTime();
                        List<Measurement> runRows = trainOne(cfg, s, out, loss, beta, seed, ref);
                        rows.addAll(runRows);
                        Measurement last = runRows.get(runRows.size() - 1);
                        console.printf(Locale.ROOT, "experiment: %-4s beta %.2f seed %d: %d steps in %.0f s, final win "
                                        + "rate %.3f, gold %.3f, KL %.2f, logps c/r %.1f/%.1f%n", loss, beta, seed,
                                cfg.steps, (System.nanoTime() - r0) / 1e9, last.winRate(), last.goldReward(),
                                last.kl(), last.logpsChosen(), last.logpsRejected());
                    }
                }
            }
            writeCsv(out.resolve("measurements.csv"), rows);
            double seconds = (System.nanoTime() - t0) / 1e9;
            JsonObject summary = ExperimentSummary.summarise(cfg, rows, ref, setupInfo, seconds);
            Files.writeString(out.resolve("summary.json"),
                    new GsonBuilder().setPrettyPrinting().serializeSpecialFloatingPointValues().create().toJson(summary));
            Files.writeString(out.resolve("table.md"), ExperimentSummary.table(summary));
            plots(cfg, rows, ref, out);
            s.tok.close();
            console.printf(Locale.ROOT, "experiment: done in %.0f s; results in %s%n", seconds, out);
            return new Result(out, rows, summary, seconds);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /**
     * Rewrites summary.json, table.md and the plots of a finished run folder from its
     * config.json, measurements.csv and the setup facts of its summary.json (no training).
     */
    public static JsonObject replot(Path out) throws IOException {
        ExperimentConfig cfg = new com.google.gson.Gson().fromJson(Files.readString(out.resolve("config.json")),
                ExperimentConfig.class);
        JsonObject old = com.google.gson.JsonParser.parseString(Files.readString(out.resolve("summary.json")))
                .getAsJsonObject();
        List<Measurement> rows = readCsv(out.resolve("measurements.csv"));
        Measurement ref = rows.stream().filter(m -> m.step() == 0).findFirst().orElseThrow();
        JsonObject summary = ExperimentSummary.summarise(cfg, rows, ref, old.getAsJsonObject("setup"),
                old.get("seconds").getAsDouble());
        Files.writeString(out.resolve("summary.json"),
                new GsonBuilder().setPrettyPrinting().serializeSpecialFloatingPointValues().create().toJson(summary));
        Files.writeString(out.resolve("table.md"), ExperimentSummary.table(summary));
        plots(cfg, rows, ref, out);
        return summary;
    }

    static List<Measurement> readCsv(Path file) throws IOException {
        List<String> lines = Files.readAllLines(file);
        List<Measurement> rows = new ArrayList<>();
        for (String line : lines.subList(1, lines.size())) {
            String[] f = line.split(",");
            rows.add(new Measurement(f[0], Double.parseDouble(f[1]), Integer.parseInt(f[2]), Integer.parseInt(f[3]),
                    Double.parseDouble(f[4]), Double.parseDouble(f[5]), Double.parseDouble(f[6]),
                    Double.parseDouble(f[7]), Double.parseDouble(f[8]), Double.parseDouble(f[9]),
                    Double.parseDouble(f[10]), Double.parseDouble(f[11]), Double.parseDouble(f[12])));
        }
        return rows;
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
        s.collator = new PreferenceCollator(s.tok, 128);

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

        // 3. preference pairs from the reference, labelled by Bradley-Terry on the gold reward
        t = System.nanoTime();
        List<String> prompts = new ArrayList<>();
        for (PreferencePair p : SyntheticPreferences.generate(cfg.pairs, seedFor(cfg, 2))) {
            prompts.add(p.prompt());
        }
        List<long[]> ids = promptIds(s.tok, prompts);
        List<String> a = texts(s, ids, cfg.maxNewTokens, seedFor(cfg, 3)), b = texts(s, ids, cfg.maxNewTokens, seedFor(cfg, 4)),
                c = texts(s, ids, cfg.maxNewTokens, seedFor(cfg, 5));
        Random labeller = new Random(seedFor(cfg, 6));
        List<PreferencePair> pairs = new ArrayList<>();
        int dropped = 0, agree = 0;
        for (int i = 0; i < prompts.size(); i++) {
            String x = a.get(i), y = b.get(i).equals(x) || b.get(i).isBlank() ? c.get(i) : b.get(i);
            if (x.isBlank() || y.isBlank() || x.equals(y)) {
                dropped++;
                continue;
            }
            PreferencePair p = BradleyTerry.label(prompts.get(i), x, y, labeller, "experiment:" + (i + 1));
            agree += p.scoreChosen() > p.scoreRejected() ? 1 : 0;
            pairs.add(p);
        }
        if (pairs.size() < 2) {
            throw new IllegalStateException("the reference produced fewer than 2 usable pairs (" + dropped
                    + " dropped): it does not generate varied completions");
        }
        s.pairs = pairs;
        s.logpsPairs = pairs.subList(0, Math.min(cfg.logpsPairs, pairs.size()));
        PreferenceDataset.write(out.resolve("pairs.jsonl"), pairs);
        List<PreferencePair> labelsOnly = new ArrayList<>();
        for (PreferencePair p : pairs) {
            labelsOnly.add(new PreferencePair(p.prompt(), p.chosen(), p.rejected(), null, null, null, null, p.source()));
        }
        PreferenceDataset.write(out.resolve("pairs-labels-only.jsonl"), labelsOnly);
        double agreement = (double) agree / pairs.size();
        Set<String> distinct = new HashSet<>(a);
        console.printf(Locale.ROOT, "experiment: %d pairs from the reference (%d dropped), label = higher gold reward "
                        + "in %.1f%%, %d distinct samples of %d (%.0f s)%n", pairs.size(), dropped, 100 * agreement,
                distinct.size(), a.size(), (System.nanoTime() - t) / 1e9);
        info.addProperty("pairs", pairs.size());
        info.addProperty("pairs_dropped", dropped);
        info.addProperty("label_agrees_with_gold", agreement);
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

    private static List<Measurement> trainOne(ExperimentConfig cfg, Setup s, Path out, String loss, double beta,
                                              int seed, Measurement ref) throws IOException {
        String name = String.format(Locale.ROOT, "%s-beta%s-seed%d", loss, beta, seed);
        Path runDir = out.resolve("runs").resolve(name);
        TrainConfig tc = new TrainConfig();
        tc.model = s.sftDir.toString();
        // spo-m0: SPO from the labels alone (constant target margin m0), the same information DPO gets
        tc.data = out.resolve(loss.equals("spo-m0") ? "pairs-labels-only.jsonl" : "pairs.jsonl").toString();
        tc.out = runDir.toString();
        tc.loss = LossType.parse(loss.equals("cdpo") ? "dpo" : loss.equals("spo-m0") ? "spo" : loss);
        tc.labelSmoothing = loss.equals("cdpo") ? cfg.cdpoLabelSmoothing : 0.0;
        tc.beta = beta;
        tc.optim.lr = cfg.lr;
        tc.optim.schedule = cfg.schedule;
        tc.optim.warmupSteps = cfg.warmupSteps;
        tc.batchSize = cfg.batchSize;
        tc.maxSteps = cfg.steps;
        tc.maxLength = 128;
        tc.seed = seedFor(cfg, 100 + seed);
        tc.threads = cfg.threads;
        tc.lmHead = cfg.lmHead;
        tc.checkpointEvery = 0;
        tc.keepCheckpoints = 1;
        List<Measurement> rows = new ArrayList<>();
        rows.add(new Measurement(loss, beta, seed, 0, ref.goldReward(), ref.winRate(), ref.kl(), ref.logpsChosen(),
                ref.logpsRejected(), Double.NaN, Double.NaN, ref.meanLength(), ref.eosRate()));
        double[] acc = new double[3];  // grad-norm sum, loss sum, steps since the last measurement
        new Trainer(tc, QUIET).withListener((step, policy, m) -> {
            acc[0] += m.getOrDefault("grad_norm", Double.NaN);
            acc[1] += m.getOrDefault("loss", Double.NaN);
            acc[2]++;
            if (step % cfg.evalEvery == 0 || step == cfg.steps) {
                rows.add(measure(cfg, s, policy, loss, beta, seed, step,
                        seedFor(cfg, 9) + 1000L * (seed + 1) + step, acc[0] / acc[2], acc[1] / acc[2]));
                acc[0] = acc[1] = acc[2] = 0;
            }
        }).run();
        AtomicFiles.deleteTree(runDir.resolve("checkpoints"));
        AtomicFiles.deleteTree(runDir.resolve("final-model"));
        return rows;
    }

    private static Measurement measure(ExperimentConfig cfg, Setup s, LlamaModel policy, String loss, double beta,
                                       int seed, int step, long sampleSeed, double gradNorm, double trainLoss) {
        List<Generator.Sample> samples = Generator.generate(policy, s.heldOutIds, s.tok.eosId(),
                GenerationConfig.sampling(cfg.maxNewTokens, sampleSeed));
        int n = samples.size();
        double reward = 0, win = 0, length = 0, eos = 0;
        List<long[]> scored = new ArrayList<>(n);
        for (int i = 0; i < n; i++) {
            Generator.Sample g = samples.get(i);
            double r = SyntheticPreferences.goldReward(s.heldOut.get(i), s.tok.decode(g.tokens()));
            reward += r;
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
            double[] lr = SequenceLogProbs.of(s.reference, s.heldOutIds, scored, 64, cfg.threads, cfg.lmHead,
                    LmHeadLogProbs.DEFAULT_CHUNK_BYTES);
            for (int i = 0; i < n; i++) {
                kl += (lp[i] - lr[i]) / n;
            }
        }
        double[][] lps = ReferenceLogProbs.compute(policy, s.collator, s.logpsPairs, 32, cfg.threads, cfg.lmHead,
                LmHeadLogProbs.DEFAULT_CHUNK_BYTES);
        return new Measurement(loss, beta, seed, step, reward / n, win / n, kl, mean(lps[0]), mean(lps[1]), gradNorm,
                trainLoss, length / n, eos / n);
    }

    static double mean(double[] v) {
        double s = 0;
        for (double x : v) {
            s += x;
        }
        return s / v.length;
    }

    private static void writeCsv(Path file, List<Measurement> rows) throws IOException {
        StringBuilder sb = new StringBuilder("loss,beta,seed,step,gold_reward,win_rate,kl,logps_chosen,logps_rejected,"
                + "grad_norm,train_loss,mean_length,eos_rate\n");
        for (Measurement m : rows) {
            sb.append(String.format(Locale.ROOT, "%s,%s,%d,%d,%.5f,%.5f,%.5f,%.4f,%.4f,%.5g,%.5g,%.3f,%.4f%n",
                    m.loss(), m.beta(), m.seed(), m.step(), m.goldReward(), m.winRate(), m.kl(), m.logpsChosen(),
                    m.logpsRejected(), m.gradNorm(), m.trainLoss(), m.meanLength(), m.eosRate()));
        }
        Files.writeString(file, sb.toString());
    }

    /** Means over seeds per (loss, beta, step): [step, gold, win, kl, chosen, rejected, grad]. */
    static Map<Integer, double[]> meansBySteps(List<Measurement> rows, String loss, double beta) {
        Map<Integer, double[]> sums = new TreeMap<>();
        for (Measurement m : rows) {
            if (m.loss().equals(loss) && m.beta() == beta) {
                double[] a = sums.computeIfAbsent(m.step(), k -> new double[8]);
                a[0] = m.step();
                a[1] += m.goldReward();
                a[2] += m.winRate();
                a[3] += m.kl();
                a[4] += m.logpsChosen();
                a[5] += m.logpsRejected();
                a[6] += m.gradNorm();
                a[7]++;
            }
        }
        for (double[] a : sums.values()) {
            for (int k = 1; k < 7; k++) {
                a[k] /= a[7];
            }
        }
        return sums;
    }

    private static void plots(ExperimentConfig cfg, List<Measurement> rows, Measurement ref, Path out) throws IOException {
        List<Chart.Panel> frontier = new ArrayList<>(), win = new ArrayList<>(), logps = new ArrayList<>(),
                grad = new ArrayList<>();
        for (double beta : cfg.betas) {
            List<Chart.Series> f = new ArrayList<>(), w = new ArrayList<>(), l = new ArrayList<>(), g = new ArrayList<>();
            for (String loss : cfg.losses) {
                Color c = Chart.colorOf(loss);
                List<double[]> fp = new ArrayList<>(), wp = new ArrayList<>(), cp = new ArrayList<>(),
                        rp = new ArrayList<>(), gp = new ArrayList<>();
                for (double[] a : meansBySteps(rows, loss, beta).values()) {
                    fp.add(new double[] {a[3], a[1]});
                    wp.add(new double[] {a[0], a[2]});
                    cp.add(new double[] {a[0], a[4]});
                    rp.add(new double[] {a[0], a[5]});
                    if (a[0] > 0) {
                        gp.add(new double[] {a[0], a[6]});
                    }
                }
                f.add(new Chart.Series(loss, c, false, true, fp));
                w.add(new Chart.Series(loss, c, false, false, wp));
                l.add(new Chart.Series(loss + " chosen", c, false, false, cp));
                l.add(new Chart.Series(loss + " rejected", c, true, false, rp));
                g.add(new Chart.Series(loss, c, false, false, gp));
            }
            f.add(new Chart.Series("reference", Color.BLACK, false, true, List.of(new double[] {0, ref.goldReward()})));
            String b = "beta " + beta;
            frontier.add(new Chart.Panel(b + " (points: steps, mean over seeds)", "KL(pi||pi_ref)", "gold reward", f));
            win.add(new Chart.Panel(b, "step", "win rate vs reference", w));
            logps.add(new Chart.Panel(b + " (solid chosen, dashed rejected)", "step", "log pi (train pairs)", l));
            grad.add(new Chart.Panel(b, "step", "grad norm (pre-clip)", g));
        }
        Chart.write(frontier, "Gold reward vs KL (the frontier)", out.resolve("frontier.png"));
        Chart.write(win, "Win rate vs reference samples (gold reward judge)", out.resolve("win_rate.png"));
        Chart.write(logps, "Summed log-probs of training pairs", out.resolve("logps.png"));
        Chart.write(grad, "Gradient norm", out.resolve("grad_norm.png"));
    }

    static JsonArray array(double[] v) {
        JsonArray a = new JsonArray();
        for (double x : v) {
            a.add(x);
        }
        return a;
    }
}
