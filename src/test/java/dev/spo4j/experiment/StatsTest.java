package dev.spo4j.experiment;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

/** The t distribution against closed forms and tabulated quantiles; the paired test by hand. */
class StatsTest {
    @Test
    void tDistributionMatchesClosedFormsAndTables() {
        // df = 1 is the Cauchy distribution: P(|T| > t) = 1 - 2 atan(t) / pi
        for (double t : new double[] {0.1, 1, 3, 30}) {
            assertEquals(1 - 2 * Math.atan(t) / Math.PI, Stats.twoSidedP(t, 1), 1e-12, "t=" + t);
        }
        // df = 2: P(|T| > t) = 1 - t / sqrt(2 + t^2)
        for (double t : new double[] {0.5, 2, 10}) {
            assertEquals(1 - t / Math.sqrt(2 + t * t), Stats.twoSidedP(t, 2), 1e-12, "t=" + t);
        }
        assertEquals(1.0, Stats.twoSidedP(0, 7), 1e-15);
        // tabulated 97.5% quantiles
        assertEquals(12.706, Stats.t975(1), 5e-4);
        assertEquals(2.776, Stats.t975(4), 5e-4);
        assertEquals(2.228, Stats.t975(10), 5e-4);
        assertEquals(2.042, Stats.t975(30), 5e-4);
        assertEquals(1.960, Stats.t975(100000), 1e-3);
    }

    @Test
    void pairedTestByHand() {
        double[] a = {3, 5, 4, 6}, b = {1, 2, 3, 2};
        // differences 2, 3, 1, 4: mean 2.5, sd sqrt(5/3), se sqrt(5/12)
        double[] p = Stats.paired(a, b);
        double se = Math.sqrt(5.0 / 12), t = 2.5 / se;
        assertEquals(2.5, p[0], 1e-12);
        assertEquals(2.5 - Stats.t975(3) * se, p[1], 1e-9);
        assertEquals(2.5 + Stats.t975(3) * se, p[2], 1e-9);
        assertEquals(Stats.twoSidedP(t, 3), p[3], 1e-15);
        assertTrue(p[3] > 0.01 && p[3] < 0.05, "t = 3.87 on 3 df: p between 0.01 and 0.05, got " + p[3]);
        assertEquals(0.0, Stats.paired(new double[] {2, 3}, new double[] {1, 2})[3], "a constant non-zero difference");
        assertThrows(IllegalArgumentException.class, () -> Stats.paired(new double[2], new double[3]));
    }

    @Test
    void intervalOfOneValueIsThePoint() {
        double[] t = Stats.tInterval(new double[] {1.5});
        assertEquals(1.5, t[1]);
        assertEquals(1.5, t[2]);
    }
}
