// check_loss_params (loss_params.h): the loss parameters' ranges as documented on
// spo4j_loss_params in native/include/spo4j.h.
#include "loss_params.h"

#include <cmath>

#include "status.h"

namespace spo4j {
int check_loss_params(const spo4j_loss_params* p) {
    if (!p) return fail(SPO4J_ERR_ARGUMENT, "null loss parameters");
    if (p->type < SPO4J_LOSS_SPO || p->type > SPO4J_LOSS_CPO)
        return fail(SPO4J_ERR_ARGUMENT,
                    "unknown loss type %d (expected 0=spo, 1=dpo, 2=ipo, 3=hinge, 4=soft-dpo, 5=spo-exp, "
                    "6=robust, 7=exo-pair, 8=nca-pair, 9=bco-pair, 10=sppo-hard, 11=aot, 12=aot-pair, "
                    "13=apo-zero, 14=apo-down, 15=discopop, 16=simpo, 17=cpo)", p->type);
    if (!(std::isfinite(p->beta) && p->beta > 0))
        return fail(SPO4J_ERR_ARGUMENT, "beta = %g (expected a finite value > 0)", double(p->beta));
    if (!(p->label_smoothing >= 0 && p->label_smoothing < 0.5f))
        return fail(SPO4J_ERR_ARGUMENT, "label smoothing = %g (expected 0 <= eps < 0.5)", double(p->label_smoothing));
    if (!std::isfinite(p->margin))
        return fail(SPO4J_ERR_ARGUMENT, "margin = %g (expected a finite value)", double(p->margin));
    if (!(std::isfinite(p->margin_floor) && p->margin_floor > 0))
        return fail(SPO4J_ERR_ARGUMENT, "margin floor = %g (expected a finite value > 0)", double(p->margin_floor));
    if (p->type == SPO4J_LOSS_DISCOPOP && !(std::isfinite(p->tau) && p->tau > 0))
        return fail(SPO4J_ERR_ARGUMENT, "discopop tau = %g (expected a finite value > 0)", double(p->tau));
    if (p->type == SPO4J_LOSS_SIMPO && !std::isfinite(p->gamma))
        return fail(SPO4J_ERR_ARGUMENT, "simpo gamma = %g (expected a finite value)", double(p->gamma));
    if (p->type == SPO4J_LOSS_BCO_PAIR && !std::isfinite(p->delta))
        return fail(SPO4J_ERR_ARGUMENT, "bco-pair delta = %g (expected a finite value)", double(p->delta));
    return SPO4J_OK;
}
}  // namespace spo4j
