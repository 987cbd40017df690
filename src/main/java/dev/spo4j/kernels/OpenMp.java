package dev.spo4j.kernels;

/**
 * Process settings that must be in place before LibTorch loads or allocates; {@link
 * #defaultsUnlessSet()} applies both, first thing in {@code main}. LibTorch's OpenMP threads
 * spin while they wait for work (libgomp's default active wait): on a machine with few cores,
 * or with another busy process, a small model's training step then runs many times slower
 * (PLATFORM.md: 25x on 2 cores). {@link #passiveWaitUnlessSet()} makes them sleep instead,
 * unless the user set {@code OMP_WAIT_POLICY} (the variable is read once, when the OpenMP
 * runtime starts, so this runs first thing in {@code main}). {@link #hugePagesUnlessSet()}
 * makes LibTorch's CPU allocator back large buffers with transparent huge pages. Both go
 * through spo4j's own native library, which does not load LibTorch or OpenMP.
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
     * Sets {@code THP_MEM_ALLOC_ENABLE=1} in this process unless it is set: LibTorch's CPU
     * allocator then aligns buffers of 2 MiB and more to 2 MiB and asks the kernel for
     * transparent huge pages (madvise), so that a fresh buffer faults in 2 MiB pages instead
     * of 4 KiB ones. LibTorch reads the variable once, at its first CPU allocation. Measured on
     * the 2-core EPYC VM (THP in madvise mode): zeroing a fresh 2 GiB fp32 tensor took 4.8-5.0 s
     * with 4 KiB pages and 0.08-0.09 s with huge pages; widening a 1 GiB bf16 tensor into a
     * fresh fp32 one 3.6-5.4 s and 0.10-0.61 s. Where THP is off ({@code never}) the advice is
     * ignored and nothing changes. Returns true when it set the variable.
     */
    public static boolean hugePagesUnlessSet() {
        return setDefault("THP_MEM_ALLOC_ENABLE", "1");
    }

    /** {@link #passiveWaitUnlessSet()} and {@link #hugePagesUnlessSet()}: call before LibTorch is used. */
    public static void defaultsUnlessSet() {
        passiveWaitUnlessSet();
        hugePagesUnlessSet();
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
