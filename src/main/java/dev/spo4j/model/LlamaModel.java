package dev.spo4j.model;

import dev.spo4j.kernels.Tensors;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.DoubleOptional;
import org.bytedeco.pytorch.GeneratorOptional;
import org.bytedeco.pytorch.GradMode;
import org.bytedeco.pytorch.Module;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.ScalarTypeOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptional;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;

/**
 * A decoder-only Llama-family transformer (Hugging Face LlamaForCausalLM,
 * Qwen2ForCausalLM, Qwen3ForCausalLM and MistralForCausalLM, eager attention) on LibTorch:
 * <pre>
 *   h = embed_tokens[ids]                                            [B,T,H]
 *   per layer:  a = RMSNorm(h)
 *               q,k,v = a Wq^T (+bq), a Wk^T (+bk), a Wv^T (+bv)      heads × head_dim
 *               (Qwen3: q,k = RMSNorm(q) w_qnorm, RMSNorm(k) w_knorm per head)
 *               q,k = q cos + rotate_half(q) sin, positions 0..T-1 for every row
 *               p = softmax_fp32(q k^T / sqrt(d), causal + key-padding mask)
 *               h = h + (p v) Wo^T (+bo)                              (kv head = head / (H/KV))
 *               m = RMSNorm(h);  h = h + down(silu(gate(m)) * up(m))
 *   logits = RMSNorm(h) lm_head^T          (lm_head = embed_tokens when tied)
 *   RMSNorm(x) = w * (x * rsqrt(mean(x^2) + eps)), computed in fp32
 * </pre>
 *
 * <p>Masking: query i sees key j when j &le; i and attentionMask[b, j] != 0 (the Hugging Face
 * eager mask). A blocked score is the lowest finite value of the dtype rather than -inf, so
 * a query row with no visible key (a row that is all padding, or left padding) gives finite
 * outputs and gradients instead of NaN. Outputs at padded positions are finite but
 * unspecified (see {@link Attention}) and must be masked out by the loss. Positions are
 * 0..T-1 in every row whatever the mask, as in Hugging Face without position_ids, so
 * right padding is the layout that matches an unpadded forward.
 *
 * <p>Numerics: RoPE cos/sin are computed in float64 and rounded once to the model dtype
 * (Hugging Face computes the angles in fp32, which differs from float64 by its own rounding,
 * about 1e-4 rad at position 4096). RMSNorm runs in fp32 whatever the parameter dtype, as
 * does the softmax of the eager path; SDPA uses the backend's fused kernels. The logits come
 * out in the parameter dtype (fp32 unless the module was cast).
 *
 * <p>Parameters are registered in a module tree that mirrors the Hugging Face names
 * ({@code model.layers.0.self_attn.q_proj.weight}, ...), so {@link #parameters()} and
 * {@link #named_parameters()} work for optimisers and {@code to(device)} moves them; the
 * Java handles here share the same tensors. Parameter handles are retained
 * ({@code retainReference()}), so creating or loading the model inside a
 * {@code PointerScope} does not free them when the scope closes; per-forward temporaries
 * are ordinary and belong to the caller's scope. The module keeps no per-forward state.
 */
public final class LlamaModel extends Module {
    /** Value of a blocked attention score: the lowest finite float (Hugging Face's finfo.min). */
    static final double MASK_VALUE = -Float.MAX_VALUE;

    private final ModelConfig config;
    private final ScalarType initDtype;  // the parameters' dtype when built
    private final boolean randomInit;
    private final Tensor embed;
    private final Layer[] layers;
    private final Tensor finalNorm;
    private final Tensor lmHead;  // null when tied
    private final LinkedHashMap<String, Tensor> params = new LinkedHashMap<>();
    private final List<Module> children = new ArrayList<>();  // Java peers of the module tree
    private final double[] invFreq;
    private volatile Attention attention = Attention.SDPA;
    /**
     * The default of {@link #setRowGroupTokens}: 2048 tokens, enough rows that the GEMMs keep
     * their speed, few enough that one layer's temporaries stay small.
     */
    public static final long DEFAULT_ROW_GROUP_TOKENS = 2048;
    private volatile long rowGroupTokens = DEFAULT_ROW_GROUP_TOKENS;
    private volatile LoraAdapters adapters;  // null: plain projections

    /**
     * How attention is computed. Both give the Hugging Face result at every real (non-pad)
     * position; they differ only at padded query positions, whose outputs are finite but
     * unspecified.
     */
    public enum Attention {
        /**
         * torch.scaled_dot_product_attention (fused kernels, no T×T scores kept for backward
         * where the backend allows): causal only for unpadded or right-padded batches,
         * else an additive mask of 0 / finfo(dtype).min.
         */
        SDPA,
        /** Explicit fp32 softmax(q k^T / sqrt(d) masked) v, Hugging Face's eager path; the reference. */
        EAGER
    }

    /** One decoder layer's parameters; a bias is null when absent. */
    private static final class Layer {
        Tensor inNorm, postNorm;
        Tensor qNorm, kNorm;  // Qwen3: per-head RMSNorm weights [head_dim]; null otherwise
        Tensor wq, bq, wk, bk, wv, bv, wo, bo;
        Tensor wg, bg, wu, bu, wd, bd;
    }

    /**
     * A randomly initialised model, as Hugging Face initialises one: normal(0,
     * initializer_range) for embedding and linear weights, zero biases, unit norm weights.
     * Seed with {@code torch.manual_seed} before constructing for reproducibility.
     */
    public LlamaModel(ModelConfig config) {
        this(config, ScalarType.Float, true);
    }

    /**
     * A model whose parameters are {@code dtype} CPU tensors. {@code randomInit}: drawn as Hugging
     * Face initialises (in fp32, then cast, so the draws match the fp32 model's); otherwise left
     * uninitialised for {@link #loadStateDict} to fill: no fp32 copy is made and no page is
     * touched before the weights arrive (a bf16 model loads at its own size, not three times it).
     */
    public LlamaModel(ModelConfig config, ScalarType dtype, boolean randomInit) {
        super("LlamaForCausalLM");
        retainReference();
        this.config = config;
        this.initDtype = dtype;
        this.randomInit = randomInit;
        this.invFreq = config.ropeInverseFrequencies();
        int h = config.hiddenSize(), v = config.vocabSize(), inter = config.intermediateSize();
        double std = config.initializerRange();
        Module model = child(this, "model");
        embed = param(child(model, "embed_tokens"), "weight", "model.embed_tokens.weight", normal(std, v, h));
        Module layerList = child(model, "layers");
        layers = new Layer[config.numHiddenLayers()];
        for (int i = 0; i < layers.length; i++) {
            String p = "model.layers." + i + ".";
            Layer l = new Layer();
            Module layer = child(layerList, Integer.toString(i));
            Module attn = child(layer, "self_attn");
            boolean qkvBias = config.qkvBias();
            Module q = child(attn, "q_proj");
            l.wq = param(q, "weight", p + "self_attn.q_proj.weight", normal(std, config.qDim(), h));
            l.bq = qkvBias ? param(q, "bias", p + "self_attn.q_proj.bias", zeros(config.qDim())) : null;
            Module k = child(attn, "k_proj");
            l.wk = param(k, "weight", p + "self_attn.k_proj.weight", normal(std, config.kvDim(), h));
            l.bk = qkvBias ? param(k, "bias", p + "self_attn.k_proj.bias", zeros(config.kvDim())) : null;
            Module vp = child(attn, "v_proj");
            l.wv = param(vp, "weight", p + "self_attn.v_proj.weight", normal(std, config.kvDim(), h));
            l.bv = qkvBias ? param(vp, "bias", p + "self_attn.v_proj.bias", zeros(config.kvDim())) : null;
            Module o = child(attn, "o_proj");
            l.wo = param(o, "weight", p + "self_attn.o_proj.weight", normal(std, h, config.qDim()));
            l.bo = config.outputBias() ? param(o, "bias", p + "self_attn.o_proj.bias", zeros(h)) : null;
            if (config.qkNorm()) {
                l.qNorm = param(child(attn, "q_norm"), "weight", p + "self_attn.q_norm.weight", ones(config.headDim()));
                l.kNorm = param(child(attn, "k_norm"), "weight", p + "self_attn.k_norm.weight", ones(config.headDim()));
            }
            Module mlp = child(layer, "mlp");
            boolean mb = config.mlpBias();
            Module g = child(mlp, "gate_proj");
            l.wg = param(g, "weight", p + "mlp.gate_proj.weight", normal(std, inter, h));
            l.bg = mb ? param(g, "bias", p + "mlp.gate_proj.bias", zeros(inter)) : null;
            Module u = child(mlp, "up_proj");
            l.wu = param(u, "weight", p + "mlp.up_proj.weight", normal(std, inter, h));
            l.bu = mb ? param(u, "bias", p + "mlp.up_proj.bias", zeros(inter)) : null;
            Module d = child(mlp, "down_proj");
            l.wd = param(d, "weight", p + "mlp.down_proj.weight", normal(std, h, inter));
            l.bd = mb ? param(d, "bias", p + "mlp.down_proj.bias", zeros(h)) : null;
            l.inNorm = param(child(layer, "input_layernorm"), "weight", p + "input_layernorm.weight", ones(h));
            l.postNorm = param(child(layer, "post_attention_layernorm"), "weight",
                    p + "post_attention_layernorm.weight", ones(h));
            layers[i] = l;
        }
        finalNorm = param(child(model, "norm"), "weight", "model.norm.weight", ones(h));
        lmHead = config.tieWordEmbeddings() ? null
                : param(child(this, "lm_head"), "weight", "lm_head.weight", normal(std, v, h));
    }

    /**
     * Frees the model's weights now: the retained parameter handles, the module tree's Java peers
     * and the module itself are released, so the tensors go when no other handle holds them
     * (a closed reference model's memory, on the CPU or a GPU, is then free for the policy; a
     * plain {@code Pointer.close()} left every parameter to the garbage collector, which does
     * not see native memory). The model is unusable afterwards; closing twice does nothing.
     */
    @Override
    public void close() {
        if (params.isEmpty() && children.isEmpty()) {
            return;
        }
        for (Tensor t : params.values()) {
            t.releaseReference();
        }
        params.clear();
        for (Module m : children) {
            m.releaseReference();
        }
        children.clear();
        super.close();
    }

    private Module child(Module parent, String name) {
        Module m = parent.register_module(name, new Module(name));
        m.retainReference();
        children.add(m);
        return m;
    }

    private Tensor param(Module owner, String local, String fullName, Tensor t) {
        t.retainReference();
        owner.register_parameter(local, t, true);  // shares t's TensorImpl and sets requires_grad
        params.put(fullName, t);
        return t;
    }

    private Tensor normal(double std, long... shape) {
        if (!randomInit) {
            return torch.empty(shape, new TensorOptions(initDtype), null);
        }
        Tensor t = torch.empty(shape, new TensorOptions(ScalarType.Float), null);
        t.normal_(0.0, std, new GeneratorOptional());
        return initDtype == ScalarType.Float ? t : t.to(initDtype);
    }

    private Tensor zeros(long n) {
        return torch.zeros(new long[] {n}, new TensorOptions(initDtype));
    }

    private Tensor ones(long n) {
        return torch.ones(new long[] {n}, new TensorOptions(initDtype));
    }

    /** The architecture this model was built from. */
    public ModelConfig config() {
        return config;
    }

    /** The attention implementation in use (default {@link Attention#SDPA}). */
    public Attention attention() {
        return attention;
    }

    /** Chooses the attention implementation (default {@link Attention#SDPA}); returns this. */
    public LlamaModel setAttention(Attention a) {
        this.attention = java.util.Objects.requireNonNull(a, "attention");
        return this;
    }

    /**
     * Tokens per row group: a decoder layer is independent across the rows of a batch, so a
     * forward without autograd and {@link Recomputed#backward()} run each layer on whole rows,
     * about this many tokens at a time (at least one row), which bounds the layer's transient
     * memory whatever the batch. Results equal a whole-batch layer to fp32 rounding.
     *
     * @throws IllegalArgumentException if {@code tokens < 1}
     */
    public LlamaModel setRowGroupTokens(long tokens) {
        if (tokens < 1) {
            throw new IllegalArgumentException("row group tokens must be >= 1, got " + tokens);
        }
        this.rowGroupTokens = tokens;
        return this;
    }

    /** {@link #setRowGroupTokens}. */
    public long rowGroupTokens() {
        return rowGroupTokens;
    }

    // ---------------------------------------------------------------- forward

    /**
     * Next-token logits.
     *
     * @param inputIds      [B,T] int64 token ids in [0, vocab_size), on the parameters' device
     * @param attentionMask [B,T] (int64, int32 or bool) 1 for a token, 0 for padding, or null
     *                      for no padding
     * @return [B,T,V] logits in the parameter dtype (fp32 for a model not cast)
     */
    public Tensor forward(Tensor inputIds, Tensor attentionMask) {
        return logits(hiddenStates(inputIds, attentionMask));
    }

    /** The output head applied to final hidden states [..., H]: [..., V]. */
    public Tensor logits(Tensor hidden) {
        return torch.linear(hidden, headWeight());
    }

    /**
     * The output head's weight [V, H]: lm_head.weight, or model.embed_tokens.weight when tied
     * (the live parameter, so a fused head that skips the logits can still train it).
     */
    public Tensor headWeight() {
        return lmHead == null ? embed : lmHead;
    }

    /** The final hidden states (after model.norm), [B,T,H]; same arguments as {@link #forward}. */
    public Tensor hiddenStates(Tensor inputIds, Tensor attentionMask) {
        checkInputs(inputIds, attentionMask);
        long b = inputIds.size(0), t = inputIds.size(1);
        Tensor x = torch.embedding(embed, inputIds);
        ScalarType dtype = x.scalar_type().intern();
        Tensor[] cosSin = rope(t, dtype, inputIds);
        Masking masking = masking(inputIds, attentionMask, b, t, dtype);
        for (int i = 0; i < layers.length; i++) {
            x = scopedLayer(i, x, cosSin[0], cosSin[1], masking, b, t, null);
        }
        return rmsNorm(x, finalNorm);
    }

    // ---------------------------------------------------------------- KV cache (generation)

    /**
     * Keys (after RoPE) and values of every layer for incremental decoding: per layer
     * {@code [B, KV heads, capacity, head_dim]}; slot j holds position j. Made by
     * {@link #newCache}, filled by {@link #prefill}, extended one token per row by
     * {@link #decode}, so that a generated token costs one query against the cached keys
     * (O(T)) instead of a forward over the whole prefix (O(T^2)).
     */
    public static final class KvCache {
        final Tensor[] keys, values;
        final long capacity;
        /** Set for a decode step: the rows' new keys go to these slots, and key j is visible iff j &lt;= slot. */
        Tensor slots, additive;

        private KvCache(Tensor[] keys, Tensor[] values, long capacity) {
            this.keys = keys;
            this.values = values;
            this.capacity = capacity;
        }

        /** Positions a row can hold. */
        public long capacity() {
            return capacity;
        }
    }

    /** An empty cache for {@code batch} rows of up to {@code capacity} positions, in the parameters' dtype and device. */
    public KvCache newCache(long batch, long capacity) {
        Tensor[] k = new Tensor[layers.length], v = new Tensor[layers.length];
        TensorOptions opts = new TensorOptions(embed.scalar_type().intern()).device(
                new org.bytedeco.pytorch.DeviceOptional(embed.device()));
        for (int i = 0; i < layers.length; i++) {
            k[i] = torch.zeros(new long[] {batch, config.numKeyValueHeads(), capacity, config.headDim()}, opts);
            v[i] = torch.zeros(new long[] {batch, config.numKeyValueHeads(), capacity, config.headDim()}, opts);
        }
        return new KvCache(k, v, capacity);
    }

    /**
     * {@link #hiddenStates} of a right-padded batch, also writing every position's keys and
     * values into slots 0..T-1 of {@code cache} (slots of padding hold values that
     * {@link #decode} masks until it overwrites them).
     */
    public Tensor prefill(Tensor inputIds, Tensor attentionMask, KvCache cache) {
        checkInputs(inputIds, attentionMask);
        long b = inputIds.size(0), t = inputIds.size(1);
        if (t > cache.capacity || b != cache.keys[0].size(0)) {
            throw new IllegalArgumentException("prefill of [" + b + ", " + t + "] into a cache of " + cache.keys[0].size(0)
                    + " rows x " + cache.capacity + " positions");
        }
        cache.slots = null;
        Tensor x = torch.embedding(embed, inputIds);
        ScalarType dtype = x.scalar_type().intern();
        Tensor[] cosSin = rope(t, dtype, inputIds);
        Masking masking = masking(inputIds, attentionMask, b, t, dtype);
        for (int i = 0; i < layers.length; i++) {
            x = scopedLayer(i, x, cosSin[0], cosSin[1], masking, b, t, cache);
        }
        return rmsNorm(x, finalNorm);
    }

    /**
     * Final hidden states {@code [B, 1, H]} of one new token per row at {@code positions[r]}
     * (the row's length so far), attending to the cached keys 0..positions[r]-1 and itself;
     * its key and value are written to slot positions[r].
     */
    public Tensor decode(Tensor tokens, long[] positions, KvCache cache) {
        checkInputs(tokens, null);
        long b = tokens.size(0);
        if (tokens.size(1) != 1 || positions.length != b) {
            throw new IllegalArgumentException("decode takes [B, 1] tokens and B positions");
        }
        long max = 0;
        for (long p : positions) {
            if (p < 0 || p >= cache.capacity) {
                throw new IllegalArgumentException("position " + p + " outside the cache's [0, " + cache.capacity + ")");
            }
            max = Math.max(max, p);
        }
        Tensor x = torch.embedding(embed, tokens);
        ScalarType dtype = x.scalar_type().intern();
        Tensor pos = torch.empty(new long[] {b}, new TensorOptions(ScalarType.Long), null);
        pos.data_ptr_long().put(positions);
        pos = pos.to(tokens.device(), ScalarType.Long);
        Tensor[] table = rope(max + 1, dtype, tokens);
        Tensor cos = table[0].index_select(0, pos).view(b, 1, 1, config.headDim());
        Tensor sin = table[1].index_select(0, pos).view(b, 1, 1, config.headDim());
        Tensor slotIdx = torch.arange(new Scalar(cache.capacity), new TensorOptions(ScalarType.Long).device(
                new org.bytedeco.pytorch.DeviceOptional(tokens.device())));
        Tensor blocked = slotIdx.view(1, cache.capacity).gt(pos.view(b, 1)).view(b, 1, 1, cache.capacity);
        cache.slots = pos;
        cache.additive = torch.zeros(shape(blocked), new TensorOptions(dtype).device(
                new org.bytedeco.pytorch.DeviceOptional(tokens.device()))).masked_fill(blocked, new Scalar(lowestFinite(dtype)));
        Masking masking = new Masking(false, cache.additive, attention == Attention.EAGER ? blocked : null);
        try {
            for (int i = 0; i < layers.length; i++) {
                x = scopedLayer(i, x, cos, sin, masking, b, 1, cache);
            }
        } finally {
            cache.slots = null;
            cache.additive = null;
        }
        return rmsNorm(x, finalNorm);
    }

    /**
     * Stores a layer's new keys and values in the cache; returns the keys and values to attend
     * to: the new ones in a prefill, the whole cache in a decode step.
     */
    private static Tensor[] cacheKv(KvCache cache, int layer, Tensor k, Tensor v) {
        if (cache.slots == null) {                            // prefill: slots 0..T-1
            long t = k.size(2);
            cache.keys[layer].narrow(2, 0, t).copy_(k);
            cache.values[layer].narrow(2, 0, t).copy_(v);
            return new Tensor[] {k, v};
        }
        long b = k.size(0), kv = k.size(1), d = k.size(3);
        Tensor idx = cache.slots.view(b, 1, 1, 1).expand(b, kv, 1, d);
        cache.keys[layer].scatter_(2, idx, k);
        cache.values[layer].scatter_(2, idx, v);
        return new Tensor[] {cache.keys[layer], cache.values[layer]};
    }

    /**
     * A forward with activation checkpointing: the decoder layers run without autograd and
     * only each layer's input is kept; {@link #hiddenStates()} and {@link #logits()} carry
     * autograd from the last layer's output (a leaf) through the final norm and head. After
     * the loss's backward, {@link #backward()} recomputes each layer with autograd, last to
     * first, back-propagating the gradient that reached its output into the parameters and
     * its input; then the embedding. The parameters' gradients are those of a plain forward
     * to fp32 rounding (the same operations; only the order in which a tied embedding's two
     * contributions are summed differs). LoRA dropout masks are replayed from the state of
     * the generator they are drawn from (the CPU's, or the model's GPU's) saved before each layer.
     */
    public final class Recomputed {
        private final Tensor ids;
        private final Tensor[] inputs;
        private final Tensor[] rngStates;  // the generator's state before each layer, when dropout draws
        private final org.bytedeco.pytorch.Generator rng;
        private final Tensor rngAfter;
        private final Tensor cos, sin;
        private final Masking masking;
        private final long b, t;
        private final Tensor top, hidden;
        private boolean done;

        private Recomputed(Tensor ids, Tensor attentionMask) {
            checkInputs(ids, attentionMask);
            this.ids = ids;
            this.b = ids.size(0);
            this.t = ids.size(1);
            LoraAdapters ad = adapters;
            boolean replay = ad != null && ad.enabled() && ad.config().dropout() > 0;
            // the generator dropout draws from: the CPU's, or the GPU's for a model on a GPU
            rng = embed.device().is_cpu() ? torch.getDefaultCPUGenerator()
                    : torch.globalContext().defaultGenerator(embed.device());
            inputs = new Tensor[layers.length];
            rngStates = replay ? new Tensor[layers.length] : null;
            Tensor x;
            try (NoGradGuard ng = new NoGradGuard()) {
                x = torch.embedding(embed, ids);
                ScalarType dtype = x.scalar_type().intern();
                Tensor[] cs = rope(t, dtype, ids);
                cos = cs[0];
                sin = cs[1];
                masking = masking(ids, attentionMask, b, t, dtype);
                if (replay) {
                    ad.setDropoutWithoutGrad(true);
                }
                try {
                    for (int i = 0; i < layers.length; i++) {
                        inputs[i] = x;
                        if (replay) {
                            rngStates[i] = rng.get_state();
                        }
                        x = scopedLayer(i, x, cos, sin, masking, b, t, null);
                    }
                } finally {
                    if (replay) {
                        ad.setDropoutWithoutGrad(false);
                    }
                }
                rngAfter = replay ? rng.get_state() : null;
            }
            top = x;
            top.set_requires_grad(true);
            hidden = rmsNorm(top, finalNorm);
        }

        /** The final hidden states (after model.norm), [B,T,H], with autograd to the last layer's output. */
        public Tensor hiddenStates() {
            return hidden;
        }

        /** The logits [B,T,V] of {@link #hiddenStates()}. */
        public Tensor logits() {
            return LlamaModel.this.logits(hidden);
        }

        /**
         * Back-propagates, layer by layer, the gradient that the loss's backward left on the last
         * layer's output into the parameters (accumulating into their grad, as a plain backward
         * does). Once; the loss's backward must have run.
         */
        public void backward() {
            if (done) {
                throw new IllegalStateException("Recomputed.backward() called twice");
            }
            done = true;
            Tensor g = top.grad();
            if (g == null || g.isNull() || !g.defined()) {
                throw new IllegalStateException("no gradient reached the decoder's output: run the loss's backward first");
            }
            // rows of the batch in groups of about rowGroupTokens tokens: a layer is
            // independent across rows, so recomputing and back-propagating one group at a time
            // gives the same gradients (summed over groups) with 1/groups of the transient
            // memory; one group when dropout masks are replayed (they were drawn for the batch)
            long group = rngStates != null ? b : Math.max(1, Math.min(b, rowGroupTokens / t));
            for (int i = layers.length - 1; i >= 0; i--) {
                Tensor xi = inputs[i];
                if (rngStates != null) {
                    rng.set_state(rngStates[i]);
                }
                Tensor up = g;
                int layer = i;
                g = Tensors.scoped(() -> {
                    Tensor gradIn = torch.empty_like(xi);
                    for (long r0 = 0; r0 < b; r0 += group) {
                        long n = Math.min(group, b - r0);
                        // the recomputed layer's activations are freed as soon as its backward has run
                        try (PointerScope s = new PointerScope()) {
                            Tensor xr = xi.narrow(0, r0, n).detach();
                            xr.set_requires_grad(true);
                            Tensor y = layer(layer, xr, cos, sin, masking.rows(r0, n, b), n, t, null);
                            y.backward(up.narrow(0, r0, n), new org.bytedeco.pytorch.BoolOptional(), false,
                                    new org.bytedeco.pytorch.TensorArrayRefOptional());
                            gradIn.narrow(0, r0, n).copy_(xr.grad());
                        }
                    }
                    return gradIn;
                });
                inputs[i] = null;
            }
            if (rngAfter != null) {
                rng.set_state(rngAfter);
            }
            if (embed.requires_grad()) {
                torch.embedding(embed, ids).backward(g, new org.bytedeco.pytorch.BoolOptional(), false,
                        new org.bytedeco.pytorch.TensorArrayRefOptional());
            }
        }
    }

    /** A forward with activation checkpointing ({@link Recomputed}); same arguments as {@link #forward}. */
    public Recomputed forwardRecomputed(Tensor inputIds, Tensor attentionMask) {
        return new Recomputed(inputIds, attentionMask);
    }

    /**
     * How a forward masks attention scores: causal only (no mask, or right padding, under
     * SDPA), an additive mask for SDPA, or a boolean "blocked" mask for the eager path.
     */
    private record Masking(boolean causalOnly, Tensor additive, Tensor blocked) {
        /** The masking of rows [r0, r0 + n) of a batch of {@code b} rows. */
        Masking rows(long r0, long n, long b) {
            return n == b ? this : new Masking(causalOnly, rowsOf(additive, r0, n, b), rowsOf(blocked, r0, n, b));
        }

        private static Tensor rowsOf(Tensor mask, long r0, long n, long b) {
            return mask == null || mask.size(0) != b ? mask : mask.narrow(0, r0, n);  // [1,...] is shared
        }
    }

    private Masking masking(Tensor ids, Tensor mask, long b, long t, ScalarType dtype) {
        if (attention == Attention.SDPA && (mask == null || rightPadded(mask, t))) {
            // right padding: a real query i sees keys 0..i, all real, so the causal mask alone
            // gives the same outputs at real positions and no T×T mask is built
            return new Masking(true, null, null);
        }
        Tensor blocked = blockedScores(ids, mask, b, t);
        if (attention == Attention.EAGER) {
            return new Masking(false, null, blocked);
        }
        Tensor additive = torch.zeros(shape(blocked), new TensorOptions(dtype).device(
                new org.bytedeco.pytorch.DeviceOptional(ids.device())));
        return new Masking(false, additive.masked_fill(blocked, new Scalar(lowestFinite(dtype))), null);
    }

    /** Whether every row of the mask is 1...1 0...0 (no token after a pad). */
    private static boolean rightPadded(Tensor mask, long t) {
        if (t < 2) {
            return true;
        }
        Tensor m = mask.ne(new Scalar(0)).to(ScalarType.Int);
        return !m.narrow(1, 1, t - 1).gt(m.narrow(1, 0, t - 1)).any().item_bool();
    }

    /** torch.finfo(dtype).min: a blocked score that stays finite after adding a real score. */
    static double lowestFinite(ScalarType dtype) {
        if (dtype == ScalarType.Double) {
            return -Double.MAX_VALUE;
        }
        if (dtype == ScalarType.BFloat16) {
            return -3.3895313892515355e38;
        }
        if (dtype == ScalarType.Half) {
            return -65504.0;
        }
        return -Float.MAX_VALUE;
    }

    /**
     * {@link #layer} in its own pointer scope ({@link Tensors#scoped}): its temporaries are
     * released on return, so a forward without autograd holds one layer's activations at a
     * time, and with autograd only what autograd saves. Without autograd (and with no KV cache
     * or LoRA dropout masks to draw) the layer runs on row groups of {@link #rowGroupTokens}.
     */
    private Tensor scopedLayer(int index, Tensor x, Tensor cos, Tensor sin, Masking masking, long b, long t,
                               KvCache cache) {
        long group = Math.max(1, rowGroupTokens / t);
        LoraAdapters ad = adapters;
        boolean drawsDropout = ad != null && ad.enabled() && ad.config().dropout() > 0 && ad.dropoutWithoutGrad();
        if (cache != null || group >= b || GradMode.is_enabled() || drawsDropout) {
            return Tensors.scoped(() -> layer(index, x, cos, sin, masking, b, t, cache));
        }
        // without autograd nothing is kept: rows in groups of ~rowGroupTokens tokens bound the
        // layer's temporaries whatever the batch (dropout masks, drawn for the whole batch, excluded)
        return Tensors.scoped(() -> {
            Tensor out = torch.empty_like(x);
            for (long r0 = 0; r0 < b; r0 += group) {
                long n = Math.min(group, b - r0);
                try (PointerScope s = new PointerScope()) {
                    out.narrow(0, r0, n).copy_(layer(index, x.narrow(0, r0, n), cos, sin, masking.rows(r0, n, b), n, t,
                            null));
                }
            }
            return out;
        });
    }

    /**
     * One decoder layer. Its attention block and its MLP each run in their own pointer scope,
     * as does the SwiGLU product (and each LoRA update, {@link LoraAdapters}): a Java handle
     * keeps its tensor alive until its scope closes, so without these scopes every temporary of
     * the layer (at 8 x 1024 tokens with LoRA, ~2.5 GB of casts, projections and products)
     * would be live at once at the layer's end; with them only what autograd saves outlives a
     * block.
     */
    private Tensor layer(int index, Tensor x, Tensor cos, Tensor sin, Masking masking, long b, long t,
                         KvCache cache) {
        Layer l = layers[index];
        Tensor h = Tensors.scoped(() -> x.add(attentionBlock(index, l, x, cos, sin, masking, b, t, cache)));
        return Tensors.scoped(() -> {
            Tensor m = rmsNorm(h, l.postNorm);
            Tensor gated = Tensors.scoped(() -> torch.silu(proj(index, 4, m, l.wg, l.bg))
                    .mul(proj(index, 5, m, l.wu, l.bu)));
            return h.add(proj(index, 6, gated, l.wd, l.bd));
        });
    }

    /** Self-attention of one layer: o_proj(attention(q, k, v)) of the normed input, before the residual. */
    private Tensor attentionBlock(int index, Layer l, Tensor x, Tensor cos, Tensor sin, Masking masking, long b,
                                  long t, KvCache cache) {
        int heads = config.numAttentionHeads(), kvHeads = config.numKeyValueHeads(), d = config.headDim();
        Tensor a = rmsNorm(x, l.inNorm);
        Tensor q = proj(index, 0, a, l.wq, l.bq).view(b, t, heads, d);
        Tensor k = proj(index, 1, a, l.wk, l.bk).view(b, t, kvHeads, d);
        if (l.qNorm != null) {  // Qwen3: RMSNorm over each head's vector, before RoPE
            q = rmsNorm(q, l.qNorm);
            k = rmsNorm(k, l.kNorm);
        }
        q = q.transpose(1, 2);                                                      // [B,nH,T,D]
        k = k.transpose(1, 2);                                                      // [B,nKV,T,D]
        Tensor v = proj(index, 2, a, l.wv, l.bv).view(b, t, kvHeads, d).transpose(1, 2);
        q = applyRope(q, cos, sin);
        k = applyRope(k, cos, sin);
        if (cache != null) {
            Tensor[] kv = cacheKv(cache, index, k, v);
            k = kv[0];
            v = kv[1];
        }
        int rep = heads / kvHeads;
        long keys = k.size(2);
        if (rep > 1) {  // Hugging Face repeat_kv: query head h reads kv head h / rep
            k = k.unsqueeze(2).expand(b, kvHeads, rep, keys, d).reshape(b, heads, keys, d);
            v = v.unsqueeze(2).expand(b, kvHeads, rep, keys, d).reshape(b, heads, keys, d);
        }
        double scale = 1.0 / Math.sqrt(d);
        Tensor out;
        if (masking.blocked() != null) {  // eager: fp32 softmax over explicitly masked scores
            ScalarType dtype = q.scalar_type().intern();
            Tensor scores = torch.matmul(q, k.transpose(2, 3)).mul(new Scalar(scale));
            scores = scores.to(ScalarType.Float).masked_fill(masking.blocked(), new Scalar(MASK_VALUE));
            out = torch.matmul(torch.softmax(scores, -1).to(dtype), v);
        } else {
            ScalarType dtype = q.scalar_type().intern();
            // on the CPU, LibTorch's fused attention in bf16/fp16 runs ~8x slower than in fp32
            // (measured: [8,14,1024,64] causal, 2 threads, 4.4 s against 0.55 s): the inputs are
            // widened exactly, the kernel accumulates in fp32 either way, the output is rounded once
            boolean widen = q.device().is_cpu() && (dtype == ScalarType.BFloat16 || dtype == ScalarType.Half);
            Tensor mask = masking.causalOnly() ? null : masking.additive();
            if (widen) {
                q = q.to(ScalarType.Float);
                k = k.to(ScalarType.Float);
                v = v.to(ScalarType.Float);
                mask = mask == null ? null : mask.to(ScalarType.Float);
            }
            out = torch.scaled_dot_product_attention(q, k, v, mask == null ? new TensorOptional() : new TensorOptional(mask),
                    0.0, masking.causalOnly(), new DoubleOptional(scale), false);
            if (widen) {
                out = out.to(dtype);
            }
        }
        Tensor attn = out.transpose(1, 2).reshape(b, t, (long) heads * d);
        return proj(index, 3, attn, l.wo, l.bo);
    }

    /** Projection {@code module} (index into {@link LoraConfig#ALL_MODULES}) of a layer, with its adapter if any. */
    private Tensor proj(int layer, int module, Tensor x, Tensor w, Tensor bias) {
        Tensor y = linear(x, w, bias);
        LoraAdapters ad = adapters;
        return ad == null ? y : ad.apply(layer, module, x, y);
    }

    /** The LoRA adapters attached to this model ({@link LoraAdapters#create}, {@link LoraAdapters#load}), or null. */
    public LoraAdapters adapters() {
        return adapters;
    }

    /** Attaches adapters (null detaches them); called by {@link LoraAdapters}. */
    void setAdapters(LoraAdapters ad) {
        this.adapters = ad;
    }

    private static Tensor linear(Tensor x, Tensor w, Tensor bias) {
        return bias == null ? torch.linear(x, w) : torch.linear(x, w, new TensorOptional(bias));
    }

    private Tensor rmsNorm(Tensor x, Tensor weight) {
        ScalarType dtype = x.scalar_type().intern();
        Tensor xf = x.to(ScalarType.Float);
        Tensor meanSquare = xf.pow(new Scalar(2.0)).mean(new long[] {-1}, true, new ScalarTypeOptional());
        Tensor normed = xf.mul(torch.rsqrt(meanSquare.add(new Scalar(config.rmsNormEps()))));
        return weight.mul(normed.to(dtype));
    }

    /** x * cos + rotate_half(x) * sin, rotate_half(x) = cat(-x[d/2:], x[:d/2]). */
    private Tensor applyRope(Tensor x, Tensor cos, Tensor sin) {
        long half = config.headDim() / 2;
        Tensor x1 = x.narrow(-1, 0, half);
        Tensor x2 = x.narrow(-1, half, half);
        Tensor rotated = torch.cat(new TensorVector(x2.neg(), x1), -1);
        return x.mul(cos).add(rotated.mul(sin));
    }

    /** cos and sin of positions × inv_freq, duplicated to head_dim: [T, D] each, on the ids' device. */
    private Tensor[] rope(long t, ScalarType dtype, Tensor like) {
        Tensor inv = torch.empty(new long[] {1, invFreq.length}, new TensorOptions(ScalarType.Double), null);
        new org.bytedeco.javacpp.DoublePointer(inv.data_ptr()).put(invFreq);
        Tensor pos = torch.arange(new Scalar(t), new TensorOptions(ScalarType.Double)).unsqueeze(1);
        Tensor freqs = pos.mul(inv);                                   // [T, D/2], float64
        Tensor emb = torch.cat(new TensorVector(freqs, freqs), -1);    // [T, D]
        Tensor cos = emb.cos().to(like.device(), dtype);
        Tensor sin = emb.sin().to(like.device(), dtype);
        return new Tensor[] {cos, sin};
    }

    /** True where query i may not see key j: j > i, or key j is padding. [1 or B, 1, T, T] bool. */
    private static Tensor blockedScores(Tensor ids, Tensor mask, long b, long t) {
        Tensor pos = torch.arange(new Scalar(t), ids.options());
        Tensor blocked = pos.unsqueeze(0).gt(pos.unsqueeze(1)).view(1, 1, t, t);
        if (mask == null) {
            return blocked;
        }
        return blocked.logical_or(mask.eq(new Scalar(0)).view(b, 1, 1, t));
    }

    private void checkInputs(Tensor ids, Tensor mask) {
        if (ids == null || ids.isNull() || !ids.defined()) {
            throw new IllegalArgumentException("inputIds is null or undefined (expected [B,T] int64)");
        }
        if (ids.dim() != 2 || ids.size(0) < 1 || ids.size(1) < 1) {
            throw new IllegalArgumentException("inputIds has shape " + Arrays.toString(shape(ids))
                    + " (expected [B,T] with B, T >= 1)");
        }
        ScalarType dt = ids.scalar_type().intern();
        if (dt != ScalarType.Long) {
            throw new IllegalArgumentException("inputIds has dtype " + dt + " (expected Long, int64)");
        }
        String dev = embed.device().str().getString();
        if (!ids.device().str().getString().equals(dev)) {
            throw new IllegalArgumentException("inputIds is on " + ids.device().str().getString()
                    + " but the parameters are on " + dev);
        }
        long min = ids.min().item_long(), max = ids.max().item_long();
        if (min < 0 || max >= config.vocabSize()) {
            throw new IllegalArgumentException("inputIds has token id " + (min < 0 ? min : max)
                    + " outside [0, " + config.vocabSize() + ")");
        }
        if (mask == null) {
            return;
        }
        if (mask.isNull() || !mask.defined()) {
            throw new IllegalArgumentException("attentionMask is undefined (expected [B,T] or null)");
        }
        if (!Arrays.equals(shape(mask), shape(ids))) {
            throw new IllegalArgumentException("attentionMask has shape " + Arrays.toString(shape(mask))
                    + " (expected " + Arrays.toString(shape(ids)) + ", the shape of inputIds)");
        }
        ScalarType mt = mask.scalar_type().intern();
        if (mt != ScalarType.Long && mt != ScalarType.Int && mt != ScalarType.Bool) {
            throw new IllegalArgumentException("attentionMask has dtype " + mt + " (expected Long, Int or Bool)");
        }
        if (!mask.device().str().getString().equals(dev)) {
            throw new IllegalArgumentException("attentionMask is on " + mask.device().str().getString()
                    + " but the parameters are on " + dev);
        }
    }

    static long[] shape(Tensor t) {
        long[] s = new long[(int) t.dim()];
        for (int i = 0; i < s.length; i++) {
            s[i] = t.size(i);
        }
        return s;
    }

    // ---------------------------------------------------------------- parameters

    /**
     * The parameters under their Hugging Face names, in Hugging Face order; the values are
     * the live parameter tensors (no lm_head.weight when tied). A new map on each call.
     */
    public LinkedHashMap<String, Tensor> stateDict() {
        return new LinkedHashMap<>(params);
    }

    /** The trainable parameters in {@link #stateDict()} order. */
    public List<Tensor> parameterList() {
        return new ArrayList<>(params.values());
    }

    /** Number of scalar parameters (the tied head counted once). */
    public long parameterCount() {
        long n = 0;
        for (Tensor t : params.values()) {
            n += t.numel();
        }
        return n;
    }

    /**
     * Copies weights into the parameters (converted to the parameter dtype and device, under
     * no-grad). Strict: every name of {@link #stateDict()} must be present with its exact
     * shape and a floating dtype, and no other name may be; otherwise an
     * {@link IllegalArgumentException} lists the missing, unexpected and mis-shaped tensors
     * and nothing is copied. One exception: with tied embeddings an {@code lm_head.weight}
     * equal to {@code model.embed_tokens.weight} (as some tied checkpoints carry) is
     * accepted and ignored; a different one is an error, since the tie would silently drop it.
     */
    public void loadStateDict(Map<String, Tensor> weights) {
        checkStateDict(weights);
        try (NoGradGuard guard = new NoGradGuard()) {
            for (Map.Entry<String, Tensor> kv : params.entrySet()) {
                kv.getValue().copy_(weights.get(kv.getKey()));  // returns a view of the receiver: not kept
            }
        }
    }

    /**
     * Copies one tensor into the parameter of that name, converting its dtype; a name that is
     * not a parameter is ignored. For streaming loads: call {@link #checkStateDict} on the
     * file's description first, which rejects unknown names and wrong shapes.
     */
    public void copyParameter(String name, Tensor value) {
        Tensor p = params.get(name);
        if (p != null) {
            try (NoGradGuard guard = new NoGradGuard()) {
                p.copy_(value);
            }
        }
    }

    /**
     * Throws IllegalArgumentException, listing every problem, unless {@code weights} has
     * exactly this model's parameter names with their shapes and floating dtypes (the tensors
     * may be meta tensors: only their metadata is read, except for a tied model's
     * lm_head.weight, which must equal the embedding).
     */
    public void checkStateDict(Map<String, Tensor> weights) {
        List<String> problems = new ArrayList<>();
        TreeSet<String> missing = new TreeSet<>(params.keySet());
        missing.removeAll(weights.keySet());
        TreeSet<String> extra = new TreeSet<>(weights.keySet());
        extra.removeAll(params.keySet());
        if (config.tieWordEmbeddings() && extra.remove("lm_head.weight")) {
            Tensor head = weights.get("lm_head.weight");
            Tensor emb = weights.get("model.embed_tokens.weight");
            if (emb == null || head == null || !head.defined()
                    || !Arrays.equals(shape(head), shape(emb))
                    || !torch.equal(head.to(emb.device(), emb.scalar_type().intern()), emb)) {
                problems.add("lm_head.weight is present and differs from model.embed_tokens.weight"
                        + " but tie_word_embeddings is true");
            }
        }
        if (!missing.isEmpty()) {
            problems.add("missing " + missing);
        }
        if (!extra.isEmpty()) {
            problems.add("unexpected " + extra);
        }
        for (Map.Entry<String, Tensor> kv : params.entrySet()) {
            Tensor src = weights.get(kv.getKey());
            if (src == null) {
                continue;
            }
            if (src.isNull() || !src.defined()) {
                problems.add(kv.getKey() + " is undefined");
                continue;
            }
            long[] want = shape(kv.getValue()), got = shape(src);
            if (!Arrays.equals(want, got)) {
                problems.add(kv.getKey() + " has shape " + Arrays.toString(got) + ", expected " + Arrays.toString(want));
            } else if (!src.is_floating_point()) {
                problems.add(kv.getKey() + " has dtype " + src.scalar_type().intern() + ", expected a floating type");
            }
        }
        if (!problems.isEmpty()) {
            throw new IllegalArgumentException("state dict does not match " + config + ": "
                    + String.join("; ", problems));
        }
    }
}
