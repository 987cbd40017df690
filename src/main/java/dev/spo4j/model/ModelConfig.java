package dev.spo4j.model;

import com.google.gson.GsonBuilder;
import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonNull;
import com.google.gson.JsonObject;
import com.google.gson.JsonParseException;
import com.google.gson.JsonParser;
import com.google.gson.JsonPrimitive;
import dev.spo4j.io.AtomicFiles;
import java.io.IOException;
import java.math.BigDecimal;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * The architecture of a Llama-family decoder, as a Hugging Face {@code config.json} states it
 * (LlamaConfig / Qwen2Config). Only what changes the forward pass is kept; other keys of a
 * config.json are ignored on reading and not written back.
 *
 * <p>Defaults follow Hugging Face: {@code num_key_value_heads} = heads, {@code head_dim} =
 * hidden / heads, {@code rope_theta} 10000, {@code tie_word_embeddings} false,
 * {@code attention_bias} and {@code mlp_bias} false. Qwen2 always has q/k/v biases and no
 * o_proj bias, whatever {@code attention_bias} says ({@link #qkvBias()}, {@link #outputBias()}).
 *
 * <p>Rejected with {@link IllegalArgumentException}: another {@code model_type}, a
 * {@code hidden_act} other than silu, Qwen2's sliding-window attention, a rope_scaling type
 * other than default, linear or llama3, and inconsistent sizes.
 *
 * @param modelType             "llama", "qwen2", "qwen3" (adds per-head q/k RMSNorm) or "mistral"
 *                              (the Llama layout; a sliding_window shorter than the context is
 *                              rejected)
 * @param vocabSize             rows of embed_tokens and lm_head
 * @param hiddenSize            H, the width of the residual stream
 * @param intermediateSize      the MLP's inner width (gate_proj and up_proj rows)
 * @param numHiddenLayers       decoder layers
 * @param numAttentionHeads     query heads
 * @param numKeyValueHeads      key/value heads, dividing the query heads (fewer is grouped-query
 *                              attention)
 * @param headDim               per-head size (q/k/v rows are heads * headDim)
 * @param rmsNormEps            eps of every RMSNorm
 * @param ropeTheta             RoPE's base theta
 * @param maxPositionEmbeddings the context length the config states (written back; the forward
 *                              does not enforce it)
 * @param tieWordEmbeddings     whether lm_head shares embed_tokens' weight
 * @param attentionBias         as read: for llama, biases on q/k/v/o; for qwen2 always true
 *                              (meaning q/k/v only)
 * @param mlpBias               biases on gate_proj, up_proj and down_proj
 * @param bosTokenId            nullable
 * @param eosTokenIds           empty when the config has none
 * @param ropeScaling           null for plain RoPE
 * @param initializerRange      std of the random initial weights (HF initializer_range)
 */
public record ModelConfig(String modelType, int vocabSize, int hiddenSize, int intermediateSize,
                          int numHiddenLayers, int numAttentionHeads, int numKeyValueHeads, int headDim,
                          double rmsNormEps, double ropeTheta, int maxPositionEmbeddings,
                          boolean tieWordEmbeddings, boolean attentionBias, boolean mlpBias,
                          Integer bosTokenId, List<Integer> eosTokenIds, RopeScaling ropeScaling,
                          double initializerRange) {

    /** {@code model_type} of Llama models (LlamaForCausalLM). */
    public static final String LLAMA = "llama";
    /** {@code model_type} of Qwen2 models (Qwen2ForCausalLM). */
    public static final String QWEN2 = "qwen2";
    /** {@code model_type} of Qwen3 models (Qwen3ForCausalLM: per-head q/k RMSNorm, no biases by default). */
    public static final String QWEN3 = "qwen3";
    /** {@code model_type} of Mistral models (MistralForCausalLM: the Llama layout, optional sliding window). */
    public static final String MISTRAL = "mistral";

    private static boolean supported(String type) {
        return LLAMA.equals(type) || QWEN2.equals(type) || QWEN3.equals(type) || MISTRAL.equals(type);
    }

    /**
     * RoPE frequency scaling ({@code rope_scaling} in config.json).
     *
     * @param type "linear" (positions divided by factor) or "llama3" (Llama 3.1 band-wise
     *             scaling of the inverse frequencies)
     * @param factor                        the scaling factor, finite and &gt; 0
     * @param lowFreqFactor                 llama3 only (else 0)
     * @param highFreqFactor                llama3 only (else 0)
     * @param originalMaxPositionEmbeddings llama3 only (else 0)
     */
    public record RopeScaling(String type, double factor, double lowFreqFactor, double highFreqFactor,
                              int originalMaxPositionEmbeddings) {
        /** Checks the type and the factors; throws IllegalArgumentException naming the bad one. */
        public RopeScaling {
            if (!"linear".equals(type) && !"llama3".equals(type)) {
                throw new IllegalArgumentException("rope_scaling type '" + type
                        + "' is not supported (expected linear or llama3, or no rope_scaling)");
            }
            if (!(factor > 0) || !Double.isFinite(factor)) {
                throw new IllegalArgumentException("rope_scaling.factor is " + factor + " (expected > 0)");
            }
            if ("llama3".equals(type)) {
                if (!(lowFreqFactor > 0) || !(highFreqFactor > lowFreqFactor)) {
                    throw new IllegalArgumentException("rope_scaling low_freq_factor " + lowFreqFactor
                            + " and high_freq_factor " + highFreqFactor
                            + " (expected 0 < low_freq_factor < high_freq_factor)");
                }
                if (originalMaxPositionEmbeddings <= 0) {
                    throw new IllegalArgumentException("rope_scaling.original_max_position_embeddings is "
                            + originalMaxPositionEmbeddings + " (expected > 0)");
                }
            }
        }
    }

    /**
     * Checks the model type, the sizes and the numbers (throwing IllegalArgumentException naming
     * the config.json key); sets {@code attentionBias} for qwen2 and turns a null
     * {@code eosTokenIds} into an empty list.
     */
    public ModelConfig {
        if (!supported(modelType)) {
            throw new IllegalArgumentException("model_type '" + modelType
                    + "' is not supported (expected llama, qwen2, qwen3 or mistral)");
        }
        positive("vocab_size", vocabSize);
        positive("hidden_size", hiddenSize);
        positive("intermediate_size", intermediateSize);
        positive("num_hidden_layers", numHiddenLayers);
        positive("num_attention_heads", numAttentionHeads);
        positive("num_key_value_heads", numKeyValueHeads);
        positive("head_dim", headDim);
        positive("max_position_embeddings", maxPositionEmbeddings);
        if (numAttentionHeads % numKeyValueHeads != 0) {
            throw new IllegalArgumentException("num_key_value_heads " + numKeyValueHeads
                    + " does not divide num_attention_heads " + numAttentionHeads);
        }
        if (headDim % 2 != 0) {
            throw new IllegalArgumentException("head_dim " + headDim + " is odd (RoPE rotates pairs: expected even)");
        }
        if (!(rmsNormEps > 0) || !Double.isFinite(rmsNormEps)) {
            throw new IllegalArgumentException("rms_norm_eps is " + rmsNormEps + " (expected > 0)");
        }
        if (!(ropeTheta > 0) || !Double.isFinite(ropeTheta)) {
            throw new IllegalArgumentException("rope_theta is " + ropeTheta + " (expected > 0)");
        }
        if (!(initializerRange >= 0) || !Double.isFinite(initializerRange)) {
            throw new IllegalArgumentException("initializer_range is " + initializerRange + " (expected >= 0)");
        }
        if (QWEN2.equals(modelType)) {
            attentionBias = true;  // Qwen2Attention: q/k/v always biased
        }
        eosTokenIds = eosTokenIds == null ? List.of() : List.copyOf(eosTokenIds);
    }

    private static void positive(String field, int v) {
        if (v <= 0) {
            throw new IllegalArgumentException(field + " is " + v + " (expected > 0)");
        }
    }

    /**
     * A config with Hugging Face defaults for everything not given: head_dim = hidden / heads,
     * rope_theta 10000, rms_norm_eps 1e-6, no biases (Qwen2: q/k/v biases), untied, no special
     * tokens, no rope scaling, initializer_range 0.02.
     */
    public static ModelConfig of(String modelType, int vocabSize, int hiddenSize, int intermediateSize,
                                 int numHiddenLayers, int numAttentionHeads, int numKeyValueHeads,
                                 int maxPositionEmbeddings) {
        return new ModelConfig(modelType, vocabSize, hiddenSize, intermediateSize, numHiddenLayers,
                numAttentionHeads, numKeyValueHeads, defaultHeadDim(hiddenSize, numAttentionHeads),
                1e-6, 10000.0, maxPositionEmbeddings, false, false, false, null, List.of(), null, 0.02);
    }

    /** A copy with lm_head tied to embed_tokens, or not. */
    public ModelConfig withTiedEmbeddings(boolean tied) {
        return new ModelConfig(modelType, vocabSize, hiddenSize, intermediateSize, numHiddenLayers,
                numAttentionHeads, numKeyValueHeads, headDim, rmsNormEps, ropeTheta, maxPositionEmbeddings,
                tied, attentionBias, mlpBias, bosTokenId, eosTokenIds, ropeScaling, initializerRange);
    }

    /** A copy with these bias settings (for qwen2 {@code attentionBias} stays true). */
    public ModelConfig withBiases(boolean attentionBias, boolean mlpBias) {
        return new ModelConfig(modelType, vocabSize, hiddenSize, intermediateSize, numHiddenLayers,
                numAttentionHeads, numKeyValueHeads, headDim, rmsNormEps, ropeTheta, maxPositionEmbeddings,
                tieWordEmbeddings, attentionBias, mlpBias, bosTokenId, eosTokenIds, ropeScaling, initializerRange);
    }

    /** A copy with another rope_theta and rope_scaling (null for plain RoPE). */
    public ModelConfig withRope(double theta, RopeScaling scaling) {
        return new ModelConfig(modelType, vocabSize, hiddenSize, intermediateSize, numHiddenLayers,
                numAttentionHeads, numKeyValueHeads, headDim, rmsNormEps, theta, maxPositionEmbeddings,
                tieWordEmbeddings, attentionBias, mlpBias, bosTokenId, eosTokenIds, scaling, initializerRange);
    }

    private static int defaultHeadDim(int hidden, int heads) {
        if (heads <= 0) {
            throw new IllegalArgumentException("num_attention_heads is " + heads + " (expected > 0)");
        }
        if (hidden % heads != 0) {
            throw new IllegalArgumentException("num_attention_heads " + heads + " does not divide hidden_size "
                    + hidden + " (and no head_dim is given)");
        }
        return hidden / heads;
    }

    /** Whether q_proj, k_proj and v_proj have biases. */
    public boolean qkvBias() {
        return attentionBias;
    }

    /** Whether o_proj has a bias (attention_bias, except qwen2 whose o_proj never has one). */
    public boolean outputBias() {
        return !QWEN2.equals(modelType) && attentionBias;
    }

    /** Whether each attention layer RMS-normalises every query and key head (Qwen3's q_norm, k_norm). */
    public boolean qkNorm() {
        return QWEN3.equals(modelType);
    }

    /** Rows of q_proj: heads * head_dim. */
    public int qDim() {
        return numAttentionHeads * headDim;
    }

    /** Rows of k_proj and v_proj: kv heads * head_dim. */
    public int kvDim() {
        return numKeyValueHeads * headDim;
    }

    /**
     * RoPE inverse frequencies in float64, rope_scaling applied: inv_freq[i] =
     * 1 / theta^(2i / head_dim), i &lt; head_dim / 2; llama3 scaling divides the low
     * frequencies by factor and interpolates the band between; linear scaling divides all
     * of them by factor (the same as dividing the positions).
     */
    public double[] ropeInverseFrequencies() {
        double[] inv = new double[headDim / 2];
        for (int i = 0; i < inv.length; i++) {
            inv[i] = 1.0 / Math.pow(ropeTheta, (2.0 * i) / headDim);
        }
        if (ropeScaling == null) {
            return inv;
        }
        double factor = ropeScaling.factor();
        if ("linear".equals(ropeScaling.type())) {
            for (int i = 0; i < inv.length; i++) {
                inv[i] /= factor;
            }
            return inv;
        }
        // llama3: wavelengths longer than old_context / low_freq_factor are scaled by 1/factor,
        // shorter than old_context / high_freq_factor kept, the band between interpolated.
        double oldContext = ropeScaling.originalMaxPositionEmbeddings();
        double lowWavelen = oldContext / ropeScaling.lowFreqFactor();
        double highWavelen = oldContext / ropeScaling.highFreqFactor();
        for (int i = 0; i < inv.length; i++) {
            double wavelen = 2 * Math.PI / inv[i];
            if (wavelen > lowWavelen) {
                inv[i] = inv[i] / factor;
            } else if (wavelen >= highWavelen) {
                double smooth = (oldContext / wavelen - ropeScaling.lowFreqFactor())
                        / (ropeScaling.highFreqFactor() - ropeScaling.lowFreqFactor());
                inv[i] = (1 - smooth) * inv[i] / factor + smooth * inv[i];
            }
        }
        return inv;
    }

    // ---------------------------------------------------------------- reading

    /** Reads a Hugging Face config.json. */
    public static ModelConfig read(Path file) throws IOException {
        String text;
        try {
            text = Files.readString(file, StandardCharsets.UTF_8);
        } catch (java.nio.charset.CharacterCodingException e) {
            throw new IllegalArgumentException(file + ": not UTF-8 text (" + e.getMessage() + ")", e);
        }
        try {
            return parse(text, file.toString());
        } catch (IllegalArgumentException e) {
            if (e.getMessage() != null && e.getMessage().startsWith(file.toString())) {
                throw e;
            }
            throw new IllegalArgumentException(file + ": " + e.getMessage(), e);
        }
    }

    /** Parses the text of a config.json; {@code source} names it in error messages. */
    public static ModelConfig parse(String json, String source) {
        JsonObject o;
        try {
            JsonElement e = JsonParser.parseString(json);
            if (!e.isJsonObject()) {
                throw new IllegalArgumentException(source + ": not a JSON object");
            }
            o = e.getAsJsonObject();
        } catch (JsonParseException e) {
            throw new IllegalArgumentException(source + ": not valid JSON (" + e.getMessage() + ")", e);
        }
        String type = string(o, "model_type", null);
        if (type == null) {
            throw new IllegalArgumentException("model_type is missing (expected llama, qwen2, qwen3 or mistral)");
        }
        if (!supported(type)) {
            throw new IllegalArgumentException("model_type '" + type
                    + "' is not supported (expected llama, qwen2, qwen3 or mistral)");
        }
        String act = string(o, "hidden_act", "silu");
        if (!"silu".equals(act)) {
            throw new IllegalArgumentException("hidden_act '" + act + "' is not supported (expected silu)");
        }
        if ((QWEN2.equals(type) || QWEN3.equals(type)) && bool(o, "use_sliding_window", false)) {
            throw new IllegalArgumentException("use_sliding_window true is not supported (sliding-window attention)");
        }
        if (MISTRAL.equals(type) && has(o, "sliding_window")) {
            // a window at least as long as the context never masks a key: the Llama forward is exact
            int window = integer(o, "sliding_window", null);
            int context = integer(o, "max_position_embeddings", null);
            if (window < context) {
                throw new IllegalArgumentException("sliding_window " + window + " is shorter than max_position_embeddings "
                        + context + ": sliding-window attention is not supported (Mistral v0.2 and later have none)");
            }
        }
        int hidden = integer(o, "hidden_size", null);
        int heads = integer(o, "num_attention_heads", null);
        int headDim = has(o, "head_dim") ? integer(o, "head_dim", null) : defaultHeadDim(hidden, heads);
        return new ModelConfig(type,
                integer(o, "vocab_size", null),
                hidden,
                integer(o, "intermediate_size", null),
                integer(o, "num_hidden_layers", null),
                heads,
                integer(o, "num_key_value_heads", heads),
                headDim,
                number(o, "rms_norm_eps", 1e-6),
                ropeTheta(o),
                integer(o, "max_position_embeddings", 2048),
                bool(o, "tie_word_embeddings", false),
                bool(o, "attention_bias", false),
                bool(o, "mlp_bias", false),
                has(o, "bos_token_id") ? integer(o, "bos_token_id", null) : null,
                tokenIds(o, "eos_token_id"),
                ropeScaling(o),
                number(o, "initializer_range", 0.02));
    }

    private static boolean has(JsonObject o, String key) {
        return o.has(key) && !o.get(key).isJsonNull();
    }

    private static String string(JsonObject o, String key, String dflt) {
        if (!has(o, key)) {
            return dflt;
        }
        JsonElement e = o.get(key);
        if (!e.isJsonPrimitive() || !e.getAsJsonPrimitive().isString()) {
            throw new IllegalArgumentException(key + " is " + e + " (expected a string)");
        }
        return e.getAsString();
    }

    private static boolean bool(JsonObject o, String key, boolean dflt) {
        if (!has(o, key)) {
            return dflt;
        }
        JsonElement e = o.get(key);
        if (!e.isJsonPrimitive() || !e.getAsJsonPrimitive().isBoolean()) {
            throw new IllegalArgumentException(key + " is " + e + " (expected true or false)");
        }
        return e.getAsBoolean();
    }

    private static double number(JsonObject o, String key, Double dflt) {
        if (!has(o, key)) {
            if (dflt == null) {
                throw new IllegalArgumentException(key + " is missing");
            }
            return dflt;
        }
        JsonElement e = o.get(key);
        if (!e.isJsonPrimitive() || !e.getAsJsonPrimitive().isNumber()) {
            throw new IllegalArgumentException(key + " is " + e + " (expected a number)");
        }
        return e.getAsDouble();
    }

    private static int integer(JsonObject o, String key, Integer dflt) {
        if (!has(o, key)) {
            if (dflt == null) {
                throw new IllegalArgumentException(key + " is missing");
            }
            return dflt;
        }
        return asInt(o.get(key), key);
    }

    private static int asInt(JsonElement e, String key) {
        if (!e.isJsonPrimitive() || !e.getAsJsonPrimitive().isNumber()) {
            throw new IllegalArgumentException(key + " is " + e + " (expected an integer)");
        }
        try {
            return new BigDecimal(e.getAsString()).intValueExact();
        } catch (ArithmeticException | NumberFormatException x) {
            throw new IllegalArgumentException(key + " is " + e + " (expected an integer)");
        }
    }

    private static List<Integer> tokenIds(JsonObject o, String key) {
        if (!has(o, key)) {
            return List.of();
        }
        JsonElement e = o.get(key);
        List<Integer> ids = new ArrayList<>();
        if (e.isJsonArray()) {
            for (JsonElement x : e.getAsJsonArray()) {
                ids.add(asInt(x, key));
            }
        } else {
            ids.add(asInt(e, key));
        }
        return ids;
    }

    /** rope_theta, or (transformers 5 configs) rope_parameters.rope_theta. */
    private static double ropeTheta(JsonObject o) {
        if (!has(o, "rope_theta") && has(o, "rope_parameters") && o.get("rope_parameters").isJsonObject()) {
            return number(o.getAsJsonObject("rope_parameters"), "rope_theta", 10000.0);
        }
        return number(o, "rope_theta", 10000.0);
    }

    /** rope_scaling, or (transformers 5 configs) rope_parameters; null for plain RoPE. */
    private static RopeScaling ropeScaling(JsonObject o) {
        String key = has(o, "rope_scaling") ? "rope_scaling" : "rope_parameters";
        if (!has(o, key)) {
            return null;
        }
        JsonElement e = o.get(key);
        if (!e.isJsonObject()) {
            throw new IllegalArgumentException(key + " is " + e + " (expected an object or null)");
        }
        JsonObject r = e.getAsJsonObject();
        String type = has(r, "rope_type") ? string(r, "rope_type", null) : string(r, "type", "default");
        if ("default".equals(type)) {
            return null;
        }
        if ("linear".equals(type)) {
            return new RopeScaling(type, number(r, "factor", null), 0, 0, 0);
        }
        if ("llama3".equals(type)) {
            return new RopeScaling(type, number(r, "factor", null), number(r, "low_freq_factor", null),
                    number(r, "high_freq_factor", null), integer(r, "original_max_position_embeddings", null));
        }
        throw new IllegalArgumentException("rope_scaling type '" + type
                + "' is not supported (expected default, linear or llama3)");
    }

    // ---------------------------------------------------------------- writing

    /** Writes config.json with torch_dtype float32 (atomically: temp file, then rename). */
    public void write(Path file) throws IOException {
        write(file, "float32");
    }

    /** Writes config.json naming the given torch_dtype ("float32", "bfloat16", ...). */
    public void write(Path file, String torchDtype) throws IOException {
        AtomicFiles.writeString(file, toJson(torchDtype));
    }

    /** The config.json text: the standard keys, architectures and torch_dtype. */
    public String toJson(String torchDtype) {
        JsonObject o = new JsonObject();
        JsonArray arch = new JsonArray();
        arch.add(switch (modelType) {
            case QWEN2 -> "Qwen2ForCausalLM";
            case QWEN3 -> "Qwen3ForCausalLM";
            case MISTRAL -> "MistralForCausalLM";
            default -> "LlamaForCausalLM";
        });
        o.add("architectures", arch);
        o.addProperty("model_type", modelType);
        o.addProperty("vocab_size", vocabSize);
        o.addProperty("hidden_size", hiddenSize);
        o.addProperty("intermediate_size", intermediateSize);
        o.addProperty("num_hidden_layers", numHiddenLayers);
        o.addProperty("num_attention_heads", numAttentionHeads);
        o.addProperty("num_key_value_heads", numKeyValueHeads);
        o.addProperty("head_dim", headDim);
        o.addProperty("hidden_act", "silu");
        o.addProperty("rms_norm_eps", rmsNormEps);
        o.addProperty("rope_theta", ropeTheta);
        o.addProperty("max_position_embeddings", maxPositionEmbeddings);
        o.addProperty("tie_word_embeddings", tieWordEmbeddings);
        if (LLAMA.equals(modelType)) {
            o.addProperty("attention_bias", attentionBias);
            o.addProperty("mlp_bias", mlpBias);
        } else if (MISTRAL.equals(modelType)) {
            o.add("sliding_window", JsonNull.INSTANCE);
        } else {
            if (QWEN3.equals(modelType)) {
                o.addProperty("attention_bias", attentionBias);
            }
            o.addProperty("use_sliding_window", false);
        }
        o.addProperty("initializer_range", initializerRange);
        o.add("bos_token_id", bosTokenId == null ? JsonNull.INSTANCE : new JsonPrimitive(bosTokenId));
        if (eosTokenIds.isEmpty()) {
            o.add("eos_token_id", JsonNull.INSTANCE);
        } else if (eosTokenIds.size() == 1) {
            o.addProperty("eos_token_id", eosTokenIds.get(0));
        } else {
            JsonArray eos = new JsonArray();
            eosTokenIds.forEach(eos::add);
            o.add("eos_token_id", eos);
        }
        if (ropeScaling == null) {
            o.add("rope_scaling", JsonNull.INSTANCE);
        } else {
            JsonObject r = new JsonObject();
            r.addProperty("rope_type", ropeScaling.type());
            r.addProperty("factor", ropeScaling.factor());
            if ("llama3".equals(ropeScaling.type())) {
                r.addProperty("low_freq_factor", ropeScaling.lowFreqFactor());
                r.addProperty("high_freq_factor", ropeScaling.highFreqFactor());
                r.addProperty("original_max_position_embeddings", ropeScaling.originalMaxPositionEmbeddings());
            }
            o.add("rope_scaling", r);
        }
        o.addProperty("torch_dtype", torchDtype);
        return new GsonBuilder().setPrettyPrinting().serializeNulls().create().toJson(o) + "\n";
    }

    @Override
    public String toString() {
        return String.format(Locale.ROOT, "%s(vocab %d, hidden %d, mlp %d, layers %d, heads %d/%d x %d%s)",
                modelType, vocabSize, hiddenSize, intermediateSize, numHiddenLayers, numAttentionHeads,
                numKeyValueHeads, headDim, tieWordEmbeddings ? ", tied" : "");
    }
}
