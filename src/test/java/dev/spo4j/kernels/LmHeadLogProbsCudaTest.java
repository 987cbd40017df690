package dev.spo4j.kernels;

import static dev.spo4j.kernels.LmHeadLogProbsTest.IGNORE;
import static dev.spo4j.kernels.LmHeadLogProbsTest.composite;
import static dev.spo4j.kernels.LmHeadLogProbsTest.inputs;
import static dev.spo4j.kernels.LmHeadLogProbsTest.masked;
import static dev.spo4j.kernels.LmHeadLogProbsTest.targets;
import static dev.spo4j.kernels.Tensors.toDoubles;
import static dev.spo4j.testing.AllClose.assertAllClose;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.bytedeco.pytorch.Device;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * The fused LM head on CUDA tensors (cuBLAS GEMMs, the CUDA token log-prob kernels on
 * LibTorch's current stream) against the float64 truth computed on the CPU, in both target
 * check modes. Needs a CUDA build of libspo4j, a visible GPU and LibTorch's GPU build
 * ({@code mvn -Pgpu test}); skipped otherwise, with the reason.
 */
class LmHeadLogProbsCudaTest {
    static Device cuda;

    @BeforeEach
    void requireGpu() {
        Assumptions.assumeTrue(CudaKernels.built(), "libspo4j was built without CUDA (no nvcc)");
        Assumptions.assumeTrue(CudaKernels.deviceCount() > 0, "no CUDA device visible to spo4j's runtime");
        Assumptions.assumeTrue(torch.cuda_is_available(), "LibTorch has no CUDA (run with -Pgpu)");
        cuda = new Device("cuda:0");
    }

    static Tensor gpu(Tensor t) {
        return t.to(cuda, t.scalar_type().intern());
    }

    @ParameterizedTest(name = "{0}")
    @EnumSource(TokenLogProbs.TargetCheck.class)
    void fp32MatchesFloat64Truth(TokenLogProbs.TargetCheck check) {
        int n = 300, hid = 64, v = 32003, chunk = 37;  // several chunks, a short last one, V odd
        Tensor[] in = inputs(n, hid, v, ScalarType.Float, 5);
        Tensor t = targets(n, v, 40, 80, 5);
        Tensor[] truth = composite(in[0], in[1], t, in[2], ScalarType.Double);
        LmHeadLogProbs head = new LmHeadLogProbs((long) chunk * v * 4, 0);
        Tensor h = gpu(in[0]), w = gpu(in[1]), tg = gpu(t), g = gpu(in[2]);
        LmHeadLogProbs.Result fwd = head.forward(h, w, tg, IGNORE, true, check);
        LmHeadLogProbs.Gradients gr = head.backward(h, w, tg, fwd.lse(), g, IGNORE, true, check);
        assertTrue(gr.hidden().is_cuda() && gr.weight().is_cuda());
        assertAllClose("logp", masked(truth[0], t), masked(fwd.logp().cpu(), t), 1e-4, 1e-4);
        assertAllClose("entropy", masked(truth[2], t), masked(fwd.entropy().cpu(), t), 1e-4, 1e-4);
        // cuBLAS may use TF32 for fp32 GEMMs where LibTorch allows it: a looser tolerance
        assertAllClose("dh", toDoubles(truth[3]), toDoubles(gr.hidden()), 2e-3, 2e-3);
        assertAllClose("dW", toDoubles(truth[4]), toDoubles(gr.weight()), 2e-3, 2e-3);
    }

    /**
     * bf16 on CUDA, with a weight gradient, V odd: the recompute backward and the single pass
     * (forwardBackward), each over 5 row chunks, so that chunks after the first add their bf16
     * dW products into the fp32 accumulator (LibTorch's mixed-dtype add on the device); logp,
     * lse, entropy, dh and dW within the naive bf16 composite's error of the float64 truth, as
     * the CPU's bf16 cases are judged.
     */
    @ParameterizedTest(name = "{0}")
    @EnumSource(TokenLogProbs.TargetCheck.class)
    void bf16WithinTheNaiveCompositesError(TokenLogProbs.TargetCheck check) {
        int n = 300, hid = 64, v = 32003;
        ScalarType dt = ScalarType.BFloat16;
        Tensor[] in = inputs(n, hid, v, dt, 7);
        Tensor t = targets(n, v, 40, 80, 7);
        Tensor[] truth = composite(in[0], in[1], t, in[2], ScalarType.Double);
        Tensor[] naive = composite(in[0], in[1], t, in[2], dt);
        LmHeadLogProbs head = new LmHeadLogProbs(74L * v * 2, 0);  // 64 rows per single-pass chunk
        assertEquals(64, head.singlePassRows(v, hid, dt, true));
        Tensor h = gpu(in[0]), w = gpu(in[1]), tg = gpu(t), g = gpu(in[2]);
        LmHeadLogProbs.Result fwd = head.forward(h, w, tg, IGNORE, true, check);
        LmHeadLogProbs.Gradients gr = head.backward(h, w, tg, fwd.lse(), g, IGNORE, true, check);
        LmHeadLogProbs.Pass one = head.forwardBackward(h, w, tg, g, IGNORE, true, true, check);
        assertTrue(gr.hidden().is_cuda() && gr.weight().is_cuda() && one.grads().weight().is_cuda());
        assertEquals(ScalarType.Float, one.grads().weight().scalar_type().intern());
        LmHeadLogProbsTest.assertNoWorseThanNaive("recompute", truth, naive, t, new Tensor[] {fwd.logp().cpu(),
            fwd.lse().cpu(), fwd.entropy().cpu(), gr.hidden().cpu(), gr.weight().cpu()});
        LmHeadLogProbsTest.assertNoWorseThanNaive("single pass", truth, naive, t, new Tensor[] {
            one.result().logp().cpu(), one.result().lse().cpu(), one.result().entropy().cpu(),
            one.grads().hidden().cpu(), one.grads().weight().cpu()});
    }

    /**
     * The preference objective's single pass over chunks of whole pairs on CUDA tensors (rows
     * put in pair order on the device, each chunk's pair loss by the CUDA loss kernel) against
     * the same step on the CPU: loss, metrics and the gradients of h and W. A budget of two
     * pairs' rows cuts 3 pairs into chunks of 2 and 1.
     */
    @Test
    void pairSinglePassMatchesTheCpu() {
        int pairs = 3, t = 40, hid = 64, v = 5003, n = 2 * pairs * t;
        Tensor[] in = inputs(n, hid, v, ScalarType.Float, 12);
        Tensor targets = targets(n, v, 0, 0, 12).view(2 * pairs, t);  // every 5th token ignored
        Tensor refC = Tensors.floats(-90f, -70f, -120f), refR = Tensors.floats(-100f, -60f, -130f);
        Tensor sc = Tensors.floats(2f, 0.5f, 1f), sr = Tensors.floats(1f, 1f, -1f);
        dev.spo4j.loss.PreferenceObjective.Result[] results = new dev.spo4j.loss.PreferenceObjective.Result[2];
        double[][] dh = new double[2][], dw = new double[2][];
        for (int d = 0; d < 2; d++) {
            boolean onGpu = d == 1;
            Tensor h = onGpu ? gpu(in[0]) : in[0].clone(), w = onGpu ? gpu(in[1]) : in[1].clone();
            h.set_requires_grad(true);
            w.set_requires_grad(true);
            dev.spo4j.loss.PreferenceObjective o = new dev.spo4j.loss.PreferenceObjective(
                    dev.spo4j.loss.PreferenceLossConfig.of(dev.spo4j.loss.LossType.SPO),
                    dev.spo4j.loss.LossImpl.FUSED, 0.5, 0, (2L * 2 * t + 7) * v * 4);
            dev.spo4j.loss.PreferenceObjective.Inputs x = dev.spo4j.loss.PreferenceObjective.Inputs.ofHidden(
                    h.view(2 * pairs, t, hid), w, onGpu ? gpu(targets) : targets, onGpu ? gpu(refC) : refC,
                    onGpu ? gpu(refR) : refR).withScores(onGpu ? gpu(sc) : sc, onGpu ? gpu(sr) : sr);
            assertTrue(o.headSinglePass(x));
            results[d] = o.compute(x);
            results[d].backward();
            dh[d] = toDoubles(h.grad().cpu());
            dw[d] = toDoubles(w.grad().cpu());
            assertTrue(!onGpu || h.grad().is_cuda() && w.grad().is_cuda());
        }
        assertEquals(results[0].loss(), results[1].loss(), 1e-3 * Math.max(1, Math.abs(results[0].loss())));
        java.util.Map<String, Double> a = results[1].metricsMap(), e = results[0].metricsMap();
        assertEquals(e.keySet(), a.keySet());
        for (String k : e.keySet()) {
            assertEquals(e.get(k), a.get(k), 1e-3 * Math.max(1, Math.abs(e.get(k))), k);
        }
        // cuBLAS may use TF32 for fp32 GEMMs where LibTorch allows it: a looser tolerance
        assertAllClose("dh", dh[0], dh[1], 2e-3, 2e-3);
        assertAllClose("dW", dw[0], dw[1], 2e-3, 2e-3);
    }

    @Test
    void mixedDevicesAreRejected() {
        Tensor[] in = inputs(4, 8, 11, ScalarType.Float, 1);
        Tensor t = targets(4, 11, 0, 0, 1);
        LmHeadLogProbs head = new LmHeadLogProbs();
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> head.forward(gpu(in[0]),
                in[1], t, IGNORE, false, TokenLogProbs.TargetCheck.CHECKED));
        assertTrue(e.getMessage().contains("one device"), e.getMessage());
    }
}
