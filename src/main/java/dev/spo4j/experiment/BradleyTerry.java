package dev.spo4j.experiment;

import dev.spo4j.data.PreferencePair;
import dev.spo4j.synthetic.SyntheticPreferences;
import java.util.Random;

/**
 * Noisy preference labels from a known reward, as a Bradley–Terry annotator gives them:
 * completion a is preferred to b with probability sigma(r(x,a) - r(x,b)), r the gold reward
 * of {@link SyntheticPreferences#goldReward}. The pair keeps both gold rewards as
 * {@code score_chosen}/{@code score_rejected}, so the label may disagree with the scores
 * (that is the noise) while the scores stay exact.
 */
public final class BradleyTerry {
    private BradleyTerry() {}

    /** P(a preferred to b) = sigma(ra - rb), computed stably. */
    public static double preferenceProbability(double ra, double rb) {
        double d = ra - rb;
        return d >= 0 ? 1 / (1 + Math.exp(-d)) : Math.exp(d) / (1 + Math.exp(d));
    }

    /** One labelled pair from two completions of {@code prompt}; draws one uniform from {@code rnd}. */
    public static PreferencePair label(String prompt, String a, String b, Random rnd, String source) {
        double ra = SyntheticPreferences.goldReward(prompt, a);
        double rb = SyntheticPreferences.goldReward(prompt, b);
        boolean aWins = rnd.nextDouble() < preferenceProbability(ra, rb);
        return new PreferencePair(prompt, aWins ? a : b, aWins ? b : a, aWins ? ra : rb, aWins ? rb : ra,
                null, null, source);
    }
}
