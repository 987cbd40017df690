package dev.spo4j.kernels;

import static dev.spo4j.testing.AllClose.assertAllClose;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import org.bytedeco.cuda.global.cudart;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.javacpp.LongPointer;
import org.bytedeco.javacpp.Pointer;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * The CUDA entry points of the C ABI on device memory from org.bytedeco:cuda's cudart (no
 * LibTorch involved), against the CPU kernel on the same host data. Needs a CUDA build of
 * libspo4j, a GPU and the cuda natives ({@code mvn -Pgpu test}); skipped otherwise.
 */
class NativeCudaTest {
    @BeforeEach
    void requireGpu() {
        Assumptions.assumeTrue(CudaKernels.built(), "libspo4j was built without CUDA (no nvcc)");
        Assumptions.assumeTrue(CudaKernels.deviceCount() > 0, "no CUDA device visible to spo4j's runtime");
        boolean cudartLoads;
        try {
            int[] n = new int[1];
            cudartLoads = cudart.cudaGetDeviceCount(n) == 0 && n[0] > 0;
        } catch (UnsatisfiedLinkError | NoClassDefFoundError e) {
            cudartLoads = false;
        }
        Assumptions.assumeTrue(cudartLoads, "org.bytedeco:cuda natives are not on the class path (run with -Pgpu)");
    }

    /** Device buffer of {@code bytes}, freed by {@link #freeAll()}. */
    private final List<Pointer> allocations = new ArrayList<>();

    Pointer device(long bytes) {
        Pointer p = new Pointer();
        assertEquals(0, cudart.cudaMalloc(p, bytes), "cudaMalloc");
        allocations.add(p);
        return p;
    }

    void freeAll() {
        for (Pointer p : allocations) {
            cudart.cudaFree(p);
        }
        allocations.clear();
    }

    Pointer upload(Pointer host, long bytes) {
        Pointer d = device(bytes);
        assertEquals(0, cudart.cudaMemcpy(d, host, bytes, cudart.cudaMemcpyHostToDevice));
        return d;
    }

    float[] download(Pointer d, int n) {
        FloatPointer h = new FloatPointer(n);
        assertEquals(0, cudart.cudaMemcpy(h, d, 4L * n, cudart.cudaMemcpyDeviceToHost));
        float[] out = new float[n];
        h.get(out);
        return out;
    }

    static double[] d(float[] f) {
        double[] o = new double[f.length];
        for (int i = 0; i < f.length; i++) {
            o[i] = f[i];
        }
        return o;
    }

    @Test
    void forwardAndBackwardOnRawDeviceMemoryMatchTheCpuKernel() {
        int rows = 37, vocab = 5003;
        Random rnd = new Random(3);
        float[] z = new float[rows * vocab];
        for (int i = 0; i < z.length; i++) {
            z[i] = (float) (rnd.nextGaussian() * 2);
        }
        long[] t = new long[rows];
        float[] g = new float[rows];
        for (int r = 0; r < rows; r++) {
            t[r] = r % 5 == 0 ? -100 : rnd.nextInt(vocab);
            g[r] = (float) rnd.nextGaussian();
        }
        FloatPointer hz = new FloatPointer(z);
        LongPointer ht = new LongPointer(t);
        FloatPointer hg = new FloatPointer(g);
        FloatPointer logp = new FloatPointer(rows), lse = new FloatPointer(rows), ent = new FloatPointer(rows);
        FloatPointer grad = new FloatPointer((long) rows * vocab);
        Native.check(Native.spo4j_token_logprobs_fwd_cpu(hz, Native.F32, rows, vocab, vocab, ht, -100, logp, lse, ent, 1), "cpu");
        Native.check(Native.spo4j_token_logprobs_bwd_cpu(hz, Native.F32, rows, vocab, vocab, ht, -100, lse, hg, grad, vocab, 1), "cpu");
        try {
            Pointer dz = upload(hz, 4L * z.length), dt = upload(ht, 8L * rows), dg = upload(hg, 4L * rows);
            Pointer dlogp = device(4L * rows), dlse = device(4L * rows), dent = device(4L * rows);
            Native.check(Native.spo4j_token_logprobs_fwd_cuda(dz, Native.F32, rows, vocab, vocab,
                    new LongPointer(dt), -100, new FloatPointer(dlogp), new FloatPointer(dlse), new FloatPointer(dent), null), "cuda fwd");
            Native.check(Native.spo4j_token_logprobs_bwd_cuda(dz, Native.F32, rows, vocab, vocab, new LongPointer(dt), -100,
                    new FloatPointer(dlse), new FloatPointer(dg), dz, vocab, null), "cuda bwd in place");
            assertEquals(0, cudart.cudaDeviceSynchronize());
            float[] cpuLogp = new float[rows], cpuLse = new float[rows], cpuEnt = new float[rows];
            logp.get(cpuLogp);
            lse.get(cpuLse);
            ent.get(cpuEnt);
            assertAllClose("logp", d(cpuLogp), d(download(dlogp, rows)), 1e-5, 1e-6);
            assertAllClose("lse", d(cpuLse), d(download(dlse, rows)), 1e-5, 1e-6);
            assertAllClose("entropy", d(cpuEnt), d(download(dent, rows)), 1e-5, 1e-5);
            float[] cpuGrad = new float[rows * vocab];
            grad.get(cpuGrad);
            assertAllClose("grad", d(cpuGrad), d(download(dz, rows * vocab)), 1e-7, 1e-5);

            // a bad target on the device: an IllegalArgumentException naming it, nothing written
            long[] bad = t.clone();
            bad[11] = vocab;
            Pointer dbad = upload(new LongPointer(bad), 8L * rows);
            IllegalArgumentException e = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
                    () -> Native.check(Native.spo4j_token_logprobs_fwd_cuda(dz, Native.F32, rows, vocab, vocab,
                            new LongPointer(dbad), -100, new FloatPointer(dlogp), new FloatPointer(dlse), null, null), "cuda fwd"));
            assertTrue(e.getMessage().contains("row 11"), e.getMessage());
        } finally {
            freeAll();
        }
    }

    @Test
    void hostMemoryIsRejectedNotDereferenced() {
        FloatPointer host = new FloatPointer(16);
        LongPointer t = new LongPointer(new long[] {0, 1});
        int status = Native.spo4j_token_logprobs_fwd_cuda(host, Native.F32, 2, 8, 8, t, -100,
                new FloatPointer(2), new FloatPointer(2), null, null);
        assertEquals(Native.ERR_ARGUMENT, status, Native.spo4j_last_error().getString());
    }
}
