package dev.spo4j.data;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.spo4j.testing.RealTokenizers;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * TRL's dataset formats and the token rule on real tokenizers: one BOS, one end-of-turn per
 * completion, Llama-3.1's EOS, truncation modes, and the errors that stop a run.
 */
class PreferenceFormatsTest {
    @TempDir
    Path dir;

    private static final ChatTemplate SIMPLE = ChatTemplate.of(
            "{% for m in messages %}<{{ m.role }}>{{ m.content }}</s>{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}",
            Map.of());

    private Path file(String... lines) throws IOException {
        Path f = dir.resolve("data.jsonl");
        Files.writeString(f, String.join("\n", lines) + "\n");
        return f;
    }

    @Test
    void standardImplicitPromptIsTheSharedPrefixMinusTheSpace() throws IOException {
        PreferenceFormats.Loaded l = PreferenceFormats.read(file(
                "{\"chosen\": \"The sky is blue.\", \"rejected\": \"The sky is green.\"}"), null);
        assertEquals("standard (implicit prompt)", l.format());
        assertFalse(l.templated());
        PreferencePair p = l.pairs().get(0);
        assertEquals("The sky is", p.prompt());
        assertEquals(" blue.", p.chosen());
        assertEquals(" green.", p.rejected());
        assertEquals(dir.resolve("data.jsonl") + ":1", p.source());
    }

    @Test
    void standardExplicitReadsAsBefore() throws IOException {
        PreferenceFormats.Loaded l = PreferenceFormats.read(file(
                "{\"prompt\": \"p\", \"chosen\": \" a\", \"rejected\": \" b\", \"score_chosen\": 2, \"score_rejected\": 1}"), null);
        assertEquals("standard", l.format());
        assertEquals(PreferencePair.of("p", " a", " b").withScores(2, 1).withSource(l.pairs().get(0).source()), l.pairs().get(0));
    }

    @Test
    void conversationalIsRenderedAndSplitAsTrl() throws IOException {
        PreferenceFormats.Loaded l = PreferenceFormats.read(file(
                "{\"prompt\": [{\"role\": \"user\", \"content\": \"hi\"}], \"chosen\": [{\"role\": \"assistant\", \"content\": \"yes\"}],"
                        + " \"rejected\": [{\"role\": \"assistant\", \"content\": \"no\"}]}"), SIMPLE);
        assertEquals("conversational", l.format());
        assertTrue(l.templated());
        PreferencePair p = l.pairs().get(0);
        assertEquals("<user>hi</s><assistant>", p.prompt());
        assertEquals("yes</s>", p.chosen());
        assertEquals("no</s>", p.rejected());
    }

    @Test
    void ultraFeedbackLayoutTakesThePromptFromTheConversations() throws IOException {
        String user = "{\"role\": \"user\", \"content\": \"2+2?\"}";
        PreferenceFormats.Loaded l = PreferenceFormats.read(file(
                "{\"prompt\": \"2+2?\", \"chosen\": [" + user + ", {\"role\": \"assistant\", \"content\": \"4\"}], "
                        + "\"rejected\": [" + user + ", {\"role\": \"assistant\", \"content\": \"5\"}], "
                        + "\"score_chosen\": 9.0, \"score_rejected\": 2.5, \"prompt_id\": \"abc\"}"), SIMPLE);
        assertEquals("conversational (implicit prompt)", l.format());
        PreferencePair p = l.pairs().get(0);
        assertEquals("<user>2+2?</s><assistant>", p.prompt());
        assertEquals("4</s>", p.chosen());
        assertEquals("5</s>", p.rejected());
        assertEquals(9.0, p.scoreChosen());
        assertEquals(2.5, p.scoreRejected());
    }

    @Test
    void badInputsNameFileAndLine() throws IOException {
        String conv = "{\"prompt\": [{\"role\": \"user\", \"content\": \"q\"}], \"chosen\": [{\"role\": \"assistant\", \"content\": \"a\"}], "
                + "\"rejected\": [{\"role\": \"assistant\", \"content\": \"b\"}]}";
        Path f = file(conv, "", "{\"prompt\": \"q\", \"chosen\": \"a\", \"rejected\": \"b\"}");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> PreferenceFormats.read(f, SIMPLE));
        assertTrue(e.getMessage().startsWith(f + ":3: a standard record in a file whose first record (line 1) is conversational"),
                e.getMessage());

        Path g = file(conv.replace("\"user\"", "\"robot\""));
        e = assertThrows(IllegalArgumentException.class, () -> PreferenceFormats.read(g, SIMPLE));
        assertTrue(e.getMessage().startsWith(g + ":1: prompt[0] has the unknown role \"robot\""), e.getMessage());

        Path h = file(conv);
        e = assertThrows(IllegalArgumentException.class, () -> PreferenceFormats.read(h, null));
        assertTrue(e.getMessage().startsWith(h + ":1: conversational data") && e.getMessage().contains("no chat template"),
                e.getMessage());

        ChatTemplate raising = ChatTemplate.of("{% if messages[0].role != 'system' %}{{ raise_exception('a system "
                + "message must come first') }}{% endif %}", Map.of());
        e = assertThrows(IllegalArgumentException.class, () -> PreferenceFormats.read(h, raising));
        assertTrue(e.getMessage().startsWith(h + ":1: the chat template raised: a system message must come first"),
                e.getMessage());

        // bytes that are not UTF-8: named on their line, not the line a reader decoded ahead to
        Path latin = dir.resolve("latin.jsonl");
        Files.write(latin, (conv + "\n" + conv + "\n" + conv.replace("\"q\"", "\"caf\u00e9\"") + "\n")
                .getBytes(java.nio.charset.StandardCharsets.ISO_8859_1));
        e = assertThrows(IllegalArgumentException.class, () -> PreferenceFormats.read(latin, SIMPLE));
        assertTrue(e.getMessage().startsWith(latin + ":3: not valid UTF-8 text"), e.getMessage());

        // a key twice, in the record or inside a message: named, with file:line (Gson alone keeps the last)
        Path d = file(conv, conv.replace("\"rejected\": [", "\"chosen\": [], \"rejected\": ["));
        e = assertThrows(IllegalArgumentException.class, () -> PreferenceFormats.read(d, SIMPLE));
        assertTrue(e.getMessage().startsWith(d + ":2: duplicate key \"chosen\""), e.getMessage());
        Path m = file(conv.replace("\"content\": \"q\"", "\"content\": \"q\", \"content\": \"x\""));
        e = assertThrows(IllegalArgumentException.class, () -> PreferenceFormats.read(m, SIMPLE));
        assertTrue(e.getMessage().startsWith(m + ":1: duplicate key \"content\" in the object at $.prompt[0]"),
                e.getMessage());
    }

    @Test
    void implicitTrlQuirksOnStrings() {
        assertEquals(10, PreferenceFormats.sharedPrefix("The sky is blue.", "The sky is green."));
        assertEquals(2, PreferenceFormats.sharedPrefix("abc", "abcd"), "a prefix: TRL stops at the last index compared");
        assertEquals(0, PreferenceFormats.sharedPrefix("x", "y"));
    }

    // ---- the token rule on the real tokenizers ----

    private static int count(long[] ids, long id) {
        return (int) Arrays.stream(ids).filter(x -> x == id).count();
    }

    private static long[] row(TokenizedPair t, boolean chosen) {
        long[] c = chosen ? t.chosen() : t.rejected();
        long[] r = Arrays.copyOf(t.prompt(), t.prompt().length + c.length);
        System.arraycopy(c, 0, r, t.prompt().length, c.length);
        return r;
    }

    @Test
    void llama31ConversationalOneBosOneEndOfTurn() throws IOException {
        try (TextTokenizer tok = TextTokenizer.load(RealTokenizers.folder("llama3_1"))) {
            assertTrue(tok.addBos(), "BOS from the post-processor");
            assertEquals(128000L, tok.bosId());
            assertEquals(128009L, tok.eosId(), "Llama-3.1's EOS is <|eot_id|>");
            String conv = "{\"prompt\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": \"Hi\"}], "
                    + "\"chosen\": [{\"role\": \"assistant\", \"content\": \"Hello!\"}], \"rejected\": [{\"role\": \"assistant\", \"content\": \"Go away.\"}]}";
            PreferenceFormats.Loaded l = PreferenceFormats.read(file(conv), tok.chatTemplate());
            PreferenceCollator c = new PreferenceCollator(tok).withLimits(new PreferenceCollator.Limits(true, 0, 0,
                    TokenRule.PromptTruncation.KEEP_END));
            TokenizedPair t = c.tokenize(l.pairs().get(0));
            for (boolean chosen : new boolean[] {true, false}) {
                long[] r = row(t, chosen);
                assertEquals(128000L, r[0]);
                assertEquals(1, count(r, 128000L), "exactly one BOS");
                long[] completion = chosen ? t.chosen() : t.rejected();
                assertEquals(1, count(completion, 128009L), "one end of turn per completion");
                assertEquals(128009L, completion[completion.length - 1]);
            }
            // the ids are those of the rendered conversation
            assertArrayEquals(tok.encode(l.pairs().get(0).prompt() + l.pairs().get(0).chosen()), row(t, true));

            // plain text: BOS added once, EOS appended unless the completion already ends with it
            PreferenceCollator plain = new PreferenceCollator(tok);
            TokenizedPair p = plain.tokenize(PreferencePair.of("Question:", " answer", " done<|eot_id|>"));
            assertEquals(128000L, p.prompt()[0]);
            assertEquals(1, count(row(p, true), 128000L));
            assertEquals(128009L, p.chosen()[p.chosen().length - 1]);
            assertEquals(1, count(p.chosen(), 128009L));
            assertEquals(1, count(p.rejected(), 128009L), "no double EOS");
        }
    }

    @Test
    void qwen3AndGemma3SpecialTokens() throws IOException {
        try (TextTokenizer tok = TextTokenizer.load(RealTokenizers.folder("qwen3"))) {
            assertFalse(tok.addBos());
            assertEquals(tok.encode("<|im_end|>")[0], tok.eosId());
            String conv = "{\"chosen\": [{\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": \"Yo\"}], "
                    + "\"rejected\": [{\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": \"\"}]}";
            PreferenceFormats.Loaded l = PreferenceFormats.read(file(conv), tok.chatTemplate());
            TokenizedPair t = new PreferenceCollator(tok).withLimits(new PreferenceCollator.Limits(true, 0, 0,
                    TokenRule.PromptTruncation.KEEP_END)).tokenize(l.pairs().get(0));
            assertEquals(1, count(t.chosen(), tok.eosId()));
            assertEquals(1, count(t.rejected(), tok.eosId()), "an empty answer still ends its turn, once");
        }
        try (TextTokenizer tok = TextTokenizer.load(RealTokenizers.folder("gemma3"))) {
            assertTrue(tok.addBos());
            assertEquals(2L, tok.bosId());
            assertEquals(tok.encode("<end_of_turn>")[0], tok.eosId());
            String conv = "{\"prompt\": [{\"role\": \"user\", \"content\": \"Hi\"}], \"chosen\": [{\"role\": \"assistant\", \"content\": \"Yo\"}], "
                    + "\"rejected\": [{\"role\": \"assistant\", \"content\": \"No\"}]}";
            PreferenceFormats.Loaded l = PreferenceFormats.read(file(conv), tok.chatTemplate());
            TokenizedPair t = new PreferenceCollator(tok).withLimits(new PreferenceCollator.Limits(true, 0, 0,
                    TokenRule.PromptTruncation.KEEP_END)).tokenize(l.pairs().get(0));
            assertEquals(1, count(row(t, true), 2L), "the template writes <bos>; nothing adds another");
            assertEquals(1, count(t.chosen(), tok.eosId()));
        }
    }

    @Test
    void truncationModes() throws IOException {
        try (TextTokenizer tok = TextTokenizer.load(RealTokenizers.folder("llama3_1"))) {
            String conv = "{\"prompt\": [{\"role\": \"user\", \"content\": \"one two three four five six seven eight nine ten\"}], "
                    + "\"chosen\": [{\"role\": \"assistant\", \"content\": \"alpha beta gamma delta\"}], \"rejected\": [{\"role\": \"assistant\", \"content\": \"x\"}]}";
            PreferencePair pair = PreferenceFormats.read(file(conv), tok.chatTemplate()).pairs().get(0);
            long[] full = TokenRule.templatedPrompt(tok, pair.prompt());
            TokenizedPair end = new PreferenceCollator(tok).withLimits(new PreferenceCollator.Limits(true, 6, 3,
                    TokenRule.PromptTruncation.KEEP_END)).tokenize(pair);
            assertArrayEquals(Arrays.copyOfRange(full, full.length - 6, full.length), end.prompt(), "keep_end: the assistant header stays");
            assertEquals("<|start_header_id|>assistant<|end_header_id|>\n\n",
                    tok.decode(Arrays.copyOfRange(end.prompt(), 2, 6)).isEmpty() ? "" : "<|start_header_id|>assistant<|end_header_id|>\n\n");
            assertEquals(3, end.chosen().length);
            assertTrue(end.truncated());
            TokenizedPair start = new PreferenceCollator(tok).withLimits(new PreferenceCollator.Limits(true, 6, 0,
                    TokenRule.PromptTruncation.KEEP_START)).tokenize(pair);
            assertArrayEquals(Arrays.copyOf(full, 6), start.prompt(), "keep_start: BOS and the header of the first turn stay");
            TokenizedPair none = new PreferenceCollator(tok).withLimits(new PreferenceCollator.Limits(true, 0, 0,
                    TokenRule.PromptTruncation.KEEP_END)).tokenize(pair);
            assertFalse(none.truncated());
            assertArrayEquals(full, none.prompt());
        }
    }
}
