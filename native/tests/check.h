// The shared part of the native harness spo4j_harness: counting checks (Checker), the one
// allclose every check uses (Closeness, allclose), status checks, the dtype codecs, a
// deterministic generator, and the entry points of the parts that check.cpp's main() runs.
// The harness's files (native/tests unless said otherwise):
//   check.{h,cpp}                       this shared part and main()
//   token_logprobs_check.{h,cpp,cu}     token log-probs (cases and CPU checks; CUDA checks)
//   preference_loss_check.{h,cpp,cu}    preference losses (cases and CPU checks; CUDA checks)
//   cuda_check.{cuh,cu}                 what the CUDA checks and the bench share
//   bench/native/token_logprobs_bench.cu   the CUDA timings (spo4j_harness bench)
// Without CUDA, cuda_stub.cpp stands in for every .cu file and says why the CUDA part is
// skipped.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "spo4j.h"

namespace harness {

// ---- counting and comparing -----------------------------------------------------------

struct Checker {
    int passed = 0;
    int failed = 0;
    bool verbose = false;
    // Counts one check; prints it when it failed (or always when verbose).
    bool record(bool ok, const std::string& name, const std::string& detail = "");
    // Something worth reading that is not a failure (e.g. a skipped part).
    void note(const std::string& text);
};

// Streaming |got - ref| <= tol comparison for one check (the shared allclose): NaN matches
// only NaN, +-inf only the same infinity, and a finite reference needs a finite result.
// Keeps the first mismatches and the largest difference for the report.
class Closeness {
public:
    explicit Closeness(std::string name) : name_(std::move(name)) {}
    void add(int64_t index, double got, double ref, double tol);
    // Records the check in `ck`; returns whether everything matched.
    bool finish(Checker& ck, const std::string& context);
    int64_t count() const { return n_; }

private:
    std::string name_;
    int64_t n_ = 0, bad_ = 0;
    double max_diff_ = 0, worst_ratio_ = 0;
    std::string first_;
};

// Element-wise allclose over whole arrays: tol_i = atol + rtol * |ref_i|.
bool allclose(Checker& ck, const std::string& name, const float* got, const double* ref,
              int64_t n, double atol, double rtol, const std::string& context = "");

// printf into a std::string.
std::string strf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// Checks a status code and, when `needle` is not empty, that spo4j_last_error() holds it.
void expect_status(Checker& ck, int got, int want, const std::string& name,
                   const std::string& needle = "");

// ---- dtype codecs (round to nearest even, like the kernels' stores) ---------------------

inline float bits_to_float(uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline uint32_t float_to_bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}
inline float bf16_to_float(uint16_t h) { return bits_to_float(uint32_t(h) << 16); }
uint16_t float_to_bf16(float f);
float f16_to_float(uint16_t h);
uint16_t float_to_f16(float f);

inline int elem_size(int dtype) { return dtype == SPO4J_F32 ? 4 : 2; }
const char* dtype_name(int dtype);

// Reads / writes element i of a buffer of `dtype` as float.
float load_elem(const uint8_t* base, int dtype, int64_t i);
void store_elem(uint8_t* base, int dtype, int64_t i, float v);

// ---- guarded buffers (host here, device in cuda_check.cuh) ---------------------------------
// A buffer under test sits between guard bytes; a kernel that writes past its rows changes
// them. The payload size comes from strided_payload_bytes for every strided buffer, so that
// the host and device checks size their buffers by one rule.

inline constexpr uint8_t kGuard = 0xab;  // bytes around every buffer under test
inline constexpr size_t kGuardBytes = 256;

// Payload bytes for `rows` rows of `row_stride` elements of `elem` bytes that start `offset`
// bytes into the payload: every row at its full stride (the checks read the last row's
// padding too), plus the offset.
size_t strided_payload_bytes(int64_t rows, int64_t row_stride, int elem, size_t offset);

// Whether the first and last kGuardBytes of a guarded buffer (guards included) still hold
// the guard.
bool guards_intact(const std::vector<uint8_t>& all);

// Host twin of the device DevBuf: guard bytes, a payload of `n` bytes filled with
// `payload_fill` (or guard bytes when < 0), guard bytes.
struct HostGuarded {
    std::vector<uint8_t> all;
    explicit HostGuarded(size_t n, int payload_fill = -1)
        : all(n + 2 * kGuardBytes, kGuard) {
        if (payload_fill >= 0) std::memset(all.data() + kGuardBytes, payload_fill, n);
    }
    uint8_t* at(size_t off = 0) { return all.data() + kGuardBytes + off; }
};

// ---- test data --------------------------------------------------------------------------

// Deterministic generator (fixed seeds: a failure reproduces).
struct Rng {
    std::mt19937_64 g;
    explicit Rng(uint64_t seed) : g(seed) {}
    double uniform() { return double(g() >> 11) * 0x1.0p-53; }  // [0, 1)
    int64_t below(int64_t n) { return int64_t(uniform() * double(n)); }
    double normal() {
        const double u1 = 1.0 - uniform(), u2 = uniform();
        return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
    }
};

// ---- CUDA part (cuda_check.cu, or cuda_stub.cpp without CUDA) -----------------------------

// True when the library was built with CUDA and a device is usable; else `why` says why.
bool cuda_usable(std::string* why);

// ---- bench mode (bench/native/token_logprobs_bench.cu, or cuda_stub.cpp without CUDA) -----

struct BenchOptions {
    int reps = 20;
    int warmup = 3;
    std::vector<int64_t> vocabs{32768, 128256, 151936};
    int64_t rows = 16384;
    std::vector<int> dtypes{SPO4J_BF16, SPO4J_F32};
    std::string json;  // write results here when not empty
    bool hugepages = false;  // cpu-ab: buffers in 2 MiB pages (madvise)
};
int token_logprobs_bench(const BenchOptions& o);
// spo4j_harness cpu-ab (bench/native/token_logprobs_cpu_ab.cpp): the CPU paths A/B.
int token_logprobs_cpu_ab(const BenchOptions& o, int threads);

}  // namespace harness
