package dev.spo4j.kernels;

import static dev.spo4j.kernels.Tensors.floats;
import static dev.spo4j.kernels.Tensors.longs;
import static dev.spo4j.kernels.Tensors.toDoubles;
import static dev.spo4j.kernels.TokenLogProbsTest.IGNORE;
import static dev.spo4j.kernels.TokenLogProbsTest.logits;
import static dev.spo4j.kernels.TokenLogProbsTest.storageRtol;
import static dev.spo4j.kernels.TokenLogProbsTest.targets;
import static dev.spo4j.kernels.TokenLogProbsTest.upstream;
import static dev.spo4j.testing.AllClose.assertAllClose;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.spo4j.loss.LossType;
import dev.spo4j.loss.PreferenceLoss;
import dev.spo4j.loss.PreferenceLossConfig;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.bytedeco.pytorch.Device;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.EnumSource;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * The CUDA kernels (native/cuda) against the CPU kernels, through the Java API with LibTorch
 * CUDA tensors. Needs a CUDA build of libspo4j, a visible GPU and LibTorch's GPU build
 * ({@code mvn -Pgpu test}); skipped otherwise, with the reason.
 */
class TokenLogProbsCudaTest {
    static Device cuda;

    // Per test rather than per class: Surefire then counts each test as skipped, with the reason.
    @BeforeEach
    void requireGpu() {
        Assumptions.assumeTrue(CudaKernels.built(), "libspo4j was built without CUDA (no nvcc)");
        Assumptions.assumeTrue(CudaKernels.deviceCount() > 0, "no CUDA device visible to spo4j's runtime");
        Assumptions.assumeTrue(torch.cuda_is_available(), "LibTorch has no CUDA (run with -Pgpu)");
        cuda = new Device("cuda:0");
    }

    static Tensor gpu(Tensor t) {
        return t.to(cuda, t.scalar_type());
    }

    static Stream<Arguments> sweep() {
        List<Arguments> a = new ArrayList<>();
        for (int rows : new int[] {1, 3, 127, 1000}) {
            for (int vocab : new int[] {1, 2, 7, 127, 128, 129, 1000, 4096, 32000, 50257}) {
                for (ScalarType dt : TokenLogProbsTest.DTYPES) {
                    a.add(Arguments.of(rows, vocab, dt, rows % 2 == 0 ? 0.5 : 0.0));
                }
            }
        }
        return a.stream();
    }

    /** Same results as the CPU kernel, covering the warp-per-row and block-per-row launches. */
    @ParameterizedTest(name = "rows={0} V={1} {2} ignored={3}")
    @MethodSource("sweep")
    void matchesCpuKernel(int rows, int vocab, ScalarType dt, double ignored) {
        long seed = 7L * rows + vocab;
        Tensor z = logits(rows, vocab, dt, seed, true);
        Tensor t = targets(rows, vocab, ignored, seed);
        Tensor g = upstream(rows, seed);
        TokenLogProbs.Result cpu = TokenLogProbs.forward(z, t, IGNORE, true);
        Tensor cpuGrad = TokenLogProbs.backward(z, t, cpu.lse(), g, IGNORE, false);

        Tensor zg = gpu(z), tg = gpu(t), gg = gpu(g);
        TokenLogProbs.Result dev = TokenLogProbs.forward(zg, tg, IGNORE, true);
        Tensor devGrad = TokenLogProbs.backward(zg, tg, dev.lse(), gg, IGNORE, false);
        double atol = 1e-5 + 3e-7 * 1e4;  // the sweep has +-1e4 logits
        assertAllClose("lse", toDoubles(cpu.lse()), toDoubles(dev.lse().cpu()), atol, 1e-6);
        assertAllClose("logp", toDoubles(cpu.logp()), toDoubles(dev.logp().cpu()), atol, 1e-6);
        assertAllClose("entropy", toDoubles(cpu.entropy()), toDoubles(dev.entropy().cpu()), atol, 1e-5);
        // both round one fp32 value to the dtype: at most one unit of the dtype apart
        assertAllClose("grad", toDoubles(cpuGrad), toDoubles(devGrad.cpu()), 1e-6, 1e-5 + 2 * storageRtol(dt));

        Tensor inPlace = TokenLogProbs.backward(zg, tg, dev.lse(), gg, IGNORE, true);
        assertArrayEquals(toDoubles(devGrad.cpu()), toDoubles(inPlace.cpu()), "CUDA in place == out of place");
    }

    @Test
    void stridedRowsAndBadTargets() {
        Tensor wide = gpu(logits(33, 4099 + 5, ScalarType.BFloat16, 1, false));
        Tensor z = wide.narrow(1, 0, 4099);
        Tensor t = gpu(targets(33, 4099, 0.5, 1));
        TokenLogProbs.Result strided = TokenLogProbs.forward(z, t, IGNORE, false);
        TokenLogProbs.Result packed = TokenLogProbs.forward(z.contiguous(), t, IGNORE, false);
        assertArrayEquals(toDoubles(packed.logp().cpu()), toDoubles(strided.logp().cpu()));

        Tensor bad = gpu(longs(0, 1, 5000));
        Tensor z3 = gpu(logits(3, 4099, ScalarType.Float, 2, false));
        double[] before = toDoubles(z3.cpu());
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> TokenLogProbs.forward(z3, bad, IGNORE, false));
        assertTrue(e.getMessage().contains("target 5000") && e.getMessage().contains("row 2"), e.getMessage());
        Tensor lse = gpu(floats(1f, 1f, 1f));
        assertThrows(IllegalArgumentException.class,
                () -> TokenLogProbs.backward(z3, bad, lse, gpu(floats(1f, 1f, 1f)), IGNORE, true));
        assertArrayEquals(before, toDoubles(z3.cpu()), "a rejected in-place backward leaves the logits as they were");
        // a CPU tensor mixed with CUDA ones is named
        e = assertThrows(IllegalArgumentException.class, () -> TokenLogProbs.forward(z3, longs(0, 1, 2), IGNORE, false));
        assertTrue(e.getMessage().contains("targets"), e.getMessage());
    }

    /**
     * PREVALIDATED launches the same kernels without the host synchronisation: the same bytes
     * as the checked calls; a bad target is not reported and its row comes out NaN.
     */
    @Test
    void prevalidatedMatchesCheckedAndMakesBadTargetsNaN() {
        for (ScalarType dt : TokenLogProbsTest.DTYPES) {
            Tensor z = gpu(logits(129, 5003, dt, 4, true));
            Tensor t = gpu(targets(129, 5003, 0.25, 4));
            Tensor g = gpu(upstream(129, 4));
            TokenLogProbs.Result a = TokenLogProbs.forward(z, t, IGNORE, true);
            TokenLogProbs.Result b = TokenLogProbs.forward(z, t, IGNORE, true, 1, TokenLogProbs.TargetCheck.PREVALIDATED);
            assertArrayEquals(toDoubles(a.logp().cpu()), toDoubles(b.logp().cpu()), dt + " logp");
            assertArrayEquals(toDoubles(a.entropy().cpu()), toDoubles(b.entropy().cpu()), dt + " entropy");
            Tensor ga = TokenLogProbs.backward(z, t, a.lse(), g, IGNORE, false);
            Tensor gb = TokenLogProbs.backward(z.clone(), t, a.lse(), g, IGNORE, true, 1,
                    TokenLogProbs.TargetCheck.PREVALIDATED);
            assertArrayEquals(toDoubles(ga.cpu()), toDoubles(gb.cpu()), dt + " in-place gradient");

            Tensor bad = gpu(longs(0, 7, 99999));
            Tensor z3 = gpu(logits(3, 5003, dt, 5, false));
            TokenLogProbs.Result r = TokenLogProbs.forward(z3, bad, IGNORE, false, 1, TokenLogProbs.TargetCheck.PREVALIDATED);
            double[] logp = toDoubles(r.logp().cpu());
            assertTrue(Double.isFinite(logp[0]) && Double.isFinite(logp[1]) && Double.isNaN(logp[2]), dt + " logp");
            Tensor grad = TokenLogProbs.backward(z3, bad, r.lse(), gpu(floats(1f, 1f, 1f)), IGNORE, true, 1,
                    TokenLogProbs.TargetCheck.PREVALIDATED);
            double[] row2 = toDoubles(grad.narrow(0, 2, 1).cpu());
            for (double x : row2) {
                assertTrue(Double.isNaN(x), dt + " the bad row's gradient is NaN");
            }
            assertTrue(Double.isFinite(toDoubles(grad.narrow(0, 0, 1).cpu())[0]), dt + " good rows stay finite");
        }
    }

    @ParameterizedTest
    @EnumSource(LossType.class)
    void preferenceLossMatchesCpu(LossType type) {
        PreferenceLoss loss = new PreferenceLoss(PreferenceLossConfig.of(type).withLengthNormalised(false)
                .withLabelSmoothing(type == LossType.DPO ? 0.1 : 0));
        torch.manual_seed(type.ordinal());
        Tensor pc = torch.randn(1000).mul_(new org.bytedeco.pytorch.Scalar(10.0)).clone();
        Tensor pr = torch.randn(1000), rc = torch.randn(1000), rr = torch.randn(1000), m = torch.randn(1000);
        PreferenceLoss.Result cpu = loss.compute(PreferenceLoss.Inputs.of(pc, pr, rc, rr).withMargins(m));
        PreferenceLoss.Result dev = loss.compute(PreferenceLoss.Inputs.of(gpu(pc), gpu(pr), gpu(rc), gpu(rr))
                .withMargins(gpu(m)));
        assertEquals(cpu.loss(), dev.loss(), 1e-5 * Math.max(1, Math.abs(cpu.loss())));
        assertAllClose("grad chosen", toDoubles(cpu.gradChosen()), toDoubles(dev.gradChosen().cpu()), 1e-9, 1e-5);
        assertAllClose("grad rejected", toDoubles(cpu.gradRejected()), toDoubles(dev.gradRejected().cpu()), 1e-9, 1e-5);
        assertEquals(cpu.metrics().rewardsAccuracies(), dev.metrics().rewardsAccuracies(), 0.0);
    }
}
