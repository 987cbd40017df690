package dev.spo4j.cli;

import dev.spo4j.experiment.Experiment;
import dev.spo4j.experiment.ExperimentConfig;
import dev.spo4j.loss.LmHead;
import java.nio.file.Path;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

@Command(name = "experiment", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"SPO (and SPO without scores, spo-m0) vs DPO vs IPO vs cDPO on the synthetic language with a known gold reward: SFT a small",
                "Llama-style reference, sample and label pairs from it, train every loss x beta x seed, and measure",
                "gold reward, win rate, KL, log-probs and grad norm. Writes measurements.csv, summary.json, table.md",
                "and PNG plots into --out. Reproducible from --seed (on the CPU with a fixed --threads)."})
final class ExperimentCommand implements Callable<Integer> {
    @Option(names = "--quick", description = "the quick setting (2-layer model, 2 seeds, 150 steps, 512 pairs; a few minutes on 2 cores)")
    boolean quick;
    @Option(names = "--out", defaultValue = "runs/experiment", paramLabel = "DIR", description = "(default: ${DEFAULT-VALUE})")
    Path out;
    @Option(names = "--seed", defaultValue = "1", description = "(default: ${DEFAULT-VALUE})")
    long seed;
    @Option(names = "--threads", defaultValue = "1", description = "LibTorch threads; results are reproducible for the same value (default: ${DEFAULT-VALUE})")
    int threads;
    @Option(names = "--lm-head", defaultValue = "fused", description = "fused (log-probs from the hidden states, one "
            + "chunk of logits at a time) | materialised (the model's full logits) (default: ${DEFAULT-VALUE})")
    LmHead lmHead;
    @Option(names = "--seeds", description = "training seeds per loss and beta (default: the preset's)")
    Integer seeds;
    @Option(names = "--steps", description = "preference-training steps per run (default: the preset's)")
    Integer steps;
    @Option(names = "--replot", paramLabel = "DIR", description = "only rewrite summary.json, table.md and the plots of a finished run folder")
    java.nio.file.Path replot;
    @Mixin
    VerboseOption verbose;

    @Override
    public Integer call() throws Exception {
        if (replot != null) {
            Experiment.replot(replot);
            System.out.println("experiment: rewrote summary.json, table.md and plots in " + replot);
            return 0;
        }
        ExperimentConfig c = quick ? ExperimentConfig.quick() : ExperimentConfig.full();
        c.seed = seed;
        c.threads = threads;
        c.lmHead = lmHead;
        if (seeds != null) {
            c.seeds = seeds;
        }
        if (steps != null) {
            c.steps = steps;
        }
        Experiment.run(c, out, System.out);
        return 0;
    }
}
