// Shared pieces of the CUDA kernels (native/cuda/*.cu):
//  - SPO4J_CUDA_TRY: turns a cudaError_t into spo4j::fail(SPO4J_ERR_CUDA, ...) and returns
//    it; used after every runtime call and, through cudaGetLastError(), after every launch.
//  - Element traits for fp32 / bf16 / fp16 logits: scalar and 128-bit vector loads and
//    stores that convert to and from fp32 (all arithmetic is fp32).
//  - Device error flags: a 16-byte slot per checked call that kernels atomicMin the first
//    bad row into (DeviceFlags below), with a pinned host mirror that the host copies it to
//    and reads after a stream synchronise. Unchecked calls use no slot (flags == nullptr).
//  - Host argument helpers shared by the entry points: device-pointer checks and a scoped
//    device switch (device.cu implements them).
#pragma once

#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cfloat>
#include <cstdint>

#include "spo4j.h"
#include "status.h"

// Returns from the enclosing entry point with SPO4J_ERR_CUDA when `expr` fails, clearing the
// runtime's last error (a sticky error stays sticky) so that a later call's launch check
// does not report this one.
#define SPO4J_CUDA_TRY(expr)                                                              \
    do {                                                                                  \
        cudaError_t spo4j_err_ = (expr);                                                  \
        if (spo4j_err_ != cudaSuccess) {                                                  \
            (void)cudaGetLastError(); /* not left for the next launch check to find */    \
            return spo4j::fail(SPO4J_ERR_CUDA, "%s: %s (%s)", #expr,                      \
                               cudaGetErrorString(spo4j_err_), cudaGetErrorName(spo4j_err_)); \
        }                                                                                 \
    } while (0)

// Check after a kernel launch (configuration errors and earlier asynchronous faults).
#define SPO4J_CUDA_LAUNCHED(kernel_name)                                                  \
    do {                                                                                  \
        cudaError_t spo4j_err_ = cudaGetLastError();                                      \
        if (spo4j_err_ != cudaSuccess) {                                                  \
            return spo4j::fail(SPO4J_ERR_CUDA, "launch of %s: %s (%s)", kernel_name,      \
                               cudaGetErrorString(spo4j_err_), cudaGetErrorName(spo4j_err_)); \
        }                                                                                 \
    } while (0)

namespace spo4j {
namespace cuda {

// ---- element traits -------------------------------------------------------------------
// VEC elements make one 16-byte vector. Scalar accesses go through the raw bits so that no
// overload of the cache-hint intrinsics for the 16-bit types is needed.

template <typename T>
struct Elem;

template <>
struct Elem<float> {
    static constexpr int VEC = 4;
    __device__ __forceinline__ static float load(const float* p) { return __ldcs(p); }
    __device__ __forceinline__ static float load_cached(const float* p) { return *p; }
    __device__ __forceinline__ static void store(float* p, float v) { __stcs(p, v); }
    __device__ __forceinline__ static void unpack(const uint4& u, float* f) {
        f[0] = __uint_as_float(u.x);
        f[1] = __uint_as_float(u.y);
        f[2] = __uint_as_float(u.z);
        f[3] = __uint_as_float(u.w);
    }
    __device__ __forceinline__ static uint4 pack(const float* f) {
        return make_uint4(__float_as_uint(f[0]), __float_as_uint(f[1]), __float_as_uint(f[2]),
                          __float_as_uint(f[3]));
    }
};

__device__ __forceinline__ float bf16_bits_to_float(unsigned int bits16) {
    return __uint_as_float(bits16 << 16);  // exact: bf16 is the top half of an fp32
}
__device__ __forceinline__ unsigned int pack_two(float lo, float hi, __nv_bfloat16*) {
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);  // round to nearest even
    return *reinterpret_cast<unsigned int*>(&h);
}
__device__ __forceinline__ unsigned int pack_two(float lo, float hi, __half*) {
    __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<unsigned int*>(&h);
}

template <>
struct Elem<__nv_bfloat16> {
    static constexpr int VEC = 8;
    __device__ __forceinline__ static float load(const __nv_bfloat16* p) {
        return bf16_bits_to_float(__ldcs(reinterpret_cast<const unsigned short*>(p)));
    }
    __device__ __forceinline__ static float load_cached(const __nv_bfloat16* p) {
        return bf16_bits_to_float(*reinterpret_cast<const unsigned short*>(p));
    }
    __device__ __forceinline__ static void store(__nv_bfloat16* p, float v) {
        __nv_bfloat16 h = __float2bfloat16_rn(v);
        __stcs(reinterpret_cast<unsigned short*>(p), *reinterpret_cast<unsigned short*>(&h));
    }
    __device__ __forceinline__ static void unpack(const uint4& u, float* f) {
        const unsigned int w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            f[2 * i] = __uint_as_float(w[i] << 16);
            f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
        }
    }
    __device__ __forceinline__ static uint4 pack(const float* f) {
        __nv_bfloat16* tag = nullptr;
        return make_uint4(pack_two(f[0], f[1], tag), pack_two(f[2], f[3], tag),
                          pack_two(f[4], f[5], tag), pack_two(f[6], f[7], tag));
    }
};

template <>
struct Elem<__half> {
    static constexpr int VEC = 8;
    __device__ __forceinline__ static float load(const __half* p) {
        return __half2float(__ushort_as_half(__ldcs(reinterpret_cast<const unsigned short*>(p))));
    }
    __device__ __forceinline__ static float load_cached(const __half* p) {
        return __half2float(__ushort_as_half(*reinterpret_cast<const unsigned short*>(p)));
    }
    __device__ __forceinline__ static void store(__half* p, float v) {
        __stcs(reinterpret_cast<unsigned short*>(p), __half_as_ushort(__float2half_rn(v)));
    }
    __device__ __forceinline__ static void unpack(const uint4& u, float* f) {
        const unsigned int w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            __half2 h = *reinterpret_cast<const __half2*>(&w[i]);
            float2 v = __half22float2(h);
            f[2 * i] = v.x;
            f[2 * i + 1] = v.y;
        }
    }
    __device__ __forceinline__ static uint4 pack(const float* f) {
        __half* tag = nullptr;
        return make_uint4(pack_two(f[0], f[1], tag), pack_two(f[2], f[3], tag),
                          pack_two(f[4], f[5], tag), pack_two(f[6], f[7], tag));
    }
};

// Number of leading elements of a row before its first 16-byte boundary (0..VEC-1),
// clamped to the row length. Rows are walked as: `head` scalars, then whole 16-byte
// vectors, then a scalar tail.
template <typename T>
__device__ __forceinline__ int head_elems(const T* row, int vocab) {
    const unsigned int mis = static_cast<unsigned int>(reinterpret_cast<uintptr_t>(row) & 15u);
    const int h = static_cast<int>(((16u - mis) & 15u) / sizeof(T));
    return h < vocab ? h : vocab;
}

// ---- device error flags ---------------------------------------------------------------
// Each field holds the smallest offending row (atomicMin), or ~0ull when none.
struct DeviceFlags {
    unsigned long long bad_target_row;
    unsigned long long nonfinite_row;
};
constexpr unsigned long long kNoRow = ~0ull;

__device__ __forceinline__ void flag_row(unsigned long long* field, int64_t row) {
    atomicMin(field, static_cast<unsigned long long>(row));
}

// A flag slot leased from a per-device free list for the length of one checked call (the
// call synchronises its stream before it returns the slot, so no two in-flight calls share
// one): 16 device bytes and their pinned host mirror, so that reading them back is a small
// DMA copy rather than a staged copy through pageable memory.
class FlagLease {
public:
    FlagLease() = default;
    ~FlagLease();
    FlagLease(const FlagLease&) = delete;
    FlagLease& operator=(const FlagLease&) = delete;
    // Returns SPO4J_OK or a failed status (message set).
    int acquire(int device);
    DeviceFlags* get() const { return flags_; }
    // Resets the slot to kNoRow (async, on `stream`).
    int reset(cudaStream_t stream) const;
    // Copies the slot to its pinned mirror, synchronises `stream` and returns the values in
    // *out; the slot then goes back to the pool when the lease ends. A lease that ends
    // without a successful read (a CUDA error on the way) leaks its slot rather than hand
    // one that queued work may still write to another call.
    int read(cudaStream_t stream, DeviceFlags* out);

private:
    int device_ = -1;
    DeviceFlags* flags_ = nullptr;
    DeviceFlags* host_ = nullptr;
    bool idle_ = false;
};

// Finds the device that owns `ptr` (the current device when the runtime cannot tell) and
// rejects pointers the device cannot dereference (plain host memory on a non-HMM system)
// or that live on another device than `expected_device` (when >= 0).
int check_device_pointer(const void* ptr, const char* name, int expected_device, int* device);

// Whether work queued on `stream` now would be captured into a CUDA graph (or the runtime
// cannot tell, e.g. the legacy stream while another stream captures). The unchecked entry
// points then skip the pointer queries above and use the current device.
bool stream_is_capturing(cudaStream_t stream);

// Makes `device` current for its lifetime, restoring the previous device afterwards.
class DeviceScope {
public:
    DeviceScope() = default;
    ~DeviceScope();
    DeviceScope(const DeviceScope&) = delete;
    DeviceScope& operator=(const DeviceScope&) = delete;
    int enter(int device);

private:
    int previous_ = -1;
};

}  // namespace cuda
}  // namespace spo4j
