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

    // 3: preference pairs sampled from the reference, labelled by Bradley-Terry on the gold reward
    /**
     * Training prompts, one pair each; pairs whose samples are equal or empty are dropped, so a
     * run may have fewer.
     */
    public int pairs = 512;
    /** Tokens per sample at most (EOS counts as one). */
    public int maxNewTokens = 32;

    // 4: preference training grid
    /** The grid's losses: "spo", "spo-m0", "dpo", "ipo", "cdpo" or "hinge". */
    public List<String> losses = List.of("spo", "spo-m0", "dpo", "ipo", "cdpo");
    /** The grid's betas. */
    public List<Double> betas = List.of(0.1, 0.5);
    /** Training seeds per loss and beta. */
    public int seeds = 2;
    /** Preference optimiser steps per run. */
    public int steps = 150;
    /** Peak learning rate of the preference runs. */
    public double lr = 1e-3;
    /** Pairs per batch of the preference runs. */
    public int batchSize = 16;
    /** Warm-up steps of the preference runs (0: {@link dev.spo4j.train.OptimizerConfig#warmupRatio} of the steps). */
    public int warmupSteps = 10;
    /** Shape of the preference runs' learning rate after warm-up. */
    public LrSchedule.Kind schedule = LrSchedule.Kind.CONSTANT;
    /** cDPO's label smoothing eps: the "cdpo" loss is DPO with it. */
    public double cdpoLabelSmoothing = 0.1;

    // 5: measurements every evalEvery steps
    /** Steps between measurements (the last step is always measured). */
    public int evalEvery = 30;
    /** Held-out prompts, one sample each per measurement. */
    public int heldOutPrompts = 96;
    /** Training pairs (the first ones) whose chosen and rejected log-probs are measured. */
    public int logpsPairs = 64;

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
        c.losses = List.of("spo", "spo-m0", "dpo");
        c.betas = List.of(0.1);
        c.seeds = 2;
        c.steps = 4;
        c.batchSize = 8;
        c.warmupSteps = 1;
        c.evalEvery = 2;
        c.heldOutPrompts = 8;
        c.logpsPairs = 8;
        return c;
    }

    /** {@code experiment --quick}: 5 losses x 2 betas x 2 seeds on a 2-layer model. */
    public static ExperimentConfig quick() {
        ExperimentConfig c = new ExperimentConfig();
        c.preset = "quick";
        return c;
    }

    /**
     * {@code experiment}: 5 losses x 2 betas x 5 seeds, 4x the pairs and preference steps of
     * quick, more SFT and more held-out prompts; the same 2-layer model (seeds rather than
     * model size: the question is a comparison between losses, and its intervals are over
     * seeds). About 20-30 minutes on two shared cores with one LibTorch thread.
     */
    public static ExperimentConfig full() {
        ExperimentConfig c = new ExperimentConfig();
        c.preset = "full";
        c.sftPrompts = 2048;
        c.sftSteps = 800;
        c.pairs = 2048;
        c.seeds = 5;
        c.steps = 600;
        c.evalEvery = 50;
        c.heldOutPrompts = 256;
        return c;
    }

    /**
     * Throws IllegalArgumentException on an empty grid, a count below its minimum or an unknown
     * loss name.
     */
    public void validate() {
        if (losses.isEmpty() || betas.isEmpty() || seeds < 1 || steps < 1 || evalEvery < 1 || pairs < 2
                || heldOutPrompts < 1 || sftSteps < 1 || logpsPairs < 1 || maxNewTokens < 2) {
            throw new IllegalArgumentException("experiment: empty grid or a count < 1 in " + toJson());
        }
        for (String l : losses) {
            if (!List.of("spo", "spo-m0", "dpo", "ipo", "cdpo", "hinge").contains(l)) {
                throw new IllegalArgumentException("experiment: unknown loss '" + l + "' (spo, spo-m0, dpo, ipo, cdpo, hinge)");
            }
        }
    }

    /** The settings as pretty-printed JSON (the run folder's config.json). */
    public String toJson() {
        return GSON.toJson(this);
    }
}
