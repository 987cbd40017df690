package dev.spo4j.model;

import com.google.gson.Gson;
import com.google.gson.GsonBuilder;
import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParseException;
import com.google.gson.JsonParser;
import dev.spo4j.io.AtomicFiles;
import dev.spo4j.kernels.Tensors;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;
import org.bytedeco.pytorch.GeneratorOptional;
import org.bytedeco.pytorch.GradMode;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * Low-rank adapters on a {@link LlamaModel}'s decoder projections (see {@link LoraConfig}):
 * <pre>
 *   y = x W^T (+b) + (alpha/r) · dropout(x) A^T B^T        A [r, in], B [out, r], fp32
 * </pre>
 * The adapter path runs in fp32 (x is cast to A's dtype, the update back to y's dtype, as
 * PEFT does), so a bf16 base keeps fp32 trainable weights and fp32 AdamW state. Attaching
 * freezes every base parameter; {@link #parameters()} are then the only trainable tensors.
 * With the adapters disabled ({@link #setEnabled}) the model computes exactly what the base
 * computes, bit for bit (the projection's output is returned untouched), which is how the
 * base serves as the reference model without a second copy (TRL with PEFT does the same).
 *
 * <p>Saved in Hugging Face PEFT's layout: {@code adapter_config.json} ({@code peft_type}
 * LORA, {@code r}, {@code lora_alpha}, {@code target_modules}, ...) and
 * {@code adapter_model.safetensors} with names such as
 * {@code base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight}. A is initialised
 * as PEFT does (kaiming-uniform with a = sqrt(5): U(-1/sqrt(in), 1/sqrt(in))) and B as zeros,
 * so a fresh adapter leaves the model's outputs unchanged.
 */
public final class LoraAdapters {
    /** PEFT's files. */
    public static final String CONFIG = "adapter_config.json", WEIGHTS = "adapter_model.safetensors";
    private static final String PREFIX = "base_model.model.";
    private static final Gson GSON = new GsonBuilder().setPrettyPrinting().serializeNulls().create();

    private final LoraConfig config;
    private final Tensor[][] a, b;  // [layer][module in ALL_MODULES order]; null where not targeted
    private final LinkedHashMap<String, Tensor> named = new LinkedHashMap<>();
    private volatile boolean enabled = true;
    private volatile boolean dropoutWithoutGrad;  // a checkpointed forward's no-grad pass draws the masks

    private LoraAdapters(LlamaModel model, LoraConfig config, Map<String, Tensor> weights, String source) {
        this.config = config;
        int layers = model.config().numHiddenLayers();
        int mods = LoraConfig.ALL_MODULES.size();
        a = new Tensor[layers][mods];
        b = new Tensor[layers][mods];
        Tensor first = model.parameterList().get(0);
        TensorOptions fp32 = new TensorOptions(ScalarType.Float).device(
                new org.bytedeco.pytorch.DeviceOptional(first.device()));
        List<String> problems = new ArrayList<>();
        TreeSet<String> unexpected = weights == null ? new TreeSet<>() : new TreeSet<>(weights.keySet());
        for (int i = 0; i < layers; i++) {
            for (int m = 0; m < mods; m++) {
                String module = LoraConfig.ALL_MODULES.get(m);
                if (!config.targets(module)) {
                    continue;
                }
                String path = modulePath(i, module);
                long[] w = weightShape(model.config(), module);
                long out = w[0], in = w[1];
                String nameA = PREFIX + path + ".lora_A.weight", nameB = PREFIX + path + ".lora_B.weight";
                long[] shapeA = {config.r(), in}, shapeB = {out, config.r()};
                Tensor ta, tb;
                if (weights == null) {
                    // drawn by the CPU generator, then moved: the same A for a seed on any device
                    // (a CUDA draw depends on the GPU, so data-parallel ranks could diverge)
                    Tensor cpuA = torch.empty(shapeA, new TensorOptions(ScalarType.Float), null);
                    double bound = 1.0 / Math.sqrt(in);
                    cpuA.uniform_(-bound, bound, new GeneratorOptional());
                    ta = first.device().is_cpu() ? cpuA : cpuA.to(first.device(), ScalarType.Float);
                    tb = torch.zeros(shapeB, fp32);
                } else {
                    ta = checked(weights.get(nameA), nameA, shapeA, problems);
                    tb = checked(weights.get(nameB), nameB, shapeB, problems);
                    unexpected.remove(nameA);
                    unexpected.remove(nameB);
                    if (ta == null || tb == null) {
                        continue;
                    }
                    ta = ta.to(first.device(), ScalarType.Float).clone();
                    tb = tb.to(first.device(), ScalarType.Float).clone();
                }
                ta.retainReference();
                tb.retainReference();
                ta.set_requires_grad(true);
                tb.set_requires_grad(true);
                a[i][m] = ta;
                b[i][m] = tb;
                named.put(nameA, ta);
                named.put(nameB, tb);
            }
        }
        if (!unexpected.isEmpty()) {
            problems.add("unexpected tensors " + unexpected);
        }
        if (!problems.isEmpty()) {
            throw new IllegalArgumentException(source + ": the adapter does not fit " + model.config() + ": "
                    + String.join("; ", problems));
        }
    }

    private static Tensor checked(Tensor t, String name, long[] shape, List<String> problems) {
        if (t == null) {
            problems.add("missing " + name);
            return null;
        }
        long[] got = LlamaModel.shape(t);
        if (!Arrays.equals(got, shape)) {
            problems.add(name + " has shape " + Arrays.toString(got) + ", expected " + Arrays.toString(shape)
                    + " (an adapter for another base model or rank?)");
            return null;
        }
        if (!t.is_floating_point()) {
            problems.add(name + " has dtype " + t.scalar_type().intern() + ", expected a floating type");
            return null;
        }
        return t;
    }

    /** [out, in] of a projection's weight under a config. */
    static long[] weightShape(ModelConfig c, String module) {
        long h = c.hiddenSize(), q = c.qDim(), kv = c.kvDim(), inter = c.intermediateSize();
        return switch (module) {
            case "q_proj" -> new long[] {q, h};
            case "k_proj", "v_proj" -> new long[] {kv, h};
            case "o_proj" -> new long[] {h, q};
            case "gate_proj", "up_proj" -> new long[] {inter, h};
            case "down_proj" -> new long[] {h, inter};
            default -> throw new IllegalArgumentException("no projection " + module);
        };
    }

    /**
     * Checks, without building a model, that the PEFT folder's settings are valid and its
     * tensors have the shapes a model of {@code config} needs; IllegalArgumentException
     * listing the differences otherwise.
     */
    public static void checkFits(ModelConfig config, Path dir) throws IOException {
        LoraConfig c = readConfig(dir);
        Path file = dir.resolve(WEIGHTS);
        if (!Files.isRegularFile(file)) {
            throw new IllegalArgumentException(dir + ": no " + WEIGHTS + " (expected a PEFT LoRA adapter folder)");
        }
        Map<String, Tensor> weights = SafeTensors.read(file);
        List<String> problems = new ArrayList<>();
        TreeSet<String> unexpected = new TreeSet<>(weights.keySet());
        for (int i = 0; i < config.numHiddenLayers(); i++) {
            for (String module : c.targetModules()) {
                long[] w = weightShape(config, module);
                String path = PREFIX + modulePath(i, module);
                checked(weights.get(path + ".lora_A.weight"), path + ".lora_A.weight", new long[] {c.r(), w[1]}, problems);
                checked(weights.get(path + ".lora_B.weight"), path + ".lora_B.weight", new long[] {w[0], c.r()}, problems);
                unexpected.remove(path + ".lora_A.weight");
                unexpected.remove(path + ".lora_B.weight");
            }
        }
        if (!unexpected.isEmpty()) {
            problems.add("unexpected tensors " + unexpected);
        }
        if (!problems.isEmpty()) {
            throw new IllegalArgumentException(file + ": the adapter does not fit " + config + ": "
                    + String.join("; ", problems));
        }
    }

    /** "model.layers.I.self_attn.q_proj" or "model.layers.I.mlp.gate_proj". */
    static String modulePath(int layer, String module) {
        String block = LoraConfig.ALL_MODULES.indexOf(module) < 4 ? "self_attn" : "mlp";
        return "model.layers." + layer + "." + block + "." + module;
    }

    /**
     * New adapters (A random from LibTorch's default generator, B zero) attached to
     * {@code model}, whose parameters are frozen.
     */
    public static LoraAdapters create(LlamaModel model, LoraConfig config) {
        LoraAdapters ad = new LoraAdapters(model, config, null, "new adapter");
        ad.attachTo(model);
        return ad;
    }

    /**
     * Adapters read from a PEFT folder and attached to {@code model} (frozen). Every tensor
     * must be there with the shape the model implies, and no other; a mismatch (an adapter
     * trained on another base) is an IllegalArgumentException listing the differences.
     */
    public static LoraAdapters load(LlamaModel model, Path dir) throws IOException {
        LoraConfig c = readConfig(dir);
        Path file = dir.resolve(WEIGHTS);
        if (!Files.isRegularFile(file)) {
            throw new IllegalArgumentException(dir + ": no " + WEIGHTS + " (expected a PEFT LoRA adapter folder)");
        }
        LoraAdapters ad = new LoraAdapters(model, c, SafeTensors.read(file), file.toString());
        ad.attachTo(model);
        return ad;
    }

    /** The LoRA settings of a PEFT adapter folder's adapter_config.json. */
    public static LoraConfig readConfig(Path dir) throws IOException {
        Path file = dir.resolve(CONFIG);
        if (!Files.isRegularFile(file)) {
            throw new IllegalArgumentException(dir + ": no " + CONFIG + " (expected a PEFT LoRA adapter folder)");
        }
        JsonObject o;
        try {
            JsonElement e = JsonParser.parseString(Files.readString(file, StandardCharsets.UTF_8));
            if (!e.isJsonObject()) {
                throw new IllegalArgumentException(file + ": not a JSON object");
            }
            o = e.getAsJsonObject();
        } catch (JsonParseException e) {
            throw new IllegalArgumentException(file + ": not valid JSON (" + e.getMessage() + ")", e);
        }
        String type = string(o, "peft_type");
        if (!"LORA".equals(type)) {
            throw new IllegalArgumentException(file + ": peft_type " + type + " (expected LORA)");
        }
        if (o.has("use_rslora") && !o.get("use_rslora").isJsonNull() && o.get("use_rslora").getAsBoolean()) {
            throw new IllegalArgumentException(file + ": use_rslora is true (only alpha / r scaling is supported)");
        }
        if (o.has("use_dora") && !o.get("use_dora").isJsonNull() && o.get("use_dora").getAsBoolean()) {
            throw new IllegalArgumentException(file + ": use_dora is true (DoRA is not supported)");
        }
        if (o.has("fan_in_fan_out") && !o.get("fan_in_fan_out").isJsonNull() && o.get("fan_in_fan_out").getAsBoolean()) {
            throw new IllegalArgumentException(file + ": fan_in_fan_out is true (expected false for Llama-family linears)");
        }
        JsonElement tm = o.get("target_modules");
        List<String> targets = new ArrayList<>();
        if (tm != null && tm.isJsonArray()) {
            for (JsonElement e : tm.getAsJsonArray()) {
                targets.add(e.getAsString());
            }
        } else if (tm != null && tm.isJsonPrimitive() && tm.getAsString().equals("all-linear")) {
            targets.add("all-linear");
        } else {
            throw new IllegalArgumentException(file + ": target_modules is " + tm + " (expected a list of module names)");
        }
        try {
            return new LoraConfig(number(o, "r", file).intValue(), number(o, "lora_alpha", file).doubleValue(),
                    o.has("lora_dropout") && !o.get("lora_dropout").isJsonNull() ? o.get("lora_dropout").getAsDouble() : 0,
                    targets);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(file + ": " + e.getMessage(), e);
        }
    }

    private static String string(JsonObject o, String key) {
        JsonElement e = o.get(key);
        return e == null || e.isJsonNull() ? null : e.getAsString();
    }

    private static Number number(JsonObject o, String key, Path file) {
        JsonElement e = o.get(key);
        if (e == null || !e.isJsonPrimitive() || !e.getAsJsonPrimitive().isNumber()) {
            throw new IllegalArgumentException(file + ": " + key + " is " + e + " (expected a number)");
        }
        return e.getAsNumber();
    }

    private void attachTo(LlamaModel model) {
        for (Tensor p : model.parameterList()) {
            p.set_requires_grad(false);
        }
        model.setAdapters(this);
    }

    /** The settings. */
    public LoraConfig config() {
        return config;
    }

    /** Whether the adapters take part in the forward (default true). */
    public boolean enabled() {
        return enabled;
    }

    /** Turns the adapters on or off; off, the model computes its base exactly. */
    public void setEnabled(boolean on) {
        this.enabled = on;
    }

    /** Makes dropout draw without autograd too ({@link LlamaModel.Recomputed}'s first pass). */
    void setDropoutWithoutGrad(boolean on) {
        this.dropoutWithoutGrad = on;
    }

    /** Whether dropout draws without autograd ({@link #setDropoutWithoutGrad}). */
    boolean dropoutWithoutGrad() {
        return dropoutWithoutGrad;
    }

    /** The trainable tensors (each module's A then B, layer by layer), fp32. */
    public List<Tensor> parameters() {
        return new ArrayList<>(named.values());
    }

    /** The tensors under PEFT's names (live tensors; a new map each call). */
    public LinkedHashMap<String, Tensor> stateDict() {
        return new LinkedHashMap<>(named);
    }

    /** Number of trainable scalars. */
    public long parameterCount() {
        long n = 0;
        for (Tensor t : named.values()) {
            n += t.numel();
        }
        return n;
    }

    /**
     * {@code y} plus the adapter's update of projection {@code module} (index into
     * {@link LoraConfig#ALL_MODULES}) of {@code layer}, for that projection's input x; y
     * itself when the adapters are off or the module is not targeted.
     */
    Tensor apply(int layer, int module, Tensor x, Tensor y) {
        Tensor ta = a[layer][module];
        if (!enabled || ta == null) {
            return y;
        }
        Tensor cast = fp32Input(x);  // outside the scope below: q, k and v (gate and up) share it
        // the fp32 update (as large as y) is released on return; only the result in y's dtype outlives it
        return Tensors.scoped(() -> {
            Tensor in = cast;
            if (config.dropout() > 0 && (GradMode.is_enabled() || dropoutWithoutGrad)) {
                in = torch.dropout(in, config.dropout(), true);
            }
            // in place on the fp32 update (autograd needs no output here): y + update summed in fp32
            // and rounded once to y's dtype, as PEFT does with fp32 adapters on a bf16 base
            Tensor update = torch.linear(torch.linear(in, ta), b[layer][module]).mul_(new Scalar(config.scale()));
            return update.add_(y).to(y.scalar_type().intern());
        });
    }

    // q, k and v (and gate and up) read the same input: cast it once, so that autograd keeps one fp32 copy
    private Tensor lastInput, lastInputFp32;

    private synchronized Tensor fp32Input(Tensor x) {
        if (x.scalar_type().intern() == ScalarType.Float) {
            return x;
        }
        if (x != lastInput || lastInputFp32.isNull()) {  // isNull: released with the scope that made it
            lastInput = x;
            lastInputFp32 = x.to(ScalarType.Float);
        }
        return lastInputFp32;
    }

    /**
     * Adds (alpha/r) B A to each targeted weight of {@code model} (computed in fp32, stored in
     * the weight's dtype), under no-grad, and detaches these adapters from the model: it then
     * computes base + adapter without them.
     */
    public void mergeInto(LlamaModel model) {
        if (model.adapters() == this) {
            model.setAdapters(null);
        }
        Map<String, Tensor> base = model.stateDict();
        try (NoGradGuard ng = new NoGradGuard()) {
            for (int i = 0; i < a.length; i++) {
                for (int m = 0; m < a[i].length; m++) {
                    if (a[i][m] == null) {
                        continue;
                    }
                    Tensor w = base.get(modulePath(i, LoraConfig.ALL_MODULES.get(m)) + ".weight");
                    Tensor delta = torch.matmul(b[i][m], a[i][m]).mul(new Scalar(config.scale()));
                    w.copy_(w.to(ScalarType.Float).add(delta.to(w.device(), ScalarType.Float)));
                }
            }
        }
    }

    /**
     * Writes the PEFT folder (adapter_config.json, adapter_model.safetensors, and the
     * tokenizer files of {@code copyTokenizerFrom} when not null), replacing {@code dir}
     * atomically. {@code baseModel} is recorded as base_model_name_or_path.
     */
    public void save(Path dir, String baseModel, Path copyTokenizerFrom) throws IOException {
        Path target = dir.toAbsolutePath().normalize();
        Files.createDirectories(target.getParent());
        if (Files.exists(target) && !Files.isDirectory(target)) {
            throw new IllegalArgumentException(target + " exists and is not a folder");
        }
        Path tmp = AtomicFiles.newTempDirBeside(target, "new");
        try {
            Files.writeString(tmp.resolve(CONFIG), configJson(baseModel));
            SafeTensors.write(tmp.resolve(WEIGHTS), named, Map.of("format", "pt"));
            if (copyTokenizerFrom != null) {
                for (String name : ModelFolder.TOKENIZER_FILES) {
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

    /** adapter_config.json as PEFT writes it for a causal-LM LoRA (keys of PEFT's LoraConfig). */
    String configJson(String baseModel) {
        JsonObject o = new JsonObject();
        o.add("alpha_pattern", new JsonObject());
        o.add("auto_mapping", null);
        o.addProperty("base_model_name_or_path", baseModel);
        o.addProperty("bias", "none");
        o.addProperty("fan_in_fan_out", false);
        o.addProperty("inference_mode", true);
        o.addProperty("init_lora_weights", true);
        o.add("layers_pattern", null);
        o.add("layers_to_transform", null);
        double alpha = config.alpha();
        if (alpha == Math.rint(alpha) && Math.abs(alpha) < 1e15) {
            o.addProperty("lora_alpha", (long) alpha);
        } else {
            o.addProperty("lora_alpha", alpha);
        }
        o.addProperty("lora_dropout", config.dropout());
        o.add("modules_to_save", null);
        o.addProperty("peft_type", "LORA");
        o.addProperty("r", config.r());
        o.add("rank_pattern", new JsonObject());
        o.add("revision", null);
        JsonArray targets = new JsonArray();
        config.targetModules().forEach(targets::add);
        o.add("target_modules", targets);
        o.addProperty("task_type", "CAUSAL_LM");
        o.addProperty("use_dora", false);
        o.addProperty("use_rslora", false);
        return GSON.toJson(o);
    }
}
