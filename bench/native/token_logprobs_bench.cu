// spo4j_harness bench: CUDA timings of the token log-probs kernels
// (native/cuda/token_logprobs.cu through spo4j_token_logprobs_fwd_cuda / _bwd_cuda).
// cudaEvent timings of forward / forward with entropy / backward (in place) /
// forward+backward at LM shapes, with an L2 flush before every repetition; GB/s against the
// measured device-to-device copy; each shape is checked against the CPU kernel on a few rows
// before it is timed, then timed again with the launch shape forced (SPO4J_CUDA_ROW_THREADS)
// to tune the default. --json FILE writes the rows for bench/gpu/run.sh.
// Each row says which entry point and what the events enclose ("path"):
//   checked    the default entry point: events around the call, so its host work and the
//              stream synchronise it ends with (the error-flag read-back) are included
//   unchecked  ..._cuda_unchecked: events around the call (host checks + launch)
//   graph      the unchecked call captured once in a CUDA graph, events around each replay:
//              the kernel without call overhead
// checked minus graph is the call overhead a training step pays per call. Two more modes
// time the out-of-place backward into a separate buffer, aligned ("backward_out_of_place")
// and one element off ("backward_misaligned": the realigned-load path, formerly scalar).
//
// Part of the spo4j_harness executable: native/tests/CMakeLists.txt adds this file when CUDA
// is built (native/tests/cuda_stub.cpp says "skipped" otherwise); main() and the options are
// in native/tests/check.cpp.
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "check.h"
#include "cuda_check.cuh"

namespace harness {
namespace {

__device__ __forceinline__ uint32_t hash32(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return uint32_t(x);
}

// Logits ~ N(0, 2^2)-like (sum of 4 uniforms) plus a few larger values per row, so that
// the softmax is neither flat nor one-hot; a different seed gives different data.
template <typename T>
__global__ void fill_logits(T* z, int64_t n, uint64_t seed) {
    for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n;
         i += int64_t{gridDim.x} * blockDim.x) {
        const uint32_t h = hash32(uint64_t(i) * 0x9e3779b97f4a7c15ull + seed);
        const float u = float(h & 0xff) + float((h >> 8) & 0xff) + float((h >> 16) & 0xff) +
                        float(h >> 24);
        float x = (u / 255.0f - 2.0f) * 3.4641f;  // mean 0, sd ~2
        if ((h & 0xfff) == 7) x += 12.0f;
        if constexpr (sizeof(T) == 4) {
            z[i] = x;
        } else {
            z[i] = T(x);
        }
    }
}

__global__ void fill_targets(int64_t* t, int64_t rows, int64_t vocab, uint64_t seed) {
    for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < rows;
         i += int64_t{gridDim.x} * blockDim.x)
        t[i] = int64_t(hash32(uint64_t(i) + seed) % uint64_t(vocab));
}

__global__ void fill_floats(float* x, int64_t n, float lo, float hi, uint64_t seed) {
    for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < n;
         i += int64_t{gridDim.x} * blockDim.x)
        x[i] = lo + (hi - lo) * float(hash32(uint64_t(i) ^ seed) >> 8) * (1.0f / 16777216.0f);
}

void fill(void* z, int dtype, int64_t n, uint64_t seed, cudaStream_t s) {
    const int blocks = 4096, threads = 256;
    if (dtype == SPO4J_F32)
        fill_logits<float><<<blocks, threads, 0, s>>>(static_cast<float*>(z), n, seed);
    else if (dtype == SPO4J_BF16)
        fill_logits<__nv_bfloat16><<<blocks, threads, 0, s>>>(static_cast<__nv_bfloat16*>(z), n, seed);
    else
        fill_logits<__half><<<blocks, threads, 0, s>>>(static_cast<__half*>(z), n, seed);
    CUDA_OR_DIE(cudaGetLastError());
}

struct Timer {
    cudaEvent_t a, b;
    Timer() {
        CUDA_OR_DIE(cudaEventCreate(&a));
        CUDA_OR_DIE(cudaEventCreate(&b));
    }
    ~Timer() {
        cudaEventDestroy(a);
        cudaEventDestroy(b);
    }
};

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const size_t m = v.size() / 2;
    return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

struct BenchRow {
    std::string mode, dtype;
    int64_t rows, vocab;
    double ms, min_ms, bytes, gbps, frac;
    bool ok;
    int row_threads;  // SPO4J_CUDA_ROW_THREADS for this row, 0 = the library's choice
    std::string path;  // checked | unchecked | graph (see the file comment)
};

// A CUDA graph of whatever `body` queues on `s` (captured once).
struct Graph {
    cudaGraphExec_t exec = nullptr;
    bool ok = false;
    Graph(cudaStream_t s, const std::function<bool()>& body) {
        cudaGraph_t g = nullptr;
        CUDA_OR_DIE(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
        const bool good = body();
        const cudaError_t e = cudaStreamEndCapture(s, &g);
        if (good && e == cudaSuccess && g != nullptr && cudaGraphInstantiate(&exec, g, 0) == cudaSuccess) ok = true;
        (void)cudaGetLastError();
        if (g) cudaGraphDestroy(g);
        if (!ok) std::printf("bench: graph capture failed: %s / %s\n", spo4j_last_error(), cudaGetErrorName(e));
    }
    ~Graph() {
        if (exec) cudaGraphExecDestroy(exec);
    }
    bool launch(cudaStream_t s) const { return ok && cudaGraphLaunch(exec, s) == cudaSuccess; }
};

}  // namespace

int token_logprobs_bench(const BenchOptions& o) {
    std::string why;
    if (!cuda_usable(&why)) {
        std::printf("bench: skipped: %s\n", why.c_str());
        return 0;
    }
    cudaDeviceProp prop{};
    CUDA_OR_DIE(cudaGetDeviceProperties(&prop, 0));
    int driver = 0, runtime = 0;
    cudaDriverGetVersion(&driver);
    cudaRuntimeGetVersion(&runtime);
    std::printf("bench: %s, %d SMs, L2 %.0f MB, %.1f GB, driver %d, runtime %d\n", prop.name,
                prop.multiProcessorCount, prop.l2CacheSize / 1e6, prop.totalGlobalMem / 1e9, driver,
                runtime);
    cudaStream_t s;
    CUDA_OR_DIE(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    // L2 flush: write a buffer several times the L2 before every timed repetition.
    const size_t flush_bytes = std::max<size_t>(size_t(256) << 20, size_t(prop.l2CacheSize) * 4);
    void* flush = nullptr;
    CUDA_OR_DIE(cudaMalloc(&flush, flush_bytes));
    auto flush_l2 = [&]() { CUDA_OR_DIE(cudaMemsetAsync(flush, int(rand() & 0xff), flush_bytes, s)); };
    Timer tm;
    auto time_reps = [&](const std::function<void()>& prepare, const std::function<bool()>& body,
                         bool* ok) {
        std::vector<double> ms;
        for (int i = 0; i < o.warmup + o.reps; ++i) {
            if (prepare) prepare();
            flush_l2();
            CUDA_OR_DIE(cudaEventRecord(tm.a, s));
            const bool good = body();
            CUDA_OR_DIE(cudaEventRecord(tm.b, s));
            CUDA_OR_DIE(cudaEventSynchronize(tm.b));
            float t = 0;
            CUDA_OR_DIE(cudaEventElapsedTime(&t, tm.a, tm.b));
            if (!good) *ok = false;
            if (i >= o.warmup) ms.push_back(t);
        }
        return ms;
    };

    // Device-to-device copy bandwidth: 1 GiB -> 1 GiB, counting bytes read + written.
    const size_t copy_bytes = size_t(1) << 30;
    void *ca = nullptr, *cb = nullptr;
    CUDA_OR_DIE(cudaMalloc(&ca, copy_bytes));
    CUDA_OR_DIE(cudaMalloc(&cb, copy_bytes));
    CUDA_OR_DIE(cudaMemsetAsync(ca, 1, copy_bytes, s));
    bool dummy = true;
    const std::vector<double> copy_ms = time_reps(nullptr, [&]() {
        CUDA_OR_DIE(cudaMemcpyAsync(cb, ca, copy_bytes, cudaMemcpyDeviceToDevice, s));
        return true;
    }, &dummy);
    CUDA_OR_DIE(cudaFree(ca));
    CUDA_OR_DIE(cudaFree(cb));
    const double copy_gbps = 2.0 * double(copy_bytes) / (median(copy_ms) * 1e-3) / 1e9;
    std::printf("bench: device-to-device copy %.1f GB/s (read+write, median of %d)\n", copy_gbps, o.reps);

    std::vector<BenchRow> out;
    for (int dtype : o.dtypes) {
        for (int64_t V : o.vocabs) {
            const int64_t rows = o.rows;
            const int es = elem_size(dtype);
            const size_t zbytes = size_t(rows * V * es);
            void *z = nullptr, *t = nullptr, *lp = nullptr, *ls = nullptr, *en = nullptr, *gl = nullptr;
            if (cudaMalloc(&z, zbytes) != cudaSuccess) {
                (void)cudaGetLastError();
                std::printf("bench: skip %s %" PRId64 "x%" PRId64 ": cannot allocate %.1f GB\n",
                            dtype_name(dtype), rows, V, zbytes / 1e9);
                continue;
            }
            CUDA_OR_DIE(cudaMalloc(&t, size_t(rows) * 8));
            CUDA_OR_DIE(cudaMalloc(&lp, size_t(rows) * 4));
            CUDA_OR_DIE(cudaMalloc(&ls, size_t(rows) * 4));
            CUDA_OR_DIE(cudaMalloc(&en, size_t(rows) * 4));
            CUDA_OR_DIE(cudaMalloc(&gl, size_t(rows) * 4));
            const uint64_t seed = uint64_t(V) * 31 + uint64_t(dtype);
            fill(z, dtype, rows * V, seed, s);
            fill_targets<<<64, 256, 0, s>>>(static_cast<int64_t*>(t), rows, V, seed);
            fill_floats<<<64, 256, 0, s>>>(static_cast<float*>(gl), rows, -1e-3f, 1e-3f, seed);
            CUDA_OR_DIE(cudaGetLastError());
            auto F = [&](bool ent) {
                return spo4j_token_logprobs_fwd_cuda(z, dtype, rows, V, V, static_cast<int64_t*>(t), -100,
                                                     static_cast<float*>(lp), static_cast<float*>(ls),
                                                     ent ? static_cast<float*>(en) : nullptr, s) == SPO4J_OK;
            };
            auto Bw = [&]() {
                return spo4j_token_logprobs_bwd_cuda(z, dtype, rows, V, V, static_cast<int64_t*>(t), -100,
                                                     static_cast<float*>(ls), static_cast<float*>(gl), z, V,
                                                     s) == SPO4J_OK;
            };
            auto Fu = [&]() {
                return spo4j_token_logprobs_fwd_cuda_unchecked(z, dtype, rows, V, V, static_cast<int64_t*>(t), -100,
                                                               static_cast<float*>(lp), static_cast<float*>(ls),
                                                               nullptr, s) == SPO4J_OK;
            };
            auto Bu = [&]() {
                return spo4j_token_logprobs_bwd_cuda_unchecked(z, dtype, rows, V, V, static_cast<int64_t*>(t), -100,
                                                               static_cast<float*>(ls), static_cast<float*>(gl), z, V,
                                                               s) == SPO4J_OK;
            };
            // out of place into a second buffer (when it fits), at the logits' phase or one
            // element off it
            void* gout = nullptr;
            if (cudaMalloc(&gout, zbytes + 16) != cudaSuccess) {
                (void)cudaGetLastError();
                gout = nullptr;
            }
            auto Bo = [&](size_t shift) {
                return spo4j_token_logprobs_bwd_cuda_unchecked(z, dtype, rows, V, V, static_cast<int64_t*>(t), -100,
                                                               static_cast<float*>(ls), static_cast<float*>(gl),
                                                               static_cast<uint8_t*>(gout) + shift, V, s) == SPO4J_OK;
            };
            // Validate before timing: a few rows of the forward against the CPU kernel.
            bool ok = F(true);
            if (!ok) std::printf("bench: forward failed: %s\n", spo4j_last_error());
            {
                const int64_t sample[] = {0, rows / 2, rows - 1};
                std::vector<uint8_t> hz(size_t(V * es));
                for (int64_t r : sample) {
                    int64_t ht = 0;
                    float dl = 0, dp = 0, cl = 0, cp = 0;
                    CUDA_OR_DIE(cudaMemcpy(hz.data(), static_cast<uint8_t*>(z) + size_t(r * V * es), hz.size(),
                                           cudaMemcpyDeviceToHost));
                    CUDA_OR_DIE(cudaMemcpy(&ht, static_cast<int64_t*>(t) + r, 8, cudaMemcpyDeviceToHost));
                    CUDA_OR_DIE(cudaMemcpy(&dl, static_cast<float*>(ls) + r, 4, cudaMemcpyDeviceToHost));
                    CUDA_OR_DIE(cudaMemcpy(&dp, static_cast<float*>(lp) + r, 4, cudaMemcpyDeviceToHost));
                    spo4j_token_logprobs_fwd_cpu(hz.data(), dtype, 1, V, V, &ht, -100, &cp, &cl, nullptr, 1);
                    if (!(std::fabs(dl - cl) <= 1e-4 * (1 + std::fabs(cl)) &&
                          std::fabs(dp - cp) <= 1e-4 * (1 + std::fabs(cp)))) {
                        ok = false;
                        std::printf("bench: row %" PRId64 " mismatch: cuda lse %.7g logp %.7g, cpu lse %.7g logp %.7g\n",
                                    r, dl, dp, cl, cp);
                    }
                }
            }
            // ... and the misaligned out-of-place backward (realigned loads) on two rows
            if (gout != nullptr) {
                fill(z, dtype, rows * V, seed, s);
                bool good = Fu() && Bo(size_t(es));
                CUDA_OR_DIE(cudaStreamSynchronize(s));
                std::vector<uint8_t> hz(size_t(V * es)), hg(size_t(V * es)), cg(size_t(V * es));
                for (int64_t r : {int64_t(0), rows - 1}) {
                    int64_t ht = 0;
                    float hl = 0, hgl = 0;
                    CUDA_OR_DIE(cudaMemcpy(hz.data(), static_cast<uint8_t*>(z) + size_t(r * V * es), hz.size(),
                                           cudaMemcpyDeviceToHost));
                    CUDA_OR_DIE(cudaMemcpy(hg.data(), static_cast<uint8_t*>(gout) + size_t(es) + size_t(r * V * es),
                                           hg.size(), cudaMemcpyDeviceToHost));
                    CUDA_OR_DIE(cudaMemcpy(&ht, static_cast<int64_t*>(t) + r, 8, cudaMemcpyDeviceToHost));
                    CUDA_OR_DIE(cudaMemcpy(&hl, static_cast<float*>(ls) + r, 4, cudaMemcpyDeviceToHost));
                    CUDA_OR_DIE(cudaMemcpy(&hgl, static_cast<float*>(gl) + r, 4, cudaMemcpyDeviceToHost));
                    spo4j_token_logprobs_bwd_cpu(hz.data(), dtype, 1, V, V, &ht, -100, &hl, &hgl, cg.data(), V, 1);
                    for (int64_t v = 0; v < V; ++v) {
                        const double a = load_elem(hg.data(), dtype, v), b = load_elem(cg.data(), dtype, v);
                        // fp32 exp either side, then one rounding of the dtype either side; |g| <= 1e-3
                        if (!(std::fabs(a - b) <= 1e-9 + (es == 4 ? 1e-6 : 1.0 / 64) * std::fabs(b))) good = false;
                    }
                }
                if (!good) std::printf("bench: misaligned out-of-place backward does not match the CPU kernel\n");
                ok &= good;
            }
            const double small_fwd = double(rows) * (8 + 4 + 4);
            const double small_bwd = double(rows) * (8 + 4 + 4);
            struct Mode {
                const char* name;
                double bytes;
                std::function<void()> prepare;
                std::function<bool()> body;
            };
            // Byte counts: the forward reads the logits once and writes per-row floats; the
            // backward reads and writes them once. The backward runs in place, so before each
            // repetition (untimed) the logits are refilled and, for "backward", the forward
            // recomputes the matching lse.
            const std::function<void()> refill = [&]() { fill(z, dtype, rows * V, seed, s); };
            const std::function<void()> refill_fwd = [&]() {
                refill();
                if (!F(false)) std::printf("bench: forward failed: %s\n", spo4j_last_error());
            };
            const Graph gF(s, Fu), gB(s, Bu);
            const std::function<bool()> gFb = [&]() { return gF.launch(s); };
            const std::function<bool()> gBb = [&]() { return gB.launch(s); };
            const std::function<bool()> no_gout = []() { return false; };
            const Mode modes[] = {
                {"forward", double(zbytes) + small_fwd, nullptr, [&]() { return F(false); }},
                {"forward_entropy", double(zbytes) + small_fwd + 4.0 * rows, nullptr, [&]() { return F(true); }},
                {"backward", 2.0 * zbytes + small_bwd, refill_fwd, Bw},
                {"forwardBackward", 3.0 * zbytes + small_fwd + small_bwd, refill,
                 [&]() { return F(false) && Bw(); }},
                {"forward", double(zbytes) + small_fwd, nullptr, Fu},                  // 4 unchecked
                {"backward", 2.0 * zbytes + small_bwd, refill_fwd, Bu},                // 5 unchecked
                {"forward", double(zbytes) + small_fwd, nullptr, gFb},                 // 6 graph
                {"backward", 2.0 * zbytes + small_bwd, refill_fwd, gBb},               // 7 graph
                {"backward_out_of_place", 2.0 * zbytes + small_bwd, nullptr,           // 8 unchecked
                 gout ? std::function<bool()>([&]() { return Bo(0); }) : no_gout},
                {"backward_misaligned", 2.0 * zbytes + small_bwd, nullptr,             // 9 unchecked
                 gout ? std::function<bool()>([&]() { return Bo(size_t(es)); }) : no_gout},
            };
            const char* paths[] = {"checked", "checked", "checked", "checked", "unchecked",
                                   "unchecked", "graph", "graph", "unchecked", "unchecked"};
            // The library's launch shape for every mode, then forward and backward again with
            // the block size forced (SPO4J_CUDA_ROW_THREADS), to tune the default.
            struct Run {
                const Mode* mode;
                int threads;
            };
            std::vector<Run> runs;
            for (const Mode& m : modes) runs.push_back({&m, 0});
            for (int th : {128, 256, 512})
                for (int k : {0, 2}) runs.push_back({&modes[k], th});
            for (const Run& run : runs) {
                const Mode& m = *run.mode;
                if (run.threads) {
                    setenv("SPO4J_CUDA_ROW_THREADS", std::to_string(run.threads).c_str(), 1);
                } else {
                    unsetenv("SPO4J_CUDA_ROW_THREADS");
                }
                bool good = ok;
                const std::vector<double> ms = time_reps(m.prepare, m.body, &good);
                BenchRow row{m.name, dtype_name(dtype), rows, V, median(ms),
                             *std::min_element(ms.begin(), ms.end()), m.bytes, 0, 0, good, run.threads,
                             paths[run.mode - modes]};
                row.gbps = row.bytes / (row.ms * 1e-3) / 1e9;
                row.frac = row.gbps / copy_gbps;
                std::printf("bench: %-21s %-9s %-4s %6" PRId64 " x %6" PRId64 " threads %-4s %8.3f ms  %7.1f GB/s  %5.1f%% of copy%s\n",
                            m.name, row.path.c_str(), row.dtype.c_str(), rows, V,
                            run.threads ? std::to_string(run.threads).c_str() : "auto", row.ms, row.gbps,
                            100 * row.frac, good ? "" : "  (FAILED)");
                out.push_back(row);
            }
            unsetenv("SPO4J_CUDA_ROW_THREADS");
            // the call overhead per mode: checked call minus graph replay at the same shape
            for (const char* mode : {"forward", "backward"}) {
                double checked = -1, graph = -1;
                for (const BenchRow& r : out)
                    if (r.mode == mode && r.vocab == V && r.dtype == dtype_name(dtype) && r.row_threads == 0) {
                        if (r.path == "checked") checked = r.ms;
                        if (r.path == "graph") graph = r.ms;
                    }
                if (checked > 0 && graph > 0)
                    std::printf("bench: %-8s %-4s V=%-7" PRId64 " call overhead (checked - graph) %.1f us\n", mode,
                                dtype_name(dtype), V, 1e3 * (checked - graph));
            }
            if (gout) CUDA_OR_DIE(cudaFree(gout));
            for (void* p : {z, t, lp, ls, en, gl}) CUDA_OR_DIE(cudaFree(p));
        }
    }
    CUDA_OR_DIE(cudaFree(flush));
    CUDA_OR_DIE(cudaStreamDestroy(s));
    bool all_ok = true;
    for (const BenchRow& r : out) all_ok &= r.ok;
    if (!o.json.empty()) {
        FILE* f = std::fopen(o.json.c_str(), "w");
        if (!f) {
            std::printf("bench: cannot write %s\n", o.json.c_str());
            return 1;
        }
        std::fprintf(f, "{\n  \"tool\": \"spo4j_harness bench\",\n  \"device\": \"%s\",\n", prop.name);
        std::fprintf(f, "  \"sm_count\": %d,\n  \"l2_bytes\": %d,\n  \"cuda_driver\": %d,\n  \"cuda_runtime\": %d,\n",
                     prop.multiProcessorCount, prop.l2CacheSize, driver, runtime);
        std::fprintf(f, "  \"reps\": %d,\n  \"warmup\": %d,\n  \"copy_gbps\": %.2f,\n  \"rows\": [\n", o.reps,
                     o.warmup, copy_gbps);
        for (size_t i = 0; i < out.size(); ++i) {
            const BenchRow& r = out[i];
            std::fprintf(f,
                         "    {\"kernel\": \"token_logprobs\", \"provider\": \"spo4j\", \"mode\": \"%s\", "
                         "\"dtype\": \"%s\", \"rows\": %" PRId64 ", \"vocab\": %" PRId64 ", \"median_ms\": %.5f, "
                         "\"min_ms\": %.5f, \"bytes\": %.0f, \"gbps\": %.2f, \"copy_fraction\": %.4f, "
                         "\"row_threads\": %d, \"path\": \"%s\", \"validated\": %s}%s\n",
                         r.mode.c_str(), r.dtype.c_str(), r.rows, r.vocab, r.ms, r.min_ms, r.bytes, r.gbps,
                         r.frac, r.row_threads, r.path.c_str(), r.ok ? "true" : "false",
                         i + 1 < out.size() ? "," : "");
        }
        std::fprintf(f, "  ]\n}\n");
        std::fclose(f);
        std::printf("bench: wrote %s\n", o.json.c_str());
    }
    return all_ok ? 0 : 1;
}

}  // namespace harness
