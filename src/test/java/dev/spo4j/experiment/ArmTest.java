package dev.spo4j.experiment;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.spo4j.data.PreferencePair;
import dev.spo4j.loss.LossType;
import dev.spo4j.synthetic.SyntheticPreferences;
import java.util.Random;
import org.junit.jupiter.api.Test;

/** Arm names, the proxy annotator and label noise. */
class ArmTest {
    @Test
    void armsParse() {
        assertEquals(new Arm("spo", LossType.SPO, Arm.Source.PROXY, 0, false), Arm.parse("spo"));
        assertEquals(new Arm("dpo-n30", LossType.DPO, Arm.Source.LABELS, 0.3, false), Arm.parse("dpo-n30"));
        assertEquals(new Arm("cdpo", LossType.DPO, Arm.Source.LABELS, 0, true), Arm.parse("cdpo"));
        assertEquals("pairs-gold.jsonl", Arm.parse("spo-gold").pairsFile());
        assertEquals("pairs-labels-n30.jsonl", Arm.parse("spo-m0-n30").pairsFile());
        assertEquals(LossType.SOFT_DPO, Arm.parse("soft-dpo").loss());
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Arm.parse("spo-n30"));
        assertTrue(e.getMessage().contains("'spo-n30'"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> Arm.parse("kto"));
    }

    @Test
    void proxyRewardsLengthThatGoldPunishes() {
        ProxyAnnotator proxy = new ProxyAnnotator(0.25, 0);
        String prompt = "describe the cat .";
        String shortY = "the cat is good .";
        String longY = "the cat is good , the dog is big , the tree is old , the book is new .";
        double gs = SyntheticPreferences.goldReward(prompt, shortY), gl = SyntheticPreferences.goldReward(prompt, longY);
        assertEquals(5, ProxyAnnotator.words(shortY));
        assertEquals(gs + 0.25 * 5, proxy.systematic(prompt, shortY), 1e-12);
        // 20 words: gold pays -0.2 per word past 12, the proxy +0.25 per word
        assertTrue(gl < gs, "gold prefers the short answer");
        assertTrue(proxy.systematic(prompt, longY) > proxy.systematic(prompt, shortY), "the proxy prefers the long one");
        assertThrows(IllegalArgumentException.class, () -> new ProxyAnnotator(-1, 0));
        assertThrows(IllegalArgumentException.class, () -> new ProxyAnnotator(0, Double.NaN));
    }

    @Test
    void labelNoiseFlipsTheStatedFractionAndDropsScores() {
        Random rnd = new Random(5);
        int flipped = 0, n = 20000;
        PreferencePair p = ProxyAnnotator.byScore("describe the cat .", "a", "b", 1.0, 2.0, "x");
        assertEquals("b", p.chosen());
        assertEquals(2.0, p.scoreChosen());
        for (int i = 0; i < n; i++) {
            PreferencePair q = ProxyAnnotator.labelOnly(p, 0.3, rnd);
            assertNull(q.scoreChosen());
            flipped += q.chosen().equals("a") ? 1 : 0;
        }
        assertEquals(0.3, (double) flipped / n, 0.01);
        assertEquals("b", ProxyAnnotator.labelOnly(p, 0, rnd).chosen());
    }
}
