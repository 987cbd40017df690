// The thread-local error message (see status.h): every entry point clears it on entry and
// sets it before returning a non-zero status.
#include "status.h"

#include <atomic>
#include <cstdarg>
#include <cstdio>

namespace {
thread_local char g_message[1024] = {0};
// Thread starts still allowed before the injected failures begin; -1: no injection.
std::atomic<int32_t> g_starts_left{-1};
std::atomic<int32_t> g_refused{0};
}

namespace spo4j {
int fail(int status, const char* fmt, ...) {
    va_list args;
    va_start(args, fmt);
    std::vsnprintf(g_message, sizeof g_message, fmt, args);
    va_end(args);
    return status;
}
void clear_error() { g_message[0] = '\0'; }
bool refuse_thread_start() {
    int32_t left = g_starts_left.load(std::memory_order_relaxed);
    if (left < 0) return false;
    while (left > 0 && !g_starts_left.compare_exchange_weak(left, left - 1)) {
    }
    if (left > 0) return false;
    g_refused.fetch_add(1);
    return true;
}
}  // namespace spo4j

extern "C" SPO4J_API const char* spo4j_last_error(void) { return g_message; }

extern "C" SPO4J_API int spo4j_debug_fail_thread_starts(int32_t after) {
    g_starts_left.store(after < 0 ? -1 : after);
    return g_refused.exchange(0);
}
