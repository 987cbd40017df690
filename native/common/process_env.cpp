// spo4j_set_env_default: sets an environment variable of this process unless it is set.
// The launcher calls it for OMP_WAIT_POLICY before LibTorch (and its OpenMP runtime, which
// reads the variable once, when it initialises) is loaded: Java cannot change its own
// process environment, so it goes through this library, which links no OpenMP.
#include <cstdlib>

#include "spo4j.h"

extern "C" SPO4J_API int spo4j_set_env_default(const char* name, const char* value) {
    if (!name || !value || !*name) return -1;
    if (std::getenv(name) != nullptr) return 0;
    return setenv(name, value, 0) == 0 ? 1 : -1;
}
