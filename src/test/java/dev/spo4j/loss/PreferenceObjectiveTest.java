package dev.spo4j.loss;

import static dev.spo4j.kernels.Tensors.floats;
import static dev.spo4j.kernels.Tensors.toDoubles;
import static dev.spo4j.testing.AllClose.assertAllClose;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.spo4j.loss.LossType;
import dev.spo4j.loss.PreferenceLossConfig;
import java.util.Map;
import java.util.Random;
import org.bytedeco.pytorch.LinearImpl;
import org.bytedeco.pytorch.LinearOptions;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * The fused objective (kernels, in-place backward through the logits) against the LibTorch
 * composite with autograd, through a real Linear lm_head: same loss, metrics and parameter
 * gradients.
 */
class PreferenceObjectiveTest {
    static final int B = 3, T = 7, H = 16, V = 131;

    /** Targets: per row a prompt of random length (-100), then completion tokens, then padding (-100). */
    static Tensor targets(Random rnd) {
        long[] t = new long[2 * B * T];
        for (int r = 0; r < 2 * B; r++) {
            int prompt = 1 + rnd.nextInt(2), len = 1 + rnd.nextInt(T - prompt - 1);
            for (int i = 0; i < T; i++) {
                t[r * T + i] = i >= prompt && i < prompt + len ? rnd.nextInt(V) : -100;
            }
        }
        Tensor x = torch.empty(new long[] {2 * B, T}, new TensorOptions(ScalarType.Long), null);
        x.data_ptr_long().put(t);
        return x;
    }

    record Outcome(PreferenceObjective.Result result, double[] weightGrad, double[] biasGrad) {}

    static Outcome run(LossImpl impl, PreferenceLossConfig c, double sft, Tensor hidden, Tensor targets,
                       Tensor refC, Tensor refR, Tensor sc, Tensor sr) {
        torch.manual_seed(3);
        LinearImpl head = new LinearImpl(new LinearOptions(H, V));
        Tensor logits = head.forward(hidden);  // [2B, T, V]
        PreferenceObjective.Inputs in = PreferenceObjective.Inputs.of(logits, targets, refC, refR);
        if (sc != null) {
            in = in.withScores(sc, sr);
        }
        PreferenceObjective.Result r = new PreferenceObjective(c, impl, sft, 2).compute(in);
        r.backward();
        double[] w = toDoubles(head.weight().grad().clone());
        double[] b = toDoubles(head.bias().grad().clone());
        java.lang.ref.Reference.reachabilityFence(head);
        return new Outcome(r, w, b);
    }

    // spo-exp at beta 0.05: beta h / m then stays within a few units here; at 0.3 its per-pair
    // gradients reach 1e3 and cancel between the chosen and rejected rows in the lm_head
    // gradient, where fp32 rounding of the composite's terms alone exceeds rtol 1e-4 (the
    // kernel's pair math is float64; its large-|z| regime is checked in PreferenceLossTest).
    @ParameterizedTest(name = "{0} normalised={1} sft={2} beta={3}")
    @CsvSource({"SPO,false,0,0.3", "SPO,false,0.5,0.3", "DPO,false,0,0.3", "IPO,true,0,0.3", "HINGE,false,0,0.3",
        "SPO,true,0,0.3", "SOFT_DPO,false,0,0.3", "SPO_EXP,false,0,0.05", "SPO_EXP,true,0.5,0.05",
        "ROBUST,false,0,0.3", "EXO_PAIR,false,0,0.3", "NCA_PAIR,false,0,0.3", "BCO_PAIR,false,0,0.3",
        "SPPO_HARD,true,0,0.3", "AOT,false,0,0.3", "AOT_PAIR,false,0,0.3", "APO_ZERO,false,0,0.3",
        "APO_DOWN,false,0,0.3", "DISCOPOP,false,0,0.3", "SIMPO,true,0,0.3", "CPO,false,1,0.3"})
    void fusedMatchesLibTorchComposite(LossType type, boolean normalised, double sft, double beta) {
        Random rnd = new Random(41 + type.ordinal());
        torch.manual_seed(5);
        Tensor hidden = torch.randn(2 * B, T, H);
        Tensor targets = targets(rnd);
        Tensor refC = floats(-9f, -7f, -12f), refR = floats(-10f, -6f, -13f);
        Tensor sc = floats(2f, 0.5f, 1f), sr = floats(1f, 1f, -1f);
        PreferenceLossConfig c = PreferenceLossConfig.of(type).withBeta(beta).withLengthNormalised(normalised);
        Outcome fused = run(LossImpl.FUSED, c, sft, hidden, targets, refC, refR, sc, sr);
        Outcome composite = run(LossImpl.LIBTORCH, c, sft, hidden, targets, refC, refR, sc, sr);

        assertEquals(composite.result.loss(), fused.result.loss(), 1e-5 * Math.max(1, Math.abs(fused.result.loss())));
        Map<String, Double> a = fused.result.metricsMap(), e = composite.result.metricsMap();
        assertEquals(e.keySet(), a.keySet());
        for (String k : e.keySet()) {
            assertEquals(e.get(k), a.get(k), 1e-4 * Math.max(1, Math.abs(e.get(k))), k);
        }
        assertTrue(a.containsKey("entropy") && a.containsKey("logits/chosen"));
        assertAllClose("lm_head weight grad", composite.weightGrad, fused.weightGrad, 1e-6, 1e-4);
        assertAllClose("lm_head bias grad", composite.biasGrad, fused.biasGrad, 1e-6, 1e-4);
    }

    /** One step through h = tanh(x A) and a bias-free head W, given as logits or as hidden states. */
    static Outcome runHead(LossImpl impl, boolean hiddenInputs, PreferenceLossConfig c, double sft, Tensor x,
                           Tensor targets, Tensor refC, Tensor refR, boolean withGrad) {
        // 5 rows of logits per chunk: 2B*T = 42 rows make 9 chunks, the last one short; less
        // than a pair's 2T = 14 rows, so the fused head takes its recompute regime
        return runHead(impl, hiddenInputs, c, sft, x, targets, refC, refR, null, withGrad, 5, null);
    }

    /**
     * The same with a chunk budget of {@code budgetRows} rows of logits and optional scores
     * ({@code scores[0]} chosen, {@code scores[1]} rejected); {@code singlePass}, when given,
     * is what the objective must say of its regime for these inputs.
     */
    static Outcome runHead(LossImpl impl, boolean hiddenInputs, PreferenceLossConfig c, double sft, Tensor x,
                           Tensor targets, Tensor refC, Tensor refR, Tensor[] scores, boolean withGrad,
                           long budgetRows, Boolean singlePass) {
        torch.manual_seed(9);
        Tensor a = torch.randn(new long[] {H, H}, new TensorOptions(ScalarType.Float)).mul(new Scalar(0.4));
        Tensor w = torch.randn(new long[] {V, H}, new TensorOptions(ScalarType.Float)).mul(new Scalar(0.5));
        a.set_requires_grad(true);
        w.set_requires_grad(true);
        Tensor h = torch.tanh(torch.matmul(x, a));  // [2B, T, H] with autograd history
        PreferenceObjective.Inputs in = hiddenInputs ? PreferenceObjective.Inputs.ofHidden(h, w, targets, refC, refR)
                : PreferenceObjective.Inputs.of(torch.linear(h, w), targets, refC, refR);
        if (scores != null) {
            in = in.withScores(scores[0], scores[1]);
        }
        PreferenceObjective o = new PreferenceObjective(c, impl, sft, 2, budgetRows * V * 4);
        if (singlePass != null) {
            assertEquals(singlePass, o.headSinglePass(in), "single pass over chunks of pairs");
        }
        if (!withGrad) {
            return new Outcome(o.evaluate(in), null, null);
        }
        PreferenceObjective.Result r = o.compute(in);
        r.backward();
        Outcome out = new Outcome(r, toDoubles(w.grad().clone()), toDoubles(a.grad().clone()));
        java.lang.ref.Reference.reachabilityFence(a);
        java.lang.ref.Reference.reachabilityFence(w);
        return out;
    }

    /** The same loss, metrics, head weight gradient and lower-layer gradient as {@code ref}, to fp32 rounding. */
    static void assertSameStep(Outcome ref, Outcome got) {
        assertEquals(ref.result.loss(), got.result.loss(), 1e-5 * Math.max(1, Math.abs(ref.result.loss())));
        Map<String, Double> a = got.result.metricsMap(), e = ref.result.metricsMap();
        assertEquals(e.keySet(), a.keySet());
        for (String k : e.keySet()) {
            assertEquals(e.get(k), a.get(k), 1e-4 * Math.max(1, Math.abs(e.get(k))), k);
        }
        assertAllClose("head weight grad", ref.weightGrad, got.weightGrad, 1e-6, 1e-4);
        assertAllClose("lower layer grad", ref.biasGrad, got.biasGrad, 1e-6, 1e-4);
    }

    /**
     * The fused LM head (hidden states in, chunks of logits) gives the materialised fused
     * path's and the LibTorch composite's loss, metrics (logits/chosen, logits/rejected and
     * entropy included) and gradients of the head weight and of the layer below it.
     */
    @ParameterizedTest(name = "{0} normalised={1} sft={2}")
    @CsvSource({"SPO,false,0", "DPO,false,0.5", "IPO,true,0", "SPO_EXP,true,0.5"})
    void fusedHeadMatchesMaterialisedAndComposite(LossType type, boolean normalised, double sft) {
        Random rnd = new Random(7 + type.ordinal());
        torch.manual_seed(8);
        Tensor x = torch.randn(2 * B, T, H);
        Tensor targets = targets(rnd);
        Tensor refC = floats(-9f, -7f, -12f), refR = floats(-10f, -6f, -13f);
        PreferenceLossConfig c = PreferenceLossConfig.of(type).withBeta(type == LossType.SPO_EXP ? 0.05 : 0.3)
                .withLengthNormalised(normalised);
        Outcome head = runHead(LossImpl.FUSED, true, c, sft, x, targets, refC, refR, true);
        Outcome[] refs = {runHead(LossImpl.FUSED, false, c, sft, x, targets, refC, refR, true),
            runHead(LossImpl.LIBTORCH, false, c, sft, x, targets, refC, refR, true),
            runHead(LossImpl.LIBTORCH, true, c, sft, x, targets, refC, refR, true)};
        for (Outcome ref : refs) {
            assertSameStep(ref, head);
        }
        Outcome eval = runHead(LossImpl.FUSED, true, c, sft, x, targets, refC, refR, false);
        assertEquals(head.result.loss(), eval.result.loss(), 0.0);
        assertThrows(IllegalStateException.class, () -> eval.result.backward());
    }

    /**
     * The fused head's single pass over chunks of whole pairs (taken when a pair's 2T = 14 rows
     * of logits fit the budget and the loss is a sum over pairs) gives the recompute regime's
     * (a 5-row budget) and LibTorch's composite's loss, metrics and gradients. Budgets of 1
     * pair (3 chunks), 2 pairs (a chunk of 2 pairs, then 1) and the whole batch; with reward
     * scores (each chunk's pairs take their own margins), length normalisation and the SFT
     * term. The losses that couple the batch (bco-pair's mean reward, aot's sort) keep the
     * recompute regime whatever the budget, and still match.
     */
    @ParameterizedTest(name = "{0} normalised={1} sft={2} pairs per chunk={3}")
    @CsvSource({"SPO,false,0,1", "SPO,false,0.5,2", "SPO,true,0,3", "DPO,false,0.5,1", "IPO,true,0,2",
        "SPO_EXP,true,0.5,1", "SOFT_DPO,false,0,2", "HINGE,false,0,1", "SIMPO,true,0.5,2", "CPO,false,1,1",
        "BCO_PAIR,false,0,3", "AOT,false,0,3", "AOT_PAIR,false,0,1"})
    void pairChunkSinglePassMatchesRecomputeAndComposite(LossType type, boolean normalised, double sft, int pairs) {
        Random rnd = new Random(17 + type.ordinal());
        torch.manual_seed(18);
        Tensor x = torch.randn(2 * B, T, H);
        Tensor targets = targets(rnd);
        Tensor refC = floats(-9f, -7f, -12f), refR = floats(-10f, -6f, -13f);
        Tensor[] scores = {floats(2f, 0.5f, 1f), floats(1f, 1f, -1f)};
        PreferenceLossConfig c = PreferenceLossConfig.of(type).withBeta(type == LossType.SPO_EXP ? 0.05 : 0.3)
                .withLengthNormalised(normalised);
        long budget = pairs * 2L * T + (pairs == 2 ? 3 : 0);  // 2 pairs and a few rows: chunks of whole pairs
        boolean single = type.pairSeparable();
        Outcome one = runHead(LossImpl.FUSED, true, c, sft, x, targets, refC, refR, scores, true, budget, single);
        Outcome[] refs = {
            runHead(LossImpl.FUSED, true, c, sft, x, targets, refC, refR, scores, true, 5, false),
            runHead(LossImpl.LIBTORCH, false, c, sft, x, targets, refC, refR, scores, true, 5, null)};
        for (Outcome ref : refs) {
            assertSameStep(ref, one);
            assertArrayEquals(toDoubles(ref.result.policyChosen()), toDoubles(one.result.policyChosen()), 1e-4);
            assertArrayEquals(toDoubles(ref.result.policyRejected()), toDoubles(one.result.policyRejected()), 1e-4);
        }
    }

    /**
     * A weighted mix of losses takes the single pass when every term is pair-separable (spo +
     * 0.5 dpo, chunks of one pair), and not when one term couples the batch (dpo + 0.3 bco-pair);
     * both match the recompute regime and the composite.
     */
    @org.junit.jupiter.api.Test
    void lossMixesTakeTheSinglePassOnlyWhenEveryTermIsPairSeparable() {
        PreferenceLossConfig[] mixes = {
            PreferenceLossConfig.of(LossType.SPO).withMix(java.util.List.of(
                    new PreferenceLossConfig.WeightedLoss(LossType.SPO, 1.0),
                    new PreferenceLossConfig.WeightedLoss(LossType.DPO, 0.5))),
            PreferenceLossConfig.of(LossType.DPO).withMix(java.util.List.of(
                    new PreferenceLossConfig.WeightedLoss(LossType.DPO, 1.0),
                    new PreferenceLossConfig.WeightedLoss(LossType.BCO_PAIR, 0.3)))};
        for (PreferenceLossConfig c : mixes) {
            Random rnd = new Random(23);
            torch.manual_seed(24);
            Tensor x = torch.randn(2 * B, T, H);
            Tensor targets = targets(rnd);
            Tensor refC = floats(-9f, -7f, -12f), refR = floats(-10f, -6f, -13f);
            Tensor[] scores = {floats(2f, 0.5f, 1f), floats(1f, 1f, -1f)};
            Outcome one = runHead(LossImpl.FUSED, true, c, 0.2, x, targets, refC, refR, scores, true, 2L * T,
                    c.pairSeparable());
            Outcome rec = runHead(LossImpl.FUSED, true, c, 0.2, x, targets, refC, refR, scores, true, 5, false);
            Outcome comp = runHead(LossImpl.LIBTORCH, false, c, 0.2, x, targets, refC, refR, scores, true, 5, null);
            assertSameStep(rec, one);
            assertSameStep(comp, one);
        }
        assertTrue(mixes[0].pairSeparable() && !mixes[1].pairSeparable());
    }

    /**
     * Targets declared checked against V run the kernels without their own check (on CUDA: no
     * host synchronisation); on the CPU the step is the same, a declaration survives withScores
     * and withMargins, and a bad target is still an exception here (CPU kernels always check).
     */
    @org.junit.jupiter.api.Test
    void targetsCheckedByTheCallerGiveTheSameStep() {
        Random rnd = new Random(77);
        torch.manual_seed(6);
        Tensor hidden = torch.randn(2 * B, T, H);
        Tensor targets = targets(rnd);
        Tensor refC = floats(-9f, -7f, -12f), refR = floats(-10f, -6f, -13f);
        PreferenceObjective o = new PreferenceObjective(PreferenceLossConfig.of(LossType.DPO), LossImpl.FUSED, 0, 2);
        torch.manual_seed(3);
        LinearImpl head = new LinearImpl(new LinearOptions(H, V));
        PreferenceObjective.Inputs plain = PreferenceObjective.Inputs.of(head.forward(hidden), targets, refC, refR);
        PreferenceObjective.Inputs declared = PreferenceObjective.Inputs.of(head.forward(hidden), targets, refC, refR)
                .withTargetsChecked(V).withMargins(floats(1f, 1f, 1f));
        assertEquals(V, declared.checkedVocab());
        assertEquals(V, declared.withScores(floats(1f, 2f, 3f), floats(0f, 0f, 0f)).checkedVocab());
        PreferenceObjective.Result a = o.compute(plain), b = o.compute(declared.withMargins(null));
        assertEquals(a.loss(), b.loss(), 0.0);
        assertArrayEquals(toDoubles(a.gradLogits()), toDoubles(b.gradLogits()));
        Tensor bad = targets.clone();
        bad.data_ptr_long().put(T + 1, V + 5);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> o.compute(
                PreferenceObjective.Inputs.of(head.forward(hidden), bad, refC, refR).withTargetsChecked(V)));
        assertTrue(e.getMessage().contains("target " + (V + 5)), e.getMessage());
        java.lang.ref.Reference.reachabilityFence(head);
    }

    @org.junit.jupiter.api.Test
    void rowsWithoutCompletionTokensAndBadShapesAreRejected() {
        PreferenceObjective o = new PreferenceObjective(PreferenceLossConfig.of(LossType.SPO));
        Tensor logits = torch.randn(2, 3, 5);
        Tensor ok = torch.zeros(new long[] {2, 3}, new TensorOptions(ScalarType.Long));
        Tensor ref = floats(0f);
        Tensor noCompletion = ok.clone();
        noCompletion.fill_(new Scalar(-100L));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> o.compute(PreferenceObjective.Inputs.of(logits, noCompletion, ref, ref)));
        assertTrue(e.getMessage().contains("no completion token"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class,
                () -> o.compute(PreferenceObjective.Inputs.of(torch.randn(2, 4, 5), ok, ref, ref)));
        assertTrue(e.getMessage().contains("logits has shape"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class,
                () -> o.compute(PreferenceObjective.Inputs.of(torch.randn(3, 3, 5), ok.narrow(0, 0, 1), ref, ref)));
        assertTrue(e.getMessage().contains("[2B, T]"), e.getMessage());
    }
}
