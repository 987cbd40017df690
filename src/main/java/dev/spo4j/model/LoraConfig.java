package dev.spo4j.model;

import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;

/**
 * Settings of low-rank adapters (LoRA, Hu et al. 2021) on the decoder's linear layers: each
 * targeted projection {@code y = x W^T (+b)} becomes {@code y = x W^T (+b) + (alpha/r) ·
 * dropout(x) A^T B^T} with A [r, in] and B [out, r] trainable and W frozen. Names follow
 * Hugging Face PEFT's {@code LoraConfig} ({@code r}, {@code lora_alpha}, {@code lora_dropout},
 * {@code target_modules}).
 *
 * @param r             the rank, &ge; 1
 * @param alpha         lora_alpha; the update is scaled by alpha / r
 * @param dropout       dropout probability on the adapter's input in [0, 1), applied only
 *                      while autograd is on (training), as PEFT does in train mode
 * @param targetModules the projections adapted, as PEFT names them (q_proj, ..., down_proj),
 *                      in {@link #ALL_MODULES} order, no repeats
 */
public record LoraConfig(int r, double alpha, double dropout, List<String> targetModules) {
    /** The decoder's linear layers, in layer order: attention q, k, v, o, then the MLP's gate, up, down. */
    public static final List<String> ALL_MODULES = List.of(
            "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj");

    /** Checks the values; throws IllegalArgumentException naming the bad one. */
    public LoraConfig {
        if (r < 1) {
            throw new IllegalArgumentException("LoRA rank r = " + r + " (expected >= 1)");
        }
        if (!(Double.isFinite(alpha) && alpha > 0)) {
            throw new IllegalArgumentException("LoRA alpha = " + alpha + " (expected a finite value > 0)");
        }
        if (!(dropout >= 0 && dropout < 1)) {
            throw new IllegalArgumentException("LoRA dropout = " + dropout + " (expected a value in [0, 1))");
        }
        targetModules = normalise(targetModules);
    }

    /** alpha / r, the factor of the adapters' product. */
    public double scale() {
        return alpha / r;
    }

    /** Whether a module (a PEFT name such as q_proj) is adapted. */
    public boolean targets(String module) {
        return targetModules.contains(module);
    }

    /**
     * Module names as given on the command line ({@code q}, {@code q_proj}, {@code gate}, ...;
     * case-insensitive, {@code all-linear} for all of them) to PEFT's names in layer order.
     * A name that matches no linear layer of the decoder is an error naming it.
     */
    public static List<String> normalise(List<String> names) {
        if (names == null || names.isEmpty()) {
            throw new IllegalArgumentException("LoRA target modules: none given (expected some of "
                    + String.join(", ", ALL_MODULES) + ", or all-linear)");
        }
        LinkedHashSet<String> wanted = new LinkedHashSet<>();
        for (String raw : names) {
            String n = raw == null ? "" : raw.trim().toLowerCase(Locale.ROOT);
            if (n.equals("all-linear") || n.equals("all_linear")) {
                wanted.addAll(ALL_MODULES);
                continue;
            }
            String full = n.endsWith("_proj") ? n : n + "_proj";
            if (!ALL_MODULES.contains(full)) {
                throw new IllegalArgumentException("LoRA target module '" + raw + "' matches no linear layer of the "
                        + "decoder (expected q, k, v, o, gate, up, down, their _proj names, or all-linear)");
            }
            wanted.add(full);
        }
        List<String> out = new ArrayList<>();
        for (String m : ALL_MODULES) {
            if (wanted.contains(m)) {
                out.add(m);
            }
        }
        return List.copyOf(out);
    }
}
