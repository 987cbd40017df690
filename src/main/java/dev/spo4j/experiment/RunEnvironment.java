package dev.spo4j.experiment;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;

/**
 * What an experiment's numbers depend on beyond its seed: the CPU and the instruction sets
 * that select the kernels' SIMD path (x86-64-v4 needs the AVX-512 F/BW/CD/DQ/VL set; bf16
 * dot products come from AVX-512 BF16 in LibTorch's own kernels), the thread count, and
 * the Java, LibTorch and operating-system versions. Written into the run's config.json.
 */
final class RunEnvironment {
    private RunEnvironment() {}

    private static final List<String> FLAGS = List.of("avx2", "fma", "avx512f", "avx512bw", "avx512cd", "avx512dq",
            "avx512vl", "avx512_bf16", "amx_bf16");

    static Map<String, String> describe(int threads) {
        Map<String, String> m = new LinkedHashMap<>();
        String model = "unknown";
        TreeSet<String> flags = new TreeSet<>();
        try {
            for (String line : Files.readAllLines(Path.of("/proc/cpuinfo"))) {
                if (line.startsWith("model name") && model.equals("unknown")) {
                    model = line.substring(line.indexOf(':') + 1).strip();
                } else if (line.startsWith("flags") && flags.isEmpty()) {
                    for (String f : line.substring(line.indexOf(':') + 1).strip().split("\\s+")) {
                        if (FLAGS.contains(f)) {
                            flags.add(f);
                        }
                    }
                }
            }
        } catch (IOException | RuntimeException e) {
            model = "unknown (" + e.getMessage() + ")";
        }
        boolean v4 = flags.containsAll(List.of("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"));
        m.put("cpu", model);
        m.put("cpu_flags", String.join(" ", flags));
        m.put("kernel_simd_path", v4 ? "x86-64-v4" : flags.contains("avx2") && flags.contains("fma") ? "x86-64-v3" : "baseline");
        m.put("available_processors", Integer.toString(Runtime.getRuntime().availableProcessors()));
        m.put("threads", Integer.toString(threads));
        m.put("java", System.getProperty("java.vendor") + " " + System.getProperty("java.version"));
        m.put("os", System.getProperty("os.name") + " " + System.getProperty("os.version") + " " + System.getProperty("os.arch"));
        Package torch = org.bytedeco.pytorch.global.torch.class.getPackage();
        String v = torch == null ? null : torch.getImplementationVersion();
        m.put("libtorch_preset", v == null ? "unknown (not run from the preset's jar)" : v);
        return m;
    }
}
