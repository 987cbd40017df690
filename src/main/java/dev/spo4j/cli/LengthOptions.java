package dev.spo4j.cli;

import dev.spo4j.train.TrainConfig;
import picocli.CommandLine.Option;

/**
 * The length options of {@code train}, for the commands that must tokenize exactly as it does
 * ({@code logps}, {@code tokenize}): the same names, defaults and checks.
 */
final class LengthOptions {
    @Option(names = "--max-length", defaultValue = "512", description = "as train's (default: ${DEFAULT-VALUE})")
    int maxLength;
    @Option(names = "--max-prompt-length", defaultValue = "0", description = "as train's; 0 = no limit (default: ${DEFAULT-VALUE})")
    int maxPromptLength;
    @Option(names = "--max-completion-length", defaultValue = "0", description = "as train's; 0 = no limit (default: ${DEFAULT-VALUE})")
    int maxCompletionLength;
    @Option(names = "--truncation-mode", defaultValue = "keep_end", description = "keep_end | keep_start (default: ${DEFAULT-VALUE})")
    String truncationMode;

    /** A train configuration holding these options, checked as train checks them (IllegalArgumentException). */
    TrainConfig config() {
        TrainConfig c = new TrainConfig();
        c.maxLength = maxLength;
        c.maxPromptLength = maxPromptLength;
        c.maxCompletionLength = maxCompletionLength;
        c.truncationMode = truncationMode;
        c.validateLengths();
        return c;
    }
}
