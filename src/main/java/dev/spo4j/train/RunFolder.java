package dev.spo4j.train;

import com.google.gson.Gson;
import com.google.gson.GsonBuilder;
import com.google.gson.JsonParseException;
import com.google.gson.reflect.TypeToken;
import dev.spo4j.io.AtomicFiles;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Objects;
import java.util.stream.Stream;

/**
 * The identity of a run folder: which run owns it and what it was trained on.
 *
 * <p>A new run claims its folder ({@link #claim}): the folder must be missing or empty, or be
 * an earlier spo4j run that the user asked to replace ({@code --overwrite}); two runs never
 * share a folder. The run's inputs are fingerprinted ({@code fingerprint.json}: per input file,
 * its size and a SHA-256 of its first and last MiB) when it starts, and a resume recomputes
 * them and refuses to go on when any changed: stored reference log-probs and the batch order
 * belong to the data they were made from.
 */
public final class RunFolder {
    /** The fingerprint file in a run folder. */
    public static final String FINGERPRINT = "fingerprint.json";
    private static final int HEAD_TAIL = 1 << 20;
    private static final Gson GSON = new GsonBuilder().setPrettyPrinting().create();

    private RunFolder() {}

    /** Whether {@code dir} holds anything at all. */
    static boolean isEmptyOrMissing(Path dir) {
        if (!Files.exists(dir)) {
            return true;
        }
        if (!Files.isDirectory(dir)) {
            return false;
        }
        try (Stream<Path> s = Files.list(dir)) {
            return s.findAny().isEmpty();
        } catch (IOException e) {
            throw new UncheckedIOException("cannot list the run folder " + dir, e);
        }
    }

    /** Whether {@code dir} looks like a spo4j run folder (its config.json or checkpoints/). */
    static boolean isRunFolder(Path dir) {
        return Files.isRegularFile(dir.resolve("config.json")) || Files.isDirectory(dir.resolve("checkpoints"));
    }

    /**
     * Checks that a new run may write into {@code runDir}, before anything is written: the
     * folder is missing or empty, or {@code overwrite} is set and it is an earlier run (which is
     * then deleted). Returns whether the folder must be created (and so removed again when the
     * run fails before its first step).
     */
    static boolean claim(Path runDir, boolean overwrite) {
        if (Files.exists(runDir) && !Files.isDirectory(runDir)) {
            throw new IllegalArgumentException("--out " + runDir + " is a file, not a folder");
        }
        if (isEmptyOrMissing(runDir)) {
            return !Files.exists(runDir);
        }
        if (!overwrite) {
            throw new IllegalArgumentException("--out " + runDir + " is not empty"
                    + (isRunFolder(runDir) ? " (it holds a run): continue it with --resume " + runDir
                    + ", replace it with --overwrite, or choose another --out" : ": choose another --out"));
        }
        if (!isRunFolder(runDir)) {
            throw new IllegalArgumentException("--overwrite: " + runDir + " is not empty and holds no spo4j run "
                    + "(no config.json or checkpoints/); it is left alone: choose another --out");
        }
        try {
            AtomicFiles.deleteTree(runDir);
        } catch (IOException e) {
            throw new UncheckedIOException("--overwrite: cannot delete the earlier run in " + runDir, e);
        }
        return true;
    }

    /** The fingerprints of a run's input files and model folders (name → "size sha256"), in a fixed order. */
    static Map<String, String> fingerprint(TrainConfig cfg) {
        Map<String, String> out = new LinkedHashMap<>();
        put(out, "--data", cfg.data);
        put(out, "--eval-data", cfg.evalData);
        putModel(out, "--model", cfg.model);
        putModel(out, "--ref-model", cfg.refModel);
        return out;
    }

    private static void put(Map<String, String> out, String option, String file) {
        if (file != null) {
            if (!Files.isRegularFile(Path.of(file))) {
                throw new IllegalArgumentException(option + " " + file + (Files.exists(Path.of(file))
                        ? " is not a file" : " does not exist"));
            }
            out.put(option + " " + file, of(Path.of(file)));
        }
    }

    private static void putModel(Map<String, String> out, String option, String dir) {
        if (dir == null) {
            return;
        }
        if (!Files.isDirectory(Path.of(dir))) {
            throw new IllegalArgumentException(option + " " + dir + (Files.exists(Path.of(dir))
                    ? " is not a folder" : " does not exist"));
        }
        try (Stream<Path> s = Files.list(Path.of(dir))) {
            for (Path p : s.filter(Files::isRegularFile).sorted().toList()) {
                String n = p.getFileName().toString();
                if (n.endsWith(".json") || n.endsWith(".safetensors") || n.endsWith(".model")) {
                    out.put(option + " " + p, of(p));
                }
            }
        } catch (IOException e) {
            throw new UncheckedIOException("cannot list " + option + " " + dir, e);
        }
    }

    /** "size sha256(first MiB + last MiB)" of a file. */
    static String of(Path file) {
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            long size = ch.size();
            MessageDigest md = MessageDigest.getInstance("SHA-256");
            digest(ch, md, 0, Math.min(size, HEAD_TAIL));
            long tail = Math.max(Math.min(size, HEAD_TAIL), size - HEAD_TAIL);
            digest(ch, md, tail, size - tail);
            return size + " " + HexFormat.of().formatHex(md.digest());
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read " + file + " to fingerprint it", e);
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    private static void digest(FileChannel ch, MessageDigest md, long from, long n) throws IOException {
        ByteBuffer buf = ByteBuffer.allocate((int) n);
        while (buf.hasRemaining()) {
            if (ch.read(buf, from + buf.position()) < 0) {
                throw new IOException("the file shrank while it was read");
            }
        }
        buf.flip();
        md.update(buf);
    }

    /** Writes the run's fingerprint (atomically) into the run folder. */
    static void record(Path runDir, Map<String, String> fingerprint) throws IOException {
        AtomicFiles.writeString(runDir.resolve(FINGERPRINT), GSON.toJson(fingerprint));
    }

    /**
     * On resume: the inputs must be those the run started with. Throws IllegalArgumentException
     * naming the first input that changed. A run folder without a fingerprint (written before
     * fingerprints existed) passes with nothing to compare.
     */
    static void check(Path runDir, Map<String, String> now) {
        Path file = runDir.resolve(FINGERPRINT);
        if (!Files.exists(file)) {
            return;
        }
        Map<String, String> then;
        try {
            then = GSON.fromJson(Files.readString(file), new TypeToken<LinkedHashMap<String, String>>() {}.getType());
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read " + file, e);
        } catch (JsonParseException e) {
            throw new IllegalArgumentException(file + " is not valid JSON (" + e.getMessage() + ")");
        }
        if (then == null) {
            throw new IllegalArgumentException(file + " is empty");
        }
        for (Map.Entry<String, String> e : then.entrySet()) {
            String was = e.getValue(), is = now.get(e.getKey());
            if (!Objects.equals(was, is)) {
                throw new IllegalArgumentException("cannot resume " + runDir + ": " + e.getKey()
                        + (is == null ? " is gone" : " changed since the run started (size and hash "
                        + was + " then, " + is + " now)")
                        + "; a resumed run needs the inputs it started with (start a new run with another --out)");
            }
        }
        for (String k : now.keySet()) {
            if (!then.containsKey(k)) {
                throw new IllegalArgumentException("cannot resume " + runDir + ": " + k
                        + " was not an input when the run started");
            }
        }
    }
}
