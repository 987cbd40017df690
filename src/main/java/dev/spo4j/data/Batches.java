package dev.spo4j.data;

import java.util.ArrayList;
import java.util.Collections;
import java.util.Iterator;
import java.util.List;
import java.util.NoSuchElementException;
import java.util.Random;

/**
 * Deterministic, resumable batching over a dataset (of {@link PreferencePair}s,
 * {@link TokenizedPair}s, or anything else).
 *
 * <p>Epoch e visits the items in the order of {@link #permutation(int) permutation(e)}: a
 * Fisher–Yates shuffle of 0..n-1 driven by {@code new java.util.Random(seed + e)} (the
 * identity when shuffling is off). Batch i of epoch e holds positions
 * {@code [i*B, min((i+1)*B, n))} of that order, so there are ceil(n/B) batches per epoch and
 * the last may be smaller (drop_last = false). Everything is a pure function of
 * (items, B, seed, e, i): a trainer resumes at (epoch, batchIndex) with {@link #from}, and
 * gets exactly the batches it would have had without the interruption.
 *
 * <p>Not thread-safe (the last epoch's permutation is cached).
 */
public final class Batches<T> {
    /**
     * One batch with its position, so a trainer can checkpoint where it is.
     *
     * @param epoch the epoch, from 0
     * @param index the batch's index in its epoch, from 0
     * @param items the batch's items in the epoch's order (unmodifiable)
     */
    public record Batch<T>(int epoch, int index, List<T> items) {}

    private final List<T> items;
    private final int batchSize;
    private final long seed;
    private final boolean shuffle;
    private int cachedEpoch = -1;
    private int[] cachedPermutation;

    /** Shuffled batches. */
    public Batches(List<T> items, int batchSize, long seed) {
        this(items, batchSize, seed, true);
    }

    /** @param shuffle false keeps the dataset's order in every epoch (the seed is then unused) */
    public Batches(List<T> items, int batchSize, long seed, boolean shuffle) {
        if (items == null || items.isEmpty()) {
            throw new IllegalArgumentException("no items to batch");
        }
        if (batchSize < 1) {
            throw new IllegalArgumentException("batchSize is " + batchSize + " (expected at least 1)");
        }
        this.items = List.copyOf(items);
        this.batchSize = batchSize;
        this.seed = seed;
        this.shuffle = shuffle;
    }

    /** Batches in the dataset's order (for scoring, e.g. the logps command). */
    public static <T> Batches<T> sequential(List<T> items, int batchSize) {
        return new Batches<>(items, batchSize, 0L, false);
    }

    /** n, the number of items. */
    public int size() {
        return items.size();
    }

    /** B, the items per batch (the last batch of an epoch may have fewer). */
    public int batchSize() {
        return batchSize;
    }

    /** The shuffle seed: epoch e is shuffled by {@code new Random(seed + e)}; 0 for {@link #sequential}. */
    public long seed() {
        return seed;
    }

    /** ceil(n / B). */
    public int batchesPerEpoch() {
        return (items.size() + batchSize - 1) / batchSize;
    }

    /** The order of epoch {@code epoch}: a fresh copy of item indices. */
    public int[] permutation(int epoch) {
        return orderOf(epoch).clone();
    }

    /** Batch {@code index} of epoch {@code epoch}. */
    public List<T> batchAt(int epoch, int index) {
        if (index < 0 || index >= batchesPerEpoch()) {
            throw new IllegalArgumentException("batch index " + index + " is outside 0.." + (batchesPerEpoch() - 1));
        }
        int[] order = orderOf(epoch);
        int from = index * batchSize;
        int to = Math.min(items.size(), from + batchSize);
        List<T> batch = new ArrayList<>(to - from);
        for (int k = from; k < to; k++) {
            batch.add(items.get(order[k]));
        }
        return Collections.unmodifiableList(batch);
    }

    /**
     * Batches from (epoch, index) on, running through the following epochs without end; the
     * caller stops (by steps or epochs). {@code from(0, 0)} is a fresh run.
     */
    public Iterator<Batch<T>> from(int epoch, int index) {
        if (epoch < 0) {
            throw new IllegalArgumentException("epoch is " + epoch + " (expected at least 0)");
        }
        if (index < 0 || index >= batchesPerEpoch()) {
            throw new IllegalArgumentException("batch index " + index + " is outside 0.." + (batchesPerEpoch() - 1));
        }
        return new Iterator<>() {
            private int e = epoch;
            private int i = index;

            @Override
            public boolean hasNext() {
                return e >= 0;  // false only after the epoch counter overflows
            }

            @Override
            public Batch<T> next() {
                if (!hasNext()) {
                    throw new NoSuchElementException();
                }
                Batch<T> b = new Batch<>(e, i, batchAt(e, i));
                if (++i == batchesPerEpoch()) {
                    i = 0;
                    e++;
                }
                return b;
            }
        };
    }

    /** The batches of one epoch, in order. */
    public List<List<T>> epoch(int epoch) {
        List<List<T>> out = new ArrayList<>(batchesPerEpoch());
        for (int i = 0; i < batchesPerEpoch(); i++) {
            out.add(batchAt(epoch, i));
        }
        return out;
    }

    private int[] orderOf(int epoch) {
        if (epoch < 0) {
            throw new IllegalArgumentException("epoch is " + epoch + " (expected at least 0)");
        }
        if (epoch != cachedEpoch) {
            int n = items.size();
            int[] p = new int[n];
            for (int k = 0; k < n; k++) {
                p[k] = k;
            }
            if (shuffle) {
                Random r = new Random(seed + epoch);
                for (int k = n - 1; k > 0; k--) {
                    int j = r.nextInt(k + 1);
                    int tmp = p[k];
                    p[k] = p[j];
                    p[j] = tmp;
                }
            }
            cachedPermutation = p;
            cachedEpoch = epoch;
        }
        return cachedPermutation;
    }
}
