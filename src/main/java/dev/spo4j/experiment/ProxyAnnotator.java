package dev.spo4j.experiment;

import dev.spo4j.data.PreferencePair;
import dev.spo4j.synthetic.SyntheticPreferences;
import java.util.Random;

/**
 * The annotator the preference arms learn from: a proxy of the gold reward with an
 * exploitable term, in the spirit of Gao et al.'s reward over-optimisation setup:
 * <pre>
 *   proxy(x, y) = gold(x, y) + lengthBonus * words(y) + noise,   noise ~ N(0, noiseSd^2)
 * </pre>
 * drawn once per sample. The gold reward penalises completions longer than
 * {@link SyntheticPreferences#FREE_LENGTH} words by 0.2 a word, so a bonus above 0.2 a word
 * rewards length that the gold reward punishes: a policy that follows the proxy far enough
 * loses gold reward (it is hacked). Every arm is evaluated on the gold reward.
 *
 * @param lengthBonus the proxy's reward per word of the completion
 * @param noiseSd     the standard deviation of the proxy's per-sample noise
 */
public record ProxyAnnotator(double lengthBonus, double noiseSd) {

    /** Throws IllegalArgumentException on a negative or non-finite parameter. */
    public ProxyAnnotator {
        if (!(lengthBonus >= 0 && lengthBonus < Double.POSITIVE_INFINITY) || !(noiseSd >= 0 && noiseSd < Double.POSITIVE_INFINITY)) {
            throw new IllegalArgumentException("proxy annotator: lengthBonus " + lengthBonus + " and noiseSd " + noiseSd
                    + " must be finite and >= 0");
        }
    }

    /** Whitespace-separated words of a completion (punctuation is a word in the synthetic language). */
    public static int words(String completion) {
        String t = completion.strip();
        return t.isEmpty() ? 0 : t.split("\\s+").length;
    }

    /** The noiseless part of the proxy: gold + lengthBonus * words. */
    public double systematic(String prompt, String completion) {
        return SyntheticPreferences.goldReward(prompt, completion) + lengthBonus * words(completion);
    }

    /** One proxy score: the systematic part plus one normal draw from {@code rnd}. */
    public double score(String prompt, String completion, Random rnd) {
        return systematic(prompt, completion) + noiseSd * rnd.nextGaussian();
    }

    /** The pair of completions a, b with proxy scores sa, sb, chosen = the higher score (a on a tie). */
    public static PreferencePair byScore(String prompt, String a, String b, double sa, double sb, String source) {
        boolean aWins = sa >= sb;
        return new PreferencePair(prompt, aWins ? a : b, aWins ? b : a, aWins ? sa : sb, aWins ? sb : sa, null, null,
                source);
    }

    /**
     * The labels-only version of a pair: its order flipped with probability {@code noise} (one
     * uniform drawn from {@code rnd} whatever the noise, so files with different noise levels
     * pair up line by line), scores removed.
     */
    public static PreferencePair labelOnly(PreferencePair p, double noise, Random rnd) {
        boolean flip = rnd.nextDouble() < noise;
        return flip ? new PreferencePair(p.prompt(), p.rejected(), p.chosen(), null, null, null, null, p.source())
                : new PreferencePair(p.prompt(), p.chosen(), p.rejected(), null, null, null, null, p.source());
    }
}
