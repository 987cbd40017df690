package dev.spo4j.kernels;

import org.bytedeco.javacpp.Pointer;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch_cuda;

/**
 * Whether the CUDA kernels can run here, and LibTorch's current stream for a launch.
 * The kernels are compiled into {@code libspo4j.so} only when nvcc was present at build
 * time; the device count comes from the library's own (static) CUDA runtime, so neither the
 * LibTorch GPU build nor the CUDA natives are needed to ask.
 */
public final class CudaKernels {
    private CudaKernels() {}

    /** True when the library has the CUDA kernels compiled in. */
    public static boolean built() {
        return Native.spo4j_cuda_built() == 1;
    }

    /** Visible CUDA devices (0 without a driver, a GPU or a CUDA build). */
    public static int deviceCount() {
        return Native.spo4j_cuda_device_count();
    }

    /** True when the CUDA kernels are compiled in and at least one CUDA device is visible. */
    public static boolean available() {
        return built() && deviceCount() > 0;
    }

    /** Throws unless CUDA tensors can be handled; the message says which part is missing. */
    public static void require() {
        if (!built()) {
            throw new IllegalArgumentException("a CUDA tensor was given but this spo4j build has no "
                    + "CUDA kernels (it was built without nvcc; rebuild with -Dspo4j.cuda=ON)");
        }
        if (deviceCount() == 0) {
            throw new IllegalArgumentException("a CUDA tensor was given but no CUDA device is visible "
                    + "to spo4j's CUDA runtime (driver missing or no GPU)");
        }
    }

    /** LibTorch's current CUDA stream on the tensor's device, as a {@code cudaStream_t}. */
    public static Pointer currentStream(Tensor onDevice) {
        return torch_cuda.getCurrentCUDAStream(onDevice.device().index()).stream();
    }
}
