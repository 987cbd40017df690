// Internal: the thread-local error message behind spo4j_last_error(), shared by the CPU
// and CUDA kernels. spo4j::fail() records a printf-style message and returns the status.
// Also the test switch that makes thread starts fail (refuse_thread_start).
#pragma once
#include "spo4j.h"

namespace spo4j {
int fail(int status, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
void clear_error();
// Fault injection for tests (spo4j_debug_fail_thread_starts): whether the next thread start
// must fail as if the OS refused it. Always false unless a test switched it on.
bool refuse_thread_start();
}  // namespace spo4j
