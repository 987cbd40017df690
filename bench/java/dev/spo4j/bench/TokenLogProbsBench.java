package dev.spo4j.bench;

import dev.spo4j.kernels.TokenLogProbs;
import java.util.concurrent.TimeUnit;
import org.bytedeco.pytorch.BoolOptional;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorArrayRefOptional;
import org.bytedeco.pytorch.global.torch;
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
 * Token log-probs: spo4j's fused kernel ("native") against LibTorch's composite
 * log_softmax -> gather -> autograd ("libtorch") on the same data and thread count.
 * Run through bench/run.sh, which also measures the machine's copy bandwidth and prints
 * the summary table. Modes: forward; backward (given lse / the autograd graph, which are
 * built outside the timed region); forwardBackward. The native backward is in place, as the
 * trainer uses it, so each invocation restores the logits first (untimed).
 */
@State(org.openjdk.jmh.annotations.Scope.Benchmark)
// One op is 10 ms to 2 s: time single invocations and take the median in the report.
@BenchmarkMode(Mode.SingleShotTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Warmup(iterations = 2)
@Measurement(iterations = 5)
// LibTorch's OpenMP must not spin on a 2-core machine; the env is set by bench/run.sh.
@Fork(value = 1, jvmArgsAppend = {"-Xmx2g"})
public class TokenLogProbsBench {
    @Param({"native", "libtorch"})
    public String provider;

    @Param({"forward", "backward", "forwardBackward"})
    public String mode;

    @Param({"fp32", "bf16"})
    public String dtype;

    @Param({"4096"})
    public int rows;

    @Param({"32768", "131072"})
    public int vocab;

    @Param({"2"})
    public int threads;

    static final long IGNORE = TokenLogProbs.DEFAULT_IGNORE_INDEX;

    Tensor pristine, logits, targets, g;
    Tensor lse;  // native backward input
    Tensor x, lp;  // libtorch graph
    NoGradGuard noGrad;

    @Setup(Level.Trial)
    public void setUp() {
        torch.set_num_threads(threads);
        pristine = BenchData.logits(rows, vocab, dtype, 1234);
        targets = BenchData.targets(rows, vocab, 1234);
        g = BenchData.upstream(rows, 1234);
        if (provider.equals("native") && !mode.equals("forward")) {
            logits = pristine.clone();
        }
    }

    @Setup(Level.Invocation)
    public void prepare() {
        if (provider.equals("native")) {
            if (logits != null) {
                logits.copy_(pristine);
            }
            if (mode.equals("backward")) {
                lse = TokenLogProbs.forward(logits, targets, IGNORE, false, threads).lse();
            }
        } else {
            if (mode.equals("forward")) {
                noGrad = new NoGradGuard();
                return;
            }
            x = pristine.clone();
            x.set_requires_grad(true);
            if (mode.equals("backward")) {
                lp = BenchData.compositeLogp(x, targets);
            }
        }
    }

    @Benchmark
    public Object run() {
        if (provider.equals("native")) {
            return switch (mode) {
                case "forward" -> TokenLogProbs.forward(pristine, targets, IGNORE, false, threads).logp();
                case "backward" -> TokenLogProbs.backward(logits, targets, lse, g, IGNORE, true, threads);
                default -> {
                    TokenLogProbs.Result r = TokenLogProbs.forward(logits, targets, IGNORE, false, threads);
                    yield TokenLogProbs.backward(logits, targets, r.lse(), g, IGNORE, true, threads);
                }
            };
        }
        switch (mode) {
            case "forward" -> {
                return BenchData.compositeLogp(pristine, targets);
            }
            case "backward" -> {
                lp.backward(g, new BoolOptional(), false, new TensorArrayRefOptional());
                return x;
            }
            default -> {
                lp = BenchData.compositeLogp(x, targets);
                lp.backward(g, new BoolOptional(), false, new TensorArrayRefOptional());
                return x;
            }
        }
    }

    /** Frees the trial's data now: with -f 0 (quick mode) every trial shares one JVM. */
    @TearDown(Level.Trial)
    public void tearDown() {
        for (Tensor t : new Tensor[] {pristine, logits, targets, g}) {
            if (t != null) {
                t.close();
            }
        }
        pristine = logits = targets = g = null;
        System.gc();
    }

    /** Frees this invocation's rows x V temporaries now, not when the GC gets to them. */
    @TearDown(Level.Invocation)
    public void release() {
        if (noGrad != null) {
            noGrad.close();
            noGrad = null;
        }
        if (lp != null) {
            lp.close();
            lp = null;
        }
        if (x != null) {
            x.close();
            x = null;
        }
        if (lse != null) {
            lse.close();
            lse = null;
        }
        System.gc();  // collects the Java wrappers of returned results, freeing their memory
    }
}
