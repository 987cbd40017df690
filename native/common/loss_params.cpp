// check_loss_params (loss_params.h): the loss parameters' ranges as documented on
// spo4j_loss_params in native/include/spo4j.h.
#include "loss_params.h"

#include <cmath>

#include "status.h"

namespace spo4j {
int check_loss_params(const spo4j_loss_params* p) {
    if (!p) return fail(SPO4J_ERR_ARGUMENT, "null loss parameters");
    if (p->type < SPO4J_LOSS_SPO || p->type > SPO4J_LOSS_SPO_EXP)
        return fail(SPO4J_ERR_ARGUMENT,
                    "unknown loss type %d (expected 0=spo, 1=dpo, 2=ipo, 3=hinge, 4=soft-dpo, 5=spo-exp)", p->type);
    if (!(std::isfinite(p->beta) && p->beta > 0))
        return fail(SPO4J_ERR_ARGUMENT, "beta = %g (expected a finite value > 0)", double(p->beta));
    if (!(p->label_smoothing >= 0 && p->label_smoothing < 0.5f))
        return fail(SPO4J_ERR_ARGUMENT, "label smoothing = %g (expected 0 <= eps < 0.5)", double(p->label_smoothing));
    if (!std::isfinite(p->margin))
        return fail(SPO4J_ERR_ARGUMENT, "margin = %g (expected a finite value)", double(p->margin));
    if (!(std::isfinite(p->margin_floor) && p->margin_floor > 0))
        return fail(SPO4J_ERR_ARGUMENT, "margin floor = %g (expected a finite value > 0)", double(p->margin_floor));
    return SPO4J_OK;
}
}  // namespace spo4j
