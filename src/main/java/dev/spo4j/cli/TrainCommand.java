package dev.spo4j.cli;

import dev.spo4j.train.TrainConfig;
import dev.spo4j.train.Trainer;
import java.nio.file.Path;
import java.time.LocalDateTime;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.ParseResult;
import picocli.CommandLine.Spec;

@Command(name = "train", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Align a model with a preference loss. With no --model and --data: the embedded default,",
                "a tiny Llama-style model and a synthetic preference set ranked by a known gold reward (SPO),",
                "trained with --lr 2e-3 --batch-size 16 --max-steps 600 --eval-every 50 unless those are given."})
final class TrainCommand implements Callable<Integer> {
    @Spec
    CommandSpec spec;

    /** Every run setting: the options and their defaults are TrainConfig's fields. */
    @Mixin
    TrainConfig config = new TrainConfig();

    @Option(names = "--resume", paramLabel = "DIR", description = "continue a run from its newest checkpoint (or this checkpoint); --max-steps may extend it")
    Path resume;
    @Option(names = "--overwrite", description = "replace an earlier run in --out (by default a non-empty --out is refused)")
    boolean overwrite;
    @Option(names = "--nproc-per-node", paramLabel = "N", description = "data parallel: start N worker processes on this "
            + "machine (torchrun-style; for several machines set RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT instead) (default: ${DEFAULT-VALUE})")
    int nprocPerNode = 1;
    @Option(names = "--dry-run", description = "print the expected peak memory of a training step by part (weights, "
            + "master copy, adapters, gradients, optimiser, activations, LM head) for --model's config.json and these "
            + "options, then exit; nothing is loaded")
    boolean dryRun;
    @Mixin
    VerboseOption verbose;

    @Override
    public Integer call() throws Exception {
        if (nprocPerNode < 1) {
            throw new IllegalArgumentException("--nproc-per-node = " + nprocPerNode + " (expected >= 1)");
        }
        if (nprocPerNode > 1) {
            if (System.getenv("WORLD_SIZE") != null) {
                throw new IllegalArgumentException("--nproc-per-node with WORLD_SIZE already set: either launch the "
                        + "workers yourself with RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT, or let --nproc-per-node do it");
            }
            return LocalLauncher.launch(nprocPerNode, workerArgs(), System.out, System.err);
        }
        if (dryRun) {
            return dryRun();
        }
        LocalLauncher.exitWithLauncher();
        Trainer.Summary s;
        if (resume != null) {
            refuseOptionsWithResume();
            s = Trainer.resume(resume, config.maxSteps, System.out);
        } else {
            if (config.model == null && config.data == null) {
                useEmbeddedDefaults();
            }
            if (config.out == null) {
                config.out = defaultOut().toString();
            }
            s = new Trainer(config, System.out).withOverwrite(overwrite).run();
        }
        if (System.getenv("RANK") == null || System.getenv("RANK").trim().equals("0")) {
            print(s);
        }
        return 0;
    }

    /** Prints the memory estimate of a step for config.model and the options. */
    private int dryRun() throws java.io.IOException {
        if (config.model == null) {
            throw new IllegalArgumentException("--dry-run needs --model DIR (its config.json; no weights are read)");
        }
        config.validate();
        Path dir = Path.of(config.model);
        dev.spo4j.model.ModelConfig mc = dev.spo4j.model.ModelConfig.read(dir.resolve(dev.spo4j.model.ModelFolder.CONFIG));
        dev.spo4j.model.Precision precision = config.precision(config.device.startsWith("cuda"), dir);
        dev.spo4j.train.MemoryEstimate e = dev.spo4j.train.MemoryEstimate.of(mc, precision, config.loraConfig(),
                config.gradientCheckpointing, config.batchSize, config.maxLength, config.lmHead, config.lmHeadChunkBytes(),
                config.device.startsWith("cuda"));
        System.out.printf(Locale.ROOT, "expected peak memory of a step (%s): %s, %s, %s%s, %s LM head, %d pairs x %d tokens "
                + "per micro-batch%n", config.device.startsWith("cuda") ? "GPU memory" : "resident memory of the process",
                dir, precision.torchDtype(),
                config.lora() ? "LoRA r " + config.loraConfig().r() : "full fine-tuning",
                config.gradientCheckpointing ? ", activation checkpointing" : "",
                config.lmHead.toString().toLowerCase(Locale.ROOT), config.batchSize, config.maxLength);
        if (config.lmHead == dev.spo4j.loss.LmHead.FUSED && config.lossImpl == dev.spo4j.loss.LossImpl.FUSED) {
            System.out.println(config.headRegime(mc, precision.scalarType(), !config.lora()));
        }
        System.out.print(e.table());
        return 0;
    }

    /** Options that --resume may take with it: the rest are the run's own (stored in its checkpoint). */
    private static final java.util.Set<String> WITH_RESUME = java.util.Set.of("--resume", "--max-steps",
            "--nproc-per-node", "--verbose", "-v", "--help", "-h", "--version", "-V");

    /** A resumed run keeps its settings: any other option given with --resume is refused, by name. */
    private void refuseOptionsWithResume() {
        List<String> given = new ArrayList<>();
        for (picocli.CommandLine.Model.OptionSpec o : spec.commandLine().getParseResult().matchedOptions()) {
            if (!WITH_RESUME.contains(o.longestName())) {
                given.add(o.longestName());
            }
        }
        if (!given.isEmpty()) {
            throw new IllegalArgumentException(String.join(", ", given) + " with --resume: a resumed run keeps the "
                    + "settings it started with (its checkpoint's trainer_state.json); only --max-steps may change. "
                    + "Start a new run with --out to use other settings");
        }
    }

    /** The embedded run's settings ({@link TrainConfig#embeddedDefault()}) for the options the user did not give. */
    private void useEmbeddedDefaults() {
        TrainConfig e = TrainConfig.embeddedDefault();
        ParseResult given = spec.commandLine().getParseResult();
        if (!given.hasMatchedOption("--lr")) {
            config.optim.lr = e.optim.lr;
        }
        if (!given.hasMatchedOption("--batch-size")) {
            config.batchSize = e.batchSize;
        }
        if (!given.hasMatchedOption("--max-steps")) {
            config.maxSteps = e.maxSteps;
        }
        if (!given.hasMatchedOption("--eval-every")) {
            config.evalEvery = e.evalEvery;
        }
    }

    /** This command's arguments without --nproc-per-node, and with a fixed --out (every worker writes the same run). */
    private List<String> workerArgs() {
        List<String> args = new ArrayList<>(spec.commandLine().getParseResult().originalArgs());
        List<String> out = new ArrayList<>();
        for (int i = 0; i < args.size(); i++) {
            String a = args.get(i);
            if (a.equals("--nproc-per-node")) {
                i++;
            } else if (!a.startsWith("--nproc-per-node=")) {
                out.add(a);
            }
        }
        if (!out.contains("train")) {
            out.add(0, "train");
        }
        if (config.out == null && resume == null) {
            out.add("--out");
            out.add(defaultOut().toString());
        }
        return out;
    }

    private Path defaultOut() {
        return Path.of("runs", config.lossLabel() + "-" + LocalDateTime.now().format(DateTimeFormatter.ofPattern("yyyyMMdd-HHmmss")));
    }

    private static void print(Trainer.Summary s) {
        Map<String, Double> t = s.lastTrain(), e = s.eval();
        System.out.println();
        System.out.printf(Locale.ROOT, "done: %d steps in %.1f s (%.0f tokens/s)%n", s.steps(), s.seconds(), s.tokensPerSecond());
        System.out.printf(Locale.ROOT, "train (last step): loss %.4f  accuracy %.3f  margin %+.4f%n",
                t.getOrDefault("loss", Double.NaN), t.getOrDefault("rewards/accuracies", Double.NaN),
                t.getOrDefault("rewards/margins", Double.NaN));
        if (!e.isEmpty()) {
            System.out.printf(Locale.ROOT, "eval:              loss %.4f  accuracy %.3f  margin %+.4f%n",
                    e.getOrDefault("eval/loss", Double.NaN), e.getOrDefault("eval/rewards/accuracies", Double.NaN),
                    e.getOrDefault("eval/rewards/margins", Double.NaN));
        }
        System.out.println("run folder: " + s.runDir() + "  (metrics.jsonl, metrics.png, checkpoints/, final-model/)");
    }
}
