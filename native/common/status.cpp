// The thread-local error message (see status.h): every entry point clears it on entry and
// sets it before returning a non-zero status.
#include "status.h"

#include <cstdarg>
#include <cstdio>

namespace {
thread_local char g_message[1024] = {0};
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
}  // namespace spo4j

extern "C" SPO4J_API const char* spo4j_last_error(void) { return g_message; }
