// Shared pieces of the native harness (spo4j_harness): the one allclose used by every
// check, float64 references, test-case data and the dtype codecs. harness.cpp holds the
// CPU checks and main(); harness_cuda.cu (built only with CUDA) the CUDA checks and the
// benchmark.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
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

// ---- token log-probs cases ------------------------------------------------------------

struct TokenCase {
    std::string label;
    int dtype = SPO4J_F32;
    int64_t rows = 0, vocab = 0, stride = 0;
    int64_t ignore_index = -100;
    bool entropy = true;
    std::vector<uint8_t> logits;     // rows * stride elements; padding holds NaN
    std::vector<int64_t> targets;    // rows
    std::vector<float> grad_logp;    // rows: upstream g
    std::vector<float> lse_in;       // rows: float(lse_ref), 0 on ignored rows (backward input)
    // float64 truth
    std::vector<double> lse_ref, logp_ref, entropy_ref;
    std::vector<double> scale;       // rows: max(1, max |finite z|), for the fp32 error model
    // CPU kernel results (filled by the CPU check, compared against by the CUDA check)
    std::vector<float> lse_cpu, logp_cpu, entropy_cpu;
    std::vector<uint8_t> grad_cpu;   // rows * vocab, dense, in dtype
    bool cpu_ok = false;
};

// Float64 gradient row: g * (1[v == t] - exp(z_v - lse_in)) (zeros for an ignored row).
void ref_grad_row(const TokenCase& c, int64_t r, std::vector<double>& out);

// Tolerances, from an error model (not tuned to pass): fp32 accumulation over a row,
// the fp32 rounding of values of magnitude `scale`, and the output dtype's rounding.
double tol_lse(const TokenCase& c, int64_t r);       // lse and logp
double tol_entropy(const TokenCase& c, int64_t r);
double tol_grad(const TokenCase& c, int64_t r, double ref);

// Compares a forward result with the case's float64 truth; tolerances times `slack`.
void compare_forward(Checker& ck, const TokenCase& c, const char* who, const float* logp,
                     const float* lse, const float* entropy, double slack);

// ---- preference-loss cases ------------------------------------------------------------

struct LossCase {
    std::string label;
    spo4j_loss_params p{};
    int64_t pairs = 0;
    bool with_margin = false;
    std::vector<float> pc, pr, rc, rr, margin;
    // float64 truth
    std::vector<double> loss_ref, gc_ref, gr_ref;
    double stats_ref[SPO4J_STAT_COUNT] = {0};
    // CPU results
    std::vector<float> loss_cpu, gc_cpu, gr_cpu;
    float stats_cpu[SPO4J_STAT_COUNT] = {0};
};

void compare_loss(Checker& ck, const LossCase& c, const char* who, const float* loss,
                  const float* gc, const float* gr, const float* stats, double slack);

// ---- CUDA part (harness_cuda.cu, or stubs without CUDA) --------------------------------

// True when the library was built with CUDA and a device is usable; else `why` says why.
bool cuda_usable(std::string* why);
void cuda_check_token_case(Checker& ck, TokenCase& c, uint64_t seed);
void cuda_check_token_errors(Checker& ck);
void cuda_check_loss_case(Checker& ck, const LossCase& c);
void cuda_check_loss_errors(Checker& ck);

struct BenchOptions {
    int reps = 20;
    int warmup = 3;
    std::vector<int64_t> vocabs{32768, 128256, 151936};
    int64_t rows = 16384;
    std::vector<int> dtypes{SPO4J_BF16, SPO4J_F32};
    std::string json;  // write results here when not empty
};
int cuda_bench(const BenchOptions& o);

}  // namespace harness
