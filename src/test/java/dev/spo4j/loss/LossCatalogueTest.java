package dev.spo4j.loss;

import static dev.spo4j.kernels.Tensors.floats;
import static dev.spo4j.kernels.Tensors.toDoubles;
import static dev.spo4j.testing.AllClose.assertAllClose;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.spo4j.train.TrainConfig;
import java.util.List;
import java.util.Random;
import org.bytedeco.pytorch.Tensor;
import org.junit.jupiter.api.Test;

/**
 * The losses added from TRL's catalogue, SimPO and CPO: values by hand at two points, the
 * batch-level ones (aot's sorts, bco-pair's running mean and its checkpointed state), weighted
 * sums of losses (TRL's loss_weights), and the errors for bad settings. Formulas:
 * src/site/markdown/LOSSES.md.
 */
class LossCatalogueTest {
    static PreferenceLossConfig cfg(LossType t) {
        PreferenceLossConfig c = PreferenceLossConfig.of(t).withBeta(0.5).withLengthNormalised(false);
        return t.usesLabelSmoothing() ? c.withLabelSmoothing(0.1) : c;
    }

    /** One pair with dc and dr (reference 0). */
    static PreferenceLoss.Result one(PreferenceLoss loss, float dc, float dr) {
        return loss.compute(floats(dc), floats(dr), floats(0f), floats(0f));
    }

    static double at(LossType t, float dc, float dr) {
        return one(new PreferenceLoss(cfg(t)), dc, dr).loss();
    }

    @Test
    void handComputedValuesAtTwoPoints() {
        // beta 0.5, eps 0.1 where read; point A: dc = 2, dr = -1 (h = 3, x = 1.5); point B: dc = -4, dr = 1
        // robust: ((1-e) sp(-x) - e sp(x)) / (1 - 2e)
        assertEquals(0.013913277982752388, at(LossType.ROBUST, 2, -1), 1e-7);
        assertEquals(2.8913897342925496, at(LossType.ROBUST, -4, 1), 1e-6);
        // exo-pair: sig(x)(logsig(x) - log 0.9) + sig(-x)(logsig(-x) - log 0.1)
        assertEquals(0.031138796406299074, at(LossType.EXO_PAIR, 2, -1), 1e-7);
        assertEquals(1.8673724511137153, at(LossType.EXO_PAIR, -4, 1), 1e-6);
        // nca-pair: sp(-1) + sp(1)/2 + sp(-0.5)/2 and sp(2) + sp(-2)/2 + sp(0.5)/2
        assertEquals(1.2069310233673876, at(LossType.NCA_PAIR, 2, -1), 1e-6);
        assertEquals(2.677430508654512, at(LossType.NCA_PAIR, -4, 1), 1e-6);
        // sppo-hard: (dc - 1)^2 + (dr + 1)^2 = 1 + 0 and 25 + 4; gradient 2 (dc - 1), 2 (dr + 1)
        assertEquals(1.0, at(LossType.SPPO_HARD, 2, -1), 1e-6);
        assertEquals(29.0, at(LossType.SPPO_HARD, -4, 1), 1e-5);
        PreferenceLoss.Result s = one(new PreferenceLoss(cfg(LossType.SPPO_HARD)), -4, 1);
        assertEquals(-10.0, toDoubles(s.gradChosen())[0], 1e-5);
        assertEquals(4.0, toDoubles(s.gradRejected())[0], 1e-5);
        // apo-zero: 1 - sig(1) + sig(-0.5); apo-down: sig(1) + 1 - sig(1.5)
        assertEquals(0.6464820901681405, at(LossType.APO_ZERO, 2, -1), 1e-7);
        assertEquals(1.5032564091797371, at(LossType.APO_ZERO, -4, 1), 1e-6);
        assertEquals(0.9134841024363611, at(LossType.APO_DOWN, 2, -1), 1e-7);
        assertEquals(1.0433447420008741, at(LossType.APO_DOWN, -4, 1), 1e-6);
        // discopop (tau 0.05): sp(-x)(1 - w) + e^-x w, w = sig(x / 0.05)
        assertEquals(0.22313016014842776, at(LossType.DISCOPOP, 2, -1), 1e-7);
        assertEquals(2.5788897342925496, at(LossType.DISCOPOP, -4, 1), 1e-6);
        // simpo (gamma 0.5): dpo at x - 0.5; cpo: dpo at x
        assertEquals(0.4132616875182229, at(LossType.SIMPO, 2, -1), 1e-7);
        assertEquals(2.7485873515737422, at(LossType.SIMPO, -4, 1), 1e-6);
        assertEquals(0.35141327798275246, at(LossType.CPO, 2, -1), 1e-7);
        assertEquals(2.3288897342925496, at(LossType.CPO, -4, 1), 1e-6);
    }

    @Test
    void bcoPairShiftsByTheRunningMeanRewardAcrossBatches() {
        PreferenceLoss loss = new PreferenceLoss(cfg(LossType.BCO_PAIR));
        // batch 1: mean reward 0.5 (2 - 1) / 2 = 0.25 = delta; sp(-(1 - 0.25)) + sp(-0.5 - 0.25)
        assertEquals(0.7737420122297999, one(loss, 2, -1).loss(), 1e-6);
        // batch 2: its mean reward -0.75; the running mean (0.25 - 0.75) / 2 = -0.25 = delta
        assertEquals(3.047095156552987, one(loss, -4, 1).loss(), 1e-6);
        assertArrayEquals(new double[] {-0.25, 2}, loss.bcoState(), 1e-12);
        // a restored state continues exactly as the original
        PreferenceLoss restored = new PreferenceLoss(cfg(LossType.BCO_PAIR));
        restored.restoreBcoState(-0.25, 2);
        assertEquals(one(loss, 1, 3).loss(), one(restored, 1, 3).loss(), 0.0);
        assertArrayEquals(loss.bcoState(), restored.bcoState(), 0.0);
        // evaluation reads the state without changing it
        double[] before = loss.bcoState();
        loss.compute(PreferenceLoss.Inputs.of(floats(5f), floats(0f), floats(0f), floats(0f)), false);
        assertArrayEquals(before, loss.bcoState(), 0.0);
        assertThrows(IllegalArgumentException.class, () -> restored.restoreBcoState(Double.NaN, 1));
        assertThrows(IllegalArgumentException.class, () -> restored.restoreBcoState(0, -1));
    }

    @Test
    void aotLossesSortAcrossTheBatch() {
        // aot: policy log-ratios [3, -5] sort to [-5, 3]; reference [-2, 0] sort to [-2, 0]:
        // beta (sorted differences) = [-1.5, 1.5], not the pairs' own [2.5, -2.5]
        PreferenceLoss aot = new PreferenceLoss(cfg(LossType.AOT));
        PreferenceLoss.Result r = aot.compute(floats(2f, -4f), floats(-1f, 1f), floats(0f, 0f), floats(2f, 0f));
        assertEquals(0.9514132779827524, r.loss(), 1e-6);
        // aot-pair: dc [2, -4] -> [-4, 2]; dr [-3, 1] -> [-3, 1]: beta (differences) = [-0.5, 0.5]
        PreferenceLoss aotPair = new PreferenceLoss(cfg(LossType.AOT_PAIR));
        PreferenceLoss.Result q = aotPair.compute(floats(2f, -4f), floats(-1f, 1f), floats(0f, 0f), floats(2f, 0f));
        assertEquals(0.7240769841801067, q.loss(), 1e-6);
        // the metrics stay per pair: accuracy 1/2 (pair 1: dc 2 > dr -3; pair 2: -4 < 1)
        assertEquals(0.5, q.metrics().rewardsAccuracies(), 0.0);
        assertEquals(0.5 * (2 - 4) / 2.0, q.metrics().rewardsChosen(), 1e-7);
        // the gradient of sorted position k goes to the pair that sorted there: pair 2 (dc -4) holds
        // aot-pair's position 0 (x = -0.5), whose dpo gradient is larger in size than position 1's
        double[] gc = toDoubles(q.gradChosen());
        assertTrue(Math.abs(gc[1]) > Math.abs(gc[0]), "pair 2 holds the sorted position with the larger gradient");
    }

    @Test
    void weightedSumsAreTheSumsOfTheirTerms() {
        Random rnd = new Random(5);
        float[] pc = new float[9], pr = new float[9], rc = new float[9], rr = new float[9];
        for (int i = 0; i < 9; i++) {
            pc[i] = (float) (-40 + 6 * rnd.nextGaussian());
            pr[i] = (float) (-44 + 6 * rnd.nextGaussian());
            rc[i] = (float) (pc[i] + 3 * rnd.nextGaussian());
            rr[i] = (float) (pr[i] + 3 * rnd.nextGaussian());
        }
        List<PreferenceLossConfig.WeightedLoss> mix = PreferenceLossConfig.parseWeights(
                List.of("sigmoid=1", "bco_pair=0.5", "aot=2", "apo-zero=-0.25"));
        PreferenceLossConfig c = cfg(LossType.DPO).withMix(mix);
        assertEquals(LossType.DPO, c.type());
        PreferenceLoss.Result sum = new PreferenceLoss(c).compute(floats(pc), floats(pr), floats(rc), floats(rr));
        double loss = 0;
        double[] gc = new double[9], gr = new double[9];
        for (PreferenceLossConfig.WeightedLoss w : mix) {
            PreferenceLoss.Result r = new PreferenceLoss(c.single(w.type()))
                    .compute(floats(pc), floats(pr), floats(rc), floats(rr));
            loss += w.weight() * r.loss();
            double[] a = toDoubles(r.gradChosen()), b = toDoubles(r.gradRejected());
            for (int i = 0; i < 9; i++) {
                gc[i] += w.weight() * a[i];
                gr[i] += w.weight() * b[i];
            }
        }
        assertEquals(loss, sum.loss(), 1e-6 * Math.abs(loss));
        assertAllClose("mix grad chosen", gc, toDoubles(sum.gradChosen()), 1e-9, 1e-6);
        assertAllClose("mix grad rejected", gr, toDoubles(sum.gradRejected()), 1e-9, 1e-6);
        assertEquals(sum.loss(), sum.metrics().loss(), 0.0);
        // the composite twin agrees
        PreferenceLoss twin = new PreferenceLoss(c);
        Tensor mean = twin.compositeMean(PreferenceLoss.Inputs.of(floats(pc), floats(pr), floats(rc), floats(rr)));
        assertEquals(sum.loss(), mean.item_double(), 1e-5 * Math.abs(loss));
        // from the command line's form
        TrainConfig tc = new TrainConfig();
        tc.lossWeights = List.of("dpo=1", "nca_pair=0.5");
        assertEquals(LossType.DPO, tc.lossConfig().type());
        assertEquals(2, tc.lossConfig().terms().size());
        assertEquals(0.5, tc.lossConfig().terms().get(1).weight(), 0.0);
        assertEquals("dpo+nca-pair", tc.lossLabel());
    }

    @Test
    void referenceFreeLossesNeedNoReference() {
        assertTrue(!PreferenceLossConfig.of(LossType.SIMPO).needsReference());
        assertTrue(!PreferenceLossConfig.of(LossType.CPO).needsReference());
        assertTrue(PreferenceLossConfig.of(LossType.SIMPO).lengthNormalised());
        for (LossType t : LossType.values()) {
            assertEquals(t != LossType.SIMPO && t != LossType.CPO, t.needsReference(), t.id());
        }
        // the reference log-probs are not read: given, or null, the same loss and gradients
        for (LossType t : List.of(LossType.SIMPO, LossType.CPO)) {
            PreferenceLoss loss = new PreferenceLoss(cfg(t));
            PreferenceLoss.Result with = loss.compute(floats(-2f, -1f), floats(-3f, -0.5f), floats(-9f, 4f),
                    floats(1f, -7f));
            PreferenceLoss.Result none = loss.compute(PreferenceLoss.Inputs.of(floats(-2f, -1f), floats(-3f, -0.5f),
                    null, null));
            assertEquals(none.loss(), with.loss(), 0.0, t.id());
            assertArrayEquals(toDoubles(none.gradChosen()), toDoubles(with.gradChosen()), 0.0, t.id());
            // rewards are beta times the policy's log-probs (TRL's CPOTrainer)
            assertEquals(0.5 * (-2 - 1) / 2.0, none.metrics().rewardsChosen(), 1e-7, t.id());
        }
    }

    @Test
    void badSettingsAreRejectedWithTheirValue() {
        PreferenceLossConfig c = PreferenceLossConfig.of(LossType.DISCOPOP);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> c.withDiscopopTau(0));
        assertTrue(e.getMessage().contains("discopop tau = 0.0"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> c.withDiscopopTau(Double.POSITIVE_INFINITY));
        e = assertThrows(IllegalArgumentException.class, () -> c.withSimpoGamma(Double.NaN));
        assertTrue(e.getMessage().contains("simpo gamma"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> PreferenceLossConfig.of(LossType.ROBUST).withLabelSmoothing(0.5));
        for (String bad : List.of("dpo", "dpo=", "=1", "dpo=x", "kto=1", "dpo=NaN")) {
            assertThrows(IllegalArgumentException.class, () -> PreferenceLossConfig.parseWeights(List.of(bad)), bad);
        }
        e = assertThrows(IllegalArgumentException.class, () -> PreferenceLossConfig.parseWeights(List.of("sft=0.5")));
        assertTrue(e.getMessage().contains("--sft-weight 0.5"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class,
                () -> c.withMix(PreferenceLossConfig.parseWeights(List.of("dpo=1", "sigmoid=2"))));
        assertTrue(e.getMessage().contains("twice"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class,
                () -> c.withMix(PreferenceLossConfig.parseWeights(List.of("dpo=1", "simpo=1"))));
        assertTrue(e.getMessage().contains("reference"), e.getMessage());
        assertEquals(LossType.DPO, LossType.parse("sigmoid"));
        assertEquals(LossType.EXO_PAIR, LossType.parse("exo_pair"));
        assertEquals(LossType.APO_DOWN, LossType.parse("APO_DOWN"));
    }
}
