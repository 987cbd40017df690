package dev.spo4j.cli;

import java.io.PrintWriter;
import picocli.CommandLine;
import picocli.CommandLine.Command;

/**
 * The spo4j command line: {@code java -jar target/spo4j.jar <command> [options]}. Exit code 0
 * on success; on a user error one line on stderr and a non-zero code (a stack trace only with
 * --verbose).
 */
@Command(name = "spo4j", mixinStandardHelpOptions = true, version = "spo4j 0.1.0",
        description = "Preference optimisation (SPO, DPO, IPO, hinge) of Llama-family models on LibTorch.",
        subcommands = {TrainCommand.class, LogpsCommand.class, SftCommand.class,
                GenerateCommand.class, ExperimentCommand.class})
public final class Main implements Runnable {
    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    public static void main(String[] args) {
        System.exit(run(args));
    }

    public static int run(String... args) {
        return runWith(new CommandLine(new Main()), args);
    }

    /** Runs on a configured command line (tests redirect its error stream). */
    public static int runWith(CommandLine cl, String... args) {
        cl.setExecutionExceptionHandler((e, cmd, parsed) -> {
            boolean verbose = parsed.hasMatchedOption("--verbose")
                    || (parsed.subcommand() != null && parsed.subcommand().hasMatchedOption("--verbose"));
            PrintWriter err = cmd.getErr();
            if (verbose) {
                e.printStackTrace(err);
            }
            Throwable shown = e instanceof java.io.UncheckedIOException && e.getCause() != null ? e.getCause() : e;
            err.println("spo4j: error: " + (shown.getMessage() == null ? shown.toString() : shown.getMessage()));
            err.flush();
            return e instanceof IllegalArgumentException ? 2 : 1;
        });
        return cl.execute(args);
    }

    @Override
    public void run() {
        spec.commandLine().usage(spec.commandLine().getOut());
    }
}
