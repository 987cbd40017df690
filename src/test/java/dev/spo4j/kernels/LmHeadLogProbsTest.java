package dev.spo4j.kernels;

import static dev.spo4j.kernels.Tensors.floats;
import static dev.spo4j.kernels.Tensors.longs;
import static dev.spo4j.kernels.Tensors.toDoubles;
import static dev.spo4j.testing.AllClose.assertAllClose;
import static dev.spo4j.testing.AllClose.maxAbsDiff;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import java.util.Random;
import java.util.stream.Stream;
import org.bytedeco.pytorch.BoolOptional;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.ScalarTypeOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorArrayRefOptional;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * The fused LM head ({@link LmHeadLogProbs}) against a float64 truth (LibTorch's composite
 * linear -> log_softmax -> gather -> autograd in float64 on the same rounded inputs), against
 * the same composite in the tensors' own dtype, and against the materialised path (full logits,
 * then {@link TokenLogProbs}): logp, lse, entropy, dL/dh and dL/dW, in both regimes (recompute
 * and single pass), with chunk sizes that leave a short last chunk, single-row chunks and
 * chunks whose rows are all ignored.
 */
class LmHeadLogProbsTest {
    static final long IGNORE = TokenLogProbs.DEFAULT_IGNORE_INDEX;

    /** h [n, hid] ~ N(0, 1), W [v, hid] ~ N(0, 0.5^2) (logits of std ~2 at hid = 16), rounded to dt. */
    static Tensor[] inputs(int n, int hid, int v, ScalarType dt, long seed) {
        Random rnd = new Random(seed);
        float[] h = new float[n * hid], w = new float[v * hid], g = new float[n];
        for (int i = 0; i < h.length; i++) {
            h[i] = (float) rnd.nextGaussian();
        }
        for (int i = 0; i < w.length; i++) {
            w[i] = (float) (rnd.nextGaussian() * 0.5);
        }
        for (int i = 0; i < n; i++) {
            g[i] = (float) rnd.nextGaussian();
        }
        return new Tensor[] {floats(h, n, hid).to(dt), floats(w, v, hid).to(dt), floats(g, n)};
    }

    /** Targets in [0, v); rows in [ignoreFrom, ignoreTo) and every 5th row are ignored. */
    static Tensor targets(int n, int v, int ignoreFrom, int ignoreTo, long seed) {
        Random rnd = new Random(seed ^ 0x5eed);
        long[] t = new long[n];
        for (int i = 0; i < n; i++) {
            t[i] = (i >= ignoreFrom && i < ignoreTo) || i % 5 == 4 ? IGNORE : rnd.nextInt(v);
        }
        return longs(t);
    }

    /**
     * LibTorch's composite in {@code dt}: logits = h W^T, log_softmax, gather, masked, then
     * autograd of sum(g logp). Returns {logp, lse, entropy, dh, dW}.
     */
    static Tensor[] composite(Tensor h0, Tensor w0, Tensor t, Tensor g, ScalarType dt) {
        Tensor h = h0.detach().to(dt).clone();
        Tensor w = w0.detach().to(dt).clone();
        h.set_requires_grad(true);
        w.set_requires_grad(true);
        Tensor z = torch.linear(h, w);
        Tensor mask = t.ne(new Scalar(IGNORE));
        Tensor ls = torch.log_softmax(z, 1);
        Tensor lp = torch.gather(ls, 1, t.clamp_min(new Scalar(0L)).unsqueeze(1)).squeeze(1)
                .mul(mask.to(ls.scalar_type()));
        lp.backward(g.to(dt), new BoolOptional(), false, new TensorArrayRefOptional());
        Tensor zd = z.detach();
        Tensor lse = torch.logsumexp(zd, new long[] {1}, false).mul(mask.to(dt));
        Tensor p = torch.softmax(zd, 1, new ScalarTypeOptional());
        Tensor ent = torch.logsumexp(zd, new long[] {1}, false).sub(p.mul(zd).sum(new long[] {1}, false, null))
                .mul(mask.to(dt));
        Tensor dh = h.grad().clone(), dw = w.grad().clone();
        java.lang.ref.Reference.reachabilityFence(h);
        java.lang.ref.Reference.reachabilityFence(w);
        return new Tensor[] {lp.detach(), lse, ent, dh, dw};
    }

    /** The materialised path: full logits in dt, the kernel forward and backward, dh = dz W, dW = dz^T h. */
    static Tensor[] materialised(Tensor h, Tensor w, Tensor t, Tensor g) {
        Tensor z = torch.mm(h, w.t());
        TokenLogProbs.Result r = TokenLogProbs.forward(z, t, IGNORE, true);
        Tensor dz = TokenLogProbs.backward(z, t, r.lse(), g, IGNORE, true);
        return new Tensor[] {r.logp(), r.lse(), r.entropy(), torch.mm(dz, w),
                torch.mm(dz.to(ScalarType.Float).t(), h.to(ScalarType.Float))};
    }

    static double[] masked(Tensor x, Tensor t) {
        return toDoubles(x.to(ScalarType.Double).mul(t.ne(new Scalar(IGNORE)).to(ScalarType.Double)));
    }

    /** Cases: rows, hidden, V, chunk rows, ignored range. */
    static Stream<Arguments> cases() {
        return Stream.of(
                Arguments.of(37, 16, 131, 8, 0, 0),       // N not a multiple of the chunk, V odd
                Arguments.of(5, 8, 257, 1, 0, 0),         // single-row chunks
                Arguments.of(40, 16, 129, 8, 8, 24),      // two chunks whose rows are all ignored
                Arguments.of(64, 32, 1000, 64, 0, 0),     // one chunk
                Arguments.of(23, 24, 4099, 7, 0, 3));     // V just off a vector width
    }

    @ParameterizedTest(name = "fp32 N={0} H={1} V={2} chunk={3} ignored=[{4},{5})")
    @MethodSource("cases")
    void fp32MatchesFloat64TruthCompositeAndMaterialised(int n, int hid, int v, int chunk, int i0, int i1) {
        Tensor[] in = inputs(n, hid, v, ScalarType.Float, 11L * n + v);
        Tensor t = targets(n, v, i0, i1, n);
        LmHeadLogProbs head = new LmHeadLogProbs((long) chunk * v * 4, 1);
        assertEquals(chunk, head.chunkRows(v, ScalarType.Float));
        Tensor[] truth = composite(in[0], in[1], t, in[2], ScalarType.Double);
        Tensor[] comp = composite(in[0], in[1], t, in[2], ScalarType.Float);
        Tensor[] mat = materialised(in[0], in[1], t, in[2]);

        LmHeadLogProbs.Result fwd = head.forward(in[0], in[1], t, IGNORE, true, TokenLogProbs.TargetCheck.CHECKED);
        LmHeadLogProbs.Gradients gr = head.backward(in[0], in[1], t, fwd.lse(), in[2], IGNORE, true,
                TokenLogProbs.TargetCheck.CHECKED);
        LmHeadLogProbs.Pass one = head.forwardBackward(in[0], in[1], t, in[2], IGNORE, true, true,
                TokenLogProbs.TargetCheck.CHECKED);
        LmHeadLogProbs.Gradients rows = head.rowChunkBackward(in[0], in[1], t, fwd.lse(), in[2], IGNORE, true,
                TokenLogProbs.TargetCheck.CHECKED);  // CUDA's backward, here on the CPU
        Tensor[][] fused = {
            {fwd.logp(), fwd.lse(), fwd.entropy(), gr.hidden(), gr.weight()},
            {one.result().logp(), one.result().lse(), one.result().entropy(), one.grads().hidden(),
                one.grads().weight()},
            {fwd.logp(), fwd.lse(), fwd.entropy(), rows.hidden(), rows.weight()}};
        String[] names = {"logp", "lse", "entropy", "dh", "dW"};
        for (Tensor[] f : fused) {
            for (int k = 0; k < 5; k++) {
                double[] got = k < 3 ? masked(f[k], t) : toDoubles(f[k]);
                double[] want = k < 3 ? masked(truth[k], t) : toDoubles(truth[k]);
                assertAllClose(names[k] + " vs float64 truth", want, got, 2e-5, 2e-5);
                assertAllClose(names[k] + " vs fp32 composite", k < 3 ? masked(comp[k], t) : toDoubles(comp[k]),
                        got, 2e-5, 2e-5);
                assertAllClose(names[k] + " vs materialised", k < 3 ? masked(mat[k], t) : toDoubles(mat[k]),
                        got, 1e-5, 1e-5);
            }
        }
        // ignored rows: logp 0 and a zero gradient row
        double[] dh = toDoubles(gr.hidden());
        long[] tl = Tensors.toLongs(t);
        for (int r = 0; r < n; r++) {
            if (tl[r] == IGNORE) {
                for (int j = 0; j < hid; j++) {
                    assertEquals(0.0, dh[r * hid + j], "dh of ignored row " + r);
                }
            }
        }
        // the mean logit of each row (the logits/* metrics) without reading logits
        Tensor zMean = torch.mm(in[0].to(ScalarType.Double), in[1].to(ScalarType.Double).t())
                .mean(new long[] {1}, false, new ScalarTypeOptional());
        assertAllClose("logit mean", toDoubles(zMean), toDoubles(fwd.logitMean()), 1e-5, 1e-5);
    }

    /**
     * bf16 and fp16: judged against the float64 truth on the same inputs, each output no worse than
     * LibTorch's naive composite in that dtype plus 5% and one bf16 ulp of the output's largest value
     * (2^-8 max|truth|: two correctly rounded bf16 paths can differ by one final rounding). The
     * GEMM rounds the logits to the narrow dtype in both; the kernel then works in fp32, and dW's GEMM
     * products (one per row block in the tiled backward, one per chunk in the single pass and
     * the row-chunk backward) are added in fp32, or, with one row block, are dW itself (bf16,
     * the one-hot term put into dz first). All three backwards are held to that bound.
     */
    @ParameterizedTest(name = "{6} N={0} H={1} V={2} chunk={3} ignored=[{4},{5})")
    @MethodSource("halfCases")
    void halfNoWorseThanNaiveComposite(int n, int hid, int v, int chunk, int i0, int i1, ScalarType dt) {
        Tensor[] in = inputs(n, hid, v, dt, 7L * n + v);
        Tensor t = targets(n, v, i0, i1, n + 1);
        LmHeadLogProbs head = new LmHeadLogProbs((long) chunk * v * 2, 1);
        assertEquals(chunk, head.chunkRows(v, dt));
        Tensor[] truth = composite(in[0], in[1], t, in[2], ScalarType.Double);
        Tensor[] naive = composite(in[0], in[1], t, in[2], dt);
        LmHeadLogProbs.Result fwd = head.forward(in[0], in[1], t, IGNORE, true, TokenLogProbs.TargetCheck.CHECKED);
        LmHeadLogProbs.Gradients gr = head.backward(in[0], in[1], t, fwd.lse(), in[2], IGNORE, true,
                TokenLogProbs.TargetCheck.CHECKED);
        LmHeadLogProbs.Pass one = head.forwardBackward(in[0], in[1], t, in[2], IGNORE, true, true,
                TokenLogProbs.TargetCheck.CHECKED);
        assertNoWorseThanNaive("recompute", truth, naive, t,
                new Tensor[] {fwd.logp(), fwd.lse(), fwd.entropy(), gr.hidden(), gr.weight()});
        assertNoWorseThanNaive("single pass", truth, naive, t, new Tensor[] {one.result().logp(),
                one.result().lse(), one.result().entropy(), one.grads().hidden(), one.grads().weight()});
        LmHeadLogProbs.Gradients rows = head.rowChunkBackward(in[0], in[1], t, fwd.lse(), in[2], IGNORE, true,
                TokenLogProbs.TargetCheck.CHECKED);
        assertNoWorseThanNaive("row chunks", truth, naive, t,
                new Tensor[] {fwd.logp(), fwd.lse(), fwd.entropy(), rows.hidden(), rows.weight()});
        assertEquals(dt, gr.hidden().scalar_type().intern());
        // the tiled backward writes a bf16/fp16 dW when all rows fit one row block, fp32 otherwise
        boolean oneBlock = head.backwardTile(n, v, hid, dt, true).rows() >= n;
        assertEquals(oneBlock ? dt : ScalarType.Float, gr.weight().scalar_type().intern());
        assertEquals(dt, one.grads().hidden().scalar_type().intern());
        assertEquals(ScalarType.Float, one.grads().weight().scalar_type().intern());
    }

    /**
     * The cases in bf16 and in fp16 (Half: the same paths with the f16 conversions, the native
     * widening add's included; judged with the bf16 slack, looser than fp16's own rounding).
     */
    static Stream<Arguments> halfCases() {
        return Stream.of(ScalarType.BFloat16, ScalarType.Half).flatMap(dt -> cases().map(a -> {
            Object[] x = a.get();
            return Arguments.of(x[0], x[1], x[2], x[3], x[4], x[5], dt);
        }));
    }

    /** Each of logp, lse, entropy, dh, dW within the naive bf16 composite's error + 5% + one bf16 ulp. */
    static void assertNoWorseThanNaive(String regime, Tensor[] truth, Tensor[] naive, Tensor t, Tensor[] fused) {
        String[] names = {"logp", "lse", "entropy", "dh", "dW"};
        for (int k = 0; k < 5; k++) {
            double[] want = k < 3 ? masked(truth[k], t) : toDoubles(truth[k]);
            double errFused = maxAbsDiff(want, k < 3 ? masked(fused[k], t) : toDoubles(fused[k]));
            double errNaive = maxAbsDiff(want, k < 3 ? masked(naive[k], t) : toDoubles(naive[k]));
            double ulp = Math.scalb(maxAbs(want), -8);
            assertTrue(errFused <= errNaive * 1.05 + ulp, regime + " " + names[k] + ": fused error " + errFused
                    + " > the naive composite's (same dtype) " + errNaive + " + 5% + " + ulp);
        }
    }

    /**
     * The CPU recompute backward's tiles: a budget of 8 rows x 256 columns cuts 37 rows into 5
     * row blocks (the last of 5 rows) and V = 1000 into 4 vocabulary slices (the last of 232),
     * with a whole row block ignored; dh and dW against the float64 truth (fp32) and within the
     * naive composite's error (bf16), and the tile geometry itself.
     */
    @ParameterizedTest(name = "{0}")
    @MethodSource("tiledDtypes")
    void tiledBackwardOverRowBlocksAndVocabularySlices(ScalarType dt) {
        int n = 37, hid = 16, v = 1000;
        Tensor[] in = inputs(n, hid, v, dt, 4242);
        Tensor t = targets(n, v, 8, 16, 99);
        long elem = dt == ScalarType.Float ? 4 : 2;
        // bf16 also holds a tile's dh product [8, 16] and, with several row blocks, its dW product
        // [256, 16] in bf16 (37 rows in one block would leave fewer than 256 columns)
        long budget = 8 * 256 * elem + (elem == 2 ? 8 * hid * 2 + 256 * hid * 2 : 0);
        LmHeadLogProbs head = new LmHeadLogProbs(budget, 1);
        assertEquals(new LmHeadLogProbs.Tile(8, 256), head.backwardTile(n, v, hid, dt, true));
        LmHeadLogProbs.Result fwd = head.forward(in[0], in[1], t, IGNORE, true, TokenLogProbs.TargetCheck.CHECKED);
        LmHeadLogProbs.Gradients gr = head.backward(in[0], in[1], t, fwd.lse(), in[2], IGNORE, true,
                TokenLogProbs.TargetCheck.CHECKED);
        Tensor[] truth = composite(in[0], in[1], t, in[2], ScalarType.Double);
        if (dt == ScalarType.Float) {
            assertAllClose("dh vs float64 truth", toDoubles(truth[3]), toDoubles(gr.hidden()), 2e-5, 2e-5);
            assertAllClose("dW vs float64 truth", toDoubles(truth[4]), toDoubles(gr.weight()), 2e-5, 2e-5);
        } else {
            Tensor[] naive = composite(in[0], in[1], t, in[2], dt);
            assertNoWorseThanNaive("tiled", truth, naive, t,
                    new Tensor[] {fwd.logp(), fwd.lse(), fwd.entropy(), gr.hidden(), gr.weight()});
        }
        // the ignored row block (rows 8-15) has a zero gradient
        double[] dh = toDoubles(gr.hidden());
        for (int j = 8 * hid; j < 16 * hid; j++) {
            assertEquals(0.0, dh[j], "dh of an ignored row");
        }
    }

    /**
     * bf16 with one row block over vocabulary slices: dW is written in bf16, each slice one GEMM
     * of a dz that has the one-hot term put back after dh's product. 37 rows x 4 slices of 256
     * columns (the last of 232), targets in every slice and a third of the rows ignored; within
     * the naive bf16 composite's error, like the fp32-accumulated paths.
     */
    @Test
    void bf16OneRowBlockWritesDwInBf16() {
        int n = 37, hid = 16, v = 1000;
        ScalarType dt = ScalarType.BFloat16;
        Tensor[] in = inputs(n, hid, v, dt, 5151);
        Tensor t = targets(n, v, 20, 32, 17);
        long budget = n * 256 * 2 + n * hid * 2;  // the tile and dh's product: one row block has no dW product
        LmHeadLogProbs head = new LmHeadLogProbs(budget, 1);
        assertEquals(new LmHeadLogProbs.Tile(n, 256), head.backwardTile(n, v, hid, dt, true));
        LmHeadLogProbs.Result fwd = head.forward(in[0], in[1], t, IGNORE, true, TokenLogProbs.TargetCheck.CHECKED);
        LmHeadLogProbs.Gradients gr = head.backward(in[0], in[1], t, fwd.lse(), in[2], IGNORE, true,
                TokenLogProbs.TargetCheck.CHECKED);
        assertEquals(ScalarType.BFloat16, gr.weight().scalar_type().intern());
        long[] targetsPerSlice = new long[4];
        for (double x : toDoubles(t)) {
            if (x != IGNORE) {
                targetsPerSlice[(int) x / 256]++;
            }
        }
        for (long c : targetsPerSlice) {
            assertTrue(c > 0, "every slice holds a target: " + Arrays.toString(targetsPerSlice));
        }
        Tensor[] truth = composite(in[0], in[1], t, in[2], ScalarType.Double);
        Tensor[] naive = composite(in[0], in[1], t, in[2], dt);
        assertNoWorseThanNaive("one row block", truth, naive, t,
                new Tensor[] {fwd.logp(), fwd.lse(), fwd.entropy(), gr.hidden(), gr.weight()});
    }

    static Stream<ScalarType> tiledDtypes() {
        return Stream.of(ScalarType.Float, ScalarType.BFloat16);
    }

    /** Tiles at the shapes the benchmark uses: whole-batch row blocks up to 8192 rows, slices within budget. */
    @Test
    void backwardTilesAtRealShapes() {
        LmHeadLogProbs head = new LmHeadLogProbs();
        LmHeadLogProbs.Tile q = head.backwardTile(8192, 151936, 896, ScalarType.Float, true);
        assertEquals(new LmHeadLogProbs.Tile(8192, 8192), q);
        LmHeadLogProbs.Tile big = head.backwardTile(20000, 151936, 896, ScalarType.Float, true);
        assertEquals(LmHeadLogProbs.MAX_TILE_ROWS, big.rows());
        LmHeadLogProbs.Tile b = head.backwardTile(2048, 128256, 4096, ScalarType.BFloat16, true);
        assertEquals(2048, b.rows());
        long bytes = b.rows() * b.columns() * 2 + b.rows() * 4096 * 2;  // one row block: no dW product
        assertTrue(bytes <= LmHeadLogProbs.DEFAULT_CHUNK_BYTES && b.columns() >= 4096, b + ": " + bytes + " bytes");
    }

    static double maxAbs(double[] x) {
        double m = 0;
        for (double d : x) {
            m = Math.max(m, Math.abs(d));
        }
        return m;
    }

    /**
     * The single pass over whole groups ({@link LmHeadLogProbs#forwardBackwardGroups}): every
     * chunk is whole groups of consecutive rows within the budget, the chunks cover the rows in
     * order, the function sees each chunk's log-probs before that chunk's backward, and a g
     * computed from them (here nonlinear in the group's summed log-prob, as a pair loss is) gives
     * the float64 truth's dh and dW for that g: fp32 within 2e-5, bf16 no worse than the naive
     * composite. The budget holds 2 groups of fp32 rows, 3 of bf16 (next to dW's product slice).
     */
    @ParameterizedTest(name = "{0}")
    @MethodSource("tiledDtypes")
    void groupPassHandsEachChunksLogProbsToItsGradient(ScalarType dt) {
        int n = 24, hid = 8, v = 37, group = 6;
        Tensor[] in = inputs(n, hid, v, dt, 606);
        Tensor t = targets(n, v, 6, 12, 66);  // the second group is all ignored
        long budget = 13L * v * 4;
        LmHeadLogProbs head = new LmHeadLogProbs(budget, 1);
        long perChunk = dt == ScalarType.Float ? 12 : 18;
        Tensor seen = torch.zeros(new long[] {n}, new TensorOptions(ScalarType.Float));
        Tensor gUsed = torch.zeros(new long[] {n}, new TensorOptions(ScalarType.Float));
        java.util.List<long[]> calls = new java.util.ArrayList<>();
        LmHeadLogProbs.Pass p = head.forwardBackwardGroups(in[0], in[1], t, group, (r0, k, logp) -> {
            calls.add(new long[] {r0, k});
            seen.narrow(0, r0, k).copy_(logp);
            // g per row: 0.3 + 0.1 tanh(sum of its group's logp)
            Tensor sums = logp.view(k / group, group).sum(new long[] {1}, false, null);
            Tensor g = torch.tanh(sums).mul(new Scalar(0.1)).add(new Scalar(0.3)).unsqueeze(1)
                    .expand(k / group, group).contiguous().view(-1);
            gUsed.narrow(0, r0, k).copy_(g);
            return g;
        }, IGNORE, true, true, TokenLogProbs.TargetCheck.CHECKED);
        long next = 0;
        for (long[] c : calls) {
            assertEquals(next, c[0], "chunks in order");
            assertEquals(0, c[1] % group, "whole groups");
            assertTrue(c[1] <= perChunk, "chunk of " + c[1] + " rows within the budget's " + perChunk);
            next += c[1];
        }
        assertEquals(n, next);
        assertEquals(perChunk, calls.get(0)[1]);
        assertAllClose("seen logp = returned logp", toDoubles(p.result().logp()), toDoubles(seen), 0, 0);
        Tensor[] truth = composite(in[0], in[1], t, gUsed, ScalarType.Double);
        Tensor[] fused = {p.result().logp(), p.result().lse(), p.result().entropy(), p.grads().hidden(),
            p.grads().weight()};
        if (dt == ScalarType.Float) {
            String[] names = {"logp", "lse", "entropy", "dh", "dW"};
            for (int k = 0; k < 5; k++) {
                assertAllClose(names[k] + " vs float64 truth", k < 3 ? masked(truth[k], t) : toDoubles(truth[k]),
                        k < 3 ? masked(fused[k], t) : toDoubles(fused[k]), 2e-5, 2e-5);
            }
        } else {
            assertNoWorseThanNaive("groups", truth, composite(in[0], in[1], t, gUsed, dt), t, fused);
        }
        // the same g given in advance: forwardBackward's values
        LmHeadLogProbs.Pass known = head.forwardBackward(in[0], in[1], t, gUsed, IGNORE, true, true,
                TokenLogProbs.TargetCheck.CHECKED);
        assertAllClose("dh vs forwardBackward", toDoubles(known.grads().hidden()), toDoubles(p.grads().hidden()),
                1e-6, 1e-5);
    }

    /**
     * Groups that do not divide the rows or do not fit the budget: refused before anything is
     * computed; a gradient of the wrong shape, dtype or none: refused at the chunk that returns it.
     */
    @Test
    void groupPassRejectsBadGroupsAndGradients() {
        Tensor[] in = inputs(12, 8, 17, ScalarType.Float, 2);
        Tensor h = in[0], w = in[1];
        Tensor t = targets(12, 17, 0, 0, 2);
        LmHeadLogProbs head = new LmHeadLogProbs(4L * 17 * 4, 1);  // 4 rows of logits
        TokenLogProbs.TargetCheck c = TokenLogProbs.TargetCheck.CHECKED;
        LmHeadLogProbs.ChunkGradient ones = (r0, k, logp) -> torch.ones(new long[] {k});
        assertTrue(head.groupsFit(12, 4, 17, 8, ScalarType.Float, true));
        assertTrue(!head.groupsFit(12, 6, 17, 8, ScalarType.Float, true));
        // bf16 with a weight gradient: 48000 bytes leave 1 row per chunk beside dW's product
        // slice (11 rows of H = 256): 600 groups of 1 row take 600 x 1819 products, over the limit
        LmHeadLogProbs tiny = new LmHeadLogProbs(48_000, 1);
        assertEquals(1, tiny.singlePassRows(20000, 256, ScalarType.BFloat16, true));
        assertTrue(!tiny.groupsFit(600, 1, 20000, 256, ScalarType.BFloat16, true));
        assertTrue(tiny.groupsFit(600, 1, 20000, 256, ScalarType.BFloat16, false));
        assertMessage(() -> head.forwardBackwardGroups(h, w, t, 6, ones, IGNORE, false, true, c),
                "smaller than one group of 6 rows");
        assertMessage(() -> head.forwardBackwardGroups(h, w, t, 5, ones, IGNORE, false, true, c),
                "group of 5 rows for 12 rows");
        assertMessage(() -> head.forwardBackwardGroups(h, w, t, 0, ones, IGNORE, false, true, c), "group of 0");
        assertMessage(() -> head.forwardBackwardGroups(h, w, t, 3, null, IGNORE, false, true, c),
                "chunk gradient is null");
        assertMessage(() -> head.forwardBackwardGroups(h, w, t, 3, (r0, k, logp) -> torch.ones(new long[] {k + 1}),
                IGNORE, false, true, c), "chunk gradient");
        assertMessage(() -> head.forwardBackwardGroups(h, w, t, 3,
                (r0, k, logp) -> torch.ones(new long[] {k}).to(ScalarType.Double), IGNORE, false, true, c),
                "chunk gradient");
        assertMessage(() -> head.forwardBackwardGroups(h, w, t, 3, (r0, k, logp) -> null, IGNORE, false, true, c),
                "is null");
    }

    @Test
    void frozenHeadSkipsTheWeightGradient() {
        Tensor[] in = inputs(9, 8, 31, ScalarType.Float, 3);
        Tensor t = targets(9, 31, 0, 0, 3);
        LmHeadLogProbs head = new LmHeadLogProbs(4L * 31 * 4, 1);
        LmHeadLogProbs.Result fwd = head.forward(in[0], in[1], t, IGNORE, false, TokenLogProbs.TargetCheck.CHECKED);
        assertNull(fwd.entropy());
        LmHeadLogProbs.Gradients gr = head.backward(in[0], in[1], t, fwd.lse(), in[2], IGNORE, false,
                TokenLogProbs.TargetCheck.CHECKED);
        assertNull(gr.weight());
        Tensor[] truth = composite(in[0], in[1], t, in[2], ScalarType.Double);
        assertAllClose("dh", toDoubles(truth[3]), toDoubles(gr.hidden()), 2e-5, 2e-5);
    }

    /**
     * {@link LmHeadLogProbs#propagate} through a small graph: h = tanh(E[ids] A) with the head
     * tied to the embedding E (its gradient = the lookup's plus the head's) or untied (W
     * separate), against full autograd of the composite on the same graph; two passes, so the
     * second adds to gradients the first defined.
     */
    @ParameterizedTest(name = "tied={0}")
    @org.junit.jupiter.params.provider.ValueSource(booleans = {true, false})
    void propagatesThroughAutogradTiedAndUntied(boolean tied) {
        int n = 21, hid = 12, v = 67;
        Random rnd = new Random(5);
        long[] ids = new long[n];
        for (int i = 0; i < n; i++) {
            ids[i] = rnd.nextInt(v);
        }
        Tensor idT = longs(ids);
        Tensor t = targets(n, v, 0, 0, 9);
        Tensor g = inputs(n, hid, v, ScalarType.Float, 1)[2];
        Tensor[][] grads = new Tensor[2][];
        for (int mode = 0; mode < 2; mode++) {  // 0: composite autograd, 1: fused head + propagate
            torch.manual_seed(42);
            Tensor e = torch.randn(new long[] {v, hid}, new TensorOptions(ScalarType.Float));
            Tensor a = torch.randn(new long[] {hid, hid}, new TensorOptions(ScalarType.Float)).mul(new Scalar(0.3));
            Tensor w = torch.randn(new long[] {v, hid}, new TensorOptions(ScalarType.Float)).mul(new Scalar(0.5));
            e.set_requires_grad(true);
            a.set_requires_grad(true);
            w.set_requires_grad(true);
            Tensor head = tied ? e : w;
            for (int pass = 0; pass < 2; pass++) {  // the second pass adds to defined gradients
                Tensor h = torch.tanh(torch.mm(torch.embedding(e, idT), a));
                if (mode == 0) {
                    Tensor ls = torch.log_softmax(torch.linear(h, head), 1);
                    Tensor lp = torch.gather(ls, 1, t.clamp_min(new Scalar(0L)).unsqueeze(1)).squeeze(1)
                            .mul(t.ne(new Scalar(IGNORE)).to(ScalarType.Float));
                    lp.backward(g, new BoolOptional(), false, new TensorArrayRefOptional());
                } else {
                    LmHeadLogProbs op = new LmHeadLogProbs(5L * v * 4, 1);
                    LmHeadLogProbs.Result r = op.forward(h, head, t, IGNORE, false,
                            TokenLogProbs.TargetCheck.CHECKED);
                    LmHeadLogProbs.propagate(h, head, op.backward(h, head, t, r.lse(), g, IGNORE, true,
                            TokenLogProbs.TargetCheck.CHECKED));
                }
            }
            grads[mode] = new Tensor[] {e.grad().clone(), a.grad().clone(), tied ? null : w.grad().clone()};
            java.lang.ref.Reference.reachabilityFence(e);
            java.lang.ref.Reference.reachabilityFence(a);
            java.lang.ref.Reference.reachabilityFence(w);
        }
        assertAllClose("dE", toDoubles(grads[0][0]), toDoubles(grads[1][0]), 1e-5, 1e-5);
        assertAllClose("dA", toDoubles(grads[0][1]), toDoubles(grads[1][1]), 1e-5, 1e-5);
        if (!tied) {
            assertAllClose("dW", toDoubles(grads[0][2]), toDoubles(grads[1][2]), 1e-5, 1e-5);
        }
    }

    @Test
    void rejectsBadInputsBeforeWriting() {
        Tensor[] in = inputs(6, 8, 17, ScalarType.Float, 1);
        Tensor h = in[0], w = in[1], g = in[2];
        Tensor t = targets(6, 17, 0, 0, 1);
        LmHeadLogProbs head = new LmHeadLogProbs(2L * 17 * 4, 1);
        TokenLogProbs.TargetCheck c = TokenLogProbs.TargetCheck.CHECKED;
        Tensor lse = head.forward(h, w, t, IGNORE, false, c).lse();
        assertMessage(() -> head.forward(h, torch.zeros(new long[] {17, 9}), t, IGNORE, false, c), "H = 8");
        assertMessage(() -> head.forward(h, w.view(-1), t, IGNORE, false, c), "expected [V, H]");
        assertMessage(() -> head.forward(h.view(-1), w, t, IGNORE, false, c), "expected [N, H]");
        assertMessage(() -> head.forward(h, w.to(ScalarType.BFloat16), t, IGNORE, false, c), "one dtype");
        assertMessage(() -> head.forward(h.to(ScalarType.Double), w.to(ScalarType.Double), t, IGNORE, false, c),
                "expected Float, BFloat16 or Half");
        assertMessage(() -> head.forward(h, w, longs(0, 1, 2, 17, 4, 5), IGNORE, false, c), "targets[3] = 17");
        assertMessage(() -> head.forward(h, w, longs(0, 1, 2, 3, -5, 5), IGNORE, false, c), "targets[4] = -5");
        assertMessage(() -> head.forward(h, w, longs(0, 1, 2), IGNORE, false, c), "targets");
        assertMessage(() -> head.forward(h, w, t, 3, false, c), "ignoreIndex 3");
        assertMessage(() -> new LmHeadLogProbs(17L * 4 - 1, 1).forward(h, w, t, IGNORE, false, c),
                "smaller than one row");
        assertMessage(() -> new LmHeadLogProbs(0, 1), "chunk budget");
        // bf16 with a weight gradient: a budget that holds one row of logits (40000 bytes for
        // V = 20000) but not a 256-column slice of dW's product at H = 256 (131072 bytes) leaves
        // room for tiles of 1 x 76 logits only: 600 rows would take 158400 tiles (and the single
        // pass 1333800 products), each a few GEMM calls; refused up front
        Tensor hb = torch.randn(new long[] {600, 256}).to(ScalarType.BFloat16);
        Tensor wb = torch.randn(new long[] {20000, 256}).to(ScalarType.BFloat16);
        Tensor tb = torch.randint(20000, new long[] {600}, new TensorOptions(ScalarType.Long));
        Tensor gb = torch.ones(new long[] {600});
        LmHeadLogProbs tiny = new LmHeadLogProbs(40_000, 1);
        LmHeadLogProbs.Result rb = tiny.forward(hb, wb, tb, IGNORE, false, c);  // the forward fits
        assertMessage(() -> tiny.backward(hb, wb, tb, rb.lse(), gb, IGNORE, true, c), "158400 tiles of 1 x 76");
        assertMessage(() -> tiny.forwardBackward(hb, wb, tb, gb, IGNORE, false, true, c), "too small for 600 rows");
        // 8 rows are one row block, which writes dW's slices without a product buffer: 9 tiles of
        // 8 x 2244, allowed
        assertEquals(new LmHeadLogProbs.Tile(8, 2244), new LmHeadLogProbs(40_000, 1)
                .backwardTile(8, 20000, 256, ScalarType.BFloat16, true));
        assertMessage(() -> head.backward(h, w, t, lse, g.narrow(0, 0, 5), IGNORE, true, c), "gradLogp");
        // a bad target in the last chunk: the backward throws before any chunk is processed
        Tensor late = longs(0, 1, 2, 3, 4, 99);
        assertMessage(() -> head.backward(h, w, late, lse, g, IGNORE, true, c), "targets[5] = 99");
        assertMessage(() -> head.forwardBackward(h, w, late, g, IGNORE, false, true, c), "targets[5] = 99");
    }

    private static void assertMessage(org.junit.jupiter.api.function.Executable call, String part) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, call);
        assertTrue(e.getMessage().contains(part), "message '" + e.getMessage() + "' lacks '" + part + "'");
    }
}
