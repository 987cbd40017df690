package dev.spo4j.data;

import org.bytedeco.pytorch.Tensor;

/**
 * One collated batch of B preference pairs as CPU tensors (see {@link TokenRule}
 * for the token rule). Rows {@code 0..B-1} are prompt+chosen and rows {@code B..2B-1} are
 * prompt+rejected, pair i in row i and row B+i; T is the longest row of this batch.
 *
 * @param pairs            B
 * @param inputIds         {@code [2B, T]} int64, right-padded with the tokenizer's pad id
 * @param attentionMask    {@code [2B, T]} int64, 1 on real tokens, 0 on padding
 * @param targets          {@code [2B, T]} int64: {@code targets[r][t] = inputIds[r][t+1]} when
 *                         position t+1 holds a completion token, else
 *                         {@link dev.spo4j.kernels.TokenLogProbs#DEFAULT_IGNORE_INDEX} (prompt, padding,
 *                         and always the last column): the next-token targets whose log-probs
 *                         summed per row give log pi(completion | prompt)
 * @param completionTokens {@code [2B]} float32: the number of targets that are not -100 per row
 * @param scoreChosen      {@code [B]} float32, or null unless every pair has scores
 * @param scoreRejected    {@code [B]} float32, or null unless every pair has scores
 * @param refChosen        {@code [B]} float32 precomputed reference log-probs, or null unless every pair has them
 * @param refRejected      {@code [B]} float32, or null like refChosen
 * @param tokenCount       real (non-padding) tokens in the batch
 */
public record PreferenceBatch(int pairs, Tensor inputIds, Tensor attentionMask, Tensor targets,
                              Tensor completionTokens, Tensor scoreChosen, Tensor scoreRejected,
                              Tensor refChosen, Tensor refRejected, long tokenCount) implements AutoCloseable {

    /** 2B. */
    public int rows() {
        return 2 * pairs;
    }

    /** T, the padded row length. */
    public int length() {
        return (int) inputIds.size(1);
    }

    /** Whether the batch carries reward scores (only when every pair has them). */
    public boolean hasScores() {
        return scoreChosen != null;
    }

    /** Whether the batch carries precomputed reference log-probs (only when every pair has them). */
    public boolean hasReferenceLogps() {
        return refChosen != null;
    }

    /** Frees the native memory of every tensor of the batch. */
    @Override
    public void close() {
        for (Tensor t : new Tensor[] {inputIds, attentionMask, targets, completionTokens,
                scoreChosen, scoreRejected, refChosen, refRejected}) {
            if (t != null && !t.isNull()) {
                t.close();
            }
        }
    }
}
