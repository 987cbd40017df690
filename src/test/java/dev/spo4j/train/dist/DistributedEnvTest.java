package dev.spo4j.train.dist;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Map;
import org.junit.jupiter.api.Test;

/** torchrun's environment variables, parsed and checked. */
class DistributedEnvTest {
    @Test
    void noWorldSizeOrOneIsASingleProcess() {
        assertFalse(DistributedEnv.from(Map.of()).isDistributed());
        assertFalse(DistributedEnv.from(Map.of("WORLD_SIZE", "1", "RANK", "0")).isDistributed());
    }

    @Test
    void torchrunVariables() {
        DistributedEnv e = DistributedEnv.from(Map.of("WORLD_SIZE", "4", "RANK", "3", "LOCAL_RANK", "1",
                "MASTER_ADDR", "hostA", "MASTER_PORT", "29500"));
        assertEquals(new DistributedEnv(3, 4, 1, "hostA", 29500), e);
        assertTrue(e.isDistributed());
        // LOCAL_RANK defaults to RANK (one process per machine and GPU 0 ... is the caller's choice)
        assertEquals(2, DistributedEnv.from(Map.of("WORLD_SIZE", "4", "RANK", "2", "MASTER_ADDR", "h",
                "MASTER_PORT", "1")).localRank());
    }

    @Test
    void missingOrBadVariablesAreNamed() {
        Map<String, Map<String, String>> cases = Map.of(
                "RANK is not set", Map.of("WORLD_SIZE", "2", "MASTER_ADDR", "h", "MASTER_PORT", "1"),
                "MASTER_ADDR is not set", Map.of("WORLD_SIZE", "2", "RANK", "0", "MASTER_PORT", "1"),
                "MASTER_PORT is not set", Map.of("WORLD_SIZE", "2", "RANK", "0", "MASTER_ADDR", "h"),
                "RANK='x' is not an integer", Map.of("WORLD_SIZE", "2", "RANK", "x", "MASTER_ADDR", "h", "MASTER_PORT", "1"),
                "0 <= RANK < WORLD_SIZE", Map.of("WORLD_SIZE", "2", "RANK", "2", "MASTER_ADDR", "h", "MASTER_PORT", "1"),
                "a port 1..65535", Map.of("WORLD_SIZE", "2", "RANK", "1", "MASTER_ADDR", "h", "MASTER_PORT", "70000"));
        cases.forEach((msg, env) -> {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> DistributedEnv.from(env));
            assertTrue(e.getMessage().contains(msg), msg + " not in: " + e.getMessage());
        });
    }
}
