package dev.spo4j.loss;

import static dev.spo4j.kernels.Tensors.floats;
import static dev.spo4j.kernels.Tensors.toDoubles;
import static dev.spo4j.testing.AllClose.assertAllClose;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Random;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * The preference-loss kernel (native/cpu/preference_loss.cpp) against hand-computed values,
 * the float64 oracle with central finite differences, and the same losses written in
 * LibTorch ops with autograd.
 */
class PreferenceLossTest {
    static final int B = 37;

    /** Log-probs of plausible size (sums over ~50 tokens) and spread. */
    static float[] logps(Random rnd, double mean) {
        float[] v = new float[B];
        for (int i = 0; i < B; i++) {
            v[i] = (float) (mean + 8 * rnd.nextGaussian());
        }
        return v;
    }

    static double[] d(float[] v) {
        double[] o = new double[v.length];
        for (int i = 0; i < v.length; i++) {
            o[i] = v[i];
        }
        return o;
    }

    static PreferenceLossConfig config(LossType t) {
        PreferenceLossConfig c = PreferenceLossConfig.of(t).withBeta(0.25).withMargin(0.7).withLengthNormalised(false)
                .withDiscopopTau(0.8).withSimpoGamma(0.4);
        return t.usesLabelSmoothing() ? c.withLabelSmoothing(0.1) : c;
    }

    @ParameterizedTest
    @EnumSource(LossType.class)
    void gradientsMatchFloat64FiniteDifferences(LossType type) {
        Random rnd = new Random(type.ordinal() + 11);
        float[] pc = logps(rnd, -60), pr = logps(rnd, -65), rc = logps(rnd, -61), rr = logps(rnd, -64);
        float[] m = new float[B];
        for (int i = 0; i < B; i++) {
            m[i] = (float) rnd.nextGaussian();
        }
        PreferenceLossConfig c = config(type);
        PreferenceLoss.Result r = new PreferenceLoss(c).compute(
                PreferenceLoss.Inputs.of(floats(pc), floats(pr), floats(rc), floats(rr)).withMargins(floats(m)));

        double[] margins = type.usesMargin() ? d(m) : null;
        double[] dpc = d(pc), dpr = d(pr), drc = d(rc), drr = d(rr);
        double delta = PreferenceLossReference.firstBcoDelta(c, dpc, dpr, drc, drr);  // held fixed (detached)
        double ref = PreferenceLossReference.meanLoss(c, dpc, dpr, drc, drr, margins, null, null, delta);
        assertEquals(ref, r.loss(), 1e-6 * Math.max(1, Math.abs(ref)), "mean loss");
        double[] perPair = PreferenceLossReference.pairLosses(c, dpc, dpr, drc, drr, margins, delta);
        assertAllClose("per-pair loss", perPair, toDoubles(r.perPairLoss()), 1e-6, 1e-6);

        double step = 1e-4;
        // Central differences of the MEAN loss, every pair re-evaluated at each perturbation (so a
        // pair coupling bug would show); the per-pair differences are summed before the mean, so
        // pairs with huge losses (spo-exp's inverted pairs reach 1e7) add exact zeros instead of
        // cancellation noise.
        double[] fdChosen = new double[B], fdRejected = new double[B];
        for (int i = 0; i < B; i++) {
            double keep = dpc[i];
            dpc[i] = keep + step;
            double[] up = PreferenceLossReference.pairLosses(c, dpc, dpr, drc, drr, margins, delta);
            dpc[i] = keep - step;
            double[] down = PreferenceLossReference.pairLosses(c, dpc, dpr, drc, drr, margins, delta);
            dpc[i] = keep;
            fdChosen[i] = meanDifference(up, down) / (2 * step);
            keep = dpr[i];
            dpr[i] = keep + step;
            up = PreferenceLossReference.pairLosses(c, dpc, dpr, drc, drr, margins, delta);
            dpr[i] = keep - step;
            down = PreferenceLossReference.pairLosses(c, dpc, dpr, drc, drr, margins, delta);
            dpr[i] = keep;
            fdRejected[i] = meanDifference(up, down) / (2 * step);
        }
        // The hinge's kink (beta h = 1) and spo-exp's (z = -10) are avoided by construction:
        // |1 - beta h| >> step and, for spo-exp, |beta h / m~ + 10| >> step for these inputs; so
        // are the sorts' ties (aot, aot-pair: gaps between sorted values >> step).
        assertAllClose("dL/dchosen", fdChosen, toDoubles(r.gradChosen()), 1e-7, 1e-4);
        assertAllClose("dL/drejected", fdRejected, toDoubles(r.gradRejected()), 1e-7, 1e-4);
    }

    /** mean_j (up_j - down_j), differences first. */
    static double meanDifference(double[] up, double[] down) {
        double s = 0;
        for (int j = 0; j < up.length; j++) {
            s += up[j] - down[j];
        }
        return s / up.length;
    }

    /** The same losses as LibTorch ops on float64 with autograd. */
    static Tensor[] libtorchLoss(PreferenceLossConfig c, float[] pc, float[] pr, float[] rc, float[] rr,
                                 double delta) {
        Tensor xc = floats(pc).to(ScalarType.Double), xr = floats(pr).to(ScalarType.Double);
        xc.set_requires_grad(true);
        xr.set_requires_grad(true);
        Tensor h = xc.sub(floats(rc).to(ScalarType.Double)).sub(xr.sub(floats(rr).to(ScalarType.Double)));
        Tensor bh = h.mul(new Scalar(c.beta()));
        Tensor per = switch (c.type()) {
            case SPO -> bh.sub(new Scalar(c.margin())).square();
            case DPO -> torch.log_sigmoid(bh).mul(new Scalar(-(1 - c.labelSmoothing())))
                    .sub(torch.log_sigmoid(bh.neg()).mul(new Scalar(c.labelSmoothing())));
            case IPO -> h.sub(new Scalar(1 / (2 * c.beta()))).square();
            case HINGE -> torch.relu(bh.neg().add(new Scalar(1.0)));
            case SOFT_DPO -> {
                double p = 1 / (1 + Math.exp(-c.margin()));
                yield torch.log_sigmoid(bh).mul(new Scalar(-p)).sub(torch.log_sigmoid(bh.neg()).mul(new Scalar(1 - p)));
            }
            case SPO_EXP -> {  // m0 > 0 here, so m~ = max(m0, floor); f(z), continued linearly below z = -10
                Tensor z = bh.div(new Scalar(Math.max(c.margin(), c.marginFloor())));
                Tensor f = z.mul(z.neg().exp()).neg().add(new Scalar(Math.exp(-1)));
                Tensor line = z.add(new Scalar(10.0)).mul(new Scalar(-11 * Math.exp(10)))
                        .add(new Scalar(Math.exp(-1) + 10 * Math.exp(10)));
                yield torch.where(z.ge(new Scalar(-10.0)), f, line);
            }
            // the newer losses: the composite twin (CompositePreferenceLoss) on float64 with autograd
            default -> CompositePreferenceLoss.perPair(c, PairTerms.of(c, B, xc, xr, floats(rc).to(ScalarType.Double),
                    floats(rr).to(ScalarType.Double), null, null, null, null, null), delta);
        };
        Tensor loss = per.mean();
        loss.backward();
        Tensor gc = xc.grad().clone(), gr = xr.grad().clone();
        java.lang.ref.Reference.reachabilityFence(xc);
        java.lang.ref.Reference.reachabilityFence(xr);
        return new Tensor[] {loss.detach(), gc, gr};
    }

    @ParameterizedTest
    @EnumSource(LossType.class)
    void matchesLibTorchAutograd(LossType type) {
        Random rnd = new Random(type.ordinal() + 100);
        float[] pc = logps(rnd, -40), pr = logps(rnd, -44), rc = logps(rnd, -41), rr = logps(rnd, -43);
        PreferenceLossConfig c = config(type);
        PreferenceLoss.Result r = new PreferenceLoss(c).compute(floats(pc), floats(pr), floats(rc), floats(rr));
        double delta = PreferenceLossReference.firstBcoDelta(c, d(pc), d(pr), d(rc), d(rr));
        Tensor[] ref = libtorchLoss(c, pc, pr, rc, rr, delta);
        assertEquals(ref[0].item_double(), r.loss(), 1e-6 * Math.max(1, Math.abs(r.loss())));
        assertAllClose("grad chosen", toDoubles(ref[1]), toDoubles(r.gradChosen()), 1e-8, 1e-5);
        assertAllClose("grad rejected", toDoubles(ref[2]), toDoubles(r.gradRejected()), 1e-8, 1e-5);
    }

    static PreferenceLoss.Result single(PreferenceLossConfig c, float h) {
        // policy chosen = h, everything else 0: dc = h, dr = 0
        return new PreferenceLoss(c).compute(floats(h), floats(0f), floats(0f), floats(0f));
    }

    @Test
    void handComputedValues() {
        PreferenceLossConfig dpo = PreferenceLossConfig.of(LossType.DPO);  // beta 0.1
        assertEquals(Math.log1p(Math.exp(-0.2)), single(dpo, 2).loss(), 1e-7);          // 0.598139
        assertEquals(0.9 * Math.log1p(Math.exp(-0.2)) + 0.1 * Math.log1p(Math.exp(0.2)),
                single(dpo.withLabelSmoothing(0.1), 2).loss(), 1e-7);                    // 0.618139
        // dL/dh = -beta sigma(-beta h) = -0.1 / (1 + e^0.2)
        assertEquals(-0.1 / (1 + Math.exp(0.2)), toDoubles(single(dpo, 2).gradChosen())[0], 1e-8);
        PreferenceLossConfig ipo = PreferenceLossConfig.of(LossType.IPO).withLengthNormalised(false);
        assertEquals(9.0, single(ipo, 2).loss(), 1e-6);                                 // (2 - 5)^2
        assertEquals(-6.0, toDoubles(single(ipo, 2).gradChosen())[0], 1e-6);           // 2 (2 - 5)
        PreferenceLossConfig hinge = PreferenceLossConfig.of(LossType.HINGE);
        assertEquals(0.8, single(hinge, 2).loss(), 1e-7);                               // 1 - 0.2
        assertEquals(-0.1, toDoubles(single(hinge, 2).gradChosen())[0], 1e-8);
        assertEquals(0.0, single(hinge, 20).loss(), 0.0);                               // beta h = 2 >= 1
        assertEquals(0.0, toDoubles(single(hinge, 20).gradChosen())[0], 0.0);
        PreferenceLossConfig spo = PreferenceLossConfig.of(LossType.SPO);               // m0 = 1
        assertEquals(0.64, single(spo, 2).loss(), 1e-6);                                // (0.2 - 1)^2
        assertEquals(2 * 0.1 * (0.2 - 1), toDoubles(single(spo, 2).gradChosen())[0], 1e-7);
        assertEquals(-2 * 0.1 * (0.2 - 1), toDoubles(single(spo, 2).gradRejected())[0], 1e-7);
    }

    @Test
    void softDpoIsDpoWithTheSigmoidOfTheMarginAsItsLabel() {
        PreferenceLossConfig soft = PreferenceLossConfig.of(LossType.SOFT_DPO);  // beta 0.1, m0 1
        double p = 1 / (1 + Math.exp(-1.0));                                        // 0.731059
        // h = 2: beta h = 0.2; loss = p softplus(-0.2) + (1-p) softplus(0.2) = 0.651923
        assertEquals(p * Math.log1p(Math.exp(-0.2)) + (1 - p) * Math.log1p(Math.exp(0.2)), single(soft, 2).loss(), 1e-7);
        // dL/dh = -beta p sigma(-0.2) + beta (1-p) sigma(0.2)
        assertEquals(-0.1 * p / (1 + Math.exp(0.2)) + 0.1 * (1 - p) / (1 + Math.exp(-0.2)),
                toDoubles(single(soft, 2).gradChosen())[0], 1e-8);
        // scores 5 vs 2, gamma 1: p = sigma(3); at h = 0 the loss is log 2 whatever p
        PreferenceLoss.Result r = new PreferenceLoss(soft).compute(
                PreferenceLoss.Inputs.of(floats(0f), floats(0f), floats(0f), floats(0f)).withScores(floats(5f), floats(2f)));
        assertEquals(Math.log(2), r.loss(), 1e-7);
        double p3 = 1 / (1 + Math.exp(-3.0));
        assertEquals(-0.1 * p3 * 0.5 + 0.1 * (1 - p3) * 0.5, toDoubles(r.gradChosen())[0], 1e-8);
        // with p = 1 - eps it is cDPO: sigma(m) = 0.9 <=> m = log 9
        PreferenceLoss.Result asCdpo = new PreferenceLoss(soft.withMargin(Math.log(9))).compute(floats(2f), floats(0f),
                floats(0f), floats(0f));
        assertEquals(single(PreferenceLossConfig.of(LossType.DPO).withLabelSmoothing(0.1), 2).loss(), asCdpo.loss(), 1e-7);
    }

    @Test
    void spoExpHasItsMinimumAtTheTargetAndPunishesInversionExponentially() {
        PreferenceLossConfig c = PreferenceLossConfig.of(LossType.SPO_EXP).withBeta(0.5);  // m0 1, floor 0.1
        // z = beta h / m: h = 2 -> z = 1, the minimum: loss 0, gradient 0
        assertEquals(0.0, single(c, 2).loss(), 1e-7);
        assertEquals(0.0, toDoubles(single(c, 2).gradChosen())[0], 1e-8);
        // h = 0 -> z = 0: loss 1/e, dL/dh = (0 - 1) e^0 beta / m = -0.5
        assertEquals(Math.exp(-1), single(c, 0).loss(), 1e-7);
        assertEquals(-0.5, toDoubles(single(c, 0).gradChosen())[0], 1e-7);
        // overshoot by one target (z = 2): 1/e - 2/e^2 = 0.0972; inverted by one (z = -2): 1/e + 2 e^2 = 15.15
        double over = single(c, 4).loss(), inverted = single(c, -4).loss();
        assertEquals(Math.exp(-1) - 2 * Math.exp(-2), over, 1e-6);
        assertEquals(Math.exp(-1) + 2 * Math.exp(2), inverted, 1e-4);
        assertEquals(Math.exp(-2) * 0.5, toDoubles(single(c, 4).gradChosen())[0], 1e-7);       // (2 - 1) e^-2 beta
        assertEquals(-3 * Math.exp(2) * 0.5, toDoubles(single(c, -4).gradChosen())[0], 1e-5);  // (-2 - 1) e^2 beta
        assertTrue(inverted > 100 * over, "asymmetric: " + inverted + " vs " + over);
        // a negative margin (scores say the rejected answer is better): the minimum is at beta h = m
        PreferenceLoss.Result neg = new PreferenceLoss(c).compute(
                PreferenceLoss.Inputs.of(floats(-2f), floats(0f), floats(0f), floats(0f)).withMargins(floats(-1f)));
        assertEquals(0.0, neg.loss(), 1e-7);
        // a margin below the floor is raised to it: m = 0.01 -> m~ = 0.1, minimum at beta h = 0.1 (h = 0.2)
        PreferenceLoss.Result tiny = new PreferenceLoss(c).compute(
                PreferenceLoss.Inputs.of(floats(0.2f), floats(0f), floats(0f), floats(0f)).withMargins(floats(0.01f)));
        assertEquals(0.0, tiny.loss(), 1e-6);
        // far below z = -10 the loss continues linearly: finite loss and gradient
        PreferenceLoss.Result far = new PreferenceLoss(c).compute(floats(-1e4f), floats(0f), floats(0f), floats(0f));
        assertEquals(Math.exp(-1) + 10 * Math.exp(10) - 11 * Math.exp(10) * (-5000 + 10), far.loss(), 1e-6 * far.loss());
        assertEquals(-11 * Math.exp(10) * 0.5, toDoubles(far.gradChosen())[0], 1e-6 * 11 * Math.exp(10));
    }

    @Test
    void spoIsExactlyZeroAtItsTarget() {
        // beta = 0.5, m0 = 1: the target is h = 2; dc = 1, dr = -1. All values exact in fp32.
        PreferenceLossConfig c = PreferenceLossConfig.of(LossType.SPO).withBeta(0.5).withMargin(1.0);
        PreferenceLoss.Result r = new PreferenceLoss(c).compute(floats(-3f, -7f), floats(-9f, -12f),
                floats(-4f, -8f), floats(-8f, -11f));
        assertEquals(0.0, r.loss(), 0.0);
        for (double g : toDoubles(r.gradChosen())) {
            assertEquals(0.0, g, 0.0);
        }
        // and moves towards it from either side: below the target the chosen log-prob is pushed up
        PreferenceLoss.Result below = new PreferenceLoss(c).compute(floats(-3.5f), floats(-9f), floats(-4f), floats(-8f));
        assertTrue(toDoubles(below.gradChosen())[0] < 0, "gradient descent raises logp(chosen)");
        PreferenceLoss.Result above = new PreferenceLoss(c).compute(floats(-2f), floats(-9f), floats(-4f), floats(-8f));
        assertTrue(toDoubles(above.gradChosen())[0] > 0, "past the target SPO pulls back, unlike DPO");
    }

    @Test
    void spoMarginComesFromScoresWhenGiven() {
        PreferenceLossConfig c = PreferenceLossConfig.of(LossType.SPO).withRewardScale(0.5);
        // h = 2, beta h = 0.2; scores 7 vs 3 -> m = 0.5 * 4 = 2; loss (0.2 - 2)^2 = 3.24
        PreferenceLoss.Result r = new PreferenceLoss(c).compute(
                PreferenceLoss.Inputs.of(floats(2f), floats(0f), floats(0f), floats(0f))
                        .withScores(floats(7f), floats(3f)));
        assertEquals(3.24, r.loss(), 1e-6);
        // scores win over explicit margins
        PreferenceLoss.Result both = new PreferenceLoss(c).compute(
                PreferenceLoss.Inputs.of(floats(2f), floats(0f), floats(0f), floats(0f))
                        .withScores(floats(7f), floats(3f)).withMargins(floats(100f)));
        assertEquals(3.24, both.loss(), 1e-6);
    }

    @Test
    void lengthNormalisationDividesLogProbsAndGradients() {
        PreferenceLossConfig c = PreferenceLossConfig.of(LossType.IPO);  // normalised by default
        assertTrue(c.lengthNormalised());
        float[] pc = {-20f, -30f}, pr = {-44f, -10f}, rc = {-22f, -33f}, rr = {-40f, -9f};
        float[] nc = {10f, 15f}, nr = {11f, 5f};
        PreferenceLoss.Result r = new PreferenceLoss(c).compute(
                PreferenceLoss.Inputs.of(floats(pc), floats(pr), floats(rc), floats(rr))
                        .withTokenCounts(floats(nc), floats(nr)));
        double ref = PreferenceLossReference.meanLoss(c, d(pc), d(pr), d(rc), d(rr), null, d(nc), d(nr), 0.0);
        assertEquals(ref, r.loss(), 1e-6 * Math.max(1, ref));
        // d/d(sum) = d/d(mean) / n: compare with the un-normalised loss on pre-divided inputs
        PreferenceLoss.Result onMeans = new PreferenceLoss(c.withLengthNormalised(false)).compute(
                floats(-2f, -2f), floats(-4f, -2f), floats(-2.2f, -2.2f), floats(-40f / 11, -1.8f));
        assertEquals(onMeans.loss(), r.loss(), 1e-5);
        assertEquals(toDoubles(onMeans.gradChosen())[0] / 10, toDoubles(r.gradChosen())[0], 1e-6);
        assertEquals(toDoubles(onMeans.gradRejected())[1] / 5, toDoubles(r.gradRejected())[1], 1e-6);
        // metrics report the summed policy log-probs
        assertEquals(-25.0, r.metrics().logpsChosen(), 1e-6);
        assertThrows(IllegalArgumentException.class,
                () -> new PreferenceLoss(c).compute(floats(pc), floats(pr), floats(rc), floats(rr)));
    }

    @Test
    void metricsMatchTheirDefinitions() {
        PreferenceLossConfig c = PreferenceLossConfig.of(LossType.DPO).withBeta(0.5);
        // pair 0: dc = 1, dr = -1 (correct); pair 1: dc = -2, dr = 0 (wrong)
        PreferenceLoss.Result r = new PreferenceLoss(c).compute(floats(-10f, -20f), floats(-31f, -5f),
                floats(-11f, -18f), floats(-30f, -5f));
        PreferenceMetrics m = r.metrics();
        assertEquals(0.5 * (1 - 2) / 2, m.rewardsChosen(), 1e-6);
        assertEquals(0.5 * (-1 + 0) / 2, m.rewardsRejected(), 1e-6);
        assertEquals(0.5 * (2 - 2) / 2, m.rewardsMargins(), 1e-6);
        assertEquals(0.5, m.rewardsAccuracies(), 0.0);
        assertEquals(-15.0, m.logpsChosen(), 1e-6);
        assertEquals(-18.0, m.logpsRejected(), 1e-6);
        assertEquals(r.loss(), m.loss(), 0.0);
        assertEquals(java.util.List.of("loss", "rewards/chosen", "rewards/rejected", "rewards/margins",
                "rewards/accuracies", "logps/chosen", "logps/rejected"), java.util.List.copyOf(m.asMap().keySet()));
    }

    @ParameterizedTest
    @EnumSource(LossType.class)
    void extremeMarginsStayFinite(LossType type) {
        PreferenceLoss.Result r = new PreferenceLoss(config(type)).compute(floats(1e4f, -1e4f),
                floats(-1e4f, 1e4f), floats(0f, 0f), floats(0f, 0f));
        assertTrue(Double.isFinite(r.loss()), "loss " + r.loss());
        for (double g : toDoubles(r.gradChosen())) {
            assertFalse(Double.isNaN(g) || Double.isInfinite(g), "grad " + g);
        }
    }

    @Test
    void badConfigurationsAreRejected() {
        PreferenceLossConfig c = PreferenceLossConfig.of(LossType.DPO);
        assertThrows(IllegalArgumentException.class, () -> c.withBeta(Double.NaN));
        assertThrows(IllegalArgumentException.class, () -> c.withBeta(0));
        assertThrows(IllegalArgumentException.class, () -> c.withBeta(-0.1));
        assertThrows(IllegalArgumentException.class, () -> c.withLabelSmoothing(0.5));
        assertThrows(IllegalArgumentException.class, () -> c.withLabelSmoothing(-0.01));
        assertThrows(IllegalArgumentException.class, () -> c.withMargin(Double.POSITIVE_INFINITY));
        assertThrows(IllegalArgumentException.class, () -> c.withMarginFloor(0));
        assertThrows(IllegalArgumentException.class, () -> c.withMarginFloor(Double.NaN));
        assertEquals(LossType.SPO_EXP, LossType.parse("spo_exp"));
        assertEquals(LossType.SOFT_DPO, LossType.parse("Soft-DPO"));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> LossType.parse("kto"));
        assertTrue(e.getMessage().contains("kto"));
        assertEquals(LossType.SPO, LossType.parse(" SPO "));
    }

    @Test
    void badTensorsAreRejected() {
        PreferenceLoss loss = new PreferenceLoss(PreferenceLossConfig.of(LossType.SPO));
        Tensor two = floats(1f, 2f);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> loss.compute(two, floats(1f), two, two));
        assertTrue(e.getMessage().contains("policyRejected") && e.getMessage().contains("[2]"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> loss.compute(two, two, two.to(ScalarType.Double), two));
        assertTrue(e.getMessage().contains("refChosen") && e.getMessage().contains("Double"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> loss.compute(floats(), floats(), floats(), floats()));
        assertTrue(e.getMessage().contains("B >= 1"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> loss.compute(
                PreferenceLoss.Inputs.of(two, two, two, two).withScores(two, null)));
        assertTrue(e.getMessage().contains("together"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> loss.compute(two, null, two, two));
        assertTrue(e.getMessage().contains("policyRejected"), e.getMessage());
    }

    /**
     * {@link PreferenceLoss#gradients} (the pair single pass's per-chunk call: no batch means, no
     * host read) gives exactly {@code compute}'s per-pair losses and gradients for every loss,
     * with margins, and length-normalised with scores; no loss value, no metrics, and bco-pair's
     * running mean untouched.
     */
    @ParameterizedTest
    @EnumSource(LossType.class)
    void gradientsAloneEqualComputesGradients(LossType type) {
        Random rnd = new Random(type.ordinal() + 101);
        float[] pc = logps(rnd, -60), pr = logps(rnd, -65), rc = logps(rnd, -61), rr = logps(rnd, -64);
        float[] m = new float[B], sc = new float[B], sr = new float[B], nc = new float[B], nr = new float[B];
        for (int i = 0; i < B; i++) {
            m[i] = (float) rnd.nextGaussian();
            sc[i] = (float) rnd.nextGaussian();
            sr[i] = (float) rnd.nextGaussian();
            nc[i] = 20 + rnd.nextInt(40);
            nr[i] = 20 + rnd.nextInt(40);
        }
        PreferenceLoss.Inputs plain = PreferenceLoss.Inputs.of(floats(pc), floats(pr), floats(rc), floats(rr))
                .withMargins(floats(m));
        PreferenceLoss.Inputs normalised = PreferenceLoss.Inputs.of(floats(pc), floats(pr), floats(rc), floats(rr))
                .withScores(floats(sc), floats(sr)).withTokenCounts(floats(nc), floats(nr));
        for (boolean norm : new boolean[] {false, true}) {
            PreferenceLoss loss = new PreferenceLoss(config(type).withLengthNormalised(norm));
            PreferenceLoss.Inputs in = norm ? normalised : plain;
            PreferenceLoss.Result full = loss.compute(in, false);
            double[] state = loss.bcoState();
            PreferenceLoss.Result g = loss.gradients(in);
            String what = type.id() + (norm ? " length-normalised" : "");
            assertTrue(Double.isNaN(g.loss()) && g.metrics() == null, what + ": no loss value, no metrics");
            assertAllClose(what + " per-pair loss", toDoubles(full.perPairLoss()), toDoubles(g.perPairLoss()), 0, 0);
            assertAllClose(what + " dL/dchosen", toDoubles(full.gradChosen()), toDoubles(g.gradChosen()), 0, 0);
            assertAllClose(what + " dL/drejected", toDoubles(full.gradRejected()), toDoubles(g.gradRejected()), 0, 0);
            // the objective's per-chunk variant (counts checked once for the batch) gives the same
            PreferenceLoss.Result gc = loss.gradientsCountsChecked(in);
            assertAllClose(what + " dL/dchosen, counts checked", toDoubles(g.gradChosen()), toDoubles(gc.gradChosen()), 0, 0);
            assertAllClose(what + " dL/drejected, counts checked", toDoubles(g.gradRejected()),
                    toDoubles(gc.gradRejected()), 0, 0);
            if (norm) {  // the public call still refuses a completion without tokens
                float[] zero = nc.clone();
                zero[B / 2] = 0;
                PreferenceLoss.Inputs bad = PreferenceLoss.Inputs.of(floats(pc), floats(pr), floats(rc), floats(rr))
                        .withScores(floats(sc), floats(sr)).withTokenCounts(floats(zero), floats(nr));
                IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> loss.gradients(bad));
                assertTrue(e.getMessage().contains("chosenTokens has a count < 1"), e.getMessage());
            }
            if (state != null) {
                assertEquals(state[0], loss.bcoState()[0], 0.0, what + ": running mean untouched");
                assertEquals(state[1], loss.bcoState()[1], 0.0, what + ": batch count untouched");
            }
        }
    }
}
