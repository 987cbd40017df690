package dev.spo4j.train;

import com.google.gson.Gson;
import dev.spo4j.data.PreferenceBatch;
import dev.spo4j.data.PreferenceCollator;
import dev.spo4j.data.PreferencePair;
import dev.spo4j.io.AtomicFiles;
import dev.spo4j.kernels.LmHeadLogProbs;
import dev.spo4j.loss.LmHead;
import dev.spo4j.model.LlamaModel;
import dev.spo4j.model.LoraAdapters;
import dev.spo4j.model.ModelFolder;
import dev.spo4j.train.dist.DataParallel;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Device;
import org.bytedeco.pytorch.Tensor;

/**
 * Summed log-probs of each pair's chosen and rejected completion under a frozen model (the
 * reference), computed once, without gradients, through the fused kernel.
 */
public final class ReferenceLogProbs {
    private static final Gson GSON = new Gson();
    /** The run folder's file: {train {chosen, rejected}, eval {chosen, rejected}}. */
    static final String FILE = "reference_logps.json";

    private ReferenceLogProbs() {}

    /** {chosen[n], rejected[n]} for the pairs, in order, {@code batchSize} pairs per forward. */
    public static double[][] compute(LlamaModel model, PreferenceCollator collator, List<PreferencePair> pairs,
                                     int batchSize, int threads) {
        return compute(model, collator, pairs, batchSize, threads, LmHead.FUSED, LmHeadLogProbs.DEFAULT_CHUNK_BYTES);
    }

    /** As {@link #compute(LlamaModel, PreferenceCollator, List, int, int)} with the LM head chosen. */
    public static double[][] compute(LlamaModel model, PreferenceCollator collator, List<PreferencePair> pairs,
                                     int batchSize, int threads, LmHead head, long chunkBytes) {
        int n = pairs.size();
        double[] chosen = new double[n], rejected = new double[n];
        for (int start = 0; start < n; start += batchSize) {
            int end = Math.min(n, start + batchSize);
            try (PointerScope scope = new PointerScope();
                 PreferenceBatch batch = collator.collate(pairs.subList(start, end))) {
                double[] seq = SequenceLogProbs.of(model, batch, threads, head, chunkBytes);
                int b = end - start;
                requireFinite(seq, pairs.subList(start, end));
                System.arraycopy(seq, 0, chosen, start, b);
                System.arraycopy(seq, b, rejected, start, b);
            }
        }
        return new double[][] {chosen, rejected};
    }

    /**
     * Every summed log-prob of a batch (chosen[b], then rejected[b]) is finite, or an
     * IllegalArgumentException names the pair's source and the value (as the CPU kernel's
     * NonFiniteLogitsException does for the logits it reads; the CUDA kernel passes NaN on). A
     * reference model with NaN or infinite weights, or a target token at a -inf logit, would
     * otherwise make every loss of that pair non-finite (each step that draws it skipped) and
     * the run folder's JSON unwritable (Gson refuses NaN).
     */
    static void requireFinite(double[] seq, List<PreferencePair> batch) {
        int b = batch.size();
        for (int i = 0; i < seq.length; i++) {
            if (!Double.isFinite(seq[i])) {
                PreferencePair pair = batch.get(i % b);
                throw new IllegalArgumentException(pair.source() + ": the reference model's summed log-prob of the "
                        + (i < b ? "chosen" : "rejected") + " completion is " + seq[i] + " (expected a finite "
                        + "number; NaN or infinite reference weights, or a target token at a -inf logit)");
            }
        }
    }

    /**
     * A run's reference log-probs {train{chosen, rejected}, eval{chosen, rejected}}: a set's
     * precomputed fields when every pair has them, else from the reference model (cfg.refModel,
     * else the initial policy in {@code modelDir}), stored in the run folder by rank 0. On
     * resume they are read back from there. Data parallel ({@code dp} not null): each rank
     * computes a contiguous shard of the pairs and a sum over ranks assembles them; on resume
     * rank 0 reads the file and broadcasts it. A reference-free loss (simpo, cpo) gets zeros and
     * no reference model is loaded.
     *
     * <p>A loaded reference runs in the training {@code precision}. {@code adapted}: a LoRA run's
     * policy, or null. Without a separate reference model its base, with the adapters off, is the
     * reference (no second copy is loaded).
     */
    static double[][][] forRun(TrainConfig cfg, Path runDir, Path modelDir, PreferenceCollator collator,
                               List<PreferencePair> train, List<PreferencePair> eval, int threads, Device device,
                               boolean resuming, DataParallel dp, PrintStream console, LlamaModel adapted,
                               dev.spo4j.model.Precision precision)
            throws IOException {
        if (!cfg.lossConfig().needsReference()) {  // simpo, cpo: no reference model, no reference pass
            return new double[][][] {{new double[train.size()], new double[train.size()]},
                {new double[eval.size()], new double[eval.size()]}};
        }
        Path file = runDir.resolve(FILE);
        int rank = dp == null ? 0 : dp.rank(), world = dp == null ? 1 : dp.worldSize();
        if (dp != null && resuming) {
            double[][][] read = rank == 0 ? GSON.fromJson(Files.readString(file), double[][][].class) : null;
            return unflatten(dp.broadcastFromRank0(read != null ? flatten(read) : new double[2 * (train.size() + eval.size())],
                    "broadcast of the reference log-probs"), train.size(), eval.size());
        }
        if (resuming && Files.exists(file)) {
            String problem;
            try {
                double[][][] read = GSON.fromJson(Files.readString(file), double[][][].class);
                if (read != null && read.length == 2 && read[0].length == 2 && read[1].length == 2
                        && read[0][0].length == train.size() && read[0][1].length == train.size()
                        && read[1][0].length == eval.size() && read[1][1].length == eval.size()) {
                    return read;
                }
                problem = "it does not hold " + train.size() + " training and " + eval.size() + " eval pairs";
            } catch (RuntimeException e) {
                problem = "it is not valid JSON (" + e.getMessage() + ")";
            }
            console.println("spo4j: warning: " + file + " cannot be used: " + problem + "; computing it again");
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
            if (reference == null && adapted != null && cfg.refModel == null) {
                console.println("spo4j: reference log-probs from the base model (LoRA adapters off) for "
                        + set.size() + " pairs");
                reference = adapted;
            }
            if (reference == null) {
                Path refDir = cfg.refModel != null ? Path.of(cfg.refModel) : modelDir;
                console.println("spo4j: reference log-probs from " + (cfg.refModel != null ? refDir
                        : "the initial policy (frozen)") + " for " + set.size() + " pairs");
                reference = ModelFolder.load(refDir, precision.scalarType());
                reference.to(device, precision.scalarType(), false);  // the policy's precision
                for (Tensor p : reference.parameterList()) {
                    p.set_requires_grad(false);
                }
            }
            int n = set.size(), from = (int) ((long) n * rank / world), to = (int) ((long) n * (rank + 1) / world);
            double[][] mine;
            if (reference == adapted) {
                LoraAdapters ad = adapted.adapters();
                boolean was = ad.enabled();
                ad.setEnabled(false);
                try {
                    mine = compute(reference, collator, set.subList(from, to), cfg.batchSize, threads, cfg.lmHead,
                            cfg.lmHeadChunkBytes());
                } finally {
                    ad.setEnabled(was);
                }
            } else {
                mine = compute(reference, collator, set.subList(from, to), cfg.batchSize, threads, cfg.lmHead,
                        cfg.lmHeadChunkBytes());
            }
            out[s] = new double[][] {new double[n], new double[n]};
            System.arraycopy(mine[0], 0, out[s][0], from, to - from);
            System.arraycopy(mine[1], 0, out[s][1], from, to - from);
            computed = true;
        }
        if (reference != null && reference != adapted) {
            reference.close();
        }
        if (dp != null && computed) {  // the same decision on every rank: they all hold the same data
            out = unflatten(dp.sum(flatten(out), "all-reduce of the reference log-probs"), train.size(), eval.size());
        }
        if (rank == 0) {
            AtomicFiles.writeString(file, GSON.toJson(out));
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
            {Arrays.copyOfRange(v, 0, nt), Arrays.copyOfRange(v, nt, 2 * nt)},
            {Arrays.copyOfRange(v, 2 * nt, 2 * nt + ne), Arrays.copyOfRange(v, 2 * nt + ne, 2 * (nt + ne))}};
    }

    /** {chosen, rejected} from the pairs' own fields, or null unless every pair has them (an empty set has them). */
    private static double[][] precomputed(List<PreferencePair> set) {
        double[] c = new double[set.size()], r = new double[set.size()];
        for (int i = 0; i < set.size(); i++) {
            PreferencePair p = set.get(i);
            if (p.refChosenLogps() == null || p.refRejectedLogps() == null) {
                return null;
            }
            c[i] = p.refChosenLogps();
            r[i] = p.refRejectedLogps();
        }
        return new double[][] {c, r};
    }
}
