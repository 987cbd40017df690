// token_logprobs: fused log-softmax + gather over LM logits, forward and backward (CUDA).
// The CPU twin is native/cpu/token_logprobs.cpp; both implement native/include/spo4j.h.
//
//   forward : lse = log sum_v exp(z_v),  logp = z_t - lse,  entropy = lse - sum_v p_v z_v
//   backward: dL/dz_v = g * (1[v == t] - exp(z_v - lse))          (g = dL/dlogp of the row)
//
// Memory: the forward reads every logit once (one pass, no second read of the row): each
// thread keeps a running (max m, sum s = sum exp(z-m), t = sum exp(z-m)*(z-m)) over its
// elements, rescaled when m grows, merged across the warp with shuffles and across warps
// through shared memory. It writes 2-3 floats per row; nothing of size rows x V is kept,
// the backward needs only lse. The backward reads each logit once and writes its gradient
// once (in place over the logits when grad_logits == logits).
//   forward bytes  = rows*V*elem + rows*(8 + 4 + 4 [+ 4 entropy])
//   backward bytes = 2*rows*V*elem + rows*(8 + 4 + 4)
// Launch shapes (per row of V elements of `elem` bytes):
//   V*elem <= 4 KB : a warp per row, 8 rows per 256-thread block   (small vocabularies)
//   otherwise      : a block per row, 128..256 threads, at least 16 vectors per thread
// (256 threads at most: with 64 registers an SM then holds 4 rows at once, so one row's
// final reduction does not leave the SM idle.) SPO4J_CUDA_ROW_THREADS=32|64|128|256|512 in
// the environment overrides the choice (32: warp per row) for tuning and for the harness,
// which runs every launch shape on every case.
// Rows are walked as a scalar head up to the first 16-byte boundary, 16-byte vectors
// (__ldcs / __stcs: streamed, evict-first), four in flight per thread, then a scalar tail;
// any row stride and base alignment work, aligned rows have an empty head.
// Two ways to call, same kernels (spo4j.h):
//  - checked (spo4j_token_logprobs_{fwd,bwd}_cuda): the forward checks its targets inside its
//    one pass (a bad row gets NaN outputs and is flagged into a device slot); the backward
//    runs a pre-pass over the targets and lse first and its main kernel writes nothing when
//    the slot holds an error, so a failed in-place call leaves the logits untouched. The host
//    copies the slot to pinned memory, synchronises the stream and reports the smallest
//    offending row. Cost: a 16-byte memset, (backward) one tiny kernel, a 16-byte copy and a
//    stream synchronise per call.
//  - unchecked (..._cuda_unchecked), for callers that validated their targets already: no
//    slot, no memset, no copy, no synchronise, no allocation; the call returns once the
//    kernel is queued and can be captured into a CUDA graph. A bad target is still never
//    dereferenced: its row gets NaN (logp; the whole gradient row), unreported.
// Backward rows: vectors are aligned to the OUTPUT row; when the input row sits at another
// offset within 16 bytes (out of place with another stride or base offset), each output
// vector is assembled from two aligned input vectors with funnel shifts, so no layout falls
// back to element-wise access (only the up to 2*VEC-1 elements at each end of a row).
// The only CUDA source compiled with --use_fast_math (for flush-to-zero in the hot loops;
// native/CMakeLists.txt says why); the explicit __expf calls do not depend on it.
// Performance design (floors, predicted losses, the planned variants):
// src/site/markdown/CUDA.md.
// Test: native/tests/token_logprobs_check.cu (spo4j_harness check); benchmark:
// bench/native/token_logprobs_bench.cu (spo4j_harness bench) and bench/gpu/run.sh (against
// PyTorch eager and torch.compile).
#include "common.cuh"
#include "online_softmax.h"

#include <cinttypes>
#include <cmath>
#include <cstdlib>

namespace spo4j {
namespace cuda {
namespace {

constexpr int kUnroll = 4;           // 16-byte vectors in flight per thread per step
constexpr int kWarpRowsPerBlock = 8;  // warp-per-row path: 256-thread blocks
constexpr int kMaxThreads = 512;      // block-per-row path: compiled limit (overrides)
constexpr int kDefaultMaxThreads = 256;  // block-per-row path: largest default
constexpr int kMinThreads = 128;
constexpr int kWarpPathMaxRowBytes = 4096;
constexpr int kValidateThreads = 256;
constexpr int64_t kMaxGrid = 0x7fffffff;
constexpr unsigned kFullMask = 0xffffffffu;
// A vocabulary this large would overflow the in-row int indices (plus unroll slack).
constexpr int64_t kMaxVocab = (int64_t{1} << 31) - (int64_t{1} << 16);

// Running softmax statistics of a set of logits, relative to m:
//   s = sum exp(z - m), t = sum exp(z - m) * (z - m)   (t only when the entropy is wanted)
// m starts at -FLT_MAX rather than -inf, so that z - m and m - m' never give inf - inf:
// a -inf logit gives exp(-inf) = 0 and adds nothing; a row of only -inf keeps s = 0, so
// lse = m + log(0) = -inf. A NaN logit makes s NaN; a +inf logit makes m = +inf and s NaN.
struct Online {
    float m, s, t;
};

__device__ __forceinline__ Online online_empty() { return Online{-FLT_MAX, 0.0f, 0.0f}; }

// Absorbs N values: one rescale for the whole group, then N exp-adds.
template <int N, bool ENT>
__device__ __forceinline__ void absorb(Online& st, const float* x) {
    float cm = x[0];
#pragma unroll
    for (int i = 1; i < N; ++i) cm = fmaxf(cm, x[i]);  // fmaxf drops NaN; s catches it
    if (cm > st.m) {
        const float delta = fmaxf(st.m - cm, -FLT_MAX);  // <= 0, finite
        const float a = __expf(delta);
        if (ENT) st.t = rescale_entropy_term(a, delta, st.s, st.t);  // 0 (not NaN) once a is 0
        st.s *= a;
        st.m = cm;
    }
#pragma unroll
    for (int i = 0; i < N; ++i) {
        const float d = x[i] - st.m;
        const float e = __expf(d);
        st.s += e;
        // e = 0 for d = -inf: clamp d so that 0 * d stays 0 instead of NaN
        if (ENT) st.t = fmaf(e, fmaxf(d, -FLT_MAX), st.t);
    }
}

template <bool ENT>
__device__ __forceinline__ void merge(Online& a, float m2, float s2, float t2) {
    const float m = fmaxf(a.m, m2);
    const float d1 = fmaxf(a.m - m, -FLT_MAX), d2 = fmaxf(m2 - m, -FLT_MAX);
    const float e1 = __expf(d1), e2 = __expf(d2);
    if (ENT) a.t = rescale_entropy_term(e1, d1, a.s, a.t) + rescale_entropy_term(e2, d2, s2, t2);
    a.s = e1 * a.s + e2 * s2;
    a.m = m;
}

template <bool ENT>
__device__ __forceinline__ void warp_merge(Online& st) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        const float m2 = __shfl_xor_sync(kFullMask, st.m, off);
        const float s2 = __shfl_xor_sync(kFullMask, st.s, off);
        const float t2 = ENT ? __shfl_xor_sync(kFullMask, st.t, off) : 0.0f;
        merge<ENT>(st, m2, s2, t2);
    }
}

// Whole-block merge; the result is valid in thread 0. Ends with a barrier so that the
// shared arrays can be reused by the next row.
template <bool ENT>
__device__ __forceinline__ void block_merge(Online& st) {
    __shared__ float sm[32], ss[32], stt[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int nwarps = (blockDim.x + 31) >> 5;
    warp_merge<ENT>(st);
    if (lane == 0) {
        sm[warp] = st.m;
        ss[warp] = st.s;
        stt[warp] = st.t;
    }
    __syncthreads();
    if (warp == 0) {
        st = lane < nwarps ? Online{sm[lane], ss[lane], stt[lane]} : online_empty();
        warp_merge<ENT>(st);
    }
    __syncthreads();
}

// This thread's share of one row: elements rank, rank + group, ... in the layout
// [scalar head | 16-byte vectors | scalar tail]. Each part of the head/tail is < group.
template <typename T, bool ENT>
__device__ __forceinline__ Online scan_row(const T* row, int vocab, int rank, int group) {
    using E = Elem<T>;
    constexpr int VEC = E::VEC;
    Online st = online_empty();
    const int head = head_elems(row, vocab);
    const int nvec = (vocab - head) / VEC;
    const int tail = head + nvec * VEC;
    if (rank < head) {
        const float x = E::load(row + rank);
        absorb<1, ENT>(st, &x);
    }
    const uint4* vrow = reinterpret_cast<const uint4*>(row + head);
    int i = rank;
    for (; i + (kUnroll - 1) * group < nvec; i += kUnroll * group) {
        uint4 u[kUnroll];
#pragma unroll
        for (int k = 0; k < kUnroll; ++k) u[k] = __ldcs(vrow + i + k * group);
        float x[kUnroll * VEC];
#pragma unroll
        for (int k = 0; k < kUnroll; ++k) E::unpack(u[k], x + k * VEC);
        absorb<kUnroll * VEC, ENT>(st, x);
    }
    for (; i < nvec; i += group) {
        const uint4 u = __ldcs(vrow + i);
        float x[VEC];
        E::unpack(u, x);
        absorb<VEC, ENT>(st, x);
    }
    if (tail + rank < vocab) {
        const float x = E::load(row + tail + rank);
        absorb<1, ENT>(st, &x);
    }
    return st;
}

// Backward pre-pass (checked calls): targets in range (or ignore_index) and lse finite on
// every non-ignored row. Records the smallest offending row of each kind.
__global__ void validate_rows_kernel(int64_t rows, int64_t vocab, const int64_t* targets,
                                     int64_t ignore_index, const float* lse,
                                     DeviceFlags* flags) {
    const int64_t step = int64_t{gridDim.x} * blockDim.x;
    for (int64_t r = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; r < rows; r += step) {
        const int64_t t = targets[r];
        if (t == ignore_index) continue;
        if (t < 0 || t >= vocab) {
            flag_row(&flags->bad_target_row, r);
        } else if (lse[r] == -INFINITY) {
            flag_row(&flags->nonfinite_row, r);
        }
    }
}

// Writes one finished row (thread 0 / lane 0 only). flags is null on unchecked calls.
template <bool ENT>
__device__ __forceinline__ void finish_row(const Online& st, float zt, int64_t row, float* logp,
                                           float* lse, float* entropy, DeviceFlags* flags) {
    // Once per row, so the log is taken in double (fast-math logf is approximate).
    const float log_s = static_cast<float>(log(static_cast<double>(st.s)));
    const float l = st.m + log_s;
    lse[row] = l;
    logp[row] = (zt - st.m) - log_s;  // = zt - lse, without the rounding of lse
    if (ENT) entropy[row] = log_s - st.t / st.s;
    // NaN propagates, as on the CPU; a row with no finite logit is an error
    if (flags != nullptr && l == -INFINITY) flag_row(&flags->nonfinite_row, row);
}

// Forward. WARP: a warp per row, 8 rows per block; else a block per row. The target check is
// folded into the pass: a target outside [0, vocab) that is not ignore_index is never
// dereferenced; its row gets logp = NaN and (checked calls, flags != null) is flagged.
template <typename T, bool ENT, bool WARP>
__global__ void __launch_bounds__(WARP ? 32 * kWarpRowsPerBlock : kMaxThreads)
    fwd_kernel(const T* __restrict__ logits, int64_t rows, int vocab, int64_t row_stride,
               const int64_t* __restrict__ targets, int64_t ignore_index,
               float* __restrict__ logp, float* __restrict__ lse, float* __restrict__ entropy,
               DeviceFlags* flags) {
    const int rank = WARP ? (threadIdx.x & 31) : threadIdx.x;
    const int group = WARP ? 32 : blockDim.x;
    const int64_t first = WARP ? int64_t{blockIdx.x} * kWarpRowsPerBlock + (threadIdx.x >> 5)
                               : int64_t{blockIdx.x};
    const int64_t step = WARP ? int64_t{gridDim.x} * kWarpRowsPerBlock : int64_t{gridDim.x};
    for (int64_t row = first; row < rows; row += step) {
        const int64_t t = targets[row];
        if (t == ignore_index) {  // uniform across the row's threads
            if (rank == 0) {
                logp[row] = 0.0f;
                lse[row] = 0.0f;
                if (ENT) entropy[row] = 0.0f;
            }
            continue;
        }
        const T* zrow = logits + row * row_stride;
        // The target logit is fetched first so that its latency hides behind the row pass. A
        // bad target is flagged here and never dereferenced: its logp is NaN.
        float zt = 0.0f;
        if (rank == 0) {
            if (t < 0 || t >= vocab) {
                if (flags != nullptr) flag_row(&flags->bad_target_row, row);
                zt = __int_as_float(0x7fc00000);
            } else {
                zt = Elem<T>::load_cached(zrow + t);
            }
        }
        Online st = scan_row<T, ENT>(zrow, vocab, rank, group);
        if (WARP) {
            warp_merge<ENT>(st);
        } else {
            block_merge<ENT>(st);
        }
        if (rank == 0) finish_row<ENT>(st, zt, row, logp, lse, entropy, flags);
    }
}

// Bytes [S, S + 16) of the 32 bytes lo ++ hi (S even, 2..14) as one 16-byte vector: the
// input vector that lines up with an aligned output vector when the two rows sit at
// different offsets within 16 bytes. Compile-time word indices keep it in registers.
template <int S>
__device__ __forceinline__ uint4 bytes_from(const uint4& lo, const uint4& hi) {
    const unsigned int w[8] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
    constexpr int Q = S / 4, R = (S % 4) * 8;
    unsigned int o[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) o[j] = R ? __funnelshift_r(w[Q + j], w[Q + j + 1], R) : w[Q + j];
    return make_uint4(o[0], o[1], o[2], o[3]);
}

// s is uniform across the row's threads, so the switch does not diverge.
__device__ __forceinline__ uint4 realign(const uint4& lo, const uint4& hi, int s) {
    switch (s) {
        case 2: return bytes_from<2>(lo, hi);
        case 4: return bytes_from<4>(lo, hi);
        case 6: return bytes_from<6>(lo, hi);
        case 8: return bytes_from<8>(lo, hi);
        case 10: return bytes_from<10>(lo, hi);
        case 12: return bytes_from<12>(lo, hi);
        default: return bytes_from<14>(lo, hi);
    }
}

// out_j = g * (1[base + j == tv] - exp(x_j - l)) for one vector of VEC values.
template <int VEC>
__device__ __forceinline__ void grad_vec(float* x, int base, int tv, float g, float l) {
#pragma unroll
    for (int j = 0; j < VEC; ++j) x[j] = -g * __expf(x[j] - l);
    if (static_cast<unsigned>(tv - base) < static_cast<unsigned>(VEC)) {
#pragma unroll
        for (int j = 0; j < VEC; ++j) x[j] += base + j == tv ? g : 0.0f;
    }
}

// The vector part of one gradient row: output vectors i in [first, nvec) of `vout`, each from
// input vector i (SHIFT false: same 16-byte phase) or from input vectors i and i + 1 of the
// aligned `vin`, realigned by s bytes (SHIFT true). kUnroll vectors (2 * kUnroll loads with
// SHIFT) in flight per thread.
template <typename T, bool SHIFT>
__device__ __forceinline__ void grad_vectors(const uint4* vin, uint4* vout, int first, int nvec,
                                             int s, int tv, float g, float l, int rank,
                                             int group) {
    using E = Elem<T>;
    constexpr int VEC = E::VEC;
    int i = first + rank;
    for (; i + (kUnroll - 1) * group < nvec; i += kUnroll * group) {
        uint4 u[kUnroll];
#pragma unroll
        for (int k = 0; k < kUnroll; ++k) u[k] = __ldcs(vin + i + k * group);
        if constexpr (SHIFT) {
            uint4 h[kUnroll];
#pragma unroll
            for (int k = 0; k < kUnroll; ++k) h[k] = __ldcs(vin + i + k * group + 1);
#pragma unroll
            for (int k = 0; k < kUnroll; ++k) u[k] = realign(u[k], h[k], s);
        }
#pragma unroll
        for (int k = 0; k < kUnroll; ++k) {
            float x[VEC];
            E::unpack(u[k], x);
            grad_vec<VEC>(x, (i + k * group) * VEC, tv, g, l);
            u[k] = E::pack(x);
        }
#pragma unroll
        for (int k = 0; k < kUnroll; ++k) __stcs(vout + i + k * group, u[k]);
    }
    for (; i < nvec; i += group) {
        uint4 u = __ldcs(vin + i);
        if constexpr (SHIFT) u = realign(u, __ldcs(vin + i + 1), s);
        float x[VEC];
        E::unpack(u, x);
        grad_vec<VEC>(x, i * VEC, tv, g, l);
        __stcs(vout + i, E::pack(x));
    }
}

// One gradient row: out_v = g * (1[v == t] - exp(z_v - l)). The row is walked in the output's
// 16-byte vectors: `head` scalars up to the output's first boundary, then vectors, then a
// scalar tail. When the input row has the same phase (always in place, or both rows aligned),
// input vectors line up with output vectors; otherwise (s != 0) each output vector is built
// from the two aligned input vectors that cover it (realign), and the vector range shrinks so
// that those loads stay inside the row: the first vector moves to the scalar head when its
// lower input vector would start before the row, the last ones to the tail when their upper
// input vector would end after it.
template <typename T>
__device__ __forceinline__ void grad_row(const T* zrow, T* grow, int vocab, int t, float g,
                                         float l, int rank, int group) {
    using E = Elem<T>;
    constexpr int VEC = E::VEC;
    const int head = head_elems(grow, vocab);
    const int s = static_cast<int>(reinterpret_cast<uintptr_t>(zrow + head) & 15u);  // bytes
    const int sh = s / static_cast<int>(sizeof(T));  // the same in elements (< VEC)
    int first = 0, nvec = (vocab - head) / VEC;
    if (s != 0) {
        first = head < sh ? 1 : 0;
        const int room = vocab - head + sh - VEC;  // vector i needs head + (i + 2) VEC - sh <= vocab
        nvec = room >= 0 ? room / VEC : 0;
        if (nvec <= first) first = nvec = 0;  // no vector fits: the whole (short) row is scalar
    }
    const int vbeg = head + first * VEC, vend = head + nvec * VEC;
    for (int v = rank; v < vbeg; v += group) {  // < 2 VEC elements
        const float e = __expf(E::load(zrow + v) - l);
        E::store(grow + v, fmaf(-g, e, v == t ? g : 0.0f));
    }
    uint4* vout = reinterpret_cast<uint4*>(grow + head);
    const int tv = t - head;  // target position relative to the vector part
    if (s == 0) {
        grad_vectors<T, false>(reinterpret_cast<const uint4*>(zrow + head), vout, first, nvec, 0,
                               tv, g, l, rank, group);
    } else {
        // aligned input vectors; index i is the one at or below output vector i's input
        const uint4* vin = reinterpret_cast<const uint4*>(
            reinterpret_cast<uintptr_t>(zrow + head) - static_cast<uintptr_t>(s));
        grad_vectors<T, true>(vin, vout, first, nvec, s, tv, g, l, rank, group);
    }
    for (int v = vend + rank; v < vocab; v += group) {  // < 2 VEC elements
        const float e = __expf(E::load(zrow + v) - l);
        E::store(grow + v, fmaf(-g, e, v == t ? g : 0.0f));
    }
}

// Fills a gradient row with one value: 0 for an ignored row, NaN for a bad target on an
// unchecked call.
template <typename T>
__device__ __forceinline__ void fill_row(T* grow, int vocab, float value, int rank, int group) {
    using E = Elem<T>;
    constexpr int VEC = E::VEC;
    const int head = head_elems(grow, vocab);
    const int nvec = (vocab - head) / VEC;
    const int tail = head + nvec * VEC;
    if (rank < head) E::store(grow + rank, value);
    float x[VEC];
#pragma unroll
    for (int j = 0; j < VEC; ++j) x[j] = value;
    const uint4 u = E::pack(x);
    uint4* vout = reinterpret_cast<uint4*>(grow + head);
    for (int i = rank; i < nvec; i += group) __stcs(vout + i, u);
    if (tail + rank < vocab) E::store(grow + tail + rank, value);
}

// Backward. Logits and gradient may be the same memory (same stride): every element is
// read before the same thread overwrites it, and nothing else reads it. flags: the checked
// call's slot, filled by the pre-pass (nothing is written when it holds an error), or null.
template <typename T, bool WARP>
__global__ void __launch_bounds__(WARP ? 32 * kWarpRowsPerBlock : kMaxThreads)
    bwd_kernel(const T* logits, int64_t rows, int vocab, int64_t row_stride,
               const int64_t* __restrict__ targets, int64_t ignore_index,
               const float* __restrict__ lse, const float* __restrict__ grad_logp, T* grad,
               int64_t grad_row_stride, const DeviceFlags* flags) {
    if (flags != nullptr && (flags->bad_target_row != kNoRow || flags->nonfinite_row != kNoRow))
        return;
    const int rank = WARP ? (threadIdx.x & 31) : threadIdx.x;
    const int group = WARP ? 32 : blockDim.x;
    const int64_t first = WARP ? int64_t{blockIdx.x} * kWarpRowsPerBlock + (threadIdx.x >> 5)
                               : int64_t{blockIdx.x};
    const int64_t step = WARP ? int64_t{gridDim.x} * kWarpRowsPerBlock : int64_t{gridDim.x};
    for (int64_t row = first; row < rows; row += step) {
        const int64_t t = targets[row];
        T* grow = grad + row * grad_row_stride;
        if (t == ignore_index) {
            fill_row<T>(grow, vocab, 0.0f, rank, group);
        } else if (t < 0 || t >= vocab) {  // only on unchecked calls: never dereferenced
            fill_row<T>(grow, vocab, __int_as_float(0x7fc00000), rank, group);
        } else {
            grad_row<T>(logits + row * row_stride, grow, vocab, static_cast<int>(t),
                        grad_logp[row], lse[row], rank, group);
        }
    }
}

// ---- host side ------------------------------------------------------------------------

int elem_size(int32_t dtype) { return dtype == SPO4J_F32 ? 4 : 2; }

struct Launch {
    bool warp;
    int threads;
    unsigned blocks;
};

// SPO4J_CUDA_ROW_THREADS, read on every call (cheap next to a launch): 0 when unset/invalid.
int row_threads_override() {
    const char* e = std::getenv("SPO4J_CUDA_ROW_THREADS");
    if (e == nullptr) return 0;
    const int v = std::atoi(e);
    return v == 32 || v == 64 || v == 128 || v == 256 || v == 512 ? v : 0;
}

Launch launch_shape(int64_t rows, int64_t vocab, int32_t dtype) {
    const int64_t row_bytes = vocab * elem_size(dtype);
    const int forced = row_threads_override();
    Launch l{};
    if (forced > 32) {
        l.warp = false;
        l.threads = forced;
        l.blocks = static_cast<unsigned>(rows < kMaxGrid ? rows : kMaxGrid);
    } else if (forced == 32 || row_bytes <= kWarpPathMaxRowBytes) {
        l.warp = true;
        l.threads = 32 * kWarpRowsPerBlock;
        const int64_t b = (rows + kWarpRowsPerBlock - 1) / kWarpRowsPerBlock;
        l.blocks = static_cast<unsigned>(b < kMaxGrid ? b : kMaxGrid);
    } else {
        l.warp = false;
        const int64_t vectors = row_bytes / 16;
        int threads = kMinThreads;
        while (threads < kDefaultMaxThreads && threads * 16 < vectors) threads *= 2;
        l.threads = threads;
        l.blocks = static_cast<unsigned>(rows < kMaxGrid ? rows : kMaxGrid);
    }
    return l;
}

const char* dtype_name(int32_t dtype) {
    return dtype == SPO4J_F32 ? "f32" : dtype == SPO4J_BF16 ? "bf16" : "f16";
}

int check_shape(const void* logits, int32_t dtype, int64_t rows, int64_t vocab,
                int64_t row_stride) {
    if (dtype != SPO4J_F32 && dtype != SPO4J_BF16 && dtype != SPO4J_F16)
        return fail(SPO4J_ERR_ARGUMENT, "unknown logits dtype %d (expected 0=f32, 1=bf16, 2=f16)",
                    dtype);
    if (rows < 0) return fail(SPO4J_ERR_ARGUMENT, "rows = %" PRId64 " (expected >= 0)", rows);
    if (vocab < 1) return fail(SPO4J_ERR_ARGUMENT, "vocab = %" PRId64 " (expected >= 1)", vocab);
    if (vocab > kMaxVocab)
        return fail(SPO4J_ERR_ARGUMENT, "vocab = %" PRId64 " exceeds the CUDA kernels' limit %" PRId64,
                    vocab, kMaxVocab);
    if (row_stride < vocab)
        return fail(SPO4J_ERR_ARGUMENT, "row stride %" PRId64 " < vocab %" PRId64, row_stride, vocab);
    if (rows > 0 && reinterpret_cast<uintptr_t>(logits) % elem_size(dtype) != 0)
        return fail(SPO4J_ERR_ARGUMENT, "logits pointer %p is not aligned to its %s element size",
                    logits, dtype_name(dtype));
    return SPO4J_OK;
}

// Turns the flags a checked call read back into a status with the CPU kernels' wording
// (one more small copy and synchronise, on the error path only, for the offending target).
int report_flags(const DeviceFlags& f, const int64_t* targets, int64_t vocab,
                 int64_t ignore_index, bool backward, cudaStream_t stream) {
    if (f.bad_target_row != kNoRow) {
        const int64_t r = static_cast<int64_t>(f.bad_target_row);
        int64_t t = 0;
        SPO4J_CUDA_TRY(cudaMemcpyAsync(&t, targets + r, sizeof t, cudaMemcpyDeviceToHost, stream));
        SPO4J_CUDA_TRY(cudaStreamSynchronize(stream));
        return fail(SPO4J_ERR_TARGET,
                    "target %" PRId64 " at row %" PRId64 " is out of range [0, %" PRId64
                    ") and is not ignore_index %" PRId64,
                    t, r, vocab, ignore_index);
    }
    if (f.nonfinite_row != kNoRow) {
        const int64_t r = static_cast<int64_t>(f.nonfinite_row);
        int64_t t = 0;
        SPO4J_CUDA_TRY(cudaMemcpyAsync(&t, targets + r, sizeof t, cudaMemcpyDeviceToHost, stream));
        SPO4J_CUDA_TRY(cudaStreamSynchronize(stream));
        if (backward)
            return fail(SPO4J_ERR_NONFINITE,
                        "lse at row %" PRId64 " is -inf (a row with no finite logit)", r);
        return fail(SPO4J_ERR_NONFINITE,
                    "row %" PRId64 " (target %" PRId64 ") has no finite logit: every logit is -inf",
                    r, t);
    }
    return SPO4J_OK;
}

int launch_validate(int64_t rows, int64_t vocab, const int64_t* targets, int64_t ignore_index,
                    const float* lse, DeviceFlags* flags, cudaStream_t stream) {
    int64_t blocks = (rows + kValidateThreads - 1) / kValidateThreads;
    if (blocks > 4096) blocks = 4096;  // grid-stride beyond that; the pass is tiny
    validate_rows_kernel<<<static_cast<unsigned>(blocks), kValidateThreads, 0, stream>>>(
        rows, vocab, targets, ignore_index, lse, flags);
    SPO4J_CUDA_LAUNCHED("validate_rows_kernel");
    return SPO4J_OK;
}

template <typename T>
int launch_fwd(const Launch& s, const void* logits, int64_t rows, int64_t vocab,
               int64_t row_stride, const int64_t* targets, int64_t ignore_index, float* logp,
               float* lse, float* entropy, DeviceFlags* flags, cudaStream_t stream) {
    const T* z = static_cast<const T*>(logits);
    const int V = static_cast<int>(vocab);
    if (entropy != nullptr) {
        if (s.warp)
            fwd_kernel<T, true, true><<<s.blocks, s.threads, 0, stream>>>(
                z, rows, V, row_stride, targets, ignore_index, logp, lse, entropy, flags);
        else
            fwd_kernel<T, true, false><<<s.blocks, s.threads, 0, stream>>>(
                z, rows, V, row_stride, targets, ignore_index, logp, lse, entropy, flags);
    } else {
        if (s.warp)
            fwd_kernel<T, false, true><<<s.blocks, s.threads, 0, stream>>>(
                z, rows, V, row_stride, targets, ignore_index, logp, lse, entropy, flags);
        else
            fwd_kernel<T, false, false><<<s.blocks, s.threads, 0, stream>>>(
                z, rows, V, row_stride, targets, ignore_index, logp, lse, entropy, flags);
    }
    SPO4J_CUDA_LAUNCHED("token_logprobs fwd_kernel");
    return SPO4J_OK;
}

template <typename T>
int launch_bwd(const Launch& s, const void* logits, int64_t rows, int64_t vocab,
               int64_t row_stride, const int64_t* targets, int64_t ignore_index,
               const float* lse, const float* grad_logp, void* grad, int64_t grad_row_stride,
               const DeviceFlags* flags, cudaStream_t stream) {
    const T* z = static_cast<const T*>(logits);
    T* gz = static_cast<T*>(grad);
    const int V = static_cast<int>(vocab);
    if (s.warp)
        bwd_kernel<T, true><<<s.blocks, s.threads, 0, stream>>>(
            z, rows, V, row_stride, targets, ignore_index, lse, grad_logp, gz, grad_row_stride,
            flags);
    else
        bwd_kernel<T, false><<<s.blocks, s.threads, 0, stream>>>(
            z, rows, V, row_stride, targets, ignore_index, lse, grad_logp, gz, grad_row_stride,
            flags);
    SPO4J_CUDA_LAUNCHED("token_logprobs bwd_kernel");
    return SPO4J_OK;
}

// The pointer checks of one call: every pointer on logits' device, which becomes current for
// the call. Unchecked calls skip the queries while their stream is being captured into a
// graph (the current device is used) and keep them otherwise.
struct Pointers {
    const void* ptr;
    const char* name;
};

int enter_device(const Pointers* ptrs, int n, bool unchecked, cudaStream_t stream,
                 DeviceScope* scope, int* device) {
    int dev = -1;
    if (unchecked && stream_is_capturing(stream)) {
        SPO4J_CUDA_TRY(cudaGetDevice(&dev));
    } else {
        int st = check_device_pointer(ptrs[0].ptr, ptrs[0].name, -1, &dev);
        if (st) return st;
        for (int i = 1; i < n; ++i) {
            if (ptrs[i].ptr != nullptr && (st = check_device_pointer(ptrs[i].ptr, ptrs[i].name, dev, nullptr)))
                return st;
        }
    }
    *device = dev;
    return scope->enter(dev);
}

int fwd(const void* logits, int32_t dtype, int64_t rows, int64_t vocab, int64_t row_stride,
        const int64_t* targets, int64_t ignore_index, float* logp, float* lse, float* entropy,
        void* stream_ptr, bool checked) {
    int st = check_shape(logits, dtype, rows, vocab, row_stride);
    if (st) return st;
    if (rows == 0) return SPO4J_OK;
    if (!logits || !targets) return fail(SPO4J_ERR_ARGUMENT, "null logits or targets pointer");
    if (!logp || !lse) return fail(SPO4J_ERR_ARGUMENT, "null logp or lse pointer");
    cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
    const Pointers ptrs[] = {{logits, "logits"}, {targets, "targets"}, {logp, "logp"},
                             {lse, "lse"},       {entropy, "entropy"}};
    DeviceScope scope;
    int dev = -1;
    if ((st = enter_device(ptrs, 5, !checked, stream, &scope, &dev))) return st;
    FlagLease lease;
    DeviceFlags* flags = nullptr;
    if (checked) {
        if ((st = lease.acquire(dev))) return st;
        if ((st = lease.reset(stream))) return st;
        flags = lease.get();
    }
    const Launch shape = launch_shape(rows, vocab, dtype);
    if (dtype == SPO4J_F32)
        st = launch_fwd<float>(shape, logits, rows, vocab, row_stride, targets, ignore_index, logp,
                               lse, entropy, flags, stream);
    else if (dtype == SPO4J_BF16)
        st = launch_fwd<__nv_bfloat16>(shape, logits, rows, vocab, row_stride, targets,
                                       ignore_index, logp, lse, entropy, flags, stream);
    else
        st = launch_fwd<__half>(shape, logits, rows, vocab, row_stride, targets, ignore_index,
                                logp, lse, entropy, flags, stream);
    if (st || !checked) return st;
    DeviceFlags host{};
    if ((st = lease.read(stream, &host))) return st;
    return report_flags(host, targets, vocab, ignore_index, false, stream);
}

int bwd(const void* logits, int32_t dtype, int64_t rows, int64_t vocab, int64_t row_stride,
        const int64_t* targets, int64_t ignore_index, const float* lse, const float* grad_logp,
        void* grad_logits, int64_t grad_row_stride, void* stream_ptr, bool checked) {
    int st = check_shape(logits, dtype, rows, vocab, row_stride);
    if (st) return st;
    if (grad_row_stride < vocab)
        return fail(SPO4J_ERR_ARGUMENT, "gradient row stride %" PRId64 " < vocab %" PRId64,
                    grad_row_stride, vocab);
    if (rows == 0) return SPO4J_OK;
    if (!logits || !targets) return fail(SPO4J_ERR_ARGUMENT, "null logits or targets pointer");
    if (!lse || !grad_logp || !grad_logits)
        return fail(SPO4J_ERR_ARGUMENT, "null lse, grad_logp or grad_logits pointer");
    if (grad_logits == logits && grad_row_stride != row_stride)
        return fail(SPO4J_ERR_ARGUMENT,
                    "in-place gradient needs equal strides (logits %" PRId64 ", gradient %" PRId64 ")",
                    row_stride, grad_row_stride);
    const int64_t esz = elem_size(dtype);
    if (reinterpret_cast<uintptr_t>(grad_logits) % esz != 0)
        return fail(SPO4J_ERR_ARGUMENT, "grad_logits pointer %p is not aligned to its %s element size",
                    grad_logits, dtype_name(dtype));
    if (grad_logits != logits) {
        // Partial overlap would let one row's gradient overwrite logits another row still needs.
        const uintptr_t a0 = reinterpret_cast<uintptr_t>(logits);
        const uintptr_t a1 = a0 + static_cast<uintptr_t>(((rows - 1) * row_stride + vocab) * esz);
        const uintptr_t b0 = reinterpret_cast<uintptr_t>(grad_logits);
        const uintptr_t b1 = b0 + static_cast<uintptr_t>(((rows - 1) * grad_row_stride + vocab) * esz);
        if (a0 < b1 && b0 < a1)
            return fail(SPO4J_ERR_ARGUMENT,
                        "grad_logits (%p) overlaps logits (%p) without being the same buffer",
                        grad_logits, logits);
    }
    cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
    const Pointers ptrs[] = {{logits, "logits"},       {targets, "targets"}, {lse, "lse"},
                             {grad_logp, "grad_logp"}, {grad_logits, "grad_logits"}};
    DeviceScope scope;
    int dev = -1;
    if ((st = enter_device(ptrs, 5, !checked, stream, &scope, &dev))) return st;
    FlagLease lease;
    DeviceFlags* flags = nullptr;
    if (checked) {
        if ((st = lease.acquire(dev))) return st;
        if ((st = lease.reset(stream))) return st;
        flags = lease.get();
        if ((st = launch_validate(rows, vocab, targets, ignore_index, lse, flags, stream))) return st;
    }
    const Launch shape = launch_shape(rows, vocab, dtype);
    if (dtype == SPO4J_F32)
        st = launch_bwd<float>(shape, logits, rows, vocab, row_stride, targets, ignore_index, lse,
                               grad_logp, grad_logits, grad_row_stride, flags, stream);
    else if (dtype == SPO4J_BF16)
        st = launch_bwd<__nv_bfloat16>(shape, logits, rows, vocab, row_stride, targets,
                                       ignore_index, lse, grad_logp, grad_logits,
                                       grad_row_stride, flags, stream);
    else
        st = launch_bwd<__half>(shape, logits, rows, vocab, row_stride, targets, ignore_index,
                                lse, grad_logp, grad_logits, grad_row_stride, flags, stream);
    if (st || !checked) return st;
    DeviceFlags host{};
    if ((st = lease.read(stream, &host))) return st;
    return report_flags(host, targets, vocab, ignore_index, true, stream);
}

}  // namespace
}  // namespace cuda
}  // namespace spo4j

extern "C" {

SPO4J_API int spo4j_token_logprobs_fwd_cuda(const void* logits, int32_t dtype, int64_t rows,
                                            int64_t vocab, int64_t row_stride,
                                            const int64_t* targets, int64_t ignore_index,
                                            float* logp, float* lse, float* entropy, void* stream) {
    try {
        spo4j::clear_error();
        return spo4j::cuda::fwd(logits, dtype, rows, vocab, row_stride, targets, ignore_index,
                                logp, lse, entropy, stream, true);
    } catch (...) {
        return spo4j::fail(SPO4J_ERR_INTERNAL, "unexpected C++ exception in token_logprobs CUDA forward");
    }
}

SPO4J_API int spo4j_token_logprobs_fwd_cuda_unchecked(const void* logits, int32_t dtype,
                                                      int64_t rows, int64_t vocab,
                                                      int64_t row_stride, const int64_t* targets,
                                                      int64_t ignore_index, float* logp,
                                                      float* lse, float* entropy, void* stream) {
    try {
        spo4j::clear_error();
        return spo4j::cuda::fwd(logits, dtype, rows, vocab, row_stride, targets, ignore_index,
                                logp, lse, entropy, stream, false);
    } catch (...) {
        return spo4j::fail(SPO4J_ERR_INTERNAL, "unexpected C++ exception in token_logprobs CUDA forward");
    }
}

SPO4J_API int spo4j_token_logprobs_bwd_cuda(const void* logits, int32_t dtype, int64_t rows,
                                            int64_t vocab, int64_t row_stride,
                                            const int64_t* targets, int64_t ignore_index,
                                            const float* lse, const float* grad_logp,
                                            void* grad_logits, int64_t grad_row_stride,
                                            void* stream) {
    try {
        spo4j::clear_error();
        return spo4j::cuda::bwd(logits, dtype, rows, vocab, row_stride, targets, ignore_index,
                                lse, grad_logp, grad_logits, grad_row_stride, stream, true);
    } catch (...) {
        return spo4j::fail(SPO4J_ERR_INTERNAL, "unexpected C++ exception in token_logprobs CUDA backward");
    }
}

SPO4J_API int spo4j_token_logprobs_bwd_cuda_unchecked(const void* logits, int32_t dtype,
                                                      int64_t rows, int64_t vocab,
                                                      int64_t row_stride, const int64_t* targets,
                                                      int64_t ignore_index, const float* lse,
                                                      const float* grad_logp, void* grad_logits,
                                                      int64_t grad_row_stride, void* stream) {
    try {
        spo4j::clear_error();
        return spo4j::cuda::bwd(logits, dtype, rows, vocab, row_stride, targets, ignore_index,
                                lse, grad_logp, grad_logits, grad_row_stride, stream, false);
    } catch (...) {
        return spo4j::fail(SPO4J_ERR_INTERNAL, "unexpected C++ exception in token_logprobs CUDA backward");
    }
}

}  // extern "C"
