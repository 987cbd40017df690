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
// Validation before writing: a pre-pass kernel over `rows` checks the targets (and, for the
// backward, that lse is finite) into a device flag slot; the main kernel returns without
// writing when the slot holds an error; the host synchronises the stream, reads the slot and
// reports the smallest offending row. A forward row whose lse turns out not finite is only
// known after its pass, so that row's outputs are written before SPO4J_ERR_NONFINITE.
// The only CUDA source compiled with --use_fast_math (for flush-to-zero in the hot loops;
// native/CMakeLists.txt says why); the explicit __expf calls do not depend on it.
// Test: native/tests/token_logprobs_check.cu (spo4j_harness check); benchmark:
// bench/native/token_logprobs_bench.cu (spo4j_harness bench) and bench/gpu/run.sh (against
// PyTorch eager and torch.compile).
#include "common.cuh"

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
        if (ENT) st.t = a * fmaf(delta, st.s, st.t);
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
    if (ENT) a.t = e1 * fmaf(d1, a.s, a.t) + e2 * fmaf(d2, s2, t2);
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

// Pre-pass: targets in range (or ignore_index) and, when lse != NULL (backward), lse finite
// on every non-ignored row. Records the smallest offending row of each kind.
__global__ void validate_rows_kernel(int64_t rows, int64_t vocab, const int64_t* targets,
                                     int64_t ignore_index, const float* lse,
                                     DeviceFlags* flags) {
    const int64_t step = int64_t{gridDim.x} * blockDim.x;
    for (int64_t r = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; r < rows; r += step) {
        const int64_t t = targets[r];
        if (t == ignore_index) continue;
        if (t < 0 || t >= vocab) {
            flag_row(&flags->bad_target_row, r);
        } else if (lse != nullptr && lse[r] == -INFINITY) {
            flag_row(&flags->nonfinite_row, r);
        }
    }
}

// Writes one finished row (thread 0 / lane 0 only).
template <bool ENT>
__device__ __forceinline__ void finish_row(const Online& st, float zt, int64_t row, float* logp,
                                           float* lse, float* entropy, DeviceFlags* flags) {
    // Once per row, so the log is taken in double (fast-math logf is approximate).
    const float log_s = static_cast<float>(log(static_cast<double>(st.s)));
    const float l = st.m + log_s;
    lse[row] = l;
    logp[row] = (zt - st.m) - log_s;  // = zt - lse, without the rounding of lse
    if (ENT) entropy[row] = log_s - st.t / st.s;
    if (l == -INFINITY) flag_row(&flags->nonfinite_row, row);  // NaN propagates, as on the CPU
}

// Forward. WARP: a warp per row, 8 rows per block; else a block per row.
template <typename T, bool ENT, bool WARP>
__global__ void __launch_bounds__(kMaxThreads)
    fwd_kernel(const T* __restrict__ logits, int64_t rows, int vocab, int64_t row_stride,
               const int64_t* __restrict__ targets, int64_t ignore_index,
               float* __restrict__ logp, float* __restrict__ lse, float* __restrict__ entropy,
               DeviceFlags* flags) {
    if (flags->bad_target_row != kNoRow) return;  // the pre-pass found a bad target
    const int rank = WARP ? (threadIdx.x & 31) : threadIdx.x;
    const int group = WARP ? 32 : blockDim.x;
    const int64_t first = WARP ? int64_t{blockIdx.x} * kWarpRowsPerBlock + (threadIdx.x >> 5)
                               : int64_t{blockIdx.x};
    const int64_t step = WARP ? int64_t{gridDim.x} * kWarpRowsPerBlock : int64_t{gridDim.x};
    for (int64_t row = first; row < rows; row += step) {
        const int64_t t = targets[row];
        if (t == ignore_index) {
            if (rank == 0) {
                logp[row] = 0.0f;
                lse[row] = 0.0f;
                if (ENT) entropy[row] = 0.0f;
            }
            continue;  // uniform across the row's threads
        }
        const T* zrow = logits + row * row_stride;
        // The target logit is fetched first so that its latency hides behind the row pass.
        const float zt = rank == 0 ? Elem<T>::load_cached(zrow + t) : 0.0f;
        Online st = scan_row<T, ENT>(zrow, vocab, rank, group);
        if (WARP) {
            warp_merge<ENT>(st);
        } else {
            block_merge<ENT>(st);
        }
        if (rank == 0) finish_row<ENT>(st, zt, row, logp, lse, entropy, flags);
    }
}

// One gradient row: out_v = g * (1[v == t] - exp(z_v - l)). Vectors are used when input
// and output rows share their offset within 16 bytes (always when both are aligned);
// otherwise the whole row goes through the scalar path.
template <typename T>
__device__ __forceinline__ void grad_row(const T* zrow, T* grow, int vocab, int t, float g,
                                         float l, int rank, int group) {
    using E = Elem<T>;
    constexpr int VEC = E::VEC;
    const int head_in = head_elems(zrow, vocab);
    const int head = head_in == head_elems(grow, vocab) ? head_in : vocab;
    const int nvec = (vocab - head) / VEC;
    const int tail = head + nvec * VEC;
    for (int v = rank; v < head; v += group) {  // loops only in the scalar fallback
        const float e = __expf(E::load(zrow + v) - l);
        E::store(grow + v, fmaf(-g, e, v == t ? g : 0.0f));
    }
    const uint4* vin = reinterpret_cast<const uint4*>(zrow + head);
    uint4* vout = reinterpret_cast<uint4*>(grow + head);
    const int tv = t - head;  // target position relative to the vector part
    int i = rank;
    for (; i + (kUnroll - 1) * group < nvec; i += kUnroll * group) {
        uint4 u[kUnroll];
#pragma unroll
        for (int k = 0; k < kUnroll; ++k) u[k] = __ldcs(vin + i + k * group);
#pragma unroll
        for (int k = 0; k < kUnroll; ++k) {
            float x[VEC];
            E::unpack(u[k], x);
#pragma unroll
            for (int j = 0; j < VEC; ++j) x[j] = -g * __expf(x[j] - l);
            const int base = (i + k * group) * VEC;
            if (static_cast<unsigned>(tv - base) < static_cast<unsigned>(VEC)) {
#pragma unroll
                for (int j = 0; j < VEC; ++j) x[j] += base + j == tv ? g : 0.0f;
            }
            u[k] = E::pack(x);
        }
#pragma unroll
        for (int k = 0; k < kUnroll; ++k) __stcs(vout + i + k * group, u[k]);
    }
    for (; i < nvec; i += group) {
        float x[VEC];
        E::unpack(__ldcs(vin + i), x);
#pragma unroll
        for (int j = 0; j < VEC; ++j) x[j] = -g * __expf(x[j] - l);
        const int base = i * VEC;
        if (static_cast<unsigned>(tv - base) < static_cast<unsigned>(VEC)) {
#pragma unroll
            for (int j = 0; j < VEC; ++j) x[j] += base + j == tv ? g : 0.0f;
        }
        __stcs(vout + i, E::pack(x));
    }
    const int v = tail + rank;
    if (v < vocab) {
        const float e = __expf(E::load(zrow + v) - l);
        E::store(grow + v, fmaf(-g, e, v == t ? g : 0.0f));
    }
}

template <typename T>
__device__ __forceinline__ void zero_row(T* grow, int vocab, int rank, int group) {
    using E = Elem<T>;
    constexpr int VEC = E::VEC;
    const int head = head_elems(grow, vocab);
    const int nvec = (vocab - head) / VEC;
    const int tail = head + nvec * VEC;
    if (rank < head) E::store(grow + rank, 0.0f);
    uint4* vout = reinterpret_cast<uint4*>(grow + head);
    const uint4 zero = make_uint4(0u, 0u, 0u, 0u);
    for (int i = rank; i < nvec; i += group) __stcs(vout + i, zero);
    if (tail + rank < vocab) E::store(grow + tail + rank, 0.0f);
}

// Backward. Logits and gradient may be the same memory (same stride): every element is
// read before the same thread overwrites it, and nothing else reads it.
template <typename T, bool WARP>
__global__ void __launch_bounds__(kMaxThreads)
    bwd_kernel(const T* logits, int64_t rows, int vocab, int64_t row_stride,
               const int64_t* __restrict__ targets, int64_t ignore_index,
               const float* __restrict__ lse, const float* __restrict__ grad_logp, T* grad,
               int64_t grad_row_stride, const DeviceFlags* flags) {
    // Validated before writing: the pre-pass found a bad row, so touch nothing.
    if (flags->bad_target_row != kNoRow || flags->nonfinite_row != kNoRow) return;
    const int rank = WARP ? (threadIdx.x & 31) : threadIdx.x;
    const int group = WARP ? 32 : blockDim.x;
    const int64_t first = WARP ? int64_t{blockIdx.x} * kWarpRowsPerBlock + (threadIdx.x >> 5)
                               : int64_t{blockIdx.x};
    const int64_t step = WARP ? int64_t{gridDim.x} * kWarpRowsPerBlock : int64_t{gridDim.x};
    for (int64_t row = first; row < rows; row += step) {
        const int64_t t = targets[row];
        T* grow = grad + row * grad_row_stride;
        if (t == ignore_index) {
            zero_row<T>(grow, vocab, rank, group);
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

// Reads flag results (after read_flags) into a status with the CPU kernels' wording.
int report_flags(const DeviceFlags& f, const int64_t* targets, const float* lse_dev,
                 int64_t vocab, int64_t ignore_index, bool backward, cudaStream_t stream) {
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

int fwd(const void* logits, int32_t dtype, int64_t rows, int64_t vocab, int64_t row_stride,
        const int64_t* targets, int64_t ignore_index, float* logp, float* lse, float* entropy,
        void* stream_ptr) {
    int st = check_shape(logits, dtype, rows, vocab, row_stride);
    if (st) return st;
    if (rows == 0) return SPO4J_OK;
    if (!logits || !targets) return fail(SPO4J_ERR_ARGUMENT, "null logits or targets pointer");
    if (!logp || !lse) return fail(SPO4J_ERR_ARGUMENT, "null logp or lse pointer");
    int dev = -1;
    if ((st = check_device_pointer(logits, "logits", -1, &dev))) return st;
    if ((st = check_device_pointer(targets, "targets", dev, nullptr))) return st;
    if ((st = check_device_pointer(logp, "logp", dev, nullptr))) return st;
    if ((st = check_device_pointer(lse, "lse", dev, nullptr))) return st;
    if (entropy && (st = check_device_pointer(entropy, "entropy", dev, nullptr))) return st;
    DeviceScope scope;
    if ((st = scope.enter(dev))) return st;
    cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
    FlagLease lease;
    if ((st = lease.acquire(dev))) return st;
    DeviceFlags* flags = lease.get();
    if ((st = reset_flags(flags, stream))) return st;
    if ((st = launch_validate(rows, vocab, targets, ignore_index, nullptr, flags, stream)))
        return st;
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
    if (st) return st;
    DeviceFlags host{};
    if ((st = read_flags(flags, stream, &host))) return st;
    lease.mark_idle();
    return report_flags(host, targets, lse, vocab, ignore_index, false, stream);
}

int bwd(const void* logits, int32_t dtype, int64_t rows, int64_t vocab, int64_t row_stride,
        const int64_t* targets, int64_t ignore_index, const float* lse, const float* grad_logp,
        void* grad_logits, int64_t grad_row_stride, void* stream_ptr) {
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
    int dev = -1;
    if ((st = check_device_pointer(logits, "logits", -1, &dev))) return st;
    if ((st = check_device_pointer(targets, "targets", dev, nullptr))) return st;
    if ((st = check_device_pointer(lse, "lse", dev, nullptr))) return st;
    if ((st = check_device_pointer(grad_logp, "grad_logp", dev, nullptr))) return st;
    if ((st = check_device_pointer(grad_logits, "grad_logits", dev, nullptr))) return st;
    DeviceScope scope;
    if ((st = scope.enter(dev))) return st;
    cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
    FlagLease lease;
    if ((st = lease.acquire(dev))) return st;
    DeviceFlags* flags = lease.get();
    if ((st = reset_flags(flags, stream))) return st;
    if ((st = launch_validate(rows, vocab, targets, ignore_index, lse, flags, stream))) return st;
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
    if (st) return st;
    DeviceFlags host{};
    if ((st = read_flags(flags, stream, &host))) return st;
    lease.mark_idle();
    return report_flags(host, targets, lse, vocab, ignore_index, true, stream);
}

}  // namespace
}  // namespace cuda
}  // namespace spo4j

extern "C" SPO4J_API int spo4j_token_logprobs_fwd_cuda(
        const void* logits, int32_t dtype, int64_t rows, int64_t vocab, int64_t row_stride,
        const int64_t* targets, int64_t ignore_index, float* logp, float* lse, float* entropy,
        void* stream) {
    try {
        spo4j::clear_error();
        return spo4j::cuda::fwd(logits, dtype, rows, vocab, row_stride, targets, ignore_index,
                                logp, lse, entropy, stream);
    } catch (...) {
        return spo4j::fail(SPO4J_ERR_INTERNAL, "unexpected C++ exception in token_logprobs CUDA forward");
    }
}

extern "C" SPO4J_API int spo4j_token_logprobs_bwd_cuda(
        const void* logits, int32_t dtype, int64_t rows, int64_t vocab, int64_t row_stride,
        const int64_t* targets, int64_t ignore_index, const float* lse, const float* grad_logp,
        void* grad_logits, int64_t grad_row_stride, void* stream) {
    try {
        spo4j::clear_error();
        return spo4j::cuda::bwd(logits, dtype, rows, vocab, row_stride, targets, ignore_index,
                                lse, grad_logp, grad_logits, grad_row_stride, stream);
    } catch (...) {
        return spo4j::fail(SPO4J_ERR_INTERNAL, "unexpected C++ exception in token_logprobs CUDA backward");
    }
}
