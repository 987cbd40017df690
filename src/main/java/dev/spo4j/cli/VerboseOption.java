package dev.spo4j.cli;

import picocli.CommandLine.Option;

/** {@code --verbose}, shared by every command: stack traces on errors (read by {@link Main}'s error handler). */
final class VerboseOption {
    @Option(names = "--verbose", description = "stack traces on errors")
    boolean verbose;
}
