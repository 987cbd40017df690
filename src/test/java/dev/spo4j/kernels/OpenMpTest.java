package dev.spo4j.kernels;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

/** The process-environment default behind OMP_WAIT_POLICY=passive: set once, never over a user's value. */
class OpenMpTest {
    @Test
    void setsAnUnsetVariableOnceAndKeepsAnExistingOne() {
        String name = "SPO4J_TEST_" + System.nanoTime();
        assertTrue(OpenMp.setDefault(name, "passive"), "an unset variable is set");
        assertFalse(OpenMp.setDefault(name, "active"), "a set variable is kept");
        assertFalse(OpenMp.setDefault("PATH", "/nowhere"), "the user's PATH is kept");
    }
}
