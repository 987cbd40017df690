// Internal: host-side validation of spo4j_loss_params, shared by the CPU entry point
// (native/cpu/preference_loss.cpp) and the CUDA one (native/cuda/preference_loss.cu), so
// that both report the same statuses and messages.
#pragma once

#include "spo4j.h"

namespace spo4j {

// SPO4J_OK, or SPO4J_ERR_ARGUMENT with the message set (see status.h).
int check_loss_params(const spo4j_loss_params* p);

}  // namespace spo4j
