package dev.spo4j.kernels;

/**
 * OpenMP settings that must be in place before LibTorch loads. LibTorch's OpenMP threads
 * spin while they wait for work (libgomp's default active wait): on a machine with few cores,
 * or with another busy process, a small model's training step then runs many times slower
 * (PLATFORM.md: 25x on 2 cores). {@link #passiveWaitUnlessSet()} makes them sleep instead,
 * unless the user set {@code OMP_WAIT_POLICY} (the variable is read once, when the OpenMP
 * runtime starts, so this runs first thing in {@code main}). It goes through spo4j's own
 * native library, which does not load LibTorch or OpenMP.
 */
public final class OpenMp {
    private OpenMp() {}

    /**
     * Sets {@code OMP_WAIT_POLICY=passive} in this process unless it is set. Returns true when
     * it set it; false when the user's value stays (or the native library is unusable, which
     * the kernels then report themselves).
     */
    public static boolean passiveWaitUnlessSet() {
        return setDefault("OMP_WAIT_POLICY", "passive");
    }

    /**
     * Sets the threads of LibTorch's ops and of the OpenBLAS that its CPU GEMMs call: OpenBLAS
     * keeps a pool of its own that {@code torch.set_num_threads} does not size (measured: a
     * second thread at ~80% of a core in a one-thread run). Use this instead of
     * {@code torch.set_num_threads}.
     */
    public static void setThreads(int threads) {
        org.bytedeco.pytorch.global.torch.set_num_threads(threads);
        try {
            org.bytedeco.openblas.presets.openblas_nolapack.blas_set_num_threads(threads);
        } catch (UnsatisfiedLinkError | NoClassDefFoundError e) {
            // no OpenBLAS in this LibTorch build: nothing more to size
        }
    }

    /** Sets an environment variable of this process unless it is set; true when it set it. */
    static boolean setDefault(String name, String value) {
        try {
            return Native.spo4j_set_env_default(name, value) == 1;
        } catch (UnsatisfiedLinkError | NoClassDefFoundError e) {
            return false;
        }
    }
}
