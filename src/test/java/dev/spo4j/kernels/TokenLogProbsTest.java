package dev.spo4j.kernels;

import static dev.spo4j.kernels.Tensors.floats;
import static dev.spo4j.kernels.Tensors.longs;
import static dev.spo4j.kernels.Tensors.toDoubles;
import static dev.spo4j.kernels.Tensors.toLongs;
import static dev.spo4j.testing.AllClose.assertAllClose;
import static dev.spo4j.testing.AllClose.maxAbsDiff;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.stream.Stream;
import org.bytedeco.pytorch.Device;
import org.bytedeco.pytorch.DeviceOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * The token log-probs kernel against its two references: the float64 Java oracle
 * ({@link TokenLogProbsReference}) and LibTorch's composite (log_softmax, gather, autograd).
 * Kernel: native/cpu/token_logprobs.cpp; API: {@link TokenLogProbs}.
 */
class TokenLogProbsTest {
    static final long IGNORE = TokenLogProbs.DEFAULT_IGNORE_INDEX;
    static final int[] ROWS = {1, 3, 127, 1000};
    static final int[] VOCABS = {1, 2, 7, 127, 128, 129, 4096, 32000, 50257};
    static final ScalarType[] DTYPES = {ScalarType.Float, ScalarType.BFloat16, ScalarType.Half};
    static final double[] IGNORED = {0, 0.5, 1};

    /** Logits ~ N(0, 3^2); with extremes, every third row gets +1e4, -1e4 and -inf entries. */
    static Tensor logits(int rows, int vocab, ScalarType dt, long seed, boolean extremes) {
        Random rnd = new Random(seed);
        float[] x = new float[rows * vocab];
        for (int i = 0; i < x.length; i++) {
            x[i] = (float) (rnd.nextGaussian() * 3);
        }
        if (extremes && vocab >= 4) {
            for (int r = 0; r < rows; r += 3) {
                x[r * vocab + rnd.nextInt(vocab)] = 1e4f;
                x[r * vocab + rnd.nextInt(vocab)] = -1e4f;
                x[r * vocab + rnd.nextInt(vocab)] = Float.NEGATIVE_INFINITY;
            }
        }
        return floats(x, rows, vocab).to(dt);
    }

    /** Targets uniform in [0, V); a fraction of rows (spread evenly) set to ignore_index. */
    static Tensor targets(int rows, int vocab, double ignored, long seed) {
        Random rnd = new Random(seed * 31 + 7);
        long[] t = new long[rows];
        for (int r = 0; r < rows; r++) {
            t[r] = Math.floor((r + 1) * ignored) > Math.floor(r * ignored) ? IGNORE : rnd.nextInt(vocab);
        }
        return longs(t);
    }

    static Tensor upstream(int rows, long seed) {
        Random rnd = new Random(seed + 99);
        float[] g = new float[rows];
        for (int r = 0; r < rows; r++) {
            g[r] = (float) rnd.nextGaussian();
        }
        return floats(g);
    }

    static double maxAbsFinite(double[] z) {
        double m = 0;
        for (double v : z) {
            if (Double.isFinite(v)) {
                m = Math.max(m, Math.abs(v));
            }
        }
        return m;
    }

    /** Half an ulp of the dtype, relative: the rounding of a gradient stored in it. */
    static double storageRtol(ScalarType dt) {
        return dt == ScalarType.BFloat16 ? 0x1p-8 : dt == ScalarType.Half ? 0x1p-11 : 0;
    }

    static Stream<Arguments> sweep() {
        List<Arguments> cases = new ArrayList<>();
        for (int rows : ROWS) {
            for (int vocab : VOCABS) {
                boolean huge = (long) rows * vocab > 10_000_000L;
                for (ScalarType dt : DTYPES) {
                    for (double ign : IGNORED) {
                        // The two largest shapes (50M elements) run fp32 and bf16 at half ignored:
                        // the float64 oracle costs seconds each.
                        if (huge && (dt == ScalarType.Half || ign != 0.5)) {
                            continue;
                        }
                        cases.add(Arguments.of(rows, vocab, dt, ign));
                    }
                }
            }
        }
        return cases.stream();
    }

    @ParameterizedTest(name = "rows={0} V={1} {2} ignored={3}")
    @MethodSource("sweep")
    void matchesFloat64Reference(int rows, int vocab, ScalarType dt, double ignored) {
        long seed = rows * 1_000_003L + vocab;
        Tensor z = logits(rows, vocab, dt, seed, true);
        Tensor t = targets(rows, vocab, ignored, seed);
        Tensor g = upstream(rows, seed);
        TokenLogProbs.Result out = TokenLogProbs.forward(z, t, IGNORE, true);
        Tensor grad = TokenLogProbs.backward(z, t, out.lse(), g, IGNORE, false);

        double[] zd = toDoubles(z);
        long[] td = toLongs(t);
        double[] logp = new double[rows], lse = new double[rows], ent = new double[rows];
        TokenLogProbsReference.forward(zd, rows, vocab, td, IGNORE, logp, lse, ent);
        double[] gradRef = TokenLogProbsReference.backward(zd, rows, vocab, td, IGNORE, lse, toDoubles(g));

        // fp32 results of O(|logit|) values: a few fp32 ulps of the largest logit.
        double atol = 1e-5 + 3e-7 * maxAbsFinite(zd);
        assertAllClose("lse", lse, toDoubles(out.lse()), atol, 1e-6);
        assertAllClose("logp", logp, toDoubles(out.logp()), atol, 1e-6);
        assertAllClose("entropy", ent, toDoubles(out.entropy()), atol, 1e-5);
        assertEquals(dt, grad.scalar_type().intern());
        assertAllClose("grad", gradRef, toDoubles(grad), 1e-6, 1e-5 + storageRtol(dt));
    }

    /** LibTorch's composite: log_softmax -> gather (masked) -> backward(g). */
    static Tensor[] composite(Tensor z, Tensor t, Tensor g) {
        // Keep the clone itself: set_requires_grad returns a C++ reference into it, which a
        // JavaCPP wrapper must not outlive.
        Tensor x = z.detach().clone();
        x.set_requires_grad(true);
        Tensor mask = t.ne(new org.bytedeco.pytorch.Scalar(IGNORE));
        Tensor safe = t.clamp_min(new org.bytedeco.pytorch.Scalar(0L));
        Tensor ls = torch.log_softmax(x, 1);
        Tensor lp = torch.gather(ls, 1, safe.unsqueeze(1)).squeeze(1).mul(mask.to(ls.scalar_type()));
        lp.backward(g.to(lp.scalar_type()), new org.bytedeco.pytorch.BoolOptional(), false,
                new org.bytedeco.pytorch.TensorArrayRefOptional());
        Tensor grad = x.grad().clone();  // grad() is a reference into x: copy it while x lives
        java.lang.ref.Reference.reachabilityFence(x);
        return new Tensor[] {lp.detach(), grad};
    }

    @ParameterizedTest(name = "rows={0} V={1}")
    @MethodSource("compositeShapes")
    void matchesLibTorchCompositeInFp32(int rows, int vocab) {
        long seed = 17 + rows + vocab;
        Tensor z = logits(rows, vocab, ScalarType.Float, seed, false);
        Tensor t = targets(rows, vocab, 0.5, seed);
        Tensor g = upstream(rows, seed);
        TokenLogProbs.Result out = TokenLogProbs.forward(z, t, IGNORE, false);
        assertNull(out.entropy());
        Tensor grad = TokenLogProbs.backward(z, t, out.lse(), g, IGNORE, false);
        Tensor[] ref = composite(z, t, g);
        assertAllClose("logp vs composite", toDoubles(ref[0]), toDoubles(out.logp()), 2e-5, 1e-5);
        assertAllClose("grad vs composite", toDoubles(ref[1]), toDoubles(grad), 1e-6, 1e-5);
    }

    static Stream<Arguments> compositeShapes() {
        return Stream.of(Arguments.of(1, 1), Arguments.of(3, 7), Arguments.of(127, 129),
                Arguments.of(1000, 128), Arguments.of(64, 32000), Arguments.of(16, 50257));
    }

    /**
     * Low precision: judged against the float64 truth, our error must be no worse than the
     * naive same-dtype LibTorch composite's (plus 1% and a tiny absolute slack for ties in
     * rounding). Our logp is fp32 and our gradient is rounded once; the composite rounds
     * log_softmax to the dtype and then its backward again.
     */
    @ParameterizedTest(name = "{0} rows={1} V={2}")
    @MethodSource("lowPrecisionShapes")
    void lowPrecisionNoWorseThanNaiveComposite(ScalarType dt, int rows, int vocab) {
        long seed = 5 + rows * 7L + vocab;
        Tensor z = logits(rows, vocab, dt, seed, false);
        Tensor t = targets(rows, vocab, 0, seed);
        Tensor g = upstream(rows, seed);
        TokenLogProbs.Result out = TokenLogProbs.forward(z, t, IGNORE, false);
        Tensor grad = TokenLogProbs.backward(z, t, out.lse(), g, IGNORE, false);
        Tensor[] naive = composite(z, t, g);

        double[] zd = toDoubles(z);
        long[] td = toLongs(t);
        double[] logp = new double[rows], lse = new double[rows], ent = new double[rows];
        TokenLogProbsReference.forward(zd, rows, vocab, td, IGNORE, logp, lse, ent);
        double[] gradRef = TokenLogProbsReference.backward(zd, rows, vocab, td, IGNORE, lse, toDoubles(g));

        double oursLogp = maxAbsDiff(logp, toDoubles(out.logp()));
        double naiveLogp = maxAbsDiff(logp, toDoubles(naive[0]));
        double oursGrad = maxAbsDiff(gradRef, toDoubles(grad));
        double naiveGrad = maxAbsDiff(gradRef, toDoubles(naive[1]));
        assertTrue(oursLogp <= naiveLogp * 1.01 + 1e-6,
                dt + " logp error " + oursLogp + " > naive composite's " + naiveLogp);
        assertTrue(oursGrad <= naiveGrad * 1.01 + 1e-7,
                dt + " grad error " + oursGrad + " > naive composite's " + naiveGrad);
    }

    static Stream<Arguments> lowPrecisionShapes() {
        List<Arguments> a = new ArrayList<>();
        for (ScalarType dt : new ScalarType[] {ScalarType.BFloat16, ScalarType.Half}) {
            a.add(Arguments.of(dt, 127, 129));
            a.add(Arguments.of(dt, 64, 4096));
            a.add(Arguments.of(dt, 8, 50257));
        }
        return a.stream();
    }

    @ParameterizedTest(name = "{0} V={1}")
    @MethodSource("strideCases")
    void rowStrideLargerThanVocabAndInPlace(ScalarType dt, int vocab) {
        int rows = 33, pad = 5;
        Tensor wide = logits(rows, vocab + pad, dt, 42 + vocab, true);
        Tensor z = wide.narrow(1, 0, vocab);
        assertEquals(vocab + pad, z.stride(0));
        Tensor t = targets(rows, vocab, 0.5, 3);
        Tensor g = upstream(rows, 3);

        TokenLogProbs.Result strided = TokenLogProbs.forward(z, t, IGNORE, true);
        TokenLogProbs.Result packed = TokenLogProbs.forward(z.contiguous(), t, IGNORE, true);
        assertArrayEquals(toDoubles(packed.logp()), toDoubles(strided.logp()));
        assertArrayEquals(toDoubles(packed.lse()), toDoubles(strided.lse()));
        assertArrayEquals(toDoubles(packed.entropy()), toDoubles(strided.entropy()));

        Tensor fresh = TokenLogProbs.backward(z, t, strided.lse(), g, IGNORE, false);
        assertTrue(fresh.is_contiguous());
        double[] padBefore = toDoubles(wide.narrow(1, vocab, pad));
        Tensor inPlace = TokenLogProbs.backward(z, t, strided.lse(), g, IGNORE, true);
        assertSame(z, inPlace);
        assertArrayEquals(toDoubles(fresh), toDoubles(inPlace), "in place == out of place, bit for bit");
        assertArrayEquals(padBefore, toDoubles(wide.narrow(1, vocab, pad)), "padding columns untouched");
    }

    static Stream<Arguments> strideCases() {
        List<Arguments> a = new ArrayList<>();
        for (ScalarType dt : DTYPES) {
            for (int v : new int[] {1, 15, 16, 17, 4099}) {
                a.add(Arguments.of(dt, v));
            }
        }
        return a.stream();
    }

    @Test
    void extremeLogitsGiveNoNaN() {
        float inf = Float.POSITIVE_INFINITY;
        Tensor z = floats(new float[] {
                1e4f, -1e4f, 0f, -inf,        // target 0: the huge one
                1e4f, -1e4f, 0f, -inf,        // target 1: -1e4 - 1e4
                -inf, -inf, 3f, -inf,         // one finite logit
                -inf, -inf, -inf, 1e4f,       // target at a -inf entry: logp = -inf, no NaN
        }, 4, 4);
        Tensor t = longs(0, 1, 2, 0);
        TokenLogProbs.Result out = TokenLogProbs.forward(z, t, IGNORE, true);
        double[] logp = toDoubles(out.logp());
        assertEquals(0.0, logp[0], 0.0);
        assertEquals(-2e4, logp[1], 1e-3);
        assertEquals(0.0, logp[2], 0.0);
        assertEquals(Double.NEGATIVE_INFINITY, logp[3]);
        for (double e : toDoubles(out.entropy())) {
            assertEquals(0.0, e, 1e-6);  // every row is (numerically) one-hot
        }
        Tensor grad = TokenLogProbs.backward(z, t, out.lse(), floats(1f, 1f, 1f, 1f), IGNORE, false);
        for (double v : toDoubles(grad)) {
            assertFalse(Double.isNaN(v) || Double.isInfinite(v), "gradient " + v);
        }
        assertEquals(1.0, toDoubles(grad)[3 * 4], 0.0);  // d logp/d z_t = 1 - p_t = 1
    }

    /**
     * Logits spanning more than Float.MAX_VALUE (-1e38 and +1e38 in one row): once the running
     * max jumps by 2e38 after mass has accumulated, rescaling the entropy term computed
     * 0 * (-inf) = NaN. V > 2048 so that the CPU kernel's chunks rescale; every term but the
     * maxima is exactly 0, so the entropy is log(k) for k maxima.
     */
    @Test
    void logitsSpanningMoreThanFloatMaxGiveAFiniteEntropy() {
        int v = 5000;
        float[] z = new float[2 * v];
        java.util.Random r = new java.util.Random(5);
        for (int i = 0; i < z.length; i++) {
            z[i] = r.nextFloat() < 0.05f ? -1e38f : (float) r.nextGaussian();
        }
        z[3000] = 1e38f;                 // row 0: one maximum, in the second chunk
        z[v + 2500] = 1e38f;             // row 1: two maxima
        z[v + 4999] = 1e38f;
        TokenLogProbs.Result out = TokenLogProbs.forward(floats(z, 2, v), longs(3000, 7), IGNORE, true);
        double[] ent = toDoubles(out.entropy());
        assertEquals(0.0, ent[0], 1e-6);
        assertEquals(Math.log(2), ent[1], 1e-6);
        assertEquals(0.0, toDoubles(out.logp())[0], 0.0);
        assertTrue(toDoubles(out.logp())[1] < -1e37, "a small logit next to 1e38: logp about -1e38");
    }

    /**
     * PREVALIDATED only changes how CUDA calls synchronise: on the CPU the results are the same
     * and a bad target is still an exception.
     */
    @Test
    void prevalidatedTargetsOnTheCpuAreStillCheckedAndGiveTheSameResults() {
        Tensor z = logits(65, 777, ScalarType.BFloat16, 3, true);
        Tensor t = targets(65, 777, 0.3, 3);
        Tensor g = upstream(65, 3);
        TokenLogProbs.Result a = TokenLogProbs.forward(z, t, IGNORE, true, 2);
        TokenLogProbs.Result b = TokenLogProbs.forward(z, t, IGNORE, true, 2, TokenLogProbs.TargetCheck.PREVALIDATED);
        assertArrayEquals(toDoubles(a.logp()), toDoubles(b.logp()));
        assertArrayEquals(toDoubles(a.entropy()), toDoubles(b.entropy()));
        assertArrayEquals(toDoubles(TokenLogProbs.backward(z, t, a.lse(), g, IGNORE, false, 2)),
                toDoubles(TokenLogProbs.backward(z, t, b.lse(), g, IGNORE, false, 2,
                        TokenLogProbs.TargetCheck.PREVALIDATED)));
        Tensor small = logits(4, 10, ScalarType.Float, 1, false);
        rejects(() -> TokenLogProbs.forward(small, longs(0, 1, 10, 2), IGNORE, false, 1,
                TokenLogProbs.TargetCheck.PREVALIDATED), "target 10", "row 2");
        rejects(() -> TokenLogProbs.forward(small, longs(0, 1, 2, 3), IGNORE, false, 1, null), "target check is null");
    }

    @Test
    void rowWithNoFiniteLogitIsAnErrorUnlessIgnored() {
        float inf = Float.POSITIVE_INFINITY;
        Tensor z = floats(new float[] {0f, 1f, -inf, -inf}, 2, 2);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> TokenLogProbs.forward(z, longs(1, 0), IGNORE, false));
        assertTrue(e.getMessage().contains("row 1"), e.getMessage());
        TokenLogProbs.Result ok = TokenLogProbs.forward(z, longs(1, IGNORE), IGNORE, false);
        assertEquals(0.0, toDoubles(ok.logp())[1]);
    }

    @Test
    void threadCountDoesNotChangeResults() {
        Tensor z = logits(257, 3001, ScalarType.Float, 9, true);
        Tensor t = targets(257, 3001, 0.5, 9);
        Tensor g = upstream(257, 9);
        TokenLogProbs.Result one = TokenLogProbs.forward(z, t, IGNORE, true, 1);
        for (int threads : new int[] {2, 3, 8}) {
            TokenLogProbs.Result many = TokenLogProbs.forward(z, t, IGNORE, true, threads);
            assertArrayEquals(toDoubles(one.logp()), toDoubles(many.logp()));
            assertArrayEquals(toDoubles(one.entropy()), toDoubles(many.entropy()));
            assertArrayEquals(toDoubles(TokenLogProbs.backward(z, t, one.lse(), g, IGNORE, false, 1)),
                    toDoubles(TokenLogProbs.backward(z, t, one.lse(), g, IGNORE, false, threads)));
        }
    }

    // ---- bad inputs: IllegalArgumentException naming the problem; the JVM goes on --------

    static IllegalArgumentException rejects(org.junit.jupiter.api.function.Executable call, String... words) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, call);
        for (String w : words) {
            assertTrue(e.getMessage().contains(w), "message '" + e.getMessage() + "' lacks '" + w + "'");
        }
        return e;
    }

    @Test
    void targetOutOfRangeIsRejectedAndNothingIsOverwritten() {
        Tensor z = logits(4, 10, ScalarType.Float, 1, false);
        rejects(() -> TokenLogProbs.forward(z, longs(0, 1, 10, 2), IGNORE, false), "target 10", "row 2", "[0, 10)");
        rejects(() -> TokenLogProbs.forward(z, longs(0, -1, 3, 2), IGNORE, false), "target -1", "row 1");
        TokenLogProbs.Result ok = TokenLogProbs.forward(z, longs(0, 1, 2, 3), IGNORE, false);
        double[] before = toDoubles(z);
        rejects(() -> TokenLogProbs.backward(z, longs(0, 1, 2, 99), ok.lse(), floats(1, 1, 1, 1), IGNORE, true),
                "target 99", "row 3");
        assertArrayEquals(before, toDoubles(z), "a rejected in-place backward leaves the logits as they were");
    }

    @Test
    void shapeDtypeLayoutAndEmptinessAreChecked() {
        Tensor z = logits(4, 10, ScalarType.Float, 1, false);
        Tensor t = longs(0, 1, 2, 3);
        rejects(() -> TokenLogProbs.forward(z, longs(0, 1, 2), IGNORE, false), "targets", "[4]");
        rejects(() -> TokenLogProbs.forward(z.reshape(2, 2, 10), t, IGNORE, false), "2 dimensions");
        rejects(() -> TokenLogProbs.forward(z.to(ScalarType.Double), t, IGNORE, false), "Double");
        rejects(() -> TokenLogProbs.forward(z, t.to(ScalarType.Int), IGNORE, false), "targets", "Int");
        rejects(() -> TokenLogProbs.forward(logits(10, 4, ScalarType.Float, 1, false).t(), t, IGNORE, false),
                "column stride");
        rejects(() -> TokenLogProbs.forward(z.narrow(0, 0, 0), longs(), IGNORE, false), "at least one row");
        rejects(() -> TokenLogProbs.forward(z, t, 3, false), "ignoreIndex 3");
        rejects(() -> TokenLogProbs.forward(null, t, IGNORE, false), "logits");
        TokenLogProbs.Result ok = TokenLogProbs.forward(z, t, IGNORE, false);
        rejects(() -> TokenLogProbs.backward(z, t, ok.lse().narrow(0, 0, 3), floats(1, 1, 1, 1), IGNORE, false), "lse");
        rejects(() -> TokenLogProbs.backward(z, t, ok.lse(), floats(1, 1, 1, 1).to(ScalarType.Double), IGNORE, false),
                "gradLogp", "Double");
        Tensor needsGrad = z.clone();
        needsGrad.set_requires_grad(true);
        rejects(() -> TokenLogProbs.backward(needsGrad, t, ok.lse(), floats(1, 1, 1, 1), IGNORE, true), "require grad");
    }

    @Test
    void tensorsOnOtherDevicesAreRejected() {
        Tensor meta = torch.empty(new long[] {2, 3}, new TensorOptions(ScalarType.Float)
                .device(new DeviceOptional(new Device("meta"))), null);
        rejects(() -> TokenLogProbs.forward(meta, longs(0, 1), IGNORE, false), "meta", "cpu or cuda");
    }

    @Test
    void cudaTensorsWithoutCudaAreAClearError() {
        Assumptions.assumeFalse(CudaKernels.available(), "a usable CUDA device is present");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, CudaKernels::require);
        assertTrue(e.getMessage().contains("CUDA"), e.getMessage());
    }
}
