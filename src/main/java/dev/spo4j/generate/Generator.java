package dev.spo4j.generate;

import dev.spo4j.data.TextTokenizer;
import dev.spo4j.kernels.NonFiniteLogitsException;
import dev.spo4j.model.LlamaModel;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Device;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * Batched autoregressive sampling from a {@link LlamaModel}: temperature, top-k, top-p
 * (nucleus), a seed, EOS and a limit on new tokens.
 *
 * <h2>How a step runs</h2>
 * Rows are kept RIGHT-padded: row b holds its prompt and the tokens generated so far at
 * positions 0..len_b-1, so positions match an unpadded forward (the model numbers positions
 * 0..T-1 whatever the mask) and, under the causal mask, a real position never sees the
 * padding after it. Each step runs one forward over [B, max len_b] of the rows still
 * running and reads the logits at position len_b - 1 of each. There is no KV cache: the
 * whole prefix is recomputed every token, which costs O(T^2) forwards' worth of work per
 * sequence; that is cheap for the tiny models and short completions this is used for
 * (the experiment's sequences are under 60 tokens) and keeps the model free of state.
 *
 * <h2>Sampling</h2>
 * The last-position logits are copied to the CPU as fp32 and sampled in Java, one row after
 * another, from one {@link Random} seeded with {@link GenerationConfig#seed()}: the result
 * depends only on the seed, the model and the prompts (on the CPU with a fixed thread
 * count, as the logits do). With temperature 0 the token is the arg-max (lowest id on a tie);
 * otherwise logits / temperature are softmaxed, restricted to the k most probable tokens
 * (topK &gt; 0), then to the smallest set of most probable tokens whose mass reaches topP
 * (topP &lt; 1), renormalised and sampled by inversion. A row stops after emitting EOS (the
 * EOS is not part of the returned completion) or after maxNewTokens tokens.
 */
public final class Generator {
    private Generator() {}

    /** One sampled completion: its token ids (without EOS) and whether it ended with EOS. */
    public record Sample(long[] tokens, boolean endedWithEos) {}

    /**
     * Samples one completion per prompt.
     *
     * @param prompts token ids of each prompt (BOS included when the model expects it), non-empty
     * @param eosId   the EOS id, or null for none (then every row runs maxNewTokens)
     */
    public static List<Sample> generate(LlamaModel model, List<long[]> prompts, Long eosId, GenerationConfig cfg) {
        return generate(model, prompts, cfg, eosId == null ? new long[0] : new long[] {eosId});
    }

    /**
     * Samples one completion per prompt; a row stops on any of {@code eosIds} (every EOS id of
     * the model, e.g. Llama-3.1-Instruct's end of text, end of message and end of turn; see
     * {@link TextTokenizer#eosIds()}); empty: every row runs maxNewTokens.
     */
    public static List<Sample> generate(LlamaModel model, List<long[]> prompts, GenerationConfig cfg, long... eosIds) {
        int n = prompts.size();
        long vocab = model.config().vocabSize();
        int maxLen = 0;
        for (int i = 0; i < n; i++) {
            long[] p = prompts.get(i);
            if (p.length == 0) {
                throw new IllegalArgumentException("prompt " + i + " has no tokens (add BOS, or give it text)");
            }
            for (long id : p) {
                if (id < 0 || id >= vocab) {
                    throw new IllegalArgumentException("prompt " + i + " has token id " + id + " outside [0, " + vocab + ")");
                }
            }
            maxLen = Math.max(maxLen, p.length);
        }
        requireFitsContext(model, prompts, cfg);
        if (n == 0) {
            return List.of();
        }
        Random rnd = new Random(cfg.seed());
        long[][] seqs = new long[n][];
        int[] lens = new int[n];
        boolean[] done = new boolean[n], eos = new boolean[n];
        for (int i = 0; i < n; i++) {
            seqs[i] = Arrays.copyOf(prompts.get(i), prompts.get(i).length + cfg.maxNewTokens());
            lens[i] = prompts.get(i).length;
        }
        Device device = model.parameterList().get(0).device();
        float[] row = new float[(int) vocab];
        float[] last = new float[(int) (n * vocab)];
        try (NoGradGuard ng = new NoGradGuard(); PointerScope outer = new PointerScope()) {
            LlamaModel.KvCache cache = model.newCache(n, maxLen + Math.max(1, cfg.maxNewTokens()));
            // prefill: the right-padded prompts, logits at each row's last token
            try (PointerScope scope = new PointerScope()) {
                long[] ids = new long[n * maxLen], mask = new long[n * maxLen];
                long[] pos = new long[n];
                for (int i = 0; i < n; i++) {
                    System.arraycopy(seqs[i], 0, ids, i * maxLen, lens[i]);
                    Arrays.fill(mask, i * maxLen, i * maxLen + lens[i], 1L);
                    pos[i] = (long) i * maxLen + lens[i] - 1;
                }
                Tensor idsT = longs(ids, n, maxLen, device);
                Tensor maskT = longs(mask, n, maxLen, device);
                Tensor hidden = model.prefill(idsT, maskT, cache).view(-1, model.config().hiddenSize());
                Tensor picked = hidden.index_select(0, longs(pos, n, -1, device));
                model.logits(picked).to(ScalarType.Float).cpu().contiguous().data_ptr_float().get(last);
            }
            for (int step = 0; step < cfg.maxNewTokens(); step++) {
                long[] next = new long[n];
                long[] positions = new long[n];
                boolean anyLive = false;
                for (int i = 0; i < n; i++) {   // rows in order, as the recomputing path samples them
                    if (done[i]) {
                        positions[i] = Math.min(lens[i], cache.capacity() - 1);
                        continue;
                    }
                    System.arraycopy(last, (int) (i * vocab), row, 0, (int) vocab);
                    requireFinite(row, i, lens[i] - prompts.get(i).length);
                    int tok = pick(row, cfg, rnd);
                    if (isEos(tok, eosIds)) {
                        done[i] = true;
                        eos[i] = true;
                        positions[i] = Math.min(lens[i], cache.capacity() - 1);
                        continue;
                    }
                    positions[i] = lens[i];
                    next[i] = tok;
                    seqs[i][lens[i]++] = tok;
                    if (lens[i] - prompts.get(i).length == cfg.maxNewTokens()) {
                        done[i] = true;
                    } else {
                        anyLive = true;
                    }
                }
                if (!anyLive) {
                    break;
                }
                try (PointerScope scope = new PointerScope()) {
                    Tensor hidden = model.decode(longs(next, n, 1, device), positions, cache).view(n, -1);
                    model.logits(hidden).to(ScalarType.Float).cpu().contiguous().data_ptr_float().get(last);
                }
            }
        }
        List<Sample> out = new ArrayList<>(n);
        for (int i = 0; i < n; i++) {
            out.add(new Sample(Arrays.copyOfRange(seqs[i], prompts.get(i).length, lens[i]), eos[i]));
        }
        return out;
    }

    private static Tensor longs(long[] values, long rows, long cols, Device device) {
        long[] shape = cols < 0 ? new long[] {rows} : new long[] {rows, cols};
        Tensor t = torch.empty(shape, new TensorOptions(ScalarType.Long), null);
        t.data_ptr_long().put(values);
        return device.is_cpu() ? t : t.to(device, ScalarType.Long);
    }

    /**
     * The reference path without a KV cache: every token runs a forward over the whole prefix
     * (O(T^2) work per sequence). Same sampling order and results as {@link #generate} up to
     * floating-point rounding; kept to test the cache and to measure it.
     */
    public static List<Sample> generateRecomputing(LlamaModel model, List<long[]> prompts, GenerationConfig cfg,
                                                   long... eosIds) {
        int n = prompts.size();
        for (int i = 0; i < n; i++) {
            if (prompts.get(i).length == 0) {
                throw new IllegalArgumentException("prompt " + i + " has no tokens (add BOS, or give it text)");
            }
        }
        long vocab = model.config().vocabSize();
        Random rnd = new Random(cfg.seed());
        long[][] seqs = new long[n][];
        int[] lens = new int[n];
        boolean[] done = new boolean[n], eos = new boolean[n];
        for (int i = 0; i < n; i++) {
            long[] p = prompts.get(i);
            for (long id : p) {
                if (id < 0 || id >= vocab) {
                    throw new IllegalArgumentException("prompt " + i + " has token id " + id + " outside [0, " + vocab + ")");
                }
            }
            seqs[i] = Arrays.copyOf(p, p.length + cfg.maxNewTokens());
            lens[i] = p.length;
        }
        requireFitsContext(model, prompts, cfg);
        Device device = model.parameterList().get(0).device();
        float[] row = new float[(int) vocab];
        try (NoGradGuard ng = new NoGradGuard()) {
            for (int step = 0; step < cfg.maxNewTokens(); step++) {
                List<Integer> live = new ArrayList<>();
                int t = 0;
                for (int i = 0; i < n; i++) {
                    if (!done[i]) {
                        live.add(i);
                        t = Math.max(t, lens[i]);
                    }
                }
                if (live.isEmpty()) {
                    break;
                }
                float[] last = new float[(int) (live.size() * vocab)];
                try (PointerScope scope = new PointerScope()) {
                    long[] ids = new long[live.size() * t];
                    for (int r = 0; r < live.size(); r++) {
                        int i = live.get(r);
                        System.arraycopy(seqs[i], 0, ids, r * t, lens[i]);  // pad id 0 after: never seen
                    }
                    Tensor idsT = torch.empty(new long[] {live.size(), t}, new TensorOptions(ScalarType.Long), null);
                    idsT.data_ptr_long().put(ids);
                    Tensor idx = torch.empty(new long[] {live.size()}, new TensorOptions(ScalarType.Long), null);
                    long[] pos = new long[live.size()];
                    for (int r = 0; r < pos.length; r++) {
                        pos[r] = r * (long) t + lens[live.get(r)] - 1;
                    }
                    idx.data_ptr_long().put(pos);
                    Tensor on = device.is_cpu() ? idsT : idsT.to(device, ScalarType.Long);
                    Tensor hidden = model.hiddenStates(on, null).view(-1, model.config().hiddenSize());
                    Tensor picked = hidden.index_select(0, device.is_cpu() ? idx : idx.to(device, ScalarType.Long));
                    Tensor logits = model.logits(picked).to(ScalarType.Float).cpu().contiguous();
                    logits.data_ptr_float().get(last);
                }
                for (int r = 0; r < live.size(); r++) {
                    int i = live.get(r);
                    System.arraycopy(last, (int) (r * vocab), row, 0, (int) vocab);
                    requireFinite(row, i, lens[i] - prompts.get(i).length);
                    int tok = pick(row, cfg, rnd);
                    if (isEos(tok, eosIds)) {
                        done[i] = true;
                        eos[i] = true;
                    } else {
                        seqs[i][lens[i]++] = tok;
                        if (lens[i] - prompts.get(i).length == cfg.maxNewTokens()) {
                            done[i] = true;
                        }
                    }
                }
            }
        }
        List<Sample> out = new ArrayList<>(n);
        for (int i = 0; i < n; i++) {
            out.add(new Sample(Arrays.copyOfRange(seqs[i], prompts.get(i).length, lens[i]), eos[i]));
        }
        return out;
    }

    private static boolean isEos(long tok, long[] eosIds) {
        for (long e : eosIds) {
            if (tok == e) {
                return true;
            }
        }
        return false;
    }

    /**
     * Prompt token ids of a chat: the user message rendered by the model's chat template with
     * {@code add_generation_prompt} (the template writes BOS when the model needs it).
     */
    public static long[] chatPromptIds(TextTokenizer tok, String userMessage) {
        if (tok.chatTemplate() == null) {
            throw new IllegalArgumentException(tok.directory() + " has no chat template (chat_template in "
                    + "tokenizer_config.json, or chat_template.jinja): generate without --chat");
        }
        java.util.Map<String, Object> m = new java.util.LinkedHashMap<>();
        m.put("role", "user");
        m.put("content", userMessage);
        return tok.encode(tok.chatTemplate().render(List.of(m), true));
    }

    /** Prompt token ids by the collator's rule: [BOS if add_bos_token] + encode(prompt). */
    public static long[] promptIds(TextTokenizer tok, String prompt) {
        long[] ids = tok.encode(prompt);
        if (tok.addBos()) {
            long[] out = new long[ids.length + 1];
            out[0] = tok.bosId();
            System.arraycopy(ids, 0, out, 1, ids.length);
            return out;
        }
        return ids;
    }

    /** Text in, text out: samples one completion per prompt and decodes it (special tokens skipped). */
    public static List<String> generateText(LlamaModel model, TextTokenizer tok, List<String> prompts,
                                            GenerationConfig cfg) {
        List<long[]> ids = new ArrayList<>();
        for (String p : prompts) {
            ids.add(promptIds(tok, p));
        }
        List<String> out = new ArrayList<>();
        for (Sample s : generate(model, ids, cfg, tok.eosIds())) {
            out.add(tok.decode(s.tokens()));
        }
        return out;
    }

    /**
     * Every prompt plus maxNewTokens must fit the model's context (max_position_embeddings):
     * positions beyond it were never trained (and RoPE scaling is defined up to it).
     */
    static void requireFitsContext(LlamaModel model, List<long[]> prompts, GenerationConfig cfg) {
        int context = model.config().maxPositionEmbeddings();
        for (int i = 0; i < prompts.size(); i++) {
            long need = (long) prompts.get(i).length + cfg.maxNewTokens();
            if (need > context) {
                throw new IllegalArgumentException("prompt " + i + " has " + prompts.get(i).length + " tokens; with "
                        + cfg.maxNewTokens() + " new tokens that is " + need + " positions, more than the model's "
                        + "max_position_embeddings " + context + " (shorten the prompt or lower --max-new-tokens)");
            }
        }
    }

    /**
     * A row of logits must be finite or -inf (a masked token): a NaN or +inf logit (NaN weights,
     * an overflow) is an error, not a token sampled from garbage (arg-max of NaNs is token 0, and
     * softmax of +inf is NaN).
     */
    static void requireFinite(float[] logits, int prompt, int newToken) {
        boolean any = false;
        for (int j = 0; j < logits.length; j++) {
            float z = logits[j];
            if (Float.isNaN(z) || z == Float.POSITIVE_INFINITY) {
                throw new NonFiniteLogitsException("generation: prompt " + prompt + ", new token " + newToken
                        + ": logit " + j + " is " + z + " (non-finite logits: are the model's weights finite?)");
            }
            any |= z != Float.NEGATIVE_INFINITY;
        }
        if (!any) {
            throw new NonFiniteLogitsException("generation: prompt " + prompt + ", new token " + newToken
                    + ": every logit is -inf (no token can be sampled)");
        }
    }

    /** The next token for one row of logits (modified in place). */
    static int pick(float[] logits, GenerationConfig cfg, Random rnd) {
        int v = logits.length;
        if (cfg.temperature() == 0) {
            int best = 0;
            for (int j = 1; j < v; j++) {
                if (logits[j] > logits[best]) {
                    best = j;
                }
            }
            return best;
        }
        double max = Double.NEGATIVE_INFINITY;
        for (float z : logits) {
            max = Math.max(max, z);
        }
        double[] p = new double[v];
        double sum = 0;
        for (int j = 0; j < v; j++) {
            p[j] = Math.exp((logits[j] - max) / cfg.temperature());
            sum += p[j];
        }
        Integer[] order = null;
        boolean restrict = (cfg.topK() > 0 && cfg.topK() < v) || cfg.topP() < 1;
        if (restrict) {
            order = new Integer[v];
            for (int j = 0; j < v; j++) {
                order[j] = j;
            }
            final double[] pp = p;
            Arrays.sort(order, (a, b) -> pp[b] != pp[a] ? Double.compare(pp[b], pp[a]) : Integer.compare(a, b));
            int keep = cfg.topK() > 0 ? Math.min(cfg.topK(), v) : v;
            if (cfg.topP() < 1) {
                double mass = 0;
                int k = 0;
                while (k < keep) {
                    mass += p[order[k]] / sum;
                    k++;
                    if (mass >= cfg.topP()) {
                        break;
                    }
                }
                keep = k;
            }
            double kept = 0;
            for (int k = 0; k < keep; k++) {
                kept += p[order[k]];
            }
            double u = rnd.nextDouble() * kept;
            for (int k = 0; k < keep; k++) {
                u -= p[order[k]];
                if (u < 0) {
                    return order[k];
                }
            }
            return order[keep - 1];
        }
        double u = rnd.nextDouble() * sum;
        int lastPositive = 0;
        for (int j = 0; j < v; j++) {
            if (p[j] > 0) {
                lastPositive = j;
            }
            u -= p[j];
            if (u < 0) {
                return j;
            }
        }
        return lastPositive;
    }
}
