package dev.spo4j.data;

import dev.spo4j.kernels.Tensors;
import dev.spo4j.kernels.TokenLogProbs;
import java.util.Arrays;
import java.util.List;
import org.bytedeco.pytorch.Tensor;

/**
 * The token rule: how text becomes the rows a model is trained and scored on, written once
 * for preference pairs ({@link PreferenceCollator}), SFT examples and sequence scoring.
 *
 * <h2>Parts</h2>
 * For a prompt x and a completion y, with {@code encode} never adding special tokens:
 * <pre>
 *   prompt part     P = [BOS if add_bos_token] ++ encode(x)
 *   completion part C = encode(y) ++ [EOS if eos_token_id is defined]
 *   row             P ++ C
 * </pre>
 * Prompt and completion are encoded separately, so a token never spans the boundary (as in
 * TRL).
 *
 * <h2>Targets and padding</h2>
 * Only completion tokens, EOS included, are scored: the row's target at position t is the
 * token at t+1 when t+1 lies in C, else {@link TokenLogProbs#DEFAULT_IGNORE_INDEX}. log
 * pi(y|x) is the sum of the scored tokens' log-probs. The first token of a row is never a
 * target, so a row with an empty P cannot score its first completion token. Rows are
 * right-padded with the tokenizer's pad id to the longest row of the batch (the attention
 * mask is 0 there), so positions match an unpadded forward.
 *
 * <h2>Text rendered by a chat template</h2>
 * Conversational data is rendered by the model's chat template first ({@link PreferenceFormats}):
 * the template writes BOS and the end-of-turn tokens itself, so P = encode(prompt text) and C =
 * the ids of encode(prompt text ++ completion text) after P (TRL's split), nothing added.
 * For plain text, EOS is appended only when the completion does not already end with it.
 *
 * <h2>Prompt and completion limits (TRL's max_prompt_length, max_completion_length)</h2>
 * First, when set, the prompt part is cut to its last ({@code keep_end}) or first
 * ({@code keep_start}) max-prompt-length tokens and each completion to its first
 * max-completion-length tokens; then the rule below applies.
 *
 * <h2>Truncation to {@code maxLength} L</h2>
 * The prompt part is shared by all completions of a prompt (both rows of a pair), so that they
 * are scored given the same context:
 * <ol>
 *   <li>If |P| + max |C| &gt; L, the prompt is cut from the LEFT (its oldest tokens go first;
 *       BOS is kept) until the longest row fits or no prompt text is left. Without BOS, one
 *       prompt token is kept when the prompt has any: the first token of a row is never
 *       scored, so that token costs the completion no scored token and gives it context.</li>
 *   <li>Then each completion longer than the room left, L - |P|, is cut from the RIGHT (EOS
 *       may go then).</li>
 * </ol>
 */
public final class TokenRule {
    private TokenRule() {}

    /** P = [BOS if the tokenizer adds one] ++ encode(text). */
    public static long[] prompt(TextTokenizer tok, String text) {
        long[] ids = tok.encode(text);
        return tok.addBos() ? concat(new long[] {tok.bosId()}, ids) : ids;
    }

    /** C = encode(text) ++ [EOS if the tokenizer has one and the text does not already end with it]. */
    public static long[] completion(TextTokenizer tok, String text) {
        long[] ids = tok.encode(text);
        Long eos = tok.eosId();
        boolean endsWithEos = ids.length > 0 && eos != null && ids[ids.length - 1] == eos;
        return eos == null || endsWithEos ? ids : concat(ids, new long[] {eos});
    }

    /** P of text a chat template rendered: encode(text), the template having written BOS (if any). */
    public static long[] templatedPrompt(TextTokenizer tok, String promptText) {
        return tok.encode(promptText);
    }

    /**
     * C of a completion a chat template rendered after {@code promptText}: the ids of
     * encode(prompt + completion) after the prompt's ids (TRL's split of the rendered
     * conversation), or encode(completion) when the joint encoding does not start with the
     * prompt's ids. Nothing is appended: the template wrote the end-of-turn token.
     */
    public static long[] templatedCompletion(TextTokenizer tok, long[] promptIds, String promptText,
                                             String completionText) {
        long[] full = tok.encode(promptText + completionText);
        if (full.length >= promptIds.length && Arrays.equals(full, 0, promptIds.length, promptIds, 0, promptIds.length)) {
            return Arrays.copyOfRange(full, promptIds.length, full.length);
        }
        return tok.encode(completionText);
    }

    /** Which end of a too-long prompt is kept (TRL's truncation_mode). */
    public enum PromptTruncation {
        /** The last tokens (TRL's default): the end of the prompt, with the chat header, stays. */
        KEEP_END,
        /** The first tokens. */
        KEEP_START;

        /** keep_end or keep_start (TRL's spelling). */
        public static PromptTruncation parse(String s) {
            return switch (s) {
                case "keep_end" -> KEEP_END;
                case "keep_start" -> KEEP_START;
                default -> throw new IllegalArgumentException("truncation mode '" + s + "' (expected keep_end or keep_start)");
            };
        }
    }

    /** The prompt cut to {@code max} tokens by {@code mode}; unchanged when {@code max <= 0} or it fits. */
    public static long[] truncatePrompt(long[] prompt, int max, PromptTruncation mode) {
        if (max <= 0 || prompt.length <= max) {
            return prompt;
        }
        return mode == PromptTruncation.KEEP_END ? Arrays.copyOfRange(prompt, prompt.length - max, prompt.length)
                : Arrays.copyOf(prompt, max);
    }

    /** The completion's first {@code max} tokens; unchanged when {@code max <= 0} or it fits. */
    public static long[] truncateCompletion(long[] completion, int max) {
        return max <= 0 || completion.length <= max ? completion : Arrays.copyOf(completion, max);
    }

    /** A prompt part and its completion parts after truncation; {@code truncated} when any token was cut. */
    public record Truncated(long[] prompt, long[][] completions, boolean truncated) {}

    /**
     * Truncates a prompt part and its completions to rows of at most {@code maxLength} tokens by
     * the rule above; {@code bos} says whether the prompt part starts with a BOS to keep.
     */
    public static Truncated truncate(long[] prompt, boolean bos, int maxLength, long[]... completions) {
        int keepBos = bos ? 1 : 0;
        int longest = 0;
        for (long[] c : completions) {
            longest = Math.max(longest, c.length);
        }
        boolean truncated = false;
        int over = prompt.length + longest - maxLength;  // long-safe: lengths are ints far below 2^30
        if (over > 0) {
            int text = prompt.length - keepBos;            // prompt tokens that may go
            int keepAtLeast = keepBos == 0 && text > 0 ? 1 : 0;
            int cut = Math.min(over, text - keepAtLeast);
            if (cut > 0) {
                long[] kept = new long[prompt.length - cut];
                System.arraycopy(prompt, 0, kept, 0, keepBos);
                System.arraycopy(prompt, keepBos + cut, kept, keepBos, kept.length - keepBos);
                prompt = kept;
                truncated = true;
            }
        }
        int room = maxLength - prompt.length;
        long[][] out = new long[completions.length][];
        for (int i = 0; i < completions.length; i++) {
            long[] c = completions[i];
            out[i] = c.length > room ? Arrays.copyOf(c, Math.max(0, room)) : c;
            truncated |= c.length > room;
        }
        return new Truncated(prompt, out, truncated);
    }

    /**
     * How many tokens of a completion the loss scores: all of them, except that a row with no
     * prompt tokens at all cannot score its first token (nothing precedes it).
     */
    public static int scoredTokens(int promptLength, int completionLength) {
        return promptLength > 0 ? completionLength : Math.max(0, completionLength - 1);
    }

    /**
     * Rows of a batch as CPU tensors.
     *
     * @param ids        {@code [rows, T]} int64, right-padded with the pad id
     * @param mask       {@code [rows, T]} int64, 1 on real tokens, 0 on padding
     * @param targets    {@code [rows, T]} int64: the next token where it is a completion token, else -100
     * @param counts     {@code [rows]} fp32: the scored tokens of each row
     * @param tokenCount real (non-padding) tokens in the batch
     */
    public record Rows(Tensor ids, Tensor mask, Tensor targets, Tensor counts, long tokenCount) {
        /** T, the padded row length. */
        public int length() {
            return (int) ids.size(1);
        }
    }

    /** Builds rows {@code prompts[i] ++ completions[i]} by the rule above; T is at least 1. */
    public static Rows rows(List<long[]> prompts, List<long[]> completions, long padId) {
        int n = prompts.size();
        if (n == 0 || completions.size() != n) {
            throw new IllegalArgumentException(n + " prompts and " + completions.size()
                    + " completions (expected the same number, at least 1)");
        }
        int t = 1;
        for (int i = 0; i < n; i++) {
            t = Math.max(t, prompts.get(i).length + completions.get(i).length);
        }
        long cells = (long) n * t;
        if (cells > Integer.MAX_VALUE) {
            throw new IllegalArgumentException("batch of " + n + " rows x " + t + " tokens is too large");
        }
        long[] ids = new long[(int) cells], mask = new long[(int) cells], targets = new long[(int) cells];
        float[] counts = new float[n];
        Arrays.fill(ids, padId);
        Arrays.fill(targets, TokenLogProbs.DEFAULT_IGNORE_INDEX);
        long tokenCount = 0;
        for (int r = 0; r < n; r++) {
            long[] p = prompts.get(r), c = completions.get(r);
            int base = r * t, len = p.length + c.length;
            System.arraycopy(p, 0, ids, base, p.length);
            System.arraycopy(c, 0, ids, base + p.length, c.length);
            Arrays.fill(mask, base, base + len, 1L);
            int scored = 0;
            for (int pos = Math.max(1, p.length); pos < len; pos++) {  // pos = t+1, a completion token
                targets[base + pos - 1] = ids[base + pos];
                scored++;
            }
            counts[r] = scored;
            tokenCount += len;
        }
        return new Rows(Tensors.longs(ids, n, t), Tensors.longs(mask, n, t), Tensors.longs(targets, n, t),
                Tensors.floats(counts), tokenCount);
    }

    private static long[] concat(long[] a, long[] b) {
        long[] out = Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, out, a.length, b.length);
        return out;
    }
}
