package dev.spo4j.train;

import dev.spo4j.data.PreferenceBatches;
import dev.spo4j.data.SftExample;
import dev.spo4j.data.TextTokenizer;
import dev.spo4j.model.LlamaModel;
import dev.spo4j.model.ModelFolder;
import java.io.IOException;
import java.io.PrintStream;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.AdamW;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * Supervised fine-tuning: next-token cross-entropy on prompt + completion, scored on the
 * completion tokens only (EOS included), through {@link SftObjective} (the fused kernel),
 * with AdamW, gradient clipping and the learning-rate schedule of the preference trainer.
 *
 * <p>Tokens follow the preference collator's rule: {@code [BOS if add_bos_token] +
 * encode(prompt) + encode(completion) + [EOS]}, prompt cut from the left and then the
 * completion from the right to fit maxLength; rows right-padded. Batches are shuffled per
 * epoch by {@link PreferenceBatches} from the seed, so a run is a function of its config.
 */
public final class SftTrainer {
    private SftTrainer() {}

    /** How a run ended: the run folder's final model (null for {@link #train}), steps, first and last loss. */
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
        Path runDir = Path.of(cfg.out == null ? "runs/sft" : cfg.out).toAbsolutePath();
        try (TextTokenizer tok = TextTokenizer.load(Path.of(cfg.model))) {
            Files.createDirectories(runDir);
            LlamaModel model = ModelFolder.load(Path.of(cfg.model));
            Summary s = train(model, tok, data, cfg, console);
            Path finalModel = runDir.resolve("final-model");
            ModelFolder.save(model, finalModel, Path.of(cfg.model));
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

    /** Trains {@code model} in place on the examples; returns per-step rows (loss, grad_norm, learning_rate). */
    public static Summary train(LlamaModel model, TextTokenizer tok, List<SftExample> data, SftConfig cfg,
                                PrintStream console) {
        cfg.validate();
        long t0 = System.nanoTime();
        int threads = cfg.threads > 0 ? cfg.threads : torch.get_num_threads();
        torch.set_num_threads(threads);
        List<long[][]> rows = new ArrayList<>(data.size());
        for (SftExample e : data) {
            rows.add(tokenize(tok, e, cfg.maxLength));
        }
        torch.manual_seed(cfg.seed);
        TensorVector params = new TensorVector(model.parameterList().toArray(new Tensor[0]));
        AdamW optimizer = Optimizers.adamW(params, cfg.lr, 0.9, 0.999, 1e-8, cfg.weightDecay);
        PreferenceBatches<long[][]> batches = new PreferenceBatches<>(rows, cfg.batchSize, cfg.seed);
        int total = cfg.maxSteps > 0 ? cfg.maxSteps : cfg.epochs * batches.batchesPerEpoch();
        int warmup = cfg.warmupSteps > 0 ? cfg.warmupSteps : (int) Math.round(cfg.warmupRatio * total);
        LrSchedule schedule = new LrSchedule(LrSchedule.Kind.parse(cfg.schedule), cfg.lr, warmup, total);
        SftObjective objective = new SftObjective(threads);
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
                Tensor[] t = collate(batch, pad);
                Tensor logits = model.forward(t[0], t[1]);
                SftObjective.Result r = objective.compute(logits, t[2]);
                r.backward();
                loss = r.loss();
                gradNorm = torch.clip_grad_norm_(params, cfg.maxGradNorm > 0 ? cfg.maxGradNorm : 1e30);
                Optimizers.setLearningRate(optimizer, lr);
                optimizer.step();
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

    /** {prompt part, completion part} of one example, truncated to maxLength (prompt from the left first). */
    static long[][] tokenize(TextTokenizer tok, SftExample e, int maxLength) {
        long[] prompt = tok.encode(e.prompt());
        if (tok.addBos()) {
            long[] p = new long[prompt.length + 1];
            p[0] = tok.bosId();
            System.arraycopy(prompt, 0, p, 1, prompt.length);
            prompt = p;
        }
        long[] completion = tok.encode(e.completion());
        if (tok.eosId() != null) {
            completion = Arrays.copyOf(completion, completion.length + 1);
            completion[completion.length - 1] = tok.eosId();
        }
        int bos = tok.addBos() ? 1 : 0;
        int over = prompt.length + completion.length - maxLength;
        if (over > 0) {
            int cut = Math.min(over, Math.max(0, prompt.length - bos - 1));
            long[] kept = new long[prompt.length - cut];
            System.arraycopy(prompt, 0, kept, 0, bos);
            System.arraycopy(prompt, bos + cut, kept, bos, kept.length - bos);
            prompt = kept;
        }
        if (prompt.length + completion.length > maxLength) {
            completion = Arrays.copyOf(completion, Math.max(0, maxLength - prompt.length));
        }
        if (prompt.length == 0 ? completion.length < 2 : completion.length < 1) {
            throw new IllegalArgumentException("an SFT example has no scored completion token after truncation to "
                    + maxLength + " tokens: " + e);
        }
        return new long[][] {prompt, completion};
    }

    /** {ids, mask, targets}, each [B, T] int64, right-padded; targets -100 outside completions. */
    static Tensor[] collate(List<long[][]> batch, long pad) {
        int b = batch.size(), t = 0;
        for (long[][] r : batch) {
            t = Math.max(t, r[0].length + r[1].length);
        }
        long[] ids = new long[b * t], mask = new long[b * t], targets = new long[b * t];
        Arrays.fill(ids, pad);
        Arrays.fill(targets, dev.spo4j.kernels.TokenLogProbs.DEFAULT_IGNORE_INDEX);
        for (int i = 0; i < b; i++) {
            long[] p = batch.get(i)[0], c = batch.get(i)[1];
            int base = i * t, len = p.length + c.length;
            System.arraycopy(p, 0, ids, base, p.length);
            System.arraycopy(c, 0, ids, base + p.length, c.length);
            Arrays.fill(mask, base, base + len, 1L);
            for (int pos = Math.max(1, p.length); pos < len; pos++) {
                targets[base + pos - 1] = ids[base + pos];
            }
        }
        return new Tensor[] {longs(ids, b, t), longs(mask, b, t), longs(targets, b, t)};
    }

    private static Tensor longs(long[] v, long... shape) {
        Tensor t = torch.empty(shape, new TensorOptions(ScalarType.Long), null);
        t.data_ptr_long().put(v);
        return t;
    }

}
