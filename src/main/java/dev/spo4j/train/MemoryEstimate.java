package dev.spo4j.train;

import dev.spo4j.model.LlamaModel;
import dev.spo4j.model.LoraConfig;
import dev.spo4j.model.ModelConfig;
import dev.spo4j.model.Precision;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;

/**
 * The expected peak memory of a training step, by part, from the model's shapes and the run's
 * options ({@code train --dry-run}); nothing is loaded. The accounting:
 * <pre>
 *   P parameters, p = bytes of the precision (4 fp32, 2 bf16), A adapter parameters (fp32)
 *   weights        P · p
 *   master copy    P · 4            full fine-tuning below fp32 only (mixed precision)
 *   gradients      P · 4 (fp32) | P · (2 + 4) (bf16: working + fp32 master) | A · 4 (LoRA)
 *   optimiser      8 · trained      AdamW's two fp32 moments
 *   activations    tokens N = 2 · pairs · length, per layer and token, elements kept for the
 *                  backward: 8h + 4q + 4kv + 4i in p bytes plus 3h fp32 (RMSNorm in fp32), and
 *                  with LoRA below fp32 the fp32 copies of the adapted projections' inputs
 *                  (one for q/k/v, one for gate/up, o's, down's) and r per adapter; with checkpointing
 *                  L · h · p per token (the layer inputs) plus, for one row group of about 2048
 *                  tokens (whole rows; the whole batch when LoRA dropout masks are replayed),
 *                  one layer's activations and their gradients (twice the per-token elements)
 *   LM head        materialised: the [N, V] logits in p bytes (the fused loss kernel writes their
 *                  gradient over them in place; measured on the CPU, see the README); fused
 *                  (LmHeadLogProbs, the default): two chunk budgets (the operator holds one:
 *                  a chunk or tile of logits whose gradient overwrites it, with bf16 products
 *                  inside the budget; the second is kept for GEMM workspaces, allocator
 *                  slack and the single pass's pair-order copies of h and dL/dh, [N, h] each:
 *                  case (e) of the memory benchmark once peaked 1.12x above this estimate,
 *                  and its runs since peak at 0.69-0.86x of it), lse and log-probs [N] fp32,
 *                  dL/dh [N, h] fp32, and for a trained head below fp32 its fp32 dW [V, h]
 *   runtime        CPU: 1.1 GiB for the process around the model (JVM heap with the tokenizer,
 *                  LibTorch's libraries, allocator slack), measured: the CLI with a 4-layer model
 *                  at 32 tokens peaks 1.14 GiB above its weights; CUDA: 0.5 GiB of device memory
 *                  for the CUDA context, cuBLAS workspaces and allocator slack (not yet measured)
 * </pre>
 * h = hidden, q = heads · head_dim, kv = kv heads · head_dim, i = intermediate size, L layers,
 * V vocabulary. Attention is SDPA's fused kernel (no T×T scores kept). The reference log-probs
 * are computed once before training (a no-grad pass, smaller than a step) and not counted.
 */
public final class MemoryEstimate {
    private static final double GIB = 1024.0 * 1024 * 1024;
    /** The process around the model on the CPU (resident memory): JVM, tokenizer, LibTorch, allocator slack. */
    static final long RUNTIME_CPU = (long) (1.1 * GIB);
    /** Device memory beside the tensors on CUDA: context, cuBLAS workspaces, caching-allocator slack. */
    static final long RUNTIME_CUDA = (long) (0.5 * GIB);

    private final LinkedHashMap<String, Long> parts = new LinkedHashMap<>();

    private MemoryEstimate() {}

    /**
     * The estimate for one micro-batch of {@code pairs} pairs of {@code length} tokens.
     *
     * @param lora null for full fine-tuning
     */
    public static MemoryEstimate of(ModelConfig c, Precision precision, LoraConfig lora, boolean checkpointing,
                                    int pairs, int length) {
        return of(c, precision, lora, checkpointing, pairs, length, dev.spo4j.loss.LmHead.MATERIALISED, 0);
    }

    /**
     * As {@link #of(ModelConfig, Precision, LoraConfig, boolean, int, int)} with the LM head
     * chosen ({@code --lm-head}); {@code chunkBytes}: the fused head's chunk budget.
     */
    public static MemoryEstimate of(ModelConfig c, Precision precision, LoraConfig lora, boolean checkpointing,
                                    int pairs, int length, dev.spo4j.loss.LmHead head, long chunkBytes) {
        return of(c, precision, lora, checkpointing, pairs, length, head, chunkBytes, false);
    }

    /**
     * As {@link #of(ModelConfig, Precision, LoraConfig, boolean, int, int, dev.spo4j.loss.LmHead, long)}
     * for the CPU (resident memory of the process) or, with {@code cuda}, one GPU's memory.
     */
    public static MemoryEstimate of(ModelConfig c, Precision precision, LoraConfig lora, boolean checkpointing,
                                    int pairs, int length, dev.spo4j.loss.LmHead head, long chunkBytes, boolean cuda) {
        MemoryEstimate e = new MemoryEstimate();
        long p = precision.bytes();
        long params = parameters(c);
        long h = c.hiddenSize(), q = c.qDim(), kv = c.kvDim(), i = c.intermediateSize(), layers = c.numHiddenLayers();
        long adapters = lora == null ? 0 : adapterParameters(c, lora);
        long trained = lora == null ? params : adapters;
        e.parts.put("weights", params * p);
        e.parts.put("master copy", lora == null && precision != Precision.FP32 ? params * 4 : 0);
        e.parts.put("adapters", adapters * 4);
        long grads = lora != null ? adapters * 4 : precision == Precision.FP32 ? params * 4 : params * (p + 4);
        e.parts.put("gradients", grads);
        e.parts.put("optimiser", trained * 8);
        long tokens = 2L * pairs * length;
        long perLayerToken = (8 * h + 4 * q + 4 * kv + 4 * i) * p + 3 * h * 4;
        if (lora != null) {
            java.util.Set<String> inputs = new java.util.HashSet<>();  // q/k/v and gate/up share their input's fp32 copy
            for (String m : lora.targetModules()) {
                String input = switch (m) {
                    case "q_proj", "k_proj", "v_proj" -> "attention input";
                    case "gate_proj", "up_proj" -> "mlp input";
                    default -> m;
                };
                long in = m.equals("o_proj") ? q : m.equals("down_proj") ? i : h;
                if (inputs.add(input) && precision != Precision.FP32) {
                    perLayerToken += in * 4;
                }
                perLayerToken += (long) lora.r() * 4;
            }
        }
        long act;
        if (checkpointing) {
            // the layer inputs, plus one row group's recomputed layer and its gradients
            // (LlamaModel.setRowGroupTokens; the whole batch when LoRA dropout masks are replayed)
            boolean replay = lora != null && lora.dropout() > 0;
            long rows = replay ? 2L * pairs : Math.min(2L * pairs, Math.max(1, LlamaModel.DEFAULT_ROW_GROUP_TOKENS / length));
            act = tokens * layers * h * p + 2 * rows * length * perLayerToken;
        } else {
            act = tokens * layers * perLayerToken;
        }
        e.parts.put("activations", act);
        if (head == dev.spo4j.loss.LmHead.FUSED) {
            long chunk = Math.min(chunkBytes, tokens * c.vocabSize() * 4);
            long dw = lora == null && precision != Precision.FP32 ? c.vocabSize() * h * 4 : 0;
            e.parts.put("LM head", 2 * chunk + 2 * tokens * 4 + tokens * h * 4 + dw);
        } else {
            e.parts.put("LM head", tokens * c.vocabSize() * p);
        }
        e.parts.put("runtime", cuda ? RUNTIME_CUDA : RUNTIME_CPU);
        return e;
    }

    /** Scalars of the model (the tied head counted once). */
    static long parameters(ModelConfig c) {
        long h = c.hiddenSize(), q = c.qDim(), kv = c.kvDim(), i = c.intermediateSize(), v = c.vocabSize();
        long layer = h * q + 2 * h * kv + q * h + 3 * h * i + 2 * h;
        if (c.qkvBias()) {
            layer += q + 2 * kv;
        }
        if (c.outputBias()) {
            layer += h;
        }
        if (c.mlpBias()) {
            layer += 2 * i + h;
        }
        return v * h * (c.tieWordEmbeddings() ? 1 : 2) + c.numHiddenLayers() * layer + h;
    }

    /** Scalars of the adapters: r · (in + out) per adapted projection and layer. */
    static long adapterParameters(ModelConfig c, LoraConfig lora) {
        long h = c.hiddenSize(), q = c.qDim(), kv = c.kvDim(), i = c.intermediateSize();
        long perLayer = 0;
        for (String m : lora.targetModules()) {
            perLayer += switch (m) {
                case "q_proj", "o_proj" -> h + q;
                case "k_proj", "v_proj" -> h + kv;
                default -> h + i;
            };
        }
        return perLayer * lora.r() * c.numHiddenLayers();
    }

    /** The parts in bytes, in print order. */
    public Map<String, Long> parts() {
        return new LinkedHashMap<>(parts);
    }

    /** The sum of the parts in bytes. */
    public long total() {
        return parts.values().stream().mapToLong(Long::longValue).sum();
    }

    /** The table {@code train --dry-run} prints: each part and the total in GiB. */
    public String table() {
        StringBuilder sb = new StringBuilder();
        for (Map.Entry<String, Long> kv : parts.entrySet()) {
            sb.append(String.format(Locale.ROOT, "  %-12s %9.2f GiB%n", kv.getKey(), kv.getValue() / GIB));
        }
        sb.append(String.format(Locale.ROOT, "  %-12s %9.2f GiB%n", "total", total() / GIB));
        return sb.toString();
    }
}
