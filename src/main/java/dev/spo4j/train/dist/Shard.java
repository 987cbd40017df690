package dev.spo4j.train.dist;

import java.util.List;

/**
 * This rank's part of one global batch. A global batch is {@code perRank x world} items of
 * the same seeded order on every rank, and rank r takes positions {@code [r*perRank,
 * (r+1)*perRank)} of it, so a global batch covers the same items whatever the world size.
 * The epoch's last global batch may be short, and a rank's slice then short or empty.
 *
 * @param items  this rank's items (possibly empty)
 * @param share  this slice's size relative to an even split: {@code |items| x world / |global|};
 *               1 when every rank has perRank items. Scaling this rank's gradient by it makes
 *               the average over ranks the global batch's mean.
 * @param weight {@code |items| / |global|}: this slice's weight in the global batch's means
 */
public record Shard<T>(List<T> items, double share, double weight) {
    /** Rank {@code rank}'s slice of {@code global} in a job of {@code world} ranks taking {@code perRank} each. */
    public static <T> Shard<T> of(List<T> global, int rank, int world, int perRank) {
        List<T> mine = global.subList(Math.min(global.size(), rank * perRank),
                Math.min(global.size(), (rank + 1) * perRank));
        return new Shard<>(mine, mine.size() * (double) world / global.size(), mine.size() / (double) global.size());
    }

    /** Whether this rank has nothing in this global batch. */
    public boolean isEmpty() {
        return items.isEmpty();
    }
}
