package dev.spo4j.kernels;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;

/** {@link Tensors#scoped}: the body's temporaries are released on return, its result lives on in the caller's scope. */
class TensorsTest {
    @Test
    void scopedReleasesTemporariesAndHandsTheResultToTheEnclosingScope() {
        Tensor[] temporary = new Tensor[1];
        Tensor result;
        try (PointerScope outer = new PointerScope()) {
            Tensor x = torch.ones(4);
            result = Tensors.scoped(() -> {
                temporary[0] = x.mul(new Scalar(2.0));
                return temporary[0].add(new Scalar(1.0));
            });
            assertTrue(temporary[0].isNull(), "the body's temporary was released when scoped returned");
            assertFalse(result.isNull());
            assertEquals(12.0, result.sum().item_double(), 0.0);  // 4 x (2 + 1), readable after the body's scope closed
        }
        assertTrue(result.isNull(), "the result belonged to the enclosing scope and went with it");
    }

    @Test
    void withoutAnEnclosingScopeTheResultStaysAlive() {
        Tensor result = Tensors.scoped(() -> torch.ones(3).mul(new Scalar(3.0)));
        System.gc();
        assertFalse(result.isNull());
        assertEquals(9.0, result.sum().item_double(), 0.0);
    }
}
