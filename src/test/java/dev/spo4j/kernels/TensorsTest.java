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

    /**
     * The sliced fp32 means of a bf16 tensor equal a float64 mean of the same values to fp32
     * rounding, over more rows than one slice (18M elements: two slices per direction).
     */
    @Test
    void slicedMeansOfBf16MatchFloat64() {
        torch.manual_seed(5);
        Tensor z = torch.randn(new long[] {301, 60001}).mul(new Scalar(4.0)).add(new Scalar(1.5))
                .to(torch.ScalarType.BFloat16);
        assertTrue(z.numel() > Tensors.WIDEN_ELEMENTS, "needs more than one slice");
        Tensor zd = z.to(torch.ScalarType.Double);
        double[] rows = Tensors.toDoubles(Tensors.rowMeansFloat(z));
        double[] rowTruth = Tensors.toDoubles(zd.mean(new long[] {1}, false, new org.bytedeco.pytorch.ScalarTypeOptional()));
        double[] cols = Tensors.toDoubles(Tensors.columnMeansFloat(z));
        double[] colTruth = Tensors.toDoubles(zd.mean(new long[] {0}, false, new org.bytedeco.pytorch.ScalarTypeOptional()));
        assertEquals(301, rows.length);
        assertEquals(60001, cols.length);
        // fp32 sums of 60001 (or 301) terms of size ~4: error well under 1e-5 of the mean's scale
        for (int i = 0; i < rows.length; i++) {
            assertEquals(rowTruth[i], rows[i], 1e-5, "row " + i);
        }
        for (int j = 0; j < cols.length; j++) {
            assertEquals(colTruth[j], cols[j], 1e-5, "column " + j);
        }
        assertEquals(torch.ScalarType.Float, Tensors.rowMeansFloat(z).scalar_type().intern());
    }
}
