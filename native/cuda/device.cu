// Device discovery and the host-side plumbing shared by the CUDA kernels: the per-device
// pool of error-flag slots, pointer checks, capture detection and the scoped device switch
// (see common.cuh).
// spo4j_cuda_device_count() never fails: without a driver (cudaErrorInsufficientDriver, 35)
// or a GPU (cudaErrorNoDevice, 100) it returns 0. The harness checks it
// (native/tests/check.cpp, spo4j_harness check).
#include "common.cuh"

#include <mutex>
#include <vector>

namespace spo4j {
namespace cuda {
namespace {

// Free flag slots per device: a device slot and its pinned host mirror. Slots are allocated
// the first time a device needs more of them than are free (one per concurrently running
// checked call) and are never freed: 16 device and 16 pinned host bytes each, owned by the
// primary context for the life of the process.
struct Slot {
    DeviceFlags* dev;
    DeviceFlags* host;
};
std::mutex g_pool_mutex;
std::vector<std::vector<Slot>> g_free_slots;

}  // namespace

FlagLease::~FlagLease() {
    if (flags_ != nullptr && idle_) {
        std::lock_guard<std::mutex> lock(g_pool_mutex);
        g_free_slots[static_cast<size_t>(device_)].push_back(Slot{flags_, host_});
    }
}

int FlagLease::acquire(int device) {
    {
        std::lock_guard<std::mutex> lock(g_pool_mutex);
        if (g_free_slots.size() <= static_cast<size_t>(device)) {
            g_free_slots.resize(static_cast<size_t>(device) + 1);
        }
        std::vector<Slot>& slots = g_free_slots[static_cast<size_t>(device)];
        if (!slots.empty()) {
            flags_ = slots.back().dev;
            host_ = slots.back().host;
            slots.pop_back();
            device_ = device;
            return SPO4J_OK;
        }
    }
    void* p = nullptr;
    void* h = nullptr;
    SPO4J_CUDA_TRY(cudaMalloc(&p, sizeof(DeviceFlags)));
    const cudaError_t e = cudaMallocHost(&h, sizeof(DeviceFlags));
    if (e != cudaSuccess) {
        (void)cudaFree(p);
        return fail(SPO4J_ERR_CUDA, "cudaMallocHost(flags): %s (%s)", cudaGetErrorString(e),
                    cudaGetErrorName(e));
    }
    flags_ = static_cast<DeviceFlags*>(p);
    host_ = static_cast<DeviceFlags*>(h);
    device_ = device;
    return SPO4J_OK;
}

int FlagLease::reset(cudaStream_t stream) const {
    SPO4J_CUDA_TRY(cudaMemsetAsync(flags_, 0xff, sizeof(DeviceFlags), stream));  // kNoRow
    return SPO4J_OK;
}

int FlagLease::read(cudaStream_t stream, DeviceFlags* out) {
    SPO4J_CUDA_TRY(
        cudaMemcpyAsync(host_, flags_, sizeof(DeviceFlags), cudaMemcpyDeviceToHost, stream));
    SPO4J_CUDA_TRY(cudaStreamSynchronize(stream));
    *out = *host_;
    idle_ = true;
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

bool stream_is_capturing(cudaStream_t stream) {
    cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
    const cudaError_t e = cudaStreamIsCapturing(stream, &st);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return true;
    }
    return st != cudaStreamCaptureStatusNone;
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
