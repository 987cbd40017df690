// Built instead of the .cu files of native/cuda when there is no CUDA (SPO4J_CUDA=OFF, or
// AUTO without nvcc): a plain C++ file, so that the CUDA entry points still exist (the JNI
// glue links the same way) and report SPO4J_ERR_NOT_BUILT.
#include "status.h"

namespace {
int not_built() {
    return spo4j::fail(SPO4J_ERR_NOT_BUILT,
                       "spo4j was built without CUDA (no nvcc at build time); rebuild with "
                       "-Dspo4j.cuda=ON (Maven) or -DSPO4J_CUDA=ON (CMake) on a machine with the CUDA toolkit");
}
}  // namespace

extern "C" {
SPO4J_API int spo4j_token_logprobs_fwd_cuda(const void*, int32_t, int64_t, int64_t, int64_t,
                                            const int64_t*, int64_t, float*, float*, float*,
                                            void*) {
    return not_built();
}
SPO4J_API int spo4j_token_logprobs_bwd_cuda(const void*, int32_t, int64_t, int64_t, int64_t,
                                            const int64_t*, int64_t, const float*, const float*,
                                            void*, int64_t, void*) {
    return not_built();
}
SPO4J_API int spo4j_token_logprobs_fwd_cuda_unchecked(const void*, int32_t, int64_t, int64_t,
                                                      int64_t, const int64_t*, int64_t, float*,
                                                      float*, float*, void*) {
    return not_built();
}
SPO4J_API int spo4j_token_logprobs_bwd_cuda_unchecked(const void*, int32_t, int64_t, int64_t,
                                                      int64_t, const int64_t*, int64_t,
                                                      const float*, const float*, void*, int64_t,
                                                      void*) {
    return not_built();
}
SPO4J_API int spo4j_preference_loss_cuda(const spo4j_loss_params*, int64_t, const float*,
                                         const float*, const float*, const float*, const float*,
                                         float*, float*, float*, float*, void*) {
    return not_built();
}
SPO4J_API int spo4j_cuda_built(void) { return 0; }
SPO4J_API int spo4j_cuda_device_count(void) { return 0; }
}
