package dev.spo4j.data;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.spo4j.synthetic.SyntheticPreferences;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Loading a tokenizer folder: special tokens from the three config files, vocabulary size, errors. */
class TextTokenizerTest {
    @TempDir
    Path dir;

    /** The id of a word of the synthetic language. */
    static long id(String word) {
        return 4 + SyntheticPreferences.words().indexOf(word);
    }

    @Test
    void syntheticTokenizerLoadsAndRoundTrips() {
        SyntheticPreferences.writeTokenizer(dir);
        try (TextTokenizer tok = TextTokenizer.load(dir)) {
            assertTrue(tok.addBos());
            assertEquals(1L, tok.bosId());
            assertEquals(2L, tok.eosId());
            assertEquals(0L, tok.padId());
            assertEquals(SyntheticPreferences.vocabSize(), tok.vocabSize());
            assertEquals(59, tok.vocabSize());

            assertArrayEquals(new long[] {id("the"), id("dog"), id("is"), id("good"), id(".")},
                    tok.encode("the dog is good ."));
            assertArrayEquals(new long[] {id("the"), id("dog"), id("is"), id("good"), id(".")},
                    tok.encode("The  DOG is\tgood."), "lower-cased, split at whitespace and punctuation");
            assertArrayEquals(new long[] {id("a"), 3L}, tok.encode("a zebra"), "unknown word -> <unk>");
            assertArrayEquals(new long[0], tok.encode(""));
            assertEquals("the dog is good .", tok.decode(tok.encode("the dog is good .")));
            assertEquals("the dog", tok.decode(new long[] {1, id("the"), id("dog"), 2, 0}), "specials skipped");

            for (PreferencePair p : SyntheticPreferences.generate(50, 3)) {
                for (String text : new String[] {p.prompt(), p.chosen(), p.rejected()}) {
                    long[] ids = tok.encode(text);
                    assertEquals(text, tok.decode(ids));
                    assertEquals(text.split(" ").length, ids.length, text);
                    for (long i : ids) {
                        assertTrue(i >= 4 && i < tok.vocabSize(), text);
                    }
                }
                // prompt and completion encode separately exactly as they would together
                long[] joint = tok.encode(p.prompt() + " " + p.chosen());
                assertEquals(tok.encode(p.prompt()).length + tok.encode(p.chosen()).length, joint.length);
            }

            String longText = "the dog . ".repeat(400);  // 1200 tokens: DJL's default would cut at 512
            assertEquals(1200, tok.encode(longText).length);
        }
    }

    @Test
    void loadsTheBundledTokenizerWithoutAFolder() {
        try (TextTokenizer tok = SyntheticPreferences.loadTokenizer()) {
            assertArrayEquals(new long[] {id("calm")}, tok.encode("calm"));
            assertEquals(2L, tok.eosId());
        }
    }

    @Test
    void idsComeFromConfigThenGenerationConfigThenTokenStrings() throws IOException {
        SyntheticPreferences.writeTokenizer(dir);
        Files.writeString(dir.resolve("config.json"), "{\"eos_token_id\": [7, 2], \"vocab_size\": 64}");
        Files.writeString(dir.resolve("generation_config.json"),
                "{\"eos_token_id\": 9, \"bos_token_id\": 5, \"pad_token_id\": 6}");
        try (TextTokenizer tok = TextTokenizer.load(dir)) {
            assertEquals(2L, tok.eosId(), "EOS: tokenizer_config.json's eos_token wins (the end of a turn)");
            assertArrayEquals(new long[] {2, 7, 9}, tok.eosIds(), "generation stops on every EOS id, deduplicated");
            assertEquals(5L, tok.bosId(), "then generation_config.json");
            assertEquals(6L, tok.padId());
            assertEquals(59, tok.vocabSize(), "the tokenizer's own size, not config.json's");
        }
        Files.delete(dir.resolve("generation_config.json"));
        Files.writeString(dir.resolve("config.json"), "{\"pad_token_id\": null}");
        try (TextTokenizer tok = TextTokenizer.load(dir)) {
            assertEquals(1L, tok.bosId(), "then tokenizer_config.json's token strings");
            assertEquals(2L, tok.eosId());
            assertEquals(0L, tok.padId());
        }
    }

    @Test
    void withoutEosTokenStringTheFirstConfiguredIdIsEos() throws IOException {
        SyntheticPreferences.writeTokenizer(dir);
        Files.delete(dir.resolve("tokenizer_config.json"));
        Files.writeString(dir.resolve("config.json"), "{\"eos_token_id\": [7, 2]}");
        try (TextTokenizer tok = TextTokenizer.load(dir)) {
            assertEquals(7L, tok.eosId(), "config.json, the first of a list");
            assertArrayEquals(new long[] {7, 2}, tok.eosIds());
        }
    }

    @Test
    void withoutTokenizerConfigThereIsNoBosAndPadFallsBackToEosThenZero() throws IOException {
        SyntheticPreferences.writeTokenizer(dir);
        Files.delete(dir.resolve("tokenizer_config.json"));
        try (TextTokenizer tok = TextTokenizer.load(dir)) {
            assertFalse(tok.addBos());
            assertNull(tok.bosId());
            assertNull(tok.eosId());
            assertEquals(0L, tok.padId());
        }
        Files.writeString(dir.resolve("config.json"), "{\"eos_token_id\": 2}");
        try (TextTokenizer tok = TextTokenizer.load(dir)) {
            assertEquals(2L, tok.eosId());
            assertEquals(2L, tok.padId(), "no pad id: EOS");
        }
    }

    @Test
    void tokenStringsMayBeAddedTokenObjects() throws IOException {
        SyntheticPreferences.writeTokenizer(dir);
        Files.writeString(dir.resolve("tokenizer_config.json"),
                "{\"add_bos_token\": false, \"eos_token\": {\"content\": \"<eos>\", \"special\": true}, "
                        + "\"bos_token\": null}");
        try (TextTokenizer tok = TextTokenizer.load(dir)) {
            assertFalse(tok.addBos());
            assertNull(tok.bosId());
            assertEquals(2L, tok.eosId());
        }
    }

    /** A hand-written byte-pair-encoding tokenizer: another model type, special tokens only in added_tokens. */
    @Test
    void bpeTokenizerWithAddedSpecialTokens() throws IOException {
        Files.writeString(dir.resolve("tokenizer.json"), """
                {"version": "1.0", "truncation": null, "padding": null,
                 "added_tokens": [
                   {"id": 5, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false,
                    "normalized": false, "special": true},
                   {"id": 6, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false,
                    "normalized": false, "special": true}],
                 "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": null,
                 "decoder": null,
                 "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                           "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                           "vocab": {"a": 0, "b": 1, "c": 2, "ab": 3, "abc": 4},
                           "merges": ["a b", "ab c"]}}
                """);
        Files.writeString(dir.resolve("tokenizer_config.json"),
                "{\"add_bos_token\": true, \"bos_token\": \"<s>\", \"eos_token\": \"</s>\"}");
        try (TextTokenizer tok = TextTokenizer.load(dir)) {
            assertArrayEquals(new long[] {4, 3, 1, 2}, tok.encode("abcab bc"));
            assertEquals(5L, tok.bosId());
            assertEquals(6L, tok.eosId());
            assertEquals(6L, tok.padId());
            assertEquals(7, tok.vocabSize());
        }
    }

    @Test
    void loadErrorsNameThePath() throws IOException {
        Path empty = Files.createDirectory(dir.resolve("empty"));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> TextTokenizer.load(empty));
        assertTrue(e.getMessage().startsWith(empty.resolve("tokenizer.json") + ": no such file"), e.getMessage());

        Path bad = Files.createDirectory(dir.resolve("bad"));
        Files.writeString(bad.resolve("tokenizer.json"), "{\"model\": ");
        e = assertThrows(IllegalArgumentException.class, () -> TextTokenizer.load(bad));
        assertTrue(e.getMessage().startsWith(bad.resolve("tokenizer.json") + ": malformed JSON"), e.getMessage());

        Path notHf = Files.createDirectory(dir.resolve("not-hf"));
        Files.writeString(notHf.resolve("tokenizer.json"), "{\"model\": {\"type\": \"Nonsense\"}}");
        e = assertThrows(IllegalArgumentException.class, () -> TextTokenizer.load(notHf));
        assertTrue(e.getMessage().startsWith(notHf.resolve("tokenizer.json") + ":"), e.getMessage());

        Path noBos = Files.createDirectory(dir.resolve("no-bos"));
        SyntheticPreferences.writeTokenizer(noBos);
        Files.writeString(noBos.resolve("tokenizer_config.json"), "{\"add_bos_token\": true}");
        e = assertThrows(IllegalArgumentException.class, () -> TextTokenizer.load(noBos));
        assertTrue(e.getMessage().contains("add_bos_token is true but no BOS"), e.getMessage());

        Files.writeString(noBos.resolve("tokenizer_config.json"), "{\"eos_token\": \"</s>\"}");
        e = assertThrows(IllegalArgumentException.class, () -> TextTokenizer.load(noBos));
        assertTrue(e.getMessage().contains("eos_token \"</s>\" is not in the vocabulary"), e.getMessage());

        Files.writeString(noBos.resolve("tokenizer_config.json"), "{\"add_bos_token\": \"yes\"}");
        e = assertThrows(IllegalArgumentException.class, () -> TextTokenizer.load(noBos));
        assertTrue(e.getMessage().startsWith(noBos.resolve("tokenizer_config.json") + ": add_bos_token"),
                e.getMessage());
    }
}
