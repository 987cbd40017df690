package dev.spo4j.bench;

import java.util.concurrent.TimeUnit;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.Warmup;

/**
 * The machine's memory bandwidth in the same run as the kernels, over 1 GiB of fp32 (far
 * beyond any cache), with LibTorch's parallel ops on the same thread count:
 * copy (dst = src; 2 x size moved, STREAM's convention, though the write-allocate really
 * makes it 3x), scale in place (a *= s; 2 x size, no write-allocate: the pattern of the
 * in-place backward) and sum (read only: the pattern of the forward). The report divides
 * each kernel's minimum traffic by the BEST of the three to get its bandwidth floor.
 */
@State(org.openjdk.jmh.annotations.Scope.Benchmark)
@BenchmarkMode(Mode.SingleShotTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Warmup(iterations = 3)
@Measurement(iterations = 10)
@Fork(1)
public class StreamBench {
    /** 1 GiB of fp32. */
    public static final long ELEMENTS = 1L << 28;

    @Param({"2"})
    public int threads;

    Tensor src, dst;

    @Setup
    public void setUp() {
        torch.set_num_threads(threads);
        src = torch.randn(ELEMENTS);
        dst = torch.zeros(ELEMENTS);
    }

    @Benchmark
    public Object copy() {
        return dst.copy_(src);
    }

    @Benchmark
    public Object scaleInPlace() {
        return dst.mul_(new org.bytedeco.pytorch.Scalar(1.0));
    }

    @Benchmark
    public double sum() {
        return src.sum().item_double();
    }
}
