package dev.spo4j.synthetic;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.spo4j.data.PreferencePair;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import org.junit.jupiter.api.Test;

/** The synthetic task: gold reward by hand, Bradley–Terry labels against their analytic rate, determinism. */
class SyntheticPreferencesTest {

    @Test
    void goldRewardByHand() {
        String dog = "describe the dog .";
        assertEquals(0.0, SyntheticPreferences.goldReward(dog, "the cat is big ."));
        assertEquals(1.0, SyntheticPreferences.goldReward(dog, "the cat is good ."));
        assertEquals(2.0, SyntheticPreferences.goldReward(dog, "the dog is good ."), "+1 topic");
        assertEquals(-3.0, SyntheticPreferences.goldReward(dog, "the cat is very bad and sad ."), "very doubles");
        assertEquals(3.0, SyntheticPreferences.goldReward(dog, "very good dog"), "very at the start, topic");
        assertEquals(1.0, SyntheticPreferences.goldReward(dog, "a dog sees the dog"), "topic counts once");
        assertEquals(0.0, SyntheticPreferences.goldReward(dog, "very very"));
        assertEquals(2.0, SyntheticPreferences.goldReward("Tell me about a DOG .", "THE Dog is Warm"),
                "case-insensitive");
        assertEquals(-1.0, SyntheticPreferences.goldReward("write about the happy river .", "zebra cold !"),
                "unknown words weigh nothing; the prompt's adjective does not count");
        assertEquals(0.0, SyntheticPreferences.goldReward("hello", "the dog"), "a prompt without a noun has no topic");
        // 15 words: 3 over the free length of 12
        String long15 = "the cat is calm , the cat is calm , the cat is calm .";
        assertEquals(15, long15.split(" ").length);
        assertEquals(3 - 0.2 * 3, SyntheticPreferences.goldReward(dog, long15), 1e-12);
        assertEquals("river", SyntheticPreferences.topic("write about the happy river ."));
        assertNull(SyntheticPreferences.topic("hello there"));
    }

    @Test
    void vocabularyIsSmallAndCoversEveryGeneratedWord() {
        List<String> words = SyntheticPreferences.words();
        assertEquals(55, words.size());
        assertEquals(words.size(), new HashSet<>(words).size(), "no duplicates");
        assertEquals(59, SyntheticPreferences.vocabSize());
        Set<String> vocab = new HashSet<>(words);
        int longestPrompt = 0;
        int longestCompletion = 0;
        for (PreferencePair p : SyntheticPreferences.generate(2000, 11)) {
            for (String text : new String[] {p.prompt(), p.chosen(), p.rejected()}) {
                for (String w : text.split(" ")) {
                    assertTrue(vocab.contains(w), w + " in " + text);
                }
            }
            longestPrompt = Math.max(longestPrompt, p.prompt().split(" ").length);
            longestCompletion = Math.max(longestCompletion,
                    Math.max(p.chosen().split(" ").length, p.rejected().split(" ").length));
            assertNotEquals(p.chosen(), p.rejected());
            assertTrue(p.hasScores());
            assertEquals(SyntheticPreferences.goldReward(p.prompt(), p.chosen()), p.scoreChosen());
            assertEquals(SyntheticPreferences.goldReward(p.prompt(), p.rejected()), p.scoreRejected());
        }
        // short sequences keep the default run cheap: BOS + prompt + completion + EOS <= 1 + 6 + 27 + 1
        // (the longest completion: 3 clauses of 8 words, 2 commas, a full stop)
        assertTrue(longestPrompt <= 6, "prompt words " + longestPrompt);
        assertTrue(longestCompletion <= 27, "completion words " + longestCompletion);
    }

    @Test
    void sameSeedSamePairsOtherSeedOtherPairs() {
        assertEquals(SyntheticPreferences.generate(200, 5), SyntheticPreferences.generate(200, 5));
        assertNotEquals(SyntheticPreferences.generate(200, 5), SyntheticPreferences.generate(200, 6));
        assertEquals(SyntheticPreferences.generate(50, 5), SyntheticPreferences.generate(200, 5).subList(0, 50),
                "a prefix does not depend on how many pairs follow");
        assertEquals("synthetic:1", SyntheticPreferences.generate(1, 5).get(0).source());
        assertEquals(0, SyntheticPreferences.generate(0, 5).size());
    }

    /**
     * Given the two gold rewards of a pair, the better completion is chosen with probability
     * sigma(|r_a - r_b|). The scores of each pair say |r_a - r_b|, so the expected number of
     * pairs whose chosen completion has the higher reward is the sum of those probabilities;
     * the observed count must lie within 4 standard deviations of it (a binomial sum).
     */
    @Test
    void bradleyTerryLabelsMatchTheirAnalyticRate() {
        List<PreferencePair> pairs = SyntheticPreferences.generate(20000, 42);
        double expected = 0;
        double variance = 0;
        int observed = 0;
        int decided = 0;
        int bigGap = 0;
        int bigGapRight = 0;
        for (PreferencePair p : pairs) {
            double gap = p.scoreChosen() - p.scoreRejected();
            if (gap == 0) {
                continue;  // a tie: either label is "right"
            }
            double q = SyntheticPreferences.sigmoid(Math.abs(gap));
            decided++;
            expected += q;
            variance += q * (1 - q);
            if (gap > 0) {
                observed++;
            }
            if (Math.abs(gap) >= 5) {
                bigGap++;
                bigGapRight += gap > 0 ? 1 : 0;
            }
        }
        double fraction = observed / (double) decided;
        assertTrue(decided > 15000, "decided pairs " + decided);
        assertTrue(fraction > 0.65 && fraction < 0.95, "fraction with the better completion chosen " + fraction);
        double sd = Math.sqrt(variance);
        assertTrue(Math.abs(observed - expected) < 4 * sd,
                "observed " + observed + " vs expected " + expected + " (sd " + sd + ")");
        // zero-noise limit: with gaps of 5 or more (sigma(5) = 0.993) almost every label is right
        assertTrue(bigGap > 300, "pairs with a gap of at least 5: " + bigGap);
        assertTrue(bigGapRight >= 0.98 * bigGap, bigGapRight + " of " + bigGap);
    }
}
