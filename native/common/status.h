// Internal: the thread-local error message behind spo4j_last_error(), shared by the CPU
// and CUDA kernels. spo4j::fail() records a printf-style message and returns the status.
#pragma once
#include "spo4j.h"

namespace spo4j {
int fail(int status, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
void clear_error();
}  // namespace spo4j
