// spo4j_harness cpu-ab: the CPU token log-probs kernel's two paths (native/cpu/simd.h:
// "generic", the per-ISA clones as before the AVX-512 path, and "avx512") timed in ONE
// process, interleaved call by call (the order alternates every repetition), so that a
// machine whose load drifts (another process on the other core) affects both alike.
//   spo4j_harness cpu-ab [--rows 4096] [--vocab 32768,131072] [--dtype f32,bf16] [--reps 7]
//                        [--threads 1]
// Modes as in TokenLogProbsBench: forward (no entropy); backward in place, given lse (the
// logits restored and lse computed untimed before each call); forwardBackward (forward then
// in-place backward, logits restored untimed first). Logits ~ N(0, 2^2) as BenchData.logits
// (tiled from a 1M-value table, each row from a random offset). Before timing, each shape
// checks that both paths give the same lse to 1e-5 relative and gradients to one output ulp.
// Prints, per point, each path's median ms and GB/s (minimum bytes as BenchData.floorBytes)
// and the A/B ratio generic / avx512. Exits 0 with a message on a CPU without AVX-512.
// The same-buffer floor, timed in the same repetitions (interleaved with the two paths): the
// least work with the kernel's access pattern on the same buffer and threads (rows split as
// parallel_rows splits them, one std::thread per part): forward = one read-only pass (512-bit
// loads into four integer accumulators), backward = one in-place pass (load, xor with a zero
// the compiler cannot see, store), forwardBackward = the two in turn. "avx512 / floor" is the
// ratio of the medians. --hugepages puts both buffers in 2 MiB pages (madvise): a streaming
// pass then misses the TLB 512x less often, which speeds the floor more than the kernel.
// main() and the options: native/tests/check.cpp.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <thread>
#include <vector>

#include <immintrin.h>
#include <sys/mman.h>

#include "check.h"

namespace harness {
namespace {

double now_ms() {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// The floor passes: whole 64-byte lines of each part (a part's last < 64 bytes are left out,
// none at the default shapes), the rows in `threads` parts as parallel_rows splits them.
volatile int g_zero = 0;

__attribute__((target("avx512f"))) int64_t read_pass(const uint8_t* p, size_t n) {
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 256 <= n; i += 256) {
        a0 = _mm512_add_epi32(a0, _mm512_loadu_si512(p + i));
        a1 = _mm512_add_epi32(a1, _mm512_loadu_si512(p + i + 64));
        a2 = _mm512_add_epi32(a2, _mm512_loadu_si512(p + i + 128));
        a3 = _mm512_add_epi32(a3, _mm512_loadu_si512(p + i + 192));
    }
    for (; i + 64 <= n; i += 64) a0 = _mm512_add_epi32(a0, _mm512_loadu_si512(p + i));
    alignas(64) int32_t lanes[16];
    _mm512_store_si512(lanes, _mm512_add_epi32(_mm512_add_epi32(a0, a1), _mm512_add_epi32(a2, a3)));
    int64_t s = 0;
    for (int32_t x : lanes) s += x;
    return s;
}

__attribute__((target("avx512f"))) void inplace_pass(uint8_t* p, size_t n) {
    const __m512i k = _mm512_set1_epi32(g_zero);
    for (size_t i = 0; i + 64 <= n; i += 64)
        _mm512_storeu_si512(p + i, _mm512_xor_si512(_mm512_loadu_si512(p + i), k));
}

template <class Fn>
void split_bytes(int64_t rows, size_t row_bytes, int threads, Fn&& fn) {
    const int64_t t = std::max<int64_t>(1, std::min<int64_t>(threads, rows));
    std::vector<std::thread> pool;
    int64_t per = rows / t, extra = rows % t, b = 0;
    for (int64_t i = 0; i < t; ++i) {
        const int64_t e = b + per + (i < extra);
        if (i + 1 < t) {
            pool.emplace_back([&fn, b, e, row_bytes] { fn(size_t(b) * row_bytes, size_t(e - b) * row_bytes); });
        } else {
            fn(size_t(b) * row_bytes, size_t(e - b) * row_bytes);
        }
        b = e;
    }
    for (auto& th : pool) th.join();
}

std::atomic<int64_t> g_sink{0};

// AnonHugePages of /proc/self/smaps_rollup in MiB (-1 where it cannot be read).
double anon_huge_mib() {
    FILE* f = std::fopen("/proc/self/smaps_rollup", "r");
    if (!f) return -1;
    char line[256];
    double kib = -1;
    while (std::fgets(line, sizeof line, f)) {
        if (std::sscanf(line, "AnonHugePages: %lf kB", &kib) == 1) break;
    }
    std::fclose(f);
    return kib < 0 ? -1 : kib / 1024;
}

// With huge, 2 MiB aligned and advised to the kernel as huge pages (MADV_HUGEPAGE: what
// LibTorch's CPU allocator does under THP_MEM_ALLOC_ENABLE=1, as the JMH runs set it), for
// machines whose transparent huge pages are in "madvise" mode.
struct AlignedBytes {
    static constexpr size_t HUGE_PAGE = size_t(1) << 21;
    AlignedBytes(size_t n, bool huge) {
        const size_t align = huge ? HUGE_PAGE : 64, size = (n + align - 1) / align * align;
        p = static_cast<uint8_t*>(std::aligned_alloc(align, size));
        if (!p) throw std::bad_alloc();
        if (huge) madvise(p, size, MADV_HUGEPAGE);  // advice only: without THP the pages stay 4 KiB
    }
    ~AlignedBytes() { std::free(p); }
    AlignedBytes(const AlignedBytes&) = delete;
    AlignedBytes& operator=(const AlignedBytes&) = delete;
    uint8_t* data() { return p; }
    uint8_t* p;
};

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace

int token_logprobs_cpu_ab(const BenchOptions& o, int threads) {
    if (spo4j_debug_cpu_path(0) != 2) {
        std::printf("cpu-ab: this CPU has no x86-64-v4 (AVX-512) path; nothing to compare\n");
        return 0;
    }
    std::vector<float> table(size_t(1) << 20);
    Rng rng(1234);
    for (float& v : table) v = float(2.0 * rng.normal());
    const char* mode_names[] = {"forward", "backward", "forwardBackward"};
    std::printf("| mode | dtype | rows x V | threads | generic ms | avx512 ms | A/B generic/avx512 | generic GB/s | avx512 GB/s | floor ms | avx512 / floor |\n");
    std::printf("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int dtype : o.dtypes) {
        for (int64_t V : o.vocabs) {
            const int64_t R = o.rows;
            const int es = elem_size(dtype);
            const size_t bytes = size_t(R * V * es);
            // 64-byte aligned, as LibTorch's CPU allocations are (a std::vector's large buffer
            // starts 16 bytes into a line, so every 512-bit load would span two lines)
            AlignedBytes pristine(bytes, o.hugepages), work(bytes, o.hugepages);
            std::vector<float> row(static_cast<size_t>(V));
            for (int64_t r = 0; r < R; ++r) {
                const size_t off = size_t(rng.below(int64_t(table.size())));
                for (int64_t v = 0; v < V; ++v) row[size_t(v)] = table[(off + size_t(v)) % table.size()];
                for (int64_t v = 0; v < V; ++v) store_elem(pristine.data() + size_t(r * V * es), dtype, v, row[size_t(v)]);
            }
            std::memcpy(work.data(), pristine.data(), bytes);  // touch every page of both
            std::printf("<!-- %s V=%" PRId64 ": %.0f MiB of this process's anonymous memory in huge pages -->\n",
                        dtype_name(dtype), V, anon_huge_mib());
            std::vector<int64_t> targets(static_cast<size_t>(R));
            const size_t nr = static_cast<size_t>(R);
            std::vector<float> g(nr), logp(nr), lse(nr), lse_b(nr);
            for (int64_t r = 0; r < R; ++r) {
                targets[size_t(r)] = rng.below(V);
                g[size_t(r)] = float(2.0 * rng.uniform() - 1.0);
            }
            auto fwd = [&](const uint8_t* z, float* l) {
                return spo4j_token_logprobs_fwd_cpu(z, dtype, R, V, V, targets.data(), SPO4J_IGNORE_INDEX,
                                                    logp.data(), l, nullptr, threads);
            };
            auto bwd = [&](uint8_t* z, const float* l) {
                return spo4j_token_logprobs_bwd_cpu(z, dtype, R, V, V, targets.data(), SPO4J_IGNORE_INDEX, l,
                                                    g.data(), z, V, threads);
            };
            // validate: both paths agree (forward lse, and the gradient on the first rows)
            bool ok = true;
            std::vector<uint8_t> grad_a, grad_b;
            for (int path : {1, 0}) {
                spo4j_debug_cpu_path(path);
                ok &= fwd(pristine.data(), path == 1 ? lse.data() : lse_b.data()) == SPO4J_OK;
                std::memcpy(work.data(), pristine.data(), std::min(bytes, size_t(8 * V * es)));
                ok &= spo4j_token_logprobs_bwd_cpu(work.data(), dtype, std::min<int64_t>(R, 8), V, V, targets.data(),
                                                   SPO4J_IGNORE_INDEX, lse.data(), g.data(), work.data(), V, 1) == SPO4J_OK;
                (path == 1 ? grad_a : grad_b).assign(work.data(), work.data() + std::min(bytes, size_t(8 * V * es)));
            }
            double worst_lse = 0, worst_grad = 0;
            for (int64_t r = 0; r < R; ++r)
                worst_lse = std::max(worst_lse, std::fabs(double(lse[size_t(r)]) - lse_b[size_t(r)]) /
                                                    std::max(1.0, std::fabs(double(lse[size_t(r)]))));
            // gradients: the exps differ by a few ulp, which can flip one rounding of the output
            // dtype, so the bound is one output ulp (relative) plus 1e-6
            const double out_ulp = dtype == SPO4J_F32 ? 0x1.0p-23 : dtype == SPO4J_BF16 ? 0x1.0p-7 : 0x1.0p-10;
            for (size_t i = 0; i < grad_a.size() / size_t(es); ++i) {
                const double a = load_elem(grad_a.data(), dtype, int64_t(i)), b = load_elem(grad_b.data(), dtype, int64_t(i));
                worst_grad = std::max(worst_grad, std::fabs(a - b) / (1e-6 + out_ulp * std::fabs(a)));
            }
            if (!ok || worst_lse > 1e-5 || worst_grad > 1.0) {
                std::printf("cpu-ab: the paths disagree at %s V=%" PRId64 " (status ok: %d, lse %.3g, grad %.3g of its bound)\n",
                            dtype_name(dtype), V, int(ok), worst_lse, worst_grad);
                return 1;
            }
            const size_t row_bytes = size_t(V * es);
            auto floor_read = [&](const uint8_t* z) {
                split_bytes(R, row_bytes, threads, [&](size_t off, size_t n) { g_sink += read_pass(z + off, n); });
            };
            auto floor_inplace = [&](uint8_t* z) {
                split_bytes(R, row_bytes, threads, [&](size_t off, size_t n) { inplace_pass(z + off, n); });
            };
            for (int mode = 0; mode < 3; ++mode) {
                std::vector<double> t[3];  // [0] generic, [1] avx512, [2] the same-buffer floor
                for (int rep = 0; rep < o.warmup + o.reps; ++rep) {
                    for (int k = 0; k < 3; ++k) {
                        const int which = (rep + k) % 3;  // rotate which goes first
                        if (which == 2) {
                            double ms = 0;
                            if (mode == 0) {
                                const double a = now_ms();
                                floor_read(pristine.data());
                                ms = now_ms() - a;
                            } else {
                                std::memcpy(work.data(), pristine.data(), bytes);
                                const double a = now_ms();
                                if (mode == 2) floor_read(work.data());
                                floor_inplace(work.data());
                                ms = now_ms() - a;
                            }
                            if (rep >= o.warmup) t[2].push_back(ms);
                            continue;
                        }
                        spo4j_debug_cpu_path(which == 0 ? 1 : 0);
                        double ms = 0;
                        if (mode == 0) {
                            const double a = now_ms();
                            fwd(pristine.data(), lse.data());
                            ms = now_ms() - a;
                        } else {
                            std::memcpy(work.data(), pristine.data(), bytes);
                            if (mode == 1) fwd(work.data(), lse.data());
                            const double a = now_ms();
                            if (mode == 2) fwd(work.data(), lse.data());
                            bwd(work.data(), lse.data());
                            ms = now_ms() - a;
                        }
                        if (rep >= o.warmup) t[which].push_back(ms);
                    }
                }
                const double traffic = double(bytes) * (mode == 0 ? 1 : mode == 1 ? 2 : 3) + double(R) * 16 * (mode == 2 ? 2 : 1);
                const double mg = median(t[0]), ma = median(t[1]), mf = median(t[2]);
                std::printf("| %s | %s | %" PRId64 " x %" PRId64 " | %d | %.1f | %.1f | %.2fx | %.1f | %.1f | %.1f | %.2fx |\n",
                            mode_names[mode], dtype_name(dtype), R, V, threads, mg, ma, mg / ma,
                            traffic / mg / 1e6, traffic / ma / 1e6, mf, ma / mf);
                std::fflush(stdout);
            }
        }
    }
    spo4j_debug_cpu_path(0);
    return 0;
}

}  // namespace harness
