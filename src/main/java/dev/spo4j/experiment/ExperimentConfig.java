package dev.spo4j.experiment;

import com.google.gson.Gson;
import com.google.gson.GsonBuilder;
import dev.spo4j.loss.LmHead;
import dev.spo4j.train.LrSchedule;
import java.util.List;

/**
 * The settings of one {@link Experiment}; everything random is derived from {@link #seed}.
 * Three presets: {@link #toy()} (seconds, for tests), {@link #quick()} (under 10 minutes on
 * two cores) and {@link #full()} (the README's setting). Every loss gets the same settings:
 * the only per-loss value is cDPO's label smoothing, which is what makes it cDPO.
 */
public final class ExperimentConfig {
    /** The preset this came from ("toy", "quick", "full"), or "custom"; recorded in config.json. */
    public String preset = "custom";
    /** The experiment's seed: every stage's seed is derived from it. */
    public long seed = 1;
    /**
     * LibTorch and kernel threads. One by default: on two cores shared with other work, two
     * OpenMP threads made these tiny steps up to 20x slower whenever a core was taken.
     */
    public int threads = 1;
    /** How the LM head meets the log-probs in every stage (SFT, preference training, log-prob measurements). */
    public LmHead lmHead = LmHead.FUSED;

    // policy: a small Llama-style model over the synthetic language
    /** Decoder layers of the policy. */
    public int layers = 2;
    /** Hidden size of the policy. */
    public int hidden = 64;
    /** MLP intermediate size of the policy. */
    public int intermediate = 128;
    /** Attention heads of the policy. */
    public int heads = 4;
    /** Key/value heads of the policy (grouped-query attention when fewer than {@link #heads}). */
    public int kvHeads = 2;

    // 1-2: SFT on completions drawn from the synthetic grammar -> the reference policy
    /** Synthetic prompts for SFT; each gives two examples (both completions of its synthetic pair). */
    public int sftPrompts = 1024;
    /** SFT optimiser steps. */
    public int sftSteps = 300;
    /** SFT examples per batch. */
    public int sftBatch = 32;
    /** SFT peak learning rate. */
    public double sftLr = 3e-3;

    // 3: preference pairs sampled from the reference, ordered by the proxy annotator
    /**
     * Training prompts, one pair each; pairs whose samples are equal or empty are dropped, so a
     * run may have fewer.
     */
    public int pairs = 512;
    /**
     * Tokens per sample at most (EOS counts as one); long enough that almost every sample ends
     * with EOS (the summary reports the rate), so KL is measured on complete sequences.
     */
    public int maxNewTokens = 64;
    /** The proxy annotator's reward per completion word (the exploitable term; gold charges 0.2 a word past 12). */
    public double proxyLengthBonus = 0.25;
    /** The standard deviation of the proxy annotator's per-sample noise. */
    public double proxyNoiseSd = 0.5;

    // 4: preference training grid
    /** The grid's arms (see {@link Arm}: a loss and the information it gets). */
    public List<String> arms = List.of("spo-gold", "spo", "spo-exp", "soft-dpo", "dpo", "dpo-n30", "cdpo", "ipo",
            "spo-m0", "spo-m0-n30");
    /** The grid's betas. */
    public List<Double> betas = List.of(0.05, 0.1, 0.2, 0.5, 1.0, 2.0);
    /** Training seeds per arm and beta. */
    public int seeds = 3;
    /** Preference optimiser steps per run. */
    public int steps = 150;
    /** Peak learning rate of the preference runs. */
    public double lr = 1e-3;
    /**
     * The learning-rate check: every arm once more (seed 0, beta {@link #lrCheckBeta}) at lr
     * times each factor; empty for none.
     */
    public List<Double> lrCheckFactors = List.of();
    /** The beta of the learning-rate check. */
    public double lrCheckBeta = 0.2;
    /** Gradient-norm clipping of the preference runs (the fraction of clipped steps is measured). */
    public double maxGradNorm = 1.0;
    /** Pairs per batch of the preference runs. */
    public int batchSize = 16;
    /** Warm-up steps of the preference runs (0: {@link dev.spo4j.train.OptimizerConfig#warmupRatio} of the steps). */
    public int warmupSteps = 10;
    /** Shape of the preference runs' learning rate after warm-up. */
    public LrSchedule.Kind schedule = LrSchedule.Kind.CONSTANT;
    /** cDPO's label smoothing eps: the "cdpo" arm is DPO with it. */
    public double cdpoLabelSmoothing = 0.1;

    // 5: measurements at steps 1, 2, 4, 8, ... below evalEvery, then every evalEvery steps
    /**
     * Steps between measurements once past the early, doubling ones (1, 2, 4, ...): the
     * policies move fastest at the start, and reading the frontier at a low KL needs
     * measurements there. The last step is always measured.
     */
    public int evalEvery = 30;
    /** Held-out prompts, one sample each per measurement. */
    public int heldOutPrompts = 96;
    /** Training pairs (the first ones) whose log-probs and loss gradients are measured. */
    public int logpsPairs = 64;
    /** Reference samples per held-out prompt for the KL-optimal and best-of-n curves (a power of two). */
    public int referencePool = 16;

    /** Where the results came from: machine, ISA, threads, library versions (filled in by the run). */
    public java.util.Map<String, String> environment;

    private static final Gson GSON = new GsonBuilder().setPrettyPrinting().create();

    /** A few seconds: the end-to-end test. */
    public static ExperimentConfig toy() {
        ExperimentConfig c = new ExperimentConfig();
        c.preset = "toy";
        c.layers = 1;
        c.hidden = 32;
        c.intermediate = 64;
        c.heads = 2;
        c.kvHeads = 1;
        c.sftPrompts = 64;
        c.sftSteps = 20;
        c.sftBatch = 16;
        c.pairs = 32;
        c.maxNewTokens = 12;
        c.arms = List.of("spo", "spo-gold", "ipo", "dpo-n30");
        c.betas = List.of(0.1);
        c.lrCheckFactors = List.of(2.0);
        c.referencePool = 4;
        c.seeds = 1;
        c.steps = 4;
        c.batchSize = 8;
        c.warmupSteps = 1;
        c.evalEvery = 2;
        c.heldOutPrompts = 8;
        c.logpsPairs = 8;
        return c;
    }

    /** {@code experiment --quick}: a smoke test of every arm: 2 betas x 1 seed, 150 steps, on a 2-layer model. */
    public static ExperimentConfig quick() {
        ExperimentConfig c = new ExperimentConfig();
        c.preset = "quick";
        c.betas = List.of(0.1, 1.0);
        c.seeds = 1;
        c.steps = 100;
        c.evalEvery = 25;
        c.heldOutPrompts = 48;
        return c;
    }

    /**
     * {@code experiment}: 10 arms x 6 betas x 3 seeds plus the learning-rate check, 4x the pairs
     * of quick, more SFT, steps and held-out prompts; the same 2-layer model (seeds rather than
     * model size: the question is a comparison between losses, and its intervals are over
     * seeds).
     */
    public static ExperimentConfig full() {
        ExperimentConfig c = new ExperimentConfig();
        c.preset = "full";
        c.sftPrompts = 2048;
        c.sftSteps = 800;
        c.pairs = 2048;
        c.steps = 400;
        c.evalEvery = 50;
        c.heldOutPrompts = 256;
        c.lrCheckFactors = List.of(0.3, 3.0);
        return c;
    }

    /**
     * Throws IllegalArgumentException on an empty grid, a count below its minimum, an unknown
     * arm or a bad proxy parameter.
     */
    public void validate() {
        if (arms.isEmpty() || betas.isEmpty() || seeds < 1 || steps < 1 || evalEvery < 1 || pairs < 2
                || heldOutPrompts < 1 || sftSteps < 1 || logpsPairs < 1 || maxNewTokens < 2 || referencePool < 1
                || Integer.bitCount(referencePool) != 1) {
            throw new IllegalArgumentException("experiment: empty grid, a count < 1 or a reference pool that is not a "
                    + "power of two in " + toJson());
        }
        for (String a : arms) {
            Arm.parse(a);
        }
        new ProxyAnnotator(proxyLengthBonus, proxyNoiseSd);
        for (double b : betas) {
            if (!(b > 0 && b < Double.POSITIVE_INFINITY)) {
                throw new IllegalArgumentException("experiment: beta " + b + " must be finite and > 0");
            }
        }
        if (!(lr > 0 && lr < Double.POSITIVE_INFINITY)) {
            throw new IllegalArgumentException("experiment: learning rate " + lr + " must be finite and > 0");
        }
        for (double f : lrCheckFactors) {
            if (!(f > 0 && f < Double.POSITIVE_INFINITY)) {
                throw new IllegalArgumentException("experiment: learning-rate factor " + f + " must be finite and > 0");
            }
        }
    }

    /** True when step {@code step} (1-based) is measured: a power of two below evalEvery, a multiple of it, or the last. */
    public boolean measures(int step) {
        return step == steps || step % evalEvery == 0 || (step < evalEvery && Integer.bitCount(step) == 1);
    }

    /** The settings as pretty-printed JSON (the run folder's config.json). */
    public String toJson() {
        return GSON.toJson(this);
    }
}
