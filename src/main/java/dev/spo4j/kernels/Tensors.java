package dev.spo4j.kernels;

import org.bytedeco.javacpp.DoublePointer;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.javacpp.LongPointer;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Device;
import org.bytedeco.pytorch.DeviceOptional;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * Copies between Java arrays and CPU tensors, and tensor options for a dtype on a device: the
 * small LibTorch plumbing that every package needs, written once.
 */
public final class Tensors {
    private Tensors() {}

    /**
     * Runs {@code body} in its own {@link PointerScope} and returns its result alive, handed to
     * the enclosing scope (if any; else to the garbage collector). Every other tensor handle the
     * body creates is released on return, so LibTorch frees its memory as soon as nothing else
     * (autograd's saved tensors, a cache) holds it. Without this, a loop of ops inside one
     * caller's scope keeps every iteration's temporaries until that scope closes: a forward over
     * 24 decoder layers would hold all 24 layers' activations even without autograd.
     */
    public static Tensor scoped(java.util.function.Supplier<Tensor> body) {
        Tensor out;
        try (PointerScope s = new PointerScope()) {
            out = body.get();
            out.retainReference();  // survives s.close(), which releases one reference of each handle
        }
        PointerScope outer = PointerScope.getInnerScope();
        if (outer != null) {
            outer.attach(out);  // the enclosing scope owns it now
            out.releaseReference();
        }
        return out;
    }

    /** fp32 elements widened at a time by {@link #rowMeansFloat} and {@link #columnMeansFloat}: 64 MiB. */
    static final long WIDEN_ELEMENTS = 16L << 20;

    /**
     * The fp32 mean of each row of a 2-D tensor ([N, V] -> [N]). A reduction to fp32 of a
     * bf16/fp16 tensor widens the whole tensor first on the CPU (rows x V x 4 bytes: 4.6 GiB for
     * 8192 x 151936 logits); this widens about 64 MiB of rows at a time into one reused buffer
     * (a fresh 64 MiB tensor per slice costs its page faults every time: ~50 ms a slice here,
     * against ~1 ms for the copy into a buffer already touched).
     */
    public static Tensor rowMeansFloat(Tensor z) {
        if (z.scalar_type().intern() == ScalarType.Float) {
            return z.mean(new long[] {1}, false, new org.bytedeco.pytorch.ScalarTypeOptional(ScalarType.Float));
        }
        long n = z.size(0), cols = Math.max(1, z.size(1)), step = Math.max(1, WIDEN_ELEMENTS / cols);
        Tensor out = emptyFloats(z, n);
        try (Tensor buf = emptyFloats(z, Math.min(step, n) * cols)) {  // freed on return, not by the GC
            for (long r0 = 0; r0 < n; r0 += step) {
                long k = Math.min(step, n - r0);
                try (PointerScope s = new PointerScope()) {
                    Tensor wide = buf.narrow(0, 0, k * cols).view(k, cols).copy_(z.narrow(0, r0, k));
                    out.narrow(0, r0, k).copy_(wide.mean(new long[] {1}, false,
                            new org.bytedeco.pytorch.ScalarTypeOptional()));
                }
            }
        }
        return out;
    }

    /** The fp32 mean of each column of a 2-D tensor ([V, H] -> [H]), widening ~64 MiB of rows at a time. */
    public static Tensor columnMeansFloat(Tensor w) {
        if (w.scalar_type().intern() == ScalarType.Float) {
            return w.mean(new long[] {0}, false, new org.bytedeco.pytorch.ScalarTypeOptional(ScalarType.Float));
        }
        long v = w.size(0), cols = Math.max(1, w.size(1)), step = Math.max(1, WIDEN_ELEMENTS / cols);
        Tensor sum = torch.zeros(new long[] {w.size(1)}, options(ScalarType.Float, w.device()));
        try (Tensor buf = emptyFloats(w, Math.min(step, v) * cols)) {
            for (long r0 = 0; r0 < v; r0 += step) {
                long k = Math.min(step, v - r0);
                try (PointerScope s = new PointerScope()) {
                    Tensor wide = buf.narrow(0, 0, k * cols).view(k, cols).copy_(w.narrow(0, r0, k));
                    sum.add_(wide.sum(new long[] {0}, false, new org.bytedeco.pytorch.ScalarTypeOptional()));
                }
            }
        }
        return sum.div_(new org.bytedeco.pytorch.Scalar((double) v));
    }

    /** {@code t} as fp32: itself when it is fp32 already, else a widened copy. */
    public static Tensor widened(Tensor t) {
        return t.scalar_type().intern() == ScalarType.Float ? t : t.to(ScalarType.Float);
    }

    /** Options for a new tensor of {@code dtype} on {@code device}. */
    public static TensorOptions options(ScalarType dtype, Device device) {
        return new TensorOptions(dtype).device(new DeviceOptional(device));
    }

    /** An uninitialised fp32 tensor of {@code shape} on the device of {@code like}. */
    public static Tensor emptyFloats(Tensor like, long... shape) {
        return torch.empty(shape, options(ScalarType.Float, like.device()), null);
    }

    /** A CPU fp32 tensor of {@code shape} holding {@code v} (row-major). */
    public static Tensor floats(float[] v, long... shape) {
        Tensor t = torch.empty(shape, new TensorOptions(ScalarType.Float), null);
        if (v.length > 0) {  // an empty tensor has no data pointer
            t.data_ptr_float().put(v);
        }
        return t;
    }

    /** A CPU fp32 vector of {@code v}. */
    public static Tensor floats(float... v) {
        return floats(v, v.length);
    }

    /** A CPU fp32 vector of {@code v}, each value rounded to fp32. */
    public static Tensor floats(double[] v) {
        float[] f = new float[v.length];
        for (int i = 0; i < v.length; i++) {
            f[i] = (float) v[i];
        }
        return floats(f);
    }

    /** A CPU float64 vector of {@code v}. */
    public static Tensor doubles(double... v) {
        Tensor t = torch.empty(new long[] {v.length}, new TensorOptions(ScalarType.Double), null);
        if (v.length > 0) {
            t.data_ptr_double().put(v);
        }
        return t;
    }

    /** A CPU int64 tensor of {@code shape} holding {@code v} (row-major). */
    public static Tensor longs(long[] v, long... shape) {
        Tensor t = torch.empty(shape, new TensorOptions(ScalarType.Long), null);
        if (v.length > 0) {
            t.data_ptr_long().put(v);
        }
        return t;
    }

    /** A CPU int64 vector of {@code v}. */
    public static Tensor longs(long... v) {
        return longs(v, v.length);
    }

    /** Any floating tensor's values as doubles (converted exactly through float64, on the CPU). */
    public static double[] toDoubles(Tensor t) {
        Tensor d = t.to(ScalarType.Double).cpu().contiguous();
        double[] out = new double[(int) d.numel()];
        if (out.length > 0) {
            new DoublePointer(d.data_ptr()).get(out);
        }
        return out;
    }

    /** Any tensor's values as fp32 floats (on the CPU). */
    public static float[] toFloats(Tensor t) {
        Tensor f = t.to(ScalarType.Float).cpu().contiguous();
        float[] out = new float[(int) f.numel()];
        if (out.length > 0) {
            new FloatPointer(f.data_ptr()).get(out);
        }
        return out;
    }

    /** Any integer tensor's values as longs (on the CPU). */
    public static long[] toLongs(Tensor t) {
        Tensor l = t.to(ScalarType.Long).cpu().contiguous();
        long[] out = new long[(int) l.numel()];
        if (out.length > 0) {
            new LongPointer(l.data_ptr()).get(out);
        }
        return out;
    }
}
