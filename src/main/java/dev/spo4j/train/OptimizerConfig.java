package dev.spo4j.train;

import picocli.CommandLine.Option;

/**
 * AdamW, gradient clipping and the learning-rate schedule: the settings the preference and
 * SFT trainers share. A mutable options object like {@link TrainConfig} (the command line
 * fills it through picocli; JSON round-trips it into run folders and checkpoints); the field
 * initialisers are the defaults.
 */
public final class OptimizerConfig {
    /** Peak learning rate after warm-up. */
    @Option(names = "--lr", description = "peak learning rate (default: ${DEFAULT-VALUE})")
    public double lr = 5e-6;
    /** Shape of the learning rate after warm-up. */
    @Option(names = "--schedule", description = "${COMPLETION-CANDIDATES} after warm-up (default: ${DEFAULT-VALUE})")
    public LrSchedule.Kind schedule = LrSchedule.Kind.COSINE;
    /** Steps of linear warm-up; 0 means {@link #warmupRatio} of the total steps. */
    @Option(names = "--warmup-steps", description = "warm-up steps; 0 = --warmup-ratio of the total (default: ${DEFAULT-VALUE})")
    public int warmupSteps = 0;
    /** Fraction of the total steps spent warming up when {@link #warmupSteps} is 0. */
    @Option(names = "--warmup-ratio", description = "(default: ${DEFAULT-VALUE})")
    public double warmupRatio = 0.1;
    /** AdamW's decoupled weight decay. */
    @Option(names = "--weight-decay", description = "AdamW weight decay (default: ${DEFAULT-VALUE})")
    public double weightDecay = 0.0;
    /** AdamW's beta1, the decay of the first-moment estimate. */
    @Option(names = "--adam-beta1", description = "(default: ${DEFAULT-VALUE})")
    public double adamBeta1 = 0.9;
    /** AdamW's beta2, the decay of the second-moment estimate. */
    @Option(names = "--adam-beta2", description = "(default: ${DEFAULT-VALUE})")
    public double adamBeta2 = 0.999;
    /** AdamW's epsilon, added to the denominator. */
    @Option(names = "--adam-eps", description = "(default: ${DEFAULT-VALUE})")
    public double adamEps = 1e-8;
    /** Clipping threshold for the global gradient norm; 0 turns clipping off. */
    @Option(names = "--max-grad-norm", description = "clip the global gradient norm; 0 = off (default: ${DEFAULT-VALUE})")
    public double maxGradNorm = 1.0;

    /** The preference trainer's defaults (TRL-like: lr 5e-6, cosine, 10% warm-up). */
    public OptimizerConfig() {}

    /** The same defaults with another peak rate and warm-up ratio (SFT: 1e-3, 5%). */
    public static OptimizerConfig withDefaults(double lr, double warmupRatio) {
        OptimizerConfig c = new OptimizerConfig();
        c.lr = lr;
        c.warmupRatio = warmupRatio;
        return c;
    }

    /** Throws IllegalArgumentException naming the first bad setting. */
    public void validate() {
        if (!(lr > 0 && Double.isFinite(lr))) {
            throw new IllegalArgumentException("learning rate = " + lr + " (expected a finite value > 0)");
        }
        if (schedule == null) {
            throw new IllegalArgumentException("schedule is null (expected cosine, linear or constant)");
        }
        if (!(warmupRatio >= 0 && warmupRatio < 1) || warmupSteps < 0) {
            throw new IllegalArgumentException("warm-up = " + warmupSteps + " steps / ratio " + warmupRatio
                    + " (expected steps >= 0 and 0 <= ratio < 1)");
        }
        if (!(maxGradNorm >= 0 && Double.isFinite(maxGradNorm)) || !(weightDecay >= 0 && Double.isFinite(weightDecay))) {
            throw new IllegalArgumentException("max grad norm = " + maxGradNorm + ", weight decay = " + weightDecay
                    + " (expected finite values >= 0)");
        }
        if (!(adamBeta1 >= 0 && adamBeta1 < 1 && adamBeta2 >= 0 && adamBeta2 < 1 && adamEps > 0
                && Double.isFinite(adamEps))) {
            throw new IllegalArgumentException("AdamW betas " + adamBeta1 + ", " + adamBeta2 + ", eps " + adamEps
                    + " (expected 0 <= beta < 1 and a finite eps > 0)");
        }
    }

    /** The schedule of a run of {@code totalSteps} optimiser steps. */
    public LrSchedule schedule(int totalSteps) {
        int warmup = warmupSteps > 0 ? warmupSteps : (int) Math.round(warmupRatio * totalSteps);
        return new LrSchedule(schedule, lr, warmup, totalSteps);
    }

    /** AdamW over {@code params} with these settings. */
    public org.bytedeco.pytorch.AdamW adamW(org.bytedeco.pytorch.TensorVector params) {
        return Optimizers.adamW(params, lr, adamBeta1, adamBeta2, adamEps, weightDecay);
    }
}
