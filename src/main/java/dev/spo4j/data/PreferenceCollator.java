package dev.spo4j.data;

import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * Turns preference pairs into token tensors for one policy (or reference) forward pass over
 * 2B rows.
 *
 * <h2>Token rule</h2>
 * For a pair (x, y_c, y_r), with {@code encode} never adding special tokens:
 * <pre>
 *   prompt part     P = [BOS if add_bos_token] ++ encode(x)
 *   completion part C = encode(y) ++ [EOS if eos_token_id is defined]     (y = y_c or y_r)
 *   row             P ++ C
 * </pre>
 * Prompt and completion are encoded separately, so a token never spans the boundary (as in
 * TRL). Only completion tokens, EOS included, are scored: the row's target at position t is
 * the token at t+1 when t+1 lies in C, else -100. log pi(y|x) is the sum of the scored
 * tokens' log-probs. The first token of a row is never a target, so a row with an empty P
 * cannot score its first completion token; a pair that would be left with no scored token
 * is rejected.
 *
 * <h2>Truncation to {@code maxLength} L</h2>
 * The prompt part is shared by both rows of a pair, so that both completions are scored
 * given the same context:
 * <ol>
 *   <li>If |P| + max(|C_c|, |C_r|) &gt; L, the prompt is cut from the LEFT (its oldest
 *       tokens go first; BOS is kept) until the longer row fits or no prompt text is left.
 *       Without BOS, one prompt token is kept when the prompt has any: the first token of a
 *       row is never scored, so that token costs the completion no scored token and gives
 *       it context.</li>
 *   <li>Then each completion longer than the room left, L - |P|, is cut from the RIGHT (EOS
 *       may go then).</li>
 *   <li>A completion left with no scored token (L too small for BOS plus a token) throws an
 *       {@link IllegalArgumentException} naming the pair's source.</li>
 * </ol>
 * Rows are padded to the longest row of the batch, not to L.
 */
public final class PreferenceCollator {
    private final TextTokenizer tokenizer;
    private final int maxLength;

    /** @param maxLength L, the longest row allowed, at least 1 */
    public PreferenceCollator(TextTokenizer tokenizer, int maxLength) {
        if (tokenizer == null) {
            throw new IllegalArgumentException("tokenizer is null");
        }
        if (maxLength < 1) {
            throw new IllegalArgumentException("maxLength is " + maxLength + " (expected at least 1)");
        }
        this.tokenizer = tokenizer;
        this.maxLength = maxLength;
    }

    /** No length limit. */
    public PreferenceCollator(TextTokenizer tokenizer) {
        this(tokenizer, Integer.MAX_VALUE);
    }

    public int maxLength() {
        return maxLength;
    }

    public TextTokenizer tokenizer() {
        return tokenizer;
    }

    /** Tokenizes and truncates one pair by the token rule. */
    public TokenizedPair tokenize(PreferencePair pair) {
        long[] prompt = tokenizer.encode(pair.prompt());
        if (tokenizer.addBos()) {
            prompt = concat(new long[] {tokenizer.bosId()}, prompt);
        }
        long[] chosen = completion(pair.chosen());
        long[] rejected = completion(pair.rejected());
        int bos = tokenizer.addBos() ? 1 : 0;
        int longest = Math.max(chosen.length, rejected.length);
        boolean truncated = false;

        int over = prompt.length + longest - maxLength;   // long-safe: lengths are ints far below 2^30
        if (over > 0) {
            int text = prompt.length - bos;                // prompt tokens that may go
            int keepAtLeast = bos == 0 && text > 0 ? 1 : 0;
            int cut = Math.min(over, text - keepAtLeast);
            if (cut > 0) {
                long[] kept = new long[prompt.length - cut];
                System.arraycopy(prompt, 0, kept, 0, bos);
                System.arraycopy(prompt, bos + cut, kept, bos, kept.length - bos);
                prompt = kept;
                truncated = true;
            }
        }
        int room = maxLength - prompt.length;
        if (chosen.length > room || rejected.length > room) {
            chosen = Arrays.copyOf(chosen, Math.max(0, Math.min(chosen.length, room)));
            rejected = Arrays.copyOf(rejected, Math.max(0, Math.min(rejected.length, room)));
            truncated = true;
        }
        TokenizedPair t = new TokenizedPair(pair, prompt, chosen, rejected, truncated);
        requireScored(t, true);
        requireScored(t, false);
        return t;
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

    /** Collates already tokenized pairs into CPU tensors. */
    public PreferenceBatch collateTokenized(List<TokenizedPair> pairs) {
        int b = pairs.size();
        if (b == 0) {
            throw new IllegalArgumentException("cannot collate an empty batch");
        }
        int rows = 2 * b;
        int t = 0;
        for (TokenizedPair p : pairs) {
            t = Math.max(t, Math.max(p.chosenLength(), p.rejectedLength()));
        }
        long cells = (long) rows * t;
        if (cells > Integer.MAX_VALUE) {
            throw new IllegalArgumentException("batch of " + rows + " rows x " + t + " tokens is too large");
        }
        long pad = tokenizer.padId();
        long[] ids = new long[(int) cells];
        long[] mask = new long[(int) cells];
        long[] targets = new long[(int) cells];
        float[] counts = new float[rows];
        Arrays.fill(ids, pad);
        Arrays.fill(targets, PreferenceBatch.IGNORE_INDEX);
        long tokenCount = 0;
        for (int i = 0; i < b; i++) {
            TokenizedPair p = pairs.get(i);
            tokenCount += fillRow(p.prompt(), p.chosen(), i, t, ids, mask, targets, counts);
            tokenCount += fillRow(p.prompt(), p.rejected(), b + i, t, ids, mask, targets, counts);
        }

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
            sc = floats(perPair(pairs, p -> p.scoreChosen()));
            sr = floats(perPair(pairs, p -> p.scoreRejected()));
        }
        if (refs) {
            rc = floats(perPair(pairs, p -> p.refChosenLogps()));
            rr = floats(perPair(pairs, p -> p.refRejectedLogps()));
        }
        return new PreferenceBatch(b, longs(ids, rows, t), longs(mask, rows, t), longs(targets, rows, t),
                floats(counts), sc, sr, rc, rr, tokenCount);
    }

    /** Writes one row; returns its length. */
    private static int fillRow(long[] prompt, long[] completion, int row, int t, long[] ids, long[] mask,
                               long[] targets, float[] counts) {
        int base = row * t;
        int len = prompt.length + completion.length;
        System.arraycopy(prompt, 0, ids, base, prompt.length);
        System.arraycopy(completion, 0, ids, base + prompt.length, completion.length);
        Arrays.fill(mask, base, base + len, 1L);
        int scored = 0;
        for (int pos = Math.max(1, prompt.length); pos < len; pos++) {  // pos = t+1, a completion token
            targets[base + pos - 1] = ids[base + pos];
            scored++;
        }
        counts[row] = scored;
        return len;
    }

    private long[] completion(String text) {
        long[] ids = tokenizer.encode(text);
        Long eos = tokenizer.eosId();
        return eos == null ? ids : concat(ids, new long[] {eos});
    }

    private void requireScored(TokenizedPair t, boolean chosenRow) {
        if (t.scoredTokens(chosenRow) < 1) {
            String which = chosenRow ? "chosen" : "rejected";
            int tokens = chosenRow ? t.chosen().length : t.rejected().length;
            String why = tokens == 0
                    ? (t.truncated() ? "maxLength " + maxLength + " leaves it no room after "
                            + t.prompt().length + " prompt token(s)" : "it encodes to no tokens")
                    : "it is the first token of its row (empty prompt and no BOS), so none can be scored";
            throw new IllegalArgumentException(t.pair().source() + ": the " + which + " completion has no "
                    + "scored token: " + why);
        }
    }

    private static double[] perPair(List<TokenizedPair> pairs, java.util.function.Function<PreferencePair, Double> f) {
        double[] v = new double[pairs.size()];
        for (int i = 0; i < v.length; i++) {
            v[i] = f.apply(pairs.get(i).pair());
        }
        return v;
    }

    private static long[] concat(long[] a, long[] b) {
        long[] out = Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, out, a.length, b.length);
        return out;
    }

    private static Tensor longs(long[] v, long... shape) {
        Tensor t = torch.empty(shape, new TensorOptions(ScalarType.Long), null);
        t.data_ptr_long().put(v);
        return t;
    }

    private static Tensor floats(float[] v) {
        Tensor t = torch.empty(new long[] {v.length}, new TensorOptions(ScalarType.Float), null);
        t.data_ptr_float().put(v);
        return t;
    }

    private static Tensor floats(double[] v) {
        float[] f = new float[v.length];
        for (int i = 0; i < v.length; i++) {
            f[i] = (float) v[i];
        }
        return floats(f);
    }
}
