package dev.spo4j.train;

import dev.spo4j.data.Batches;
import dev.spo4j.data.SftExample;
import dev.spo4j.data.TextTokenizer;
import dev.spo4j.data.TokenRule;
import dev.spo4j.loss.LmHead;
import dev.spo4j.loss.SftObjective;
import dev.spo4j.model.LlamaModel;
import dev.spo4j.model.LoraAdapters;
import dev.spo4j.model.Precision;
import dev.spo4j.model.ModelFolder;
import dev.spo4j.report.MetricsLog;
import dev.spo4j.report.MetricsPlot;
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
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * Supervised fine-tuning: next-token cross-entropy on prompt + completion, scored on the
 * completion tokens only (EOS included), through {@link SftObjective} (the fused kernel),
 * with AdamW, gradient clipping and the learning-rate schedule of the preference trainer
 * ({@link OptimizerConfig}).
 *
 * <p>Tokens follow the {@link TokenRule token rule} of the preference trainer: {@code [BOS if
 * add_bos_token] + encode(prompt) + encode(completion) + [EOS]}, prompt cut from the left
 * and then the completion from the right to fit maxLength; rows right-padded. Batches are
 * shuffled per epoch by {@link Batches} from the seed, so a run is a function of its config.
 */
public final class SftTrainer {
    private SftTrainer() {}

    /**
     * How a run ended.
     *
     * @param finalModel the run folder's final-model folder; null from {@link #train}
     * @param steps      optimiser steps done
     * @param firstLoss  the first step's loss
     * @param lastLoss   the last step's loss
     * @param seconds    wall time of the training, tokenisation included
     * @param rows       the logged rows (step, loss, grad_norm, learning_rate), every
     *                   {@code logEvery} steps and the last
     */
    public record Summary(Path finalModel, int steps, double firstLoss, double lastLoss, double seconds,
                          List<Map<String, Double>> rows) {}

    /** Loads cfg.model, reads cfg.data, trains and writes cfg.out/{final-model, metrics.jsonl, metrics.png}. */
    public static Summary run(SftConfig cfg, PrintStream console) {
        cfg.validate();
        if (cfg.model == null || !Files.isDirectory(Path.of(cfg.model))) {
            throw new IllegalArgumentException("model folder " + cfg.model + " does not exist");
        }
        if (cfg.data == null) {
            throw new IllegalArgumentException("--data is required");
        }
        List<SftExample> data = SftExample.read(Path.of(cfg.data));
        org.bytedeco.pytorch.Device device = Trainer.device(cfg.device);  // a GPU it cannot use: refused here
        Path runDir = Path.of(cfg.out == null ? "runs/sft" : cfg.out).toAbsolutePath();
        try (TextTokenizer tok = TextTokenizer.load(Path.of(cfg.model))) {
            Files.createDirectories(runDir);
            // a LoRA base is frozen in the run's dtype (fp32 adapters); a full fine-tune starts from fp32 masters
            ScalarType loadAs = cfg.loraConfig() != null ? cfg.precision().scalarType() : ScalarType.Float;
            LlamaModel model = ModelFolder.load(Path.of(cfg.model), loadAs);
            if (!device.is_cpu()) {
                model.to(device, loadAs, false);
            }
            LoraAdapters adapters = null;
            if (cfg.loraConfig() != null) {
                torch.manual_seed(cfg.seed);
                adapters = LoraAdapters.create(model, cfg.loraConfig());
            }
            Summary s = train(model, tok, data, cfg, console);
            Path finalModel = runDir.resolve(adapters != null ? "final-adapter" : "final-model");
            if (adapters != null) {
                adapters.save(finalModel, cfg.model, Path.of(cfg.model));
            } else {
                // in the input's dtype (or --save-dtype), as train's final-model/: the fp32 masters rounded once
                String dtype = cfg.saveDtype.equals("auto") ? ModelFolder.torchDtypeOf(Path.of(cfg.model)) : cfg.saveDtype;
                ModelFolder.save(model, finalModel, Path.of(cfg.model), dtype);
            }
            try (MetricsLog log = new MetricsLog(runDir.resolve("metrics.jsonl"), 0)) {
                for (Map<String, Double> r : s.rows()) {
                    log.append(r);
                }
            }
            MetricsPlot.write(s.rows(), List.of("loss", "grad_norm", "learning_rate"), "spo4j sft",
                    runDir.resolve("metrics.png"));
            return new Summary(finalModel, s.steps(), s.firstLoss(), s.lastLoss(), s.seconds(), s.rows());
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /**
     * Trains {@code model} in place on the examples (its attached LoRA adapters only, when it has
     * some; with {@code cfg.dtype} bf16 and no adapters, a bf16 working copy with the model as
     * the fp32 master); returns per-step rows (loss, grad_norm, learning_rate).
     */
    public static Summary train(LlamaModel model, TextTokenizer tok, List<SftExample> data, SftConfig cfg,
                                PrintStream console) {
        cfg.validate();
        long t0 = System.nanoTime();
        int threads = cfg.threads > 0 ? cfg.threads : torch.get_num_threads();
        dev.spo4j.kernels.OpenMp.setThreads(threads);
        List<long[][]> rows = new ArrayList<>(data.size());
        int positions = model.config().maxPositionEmbeddings();
        for (SftExample e : data) {
            long[][] r = tokenize(tok, e, cfg.maxLength);
            if (r[0].length + r[1].length > positions) {  // before the first forward, as train checks its pairs
                throw new IllegalArgumentException("an SFT example is " + (r[0].length + r[1].length) + " tokens after "
                        + "truncation to --max-length " + cfg.maxLength + ", more than the model's "
                        + "max_position_embeddings " + positions + " (give --max-length " + positions + " or less): " + e);
            }
            rows.add(r);
        }
        torch.manual_seed(cfg.seed);
        // trained: the adapters when attached, else the model's parameters (fp32 masters of a bf16 copy with --dtype bf16)
        LoraAdapters adapters = model.adapters();
        org.bytedeco.pytorch.Device device = model.parameterList().get(0).device();
        MasterWeights mixed = adapters == null && cfg.precision() != Precision.FP32
                ? new MasterWeights(model, cfg.precision(), device) : null;
        LlamaModel forward = mixed != null ? mixed.work() : model;
        TensorVector params = new TensorVector((adapters != null ? adapters.parameters() : model.parameterList())
                .toArray(new Tensor[0]));
        AdamW optimizer = cfg.optim.adamW(params);
        Batches<long[][]> batches = new Batches<>(rows, cfg.batchSize, cfg.seed);
        int total = cfg.maxSteps > 0 ? cfg.maxSteps : cfg.epochs * batches.batchesPerEpoch();
        LrSchedule schedule = cfg.optim.schedule(total);
        SftObjective objective = new SftObjective(threads, (long) cfg.lmHeadChunkMb << 20);
        long pad = tok.padId();
        List<Map<String, Double>> log = new ArrayList<>();
        double first = Double.NaN, last = Double.NaN;
        int epoch = 0, index = 0;
        for (int step = 0; step < total; step++) {
            List<long[][]> batch = batches.batchAt(epoch, index);
            if (++index == batches.batchesPerEpoch()) {
                index = 0;
                epoch++;
            }
            double loss, gradNorm, lr = schedule.at(step);
            try (PointerScope scope = new PointerScope()) {
                optimizer.zero_grad(true);
                TokenRule.Rows t = collate(batch, pad);
                // the batch on the model's device (a model on a GPU takes its inputs there)
                Tensor ids = SequenceLogProbs.onDevice(t.ids(), device);
                Tensor mask = SequenceLogProbs.onDevice(t.mask(), device);
                Tensor targets = SequenceLogProbs.onDevice(t.targets(), device);
                SftObjective.Result r = cfg.lmHead == LmHead.FUSED
                        ? objective.compute(forward.hiddenStates(ids, mask), forward.headWeight(), targets)
                        : objective.compute(forward.forward(ids, mask), targets);
                r.backward();
                if (mixed != null) {
                    mixed.accumulate();
                }
                loss = r.loss();
                gradNorm = torch.clip_grad_norm_(params, cfg.optim.maxGradNorm > 0 ? cfg.optim.maxGradNorm : 1e30);
                Optimizers.setLearningRate(optimizer, lr);
                optimizer.step();
                if (mixed != null) {
                    mixed.copyToWork();
                }
            }
            if (step == 0) {
                first = loss;
            }
            last = loss;
            if ((step + 1) % cfg.logEvery == 0 || step + 1 == total) {
                Map<String, Double> row = new LinkedHashMap<>();
                row.put("step", step + 1.0);
                row.put("loss", loss);
                row.put("grad_norm", gradNorm);
                row.put("learning_rate", lr);
                log.add(row);
                if (console != null) {
                    console.printf(Locale.ROOT, "sft step %d/%d  loss %.4f  grad_norm %.3f%n", step + 1, total, loss,
                            gradNorm);
                }
            }
        }
        return new Summary(null, total, first, last, (System.nanoTime() - t0) / 1e9, log);
    }

    /** {prompt part, completion part} of one example by the token rule, truncated to maxLength. */
    static long[][] tokenize(TextTokenizer tok, SftExample e, int maxLength) {
        long[] prompt = TokenRule.prompt(tok, e.prompt());
        TokenRule.Truncated t = TokenRule.truncate(prompt, tok.addBos(), maxLength, TokenRule.completion(tok, e.completion()));
        long[] completion = t.completions()[0];
        if (TokenRule.scoredTokens(t.prompt().length, completion.length) < 1) {
            throw new IllegalArgumentException("an SFT example has no scored completion token after truncation to "
                    + maxLength + " tokens: " + e);
        }
        return new long[][] {t.prompt(), completion};
    }

    /** Rows of {prompt part, completion part}s: ids, mask and targets [B, T], right-padded. */
    static TokenRule.Rows collate(List<long[][]> batch, long pad) {
        List<long[]> prompts = new ArrayList<>(batch.size()), completions = new ArrayList<>(batch.size());
        for (long[][] r : batch) {
            prompts.add(r[0]);
            completions.add(r[1]);
        }
        return TokenRule.rows(prompts, completions, pad);
    }
}
