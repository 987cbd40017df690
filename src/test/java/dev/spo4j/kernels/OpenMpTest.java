package dev.spo4j.kernels;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

/** The process-environment default behind OMP_WAIT_POLICY=passive, and the thread setting of LibTorch and OpenBLAS. */
class OpenMpTest {
    @Test
    void setsAnUnsetVariableOnceAndKeepsAnExistingOne() {
        String name = "SPO4J_TEST_" + System.nanoTime();
        assertTrue(OpenMp.setDefault(name, "passive"), "an unset variable is set");
        assertFalse(OpenMp.setDefault(name, "active"), "a set variable is kept");
        assertFalse(OpenMp.setDefault("PATH", "/nowhere"), "the user's PATH is kept");
    }

    @Test
    void setThreadsSizesLibTorchAndItsOpenBlasPool() {
        int torchBefore = org.bytedeco.pytorch.global.torch.get_num_threads();
        try {
            for (int n : new int[] {1, 2}) {
                OpenMp.setThreads(n);
                assertEquals(n, org.bytedeco.pytorch.global.torch.get_num_threads());
                // OpenBLAS's own pool: torch.set_num_threads alone left it at the CPU count
                assertEquals(n, org.bytedeco.openblas.presets.openblas_nolapack.blas_get_num_threads());
            }
        } finally {
            OpenMp.setThreads(torchBefore);
        }
    }
}
