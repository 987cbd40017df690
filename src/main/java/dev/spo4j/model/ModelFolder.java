package dev.spo4j.model;

import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParseException;
import com.google.gson.JsonParser;
import dev.spo4j.io.AtomicFiles;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * A Hugging Face model folder: {@code config.json} plus {@code model.safetensors}, or
 * {@code model.safetensors.index.json} and the shards its {@code weight_map} names.
 *
 * <p>{@link #save} builds the complete folder as a hidden sibling first and only then
 * renames it into place (an existing folder is moved aside, the new one moved in, the old
 * one deleted), so a crash or error leaves either the old folder or the new one, never a
 * mixture. Tokenizer files can be copied along from another folder.
 */
public final class ModelFolder {
    private ModelFolder() {}

    /** The architecture file ({@link ModelConfig}). */
    public static final String CONFIG = "config.json";
    /** The single-file weights; both {@code save} methods write this one. */
    public static final String WEIGHTS = "model.safetensors";
    /**
     * The index of sharded weights, whose weight_map names each tensor's shard (read, never
     * written).
     */
    public static final String INDEX = "model.safetensors.index.json";
    /** Files copied from a tokenizer source by {@link #save(LlamaModel, Path, Path)} when present. */
    public static final List<String> TOKENIZER_FILES = List.of("tokenizer.json", "tokenizer_config.json",
            "generation_config.json", "special_tokens_map.json", "chat_template.jinja", "chat_template.json",
            "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json");

    /** Reads config.json and the weights of a folder into a new fp32 CPU model. */
    public static LlamaModel load(Path dir) throws IOException {
        return load(dir, ScalarType.Float);
    }

    /**
     * Reads config.json and the weights of a folder into a new CPU model whose parameters are
     * {@code dtype}: names, dtypes and shapes are checked from the headers first, then each
     * tensor is read, converted into its parameter and freed, so the peak is the model plus its
     * largest tensor, with no fp32 copy on the way to bf16. A tied checkpoint that also carries
     * lm_head.weight is read whole, to check that it equals the embedding.
     */
    public static LlamaModel load(Path dir, ScalarType dtype) throws IOException {
        Path config = dir.resolve(CONFIG);
        if (!Files.isRegularFile(config)) {
            throw new IllegalArgumentException(dir + ": no " + CONFIG);
        }
        ModelConfig c = ModelConfig.read(config);
        LlamaModel m = new LlamaModel(c, dtype, false);
        Map<String, Tensor> described = weights(dir, SafeTensors::describe);  // names, dtypes, shapes: no data
        boolean tiedHead = c.tieWordEmbeddings() && described.containsKey("lm_head.weight");
        try {
            if (tiedHead) {  // the check that lm_head equals the embedding needs both tensors' data at once
                Map<String, Tensor> weights = readWeights(dir);
                try {
                    m.loadStateDict(weights);
                } finally {
                    weights.values().forEach(Tensor::close);  // the file's copy goes now, not at the next GC
                }
            } else {
                m.checkStateDict(described);
                for (Path file : weightFiles(dir)) {  // one tensor in memory at a time besides the model
                    SafeTensors.forEach(file, m::copyParameter);
                }
            }
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(dir + ": " + e.getMessage(), e);
        } finally {
            described.values().forEach(Tensor::close);
        }
        return m;
    }

    /** The folder's safetensors files: model.safetensors, or the shards of the index in order. */
    private static List<Path> weightFiles(Path dir) throws IOException {
        Path single = dir.resolve(WEIGHTS);
        if (Files.isRegularFile(single)) {
            return List.of(single);
        }
        List<Path> files = new java.util.ArrayList<>();
        for (String shard : new LinkedHashSet<>(weightMap(dir.resolve(INDEX)).values())) {
            files.add(dir.resolve(shard).normalize());
        }
        return files;
    }

    /** A safetensors reader: all of a file's tensors by name. */
    private interface Reader {
        Map<String, Tensor> read(Path file) throws IOException;
    }

    /**
     * All tensors of the folder's weights: model.safetensors, or else the shards listed by
     * model.safetensors.index.json (each tensor must be in the shard the index names).
     */
    public static Map<String, Tensor> readWeights(Path dir) throws IOException {
        return weights(dir, SafeTensors::read);
    }

    private static Map<String, Tensor> weights(Path dir, Reader reader) throws IOException {
        Path single = dir.resolve(WEIGHTS);
        if (Files.isRegularFile(single)) {
            return reader.read(single);
        }
        Path index = dir.resolve(INDEX);
        if (!Files.isRegularFile(index)) {
            throw new IllegalArgumentException(dir + ": neither " + WEIGHTS + " nor " + INDEX + " found");
        }
        Map<String, String> weightMap = weightMap(index);
        Set<String> shards = new LinkedHashSet<>(weightMap.values());
        Map<String, Tensor> all = new LinkedHashMap<>();
        for (String shard : shards) {
            Path file = dir.resolve(shard).normalize();
            if (!file.startsWith(dir.normalize()) || !Files.isRegularFile(file)) {
                throw new IllegalArgumentException(index + ": shard '" + shard + "' not found in " + dir);
            }
            for (Map.Entry<String, Tensor> kv : reader.read(file).entrySet()) {
                String listed = weightMap.get(kv.getKey());
                if (listed == null) {
                    throw new IllegalArgumentException(file + ": tensor '" + kv.getKey()
                            + "' is not in the weight_map of " + index);
                }
                if (!listed.equals(shard)) {
                    throw new IllegalArgumentException(file + ": tensor '" + kv.getKey()
                            + "' is here but " + index + " puts it in " + listed);
                }
                all.put(kv.getKey(), kv.getValue());
            }
        }
        for (Map.Entry<String, String> kv : weightMap.entrySet()) {
            if (!all.containsKey(kv.getKey())) {
                throw new IllegalArgumentException(index + ": tensor '" + kv.getKey() + "' is not in its shard "
                        + kv.getValue());
            }
        }
        return all;
    }

    private static Map<String, String> weightMap(Path index) throws IOException {
        JsonObject root;
        try {
            JsonElement e = JsonParser.parseString(Files.readString(index, StandardCharsets.UTF_8));
            if (!e.isJsonObject()) {
                throw new IllegalArgumentException(index + ": not a JSON object");
            }
            root = e.getAsJsonObject();
        } catch (JsonParseException e) {
            throw new IllegalArgumentException(index + ": not valid JSON (" + e.getMessage() + ")", e);
        }
        JsonElement wm = root.get("weight_map");
        if (wm == null || !wm.isJsonObject()) {
            throw new IllegalArgumentException(index + ": no weight_map object");
        }
        Map<String, String> out = new LinkedHashMap<>();
        for (Map.Entry<String, JsonElement> kv : wm.getAsJsonObject().entrySet()) {
            JsonElement v = kv.getValue();
            if (!v.isJsonPrimitive() || !v.getAsJsonPrimitive().isString()) {
                throw new IllegalArgumentException(index + ": weight_map entry '" + kv.getKey() + "' is " + v
                        + " (expected a file name)");
            }
            out.put(kv.getKey(), v.getAsString());
        }
        return out;
    }

    /** Writes config.json and model.safetensors into dir, replacing dir if it exists. */
    public static void save(LlamaModel m, Path dir) throws IOException {
        save(m, dir, null);
    }

    /**
     * As {@link #save(LlamaModel, Path)}, also copying {@link #TOKENIZER_FILES} that exist in
     * {@code copyTokenizerFrom} (nullable; may be {@code dir} itself).
     */
    public static void save(LlamaModel m, Path dir, Path copyTokenizerFrom) throws IOException {
        save(m, dir, copyTokenizerFrom, null);
    }

    /**
     * As {@link #save(LlamaModel, Path, Path)}, with the floating-point weights cast to
     * {@code dtype} ("float32", "bfloat16", "float16"; null keeps the model's own) and
     * config.json's torch_dtype naming it. The model itself is not changed.
     */
    public static void save(LlamaModel m, Path dir, Path copyTokenizerFrom, String dtype) throws IOException {
        ScalarType cast = dtype == null ? null : scalarType(dtype);
        Path target = dir.toAbsolutePath().normalize();
        Path parent = target.getParent();
        Files.createDirectories(parent);
        if (Files.exists(target) && !Files.isDirectory(target)) {
            throw new IllegalArgumentException(target + " exists and is not a folder");
        }
        Path tmp = AtomicFiles.newTempDirBeside(target, "new");
        try {
            Map<String, Tensor> sd = m.stateDict();
            // a cast happens per tensor on its CPU copy as it is written: never the whole model at
            // once beside the training state (on a GPU, or in the host's memory)
            Tensor embed = sd.get("model.embed_tokens.weight");
            m.config().write(tmp.resolve(CONFIG), cast != null ? torchDtypeName(cast) : torchDtype(embed));
            SafeTensors.write(tmp.resolve(WEIGHTS), sd, Map.of("format", "pt"), cast);
            if (copyTokenizerFrom != null) {
                for (String name : TOKENIZER_FILES) {
                    Path src = copyTokenizerFrom.resolve(name);
                    if (Files.isRegularFile(src)) {
                        Files.copy(src, tmp.resolve(name), StandardCopyOption.COPY_ATTRIBUTES);
                    }
                }
            }
            AtomicFiles.replaceDirectory(tmp, target);
        } finally {
            AtomicFiles.deleteTree(tmp);
        }
    }

    /** The ScalarType of a torch_dtype name: float32, bfloat16, float16 (also fp32, bf16, fp16). */
    public static ScalarType scalarType(String dtype) {
        return switch (dtype) {
            case "float32", "fp32" -> ScalarType.Float;
            case "bfloat16", "bf16" -> ScalarType.BFloat16;
            case "float16", "fp16" -> ScalarType.Half;
            default -> throw new IllegalArgumentException("dtype '" + dtype
                    + "' (expected float32, bfloat16 or float16)");
        };
    }

    /**
     * The torch_dtype a model folder's config.json names (float32, bfloat16 or float16), or
     * "float32" when it names none or another.
     */
    public static String torchDtypeOf(Path dir) throws IOException {
        Path config = dir.resolve(CONFIG);
        if (!Files.isRegularFile(config)) {
            return "float32";
        }
        com.google.gson.JsonElement e;
        try {
            e = com.google.gson.JsonParser.parseString(Files.readString(config));
        } catch (com.google.gson.JsonParseException ex) {
            throw new IllegalArgumentException(config + ": malformed JSON: " + ex.getMessage(), ex);
        }
        com.google.gson.JsonElement d = e.isJsonObject() ? e.getAsJsonObject().get("torch_dtype") : null;
        String name = d != null && d.isJsonPrimitive() ? d.getAsString() : "float32";
        return switch (name) {
            case "bfloat16", "float16" -> name;
            default -> "float32";
        };
    }

    private static String torchDtype(Tensor t) {
        return torchDtypeName(t.scalar_type().intern());
    }

    private static String torchDtypeName(ScalarType s) {
        if (s == ScalarType.BFloat16) {
            return "bfloat16";
        }
        if (s == ScalarType.Half) {
            return "float16";
        }
        if (s == ScalarType.Double) {
            return "float64";
        }
        return "float32";
    }
}
