package dev.spo4j.data;

/**
 * A preference pair as token ids, after the collator's token rule and truncation (see
 * {@link TokenRule}): {@code prompt} holds BOS (when the tokenizer adds one) and the
 * prompt's tokens, shared by both rows; {@code chosen} and {@code rejected} hold the
 * completion's tokens and EOS (when defined and not truncated away). Each completion has at
 * least one token that the loss scores.
 *
 * <p>Arrays are owned by this record; callers must not modify them.
 *
 * @param pair      the text pair these tokens came from
 * @param prompt    the prompt part: [BOS] + prompt tokens, after truncation
 * @param chosen    the chosen completion's tokens (+ EOS), after truncation
 * @param rejected  the rejected completion's tokens (+ EOS), after truncation
 * @param truncated whether any token of the prompt or a completion was cut to fit the maximum length
 */
public record TokenizedPair(PreferencePair pair, long[] prompt, long[] chosen, long[] rejected, boolean truncated) {

    /** Length of the prompt+chosen row. */
    public int chosenLength() {
        return prompt.length + chosen.length;
    }

    /** Length of the prompt+rejected row. */
    public int rejectedLength() {
        return prompt.length + rejected.length;
    }

    /**
     * How many completion tokens of a row the loss scores: all of them, except that a row
     * with no prompt tokens at all cannot score its first token (nothing precedes it).
     */
    public int scoredTokens(boolean chosenRow) {
        return TokenRule.scoredTokens(prompt.length, chosenRow ? chosen.length : rejected.length);
    }
}
