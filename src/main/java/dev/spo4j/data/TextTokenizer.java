package dev.spo4j.data;

import ai.djl.huggingface.tokenizers.HuggingFaceTokenizer;
import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParseException;
import com.google.gson.JsonParser;

import java.io.IOException;
import java.io.InputStream;
import java.io.Reader;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * A Hugging Face tokenizer loaded from a model folder, plus the special-token facts the
 * preference collator needs.
 *
 * <p>Files read from {@code modelDir}, once, at {@link #load}:
 * <ul>
 *   <li>{@code tokenizer.json} (required): the tokenizer, run by the HF Rust library through
 *       DJL, with no special tokens added, no truncation and no padding: the token rule adds
 *       BOS/EOS itself and decides truncation (see {@link TokenRule}). Its post-processor is
 *       read to learn whether the tokenizer adds BOS (TemplateProcessing, as Llama-3.1's).</li>
 *   <li>{@code tokenizer_config.json} (optional): {@code add_bos_token}, {@code bos_token}/
 *       {@code eos_token}/{@code pad_token} (a string or an {@code {"content": ...}} object),
 *       {@code clean_up_tokenization_spaces} (default false) and the chat template
 *       ({@link ChatTemplate#load}).</li>
 *   <li>{@code config.json}, then {@code generation_config.json} (both optional):
 *       {@code bos_token_id}, {@code eos_token_id}, {@code pad_token_id} (an int, or a list),
 *       and {@code vocab_size}.</li>
 * </ul>
 * BOS is added to plain text when {@code add_bos_token} is true, or, when it is not set, when
 * the post-processor adds it. EOS is the id of tokenizer_config.json's {@code eos_token} (the
 * end of a turn for chat models: {@code <|eot_id|>} for Llama-3.1-Instruct), else the first
 * {@code eos_token_id} of config.json or generation_config.json; {@link #eosIds()} lists every
 * EOS id, for generation to stop on. BOS and pad ids come from config.json, then
 * generation_config.json, then the token strings of tokenizer_config.json looked up in
 * tokenizer.json's vocabulary. {@link #padId()} falls back to EOS, then 0 (padding is masked
 * out, so its value never reaches a loss).
 *
 * <p>Text that contains a special token's literal string (say {@code "<eos>"}) encodes to
 * that special token, as in HF transformers by default.
 *
 * <p>Not thread-safe to close while encoding; encoding itself may be shared.
 */
public final class TextTokenizer implements AutoCloseable {
    private final HuggingFaceTokenizer tokenizer;
    private final Path directory;
    private final boolean addBos;
    private final Long bosId;
    private final Long eosId;
    private final long[] eosIds;
    private final long padId;
    private final int vocabSize;
    private final ChatTemplate chatTemplate;

    private TextTokenizer(HuggingFaceTokenizer tokenizer, Path directory, boolean addBos, Long bosId, Long eosId,
                          long[] eosIds, long padId, int vocabSize, ChatTemplate chatTemplate) {
        this.tokenizer = tokenizer;
        this.directory = directory;
        this.addBos = addBos;
        this.bosId = bosId;
        this.eosId = eosId;
        this.eosIds = eosIds;
        this.padId = padId;
        this.vocabSize = vocabSize;
        this.chatTemplate = chatTemplate;
    }

    /**
     * Loads {@code modelDir/tokenizer.json} and the optional config files next to it.
     *
     * @throws IllegalArgumentException when tokenizer.json is missing or a file is not valid
     *                                  JSON of the expected shape (the message names the path)
     */
    public static TextTokenizer load(Path modelDir) {
        Path tokenizerJson = modelDir.resolve("tokenizer.json");
        if (!Files.isRegularFile(tokenizerJson)) {
            throw new IllegalArgumentException(tokenizerJson + ": no such file (expected a Hugging Face "
                    + "tokenizer.json in the model folder " + modelDir + ")");
        }
        JsonObject tokenizerSpec = readJson(tokenizerJson, true);
        JsonObject tokenizerConfig = readJson(modelDir.resolve("tokenizer_config.json"), false);
        JsonObject config = readJson(modelDir.resolve("config.json"), false);
        JsonObject generationConfig = readJson(modelDir.resolve("generation_config.json"), false);

        Vocabulary vocab = Vocabulary.of(tokenizerSpec, tokenizerJson);
        Path tokenizerConfigFile = modelDir.resolve("tokenizer_config.json");
        Long bos = tokenId(config, generationConfig, tokenizerConfig, "bos_token_id", "bos_token", vocab, modelDir);
        Long postBos = postProcessorBos(tokenizerSpec);
        if (bos == null) {
            bos = postBos;
        }
        // BOS: tokenizer_config.json's add_bos_token when it says; else whether tokenizer.json's
        // post-processor (TemplateProcessing) starts a single sequence with BOS, as Llama-3.1's does
        JsonElement addBosSetting = tokenizerConfig == null ? null : tokenizerConfig.get("add_bos_token");
        boolean addBos = addBosSetting != null && !addBosSetting.isJsonNull()
                ? bool(tokenizerConfig, "add_bos_token", false, tokenizerConfigFile)
                : postBos != null && postBos.equals(bos);
        // EOS: the tokenizer config's eos_token (the end of a turn for chat models), else the
        // first eos_token_id of config.json / generation_config.json
        Long eos = tokenStringId(tokenizerConfig, "eos_token", vocab, modelDir);
        if (eos == null) {
            eos = tokenId(config, generationConfig, null, "eos_token_id", "eos_token", vocab, modelDir);
        }
        java.util.LinkedHashSet<Long> allEos = new java.util.LinkedHashSet<>();
        if (eos != null) {
            allEos.add(eos);
        }
        allEos.addAll(idList(config, "eos_token_id", modelDir.resolve("config.json")));
        allEos.addAll(idList(generationConfig, "eos_token_id", modelDir.resolve("generation_config.json")));
        Long pad = tokenId(config, generationConfig, tokenizerConfig, "pad_token_id", "pad_token", vocab, modelDir);
        if (addBos && bos == null) {
            throw new IllegalArgumentException(modelDir.resolve("tokenizer_config.json")
                    + ": add_bos_token is true but no BOS token id is defined (bos_token_id in config.json, "
                    + "or bos_token in tokenizer_config.json)");
        }
        ChatTemplate template = ChatTemplate.load(modelDir, tokenizerConfig);
        int vocabSize = vocab.size();
        if (vocabSize <= 0) {
            JsonElement v = config == null ? null : config.get("vocab_size");
            if (v == null || !v.isJsonPrimitive() || !v.getAsJsonPrimitive().isNumber()) {
                throw new IllegalArgumentException(tokenizerJson + ": no vocabulary found, and "
                        + modelDir.resolve("config.json") + " has no vocab_size");
            }
            vocabSize = v.getAsInt();
        }
        boolean cleanup = bool(tokenizerConfig, "clean_up_tokenization_spaces", false,
                modelDir.resolve("tokenizer_config.json"));

        Map<String, String> options = Map.of(
                "addSpecialTokens", "false",
                "truncation", "false",   // DJL's default truncates at 512 tokens
                "padding", "false",
                "cleanupTokenizationSpaces", Boolean.toString(cleanup));
        HuggingFaceTokenizer hf;
        try (InputStream in = Files.newInputStream(tokenizerJson)) {
            // from a stream, so that DJL does not apply tokenizer_config.json on its own
            hf = HuggingFaceTokenizer.newInstance(in, options);
        } catch (IOException e) {
            throw new UncheckedIOException(tokenizerJson + ": " + e.getMessage(), e);
        } catch (RuntimeException e) {
            throw new IllegalArgumentException(tokenizerJson + ": not a loadable tokenizer: " + e.getMessage(), e);
        }
        long[] eosIds = allEos.stream().mapToLong(Long::longValue).toArray();
        return new TextTokenizer(hf, modelDir, addBos, bos, eos, eosIds, pad != null ? pad : eos != null ? eos : 0L,
                vocabSize, template);
    }

    /** The ids of {@code text}, no special tokens added. The empty string gives no ids. */
    public long[] encode(String text) {
        if (text.isEmpty()) {
            return new long[0];
        }
        return tokenizer.encode(text, false, false).getIds();
    }

    /** The text of {@code ids}, special tokens skipped. */
    public String decode(long[] ids) {
        return tokenizer.decode(ids, true);
    }

    /** BOS id, or null when none is defined. */
    public Long bosId() {
        return bosId;
    }

    /** EOS id, or null when none is defined (then completions get no EOS). */
    public Long eosId() {
        return eosId;
    }

    /**
     * Every id generation stops on: {@link #eosId()} first, then the {@code eos_token_id}s of
     * config.json and generation_config.json (an int or a list); empty when none is defined.
     */
    public long[] eosIds() {
        return eosIds.clone();
    }

    /**
     * Whether plain-text sequences start with BOS: tokenizer_config.json's {@code add_bos_token}
     * when it is set, else whether tokenizer.json's post-processor adds BOS to a single sequence.
     */
    public boolean addBos() {
        return addBos;
    }

    /** The model folder's chat template, or null when it defines none. */
    public ChatTemplate chatTemplate() {
        return chatTemplate;
    }

    /**
     * The tokenizer's vocabulary size (largest id in tokenizer.json's model vocabulary and
     * added tokens, plus one); config.json's vocab_size when tokenizer.json lists none. A
     * model's embedding may be larger than this (padded vocabularies): size the model from
     * its own config.
     */
    public int vocabSize() {
        return vocabSize;
    }

    /** pad_token_id, else EOS, else 0. */
    public long padId() {
        return padId;
    }

    /** The model folder the tokenizer files were read from. */
    public Path directory() {
        return directory;
    }

    @Override
    public void close() {
        tokenizer.close();
    }

    // ---- config files ----

    private static JsonObject readJson(Path file, boolean required) {
        if (!Files.isRegularFile(file)) {
            if (required) {
                throw new IllegalArgumentException(file + ": no such file");
            }
            return null;
        }
        try (Reader r = Files.newBufferedReader(file, StandardCharsets.UTF_8)) {
            JsonElement e = JsonParser.parseReader(r);
            if (!e.isJsonObject()) {
                throw new IllegalArgumentException(file + ": expected a JSON object");
            }
            return e.getAsJsonObject();
        } catch (JsonParseException e) {
            throw new IllegalArgumentException(file + ": malformed JSON: " + e.getMessage(), e);
        } catch (IOException e) {
            throw new UncheckedIOException(file + ": " + e.getMessage(), e);
        }
    }

    private static boolean bool(JsonObject o, String key, boolean dflt, Path file) {
        JsonElement e = o == null ? null : o.get(key);
        if (e == null || e.isJsonNull()) {
            return dflt;
        }
        if (!e.isJsonPrimitive() || !e.getAsJsonPrimitive().isBoolean()) {
            throw new IllegalArgumentException(file + ": " + key + " is " + e + " (expected true or false)");
        }
        return e.getAsBoolean();
    }

    /** An id from config.json, generation_config.json, or tokenizer_config.json's token string, in that order. */
    private static Long tokenId(JsonObject config, JsonObject generationConfig, JsonObject tokenizerConfig,
                                String idKey, String tokenKey, Vocabulary vocab, Path dir) {
        Long id = idValue(config, idKey, dir.resolve("config.json"));
        if (id == null) {
            id = idValue(generationConfig, idKey, dir.resolve("generation_config.json"));
        }
        if (id == null && tokenizerConfig != null) {
            JsonElement t = tokenizerConfig.get(tokenKey);
            String content = null;
            if (t != null && t.isJsonPrimitive() && t.getAsJsonPrimitive().isString()) {
                content = t.getAsString();
            } else if (t != null && t.isJsonObject() && t.getAsJsonObject().has("content")) {
                content = t.getAsJsonObject().get("content").getAsString();
            }
            if (content != null) {
                id = vocab.idOf(content);
                if (id == null && !tokenKey.equals("pad_token")) {  // a missing pad token only costs its fallback
                    throw new IllegalArgumentException(dir.resolve("tokenizer_config.json") + ": " + tokenKey + " \""
                            + content + "\" is not in the vocabulary of " + dir.resolve("tokenizer.json"));
                }
            }
        }
        return id;
    }

    /** The id of tokenizer_config.json's token string {@code key}, or null when it names none. */
    private static Long tokenStringId(JsonObject tokenizerConfig, String key, Vocabulary vocab, Path dir) {
        JsonElement t = tokenizerConfig == null ? null : tokenizerConfig.get(key);
        String content = null;
        if (t != null && t.isJsonPrimitive() && t.getAsJsonPrimitive().isString()) {
            content = t.getAsString();
        } else if (t != null && t.isJsonObject() && t.getAsJsonObject().has("content")) {
            content = t.getAsJsonObject().get("content").getAsString();
        }
        if (content == null) {
            return null;
        }
        Long id = vocab.idOf(content);
        if (id == null) {
            throw new IllegalArgumentException(dir.resolve("tokenizer_config.json") + ": " + key + " \"" + content
                    + "\" is not in the vocabulary of " + dir.resolve("tokenizer.json"));
        }
        return id;
    }

    /** Every id of {@code key} (an int or a list of ints). */
    private static List<Long> idList(JsonObject o, String key, Path file) {
        JsonElement e = o == null ? null : o.get(key);
        List<Long> out = new ArrayList<>();
        if (e == null || e.isJsonNull()) {
            return out;
        }
        for (JsonElement x : e.isJsonArray() ? e.getAsJsonArray() : List.of(e)) {
            if (!x.isJsonPrimitive() || !x.getAsJsonPrimitive().isNumber() || x.getAsLong() < 0) {
                throw new IllegalArgumentException(file + ": " + key + " is " + e + " (expected a non-negative id or a list)");
            }
            out.add(x.getAsLong());
        }
        return out;
    }

    /**
     * The BOS id that tokenizer.json's post-processor puts before a single sequence
     * ({@code TemplateProcessing}, alone or inside a {@code Sequence}), or null.
     */
    static Long postProcessorBos(JsonObject spec) {
        JsonElement pp = spec.get("post_processor");
        if (pp == null || !pp.isJsonObject()) {
            return null;
        }
        JsonObject p = pp.getAsJsonObject();
        String type = p.has("type") ? p.get("type").getAsString() : "";
        if (type.equals("Sequence") && p.get("processors") instanceof JsonArray procs) {
            for (JsonElement e : procs) {
                if (e.isJsonObject()) {
                    Long id = postProcessorBos(wrap(e.getAsJsonObject()));
                    if (id != null) {
                        return id;
                    }
                }
            }
            return null;
        }
        if (!type.equals("TemplateProcessing") || !(p.get("single") instanceof JsonArray single) || single.isEmpty()) {
            return null;
        }
        JsonElement first = single.get(0);
        if (!first.isJsonObject() || !first.getAsJsonObject().has("SpecialToken")) {
            return null;
        }
        String name = first.getAsJsonObject().getAsJsonObject("SpecialToken").get("id").getAsString();
        JsonElement specials = p.get("special_tokens");
        if (specials == null || !specials.isJsonObject() || !specials.getAsJsonObject().has(name)) {
            return null;
        }
        JsonArray ids = specials.getAsJsonObject().getAsJsonObject(name).getAsJsonArray("ids");
        return ids == null || ids.size() != 1 ? null : ids.get(0).getAsLong();
    }

    private static JsonObject wrap(JsonObject processor) {
        JsonObject o = new JsonObject();
        o.add("post_processor", processor);
        return o;
    }

    private static Long idValue(JsonObject o, String key, Path file) {
        JsonElement e = o == null ? null : o.get(key);
        if (e == null || e.isJsonNull()) {
            return null;
        }
        if (e.isJsonArray()) {
            JsonArray a = e.getAsJsonArray();
            if (a.isEmpty()) {
                return null;
            }
            e = a.get(0);
        }
        if (!e.isJsonPrimitive() || !e.getAsJsonPrimitive().isNumber()) {
            throw new IllegalArgumentException(file + ": " + key + " is " + e + " (expected an integer or a list)");
        }
        long id = e.getAsLong();
        if (id < 0) {
            throw new IllegalArgumentException(file + ": " + key + " is " + id + " (expected a non-negative id)");
        }
        return id;
    }

    /** Token strings to ids, from tokenizer.json's added tokens and model vocabulary. */
    private static final class Vocabulary {
        private final Map<String, Long> ids;
        private final long maxId;

        private Vocabulary(Map<String, Long> ids, long maxId) {
            this.ids = ids;
            this.maxId = maxId;
        }

        static Vocabulary of(JsonObject spec, Path file) {
            Map<String, Long> ids = new java.util.HashMap<>();
            long max = -1;
            try {
                JsonElement model = spec.get("model");
                JsonElement vocab = model != null && model.isJsonObject() ? model.getAsJsonObject().get("vocab") : null;
                if (vocab != null && vocab.isJsonObject()) {          // WordLevel, WordPiece, BPE: token -> id
                    for (Map.Entry<String, JsonElement> en : vocab.getAsJsonObject().entrySet()) {
                        long id = en.getValue().getAsLong();
                        ids.putIfAbsent(en.getKey(), id);
                        max = Math.max(max, id);
                    }
                } else if (vocab != null && vocab.isJsonArray()) {    // Unigram: [[piece, score], ...], id = index
                    JsonArray a = vocab.getAsJsonArray();
                    for (int i = 0; i < a.size(); i++) {
                        JsonElement piece = a.get(i);
                        String s = piece.isJsonArray() ? piece.getAsJsonArray().get(0).getAsString() : piece.getAsString();
                        ids.putIfAbsent(s, (long) i);
                    }
                    max = Math.max(max, a.size() - 1);
                }
                JsonElement added = spec.get("added_tokens");
                if (added != null && added.isJsonArray()) {
                    for (JsonElement t : added.getAsJsonArray()) {
                        JsonObject to = t.getAsJsonObject();
                        long id = to.get("id").getAsLong();
                        ids.put(to.get("content").getAsString(), id);  // added tokens win over model pieces
                        max = Math.max(max, id);
                    }
                }
            } catch (RuntimeException e) {
                throw new IllegalArgumentException(file + ": unexpected vocabulary layout: " + e.getMessage(), e);
            }
            return new Vocabulary(ids, max);
        }

        Long idOf(String token) {
            return ids.get(token);
        }

        int size() {
            return (int) Math.min(Integer.MAX_VALUE, maxId + 1);
        }
    }
}
