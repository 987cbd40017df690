package dev.spo4j.bench;

import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/** Inputs and the LibTorch composite reference shared by the benchmarks and the report. */
final class BenchData {
    private BenchData() {}

    static ScalarType dtype(String name) {
        return switch (name) {
            case "fp32" -> ScalarType.Float;
            case "bf16" -> ScalarType.BFloat16;
            case "fp16" -> ScalarType.Half;
            default -> throw new IllegalArgumentException("dtype " + name + " (expected fp32, bf16 or fp16)");
        };
    }

    static int elementSize(String dtype) {
        return dtype.equals("fp32") ? 4 : 2;
    }

    /** Logits ~ N(0, 2^2) in the dtype, LM-like in spread. */
    static Tensor logits(int rows, int vocab, String dtype, long seed) {
        torch.manual_seed(seed);
        Tensor f = torch.randn(rows, vocab);
        f.mul_(new Scalar(2.0));
        Tensor t = f.to(dtype(dtype));
        f.close();
        return t;
    }

    static Tensor targets(int rows, int vocab, long seed) {
        torch.manual_seed(seed + 1);
        return torch.randint(vocab, new long[] {rows}, new TensorOptions(ScalarType.Long));
    }

    static Tensor upstream(int rows, long seed) {
        torch.manual_seed(seed + 2);
        return torch.randn(rows);
    }

    /** LibTorch's composite token log-probs: log_softmax, then gather. */
    static Tensor compositeLogp(Tensor logits, Tensor targets) {
        Tensor ls = torch.log_softmax(logits, 1);
        return torch.gather(ls, 1, targets.unsqueeze(1)).squeeze(1);
    }

    /**
     * Bytes the op must move at least (the roofline numerator): forward reads the logits once
     * and writes logp + lse; backward reads logits and writes the gradient once each;
     * forwardBackward is both (3 passes over rows x V). Targets, lse and g are O(rows).
     */
    static double floorBytes(String mode, long rows, long vocab, int elementSize) {
        double big = (double) rows * vocab * elementSize, small = rows * 16.0;
        return switch (mode) {
            case "forward" -> big + small;
            case "backward" -> 2 * big + small;
            case "forwardBackward" -> 3 * big + 2 * small;
            default -> throw new IllegalArgumentException(mode);
        };
    }
}
