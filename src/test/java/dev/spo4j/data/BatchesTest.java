package dev.spo4j.data;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Iterator;
import java.util.List;
import java.util.Random;
import java.util.stream.IntStream;
import org.junit.jupiter.api.Test;

/** Seeded per-epoch shuffles, drop_last = false, and resuming at (epoch, batch). */
class BatchesTest {
    private static final List<Integer> TEN = IntStream.range(0, 10).boxed().toList();

    @Test
    void everyEpochVisitsEveryItemOnceInBatchesWithASmallerLastOne() {
        Batches<Integer> b = new Batches<>(TEN, 3, 1234);
        assertEquals(4, b.batchesPerEpoch());
        for (int epoch = 0; epoch < 5; epoch++) {
            List<Integer> seen = new ArrayList<>();
            List<List<Integer>> batches = b.epoch(epoch);
            assertEquals(List.of(3, 3, 3, 1), batches.stream().map(List::size).toList());
            batches.forEach(seen::addAll);
            int[] order = b.permutation(epoch);
            assertEquals(Arrays.stream(order).boxed().toList(), seen, "batches follow the permutation");
            seen.sort(null);
            assertEquals(TEN, seen);
        }
        assertFalse(Arrays.equals(b.permutation(0), b.permutation(1)), "a new order each epoch");
        assertEquals(1, new Batches<>(TEN, 10, 1).batchesPerEpoch());
        assertEquals(1, new Batches<>(TEN, 64, 1).batchesPerEpoch());
        assertEquals(10, new Batches<>(TEN, 64, 1).batchAt(0, 0).size());
    }

    /** The documented contract: Fisher–Yates over 0..n-1 with new Random(seed + epoch). */
    @Test
    void permutationIsTheDocumentedSeededShuffle() {
        long seed = 77;
        Batches<Integer> b = new Batches<>(TEN, 4, seed);
        for (int epoch = 0; epoch < 3; epoch++) {
            int[] p = IntStream.range(0, 10).toArray();
            Random r = new Random(seed + epoch);
            for (int k = p.length - 1; k > 0; k--) {
                int j = r.nextInt(k + 1);
                int tmp = p[k];
                p[k] = p[j];
                p[j] = tmp;
            }
            assertArrayEquals(p, b.permutation(epoch));
        }
        // a fresh instance with the same seed agrees; another seed does not
        assertEquals(b.epoch(2), new Batches<>(TEN, 4, seed).epoch(2));
        assertFalse(b.epoch(2).equals(new Batches<>(TEN, 4, seed + 1).epoch(2)));
        // the returned permutation is a copy
        b.permutation(0)[0] = -1;
        assertFalse(b.permutation(0)[0] == -1);
    }

    @Test
    void resumingAtEpochAndBatchGivesTheSameBatches() {
        Batches<Integer> b = new Batches<>(TEN, 3, 5);
        List<Batches.Batch<Integer>> straight = new ArrayList<>();
        Iterator<Batches.Batch<Integer>> it = b.from(0, 0);
        for (int step = 0; step < 11; step++) {
            straight.add(it.next());
        }
        assertEquals(0, straight.get(3).epoch());
        assertEquals(3, straight.get(3).index());
        assertEquals(1, straight.get(4).epoch());
        assertEquals(0, straight.get(4).index());

        // a new process: new instance, resume at the 7th batch (epoch 1, batch 2)
        Batches<Integer> again = new Batches<>(TEN, 3, 5);
        Iterator<Batches.Batch<Integer>> resumed = again.from(1, 2);
        for (int step = 6; step < 11; step++) {
            assertEquals(straight.get(step), resumed.next(), "step " + step);
        }
        assertEquals(straight.get(9).items(), again.batchAt(2, 1));
    }

    @Test
    void sequentialKeepsTheDatasetOrder() {
        Batches<Integer> s = Batches.sequential(TEN, 4);
        assertEquals(List.of(List.of(0, 1, 2, 3), List.of(4, 5, 6, 7), List.of(8, 9)), s.epoch(0));
        assertEquals(s.epoch(0), s.epoch(3));
    }

    @Test
    void badArgumentsAreRejected() {
        assertThrows(IllegalArgumentException.class, () -> new Batches<>(List.of(), 3, 1));
        assertThrows(IllegalArgumentException.class, () -> new Batches<>(TEN, 0, 1));
        Batches<Integer> b = new Batches<>(TEN, 3, 1);
        assertThrows(IllegalArgumentException.class, () -> b.batchAt(0, 4));
        assertThrows(IllegalArgumentException.class, () -> b.batchAt(-1, 0));
        assertThrows(IllegalArgumentException.class, () -> b.from(0, 4));
    }
}
