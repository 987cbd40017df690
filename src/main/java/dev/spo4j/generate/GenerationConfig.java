package dev.spo4j.generate;

/**
 * Sampling settings for {@link Generator}.
 *
 * @param temperature  0 = greedy (arg-max), else logits / temperature before the softmax
 * @param topK         keep the k most probable tokens; 0 = no limit
 * @param topP         keep the smallest most-probable set with mass &gt;= topP; 1 = no limit
 * @param maxNewTokens tokens to generate at most per sequence (EOS counts as one)
 * @param seed         the sampler's seed
 */
public record GenerationConfig(double temperature, int topK, double topP, int maxNewTokens, long seed) {
    /** Checks the ranges above; throws IllegalArgumentException naming the setting. */
    public GenerationConfig {
        if (!(temperature >= 0) || !Double.isFinite(temperature)) {
            throw new IllegalArgumentException("temperature = " + temperature + " (expected a finite value >= 0)");
        }
        if (topK < 0) {
            throw new IllegalArgumentException("top-k = " + topK + " (expected >= 0; 0 = no limit)");
        }
        if (!(topP > 0 && topP <= 1)) {
            throw new IllegalArgumentException("top-p = " + topP + " (expected 0 < top-p <= 1)");
        }
        if (maxNewTokens < 1) {
            throw new IllegalArgumentException("max new tokens = " + maxNewTokens + " (expected >= 1)");
        }
    }

    /** Plain sampling at temperature 1, no top-k/top-p. */
    public static GenerationConfig sampling(int maxNewTokens, long seed) {
        return new GenerationConfig(1.0, 0, 1.0, maxNewTokens, seed);
    }

    /**
     * Greedy decoding (temperature 0: the arg-max) of at most {@code maxNewTokens} tokens; seed 0,
     * which plays no part.
     */
    public static GenerationConfig greedy(int maxNewTokens) {
        return new GenerationConfig(0.0, 0, 1.0, maxNewTokens, 0);
    }
}
