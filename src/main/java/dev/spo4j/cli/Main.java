package dev.spo4j.cli;

import dev.spo4j.kernels.OpenMp;
import dev.spo4j.loss.LmHead;
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
                GenerateCommand.class, ExperimentCommand.class, MergeCommand.class, TokenizeCommand.class})
public final class Main implements Runnable {
    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    /** Runs a command and exits with its code. */
    public static void main(String[] args) {
        OpenMp.defaultsUnlessSet();  // before anything loads LibTorch or allocates with it
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
        cl.registerConverter(LmHead.class, LmHead::parse);
        cl.registerConverter(LrSchedule.Kind.class, LrSchedule.Kind::parse);
        cl.registerConverter(Double.TYPE, Main::finiteDouble);
        cl.registerConverter(Double.class, Main::finiteDouble);
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
            err.println("spo4j: error: " + describe(e));
            err.flush();
            return e instanceof IllegalArgumentException ? 2 : 1;
        });
        return cl.execute(args);
    }

    /** Every floating-point option: a finite number (NaN and infinities are refused while parsing, naming the option). */
    static double finiteDouble(String text) {
        double v;
        try {
            v = Double.parseDouble(text.trim());
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("'" + text + "' is not a number");
        }
        if (!Double.isFinite(v)) {
            throw new IllegalArgumentException("'" + text + "' is not a finite number");
        }
        return v;
    }

    /**
     * One line for a failure: the message, with the reason an I/O error happened (the JDK's
     * file-system exceptions carry only the path in their message).
     */
    static String describe(Throwable e) {
        StringBuilder sb = new StringBuilder();
        Throwable t = e;
        java.util.Set<Throwable> seen = new java.util.HashSet<>();
        while (t != null && seen.add(t)) {
            String m = ioReason(t);
            if (m != null && !m.isEmpty() && sb.indexOf(m) < 0) {
                if (sb.length() > 0) {
                    sb.append(": ");
                }
                sb.append(m);
            }
            t = t.getCause();
        }
        return sb.length() == 0 ? e.toString() : sb.toString();
    }

    private static String ioReason(Throwable t) {
        if (t instanceof java.nio.file.NoSuchFileException f) {
            return f.getFile() + ": no such file or folder";
        }
        if (t instanceof java.nio.file.AccessDeniedException f) {
            return f.getFile() + ": permission denied";
        }
        if (t instanceof java.nio.file.FileAlreadyExistsException f) {
            return f.getFile() + ": already exists";
        }
        if (t instanceof java.nio.file.NotDirectoryException f) {
            return f.getFile() + ": not a folder";
        }
        if (t instanceof java.nio.file.DirectoryNotEmptyException f) {
            return f.getFile() + ": folder not empty";
        }
        if (t instanceof java.nio.file.FileSystemException f) {
            return f.getReason() == null ? f.getMessage() : f.getFile() + ": " + f.getReason();
        }
        if (t instanceof java.io.UncheckedIOException && t.getCause() != null
                && t.getMessage() != null && t.getMessage().equals(t.getCause().toString())) {
            return null;  // the wrapper's message is the cause's: say it once
        }
        if (t instanceof java.io.IOException && t.getMessage() == null) {
            return t.getClass().getSimpleName();
        }
        return t.getMessage();
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
