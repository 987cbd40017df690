package dev.spo4j.data;

import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

/**
 * One supervised fine-tuning example: a prompt and the completion to learn. JSONL records
 * carry {@code prompt} and {@code completion} (strings; the prompt may be empty, the
 * completion may not).
 *
 * @param prompt     the prompt text; may be empty
 * @param completion the text to learn; not blank
 */
public record SftExample(String prompt, String completion) {
    /**
     * Checks that both texts are non-null and the completion is not blank (whitespace only is
     * rejected too); throws IllegalArgumentException otherwise.
     */
    public SftExample {
        if (prompt == null || completion == null) {
            throw new IllegalArgumentException("prompt and completion must be strings");
        }
        if (completion.isBlank()) {
            throw new IllegalArgumentException("completion is empty");
        }
    }

    /** Reads a JSONL file of {prompt, completion} records, naming file:line on a bad record. */
    public static List<SftExample> read(Path jsonl) {
        List<JsonObject> records = PreferenceDataset.readRaw(jsonl);
        List<SftExample> out = new ArrayList<>(records.size());
        for (int i = 0; i < records.size(); i++) {
            JsonObject o = records.get(i);
            try {
                out.add(new SftExample(string(o, "prompt"), string(o, "completion")));
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException(jsonl + ": record " + (i + 1) + ": " + e.getMessage(), e);
            }
        }
        if (out.isEmpty()) {
            throw new IllegalArgumentException(jsonl + ": no records (expected one JSON object per line)");
        }
        return Collections.unmodifiableList(out);
    }

    /** Writes the examples as JSONL, atomically. */
    public static void write(Path out, List<SftExample> examples) {
        List<JsonObject> records = new ArrayList<>(examples.size());
        for (SftExample e : examples) {
            JsonObject o = new JsonObject();
            o.addProperty("prompt", e.prompt());
            o.addProperty("completion", e.completion());
            records.add(o);
        }
        PreferenceDataset.writeRaw(out, records);
    }

    private static String string(JsonObject o, String field) {
        JsonElement e = o.get(field);
        if (e == null || !e.isJsonPrimitive() || !e.getAsJsonPrimitive().isString()) {
            throw new IllegalArgumentException("field '" + field + "' is missing or not a string");
        }
        return e.getAsString();
    }
}
