// Device discovery and the host-side plumbing shared by the CUDA kernels: the per-device
// pool of error-flag slots, pointer checks and the scoped device switch (see common.cuh).
// spo4j_cuda_device_count() never fails: without a driver (cudaErrorInsufficientDriver, 35)
// or a GPU (cudaErrorNoDevice, 100) it returns 0. The harness checks it
// (native/tests/check.cpp, spo4j_harness check).
#include "common.cuh"

#include <mutex>
#include <vector>

namespace spo4j {
namespace cuda {
namespace {

// Free flag slots per device. Slots are allocated with cudaMalloc the first time a device
// needs more of them than are free (one per concurrently running call) and are never
// freed: 16 bytes each, owned by the primary context for the life of the process.
std::mutex g_pool_mutex;
std::vector<std::vector<DeviceFlags*>> g_free_slots;

}  // namespace

FlagLease::~FlagLease() {
    if (flags_ != nullptr && idle_) {
        std::lock_guard<std::mutex> lock(g_pool_mutex);
        g_free_slots[static_cast<size_t>(device_)].push_back(flags_);
    }
}

int FlagLease::acquire(int device) {
    {
        std::lock_guard<std::mutex> lock(g_pool_mutex);
        if (g_free_slots.size() <= static_cast<size_t>(device)) {
            g_free_slots.resize(static_cast<size_t>(device) + 1);
        }
        std::vector<DeviceFlags*>& slots = g_free_slots[static_cast<size_t>(device)];
        if (!slots.empty()) {
            flags_ = slots.back();
            slots.pop_back();
            device_ = device;
            return SPO4J_OK;
        }
    }
    void* p = nullptr;
    SPO4J_CUDA_TRY(cudaMalloc(&p, sizeof(DeviceFlags)));
    flags_ = static_cast<DeviceFlags*>(p);
    device_ = device;
    return SPO4J_OK;
}

int reset_flags(DeviceFlags* flags, cudaStream_t stream) {
    SPO4J_CUDA_TRY(cudaMemsetAsync(flags, 0xff, sizeof(DeviceFlags), stream));  // kNoRow
    return SPO4J_OK;
}

int read_flags(const DeviceFlags* flags, cudaStream_t stream, DeviceFlags* host) {
    SPO4J_CUDA_TRY(
        cudaMemcpyAsync(host, flags, sizeof(DeviceFlags), cudaMemcpyDeviceToHost, stream));
    SPO4J_CUDA_TRY(cudaStreamSynchronize(stream));
    return SPO4J_OK;
}

int check_device_pointer(const void* ptr, const char* name, int expected_device, int* device) {
    cudaPointerAttributes attr{};
    const cudaError_t e = cudaPointerGetAttributes(&attr, ptr);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();  // not sticky: clear it so the next check does not see it
        if (e == cudaErrorInvalidValue) {
            return fail(SPO4J_ERR_ARGUMENT, "%s (%p) is not a CUDA device pointer", name, ptr);
        }
        return fail(SPO4J_ERR_CUDA, "cudaPointerGetAttributes(%s): %s (%s)", name,
                    cudaGetErrorString(e), cudaGetErrorName(e));
    }
    // Unregistered host memory is only reachable from the GPU on HMM / ATS systems, where
    // the runtime reports a device address for it.
    if (attr.devicePointer == nullptr) {
        return fail(SPO4J_ERR_ARGUMENT,
                    "%s (%p) is host memory that the GPU cannot access; pass a CUDA device "
                    "pointer",
                    name, ptr);
    }
    int dev = -1;
    if (attr.type == cudaMemoryTypeDevice) {
        dev = attr.device;
    }
    if (dev < 0) {
        SPO4J_CUDA_TRY(cudaGetDevice(&dev));  // managed, pinned or system memory
    }
    if (expected_device >= 0 && attr.type == cudaMemoryTypeDevice && dev != expected_device) {
        return fail(SPO4J_ERR_ARGUMENT, "%s (%p) is on CUDA device %d but logits are on device %d",
                    name, ptr, dev, expected_device);
    }
    if (device != nullptr) {
        *device = dev;
    }
    return SPO4J_OK;
}

DeviceScope::~DeviceScope() {
    if (previous_ >= 0) {
        (void)cudaSetDevice(previous_);
    }
}

int DeviceScope::enter(int device) {
    int current = -1;
    SPO4J_CUDA_TRY(cudaGetDevice(&current));
    if (current != device) {
        SPO4J_CUDA_TRY(cudaSetDevice(device));
        previous_ = current;
    }
    return SPO4J_OK;
}

}  // namespace cuda
}  // namespace spo4j

extern "C" {

SPO4J_API int spo4j_cuda_built(void) { return 1; }

SPO4J_API int spo4j_cuda_device_count(void) {
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();  // no driver / no device: not an error for the caller
        return 0;
    }
    return n;
}

}  // extern "C"
