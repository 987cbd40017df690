package dev.spo4j.testing;

import org.bytedeco.javacpp.DoublePointer;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.javacpp.LongPointer;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/** Copies between Java arrays and CPU tensors for tests. */
public final class Tensors {
    private Tensors() {}

    public static Tensor floats(float[] v, long... shape) {
        Tensor t = torch.empty(shape, new TensorOptions(ScalarType.Float), null);
        if (v.length > 0) {  // an empty tensor has no data pointer
            t.data_ptr_float().put(v);
        }
        return t;
    }

    public static Tensor floats(float... v) {
        return floats(v, v.length);
    }

    public static Tensor longs(long... v) {
        Tensor t = torch.empty(new long[] {v.length}, new TensorOptions(ScalarType.Long), null);
        if (v.length > 0) {
            t.data_ptr_long().put(v);
        }
        return t;
    }

    /** Any floating tensor's values as doubles (converted exactly through float64). */
    public static double[] toDoubles(Tensor t) {
        Tensor d = t.to(ScalarType.Double).contiguous();
        double[] out = new double[(int) d.numel()];
        new DoublePointer(d.data_ptr()).get(out);
        return out;
    }

    public static float[] toFloats(Tensor t) {
        Tensor f = t.to(ScalarType.Float).contiguous();
        float[] out = new float[(int) f.numel()];
        new FloatPointer(f.data_ptr()).get(out);
        return out;
    }

    public static long[] toLongs(Tensor t) {
        Tensor l = t.to(ScalarType.Long).contiguous();
        long[] out = new long[(int) l.numel()];
        new LongPointer(l.data_ptr()).get(out);
        return out;
    }
}
