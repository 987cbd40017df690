package dev.spo4j.kernels;

import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.javacpp.Loader;
import org.bytedeco.javacpp.LongPointer;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.annotation.Cast;
import org.bytedeco.javacpp.annotation.Const;
import org.bytedeco.javacpp.annotation.Name;
import org.bytedeco.javacpp.annotation.Platform;

/**
 * The raw C ABI of {@code native/include/spo4j.h}, bound by JavaCPP (the Maven build runs the
 * JavaCPP Builder over this class and links it to {@code libspo4j.so}, built by CMake).
 * Package-private: the public API is the op level ({@link TokenLogProbs},
 * {@link PreferenceLossKernel}, {@link CudaKernels}), which checks tensors first.
 *
 * <p>Nothing here validates, and every status goes through {@link #check(int, String)}, the
 * one place where a native failure becomes a Java exception. The constants below copy the
 * header's; {@code AbiConstantsTest} reads the header and checks that they agree.
 */
@Platform(include = "spo4j.h", link = "spo4j")
final class Native {
    static {
        Loader.load();
    }

    private Native() {}

    /** {@code spo4j_dtype}. */
    static final int F32 = 0, BF16 = 1, F16 = 2;
    /** {@code spo4j_status}. */
    static final int OK = 0, ERR_ARGUMENT = 1, ERR_TARGET = 2, ERR_NONFINITE = 3,
            ERR_CUDA = 4, ERR_NOT_BUILT = 5, ERR_INTERNAL = 6;

    /** {@code spo4j_loss_params}: loss type, beta, label smoothing, default margin, floor, tau, gamma, delta. */
    @Name("spo4j_loss_params")
    static class LossParams extends Pointer {
        static {
            Loader.load();
        }

        LossParams() {
            allocate();
        }

        private native void allocate();

        public native int type();
        public native LossParams type(int v);
        public native float beta();
        public native LossParams beta(float v);
        public native float label_smoothing();
        public native LossParams label_smoothing(float v);
        public native float margin();
        public native LossParams margin(float v);
        public native float margin_floor();
        public native LossParams margin_floor(float v);
        public native float tau();
        public native LossParams tau(float v);
        public native float gamma();
        public native LossParams gamma(float v);
        public native float delta();
        public native LossParams delta(float v);
    }

    static native int spo4j_token_logprobs_fwd_cpu(
            @Const Pointer logits, int dtype, long rows, long vocab, long rowStride,
            @Cast("const int64_t*") LongPointer targets, long ignoreIndex,
            FloatPointer logp, FloatPointer lse, FloatPointer entropy, int numThreads);

    static native int spo4j_token_logprobs_bwd_cpu(
            @Const Pointer logits, int dtype, long rows, long vocab, long rowStride,
            @Cast("const int64_t*") LongPointer targets, long ignoreIndex,
            @Const FloatPointer lse, @Const FloatPointer gradLogp,
            Pointer gradLogits, long gradRowStride, int numThreads);

    static native int spo4j_token_logprobs_bwd_slice_cpu(
            @Const Pointer logits, int dtype, long rows, long vocab, long rowStride,
            @Cast("const int64_t*") LongPointer targets, long ignoreIndex, long vocabOffset, long fullVocab,
            int oneHot, @Const FloatPointer lse, @Const FloatPointer gradLogp,
            Pointer gradLogits, long gradRowStride, int numThreads);

    static native int spo4j_add_widened_cpu(FloatPointer dst, @Const Pointer src, int dtype, long n, int numThreads);

    static native int spo4j_preference_loss_cpu(
            @Const LossParams p, long pairs,
            @Const FloatPointer policyChosen, @Const FloatPointer policyRejected,
            @Const FloatPointer refChosen, @Const FloatPointer refRejected,
            @Const FloatPointer margin,
            FloatPointer loss, FloatPointer gradChosen, FloatPointer gradRejected,
            FloatPointer stats);

    static native int spo4j_token_logprobs_fwd_cuda(
            @Const Pointer logits, int dtype, long rows, long vocab, long rowStride,
            @Cast("const int64_t*") LongPointer targets, long ignoreIndex,
            FloatPointer logp, FloatPointer lse, FloatPointer entropy, Pointer stream);

    static native int spo4j_token_logprobs_bwd_cuda(
            @Const Pointer logits, int dtype, long rows, long vocab, long rowStride,
            @Cast("const int64_t*") LongPointer targets, long ignoreIndex,
            @Const FloatPointer lse, @Const FloatPointer gradLogp,
            Pointer gradLogits, long gradRowStride, Pointer stream);

    static native int spo4j_token_logprobs_fwd_cuda_unchecked(
            @Const Pointer logits, int dtype, long rows, long vocab, long rowStride,
            @Cast("const int64_t*") LongPointer targets, long ignoreIndex,
            FloatPointer logp, FloatPointer lse, FloatPointer entropy, Pointer stream);

    static native int spo4j_token_logprobs_bwd_cuda_unchecked(
            @Const Pointer logits, int dtype, long rows, long vocab, long rowStride,
            @Cast("const int64_t*") LongPointer targets, long ignoreIndex,
            @Const FloatPointer lse, @Const FloatPointer gradLogp,
            Pointer gradLogits, long gradRowStride, Pointer stream);

    static native int spo4j_preference_loss_cuda(
            @Const LossParams p, long pairs,
            @Const FloatPointer policyChosen, @Const FloatPointer policyRejected,
            @Const FloatPointer refChosen, @Const FloatPointer refRejected,
            @Const FloatPointer margin,
            FloatPointer loss, FloatPointer gradChosen, FloatPointer gradRejected,
            FloatPointer stats, Pointer stream);

    static native int spo4j_cuda_built();

    static native int spo4j_set_env_default(String name, String value);

    static native int spo4j_cuda_device_count();

    @Cast("const char*")
    static native BytePointer spo4j_last_error();

    /**
     * The exception funnel: turns a non-zero status into an exception carrying the native
     * message of the calling thread. Argument, target and non-finite errors and a missing
     * CUDA build are the caller's fault ({@link IllegalArgumentException}); CUDA runtime and
     * internal errors are {@link IllegalStateException}.
     */
    static void check(int status, String what) {
        if (status == OK) {
            return;
        }
        String message = what + ": " + spo4j_last_error().getString();
        switch (status) {
            case ERR_NONFINITE -> throw new NonFiniteLogitsException(message);
            case ERR_ARGUMENT, ERR_TARGET, ERR_NOT_BUILT ->
                    throw new IllegalArgumentException(message);
            default -> throw new IllegalStateException(message + " (status " + status + ")");
        }
    }
}
