// Token log-probs in the native harness: the test cases, their float64 truth and the
// tolerances (token_logprobs_check.cpp), shared by the CPU checks (token_logprobs_check.cpp)
// and the CUDA checks (token_logprobs_check.cu). Kernels: native/cpu/token_logprobs.cpp and
// native/cuda/token_logprobs.cu.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "check.h"

namespace harness {

// ---- cases ------------------------------------------------------------------------------

struct TokenCase {
    std::string label;
    int dtype = SPO4J_F32;
    int64_t rows = 0, vocab = 0, stride = 0;
    int64_t ignore_index = SPO4J_IGNORE_INDEX;
    bool entropy = true;
    std::vector<uint8_t> logits;     // rows * stride elements; padding holds NaN
    std::vector<int64_t> targets;    // rows
    std::vector<float> grad_logp;    // rows: upstream g
    std::vector<float> lse_in;       // rows: float(lse_ref), 0 on ignored rows (backward input)
    // float64 truth
    std::vector<double> lse_ref, logp_ref, entropy_ref;
    std::vector<double> scale;       // rows: max(1, max |finite z|), for the fp32 error model
    // Rows whose logits span more than FLT_MAX (entries near -1e38 and +1e38, the rest
    // N(0, sigma^2)): every term but the maxima is exactly 0 in fp32, so the entropy is log(k)
    // for k maxima and is checked without the scale term.
    bool huge_span = false;
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

// ---- checks -----------------------------------------------------------------------------

// The whole token log-probs part of `spo4j_harness check`: the sweep of cases (each on the
// CPU, then on CUDA when `cuda`), then the error checks (CPU, then CUDA). `quick` skips the
// larger cases.
void check_token_logprobs(Checker& ck, bool cuda, bool quick);

// CUDA half (token_logprobs_check.cu, or cuda_stub.cpp without CUDA): one case after its
// CPU check (compared with the truth and with the CPU results), and the error statuses.
void cuda_check_token_case(Checker& ck, TokenCase& c, uint64_t seed);
void cuda_check_token_errors(Checker& ck);

}  // namespace harness
