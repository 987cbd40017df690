package dev.spo4j.experiment;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.spo4j.data.PreferencePair;
import dev.spo4j.synthetic.SyntheticPreferences;
import java.util.Random;
import org.junit.jupiter.api.Test;

/** The labeller: Bradley–Terry probabilities on the gold reward, scores kept exact. */
class BradleyTerryTest {
    static final String PROMPT = "describe the dog .";
    static final String GOOD = "the dog is good .";       // gold 2.0 (+1 sentiment, +1 topic)
    static final String BAD = "the cat is very bad .";    // gold -2.0

    @Test
    void goldRewardsOfTheTwoCompletions() {
        assertEquals(2.0, SyntheticPreferences.goldReward(PROMPT, GOOD));
        assertEquals(-2.0, SyntheticPreferences.goldReward(PROMPT, BAD));
        // length penalty: 15 words, 3 over 12 -> -0.6
        assertEquals(-0.6, SyntheticPreferences.goldReward(PROMPT, "the cat is big , the cat is big , the cat is big ."));
    }

    @Test
    void probabilityIsTheLogisticOfTheRewardDifference() {
        assertEquals(0.5, BradleyTerry.preferenceProbability(1.3, 1.3));
        assertEquals(1 / (1 + Math.exp(-4)), BradleyTerry.preferenceProbability(2, -2), 1e-15);
        assertEquals(1.0, BradleyTerry.preferenceProbability(1000, -1000) + BradleyTerry.preferenceProbability(-1000, 1000),
                1e-15);
        assertTrue(Double.isFinite(BradleyTerry.preferenceProbability(-800, 800)));
    }

    @Test
    void labelsFollowTheProbabilityAndKeepTheGoldScores() {
        Random rnd = new Random(11);
        int n = 20000, goodChosen = 0;
        for (int i = 0; i < n; i++) {
            PreferencePair p = i % 2 == 0 ? BradleyTerry.label(PROMPT, GOOD, BAD, rnd, "t")
                    : BradleyTerry.label(PROMPT, BAD, GOOD, rnd, "t");  // order must not matter
            assertEquals(SyntheticPreferences.goldReward(PROMPT, p.chosen()), p.scoreChosen());
            assertEquals(SyntheticPreferences.goldReward(PROMPT, p.rejected()), p.scoreRejected());
            goodChosen += p.chosen().equals(GOOD) ? 1 : 0;
        }
        double expected = 1 / (1 + Math.exp(-4));  // 0.982
        double se = Math.sqrt(expected * (1 - expected) / n);
        assertEquals(expected, goodChosen / (double) n, 4 * se);
        // equal rewards: a fair coin
        Random r2 = new Random(3);
        int first = 0;
        for (int i = 0; i < n; i++) {
            first += BradleyTerry.label(PROMPT, "the dog is big .", "the dog is red .", r2, "t").chosen()
                    .equals("the dog is big .") ? 1 : 0;
        }
        assertEquals(0.5, first / (double) n, 4 * Math.sqrt(0.25 / n));
    }

    @Test
    void tIntervalUsesStudentT() {
        double[] ci = ExperimentSummary.tInterval(new double[] {1, 2, 3});
        assertEquals(2.0, ci[0], 1e-12);
        assertEquals(2.0 - 4.303 / Math.sqrt(3), ci[1], 1e-9);  // sd = 1, df = 2
        assertEquals(2.0 + 4.303 / Math.sqrt(3), ci[2], 1e-9);
        double[] one = ExperimentSummary.tInterval(new double[] {0.7});
        assertEquals(0.7, one[1]);
    }
}
