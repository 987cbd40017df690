package dev.spo4j.cli;

import dev.spo4j.train.SftConfig;
import dev.spo4j.train.SftTrainer;
import java.util.Locale;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;

@Command(name = "sft", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Supervised fine-tuning: next-token cross-entropy on prompt + completion, completion tokens",
                "only (EOS included), through the fused token log-probs kernel. Writes RUN_DIR/final-model",
                "(RUN_DIR/final-adapter, PEFT layout, with --lora-r)."})
final class SftCommand implements Callable<Integer> {
    /** Every run setting: the options and their defaults are SftConfig's fields. */
    @Mixin
    SftConfig config = new SftConfig();
    @Mixin
    VerboseOption verbose;

    @Override
    public Integer call() {
        SftTrainer.Summary s = SftTrainer.run(config, System.out);
        System.out.printf(Locale.ROOT, "sft: %d steps, loss %.4f -> %.4f in %.1f s; model in %s%n", s.steps(),
                s.firstLoss(), s.lastLoss(), s.seconds(), s.finalModel());
        return 0;
    }
}
