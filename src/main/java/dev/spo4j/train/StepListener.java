package dev.spo4j.train;

import dev.spo4j.model.LlamaModel;
import java.util.Map;

/**
 * Called by {@link Trainer} after every optimiser step, outside the step's pointer scope and
 * before evaluation and checkpointing, with the step number (1-based), the policy (to
 * measure it; a listener must not change its parameters and should run under
 * {@code NoGradGuard}) and the step's training metrics (loss, grad_norm, logps/chosen, ...).
 */
@FunctionalInterface
public interface StepListener {
    /**
     * Called after optimiser step {@code step} (1-based) with the policy and an unmodifiable copy
     * of the step's metrics.
     */
    void afterStep(int step, LlamaModel policy, Map<String, Double> metrics);
}
