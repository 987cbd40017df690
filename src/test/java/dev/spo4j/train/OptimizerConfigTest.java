package dev.spo4j.train;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

/** The optimiser settings shared by train and sft: defaults, the schedule they make, and bad values. */
class OptimizerConfigTest {
    @Test
    void warmUpComesFromTheRatioUnlessStepsAreGiven() {
        OptimizerConfig c = new OptimizerConfig();
        assertEquals(10, c.schedule(100).warmupSteps());
        c.warmupSteps = 3;
        assertEquals(3, c.schedule(100).warmupSteps());
        OptimizerConfig sft = OptimizerConfig.withDefaults(1e-3, 0.05);
        assertEquals(1e-3, sft.schedule(100).peak(), 0.0);
        assertEquals(5, sft.schedule(100).warmupSteps());
    }

    @Test
    void badValuesAreRejectedNamingTheValue() {
        String[][] cases = {{"lr", "NaN"}, {"lr", "0"}, {"warmupRatio", "1"}, {"maxGradNorm", "Infinity"},
            {"weightDecay", "-1"}, {"adamBeta1", "1"}, {"adamEps", "0"}, {"adamEps", "Infinity"}};
        for (String[] k : cases) {
            OptimizerConfig c = new OptimizerConfig();
            double v = Double.parseDouble(k[1]);
            switch (k[0]) {
                case "lr" -> c.lr = v;
                case "warmupRatio" -> c.warmupRatio = v;
                case "maxGradNorm" -> c.maxGradNorm = v;
                case "weightDecay" -> c.weightDecay = v;
                case "adamBeta1" -> c.adamBeta1 = v;
                default -> c.adamEps = v;
            }
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, c::validate, k[0] + " " + k[1]);
            assertTrue(e.getMessage().contains(k[1].equals("Infinity") ? "Infinity" : k[1]), e.getMessage());
        }
    }
}
