package dev.spo4j.data;

import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParseException;
import dev.spo4j.io.StrictJson;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * The preference dataset formats of TRL (pinned: {@code trl/data_utils.py} at huggingface/trl
 * commit bc13ae6d91667d42f5ad74e211b5db703dc4377e: {@code is_conversational},
 * {@code maybe_extract_prompt}, {@code extract_prompt}, {@code apply_chat_template}; the
 * prompt is always rendered with {@code add_generation_prompt}, as the TRL 1.x DPOTrainer
 * does; README, "Where the rules come from"), read from JSON Lines and turned into the texts the model is
 * trained on:
 * <ul>
 *   <li><b>standard</b>: strings {@code prompt}, {@code chosen}, {@code rejected}: read by
 *       {@link PreferenceDataset#read} as before;</li>
 *   <li><b>standard, implicit prompt</b>: strings {@code chosen}, {@code rejected} only: the
 *       prompt is their common prefix, moved back one character when that character is a
 *       space (TRL's {@code extract_prompt});</li>
 *   <li><b>conversational</b>: {@code prompt} a list of messages ({@code {role, content}}),
 *       {@code chosen}/{@code rejected} lists of assistant messages;</li>
 *   <li><b>conversational, implicit prompt</b>: only {@code chosen}/{@code rejected}, each a
 *       whole conversation: the prompt is their shared leading messages. A string
 *       {@code prompt} beside conversational {@code chosen}/{@code rejected} (the
 *       UltraFeedback-binarized layout, whose conversations repeat the user turn) is ignored
 *       and the prompt taken from the conversations, as TRL's {@code maybe_extract_prompt}
 *       does.</li>
 * </ul>
 * Conversational records are rendered with the model's chat template as TRL does: prompt
 * text = render(prompt, add_generation_prompt=True); completion text = render(prompt +
 * completion) with the prompt text removed from its start (an error when it does not start
 * with it). Optional numbers {@code score_chosen}/{@code score_rejected} and
 * {@code ref_chosen_logps}/{@code ref_rejected_logps} are kept.
 *
 * <p>A file holds one format: mixed formats, an unknown role, a message that is not
 * {@code {role, content}}, a template that raises, and conversational data for a model
 * without a chat template are each reported as {@code file:line: reason} before anything
 * is trained (the first few problems of the file in one {@link IllegalArgumentException}).
 */
public final class PreferenceFormats {
    private PreferenceFormats() {}

    /** Roles a message may have. */
    public static final Set<String> ROLES = Set.of("system", "user", "assistant", "tool");

    private static final int MAX_REPORTED = 10;

    /**
     * The pairs of a file and how they were made.
     *
     * @param templated true when the texts were rendered by the chat template (conversational
     *                  data): the token rule then adds no BOS/EOS of its own
     * @param format    "standard", "standard (implicit prompt)", "conversational" or
     *                  "conversational (implicit prompt)"
     */
    public record Loaded(List<PreferencePair> pairs, boolean templated, String format) {}

    /**
     * Reads {@code file}; {@code template} renders conversational records (null when the
     * model has none: conversational records are then an error).
     */
    public static Loaded read(Path file, ChatTemplate template) {
        List<String> lines = new ArrayList<>();
        try {
            // each line decoded on its own, so that a bad byte is reported on its line
            dev.spo4j.io.Utf8Lines.read(file, (lineNo, text, badByte) -> {
                if (text == null) {
                    throw new IllegalArgumentException(file + ":" + lineNo + ": not valid UTF-8 text (byte "
                            + (badByte + 1) + " of the line)");
                }
                lines.add(lineNo == 1 && text.startsWith("\uFEFF") ? text.substring(1) : text);
            });
        } catch (java.nio.file.NoSuchFileException e) {
            throw new IllegalArgumentException(file + ": no such file");
        } catch (IOException e) {
            throw new UncheckedIOException(file + ": " + e.getMessage(), e);
        }
        List<String> problems = new ArrayList<>();
        int problemCount = 0;
        List<int[]> numbered = new ArrayList<>();           // {line number} of each record
        List<JsonObject> records = new ArrayList<>();
        for (int i = 0; i < lines.size(); i++) {
            String text = lines.get(i);
            if (text.isBlank()) {
                continue;
            }
            try {
                records.add(parseObject(text));
                numbered.add(new int[] {i + 1});
            } catch (IllegalArgumentException e) {
                problemCount++;
                if (problems.size() < MAX_REPORTED) {
                    problems.add(file + ":" + (i + 1) + ": " + e.getMessage());
                }
            }
        }
        throwIf(problems, problemCount);
        if (records.isEmpty()) {
            throw new IllegalArgumentException(file + ": no records (expected one JSON object per line)");
        }
        // the format of each record; the first decides the file's
        String fileFormat = null;
        int firstLine = 0;
        boolean anyExplicitStandard = false;
        for (int r = 0; r < records.size(); r++) {
            String where = file + ":" + numbered.get(r)[0];
            String f;
            try {
                f = formatOf(records.get(r));
            } catch (IllegalArgumentException e) {
                problemCount++;
                if (problems.size() < MAX_REPORTED) {
                    problems.add(where + ": " + e.getMessage());
                }
                continue;
            }
            boolean conversational = f.startsWith("conversational");
            if (fileFormat == null) {
                fileFormat = f;
                firstLine = numbered.get(r)[0];
            } else if (fileFormat.startsWith("conversational") != conversational) {
                problemCount++;
                if (problems.size() < MAX_REPORTED) {
                    problems.add(where + ": a " + (conversational ? "conversational" : "standard")
                            + " record in a file whose first record (line " + firstLine + ") is "
                            + (conversational ? "standard" : "conversational") + " (one format per file)");
                }
            }
            anyExplicitStandard |= f.equals("standard");
        }
        throwIf(problems, problemCount);
        if (fileFormat.equals("standard") && !anyImplicit(records)) {
            return new Loaded(PreferenceDataset.read(file), false, "standard");
        }
        boolean conversational = fileFormat.startsWith("conversational");
        if (conversational && template == null) {
            throw new IllegalArgumentException(file + ":" + firstLine + ": conversational data (lists of {role, content}) "
                    + "but the model folder has no chat template (chat_template in tokenizer_config.json, or "
                    + "chat_template.jinja): give standard prompt/chosen/rejected strings, or add the template");
        }
        List<PreferencePair> pairs = new ArrayList<>(records.size());
        boolean implicit = false;
        for (int r = 0; r < records.size(); r++) {
            String where = file + ":" + numbered.get(r)[0];
            JsonObject o = records.get(r);
            try {
                String[] texts;
                if (conversational) {
                    texts = conversationTexts(o, template);
                    implicit |= !(o.get("prompt") instanceof JsonArray);
                } else {
                    texts = standardTexts(o);
                    implicit |= !o.has("prompt") || o.get("prompt").isJsonNull();
                }
                PreferencePair p = new PreferencePair(texts[0], texts[1], texts[2], number(o, PreferenceDataset.SCORE_CHOSEN),
                        number(o, PreferenceDataset.SCORE_REJECTED), number(o, PreferenceDataset.REF_CHOSEN_LOGPS),
                        number(o, PreferenceDataset.REF_REJECTED_LOGPS), where);
                pairs.add(p);
            } catch (IllegalArgumentException e) {
                problemCount++;
                if (problems.size() < MAX_REPORTED) {
                    String m = e.getMessage();
                    problems.add(m.startsWith(where) ? m : where + ": " + m);
                }
            }
        }
        throwIf(problems, problemCount);
        String format = (conversational ? "conversational" : "standard") + (implicit ? " (implicit prompt)" : "");
        return new Loaded(List.copyOf(pairs), conversational, format);
    }

    private static boolean anyImplicit(List<JsonObject> records) {
        for (JsonObject o : records) {
            if (!o.has("prompt") || o.get("prompt").isJsonNull()) {
                return true;
            }
        }
        return false;
    }

    private static void throwIf(List<String> problems, int count) {
        if (count == 0) {
            return;
        }
        StringBuilder sb = new StringBuilder(String.join("\n", problems));
        if (count > 1) {
            sb.append("\n(").append(count).append(" problems in all").append(count > problems.size()
                    ? ", the first " + problems.size() + " shown)" : ")");
        }
        throw new IllegalArgumentException(sb.toString());
    }

    private static JsonObject parseObject(String text) {
        try {
            JsonElement e = StrictJson.parse(text);  // strict syntax, and a key given twice is refused
            if (!e.isJsonObject()) {
                throw new IllegalArgumentException("expected a JSON object, got " + abbreviate(e.toString()));
            }
            return e.getAsJsonObject();
        } catch (StrictJson.DuplicateKeyException e) {
            throw new IllegalArgumentException(e.getMessage() + " (a key may occur once)");
        } catch (JsonParseException e) {
            throw new IllegalArgumentException("malformed JSON: " + e.getMessage());
        }
    }

    /** "standard", "standard (implicit prompt)", "conversational", "conversational (implicit prompt)". */
    static String formatOf(JsonObject o) {
        JsonElement chosen = o.get("chosen"), rejected = o.get("rejected"), prompt = o.get("prompt");
        if (chosen == null || chosen.isJsonNull() || rejected == null || rejected.isJsonNull()) {
            throw new IllegalArgumentException("field \"" + (chosen == null || chosen.isJsonNull() ? "chosen" : "rejected")
                    + "\" is missing (expected a string or a list of messages)");
        }
        boolean conv = chosen.isJsonArray();
        if (conv != rejected.isJsonArray()) {
            throw new IllegalArgumentException("\"chosen\" is " + kind(chosen) + " but \"rejected\" is " + kind(rejected)
                    + " (expected both strings or both lists of messages)");
        }
        if (!conv && !chosen.isJsonPrimitive()) {
            throw new IllegalArgumentException("field \"chosen\" is " + kind(chosen) + " (expected a string or a list of messages)");
        }
        boolean noPrompt = prompt == null || prompt.isJsonNull();
        if (conv) {
            return prompt != null && prompt.isJsonArray() ? "conversational" : "conversational (implicit prompt)";
        }
        if (!noPrompt && prompt.isJsonArray()) {
            throw new IllegalArgumentException("\"prompt\" is a list of messages but \"chosen\" is a string "
                    + "(expected chosen/rejected lists of messages with a conversational prompt)");
        }
        return noPrompt ? "standard (implicit prompt)" : "standard";
    }

    private static String kind(JsonElement e) {
        return e.isJsonArray() ? "a list" : e.isJsonObject() ? "an object" : e.isJsonNull() ? "null"
                : e.getAsJsonPrimitive().isString() ? "a string" : "a " + e.getAsJsonPrimitive().getClass().getSimpleName();
    }

    /** {prompt, chosen, rejected} of a standard record; the implicit prompt extracted. */
    static String[] standardTexts(JsonObject o) {
        String chosen = string(o, "chosen"), rejected = string(o, "rejected");
        if (o.has("prompt") && !o.get("prompt").isJsonNull()) {
            return new String[] {string(o, "prompt"), chosen, rejected};
        }
        int idx = sharedPrefix(chosen, rejected);
        return new String[] {chosen.substring(0, idx), chosen.substring(idx), rejected.substring(idx)};
    }

    /**
     * TRL's extract_prompt on strings: the first index where they differ, one less when the
     * character before it is a space; when one is a prefix of the other, the last index
     * compared (TRL's loop leaves its variable there).
     */
    static int sharedPrefix(String a, String b) {
        int n = Math.min(a.length(), b.length());
        if (n == 0) {
            return 0;
        }
        int idx = n - 1;
        for (int i = 0; i < n; i++) {
            if (a.charAt(i) != b.charAt(i)) {
                idx = i;
                if (i > 0 && a.charAt(i - 1) == ' ') {
                    idx--;
                }
                break;
            }
        }
        return idx;
    }

    private static String string(JsonObject o, String field) {
        JsonElement e = o.get(field);
        if (e == null || e.isJsonNull() || !e.isJsonPrimitive() || !e.getAsJsonPrimitive().isString()) {
            throw new IllegalArgumentException("field \"" + field + "\" is " + (e == null ? "missing" : kind(e))
                    + " (expected a string)");
        }
        return e.getAsString();
    }

    private static Double number(JsonObject o, String field) {
        JsonElement e = o.get(field);
        if (e == null || e.isJsonNull()) {
            return null;
        }
        if (!e.isJsonPrimitive() || !e.getAsJsonPrimitive().isNumber()) {
            throw new IllegalArgumentException("field \"" + field + "\" is " + abbreviate(e.toString()) + " (expected a number)");
        }
        return e.getAsDouble();
    }

    /** {prompt text, chosen text, rejected text} of a conversational record, rendered by the template. */
    @SuppressWarnings("unchecked")
    static String[] conversationTexts(JsonObject o, ChatTemplate template) {
        List<Map<String, Object>> chosen = messages(o.get("chosen"), "chosen");
        List<Map<String, Object>> rejected = messages(o.get("rejected"), "rejected");
        List<Map<String, Object>> prompt;
        if (o.get("prompt") instanceof JsonArray) {
            prompt = messages(o.get("prompt"), "prompt");
        } else {
            // implicit: the shared leading messages (TRL's extract_prompt on lists)
            int n = Math.min(chosen.size(), rejected.size());
            int idx = n == 0 ? 0 : n - 1;
            for (int i = 0; i < n; i++) {
                if (!chosen.get(i).equals(rejected.get(i))) {
                    idx = i;
                    break;
                }
            }
            prompt = chosen.subList(0, idx);
            chosen = chosen.subList(idx, chosen.size());
            rejected = rejected.subList(idx, rejected.size());
            if (prompt.isEmpty()) {
                throw new IllegalArgumentException("\"chosen\" and \"rejected\" share no leading message, so there is no "
                        + "prompt (expected the same user turn(s) before the two answers)");
            }
        }
        if (chosen.isEmpty() || rejected.isEmpty()) {
            throw new IllegalArgumentException("\"" + (chosen.isEmpty() ? "chosen" : "rejected")
                    + "\" has no message after the prompt");
        }
        String promptText = template.render(prompt, true);
        return new String[] {promptText, completionText(template, prompt, chosen, promptText, "chosen"),
                completionText(template, prompt, rejected, promptText, "rejected")};
    }

    private static String completionText(ChatTemplate template, List<Map<String, Object>> prompt,
                                         List<Map<String, Object>> completion, String promptText, String field) {
        List<Map<String, Object>> all = new ArrayList<>(prompt);
        all.addAll(completion);
        String full = template.render(all, false);
        if (!full.startsWith(promptText)) {
            throw new IllegalArgumentException("the chat template applied to prompt + " + field + " does not start with "
                    + "the template applied to the prompt alone (with add_generation_prompt), so the completion "
                    + "cannot be split off: prompt " + abbreviate(promptText) + ", prompt + " + field + " "
                    + abbreviate(full));
        }
        return full.substring(promptText.length());
    }

    @SuppressWarnings("unchecked")
    private static List<Map<String, Object>> messages(JsonElement e, String field) {
        if (!(e instanceof JsonArray a)) {
            throw new IllegalArgumentException("field \"" + field + "\" is " + (e == null ? "missing" : kind(e))
                    + " (expected a list of messages)");
        }
        List<Map<String, Object>> out = new ArrayList<>();
        for (int i = 0; i < a.size(); i++) {
            JsonElement m = a.get(i);
            if (!m.isJsonObject() || !m.getAsJsonObject().has("role") || !m.getAsJsonObject().has("content")) {
                throw new IllegalArgumentException(field + "[" + i + "] is " + abbreviate(m.toString())
                        + " (expected a message {\"role\": ..., \"content\": ...})");
            }
            JsonElement role = m.getAsJsonObject().get("role");
            if (!role.isJsonPrimitive() || !ROLES.contains(role.getAsString())) {
                throw new IllegalArgumentException(field + "[" + i + "] has the unknown role " + role
                        + " (expected one of system, user, assistant, tool)");
            }
            out.add((Map<String, Object>) ChatTemplate.toJava(m));
        }
        return out;
    }

    private static String abbreviate(String s) {
        String q = new com.google.gson.Gson().toJson(s.length() > 80 ? s.substring(0, 77) + "..." : s);
        return q;
    }
}
