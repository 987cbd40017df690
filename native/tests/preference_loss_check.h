// Preference losses in the native harness: the test cases and their float64 truth
// (preference_loss_check.cpp), shared by the CPU checks (preference_loss_check.cpp) and the
// CUDA checks (preference_loss_check.cu). Kernels: native/cpu/preference_loss.cpp and
// native/cuda/preference_loss.cu.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "check.h"

namespace harness {

// ---- cases ------------------------------------------------------------------------------

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

// Compares a result with the case's float64 truth (loss and stats only when not NULL);
// tolerances times `slack`.
void compare_loss(Checker& ck, const LossCase& c, const char* who, const float* loss,
                  const float* gc, const float* gr, const float* stats, double slack);

// Loss parameters every entry point must refuse with SPO4J_ERR_ARGUMENT (the CPU and the CUDA
// error checks run the same list).
struct BadLossParams {
    const char* what;
    spo4j_loss_params p;
};
std::vector<BadLossParams> bad_loss_params();

// ---- checks -----------------------------------------------------------------------------

// The whole preference-loss part of `spo4j_harness check`: the sweep of cases (each on the
// CPU, then on CUDA when `cuda`), then the error checks (CPU, then CUDA).
void check_preference_loss(Checker& ck, bool cuda);

// CUDA half (preference_loss_check.cu, or cuda_stub.cpp without CUDA).
void cuda_check_loss_case(Checker& ck, const LossCase& c);
void cuda_check_loss_errors(Checker& ck);

}  // namespace harness
