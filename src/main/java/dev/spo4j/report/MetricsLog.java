package dev.spo4j.report;

import com.google.gson.Gson;
import com.google.gson.GsonBuilder;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import dev.spo4j.io.AtomicFiles;
import java.io.BufferedWriter;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * metrics.jsonl in the run folder: one JSON object per optimiser step (TRL's metric names
 * plus step, epoch, tokens/s) and per evaluation ("eval/..." names). Kept in memory too, for
 * the plot and the summary. On resume, lines past the checkpoint's step are dropped first,
 * so a resumed run's log reads as if it had never stopped (a last line cut off by a kill is
 * dropped too). A null file keeps the rows in memory
 * only (data-parallel ranks other than 0).
 */
public final class MetricsLog implements AutoCloseable {
    private static final Gson GSON = new GsonBuilder().serializeSpecialFloatingPointValues().create();
    private final Path file;
    private final BufferedWriter out;
    private final List<Map<String, Double>> rows = new ArrayList<>();

    /**
     * Opens {@code file} for appending. With {@code resumeFromStep} &gt; 0 an existing file keeps
     * its rows up to that step (read back into {@link #rows()}) and loses the rest; otherwise an
     * existing file is deleted. A null {@code file} keeps the rows in memory only.
     */
    public MetricsLog(Path file, int resumeFromStep) {
        this.file = file;
        if (file == null) {
            out = null;
            return;
        }
        try {
            if (resumeFromStep > 0 && Files.exists(file)) {
                List<String> kept = new ArrayList<>();
                List<String> lines = Files.readAllLines(file, StandardCharsets.UTF_8);
                for (int i = 0; i < lines.size(); i++) {
                    String line = lines.get(i);
                    if (line.isBlank()) {
                        continue;
                    }
                    Map<String, Double> row;
                    try {
                        row = parse(line);
                    } catch (RuntimeException e) {
                        if (i == lines.size() - 1) {
                            break;  // a last line cut off by a kill: dropped (its step is redone)
                        }
                        throw new IllegalArgumentException(file + ":" + (i + 1) + ": not a metrics row ("
                                + e.getMessage() + ")");
                    }
                    if (row.getOrDefault("step", 0.0) <= resumeFromStep) {
                        kept.add(line);
                        rows.add(row);
                    }
                }
                AtomicFiles.writeString(file, kept.isEmpty() ? "" : String.join("\n", kept) + "\n");
            } else {
                Files.deleteIfExists(file);
            }
            out = Files.newBufferedWriter(file, StandardCharsets.UTF_8, StandardOpenOption.CREATE,
                    StandardOpenOption.APPEND);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot open metrics log " + file, e);
        }
    }

    private static Map<String, Double> parse(String line) {
        JsonObject o = JsonParser.parseString(line).getAsJsonObject();
        Map<String, Double> m = new LinkedHashMap<>();
        o.entrySet().forEach(e -> m.put(e.getKey(), e.getValue().getAsDouble()));
        return m;
    }

    /** Adds a row in memory and, with a file, writes it as one JSON line and flushes. */
    public void append(Map<String, Double> row) {
        rows.add(new LinkedHashMap<>(row));
        if (out == null) {
            return;
        }
        try {
            out.write(GSON.toJson(row));
            out.newLine();
            out.flush();
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write metrics log " + file, e);
        }
    }

    /** Every row so far, those kept from a resumed log first (the live list, not a copy). */
    public List<Map<String, Double>> rows() {
        return rows;
    }

    /** The metrics.jsonl path, or null when the rows are kept in memory only. */
    public Path file() {
        return file;
    }

    @Override
    public void close() {
        if (out == null) {
            return;
        }
        try {
            out.close();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }
}
