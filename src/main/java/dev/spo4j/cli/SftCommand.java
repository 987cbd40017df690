package dev.spo4j.cli;

import dev.spo4j.train.SftConfig;
import dev.spo4j.train.SftTrainer;
import java.nio.file.Path;
import java.util.Locale;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

@Command(name = "sft", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Supervised fine-tuning: next-token cross-entropy on prompt + completion, completion tokens",
                "only (EOS included), through the fused token log-probs kernel. Writes RUN_DIR/final-model."})
final class SftCommand implements Callable<Integer> {
    @Option(names = "--model", required = true, paramLabel = "DIR", description = "Hugging Face model folder")
    Path model;
    @Option(names = "--data", required = true, paramLabel = "FILE", description = "JSONL: prompt, completion")
    Path data;
    @Option(names = "--out", required = true, paramLabel = "RUN_DIR", description = "run folder: final-model/, metrics.jsonl, metrics.png")
    Path out;
    @Option(names = "--lr", defaultValue = "1e-3", description = "peak learning rate (default: ${DEFAULT-VALUE})")
    double lr;
    @Option(names = "--schedule", defaultValue = "cosine", description = "cosine | linear | constant (default: ${DEFAULT-VALUE})")
    String schedule;
    @Option(names = "--warmup-ratio", defaultValue = "0.05", description = "(default: ${DEFAULT-VALUE})")
    double warmupRatio;
    @Option(names = "--weight-decay", defaultValue = "0", description = "(default: ${DEFAULT-VALUE})")
    double weightDecay;
    @Option(names = "--max-grad-norm", defaultValue = "1.0", description = "0 = off (default: ${DEFAULT-VALUE})")
    double maxGradNorm;
    @Option(names = "--batch-size", defaultValue = "16", description = "(default: ${DEFAULT-VALUE})")
    int batchSize;
    @Option(names = "--epochs", defaultValue = "1", description = "(default: ${DEFAULT-VALUE})")
    int epochs;
    @Option(names = "--max-steps", defaultValue = "-1", description = "overrides --epochs when > 0 (default: ${DEFAULT-VALUE})")
    int maxSteps;
    @Option(names = "--max-length", defaultValue = "512", description = "(default: ${DEFAULT-VALUE})")
    int maxLength;
    @Option(names = "--seed", defaultValue = "42", description = "(default: ${DEFAULT-VALUE})")
    long seed;
    @Option(names = "--threads", defaultValue = "0", description = "0 = LibTorch's default (default: ${DEFAULT-VALUE})")
    int threads;
    @Option(names = "--log-every", defaultValue = "10", description = "(default: ${DEFAULT-VALUE})")
    int logEvery;
    @Option(names = "--verbose", description = "stack traces on errors")
    boolean verbose;

    @Override
    public Integer call() {
        SftConfig c = new SftConfig();
        c.model = model.toString();
        c.data = data.toString();
        c.out = out.toString();
        c.lr = lr;
        c.schedule = schedule;
        c.warmupRatio = warmupRatio;
        c.weightDecay = weightDecay;
        c.maxGradNorm = maxGradNorm;
        c.batchSize = batchSize;
        c.epochs = epochs;
        c.maxSteps = maxSteps;
        c.maxLength = maxLength;
        c.seed = seed;
        c.threads = threads;
        c.logEvery = logEvery;
        SftTrainer.Summary s = SftTrainer.run(c, System.out);
        System.out.printf(Locale.ROOT, "sft: %d steps, loss %.4f -> %.4f in %.1f s; model in %s%n", s.steps(),
                s.firstLoss(), s.lastLoss(), s.seconds(), s.finalModel());
        return 0;
    }
}
