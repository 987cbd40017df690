// spo4j_harness: the native kernels without Java.
//
//   spo4j_harness check [--verbose] [--quick]
//       CPU kernels against float64 references written here, over a sweep of awkward
//       shapes (rows 1/7/129/1000, V 1..50257, padded row strides, ignored rows, extreme
//       and -inf logits, fp32/bf16/fp16), in place and not, error statuses, and the four
//       preference losses. With a CUDA build and a visible GPU, the CUDA kernels against
//       the same references and against the CPU kernels (both launch shapes, aligned and
//       unaligned rows). Without one the CUDA part is skipped and says why. Ends with
//       "N passed, M failed"; exit status 1 when anything failed.
//       Per op: token_logprobs_check.{cpp,cu}, preference_loss_check.{cpp,cu}.
//   spo4j_harness bench [--json FILE] [--reps N] [--rows N] [--vocab V,V,..] [--dtype bf16,f32]
//       CUDA timings (bench/native/token_logprobs_bench.cu); exits 0 with a message when
//       there is no GPU.
//   spo4j_harness cpu-ab [--reps N] [--rows N] [--vocab V,V,..] [--dtype f32,bf16] [--threads N]
//                        [--hugepages]
//       the CPU kernel's generic and AVX-512 paths timed interleaved in one process
//       (bench/native/token_logprobs_cpu_ab.cpp; defaults 4096 rows, V 32768,131072, f32 and
//       bf16, 7 reps after 1 warm-up, 1 thread).
//
// This file: main(), the check mode's order of parts, and the shared check utilities of
// check.h. Registered with ctest as harness_check (native/tests/CMakeLists.txt).
#include "check.h"

#include <algorithm>
#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <sstream>

#include "preference_loss_check.h"
#include "token_logprobs_check.h"

namespace harness {

std::string strf(const char* fmt, ...) {
    char buf[1024];
    va_list args;
    va_start(args, fmt);
    std::vsnprintf(buf, sizeof buf, fmt, args);
    va_end(args);
    return buf;
}

// ---- Checker / Closeness --------------------------------------------------------------

bool Checker::record(bool ok, const std::string& name, const std::string& detail) {
    if (ok) {
        ++passed;
    } else {
        ++failed;
    }
    if (!ok || verbose) {
        std::printf("%s %s%s%s\n", ok ? "ok  " : "FAIL", name.c_str(), detail.empty() ? "" : ": ",
                    detail.c_str());
        std::fflush(stdout);
    }
    return ok;
}

void Checker::note(const std::string& text) {
    std::printf("NOTE %s\n", text.c_str());
    std::fflush(stdout);
}

void Closeness::add(int64_t index, double got, double ref, double tol) {
    ++n_;
    bool ok;
    if (std::isnan(ref)) {
        ok = std::isnan(got);
    } else if (std::isinf(ref)) {
        ok = got == ref;
    } else if (!std::isfinite(got)) {
        ok = false;
    } else {
        const double d = std::fabs(got - ref);
        max_diff_ = std::max(max_diff_, d);
        if (tol > 0) worst_ratio_ = std::max(worst_ratio_, d / tol);
        ok = d <= tol;
    }
    if (!ok) {
        if (bad_ < 5) {
            first_ += strf("\n      [%" PRId64 "] got %.9g ref %.9g |diff| %.3g tol %.3g", index,
                             got, ref, std::fabs(got - ref), tol);
        }
        ++bad_;
    }
}

bool Closeness::finish(Checker& ck, const std::string& context) {
    std::string detail = strf("%" PRId64 "/%" PRId64 " mismatches, max |diff| %.3g, worst diff/tol %.3g",
                                bad_, n_, max_diff_, worst_ratio_);
    if (bad_) detail += first_;
    return ck.record(bad_ == 0, name_ + (context.empty() ? "" : " [" + context + "]"), detail);
}

bool allclose(Checker& ck, const std::string& name, const float* got, const double* ref,
              int64_t n, double atol, double rtol, const std::string& context) {
    Closeness c(name);
    for (int64_t i = 0; i < n; ++i) c.add(i, got[i], ref[i], atol + rtol * std::fabs(ref[i]));
    return c.finish(ck, context);
}

// ---- codecs -----------------------------------------------------------------------------

uint16_t float_to_bf16(float f) {
    uint32_t u = float_to_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);
    return uint16_t(u >> 16);
}

float f16_to_float(uint16_t h) {
    const uint32_t sign = uint32_t(h & 0x8000u) << 16;
    const int exp = (h >> 10) & 0x1f;
    const uint32_t man = h & 0x3ffu;
    float v;
    if (exp == 0) {
        v = std::ldexp(float(man), -24);
    } else if (exp == 31) {
        v = man ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
    } else {
        v = std::ldexp(float(man | 0x400u), exp - 25);
    }
    return bits_to_float(float_to_bits(v) | sign);
}

uint16_t float_to_f16(float f) {
    const uint16_t sign = (float_to_bits(f) >> 16) & 0x8000u;
    const double a = std::fabs(double(f));
    if (std::isnan(f)) return sign | 0x7e00u;
    if (a >= 65520.0) return sign | 0x7c00u;  // rounds to +-inf (65504 is the largest half)
    if (a < 0x1.0p-14) {                      // subnormal: multiples of 2^-24
        return uint16_t(sign | uint16_t(std::nearbyint(a * 0x1.0p24)));  // 1024 -> min normal
    }
    int e;
    std::frexp(a, &e);  // a in [2^(e-1), 2^e)
    int E = e - 1;
    double m = std::nearbyint(std::ldexp(a, 10 - E));  // [1024, 2048]
    if (m >= 2048) {
        m = 1024;
        ++E;
    }
    if (E > 15) return sign | 0x7c00u;
    return uint16_t(sign | uint16_t((E + 15) << 10) | uint16_t(int(m) - 1024));
}

const char* dtype_name(int dtype) {
    return dtype == SPO4J_F32 ? "f32" : dtype == SPO4J_BF16 ? "bf16" : "f16";
}

float load_elem(const uint8_t* base, int dtype, int64_t i) {
    if (dtype == SPO4J_F32) {
        float f;
        std::memcpy(&f, base + 4 * i, 4);
        return f;
    }
    uint16_t h;
    std::memcpy(&h, base + 2 * i, 2);
    return dtype == SPO4J_BF16 ? bf16_to_float(h) : f16_to_float(h);
}

void store_elem(uint8_t* base, int dtype, int64_t i, float v) {
    if (dtype == SPO4J_F32) {
        std::memcpy(base + 4 * i, &v, 4);
        return;
    }
    const uint16_t h = dtype == SPO4J_BF16 ? float_to_bf16(v) : float_to_f16(v);
    std::memcpy(base + 2 * i, &h, 2);
}

// ---- guarded buffers --------------------------------------------------------------------

size_t strided_payload_bytes(int64_t rows, int64_t row_stride, int elem, size_t offset) {
    return offset + size_t(rows) * size_t(row_stride) * size_t(elem);
}

bool guards_intact(const std::vector<uint8_t>& all) {
    if (all.size() < 2 * kGuardBytes) return false;
    for (size_t i = 0; i < kGuardBytes; ++i)
        if (all[i] != kGuard || all[all.size() - 1 - i] != kGuard) return false;
    return true;
}

// ---- status checks ----------------------------------------------------------------------

namespace {
bool message_has(const std::string& needle) {
    return std::string(spo4j_last_error()).find(needle) != std::string::npos;
}
}  // namespace

void expect_status(Checker& ck, int got, int want, const std::string& name,
                   const std::string& needle) {
    const bool ok = got == want && (needle.empty() || message_has(needle));
    ck.record(ok, name, strf("status %d (want %d), message \"%s\"%s", got, want,
                               spo4j_last_error(),
                               needle.empty() ? "" : (" (want it to contain \"" + needle + "\")").c_str()));
}

namespace {

// ---- the check mode ---------------------------------------------------------------------

int run_check(bool verbose, bool quick) {
    Checker ck;
    ck.verbose = verbose;
    std::string why;
    const bool cuda = cuda_usable(&why);
    if (!cuda) {
        ck.note("CUDA checks skipped: " + why);
        // The CUDA entry points must still answer with a status (never crash): NOT_BUILT
        // without nvcc, a CUDA error without a driver or device.
        const int want = spo4j_cuda_built() ? SPO4J_ERR_CUDA : SPO4J_ERR_NOT_BUILT;
        std::vector<float> f(8, 0.0f);
        std::vector<int64_t> t(2, 0);
        expect_status(ck, spo4j_token_logprobs_fwd_cuda(f.data(), SPO4J_F32, 2, 4, 4, t.data(), -100,
                                                        f.data(), f.data(), nullptr, nullptr),
                      want, "cuda fwd without a usable device reports a status");
        expect_status(ck, spo4j_token_logprobs_bwd_cuda(f.data(), SPO4J_F32, 2, 4, 4, t.data(), -100,
                                                        f.data(), f.data(), f.data(), 4, nullptr),
                      want, "cuda bwd without a usable device reports a status");
        expect_status(ck, spo4j_token_logprobs_fwd_cuda_unchecked(f.data(), SPO4J_F32, 2, 4, 4, t.data(), -100,
                                                                  f.data(), f.data(), nullptr, nullptr),
                      want, "cuda fwd unchecked without a usable device reports a status");
        expect_status(ck, spo4j_token_logprobs_bwd_cuda_unchecked(f.data(), SPO4J_F32, 2, 4, 4, t.data(), -100,
                                                                  f.data(), f.data(), f.data(), 4, nullptr),
                      want, "cuda bwd unchecked without a usable device reports a status");
        const spo4j_loss_params p{SPO4J_LOSS_DPO, 0.1f, 0.0f, 1.0f, 0.1f, 0.05f, 0.5f, 0.0f};
        expect_status(ck, spo4j_preference_loss_cuda(&p, 2, f.data(), f.data(), f.data(), f.data(), nullptr,
                                                     nullptr, f.data(), f.data(), nullptr, nullptr),
                      want, "cuda loss without a usable device reports a status");
        ck.record(spo4j_cuda_device_count() == 0, "spo4j_cuda_device_count() is 0 without a device");
    }

    // One part per op, each with its CPU checks and (when `cuda`) its CUDA checks.
    check_token_logprobs(ck, cuda, quick);
    check_preference_loss(ck, cuda);

    if (!cuda) std::printf("CUDA part skipped: %s\n", why.c_str());
    std::printf("%d passed, %d failed\n", ck.passed, ck.failed);
    return ck.failed == 0 ? 0 : 1;
}

std::vector<std::string> split(const std::string& s) {
    std::vector<std::string> out;
    std::stringstream ss(s);
    std::string item;
    while (std::getline(ss, item, ',')) out.push_back(item);
    return out;
}

void usage() {
    std::printf(
        "usage: spo4j_harness check [--verbose] [--quick]\n"
        "       spo4j_harness bench [--json FILE] [--reps N] [--rows N] [--vocab V,V,..]\n"
        "                           [--dtype bf16,f32,f16]\n"
        "       spo4j_harness cpu-ab [--reps N] [--rows N] [--vocab V,V,..] [--dtype f32,bf16]\n"
        "                            [--threads N] [--hugepages]\n");
}

}  // namespace
}  // namespace harness

int main(int argc, char** argv) {
    using namespace harness;
    if (argc < 2) {
        usage();
        return 2;
    }
    const std::string mode = argv[1];
    bool verbose = false, quick = false;
    BenchOptions bo;
    int threads = 1;
    if (mode == "cpu-ab") {  // CPU defaults: TokenLogProbsBench's shapes
        bo.rows = 4096;
        bo.vocabs = {32768, 131072};
        bo.dtypes = {SPO4J_F32, SPO4J_BF16};
        bo.reps = 7;
        bo.warmup = 1;
    }
    for (int i = 2; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "missing value after %s\n", a.c_str());
                std::exit(2);
            }
            return argv[++i];
        };
        if (a == "--verbose") {
            verbose = true;
        } else if (a == "--quick") {
            quick = true;
        } else if (a == "--hugepages") {
            bo.hugepages = true;
        } else if (a == "--json") {
            bo.json = value();
        } else if (a == "--threads") {
            threads = std::max(1, std::atoi(value().c_str()));
        } else if (a == "--reps") {
            bo.reps = std::max(1, std::atoi(value().c_str()));
        } else if (a == "--rows") {
            bo.rows = std::max<int64_t>(1, std::atoll(value().c_str()));
        } else if (a == "--vocab") {
            bo.vocabs.clear();
            for (const std::string& v : split(value())) bo.vocabs.push_back(std::atoll(v.c_str()));
        } else if (a == "--dtype") {
            bo.dtypes.clear();
            for (const std::string& d : split(value()))
                bo.dtypes.push_back(d == "f32" ? SPO4J_F32 : d == "bf16" ? SPO4J_BF16 : SPO4J_F16);
        } else {
            usage();
            return 2;
        }
    }
    if (mode == "check") return run_check(verbose, quick);
    if (mode == "bench") return token_logprobs_bench(bo);
    if (mode == "cpu-ab") return token_logprobs_cpu_ab(bo, threads);
    usage();
    return 2;
}
