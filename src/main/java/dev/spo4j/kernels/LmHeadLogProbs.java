package dev.spo4j.kernels;

import java.util.Arrays;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.BoolOptional;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * The LM head fused with the token log-probs: per-row log-probs straight from the final
 * hidden states, never holding more than one chunk of logits.
 *
 * <pre>
 *   z = h W^T  (h [N, H] after the final norm, W [V, H], tied or not)
 *   logp = z_t - lse,  lse = log sum_v exp(z_v),  entropy = lse - sum_v softmax(z)_v z_v
 *   dz = g (onehot(t) - softmax(z))    (g = dL/dlogp [N]; 0 for ignored rows)
 *   dL/dh = dz W,   dL/dW = dz^T h
 * </pre>
 *
 * The forward processes rows in chunks of {@link #chunkRows} whole rows: {@code z_c = h_c W^T}
 * is one LibTorch GEMM (MKL/oneDNN on the CPU, cuBLAS on CUDA), then {@link TokenLogProbs}'s
 * forward. The extra memory is one chunk of logits (plus, for bf16/fp16, the products added
 * into fp32 accumulators, counted in the budget), bounded by the chunk budget whatever N is.
 *
 * <p>Two regimes. <b>Recompute</b> ({@link #forward} then {@link #backward}): the forward
 * keeps only lse [N]; the backward recomputes the logits, so 4 GEMMs in all but memory
 * independent of the sequence length, and g may depend on every row (a preference loss needs
 * whole sequences' sums before any g is known). On the CPU the backward works on tiles of up
 * to {@link #MAX_TILE_ROWS} rows by a slice of the vocabulary ({@link #backwardTile}), which
 * the slice kernel turns into their gradient in place: each slice of dW is then one GEMM whose
 * inner dimension is the whole row block, where row chunks of ~441 rows (V = 151936, fp32,
 * 256 MiB) would read and write all of dW once per chunk (measured on a 2-core EPYC:
 * {@code dz^T h} runs at 86 GFLOP/s fp32 and 108 bf16 with 441 and 294 rows against 142 and
 * 389 with 2048). On CUDA the backward keeps row chunks (the slice kernel has no CUDA twin yet).
 * <b>Single pass</b> ({@link #forwardBackward}): when g is known before the forward (SFT:
 * g = -1/n for every scored row), one pass over row chunks computes logp, dh and dW with 3
 * GEMMs. {@link #forwardBackwardGroups} is the same pass when g is a function of each group
 * of rows' own log-probs (a preference pair's 2T rows): chunks of whole groups, each chunk's
 * g computed from its forward before its backward (Liger-Kernel's fused linear preference
 * losses work this way); a chunk then needs at least one group's logits.
 *
 * <p>The GEMMs run in the tensors' dtype (fp32, bf16 or fp16; LibTorch accumulates in fp32);
 * the kernel reads those logits and accumulates in fp32; logp, lse and entropy are fp32. For a
 * bf16/fp16 head, dW is written in the head's dtype when one GEMM makes each element (the
 * tiled backward with one row block: N <= 8192 at the default budget, as in the materialised
 * path); otherwise it is an fp32 tensor, each GEMM's product rounded to the narrow dtype (once
 * per row block, or once per row chunk in the single pass) and added in fp32. Arguments are checked
 * (shapes, dtypes, devices, targets in [0, V) or ignoreIndex, budget >= one row) with an
 * {@link IllegalArgumentException} before anything is written. Everything runs on detached
 * tensors under no-grad; {@link #propagate} hands dh and dW to autograd.
 *
 * <p>Test: {@code LmHeadLogProbsTest}; benchmark: {@code bench/java/.../LmHeadLogProbsBench}.
 */
public final class LmHeadLogProbs {
    /** The default chunk budget: 256 MiB of logits in flight. */
    public static final long DEFAULT_CHUNK_BYTES = 256L << 20;

    private final long chunkBytes;
    private final int threads;

    /**
     * @param chunkBytes the most bytes of logits (and their fp32 copy, where one is needed) in
     *                   flight at once; at least one row's worth
     * @param threads    CPU kernel threads (0 = LibTorch's intra-op thread count)
     */
    public LmHeadLogProbs(long chunkBytes, int threads) {
        if (chunkBytes <= 0) {
            throw new IllegalArgumentException("chunk budget = " + chunkBytes + " bytes (expected > 0)");
        }
        if (threads < 0) {
            throw new IllegalArgumentException("threads = " + threads + " (expected >= 0; 0 = LibTorch's count)");
        }
        this.chunkBytes = chunkBytes;
        this.threads = threads;
    }

    /** The default budget on LibTorch's thread count. */
    public LmHeadLogProbs() {
        this(DEFAULT_CHUNK_BYTES, 0);
    }

    /** The chunk budget in bytes. */
    public long chunkBytes() {
        return chunkBytes;
    }

    /**
     * logp, lse, entropy (null unless asked for) and the mean logit of each row
     * ({@code mean_v z_v = h . mean_v W_v}, exact in real arithmetic, for the logits/* metrics
     * without reading any logits), each fp32 [N].
     */
    public record Result(Tensor logp, Tensor lse, Tensor entropy, Tensor logitMean) {}

    /**
     * dL/dh [N, H] in h's dtype, and dL/dW [V, H] (null when not asked for): fp32, except from
     * the CPU recompute backward of a bf16/fp16 head whose rows fit one backward tile (N <= 8192
     * at the default budget), where every element is one GEMM's output and dW comes in the
     * head's dtype, rounded once as in the materialised path (half the bytes, no widening).
     */
    public record Gradients(Tensor hidden, Tensor weight) {}

    /** The most rows of a backward tile: dW's GEMM then has an inner dimension this long. */
    public static final long MAX_TILE_ROWS = 8192;
    /** The fewest vocabulary columns of a backward tile before its rows are cut instead. */
    public static final long MIN_TILE_COLUMNS = 256;

    /** Rows per forward (and single-pass) chunk: whole rows of logits; throws when not even one row fits. */
    public long chunkRows(long vocab, ScalarType dtype) {
        long perRow = vocab * elemBytes(dtype);
        if (perRow > chunkBytes) {
            throw new IllegalArgumentException("chunk budget " + chunkBytes + " bytes is smaller than one row of "
                    + vocab + " logits (" + perRow + " bytes; expected a budget of at least one row)");
        }
        return chunkBytes / perRow;
    }

    /**
     * A tile of the CPU recompute backward: {@code rows} x {@code columns} logits, the vocabulary
     * cut into slices so that a tile holds many rows (dW's GEMM is then long in its inner
     * dimension, and each slice of dW is written by one GEMM per row block instead of being read
     * and written once per row chunk). For bf16/fp16 the bytes also count each tile's product
     * for dL/dh ([rows, H]) and, with a weight gradient over more than one row block, for dL/dW
     * ([columns, H]), both in the narrow dtype before they are added into fp32 (one row block
     * writes dW's slices directly).
     */
    public record Tile(long rows, long columns) {}

    /** The backward tile for {@code n} rows of a {@code vocab} x {@code hidden} head. */
    public Tile backwardTile(long n, long vocab, long hidden, ScalarType dtype, boolean weightGrad) {
        chunkRows(vocab, dtype);  // the budget holds at least one whole row, as the forward needs
        long elem = elemBytes(dtype);
        boolean narrow = elem != 4;
        long colMin = Math.min(vocab, MIN_TILE_COLUMNS);
        long rows = Math.min(n, MAX_TILE_ROWS);
        long cols = columnsFor(rows, n, hidden, elem, narrow, weightGrad);
        if (cols < colMin) {  // a small budget: fewer rows (row blocks: a dW product), at least colMin columns
            long fixed = narrow && weightGrad ? colMin * hidden * 2 : 0;
            rows = Math.max(1, Math.min(rows, (chunkBytes - fixed) / (colMin * elem + (narrow ? hidden * 2 : 0))));
            cols = Math.max(1, columnsFor(rows, n, hidden, elem, narrow, weightGrad));
            long tiles = ceilDiv(n, rows) * ceilDiv(vocab, cols);
            if (tiles > MAX_CALLS) {  // a budget that leaves tiles of a few columns: a hang, not a run
                long least = fixed + colMin * elem + (narrow ? hidden * 2 : 0);  // one row of colMin columns
                throw new IllegalArgumentException("chunk budget " + chunkBytes + " bytes is too small for the "
                        + "backward of " + n + " rows of a " + vocab + " x " + hidden + " " + dtype + " head"
                        + (weightGrad ? " with its weight gradient" : "") + ": " + tiles + " tiles of " + rows
                        + " x " + cols + " (expected at most " + MAX_CALLS + "; a budget of at least " + least
                        + " bytes gives tiles of " + colMin + " columns)");
            }
        }
        return new Tile(rows, Math.min(vocab, cols));
    }

    /** The most tiles (or chunk x dW-slice products) one call may take before a budget is called too small. */
    static final long MAX_CALLS = 1L << 16;

    private static long ceilDiv(long a, long b) {
        return (a + b - 1) / b;
    }

    private long columnsFor(long rows, long n, long hidden, long elem, boolean narrow, boolean weightGrad) {
        long free = chunkBytes - (narrow ? rows * hidden * 2 : 0);
        boolean dwProduct = narrow && weightGrad && rows < n;  // one row block writes dW's slices itself
        return Math.max(0, free) / (rows * elem + (dwProduct ? hidden * 2 : 0));
    }

    private static long elemBytes(ScalarType dtype) {
        return dtype == ScalarType.Float ? 4 : 2;
    }

    /** Forward only (recompute regime, or a reference model): keeps nothing but lse. */
    public Result forward(Tensor hidden, Tensor weight, Tensor targets, long ignoreIndex, boolean withEntropy,
                          TokenLogProbs.TargetCheck check) {
        Shape s = Shape.of(hidden, weight, targets, ignoreIndex, check);
        long step = chunkRows(s.vocab, s.dtype);
        Tensor logp = Tensors.emptyFloats(hidden, s.rows);
        Tensor lse = Tensors.emptyFloats(hidden, s.rows);
        Tensor entropy = withEntropy ? Tensors.emptyFloats(hidden, s.rows) : null;
        try (NoGradGuard ng = new NoGradGuard(); Scratch scratch = new Scratch()) {
            Tensor h = hidden.detach(), w = weight.detach();
            Tensor zBuf = scratch.buffer(Math.min(step, s.rows) * s.vocab, s.dtype, hidden);
            for (long r0 = 0; r0 < s.rows; r0 += step) {
                long n = Math.min(step, s.rows - r0);
                try (PointerScope chunk = new PointerScope()) {
                    Tensor z = torch.mm_out(view(zBuf, n, s.vocab), h.narrow(0, r0, n), w.t());
                    TokenLogProbs.Result c = TokenLogProbs.forward(z, targets.narrow(0, r0, n), ignoreIndex,
                            withEntropy, threads(), check);
                    logp.narrow(0, r0, n).copy_(c.logp());
                    lse.narrow(0, r0, n).copy_(c.lse());
                    if (withEntropy) {
                        entropy.narrow(0, r0, n).copy_(c.entropy());
                    }
                }
            }
            return new Result(logp, lse, entropy, logitMean(h, w));
        }
    }

    /**
     * The recompute backward: dL/dh for the upstream gradient {@code gradLogp} [N] fp32 and,
     * when {@code weightGrad}, dL/dW (see {@link Gradients} for its dtype). Recomputes the logits
     * from h and W: by tiles on the CPU ({@link #backwardTile}), by row chunks on CUDA.
     */
    public Gradients backward(Tensor hidden, Tensor weight, Tensor targets, Tensor lse, Tensor gradLogp,
                              long ignoreIndex, boolean weightGrad, TokenLogProbs.TargetCheck check) {
        if (!hidden.device().is_cpu()) {
            return rowChunkBackward(hidden, weight, targets, lse, gradLogp, ignoreIndex, weightGrad, check);
        }
        Shape s = Shape.of(hidden, weight, targets, ignoreIndex, check);
        rowVector(lse, "lse", s.rows, hidden);
        rowVector(gradLogp, "gradLogp", s.rows, hidden);
        return tiledBackward(s, hidden, weight, targets, lse, gradLogp, ignoreIndex, weightGrad);
    }

    /** The row-chunk recompute backward that CUDA takes, on any device (tests compare it on the CPU). */
    Gradients rowChunkBackward(Tensor hidden, Tensor weight, Tensor targets, Tensor lse, Tensor gradLogp,
                               long ignoreIndex, boolean weightGrad, TokenLogProbs.TargetCheck check) {
        Shape s = Shape.of(hidden, weight, targets, ignoreIndex, check);
        rowVector(lse, "lse", s.rows, hidden);
        rowVector(gradLogp, "gradLogp", s.rows, hidden);
        return pass(s, hidden, weight, targets, lse, known(gradLogp), 1, ignoreIndex, weightGrad, false,
                check).grads;
    }

    /**
     * The CPU recompute backward over tiles of {@link #backwardTile} (rows x a vocabulary
     * slice): per tile {@code z = h_R W_b^T}, the slice kernel turns z in place into its softmax
     * part {@code dz = -g softmax(z)}, then {@code dh_R += dz W_b} and {@code dW_b += dz^T h_R};
     * the one-hot part {@code g 1[v == t]} is added at the end in fp32 ({@code dh += g W_t},
     * {@code dW_t += g h}). With one row block (N <= 8192 at the default budget) every slice of
     * dW is one GEMM of inner dimension N, written once and, for bf16/fp16, rounded once, as in
     * the materialised path. dh adds the slices' products in fp32; for bf16/fp16 each slice's
     * product is rounded first, which is why the one-hot part stays out of the slices: a row's
     * slice holding its target would otherwise carry g W_t, the bulk of dh, rounded there and
     * then cancelled by the other slices (with it in the slices, one of LmHeadLogProbsTest's
     * bf16 cases had 2.7x the naive bf16 composite's dh error; without, all are within bound).
     */
    private Gradients tiledBackward(Shape s, Tensor hidden, Tensor weight, Tensor targets, Tensor lse,
                                    Tensor gradLogp, long ignoreIndex, boolean weightGrad) {
        Tile tile = backwardTile(s.rows, s.vocab, s.hidden, s.dtype, weightGrad);
        boolean fp32 = s.dtype == ScalarType.Float;
        try (NoGradGuard ng = new NoGradGuard(); Scratch scratch = new Scratch()) {
            Tensor h = hidden.detach(), w = weight.detach();
            Tensor dhAcc = torch.zeros(new long[] {s.rows, s.hidden}, Tensors.options(ScalarType.Float,
                    hidden.device()));
            // One row block of a bf16/fp16 head: every element of dW is one GEMM's output, so dW
            // is written in the head's dtype, rounded once as in the materialised path, with the
            // one-hot term put into each tile's dz before its dW product (narrowDw). Otherwise
            // dW is fp32: every slice written by the first row block, then added to (no zero fill).
            boolean narrowDw = weightGrad && !fp32 && tile.rows() >= s.rows;
            Tensor dw = weightGrad ? torch.empty(new long[] {s.vocab, s.hidden},
                    Tensors.options(narrowDw ? s.dtype : ScalarType.Float, weight.device()), null) : null;
            long rowsMax = Math.min(tile.rows(), s.rows), colsMax = tile.columns();
            Tensor zBuf = scratch.buffer(rowsMax * colsMax, s.dtype, hidden);
            Tensor dhBuf = fp32 ? null : scratch.buffer(rowsMax * s.hidden, s.dtype, hidden);
            Tensor dwBuf = fp32 || !weightGrad || narrowDw ? null
                    : scratch.buffer(colsMax * s.hidden, s.dtype, hidden);
            for (long r0 = 0; r0 < s.rows; r0 += tile.rows()) {
                long n = Math.min(tile.rows(), s.rows - r0);
                Tensor hr = h.narrow(0, r0, n), tr = targets.narrow(0, r0, n);
                Tensor lr = lse.narrow(0, r0, n), gr = gradLogp.narrow(0, r0, n), dhr = dhAcc.narrow(0, r0, n);
                for (long v0 = 0; v0 < s.vocab; v0 += tile.columns()) {
                    long m = Math.min(tile.columns(), s.vocab - v0);
                    try (PointerScope scope = new PointerScope()) {
                        Tensor wb = w.narrow(0, v0, m);
                        // the tile's logits, then their gradient in place
                        Tensor dz = torch.mm_out(view(zBuf, n, m), hr, wb.t());
                        OneHot hot = narrowDw ? OneHot.before(dz, tr, v0, ignoreIndex) : null;
                        TokenLogProbs.backwardSliceInPlace(dz, tr, v0, s.vocab, false, lr, gr, ignoreIndex,
                                threads());
                        if (fp32) {
                            dhr.addmm_(dz, wb);
                            if (weightGrad && r0 == 0) {
                                torch.mm_out(dw.narrow(0, v0, m), dz.t(), hr);
                            } else if (weightGrad) {
                                dw.narrow(0, v0, m).addmm_(dz.t(), hr);
                            }
                        } else {
                            addWidened(dhr, torch.mm_out(view(dhBuf, n, s.hidden), dz, wb));
                            if (narrowDw) {
                                hot.put(dz, lr, gr);
                                torch.mm_out(dw.narrow(0, v0, m), dz.t(), hr);
                            } else if (weightGrad) {
                                Tensor p = torch.mm_out(view(dwBuf, m, s.hidden), dz.t(), hr);
                                if (r0 == 0) {  // the slice's first (with N <= 8192, only) product
                                    dw.narrow(0, v0, m).copy_(p);
                                } else {
                                    addWidened(dw.narrow(0, v0, m), p);
                                }
                            }
                        }
                    }
                }
            }
            // the one-hot term g 1[v == t], in fp32 once: dh += g W_t, dW_t += g h
            try (PointerScope scope = new PointerScope()) {
                Tensor valid = targets.ne(new Scalar(ignoreIndex));
                Tensor t = targets.where(valid, new Scalar(0L)), gv = gradLogp.mul(valid).unsqueeze(1);
                dhAcc.add_(Tensors.widened(w.index_select(0, t)).mul_(gv));
                if (weightGrad && !narrowDw) {
                    dw.index_add_(0, t, Tensors.widened(h).mul(gv));
                }
            }
            if (fp32) {
                return new Gradients(dhAcc, dw);
            }
            Tensor dh = dhAcc.to(s.dtype);
            scratch.add(dhAcc);
            return new Gradients(dh, dw);
        }
    }

    /**
     * The one-hot term of a tile's dz for a dW written in the head's dtype: the target logits of
     * the rows whose target lies in the tile's slice, gathered before the slice kernel overwrites
     * them; after dh's product, {@link #put} writes {@code g (1 - exp(z_t - lse))} there (fp32,
     * rounded once to the tile's dtype, as the whole-row kernel writes it), so that dW's product
     * sees the full gradient while dh's (summed over slices) never carries {@code g W_t}.
     */
    private record OneHot(Tensor index, Tensor inSlice, Tensor logit) {
        static OneHot before(Tensor dz, Tensor targets, long v0, long ignoreIndex) {
            long m = dz.size(1);
            Tensor local = targets.sub(new Scalar(v0));
            Tensor in = local.ge(new Scalar(0L)).logical_and_(local.lt(new Scalar(m)))
                    .logical_and_(targets.ne(new Scalar(ignoreIndex)));
            Tensor index = local.where(in, new Scalar(0L)).unsqueeze(1);
            return new OneHot(index, in.unsqueeze(1), dz.gather(1, index).to(ScalarType.Float));
        }

        void put(Tensor dz, Tensor lse, Tensor g) {
            Tensor p = logit.sub(lse.unsqueeze(1)).exp_();
            Tensor hot = g.unsqueeze(1).mul(p.neg_().add_(new Scalar(1.0))).to(dz.scalar_type().intern());
            dz.scatter_(1, index, hot.where(inSlice, dz.gather(1, index)));
        }
    }

    /** The single-pass outcome: the forward's values and the gradients. */
    public record Pass(Result result, Gradients grads) {}

    /**
     * Single pass (3 GEMMs): logp, lse, entropy and the gradients for an upstream gradient
     * {@code gradLogp} [N] fp32 known before the forward (SFT's -1/n per scored row).
     */
    public Pass forwardBackward(Tensor hidden, Tensor weight, Tensor targets, Tensor gradLogp, long ignoreIndex,
                                boolean withEntropy, boolean weightGrad, TokenLogProbs.TargetCheck check) {
        Shape s = Shape.of(hidden, weight, targets, ignoreIndex, check);
        rowVector(gradLogp, "gradLogp", s.rows, hidden);
        return pass(s, hidden, weight, targets, null, known(gradLogp), 1, ignoreIndex, weightGrad, withEntropy,
                check);
    }

    /**
     * The upstream gradient of one chunk of rows, computed from that chunk's forward (the single
     * pass of {@link #forwardBackwardGroups}).
     */
    @FunctionalInterface
    public interface ChunkGradient {
        /**
         * @param row0 the chunk's first row (a multiple of the group size)
         * @param rows the chunk's row count (whole groups)
         * @param logp the chunk's token log-probs, fp32 [rows] (0 at ignored rows)
         * @return dL/dlogp of these rows, fp32 [rows] on logp's device
         */
        Tensor gradient(long row0, long rows, Tensor logp);
    }

    /**
     * Single pass over chunks of whole groups of {@code groupRows} consecutive rows (Liger's
     * regime for a loss that is a sum over groups: a preference pair is a group of 2T rows).
     * Each chunk's forward gives its log-probs, {@code gradient} turns them into that chunk's
     * g, and its backward runs on the logits still in the chunk buffer: 3 GEMMs, where
     * {@link #forward} then {@link #backward} take 4. Valid only when a group's g depends on no
     * row outside the group. A chunk is at least one group: the budget must hold
     * {@code groupRows} rows of logits (see {@link #groupsFit}), else an
     * {@link IllegalArgumentException} before anything is computed (as for a budget that would
     * take more than {@link #MAX_CALLS} bf16/fp16 dW products). The tensors the function makes
     * are released with its chunk: it returns g and keeps nothing it made.
     */
    public Pass forwardBackwardGroups(Tensor hidden, Tensor weight, Tensor targets, long groupRows,
                                      ChunkGradient gradient, long ignoreIndex, boolean withEntropy,
                                      boolean weightGrad, TokenLogProbs.TargetCheck check) {
        Shape s = Shape.of(hidden, weight, targets, ignoreIndex, check);
        if (gradient == null) {
            throw new IllegalArgumentException("chunk gradient is null (expected a function of the chunk's logp)");
        }
        if (groupRows < 1 || s.rows % groupRows != 0) {
            throw new IllegalArgumentException("group of " + groupRows + " rows for " + s.rows
                    + " rows (expected a positive divisor of the row count)");
        }
        if (singlePassRows(s.vocab, s.hidden, s.dtype, weightGrad) < groupRows) {
            throw new IllegalArgumentException("chunk budget " + chunkBytes + " bytes is smaller than one group of "
                    + groupRows + " rows of " + s.vocab + " " + s.dtype + " logits (" + groupRows * s.vocab
                    * elemBytes(s.dtype) + " bytes; expected a budget of at least one group)");
        }
        return pass(s, hidden, weight, targets, null, gradient, groupRows, ignoreIndex, weightGrad, withEntropy,
                check);
    }

    /**
     * Whether the single pass over {@code rows} rows in groups of {@code groupRows} fits the
     * budget: one group of logits per chunk at least (with a bf16/fp16 weight gradient's product
     * slice beside it), and with such a weight gradient
     * at most {@link #MAX_CALLS} chunk x dW-slice products.
     */
    public boolean groupsFit(long rows, long groupRows, long vocab, long hidden, ScalarType dtype,
                             boolean weightGrad) {
        long step = singlePassRows(vocab, hidden, dtype, weightGrad) / groupRows * groupRows;
        if (step < groupRows) {
            return false;
        }
        boolean narrowDw = weightGrad && elemBytes(dtype) != 4;
        return !narrowDw || ceilDiv(rows, step) * ceilDiv(vocab, dwSlice(vocab, hidden)) <= MAX_CALLS;
    }

    /** A known upstream gradient as a chunk function. */
    private static ChunkGradient known(Tensor gradLogp) {
        return (r0, n, logp) -> gradLogp.narrow(0, r0, n);
    }

    /**
     * Rows per single-pass chunk at this budget (0 when not one row fits next to a bf16/fp16
     * weight gradient's product slice): the largest group {@link #forwardBackwardGroups} takes.
     */
    public long singlePassRows(long vocab, long hidden, ScalarType dtype, boolean weightGrad) {
        long elem = elemBytes(dtype);
        if (!(weightGrad && elem != 4)) {
            return chunkBytes / (vocab * elem);
        }
        return Math.max(0, chunkBytes - dwSlice(vocab, hidden) * 2 * hidden) / (vocab * elem);
    }

    /** Rows of a narrow dW's product slice in the single pass: an eighth of the budget. */
    private long dwSlice(long vocab, long hidden) {
        return Math.max(1, Math.min(vocab, chunkBytes / 8 / (2 * hidden)));
    }

    /**
     * One pass over the chunks: a forward when {@code lse} is null (single pass), then the
     * backward; chunks hold whole groups of {@code groupRows} rows.
     */
    private Pass pass(Shape s, Tensor hidden, Tensor weight, Tensor targets, Tensor lse, ChunkGradient gradient,
                      long groupRows, long ignoreIndex, boolean weightGrad, boolean withEntropy,
                      TokenLogProbs.TargetCheck check) {
        long elem = elemBytes(s.dtype);
        boolean narrowDw = weightGrad && elem != 4;
        // bf16/fp16 dW: each chunk's product in the narrow dtype, a slice of dW at a time (an
        // eighth of the budget), added into the fp32 accumulator
        long step = chunkRows(s.vocab, s.dtype);  // throws when the budget holds less than one row
        long dwSlice = s.vocab;
        if (narrowDw) {
            dwSlice = dwSlice(s.vocab, s.hidden);
            step = Math.max(1, singlePassRows(s.vocab, s.hidden, s.dtype, true));
        }
        step = Math.max(groupRows, step / groupRows * groupRows);  // whole groups (the caller checked one fits)
        if (narrowDw) {
            long calls = ceilDiv(s.rows, step) * ceilDiv(s.vocab, dwSlice);
            if (calls > MAX_CALLS) {
                throw new IllegalArgumentException("chunk budget " + chunkBytes + " bytes is too small for "
                        + s.rows + " rows of a " + s.vocab + " x " + s.hidden + " " + s.dtype + " head with its "
                        + "weight gradient: " + calls + " products of " + step + "-row chunks by " + dwSlice
                        + "-row slices of dW (expected at most " + MAX_CALLS + ")");
            }
        }
        boolean single = lse == null;
        Tensor logp = single ? Tensors.emptyFloats(hidden, s.rows) : null;
        Tensor lseOut = single ? Tensors.emptyFloats(hidden, s.rows) : lse;
        Tensor entropy = single && withEntropy ? Tensors.emptyFloats(hidden, s.rows) : null;
        try (NoGradGuard ng = new NoGradGuard(); Scratch scratch = new Scratch()) {
            Tensor h = hidden.detach(), w = weight.detach();
            Tensor dh = torch.empty(new long[] {s.rows, s.hidden}, Tensors.options(s.dtype, hidden.device()), null);
            // written by the first chunk, then added to (no zero fill)
            Tensor dw = weightGrad ? torch.empty(new long[] {s.vocab, s.hidden},
                    Tensors.options(ScalarType.Float, weight.device()), null) : null;
            Tensor zBuf = scratch.buffer(Math.min(step, s.rows) * s.vocab, s.dtype, hidden);
            Tensor dwBuf = narrowDw ? scratch.buffer(dwSlice * s.hidden, s.dtype, hidden) : null;
            for (long r0 = 0; r0 < s.rows; r0 += step) {
                long n = Math.min(step, s.rows - r0);
                try (PointerScope chunk = new PointerScope()) {
                    Tensor hc = h.narrow(0, r0, n), tc = targets.narrow(0, r0, n);
                    Tensor z = torch.mm_out(view(zBuf, n, s.vocab), hc, w.t());
                    Tensor lc, gc;
                    if (single) {
                        TokenLogProbs.Result c = TokenLogProbs.forward(z, tc, ignoreIndex, withEntropy, threads(),
                                check);
                        logp.narrow(0, r0, n).copy_(c.logp());
                        lseOut.narrow(0, r0, n).copy_(c.lse());
                        if (entropy != null) {
                            entropy.narrow(0, r0, n).copy_(c.entropy());
                        }
                        lc = c.lse();
                        gc = chunkGradient(gradient, r0, n, c.logp(), hidden);
                    } else {
                        lc = lseOut.narrow(0, r0, n);
                        gc = gradient.gradient(r0, n, null);
                    }
                    // in place: dz is z's storage, overwritten with its gradient
                    Tensor dz = TokenLogProbs.backward(z, tc, lc, gc, ignoreIndex, true, threads(), check);
                    torch.mm_out(dh.narrow(0, r0, n), dz, w);
                    if (narrowDw) {
                        for (long v0 = 0; v0 < s.vocab; v0 += dwSlice) {
                            long m = Math.min(dwSlice, s.vocab - v0);
                            try (PointerScope slice = new PointerScope()) {
                                Tensor p = torch.mm_out(view(dwBuf, m, s.hidden), dz.narrow(1, v0, m).t(), hc);
                                if (r0 == 0) {
                                    dw.narrow(0, v0, m).copy_(p);
                                } else {
                                    addWidened(dw.narrow(0, v0, m), p);
                                }
                            }
                        }
                    } else if (weightGrad && r0 == 0) {
                        torch.mm_out(dw, dz.t(), hc);
                    } else if (weightGrad) {
                        dw.addmm_(dz.t(), hc);
                    }
                }
            }
            Result r = single ? new Result(logp, lseOut, entropy, logitMean(h, w)) : null;
            h.close();  // no handle of this pass keeps the caller's h (e.g. a copy it frees) alive
            w.close();
            return new Pass(r, new Gradients(dh, dw));
        }
    }

    /** A chunk's g from the caller's function, checked: fp32 [rows] on hidden's device. */
    private static Tensor chunkGradient(ChunkGradient fn, long r0, long n, Tensor logp, Tensor like) {
        Tensor g = fn.gradient(r0, n, logp);
        if (g == null || !g.defined()) {
            throw new IllegalArgumentException("chunk gradient of rows [" + r0 + ", " + (r0 + n)
                    + ") is null (expected fp32 [" + n + "])");
        }
        rowVector(g, "chunk gradient", n, like);
        return g.is_contiguous() ? g : g.contiguous();
    }

    /**
     * Hands the gradients to autograd: one backward pass through {@code hidden}'s graph with
     * dL/dh and, when {@code grads.weight()} is set and the weight requires grad, dL/dW added to
     * the weight's gradient (tied: summed with the embedding lookup's). A leaf weight (a
     * parameter) gets dL/dW directly, with no autograd copy: an undefined gradient becomes
     * {@code grads.weight()} itself (cast to the weight's dtype), a defined one is added to in
     * place; so after this call {@code grads.weight()} may be the weight's gradient.
     */
    public static void propagate(Tensor hidden, Tensor weight, Gradients grads) {
        TensorVector outs = new TensorVector(), gs = new TensorVector();
        Tensor dw = grads.weight();
        if (dw != null && weight.requires_grad()) {
            if (weight.__dispatch_is_leaf()) {
                try (NoGradGuard ng = new NoGradGuard()) {
                    Tensor current = weight.grad();
                    if (current.defined()) {
                        current.add_(dw);
                    } else {
                        weight.mutable_grad().put(dw.to(weight.scalar_type().intern()));
                    }
                }
            } else {
                outs.push_back(weight);
                gs.push_back(dw.to(weight.scalar_type().intern()));
            }
        }
        if (hidden.requires_grad()) {
            outs.push_back(hidden);
            gs.push_back(grads.hidden());
        }
        if (outs.size() > 0) {
            torch.backward(outs, gs, new BoolOptional(), false, new TensorVector());
        }
    }

    /**
     * The scratch tensors of one call, freed when it returns (a handle left to the garbage
     * collector would keep the forward's 256 MiB chunk buffer alive through the backward).
     */
    private static final class Scratch implements AutoCloseable {
        private final java.util.List<Tensor> held = new java.util.ArrayList<>();

        Tensor buffer(long elements, ScalarType dtype, Tensor like) {
            return add(LmHeadLogProbs.buffer(elements, dtype, like));
        }

        Tensor add(Tensor t) {
            held.add(t);
            return t;
        }

        @Override
        public void close() {
            held.forEach(Tensor::close);
        }
    }

    /**
     * A flat scratch tensor reused by every chunk or tile of a call: a fresh tensor per chunk
     * would be a fresh mmap of hundreds of MB, page-faulted again each time (on the 2-core EPYC,
     * {@code .to(Float)} of 64 MiB slices ran at ~1.3 GB/s fresh against ~14 GB/s into a buffer
     * already touched; a JMH run of three bf16 points of the tiled backward before this buffer
     * took 49 s of wall time with 31 s of system CPU time).
     */
    private static Tensor buffer(long elements, ScalarType dtype, Tensor like) {
        return torch.empty(new long[] {Math.max(1, elements)}, Tensors.options(dtype, like.device()), null);
    }

    /**
     * {@code dst += src} for an fp32 {@code dst} and a bf16/fp16 {@code src} of the same [rows, H]
     * shape. On the CPU one native pass ({@code spo4j_add_widened_cpu}): LibTorch's mixed-dtype
     * {@code add_} takes a slow casting path there (1.1 s for 151936 x 896 on the 2-core EPYC,
     * against ~0.1 s for the copy into fp32 and an fp32 add). On CUDA that {@code add_} is one
     * elementwise kernel that widens as it reads (no widening buffer, no host loop of slices).
     */
    private void addWidened(Tensor dst, Tensor src) {
        if (dst.numel() != src.numel() || dst.scalar_type().intern() != ScalarType.Float) {
            throw new IllegalStateException("widening add of " + src.numel() + " " + src.scalar_type().intern()
                    + " values into " + dst.numel() + " " + dst.scalar_type().intern()
                    + " (expected as many, into Float)");
        }
        if (dst.device().is_cpu() && dst.is_contiguous() && src.is_contiguous()) {
            // one native pass (read src, read and write dst): no widening copies
            Native.check(Native.spo4j_add_widened_cpu(dst.data_ptr_float(), src.data_ptr(),
                    TensorChecks.kernelDtype(src, "src"), src.numel(), threads()), "fp32 += bf16/fp16 gradient");
            return;
        }
        dst.add_(src);
    }

    /** The first rows x cols elements of a flat buffer as a contiguous [rows, cols] matrix. */
    private static Tensor view(Tensor buf, long rows, long cols) {
        return buf.narrow(0, 0, rows * cols).view(rows, cols);
    }

    private static Tensor logitMean(Tensor h, Tensor w) {
        Tensor wBar = Tensors.columnMeansFloat(w);  // [H] fp32, a bf16 W widened a slice at a time
        Tensor hf = h.to(ScalarType.Float);  // h itself when fp32: a handle on the caller's storage
        Tensor mean = torch.mv(hf, wBar);
        hf.close();
        wBar.close();
        return mean;
    }

    private int threads() {
        return threads > 0 ? threads : torch.get_num_threads();
    }

    private static void rowVector(Tensor t, String name, long rows, Tensor like) {
        TensorChecks.defined(t, name);
        TensorChecks.dtype(t, name, ScalarType.Float);
        TensorChecks.vector(t, name, rows);
        TensorChecks.sameDevice(new String[] {"hidden", name}, like, t);
    }

    /** The checked geometry of one call. */
    private record Shape(long rows, long hidden, long vocab, ScalarType dtype) {
        static Shape of(Tensor h, Tensor w, Tensor targets, long ignoreIndex, TokenLogProbs.TargetCheck check) {
            TensorChecks.defined(h, "hidden");
            TensorChecks.defined(w, "weight");
            TensorChecks.defined(targets, "targets");
            if (check == null) {
                throw new IllegalArgumentException("target check is null (expected CHECKED or PREVALIDATED)");
            }
            if (h.dim() != 2 || h.size(0) == 0 || h.size(1) == 0) {
                throw new IllegalArgumentException("hidden has shape " + Arrays.toString(TensorChecks.shape(h))
                        + " (expected [N, H] with N, H >= 1; flatten batch and time first)");
            }
            if (w.dim() != 2 || w.size(0) == 0) {
                throw new IllegalArgumentException("weight has shape " + Arrays.toString(TensorChecks.shape(w))
                        + " (expected [V, H] with V >= 1)");
            }
            long rows = h.size(0), hid = h.size(1), vocab = w.size(0);
            if (w.size(1) != hid) {
                throw new IllegalArgumentException("weight has shape " + Arrays.toString(TensorChecks.shape(w))
                        + " but hidden has H = " + hid + " (expected [V, " + hid + "])");
            }
            TensorChecks.kernelDtype(h, "hidden");
            ScalarType dt = h.scalar_type().intern();
            ScalarType wdt = w.scalar_type().intern();
            if (wdt != dt) {
                throw new IllegalArgumentException("weight has dtype " + wdt + " but hidden " + dt
                        + " (expected one dtype)");
            }
            TensorChecks.dtype(targets, "targets", ScalarType.Long);
            TensorChecks.vector(targets, "targets", rows);
            TensorChecks.Placement where = TensorChecks.sameDevice(new String[] {"hidden", "weight", "targets"},
                    h, w, targets);
            if (ignoreIndex >= 0 && ignoreIndex < vocab) {
                throw new IllegalArgumentException("ignoreIndex " + ignoreIndex + " is a valid token id in [0, "
                        + vocab + ") (expected a negative value or one >= V)");
            }
            // every chunk's kernel checks its own targets, but an error in a late chunk would come
            // after earlier chunks were written: check them all first (a CUDA sync unless prevalidated)
            if (where == TensorChecks.Placement.CPU || check == TokenLogProbs.TargetCheck.CHECKED) {
                Tensor bad = targets.ne(new Scalar(ignoreIndex))
                        .logical_and(targets.lt(new Scalar(0L)).logical_or(targets.ge(new Scalar(vocab))));
                if (bad.any().item_bool()) {
                    long row = bad.to(ScalarType.Long).argmax().item_long();
                    throw new IllegalArgumentException("targets[" + row + "] = " + targets.select(0, row).item_long()
                            + " is outside [0, " + vocab + ") and is not ignoreIndex " + ignoreIndex);
                }
            }
            return new Shape(rows, hid, vocab, dt);
        }
    }
}
