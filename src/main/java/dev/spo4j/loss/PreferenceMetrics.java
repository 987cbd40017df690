package dev.spo4j.loss;

import java.util.LinkedHashMap;
import java.util.Map;

/**
 * Batch means of a preference loss step, under TRL's names (see {@link #asMap()}) so that
 * dashboards carry over. Rewards are beta times the policy/reference log-ratios (on the
 * length-normalised log-probs when the loss is); log-probs are the policy's summed ones.
 */
public record PreferenceMetrics(double loss, double rewardsChosen, double rewardsRejected,
                                double rewardsMargins, double rewardsAccuracies,
                                double logpsChosen, double logpsRejected) {
    public Map<String, Double> asMap() {
        Map<String, Double> m = new LinkedHashMap<>();
        m.put("loss", loss);
        m.put("rewards/chosen", rewardsChosen);
        m.put("rewards/rejected", rewardsRejected);
        m.put("rewards/margins", rewardsMargins);
        m.put("rewards/accuracies", rewardsAccuracies);
        m.put("logps/chosen", logpsChosen);
        m.put("logps/rejected", logpsRejected);
        return m;
    }
}
