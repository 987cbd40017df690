package dev.spo4j.data;

import static dev.spo4j.data.TextTokenizerTest.id;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.spo4j.kernels.Tensors;
import dev.spo4j.kernels.TokenLogProbs;
import dev.spo4j.synthetic.SyntheticPreferences;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The token rule, targets and masks by hand with the synthetic tokenizer; truncation; optional tensors. */
class PreferenceCollatorTest {
    private static final long X = TokenLogProbs.DEFAULT_IGNORE_INDEX;
    private static final long BOS = 1;
    private static final long EOS = 2;
    private static final long PAD = 0;

    private static TextTokenizer tok;

    @BeforeAll
    static void loadTokenizer() {
        tok = SyntheticPreferences.loadTokenizer();
    }

    @AfterAll
    static void closeTokenizer() {
        tok.close();
    }

    private static long[] ids(String text) {
        return Arrays.stream(text.split(" ")).mapToLong(TextTokenizerTest::id).toArray();
    }

    private static long[] cat(long[]... parts) {
        return Arrays.stream(parts).flatMapToLong(Arrays::stream).toArray();
    }

    private static long[] row(int t, long fill, long[] values) {
        long[] r = new long[t];
        Arrays.fill(r, fill);
        System.arraycopy(values, 0, r, 0, values.length);
        return r;
    }

    /** Expected targets of a row: -100 up to the prompt's end, then the next tokens, then -100. */
    private static long[] targets(int t, long[] prompt, long[] completion) {
        long[] r = new long[t];
        Arrays.fill(r, X);
        long[] all = cat(prompt, completion);
        for (int pos = Math.max(1, prompt.length); pos < all.length; pos++) {
            r[pos - 1] = all[pos];
        }
        return r;
    }

    private static long[] shape(Tensor t) {
        long[] s = new long[(int) t.dim()];
        for (int i = 0; i < s.length; i++) {
            s[i] = t.size(i);
        }
        return s;
    }

    @Test
    void handMadeBatchHasExactIdsMaskTargetsAndCounts() {
        PreferencePair first = PreferencePair.of("describe the dog .", "the dog is good .", "bad !");
        PreferencePair second = PreferencePair.of("", "calm .", "a cat");
        PreferenceCollator collator = new PreferenceCollator(tok, 64);
        try (PreferenceBatch b = collator.collate(List.of(first, second))) {
            long[] p1 = cat(new long[] {BOS}, ids("describe the dog ."));
            long[] c1 = cat(ids("the dog is good ."), new long[] {EOS});
            long[] r1 = cat(ids("bad !"), new long[] {EOS});
            long[] p2 = {BOS};
            long[] c2 = cat(ids("calm ."), new long[] {EOS});
            long[] r2 = cat(ids("a cat"), new long[] {EOS});
            int t = 11;  // the longest row (prompt 5 + chosen 6), not maxLength

            assertEquals(2, b.pairs());
            assertEquals(4, b.rows());
            assertEquals(t, b.length());
            assertArrayEquals(new long[] {4, t}, shape(b.inputIds()));
            assertArrayEquals(new long[] {4, t}, shape(b.attentionMask()));
            assertArrayEquals(new long[] {4, t}, shape(b.targets()));
            assertArrayEquals(new long[] {4}, shape(b.completionTokens()));
            assertSame(ScalarType.Long, b.inputIds().scalar_type().intern());
            assertSame(ScalarType.Long, b.attentionMask().scalar_type().intern());
            assertSame(ScalarType.Long, b.targets().scalar_type().intern());
            assertSame(ScalarType.Float, b.completionTokens().scalar_type().intern());

            // rows 0..B-1 prompt+chosen, rows B..2B-1 prompt+rejected
            long[] expectedIds = cat(
                    row(t, PAD, cat(p1, c1)),
                    row(t, PAD, cat(p2, c2)),
                    row(t, PAD, cat(p1, r1)),
                    row(t, PAD, cat(p2, r2)));
            long[] expectedMask = cat(
                    row(t, 0, row(11, 1, new long[0])),
                    row(t, 0, row(4, 1, new long[0])),
                    row(t, 0, row(8, 1, new long[0])),
                    row(t, 0, row(4, 1, new long[0])));
            long[] expectedTargets = cat(
                    targets(t, p1, c1), targets(t, p2, c2), targets(t, p1, r1), targets(t, p2, r2));
            assertArrayEquals(expectedIds, Tensors.toLongs(b.inputIds()));
            assertArrayEquals(expectedMask, Tensors.toLongs(b.attentionMask()));
            assertArrayEquals(expectedTargets, Tensors.toLongs(b.targets()));

            // spelled out for the first row: prompt positions -100, shifted completion, EOS, last column -100
            long[] row0 = Arrays.copyOfRange(Tensors.toLongs(b.targets()), 0, t);
            assertArrayEquals(new long[] {X, X, X, X, id("the"), id("dog"), id("is"), id("good"), id("."), EOS, X},
                    row0);
            long[] row3 = Arrays.copyOfRange(Tensors.toLongs(b.targets()), 3 * t, 4 * t);
            assertArrayEquals(new long[] {id("a"), id("cat"), EOS, X, X, X, X, X, X, X, X}, row3);

            assertArrayEquals(new float[] {6, 3, 3, 3}, Tensors.toFloats(b.completionTokens()));
            assertEquals(11 + 4 + 8 + 4, b.tokenCount());
            assertNull(b.scoreChosen());
            assertNull(b.scoreRejected());
            assertNull(b.refChosen());
            assertNull(b.refRejected());
        }
    }

    @Test
    void completionTokensCountTheTargetsThatAreScored() {
        List<PreferencePair> pairs = SyntheticPreferences.generate(37, 9);
        try (PreferenceBatch b = new PreferenceCollator(tok, 40).collate(pairs)) {
            long[] targets = Tensors.toLongs(b.targets());
            long[] mask = Tensors.toLongs(b.attentionMask());
            float[] counts = Tensors.toFloats(b.completionTokens());
            int t = b.length();
            long real = 0;
            int longest = 0;
            for (int r = 0; r < b.rows(); r++) {
                int scored = 0;
                int len = 0;
                for (int k = 0; k < t; k++) {
                    scored += targets[r * t + k] != X ? 1 : 0;
                    len += (int) mask[r * t + k];
                }
                assertEquals(scored, counts[r], "row " + r);
                PreferencePair p = pairs.get(r % pairs.size());
                String completion = r < pairs.size() ? p.chosen() : p.rejected();
                assertEquals(completion.split(" ").length + 1, scored, "words + EOS in row " + r);
                assertEquals(X, targets[r * t + t - 1]);
                real += len;
                longest = Math.max(longest, len);
            }
            assertEquals(real, b.tokenCount());
            assertEquals(longest, t);
        }
    }

    @Test
    void scoreAndReferenceTensorsOnlyWhenEveryPairHasThem() {
        PreferencePair plain = PreferencePair.of("describe the cat .", "the cat is kind .", "the cat is cruel .");
        PreferencePair scored = plain.withScores(2.5, -1);
        PreferencePair referenced = plain.withReferenceLogps(-10.25, -12);
        PreferencePair both = scored.withReferenceLogps(-3, -4.5);
        PreferenceCollator c = new PreferenceCollator(tok, 32);

        try (PreferenceBatch b = c.collate(List.of(scored, both))) {
            assertTrue(b.hasScores());
            assertFalse(b.hasReferenceLogps());
            assertSame(ScalarType.Float, b.scoreChosen().scalar_type().intern());
            assertArrayEquals(new long[] {2}, shape(b.scoreChosen()));
            assertArrayEquals(new float[] {2.5f, 2.5f}, Tensors.toFloats(b.scoreChosen()));
            assertArrayEquals(new float[] {-1f, -1f}, Tensors.toFloats(b.scoreRejected()));
            assertNull(b.refChosen());
        }
        try (PreferenceBatch b = c.collate(List.of(referenced, both))) {
            assertFalse(b.hasScores());
            assertNull(b.scoreRejected());
            assertArrayEquals(new float[] {-10.25f, -3f}, Tensors.toFloats(b.refChosen()));
            assertArrayEquals(new float[] {-12f, -4.5f}, Tensors.toFloats(b.refRejected()));
        }
        try (PreferenceBatch b = c.collate(List.of(plain, scored, referenced))) {
            assertNull(b.scoreChosen());
            assertNull(b.refChosen());
        }
        try (PreferenceBatch b = c.collate(List.of(both))) {
            assertTrue(b.hasScores() && b.hasReferenceLogps());
            assertEquals(1, b.pairs());
        }
    }

    @Test
    void truncationCutsThePromptFromTheLeftFirstKeepingBos() {
        // prompt: BOS + 6 tokens; chosen 5 + EOS = 6; rejected 2 + EOS = 3
        PreferencePair p = PreferencePair.of("tell me about a dog .", "the dog is good .", "bad !");
        long[] fullPrompt = cat(new long[] {BOS}, ids("tell me about a dog ."));
        long[] chosen = cat(ids("the dog is good ."), new long[] {EOS});
        long[] rejected = cat(ids("bad !"), new long[] {EOS});

        TokenizedPair fits = new PreferenceCollator(tok, 13).tokenize(p);
        assertFalse(fits.truncated());
        assertArrayEquals(fullPrompt, fits.prompt());
        assertArrayEquals(chosen, fits.chosen());
        assertArrayEquals(rejected, fits.rejected());
        assertArrayEquals(fullPrompt, new PreferenceCollator(tok).tokenize(p).prompt());

        // L = 11: two prompt tokens go, from the left, after BOS; both rows keep the same prompt
        TokenizedPair t11 = new PreferenceCollator(tok, 11).tokenize(p);
        assertTrue(t11.truncated());
        assertArrayEquals(cat(new long[] {BOS}, ids("about a dog .")), t11.prompt());
        assertArrayEquals(chosen, t11.chosen());
        assertArrayEquals(rejected, t11.rejected());
        assertEquals(11, t11.chosenLength());

        // L = 7: the whole prompt text goes, BOS stays, the completions still fit
        TokenizedPair t7 = new PreferenceCollator(tok, 7).tokenize(p);
        assertArrayEquals(new long[] {BOS}, t7.prompt());
        assertArrayEquals(chosen, t7.chosen());

        // L = 5: then the longer completion is cut from the right, EOS first
        TokenizedPair t5 = new PreferenceCollator(tok, 5).tokenize(p);
        assertArrayEquals(new long[] {BOS}, t5.prompt());
        assertArrayEquals(ids("the dog is good"), t5.chosen());
        assertArrayEquals(rejected, t5.rejected());

        // L = 2: one completion token each
        TokenizedPair t2 = new PreferenceCollator(tok, 2).tokenize(p);
        assertArrayEquals(new long[] {BOS}, t2.prompt());
        assertArrayEquals(ids("the"), t2.chosen());
        assertArrayEquals(ids("bad"), t2.rejected());
        try (PreferenceBatch b = new PreferenceCollator(tok, 2).collate(List.of(p))) {
            assertEquals(2, b.length());
            assertArrayEquals(new long[] {BOS, id("the"), BOS, id("bad")}, Tensors.toLongs(b.inputIds()));
            assertArrayEquals(new long[] {id("the"), X, id("bad"), X}, Tensors.toLongs(b.targets()));
            assertArrayEquals(new float[] {1, 1}, Tensors.toFloats(b.completionTokens()));
        }

        // L = 1: BOS leaves no room: the pair's source is named
        PreferencePair named = p.withSource("data.jsonl:42");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> new PreferenceCollator(tok, 1).tokenize(named));
        assertTrue(e.getMessage().startsWith("data.jsonl:42: the chosen completion has no scored token"),
                e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> new PreferenceCollator(tok, 1).collate(List.of(named)));
        assertThrows(IllegalArgumentException.class, () -> new PreferenceCollator(tok, 0));
    }

    @Test
    void rowsLongerThanTheModelsContextAreRefusedNamingThePair() {
        // BOS + 6 prompt tokens + 6 chosen tokens (EOS included) = 13
        PreferencePair p = PreferencePair.of("tell me about a dog .", "the dog is good .", "bad !").withSource("d.jsonl:3");
        assertEquals(13, new PreferenceCollator(tok).withMaxPositions(13).tokenize(p).chosenLength());
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> new PreferenceCollator(tok, 64).withMaxPositions(12).tokenize(p));
        assertTrue(e.getMessage().startsWith("d.jsonl:3: a row of 13 tokens (7 prompt + 6 completion, within max length 64)")
                && e.getMessage().contains("max_position_embeddings 12") && e.getMessage().contains("--max-length 12"),
                e.getMessage());
        // truncated to the context, the pair is taken
        assertEquals(12, new PreferenceCollator(tok, 12).withMaxPositions(12).tokenize(p).chosenLength());
        assertThrows(IllegalArgumentException.class, () -> new PreferenceCollator(tok).withMaxPositions(0));
    }

    @Test
    void completionsMadeIdenticalByTruncationAreRefusedNamingTheLineAndTheLimits() {
        // "the dog ." and "the cat ." share their first token: L = 2 (BOS + one token) makes them equal
        PreferencePair p = PreferencePair.of("tell me .", "the dog .", "the cat .").withSource("data.jsonl:7");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> new PreferenceCollator(tok, 2).tokenize(p));
        assertTrue(e.getMessage().startsWith("data.jsonl:7: the chosen and rejected completions differ"), e.getMessage());
        assertTrue(e.getMessage().contains("max length 2") && e.getMessage().contains("zero margin"), e.getMessage());
        // the same through --max-completion-length, named with it
        PreferenceCollator byCompletion = new PreferenceCollator(tok, 64).withLimits(new PreferenceCollator.Limits(
                false, 0, 1, TokenRule.PromptTruncation.KEEP_END));
        e = assertThrows(IllegalArgumentException.class, () -> byCompletion.tokenize(p));
        assertTrue(e.getMessage().contains("max length 64, max completion length 1"), e.getMessage());
        // one token more tells them apart: accepted
        assertFalse(java.util.Arrays.equals(new PreferenceCollator(tok, 3).tokenize(p).chosen(),
                new PreferenceCollator(tok, 3).tokenize(p).rejected()));
        // a pair whose completions were equal to begin with is not this error (the data says so)
        PreferencePair same = PreferencePair.of("tell me .", "the dog .", "the dog .");
        assertArrayEquals(new PreferenceCollator(tok, 2).tokenize(same).chosen(), ids("the"));
    }

    @Test
    void withoutBosOnePromptTokenIsKeptAndAnEmptyPromptCannotScoreItsFirstToken(@TempDir Path dir)
            throws IOException {
        SyntheticPreferences.writeTokenizer(dir);
        Files.writeString(dir.resolve("tokenizer_config.json"), "{\"add_bos_token\": false, \"eos_token\": \"<eos>\"}");
        try (TextTokenizer noBos = TextTokenizer.load(dir)) {
            PreferencePair p = PreferencePair.of("tell me about a dog .", "the dog is good .", "bad !");
            TokenizedPair t5 = new PreferenceCollator(noBos, 5).tokenize(p);
            assertArrayEquals(ids("."), t5.prompt(), "the last prompt token is kept as context");
            assertArrayEquals(ids("the dog is good"), t5.chosen());
            assertEquals(4, t5.scoredTokens(true));

            PreferencePair noPrompt = PreferencePair.of("", "good .", "bad");
            try (PreferenceBatch b = new PreferenceCollator(noBos, 8).collate(List.of(noPrompt))) {
                assertEquals(EOS, noBos.padId(), "no pad token configured: EOS pads");
                assertArrayEquals(new long[] {id("good"), id("."), EOS, id("bad"), EOS, EOS},
                        Tensors.toLongs(b.inputIds()));
                assertArrayEquals(new long[] {id("."), EOS, X, EOS, X, X}, Tensors.toLongs(b.targets()));
                assertArrayEquals(new float[] {2, 1}, Tensors.toFloats(b.completionTokens()));
            }
        }
        Files.delete(dir.resolve("tokenizer_config.json"));  // no BOS, no EOS
        try (TextTokenizer bare = TextTokenizer.load(dir)) {
            PreferencePair one = PreferencePair.of("", "good", "bad .").withSource("x.jsonl:3");
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> new PreferenceCollator(bare, 8).tokenize(one));
            assertTrue(e.getMessage().startsWith("x.jsonl:3: the chosen completion has no scored token"),
                    e.getMessage());
            PreferencePair blank = PreferencePair.of("describe the dog .", "the dog", "  ").withSource("x.jsonl:4");
            e = assertThrows(IllegalArgumentException.class, () -> new PreferenceCollator(bare, 8).tokenize(blank));
            assertTrue(e.getMessage().contains("x.jsonl:4: the rejected completion has no scored token: it encodes"),
                    e.getMessage());
        }
    }

    @Test
    void tokenIdsOutsideTheModelVocabularyAreRejectedWhenTokenized() {
        PreferencePair p = PreferencePair.of("tell me about a dog .", "the dog is good .", "bad !")
                .withSource("prefs.jsonl:7");
        long highest = Arrays.stream(cat(ids("tell me about a dog . the dog is good . bad !"), new long[] {BOS, EOS}))
                .max().getAsLong();
        // a vocabulary that holds every id: the same pair as without the check
        PreferenceCollator checked = new PreferenceCollator(tok, 64, highest + 1);
        assertEquals(highest + 1, checked.vocabSize());
        assertEquals(0, new PreferenceCollator(tok, 64).vocabSize(), "no vocabulary given: ids not checked");
        TokenizedPair ok = checked.tokenize(p);
        assertArrayEquals(new PreferenceCollator(tok, 64).tokenize(p).chosen(), ok.chosen());
        // one id too many for the model: named with the pair, the part and the position
        long tooSmall = id("good");  // "good" is then the first id outside [0, V)
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> new PreferenceCollator(tok, 64, tooSmall).tokenize(p));
        String m = e.getMessage();
        assertTrue(m.startsWith("prefs.jsonl:7: token id ") && m.contains("outside the model's vocabulary [0, "
                + tooSmall + ")"), m);
        assertTrue(m.contains("does not match the model"), m);
        // which part and position: the first id >= V in prompt, then chosen, then rejected
        long[] prompt = ok.prompt();
        String part = "prompt";
        long[] where = prompt;
        if (Arrays.stream(prompt).allMatch(x -> x < tooSmall)) {
            part = "chosen completion";
            where = ok.chosen();
        }
        int pos = 0;
        while (where[pos] < tooSmall) {
            pos++;
        }
        assertTrue(m.contains("token id " + where[pos] + " of the " + part + " (position " + pos + ")"), m);
        assertThrows(IllegalArgumentException.class,
                () -> new PreferenceCollator(tok, 64, tooSmall).collate(List.of(p)), "collate tokenizes and checks too");
        assertThrows(IllegalArgumentException.class, () -> new PreferenceCollator(tok, 64, 0));
    }

    @Test
    void emptyBatchIsRejected() {
        assertThrows(IllegalArgumentException.class, () -> new PreferenceCollator(tok, 8).collate(List.of()));
    }
}
