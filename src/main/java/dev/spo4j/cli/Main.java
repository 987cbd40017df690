package dev.spo4j.cli;

import dev.spo4j.loss.LossImpl;
import dev.spo4j.loss.LossType;
import dev.spo4j.train.LrSchedule;
import java.io.PrintWriter;
import picocli.CommandLine;
import picocli.CommandLine.Command;

/**
 * The spo4j command line: {@code java -jar target/spo4j.jar <command> [options]}. Exit code 0
 * on success; on a user error (a bad option value, bad data, a missing file) one line on
 * stderr and exit code 2; on an internal failure exit code 1. A stack trace only with
 * --verbose.
 */
@Command(name = "spo4j", mixinStandardHelpOptions = true, version = "spo4j 0.1.0",
        description = "Preference optimisation (SPO, DPO, IPO, hinge) of Llama-family models on LibTorch.",
        subcommands = {TrainCommand.class, LogpsCommand.class, SftCommand.class,
                GenerateCommand.class, ExperimentCommand.class, MergeCommand.class})
public final class Main implements Runnable {
    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    /** Runs a command and exits with its code. */
    public static void main(String[] args) {
        System.exit(run(args));
    }

    /** Runs a command; returns its exit code. */
    public static int run(String... args) {
        return runWith(new CommandLine(new Main()), args);
    }

    /** Runs on a configured command line (tests redirect its error stream). */
    public static int runWith(CommandLine cl, String... args) {
        // Options are parsed into their types once, here, with the library's own messages.
        cl.registerConverter(LossType.class, LossType::parse);
        cl.registerConverter(LossImpl.class, LossImpl::parse);
        cl.registerConverter(LrSchedule.Kind.class, LrSchedule.Kind::parse);
        cl.setParameterExceptionHandler((e, args1) -> {
            CommandLine cmd = e.getCommandLine();
            PrintWriter err = cmd.getErr();
            String message = e.getCause() instanceof IllegalArgumentException && e.getCause().getMessage() != null
                    ? "option " + optionOf(e) + e.getCause().getMessage() : e.getMessage();
            err.println("spo4j: error: " + message + " (see '" + cmd.getCommandSpec().qualifiedName() + " --help')");
            err.flush();
            return 2;
        });
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

    /** "--loss: " for a conversion error of an option (picocli's own message names it otherwise). */
    private static String optionOf(CommandLine.ParameterException e) {
        return e.getArgSpec() instanceof CommandLine.Model.OptionSpec o ? o.longestName() + ": " : "";
    }

    @Override
    public void run() {
        spec.commandLine().usage(spec.commandLine().getOut());
    }
}
