package dev.spo4j.data;

import dev.spo4j.kernels.Tensors;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.bytedeco.pytorch.Tensor;

/**
 * Turns preference pairs into token tensors for one policy (or reference) forward pass over
 * 2B rows, by the {@link TokenRule token rule}: the prompt part is shared by both rows of a
 * pair, truncation cuts the prompt from the left first, then each completion from the right,
 * and a pair that would be left with a completion without a scored token (L too small for
 * BOS plus a token, or an empty prompt without BOS and a one-token completion) is rejected
 * with an {@link IllegalArgumentException} naming the pair's source and the limits; so is a pair whose
 * completions differ but become identical after truncation (it would train at zero margin). Rows are padded to the
 * longest row of the batch, not to L.
 *
 * <p>Given the model's vocabulary size V, every token id of a pair (prompt and both
 * completions, after truncation) must lie in {@code [0, V)}: a pair with one outside is
 * rejected when it is tokenized, naming the pair, the part, the position and the id (a
 * tokenizer that does not match the model). The targets of every batch this collator makes
 * are then known to be valid, which lets the loss kernels skip their own check
 * ({@code PreferenceObjective.Inputs.withTargetsChecked}).
 */
public final class PreferenceCollator {
    private final TextTokenizer tokenizer;
    private final int maxLength;
    private final long vocabSize;
    private Limits limits = Limits.NONE;
    /** The model's max_position_embeddings, or 0 when rows are not checked against it. */
    private int maxPositions;

    /**
     * How pairs become tokens beyond maxLength: {@code templated} when the texts were rendered
     * by a chat template (see {@link TokenRule}); TRL's prompt and completion limits (0: none).
     */
    public record Limits(boolean templated, int maxPromptLength, int maxCompletionLength,
                         TokenRule.PromptTruncation mode) {
        public static final Limits NONE = new Limits(false, 0, 0, TokenRule.PromptTruncation.KEEP_END);

        public Limits {
            if (maxPromptLength < 0 || maxCompletionLength < 0 || mode == null) {
                throw new IllegalArgumentException("max prompt length " + maxPromptLength + ", max completion length "
                        + maxCompletionLength + " (expected >= 0, 0 = no limit), mode " + mode);
            }
        }
    }

    /** Sets the limits and the templated flag; returns this collator. */
    public PreferenceCollator withLimits(Limits l) {
        this.limits = l;
        return this;
    }

    /**
     * Checks every row against the model's context: a pair whose longer row (after truncation)
     * is longer than {@code maxPositionEmbeddings} is rejected when tokenized, naming the pair.
     * Returns this collator.
     */
    public PreferenceCollator withMaxPositions(int maxPositionEmbeddings) {
        if (maxPositionEmbeddings < 1) {
            throw new IllegalArgumentException("max_position_embeddings is " + maxPositionEmbeddings + " (expected >= 1)");
        }
        this.maxPositions = maxPositionEmbeddings;
        return this;
    }

    /** The limits set by {@link #withLimits}. */
    public Limits limits() {
        return limits;
    }

    /** @param maxLength L, the longest row allowed, at least 1 */
    public PreferenceCollator(TextTokenizer tokenizer, int maxLength) {
        this(tokenizer, maxLength, 0, false);
    }

    /**
     * @param maxLength L, the longest row allowed, at least 1
     * @param vocabSize the model's V, at least 1: every token id must lie in [0, V)
     */
    public PreferenceCollator(TextTokenizer tokenizer, int maxLength, long vocabSize) {
        this(tokenizer, maxLength, vocabSize, true);
    }

    private PreferenceCollator(TextTokenizer tokenizer, int maxLength, long vocabSize, boolean checkVocab) {
        if (tokenizer == null) {
            throw new IllegalArgumentException("tokenizer is null");
        }
        if (maxLength < 1) {
            throw new IllegalArgumentException("maxLength is " + maxLength + " (expected at least 1)");
        }
        if (checkVocab && vocabSize < 1) {
            throw new IllegalArgumentException("vocabSize is " + vocabSize + " (expected at least 1)");
        }
        this.tokenizer = tokenizer;
        this.maxLength = maxLength;
        this.vocabSize = vocabSize;
    }

    /** No length limit. */
    public PreferenceCollator(TextTokenizer tokenizer) {
        this(tokenizer, Integer.MAX_VALUE);
    }

    /** L, the longest row allowed. */
    public int maxLength() {
        return maxLength;
    }

    /** The tokenizer the rows are made with. */
    public TextTokenizer tokenizer() {
        return tokenizer;
    }

    /** The vocabulary size every token id is checked against, or 0 when ids are not checked. */
    public long vocabSize() {
        return vocabSize;
    }

    /** Tokenizes and truncates one pair by the token rule. */
    public TokenizedPair tokenize(PreferencePair pair) {
        long[] prompt, chosen, rejected;
        if (limits.templated()) {
            prompt = TokenRule.templatedPrompt(tokenizer, pair.prompt());
            chosen = TokenRule.templatedCompletion(tokenizer, prompt, pair.prompt(), pair.chosen());
            rejected = TokenRule.templatedCompletion(tokenizer, prompt, pair.prompt(), pair.rejected());
        } else {
            prompt = TokenRule.prompt(tokenizer, pair.prompt());
            chosen = TokenRule.completion(tokenizer, pair.chosen());
            rejected = TokenRule.completion(tokenizer, pair.rejected());
        }
        long[] p0 = prompt, c0 = chosen, r0 = rejected;
        prompt = TokenRule.truncatePrompt(prompt, limits.maxPromptLength(), limits.mode());
        chosen = TokenRule.truncateCompletion(chosen, limits.maxCompletionLength());
        rejected = TokenRule.truncateCompletion(rejected, limits.maxCompletionLength());
        boolean cut = prompt != p0 || chosen != c0 || rejected != r0;
        // a BOS that starts the prompt (added, or written by the template) survives the maxLength cut
        boolean bos = prompt.length > 0 && tokenizer.bosId() != null && prompt[0] == tokenizer.bosId();
        TokenRule.Truncated t = TokenRule.truncate(prompt, bos, maxLength, chosen, rejected);
        TokenizedPair p = new TokenizedPair(pair, t.prompt(), t.completions()[0], t.completions()[1], t.truncated() || cut);
        requireScored(p, true);
        requireScored(p, false);
        if (Arrays.equals(p.chosen(), p.rejected()) && !Arrays.equals(c0, r0)) {
            throw new IllegalArgumentException(pair.source() + ": the chosen and rejected completions differ, but "
                    + "not within " + limitsText() + ": after truncation both are the same " + p.chosen().length
                    + " token(s), so the pair would train at zero margin (raise the limits, or drop the pair)");
        }
        int row = p.prompt().length + Math.max(p.chosen().length, p.rejected().length);
        if (maxPositions > 0 && row > maxPositions) {
            throw new IllegalArgumentException(pair.source() + ": a row of " + row + " tokens (" + p.prompt().length
                    + " prompt + " + Math.max(p.chosen().length, p.rejected().length) + " completion, within "
                    + limitsText() + ") is longer than the model's max_position_embeddings " + maxPositions
                    + " (give --max-length " + maxPositions + " or less)");
        }
        if (vocabSize > 0) {
            requireInVocabulary(p, "prompt", p.prompt());
            requireInVocabulary(p, "chosen completion", p.chosen());
            requireInVocabulary(p, "rejected completion", p.rejected());
        }
        return p;
    }

    /** Tokenizes every pair (for instance once, up front), failing on the first unusable one. */
    public List<TokenizedPair> tokenizeAll(List<PreferencePair> pairs) {
        List<TokenizedPair> out = new ArrayList<>(pairs.size());
        for (PreferencePair p : pairs) {
            out.add(tokenize(p));
        }
        return out;
    }

    /** Tokenizes and collates a batch. */
    public PreferenceBatch collate(List<PreferencePair> pairs) {
        return collateTokenized(tokenizeAll(pairs));
    }

    /** Collates already tokenized pairs into CPU tensors: chosen rows 0..B-1, rejected rows B..2B-1. */
    public PreferenceBatch collateTokenized(List<TokenizedPair> pairs) {
        int b = pairs.size();
        if (b == 0) {
            throw new IllegalArgumentException("cannot collate an empty batch");
        }
        List<long[]> prompts = new ArrayList<>(2 * b), completions = new ArrayList<>(2 * b);
        for (TokenizedPair p : pairs) {
            prompts.add(p.prompt());
            completions.add(p.chosen());
        }
        for (TokenizedPair p : pairs) {
            prompts.add(p.prompt());
            completions.add(p.rejected());
        }
        TokenRule.Rows rows = TokenRule.rows(prompts, completions, tokenizer.padId());
        boolean scores = true;
        boolean refs = true;
        for (TokenizedPair p : pairs) {
            scores &= p.pair().hasScores();
            refs &= p.pair().hasReferenceLogps();
        }
        Tensor sc = null;
        Tensor sr = null;
        Tensor rc = null;
        Tensor rr = null;
        if (scores) {
            sc = Tensors.floats(perPair(pairs, p -> p.scoreChosen()));
            sr = Tensors.floats(perPair(pairs, p -> p.scoreRejected()));
        }
        if (refs) {
            rc = Tensors.floats(perPair(pairs, p -> p.refChosenLogps()));
            rr = Tensors.floats(perPair(pairs, p -> p.refRejectedLogps()));
        }
        return new PreferenceBatch(b, rows.ids(), rows.mask(), rows.targets(), rows.counts(), sc, sr, rc, rr,
                rows.tokenCount());
    }

    private void requireScored(TokenizedPair t, boolean chosenRow) {
        if (t.scoredTokens(chosenRow) < 1) {
            String which = chosenRow ? "chosen" : "rejected";
            int tokens = chosenRow ? t.chosen().length : t.rejected().length;
            String why = tokens == 0
                    ? (t.truncated() ? limitsText() + " leave it no room after "
                            + t.prompt().length + " prompt token(s)" : "it encodes to no tokens")
                    : "it is the first token of its row (empty prompt and no BOS), so none can be scored";
            throw new IllegalArgumentException(t.pair().source() + ": the " + which + " completion has no "
                    + "scored token: " + why);
        }
    }

    /** The limits in words, for messages: max length, and the prompt and completion limits when set. */
    private String limitsText() {
        StringBuilder b = new StringBuilder("max length ").append(maxLength == Integer.MAX_VALUE ? "none" : maxLength);
        if (limits.maxPromptLength() > 0) {
            b.append(", max prompt length ").append(limits.maxPromptLength()).append(" (")
                    .append(limits.mode().name().toLowerCase(java.util.Locale.ROOT)).append(')');
        }
        if (limits.maxCompletionLength() > 0) {
            b.append(", max completion length ").append(limits.maxCompletionLength());
        }
        return b.toString();
    }

    private void requireInVocabulary(TokenizedPair t, String part, long[] ids) {
        for (int i = 0; i < ids.length; i++) {
            if (ids[i] < 0 || ids[i] >= vocabSize) {
                throw new IllegalArgumentException(t.pair().source() + ": token id " + ids[i] + " of the " + part
                        + " (position " + i + ") is outside the model's vocabulary [0, " + vocabSize
                        + "): the tokenizer does not match the model");
            }
        }
    }

    private static double[] perPair(List<TokenizedPair> pairs, java.util.function.Function<PreferencePair, Double> f) {
        double[] v = new double[pairs.size()];
        for (int i = 0; i < v.length; i++) {
            v[i] = f.apply(pairs.get(i).pair());
        }
        return v;
    }
}
