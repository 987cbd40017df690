package dev.spo4j.bench;

import dev.spo4j.loss.LossType;
import dev.spo4j.loss.PreferenceLoss;
import dev.spo4j.loss.PreferenceLossConfig;
import java.util.concurrent.TimeUnit;
import org.bytedeco.pytorch.BoolOptional;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorArrayRefOptional;
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
 * Preference loss + gradient + metrics over B pairs, for every loss of LOSSES.md: the native
 * kernel against the same loss written in LibTorch ops with autograd (the composite twin,
 * forward and backward, as a trainer needs both). The op is tiny; this measures per-call
 * overhead, which is what matters at this size. aot and aot-pair sort on both paths.
 */
@State(org.openjdk.jmh.annotations.Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
// Microsecond ops: short iterations are enough for a stable mean.
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
@Fork(1)
public class PreferenceLossBench {
    @Param({"native", "libtorch"})
    public String provider;

    @Param({"spo", "dpo", "ipo", "hinge", "soft-dpo", "spo-exp", "robust", "exo-pair", "nca-pair", "bco-pair",
        "sppo-hard", "aot", "aot-pair", "apo-zero", "apo-down", "discopop", "simpo", "cpo"})
    public String loss;

    @Param({"64", "8192"})
    public int pairs;

    PreferenceLoss kernel;
    Tensor pc, pr, rc, rr;

    @Setup
    public void setUp() {
        torch.set_num_threads(1);
        torch.manual_seed(7);
        pc = torch.randn(pairs).sub(new Scalar(50.0));
        pr = torch.randn(pairs).sub(new Scalar(55.0));
        rc = torch.randn(pairs).sub(new Scalar(51.0));
        rr = torch.randn(pairs).sub(new Scalar(54.0));
        // the loss op alone: length normalisation (ipo's, simpo's default) is a division before it
        kernel = new PreferenceLoss(PreferenceLossConfig.of(LossType.parse(loss)).withLengthNormalised(false));
    }

    @Benchmark
    public Object run() {
        if (provider.equals("native")) {
            return kernel.compute(pc, pr, rc, rr);
        }
        Tensor xc = pc.clone(), xr = pr.clone();
        xc.set_requires_grad(true);
        xr.set_requires_grad(true);
        Tensor bh = xc.sub(rc).sub(xr.sub(rr)).mul(new Scalar(0.1));
        // the LibTorch twin that --loss-impl libtorch trains with
        Tensor mean = kernel.compositeMean(PreferenceLoss.Inputs.of(xc, xr, rc, rr));
        mean.backward(torch.ones_like(mean), new BoolOptional(), false, new TensorArrayRefOptional());
        // the metrics the kernel also returns
        double acc = xc.sub(rc).gt(xr.sub(rr)).to(torch.ScalarType.Float).mean().item_double();
        return new Object[] {mean.item_double(), xc.grad(), xr.grad(), acc, bh.mean().item_double()};
    }
}
