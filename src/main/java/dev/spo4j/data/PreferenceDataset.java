package dev.spo4j.data;

import com.google.gson.Gson;
import com.google.gson.GsonBuilder;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParseException;
import com.google.gson.JsonPrimitive;
import dev.spo4j.io.StrictJson;
import dev.spo4j.io.Utf8Lines;
import dev.spo4j.io.AtomicFiles;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.io.Writer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

/**
 * Preference datasets as JSON Lines, in TRL's field names: one JSON object per line with
 * the strings {@code prompt}, {@code chosen}, {@code rejected} and, optionally, the numbers
 * {@code score_chosen} + {@code score_rejected} and {@code ref_chosen_logps} +
 * {@code ref_rejected_logps} (both of a kind or neither). Blank lines are skipped; other
 * fields are ignored by {@link #read} and kept by the raw methods.
 *
 * <p>Validation is strict and whole-file: {@link #read} parses every line (strict JSON: no
 * {@code NaN} literals, no comments, nothing after the object) and checks every record
 * before it returns, so nothing is ever trained on part of a file. Problems are reported
 * as an {@link IllegalArgumentException} whose message starts with {@code file:line:} and
 * names the field, e.g. {@code data.jsonl:7: field "chosen" is missing (expected a string)};
 * when a file has several problems, the first few follow on further lines. A JSON
 * {@code null} in an optional field counts as absent; in a required field it is an error.
 * Numbers must be JSON numbers (not strings) and finite ({@code 1e999} is rejected).
 *
 * <p>Writes are atomic: a temporary file beside the target, flushed to disk, then renamed
 * over it, so a reader never sees half a file and a crash leaves the old file intact.
 *
 * <p>Reference log-probs (the {@code logps} command): {@link #writeWithReferenceLogps} copies
 * every input record, unknown fields and their order included, and adds or overwrites
 * {@code ref_chosen_logps} and {@code ref_rejected_logps}. {@link #readRaw} and
 * {@link #writeRaw} are the building blocks, for other record-level rewrites.
 *
 * <p>I/O errors other than a missing file surface as {@link UncheckedIOException}.
 */
public final class PreferenceDataset {
    /** Field of the prompt text (a string; may be empty). */
    public static final String PROMPT = "prompt";
    /** Field of the chosen completion (a non-empty string). */
    public static final String CHOSEN = "chosen";
    /** Field of the rejected completion (a non-empty string). */
    public static final String REJECTED = "rejected";
    /** Field of the chosen completion's reward score (optional, with {@link #SCORE_REJECTED}). */
    public static final String SCORE_CHOSEN = "score_chosen";
    /** Field of the rejected completion's reward score (optional, with {@link #SCORE_CHOSEN}). */
    public static final String SCORE_REJECTED = "score_rejected";
    /**
     * Field of the reference model's summed log-prob of the chosen completion (optional, with
     * {@link #REF_REJECTED_LOGPS}).
     */
    public static final String REF_CHOSEN_LOGPS = "ref_chosen_logps";
    /**
     * Field of the reference model's summed log-prob of the rejected completion (optional, with
     * {@link #REF_CHOSEN_LOGPS}).
     */
    public static final String REF_REJECTED_LOGPS = "ref_rejected_logps";

    /** How many problems a message lists before it only counts the rest. */
    private static final int MAX_REPORTED_PROBLEMS = 10;

    private static final Gson GSON = new GsonBuilder().disableHtmlEscaping().create();

    private PreferenceDataset() {}

    /** Reads and validates a whole file; throws before returning anything if any record is bad. */
    public static List<PreferencePair> read(Path jsonl) {
        Problems problems = new Problems();
        List<PreferencePair> pairs = new ArrayList<>();
        for (Line line : parseObjects(jsonl, problems)) {
            PreferencePair pair = toPair(line, problems);
            if (pair != null) {
                pairs.add(pair);
            }
        }
        problems.throwIfAny();
        if (pairs.isEmpty()) {
            throw new IllegalArgumentException(jsonl + ": no records (expected one JSON object per line)");
        }
        return Collections.unmodifiableList(pairs);
    }

    /** Writes pairs as JSONL (TRL's names, optional fields only when present), atomically. */
    public static void write(Path out, List<PreferencePair> pairs) {
        List<JsonObject> records = new ArrayList<>(pairs.size());
        for (PreferencePair p : pairs) {
            records.add(toJson(p));
        }
        writeRaw(out, records);
    }

    /** The JSONL record of one pair: the three texts, then the optional numbers that are present. */
    public static JsonObject toJson(PreferencePair p) {
        JsonObject o = new JsonObject();
        o.addProperty(PROMPT, p.prompt());
        o.addProperty(CHOSEN, p.chosen());
        o.addProperty(REJECTED, p.rejected());
        if (p.hasScores()) {
            o.addProperty(SCORE_CHOSEN, p.scoreChosen());
            o.addProperty(SCORE_REJECTED, p.scoreRejected());
        }
        if (p.hasReferenceLogps()) {
            o.addProperty(REF_CHOSEN_LOGPS, p.refChosenLogps());
            o.addProperty(REF_REJECTED_LOGPS, p.refRejectedLogps());
        }
        return o;
    }

    /**
     * Every non-blank line as a JSON object, unknown fields and field order kept; only the
     * JSON syntax and the object-ness of each line are checked (same messages as {@link #read}).
     */
    public static List<JsonObject> readRaw(Path jsonl) {
        Problems problems = new Problems();
        List<Line> lines = parseObjects(jsonl, problems);
        problems.throwIfAny();
        List<JsonObject> out = new ArrayList<>(lines.size());
        for (Line l : lines) {
            out.add(l.object);
        }
        return out;
    }

    /** Writes one compact JSON object per line (UTF-8, no HTML escaping), atomically. */
    public static void writeRaw(Path out, List<JsonObject> records) {
        writeAtomically(out, w -> {
            for (JsonObject o : records) {
                GSON.toJson(o, w);
                w.write('\n');
            }
        });
    }

    /**
     * Copies every record of {@code in} to {@code out} (which may be the same file), adding or
     * overwriting {@code ref_chosen_logps} and {@code ref_rejected_logps} with the i-th values
     * for the i-th non-blank line; every other field is kept as it was, in its place.
     * {@code refChosen} and {@code refRejected} hold one finite value per record, in the order
     * {@link #read} returns the pairs.
     */
    public static void writeWithReferenceLogps(Path in, Path out, double[] refChosen, double[] refRejected) {
        List<JsonObject> records = readRaw(in);
        if (refChosen.length != records.size() || refRejected.length != records.size()) {
            throw new IllegalArgumentException(in + ": " + records.size() + " records but " + refChosen.length
                    + " chosen and " + refRejected.length + " rejected reference log-probs");
        }
        for (int i = 0; i < records.size(); i++) {
            if (!Double.isFinite(refChosen[i]) || !Double.isFinite(refRejected[i])) {
                throw new IllegalArgumentException(in + ": record " + (i + 1) + ": reference log-probs "
                        + refChosen[i] + ", " + refRejected[i] + " (expected finite numbers)");
            }
            records.get(i).addProperty(REF_CHOSEN_LOGPS, refChosen[i]);
            records.get(i).addProperty(REF_REJECTED_LOGPS, refRejected[i]);
        }
        writeRaw(out, records);
    }

    // ---- reading ----

    private record Line(String source, JsonObject object) {}

    /** Problems found in a file, in line order; the message starts with the first one. */
    private static final class Problems {
        private final List<String> messages = new ArrayList<>();
        private int count;

        void add(String source, String what) {
            count++;
            if (messages.size() < MAX_REPORTED_PROBLEMS) {
                messages.add(source + ": " + what);
            }
        }

        void throwIfAny() {
            if (count == 0) {
                return;
            }
            StringBuilder sb = new StringBuilder(String.join("\n", messages));
            if (count > 1) {
                sb.append("\n(").append(count).append(" problems in all");
                if (count > messages.size()) {
                    sb.append(", the first ").append(messages.size()).append(" shown");
                }
                sb.append(')');
            }
            throw new IllegalArgumentException(sb.toString());
        }
    }

    private static List<Line> parseObjects(Path jsonl, Problems problems) {
        if (Files.isDirectory(jsonl)) {
            throw new IllegalArgumentException(jsonl + ": is a directory (expected a JSONL file)");
        }
        List<Line> out = new ArrayList<>();
        try {
            // each line decoded on its own: a bad byte is reported on its line, and the rest is still checked
            Utf8Lines.read(jsonl, (lineNo, text, badByte) -> {
                if (text == null) {
                    problems.add(jsonl + ":" + lineNo, "not valid UTF-8 text (byte " + (badByte + 1) + " of the line)");
                    return;
                }
                if (lineNo == 1 && text.startsWith("\uFEFF")) {
                    text = text.substring(1);  // a byte-order mark some editors write
                }
                if (text.isBlank()) {
                    return;
                }
                String source = jsonl + ":" + lineNo;
                JsonObject o = parseObject(text, source, problems);
                if (o != null) {
                    out.add(new Line(source, o));
                }
            });
        } catch (NoSuchFileException e) {
            throw new IllegalArgumentException(jsonl + ": no such file", e);
        } catch (IOException e) {
            throw new UncheckedIOException(jsonl + ": " + e.getMessage(), e);
        }
        return out;
    }

    private static JsonObject parseObject(String text, String source, Problems problems) {
        JsonElement e;
        try {
            e = StrictJson.parse(text);  // strict syntax, and a key given twice is refused (Gson keeps the last)
        } catch (StrictJson.DuplicateKeyException ex) {
            problems.add(source, ex.getMessage() + " (a key may occur once)");
            return null;
        } catch (JsonParseException | IllegalStateException ex) {
            problems.add(source, "malformed JSON: " + firstLine(ex.getMessage()));
            return null;
        }
        if (!e.isJsonObject()) {
            problems.add(source, "expected a JSON object, found " + kind(e));
            return null;
        }
        return e.getAsJsonObject();
    }

    private static PreferencePair toPair(Line line, Problems problems) {
        int before = problems.count;
        JsonObject o = line.object;
        String prompt = requiredString(o, PROMPT, true, line.source, problems);
        String chosen = requiredString(o, CHOSEN, false, line.source, problems);
        String rejected = requiredString(o, REJECTED, false, line.source, problems);
        Double[] scores = optionalPair(o, SCORE_CHOSEN, SCORE_REJECTED, line.source, problems);
        Double[] refs = optionalPair(o, REF_CHOSEN_LOGPS, REF_REJECTED_LOGPS, line.source, problems);
        if (problems.count != before) {
            return null;
        }
        return new PreferencePair(prompt, chosen, rejected, scores[0], scores[1], refs[0], refs[1], line.source);
    }

    private static String requiredString(JsonObject o, String field, boolean mayBeEmpty, String source,
                                         Problems problems) {
        JsonElement e = o.get(field);
        if (e == null) {
            problems.add(source, "field \"" + field + "\" is missing (expected a string)");
            return null;
        }
        if (!e.isJsonPrimitive() || !e.getAsJsonPrimitive().isString()) {
            String hint = e.isJsonArray() ? "; conversational message lists are not supported" : "";
            problems.add(source, "field \"" + field + "\" is " + kind(e) + " (expected a string" + hint + ")");
            return null;
        }
        String s = e.getAsString();
        if (!mayBeEmpty && s.isEmpty()) {
            problems.add(source, "field \"" + field + "\" is empty (expected a non-empty completion)");
            return null;
        }
        return s;
    }

    private static Double[] optionalPair(JsonObject o, String a, String b, String source, Problems problems) {
        boolean okA = true;
        boolean okB = true;
        Double va = null;
        Double vb = null;
        try {
            va = optionalNumber(o, a, source);
        } catch (IllegalArgumentException ex) {
            problems.add(source, ex.getMessage());
            okA = false;
        }
        try {
            vb = optionalNumber(o, b, source);
        } catch (IllegalArgumentException ex) {
            problems.add(source, ex.getMessage());
            okB = false;
        }
        if (okA && okB && (va == null) != (vb == null)) {
            String present = va != null ? a : b;
            String missing = va != null ? b : a;
            problems.add(source, "field \"" + missing + "\" is missing but \"" + present
                    + "\" is present (give both or neither)");
        }
        return new Double[] {va, vb};
    }

    private static Double optionalNumber(JsonObject o, String field, String source) {
        JsonElement e = o.get(field);
        if (e == null || e.isJsonNull()) {
            return null;
        }
        if (!e.isJsonPrimitive() || !e.getAsJsonPrimitive().isNumber()) {
            throw new IllegalArgumentException("field \"" + field + "\" is " + kind(e) + " (expected a finite number)");
        }
        double v = e.getAsDouble();
        if (!Double.isFinite(v)) {
            throw new IllegalArgumentException("field \"" + field + "\" is " + e.getAsString()
                    + ", which is not a finite number");
        }
        return v;
    }

    /** What a JSON value is, for messages: {@code a number (3)}, {@code the string "NaN"}, ... */
    private static String kind(JsonElement e) {
        if (e.isJsonNull()) {
            return "null";
        }
        if (e.isJsonArray()) {
            return "an array";
        }
        if (e.isJsonObject()) {
            return "an object";
        }
        JsonPrimitive p = e.getAsJsonPrimitive();
        if (p.isBoolean()) {
            return "a boolean (" + p.getAsBoolean() + ")";
        }
        if (p.isNumber()) {
            return "a number (" + p.getAsString() + ")";
        }
        String s = p.getAsString();
        return "the string " + GSON.toJson(s.length() > 40 ? s.substring(0, 40) + "..." : s);
    }

    private static String firstLine(String message) {
        if (message == null) {
            return "unreadable";
        }
        String m = message.lines().findFirst().orElse(message);
        // Gson says "at line 1 column 17 path $.x": every record is on line 1 of its own parse;
        // its advice to parse leniently is not the user's to follow
        return m.replace("at line 1 column", "at column")
                .replace("Use JsonReader.setStrictness(Strictness.LENIENT) to accept malformed JSON", "syntax error");
    }

    // ---- writing ----

    /** Writes something that may fail; lets the atomic writer own the stream. */
    @FunctionalInterface
    interface WriterBody {
        void write(Writer w) throws IOException;
    }

    /** Writes to a temporary file beside {@code out}, forces it to disk and renames it over {@code out}. */
    static void writeAtomically(Path out, WriterBody body) {
        Path target = out.toAbsolutePath();
        Path dir = target.getParent();
        try {
            if (!Files.isDirectory(dir)) {
                throw new IllegalArgumentException(out + ": the directory " + dir + " does not exist");
            }
            AtomicFiles.write(target, ch -> {
                Writer w = new java.io.BufferedWriter(
                        java.nio.channels.Channels.newWriter(ch, StandardCharsets.UTF_8), 1 << 16);
                body.write(w);
                w.flush();
            });
        } catch (IOException e) {
            throw new UncheckedIOException(out + ": " + e.getMessage(), e);
        }
    }
}
