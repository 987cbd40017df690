// The shared CUDA side of the harness (cuda_check.cuh), and cuda_usable() for a CUDA build
// (cuda_stub.cpp has the one for a build without CUDA).
#include "cuda_check.cuh"

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace harness {

void cuda_or_die(cudaError_t e, const char* what, const char* file, int line) {
    if (e != cudaSuccess) {
        const char* slash = std::strrchr(file, '/');
        std::fprintf(stderr, "%s:%d: %s: %s\n", slash ? slash + 1 : file, line, what,
                     cudaGetErrorString(e));
        std::exit(3);
    }
}

bool pageable_memory_is_device_accessible() {
    int dev = 0, v = 0;
    CUDA_OR_DIE(cudaGetDevice(&dev));
    CUDA_OR_DIE(cudaDeviceGetAttribute(&v, cudaDevAttrPageableMemoryAccess, dev));
    return v != 0;
}

bool cuda_usable(std::string* why) {
    if (!spo4j_cuda_built()) {
        *why = "libspo4j was built without CUDA";
        return false;
    }
    if (spo4j_cuda_device_count() > 0) return true;
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    *why = e == cudaSuccess ? "no CUDA device is visible"
                            : strf("no usable CUDA device (cudaGetDeviceCount: %s, %s)",
                                   cudaGetErrorName(e), cudaGetErrorString(e));
    (void)cudaGetLastError();
    return false;
}

}  // namespace harness
