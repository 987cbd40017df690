// Built instead of the harness's .cu files (cuda_check.cu, token_logprobs_check.cu,
// preference_loss_check.cu and bench/native/token_logprobs_bench.cu) when there is no CUDA:
// the CUDA part of `check` reports why it does not run, and `bench` says it was skipped.
#include <cstdio>
#include <string>

#include "check.h"
#include "preference_loss_check.h"
#include "token_logprobs_check.h"

namespace harness {

bool cuda_usable(std::string* why) {
    *why = spo4j_cuda_built() ? "the harness was built without CUDA"
                              : "libspo4j was built without CUDA (SPO4J_CUDA=OFF or no nvcc)";
    return false;
}

void cuda_check_token_case(Checker&, TokenCase&, uint64_t) {}
void cuda_check_token_errors(Checker&) {}
void cuda_check_loss_case(Checker&, const LossCase&) {}
void cuda_check_loss_errors(Checker&) {}

int token_logprobs_bench(const BenchOptions&) {
    std::printf("bench: skipped: this build has no CUDA (configure with -DSPO4J_CUDA=ON on a "
                "machine with nvcc)\n");
    return 0;
}

}  // namespace harness
