package dev.spo4j.kernels;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import dev.spo4j.loss.LossType;
import java.io.IOException;
import java.lang.reflect.Field;
import java.lang.reflect.Modifier;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;

/**
 * The C ABI's constants are defined once, in {@code native/include/spo4j.h}; the Java side
 * copies them by hand (JavaCPP maps functions, not enums) and the GPU benchmark script parses
 * the header at run time. This test reads the header and checks every copy, both ways: a
 * constant added on one side only fails it.
 */
class AbiConstantsTest {
    static final Path HEADER = Path.of("native", "include", "spo4j.h");

    /** Every {@code SPO4J_NAME = value} of the header's enums (comments stripped). */
    static Map<String, Long> headerConstants() throws IOException {
        String text = Files.readString(HEADER, StandardCharsets.UTF_8)
                .replaceAll("(?s)/\\*.*?\\*/", " ").replaceAll("//[^\\n]*", " ");
        Map<String, Long> out = new TreeMap<>();
        Matcher m = Pattern.compile("\\b(SPO4J_[A-Z0-9_]+)\\s*=\\s*\\(?\\s*(-?\\d+)\\s*\\)?").matcher(text);
        while (m.find()) {
            assertFalse(out.containsKey(m.group(1)), "defined twice in the header: " + m.group(1));
            out.put(m.group(1), Long.parseLong(m.group(2)));
        }
        assertTrue(out.size() > 20, "the header parse found only " + out);
        return out;
    }

    /** The {@code static final int} fields of a class whose names start with one of the prefixes. */
    static Map<String, Long> javaInts(Class<?> c, String... prefixes) throws IllegalAccessException {
        Map<String, Long> out = new TreeMap<>();
        for (Field f : c.getDeclaredFields()) {
            int mod = f.getModifiers();
            if (Modifier.isStatic(mod) && Modifier.isFinal(mod) && f.getType() == int.class) {
                for (String p : prefixes) {
                    if (f.getName().startsWith(p)) {
                        f.setAccessible(true);
                        out.put("SPO4J_" + f.getName(), (long) f.getInt(null));
                    }
                }
            }
        }
        return out;
    }

    /** The header's constants whose names (after SPO4J_) start with one of the prefixes. */
    static Map<String, Long> headerGroup(Map<String, Long> all, String... prefixes) {
        Map<String, Long> out = new TreeMap<>();
        all.forEach((k, v) -> {
            for (String p : prefixes) {
                if (k.startsWith("SPO4J_" + p)) {
                    out.put(k, v);
                }
            }
        });
        return out;
    }

    @Test
    void dtypesAndStatusCodesMatchTheHeader() throws Exception {
        Map<String, Long> h = headerConstants();
        assertEquals(headerGroup(h, "F32", "BF16", "F16", "OK", "ERR_"), javaInts(Native.class, "F32", "BF16", "F16", "OK", "ERR_"));
    }

    @Test
    void statisticsLayoutMatchesTheHeader() throws Exception {
        assertEquals(headerGroup(headerConstants(), "STAT_"), javaInts(PreferenceLossKernel.class, "STAT_"));
    }

    @Test
    void lossTypeCodesMatchTheHeader() throws Exception {
        Map<String, Long> java = new TreeMap<>();
        for (LossType t : LossType.values()) {
            java.put("SPO4J_LOSS_" + t.name(), (long) t.code());
        }
        assertEquals(headerGroup(headerConstants(), "LOSS_"), java);
    }

    @Test
    void ignoreIndexMatchesTheHeader() throws Exception {
        assertEquals(headerConstants().get("SPO4J_IGNORE_INDEX"), TokenLogProbs.DEFAULT_IGNORE_INDEX);
    }

    /** bench/gpu/torch_compare.py reads the header itself; its reading must be the same as this one. */
    @Test
    void theGpuScriptParsesTheSameConstants() throws Exception {
        Process p;
        try {
            p = new ProcessBuilder("python3", "bench/gpu/torch_compare.py", "--print-abi").redirectErrorStream(true).start();
        } catch (IOException e) {
            Assumptions.abort("python3 is not installed here: " + e.getMessage());
            return;
        }
        assertTrue(p.waitFor(60, TimeUnit.SECONDS), "torch_compare.py --print-abi did not finish");
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertEquals(0, p.exitValue(), out);
        JsonObject o = JsonParser.parseString(out.trim()).getAsJsonObject();
        Map<String, Long> python = new TreeMap<>();
        o.entrySet().forEach(e -> python.put(e.getKey(), e.getValue().getAsLong()));
        assertEquals(headerConstants(), python);
    }
}
