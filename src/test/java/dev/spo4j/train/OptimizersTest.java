package dev.spo4j.train;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import org.bytedeco.pytorch.AdamW;
import org.bytedeco.pytorch.AdamWOptions;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;

class OptimizersTest {
    /** Pins the LibTorch/JavaCPP facts Optimizers relies on; if bytedeco changes them, this fails. */
    @Test
    void adamWOptionsLayoutAndDefaults() {
        AdamWOptions o = new AdamWOptions(1e-3);
        assertEquals(0.999, o.betas().get(0), 0.0, "libstdc++ stores the tuple's second element first");
        assertEquals(0.9, o.betas().get(1), 0.0);
        assertEquals(0.01, o.weight_decay().get(), 0.0, "LibTorch's AdamW default weight decay");
    }

    /**
     * Two AdamW steps on w . c_t with different c_1, c_2, against AdamW written out in Java.
     * The second step tells beta1 from beta2 (a single step cannot: bias correction hides both).
     */
    @Test
    void hyperParametersReachTheOptimiser() {
        double lr = 0.5, b1 = 0.2, b2 = 0.9, eps = 1e-8, wd = 0.1;
        float[][] c = {{1, -2, 3, -4}, {2, 1, -1, 0.5f}};
        Tensor w = torch.zeros(4);
        w.set_requires_grad(true);
        AdamW opt = Optimizers.adamW(new TensorVector(w), lr, b1, b2, eps, wd);
        double[] ref = new double[4], m = new double[4], v = new double[4];
        for (int t = 1; t <= 2; t++) {
            opt.zero_grad(true);
            w.mul(torch.tensor(c[t - 1])).sum().backward();
            opt.step();
            for (int i = 0; i < 4; i++) {
                double g = c[t - 1][i];
                ref[i] *= 1 - lr * wd;  // decoupled weight decay
                m[i] = b1 * m[i] + (1 - b1) * g;
                v[i] = b2 * v[i] + (1 - b2) * g * g;
                double mh = m[i] / (1 - Math.pow(b1, t)), vh = v[i] / (1 - Math.pow(b2, t));
                ref[i] -= lr * mh / (Math.sqrt(vh) + eps);
            }
        }
        float[] after = new float[4];
        w.data_ptr_float().get(after);
        for (int i = 0; i < 4; i++) {
            assertEquals(ref[i], after[i], 1e-5, "w[" + i + "]");
        }
        Optimizers.setLearningRate(opt, 0.25);
        assertEquals(0.25, Optimizers.learningRate(opt), 0.0);
    }

    @Test
    void scheduleWarmsUpThenDecays() {
        LrSchedule cos = new LrSchedule(LrSchedule.Kind.COSINE, 1.0, 4, 14);
        assertEquals(0.2, cos.at(0), 1e-12);
        assertEquals(0.8, cos.at(3), 1e-12);
        assertEquals(1.0, cos.at(4), 1e-12);
        assertEquals(0.5, cos.at(9), 1e-12);
        assertEquals(0.0, cos.at(14), 1e-12);
        LrSchedule lin = new LrSchedule(LrSchedule.Kind.LINEAR, 2.0, 0, 10);
        assertEquals(1.0, lin.at(5), 1e-12);
        assertEquals(2.0, new LrSchedule(LrSchedule.Kind.CONSTANT, 2.0, 0, 10).at(9), 0.0);
        assertThrows(IllegalArgumentException.class, () -> new LrSchedule(LrSchedule.Kind.COSINE, 0, 0, 10));
        assertThrows(IllegalArgumentException.class, () -> LrSchedule.Kind.parse("step"));
    }
}
