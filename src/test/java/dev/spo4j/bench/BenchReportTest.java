package dev.spo4j.bench;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/** The LM head table pairs each round's call with the same round's materialised call. */
class BenchReportTest {

    private static BenchReport.Row row(String provider, double ms, double peak, int round) {
        return new BenchReport.Row("dev.spo4j.bench.LmHeadLogProbsBench.run",
                Map.of("shape", "8x16x4", "dtype", "fp32", "provider", provider, "threads", "2", "chunkMb", "256"),
                ms, "ms/op", peak, round);
    }

    private static String line(String table, String provider) {
        return table.lines().filter(l -> l.contains("| " + provider + " |")).findFirst().orElseThrow();
    }

    @Test
    void ratiosArePerRoundThenMedian() {
        // round 1 runs slow for everyone (drift): per-round ratios 1.10, 1.20, 1.00, not 150 / 100
        List<BenchReport.Row> rows = List.of(
                row("fusedHead", 110, 50, 0), row("materialised", 100, 400, 0),
                row("fusedHead", 240, 60, 1), row("materialised", 200, 400, 1),
                row("fusedHead", 100, 55, 2), row("materialised", 100, 380, 2));
        StringBuilder md = new StringBuilder();
        BenchReport.headTable(md, rows);
        String fused = line(md.toString(), "fusedHead");
        assertTrue(fused.contains("| 3 | 110 | 1.10x [1.00-1.20] | 60 | 0.15x |"), fused);
        assertTrue(line(md.toString(), "materialised").contains("| 1.00x [1.00-1.00] |"));
    }

    @Test
    void aPointWithoutItsRoundsMaterialisedUsesTheMedian() {
        List<BenchReport.Row> rows = List.of(
                row("materialised", 100, 400, 0), row("materialised", 120, 400, 1),
                row("composite", 165, 1000, 2));
        StringBuilder md = new StringBuilder();
        BenchReport.headTable(md, rows);
        String composite = line(md.toString(), "composite");
        assertTrue(composite.contains("| 1 | 165 | 1.50x | 1000 | 2.50x |"), composite);
        assertEquals(110.0, BenchReport.median(List.of(120.0, 100.0)));
    }
}
