package dev.spo4j.loss;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Batch means of a preference loss step, under TRL's names (see {@link #asMap()}) so that
 * dashboards carry over. Rewards are beta times the policy/reference log-ratios (on the
 * length-normalised log-probs when the loss is); log-probs are the policy's summed ones.
 *
 * @param loss              the mean per-pair loss
 * @param rewardsChosen     mean beta (log pi(y_c) - log pi_ref(y_c))
 * @param rewardsRejected   mean beta (log pi(y_r) - log pi_ref(y_r))
 * @param rewardsMargins    mean of rewardsChosen - rewardsRejected per pair
 * @param rewardsAccuracies fraction of pairs whose chosen reward exceeds the rejected one
 * @param logpsChosen       mean summed policy log-prob of the chosen completions
 * @param logpsRejected     the same for the rejected completions
 */
public record PreferenceMetrics(double loss, double rewardsChosen, double rewardsRejected,
                                double rewardsMargins, double rewardsAccuracies,
                                double logpsChosen, double logpsRejected) {
    /** The names of {@link #asMap()}, in its order. */
    public static final List<String> NAMES = List.of("loss", "rewards/chosen", "rewards/rejected", "rewards/margins",
            "rewards/accuracies", "logps/chosen", "logps/rejected");

    /** The values under TRL's names, in the order of {@link #NAMES}. */
    public Map<String, Double> asMap() {
        double[] v = {loss, rewardsChosen, rewardsRejected, rewardsMargins, rewardsAccuracies, logpsChosen,
            logpsRejected};
        Map<String, Double> m = new LinkedHashMap<>();
        for (int i = 0; i < v.length; i++) {
            m.put(NAMES.get(i), v[i]);
        }
        return m;
    }
}
