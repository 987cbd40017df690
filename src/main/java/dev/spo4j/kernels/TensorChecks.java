package dev.spo4j.kernels;

import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;

import java.util.Arrays;

/**
 * Argument checks shared by the tensor-level kernel APIs. Each throws
 * {@link IllegalArgumentException} naming the argument, the value found and what was
 * expected, before any native call.
 */
public final class TensorChecks {
    private TensorChecks() {}

    /** Where a call's tensors live. */
    public enum Placement { /** CPU tensors: the C++ kernels. */ CPU, /** CUDA tensors: the CUDA kernels. */ CUDA }

    /** Returns {@code t}; throws when it is null or undefined. */
    public static Tensor defined(Tensor t, String name) {
        if (t == null || t.isNull() || !t.defined()) {
            throw new IllegalArgumentException(name + " is null or undefined (expected a tensor)");
        }
        return t;
    }

    /** The sizes of {@code t}, one per dimension. */
    public static long[] shape(Tensor t) {
        long[] s = new long[(int) t.dim()];
        for (int i = 0; i < s.length; i++) {
            s[i] = t.size(i);
        }
        return s;
    }

    /** Throws unless {@code t} has dtype {@code expected}. */
    public static void dtype(Tensor t, String name, ScalarType expected) {
        ScalarType got = t.scalar_type().intern();
        if (got != expected) {
            throw new IllegalArgumentException(name + " has dtype " + got + " (expected " + expected + ")");
        }
    }

    /** A contiguous 1-D tensor of {@code n} elements. */
    public static void vector(Tensor t, String name, long n) {
        if (t.dim() != 1 || t.size(0) != n) {
            throw new IllegalArgumentException(name + " has shape " + Arrays.toString(shape(t))
                    + " (expected [" + n + "])");
        }
        if (!t.is_contiguous()) {
            throw new IllegalArgumentException(name + " is not contiguous (stride "
                    + t.stride(0) + ", expected 1)");
        }
    }

    /** The placement of the first tensor; every other defined tensor must be on the same device. */
    public static Placement sameDevice(String[] names, Tensor... ts) {
        Placement first = null;
        String firstDevice = null;
        for (int i = 0; i < ts.length; i++) {
            Tensor t = ts[i];
            if (t == null || t.isNull() || !t.defined()) {
                continue;
            }
            Placement p;
            if (t.is_cpu()) {
                p = Placement.CPU;
            } else if (t.is_cuda()) {
                p = Placement.CUDA;
            } else {
                throw new IllegalArgumentException(names[i] + " is on device " + describe(t)
                        + " (expected cpu or cuda)");
            }
            String d = describe(t);
            if (first == null) {
                first = p;
                firstDevice = d;
            } else if (!d.equals(firstDevice)) {
                throw new IllegalArgumentException(names[i] + " is on " + d + " but " + names[0]
                        + " is on " + firstDevice + " (expected one device)");
            }
        }
        if (first == Placement.CUDA) {
            CudaKernels.require();
        }
        return first == null ? Placement.CPU : first;
    }

    static String describe(Tensor t) {
        return t.device().str().getString();
    }

    /** The kernels' dtype code for {@code t}: fp32, bf16 or fp16; any other dtype throws. */
    public static int kernelDtype(Tensor t, String name) {
        ScalarType s = t.scalar_type().intern();  // JavaCPP returns a fresh enum: intern() for ==
        if (s == ScalarType.Float) {
            return Native.F32;
        } else if (s == ScalarType.BFloat16) {
            return Native.BF16;
        } else if (s == ScalarType.Half) {
            return Native.F16;
        }
        throw new IllegalArgumentException(name + " has dtype " + s + " (expected Float, BFloat16 or Half)");
    }
}
