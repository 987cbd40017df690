// The CUDA side of the harness, shared by the CUDA checks (token_logprobs_check.cu,
// preference_loss_check.cu) and the CUDA timings (bench/native/token_logprobs_bench.cu):
// CUDA_OR_DIE for the harness's own CUDA calls, and device buffers with guard bytes around
// them. cuda_check.cu defines the functions; built only with CUDA.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "check.h"

namespace harness {

// A CUDA failure in the harness itself (not in the library under test) ends the run
// (exit status 3) with the file and line of the call.
void cuda_or_die(cudaError_t e, const char* what, const char* file, int line);
#define CUDA_OR_DIE(x) ::harness::cuda_or_die((x), #x, __FILE__, __LINE__)

// Device buffer with guard bytes (kGuard, kGuardBytes: check.h) before and after the
// payload; `at(off)` is payload+off. Strided buffers get their size from
// strided_payload_bytes (check.h), the rule the CPU harness checks.
// The payload starts as guard bytes too, or as `payload_fill` (0xff poisons with NaN).
// Every fill and upload ends with a device synchronise: the library runs on other streams
// (non-blocking ones included) that do not wait for the legacy stream's copies.
struct DevBuf {
    uint8_t* raw = nullptr;
    size_t bytes = 0;
    explicit DevBuf(size_t n, int payload_fill = -1) : bytes(n) {
        CUDA_OR_DIE(cudaMalloc(&raw, n + 2 * kGuardBytes));
        CUDA_OR_DIE(cudaMemset(raw, kGuard, n + 2 * kGuardBytes));
        if (payload_fill >= 0) CUDA_OR_DIE(cudaMemset(raw + kGuardBytes, payload_fill, n));
        CUDA_OR_DIE(cudaDeviceSynchronize());
    }
    ~DevBuf() { cudaFree(raw); }
    DevBuf(const DevBuf&) = delete;
    DevBuf& operator=(const DevBuf&) = delete;
    uint8_t* at(size_t off = 0) const { return raw + kGuardBytes + off; }
    template <typename T>
    T* as(size_t off = 0) const { return reinterpret_cast<T*>(at(off)); }
    void upload(const void* src, size_t n, size_t off = 0) const {
        CUDA_OR_DIE(cudaMemcpy(at(off), src, n, cudaMemcpyHostToDevice));
        CUDA_OR_DIE(cudaDeviceSynchronize());
    }
    std::vector<uint8_t> download_all() const {  // guards included
        std::vector<uint8_t> h(bytes + 2 * kGuardBytes);
        CUDA_OR_DIE(cudaMemcpy(h.data(), raw, h.size(), cudaMemcpyDeviceToHost));
        return h;
    }
    template <typename T>
    std::vector<T> download(size_t count, size_t off = 0) const {
        std::vector<T> h(count);
        CUDA_OR_DIE(cudaMemcpy(h.data(), at(off), count * sizeof(T), cudaMemcpyDeviceToHost));
        return h;
    }
};

// On HMM / ATS systems the GPU can read ordinary host memory, so the library accepts it.
bool pageable_memory_is_device_accessible();

}  // namespace harness
