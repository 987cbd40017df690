package dev.spo4j.cli;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.lang.management.ManagementFactory;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.TimeUnit;

/**
 * {@code train --nproc-per-node N}: starts N worker JVMs on this machine (the same java, class
 * path and arguments, minus that option), each with torchrun's environment (RANK, WORLD_SIZE,
 * LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR=127.0.0.1, MASTER_PORT = a free port). Rank 0's
 * output is this process's output; the other ranks' stderr is shown prefixed with their rank.
 * When a worker exits non-zero, the others are stopped and this process exits non-zero,
 * naming the first rank that failed. Workers exit on their own if this process disappears.
 */
final class LocalLauncher {
    /** Tells a worker which process to outlive no longer. */
    static final String PARENT_ENV = "SPO4J_LAUNCHER_PID";

    private LocalLauncher() {}

    record Exit(int rank, int code) {}

    static int launch(int nproc, List<String> workerArgs, PrintStream out, PrintStream err) throws IOException,
            InterruptedException {
        int port;
        try (ServerSocket s = new ServerSocket(0, 1, InetAddress.getByName("127.0.0.1"))) {
            port = s.getLocalPort();
        }
        List<String> base = new ArrayList<>();
        base.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
        for (String a : ManagementFactory.getRuntimeMXBean().getInputArguments()) {
            if (a.startsWith("-D") || a.startsWith("-Xm") || a.startsWith("-Xss")) {  // not agents or debug ports
                base.add(a);
            }
        }
        base.addAll(List.of("-cp", System.getProperty("java.class.path"), Main.class.getName()));
        base.addAll(workerArgs);
        String omp = System.getenv("OMP_NUM_THREADS");
        int threads = Math.max(1, Runtime.getRuntime().availableProcessors() / nproc);
        out.printf("spo4j: starting %d workers on 127.0.0.1:%d%s%n", nproc, port,
                omp == null ? " (OMP_NUM_THREADS=" + threads + " each)" : "");
        List<Process> workers = new ArrayList<>();
        ConcurrentLinkedQueue<Exit> exits = new ConcurrentLinkedQueue<>();
        Thread stopper = new Thread(() -> workers.forEach(Process::destroyForcibly));
        Runtime.getRuntime().addShutdownHook(stopper);
        try {
            for (int r = 0; r < nproc; r++) {
                ProcessBuilder pb = new ProcessBuilder(base);
                Map<String, String> env = pb.environment();
                env.put("RANK", String.valueOf(r));
                env.put("LOCAL_RANK", String.valueOf(r));
                env.put("WORLD_SIZE", String.valueOf(nproc));
                env.put("LOCAL_WORLD_SIZE", String.valueOf(nproc));
                env.put("MASTER_ADDR", "127.0.0.1");
                env.put("MASTER_PORT", String.valueOf(port));
                env.put(PARENT_ENV, String.valueOf(ProcessHandle.current().pid()));
                if (omp == null) {
                    env.put("OMP_NUM_THREADS", String.valueOf(threads));
                }
                if (r == 0) {
                    pb.redirectOutput(ProcessBuilder.Redirect.INHERIT).redirectError(ProcessBuilder.Redirect.INHERIT);
                } else {
                    pb.redirectOutput(ProcessBuilder.Redirect.DISCARD);
                }
                Process p = pb.start();
                workers.add(p);
                int rank = r;
                if (r > 0) {
                    forward(p, rank, err);
                }
                p.onExit().thenAccept(q -> exits.add(new Exit(rank, q.exitValue())));
            }
            int done = 0;
            while (true) {
                Exit e = exits.poll();
                if (e == null) {
                    Thread.sleep(50);
                    continue;
                }
                if (e.code != 0) {
                    stop(workers);
                    Thread.sleep(100);  // let the other exits arrive (onExit runs asynchronously)
                    StringBuilder others = new StringBuilder();
                    for (Exit o; (o = exits.poll()) != null; ) {
                        others.append(others.length() == 0 ? "; then " : ", ").append("rank ").append(o.rank)
                                .append(" with code ").append(o.code).append(describe(o.code));
                    }
                    err.printf("spo4j: error: rank %d exited with code %d%s%s; the other workers were stopped%n",
                            e.rank, e.code, describe(e.code), others);
                    return e.code == 2 ? 2 : 1;
                }
                if (++done == nproc) {
                    return 0;
                }
            }
        } finally {
            stop(workers);
            Runtime.getRuntime().removeShutdownHook(stopper);
        }
    }

    private static String describe(int code) {
        return code == 137 ? " (killed)" : code == 143 ? " (terminated)" : "";
    }

    /** SIGTERM, then SIGKILL after 5 s. */
    private static void stop(List<Process> workers) throws InterruptedException {
        for (Process p : workers) {
            if (p.isAlive()) {
                p.destroy();
            }
        }
        for (Process p : workers) {
            if (!p.waitFor(5, TimeUnit.SECONDS)) {
                p.destroyForcibly();
                p.waitFor();
            }
        }
    }

    private static void forward(Process p, int rank, PrintStream err) {
        Thread t = new Thread(() -> {
            try (BufferedReader r = new BufferedReader(new InputStreamReader(p.getErrorStream(), StandardCharsets.UTF_8))) {
                for (String line; (line = r.readLine()) != null; ) {
                    if (!line.startsWith("[Gloo] Rank")) {  // Gloo's per-rank "connected" notice
                        err.println("[rank " + rank + "] " + line);
                    }
                }
            } catch (IOException ignored) {
                // the worker is gone
            }
        }, "rank-" + rank + "-stderr");
        t.setDaemon(true);
        t.start();
    }

    /** Ends this worker if the launcher that started it is gone (killed with SIGKILL, say). */
    static void exitWithLauncher() {
        String pid = System.getenv(PARENT_ENV);
        if (pid == null) {
            return;
        }
        ProcessHandle.of(Long.parseLong(pid)).ifPresentOrElse(h -> h.onExit().thenRun(() -> {
            System.err.println("spo4j: the launcher (pid " + pid + ") is gone; rank " + System.getenv("RANK") + " exits");
            Runtime.getRuntime().halt(1);
        }), () -> Runtime.getRuntime().halt(1));
    }
}
