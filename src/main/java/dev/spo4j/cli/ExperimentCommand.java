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
        description = {"SPO (squared, and spo-exp: a reconstruction of the later version's asymmetric form) against soft-DPO,",
                "DPO, cDPO, IPO and SPO without scores on the synthetic language with a known gold reward: SFT a small",
                "Llama-style reference, sample pairs from it, score them with a hackable proxy annotator (gold + a per-word",
                "bonus + noise), train every arm x beta x seed, and measure gold and proxy reward, win rate, KL, EOS rate,",
                "log-probs, per-pair loss gradients and grad norm; reference curves from the KL-optimal policy and best-of-n.",
                "Writes measurements.csv, gradients.csv, reference_curves.csv, summary.json, table.md and PNG plots into",
                "--out. Reproducible from --seed on the same machine with a fixed --threads (config.json records the",
                "CPU, SIMD path and versions)."})
final class ExperimentCommand implements Callable<Integer> {
    @Option(names = "--quick", description = "the quick setting: every arm at 2 betas, 1 seed, 100 steps, 512 pairs (a smoke test, a few minutes on 2 cores)")
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
    @Option(names = "--arms", split = ",", paramLabel = "ARM", description = "the arms (default: the preset's): spo, spo-exp, soft-dpo, spo-gold, spo-m0, dpo, cdpo, ipo, hinge; -n30 after a label-only arm flips 30%% of its labels")
    java.util.List<String> arms;
    @Option(names = "--betas", split = ",", paramLabel = "BETA", description = "the betas (default: the preset's)")
    java.util.List<Double> betas;
    @Option(names = "--lr", description = "the preference runs' learning rate (default: the preset's, 1e-3)")
    Double lr;
    @Option(names = "--lr-check", split = ",", paramLabel = "FACTOR", description = "the learning-rate check: every arm "
            + "once more at seed 0 and beta 0.2 with lr times each factor; 0 turns it off (default: the preset's: 0.3,3 "
            + "in the full setting, none in --quick)")
    java.util.List<Double> lrCheck;
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
        if (arms != null) {
            c.arms = arms;
        }
        if (betas != null) {
            c.betas = betas;
        }
        if (lr != null) {
            c.lr = lr;
        }
        if (lrCheck != null) {
            c.lrCheckFactors = lrCheck.equals(java.util.List.of(0.0)) ? java.util.List.of() : lrCheck;
        }
        Experiment.run(c, out, System.out);
        return 0;
    }
}
