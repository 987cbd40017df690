package dev.spo4j.bench;

import dev.spo4j.kernels.LmHeadLogProbs;
import dev.spo4j.kernels.TokenLogProbs;
import java.util.Locale;
import java.util.concurrent.TimeUnit;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.BoolOptional;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorArrayRefOptional;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.openjdk.jmh.annotations.AuxCounters;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;

/**
 * The LM head plus token log-probs, forward and backward (logp, then dL/dh and dL/dW for a
 * random upstream g), at real heads' shapes:
 * <ul>
 *   <li>{@code fusedHead}: {@link LmHeadLogProbs} recompute regime (forward keeps lse, the
 *       backward recomputes each chunk: 4 GEMMs), chunk budget {@code chunkMb};</li>
 *   <li>{@code fusedHeadSinglePass}: {@link LmHeadLogProbs#forwardBackward} (g known up front,
 *       as for SFT: 3 GEMMs);</li>
 *   <li>{@code materialised}: the full [N, V] logits by one GEMM, the fused kernel's forward
 *       and in-place backward over them, then dh and dW (3 GEMMs);</li>
 *   <li>{@code composite}: LibTorch's linear -> log_softmax -> gather -> autograd.</li>
 * </ul>
 * Shapes ({@code shape} = H x V x N): Qwen2.5-0.5B's head 896 x 151936 at N = 2048 and 8192,
 * Llama-3-8B's 4096 x 128256 at N = 2048. The secondary result {@code peakExtraMiB} is the
 * growth of the resident set during the call (VmHWM after, reset through
 * /proc/self/clear_refs, minus VmRSS before): the memory the call needs beyond its inputs,
 * including the dW it returns (V x H; 519 MiB in fp32 for Qwen2.5's head), which every
 * provider allocates. Each of these GEMMs is 0.3-2 TFLOP: on a 2-core machine run one shape
 * at a time ({@code -p shape=896x151936x2048}) or a smaller N.
 */
@State(org.openjdk.jmh.annotations.Scope.Benchmark)
// One call is seconds: single invocations, few of them.
@BenchmarkMode(Mode.SingleShotTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Warmup(iterations = 1)
@Measurement(iterations = 3)
// LibTorch's OpenMP must not spin on a small machine: run with OMP_WAIT_POLICY=passive.
@Fork(value = 1, jvmArgsAppend = {"-Xmx2g"})
public class LmHeadLogProbsBench {
    @Param({"fusedHead", "fusedHeadSinglePass", "materialised", "composite"})
    public String provider;

    @Param({"fp32", "bf16"})
    public String dtype;

    @Param({"896x151936x2048", "896x151936x8192", "4096x128256x2048"})
    public String shape;

    @Param({"256"})
    public int chunkMb;

    @Param({"2"})
    public int threads;

    static final long IGNORE = TokenLogProbs.DEFAULT_IGNORE_INDEX;

    Tensor h, w, targets, g;

    /** The secondary result: peak extra resident memory of the last call, MiB. */
    @AuxCounters(AuxCounters.Type.EVENTS)
    @State(org.openjdk.jmh.annotations.Scope.Thread)
    public static class Memory {
        /** Peak extra resident MiB of this iteration's call (one call per iteration). */
        public double peakExtraMiB;

        @Setup(Level.Iteration)
        public void clear() {
            peakExtraMiB = 0;
        }
    }

    @Setup(Level.Trial)
    public void setUp() {
        torch.set_num_threads(threads);
        String[] s = shape.split("x");
        int hid = Integer.parseInt(s[0]), vocab = Integer.parseInt(s[1]), rows = Integer.parseInt(s[2]);
        ScalarType dt = BenchData.dtype(dtype);
        torch.manual_seed(21);
        h = torch.randn(rows, hid).to(dt);
        w = torch.randn(vocab, hid).mul(new Scalar(1.0 / Math.sqrt(hid))).to(dt);  // logits of std ~1
        targets = BenchData.targets(rows, vocab, 21);
        g = BenchData.upstream(rows, 21);
        targets.narrow(0, 0, rows / 8).fill_(new Scalar(IGNORE));  // a prompt-like ignored share
        g.narrow(0, 0, rows / 8).zero_();  // so the composite (which cannot ignore) computes the same thing
    }

    @Benchmark
    public double run(Memory mem) {
        System.gc();
        long base = BenchReport.resetPeak();
        double check;
        try (PointerScope scope = new PointerScope()) {  // every temporary is freed by the call's end
            check = switch (provider) {
                case "fusedHead" -> {
                    LmHeadLogProbs head = new LmHeadLogProbs((long) chunkMb << 20, threads);
                    LmHeadLogProbs.Result r = head.forward(h, w, targets, IGNORE, false,
                            TokenLogProbs.TargetCheck.CHECKED);
                    LmHeadLogProbs.Gradients d = head.backward(h, w, targets, r.lse(), g, IGNORE, true,
                            TokenLogProbs.TargetCheck.CHECKED);
                    yield d.weight().sum().item_double() + r.logp().sum().item_double();
                }
                case "fusedHeadSinglePass" -> {
                    LmHeadLogProbs head = new LmHeadLogProbs((long) chunkMb << 20, threads);
                    LmHeadLogProbs.Pass p = head.forwardBackward(h, w, targets, g, IGNORE, false, true,
                            TokenLogProbs.TargetCheck.CHECKED);
                    yield p.grads().weight().sum().item_double() + p.result().logp().sum().item_double();
                }
                case "materialised" -> {
                    Tensor z = torch.mm(h, w.t());
                    TokenLogProbs.Result r = TokenLogProbs.forward(z, targets, IGNORE, false, threads);
                    Tensor dz = TokenLogProbs.backward(z, targets, r.lse(), g, IGNORE, true, threads);
                    Tensor dh = torch.mm(dz, w);
                    Tensor dw = torch.mm(dz.t(), h);
                    yield dw.sum().item_double() + dh.sum().item_double() + r.logp().sum().item_double();
                }
                case "composite" -> {
                    Tensor hh = h.clone(), ww = w.clone();
                    hh.set_requires_grad(true);
                    ww.set_requires_grad(true);
                    Tensor lp = BenchData.compositeLogp(torch.linear(hh, ww), targets.clamp_min(new Scalar(0L)));
                    lp.backward(g.to(lp.scalar_type()), new BoolOptional(), false, new TensorArrayRefOptional());
                    double v = ww.grad().sum().item_double() + lp.detach().sum().item_double();
                    java.lang.ref.Reference.reachabilityFence(hh);
                    yield v;
                }
                default -> throw new IllegalArgumentException("provider " + provider);
            };
        }
        long peak = BenchReport.peakSince(base);
        mem.peakExtraMiB = peak < 0 ? Double.NaN : peak / 1048576.0;
        System.out.printf(Locale.ROOT, "  [%s %s %s] peak extra %.0f MiB%n", provider, dtype, shape, mem.peakExtraMiB);
        return check;
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        for (Tensor t : new Tensor[] {h, w, targets, g}) {
            if (t != null) {
                t.close();
            }
        }
        h = w = targets = g = null;
        System.gc();
    }
}
