package dev.spo4j.synthetic;

import com.google.gson.GsonBuilder;
import com.google.gson.JsonArray;
import com.google.gson.JsonObject;
import dev.spo4j.data.PreferencePair;
import dev.spo4j.data.TextTokenizer;
import dev.spo4j.io.AtomicFiles;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Random;
import java.util.stream.Stream;

/**
 * A tiny synthetic preference task, the built-in default of {@code train}: small enough that
 * a tiny model learns it in a couple of minutes on two cores, with a known gold reward so a
 * run can be judged by how much reward its samples gain.
 *
 * <h2>Language</h2>
 * 55 lower-case words, written separated by single spaces (punctuation is a word too):
 * determiners, 12 nouns, 8 positive / 8 negative / 6 neutral adjectives, copular and
 * transitive verbs, "very", "and", prompt words, and ". , !". The tokenizer
 * ({@link #writeTokenizer}) maps each word to one token, after the special tokens
 * {@code <pad>=0, <bos>=1, <eos>=2, <unk>=3}.
 *
 * <h2>Prompts and completions</h2>
 * A prompt asks about a topic noun: {@code describe the N .}, {@code tell me about a N .} or
 * {@code write about the ADJ N .}. A completion is 1 to 3 clauses ({@code the N COP ADJ},
 * {@code the N COP ADJ and ADJ}, {@code a ADJ N TRANS the N}, {@code the N TRANS a ADJ N})
 * joined by {@code ,} and ended by {@code .} or {@code !}; each noun is the topic with
 * probability 1/2, each adjective is positive, negative or neutral with probability 1/3 each,
 * and "very" precedes it with probability 1/5.
 *
 * <h2>Gold reward</h2>
 * Over the completion's whitespace-separated words w_1..w_n (lower-cased):
 * <pre>
 *   r(x, y) = sum_i s(w_i) * (2 if w_{i-1} = "very" else 1)
 *           + 1   if y mentions the topic of x (the first noun of the prompt)
 *           - 0.2 * max(0, n - 12)
 * </pre>
 * where s = +1 for a positive adjective, -1 for a negative one, 0 for any other word.
 *
 * <h2>Labels</h2>
 * For each prompt two different completions a, b are sampled; a is chosen with the
 * Bradley–Terry probability sigma(r(x,a) - r(x,b)), else b. {@code score_chosen} and
 * {@code score_rejected} are the gold rewards of the chosen and the rejected completion, so
 * the label is noisy but the scores are exact. Everything is a function of the seed.
 */
public final class SyntheticPreferences {
    /** The padding token, id 0. */
    public static final String PAD = "<pad>";
    /** The beginning-of-sequence token, id 1. */
    public static final String BOS = "<bos>";
    /** The end-of-sequence token, id 2. */
    public static final String EOS = "<eos>";
    /** The token of any word outside the language, id 3. */
    public static final String UNK = "<unk>";
    private static final List<String> SPECIALS = List.of(PAD, BOS, EOS, UNK);

    static final List<String> DETERMINERS = List.of("the", "a");
    static final List<String> NOUNS = List.of("cat", "dog", "bird", "fish", "house", "tree", "garden", "river",
            "book", "song", "meal", "day");
    static final List<String> POSITIVE = List.of("good", "great", "happy", "bright", "kind", "lovely", "warm",
            "calm");
    static final List<String> NEGATIVE = List.of("bad", "awful", "sad", "dark", "cruel", "ugly", "cold", "noisy");
    static final List<String> NEUTRAL = List.of("big", "small", "old", "new", "red", "blue");
    static final List<String> COPULAS = List.of("is", "was", "seems", "looks", "feels");
    static final List<String> TRANSITIVE = List.of("sees", "likes", "finds", "makes");
    static final List<String> FUNCTION_WORDS = List.of("very", "and");
    static final List<String> PROMPT_WORDS = List.of("describe", "tell", "me", "about", "write");
    static final List<String> PUNCTUATION = List.of(".", ",", "!");

    /** Completion length (in words) above which each extra word costs 0.2. */
    public static final int FREE_LENGTH = 12;
    private static final int LENGTH_PENALTY_TENTHS = 2;
    private static final int TOPIC_BONUS_TENTHS = 10;

    private static final List<String> WORDS = Stream.of(DETERMINERS, NOUNS, POSITIVE, NEGATIVE, NEUTRAL, COPULAS,
            TRANSITIVE, FUNCTION_WORDS, PROMPT_WORDS, PUNCTUATION).flatMap(List::stream).toList();
    private static final Map<String, Integer> SENTIMENT = sentiment();

    private SyntheticPreferences() {}

    /** The 55 words of the language, in token-id order (word k has id 4 + k). */
    public static List<String> words() {
        return WORDS;
    }

    /** Special tokens plus words. */
    public static int vocabSize() {
        return SPECIALS.size() + WORDS.size();
    }

    /** r(x, y) as defined in the class comment; unknown words weigh nothing. */
    public static double goldReward(String prompt, String completion) {
        String[] w = splitWords(completion);
        int sentiment = 0;
        for (int i = 0; i < w.length; i++) {
            int s = SENTIMENT.getOrDefault(w[i], 0);
            sentiment += (i > 0 && w[i - 1].equals("very")) ? 2 * s : s;
        }
        String topic = topic(prompt);
        boolean onTopic = topic != null && Arrays.asList(w).contains(topic);
        int over = Math.max(0, w.length - FREE_LENGTH);
        // in tenths, so that the result is the decimal it is meant to be (-1.2, not -1.2000000000000002)
        int tenths = 10 * sentiment + (onTopic ? TOPIC_BONUS_TENTHS : 0) - LENGTH_PENALTY_TENTHS * over;
        return tenths / 10.0;
    }

    /** The prompt's topic: its first noun, or null. */
    public static String topic(String prompt) {
        for (String w : splitWords(prompt)) {
            if (NOUNS.contains(w)) {
                return w;
            }
        }
        return null;
    }

    /** {@code pairs} labelled pairs with gold scores; the same seed gives the same pairs. */
    public static List<PreferencePair> generate(int pairs, long seed) {
        if (pairs < 0) {
            throw new IllegalArgumentException("pairs is " + pairs + " (expected at least 0)");
        }
        Random rnd = new Random(seed);
        List<PreferencePair> out = new ArrayList<>(pairs);
        for (int i = 0; i < pairs; i++) {
            String topic = pick(rnd, NOUNS);
            String prompt = prompt(rnd, topic);
            String a = completion(rnd, topic);
            String b = completion(rnd, topic);
            for (int tries = 0; b.equals(a) && tries < 100; tries++) {
                b = completion(rnd, topic);
            }
            double ra = goldReward(prompt, a);
            double rb = goldReward(prompt, b);
            boolean aWins = rnd.nextDouble() < sigmoid(ra - rb);
            out.add(new PreferencePair(prompt, aWins ? a : b, aWins ? b : a, aWins ? ra : rb, aWins ? rb : ra,
                    null, null, "synthetic:" + (i + 1)));
        }
        return Collections.unmodifiableList(out);
    }

    /**
     * Writes {@code tokenizer.json} (a WordLevel model over the words, the four special
     * tokens, a lower-casing normalizer, a Whitespace pre-tokenizer and no decoder, so that
     * decoding joins tokens with spaces) and {@code tokenizer_config.json} (add_bos_token
     * true, bos/eos/pad tokens) into {@code dir}, creating it if needed.
     */
    public static void writeTokenizer(Path dir) {
        try {
            Files.createDirectories(dir);
        } catch (IOException e) {
            throw new UncheckedIOException(dir + ": " + e.getMessage(), e);
        }
        JsonObject tok = new JsonObject();
        tok.addProperty("version", "1.0");
        tok.add("truncation", null);
        tok.add("padding", null);
        JsonArray added = new JsonArray();
        for (int id = 0; id < SPECIALS.size(); id++) {
            JsonObject t = new JsonObject();
            t.addProperty("id", id);
            t.addProperty("content", SPECIALS.get(id));
            t.addProperty("single_word", false);
            t.addProperty("lstrip", false);
            t.addProperty("rstrip", false);
            t.addProperty("normalized", false);
            t.addProperty("special", true);
            added.add(t);
        }
        tok.add("added_tokens", added);
        JsonObject normalizer = new JsonObject();
        normalizer.addProperty("type", "Lowercase");
        tok.add("normalizer", normalizer);
        JsonObject pre = new JsonObject();
        pre.addProperty("type", "Whitespace");
        tok.add("pre_tokenizer", pre);
        tok.add("post_processor", null);
        tok.add("decoder", null);  // no decoder: the library joins tokens with single spaces
        JsonObject model = new JsonObject();
        model.addProperty("type", "WordLevel");
        JsonObject vocab = new JsonObject();
        for (int id = 0; id < SPECIALS.size(); id++) {
            vocab.addProperty(SPECIALS.get(id), id);
        }
        for (int k = 0; k < WORDS.size(); k++) {
            vocab.addProperty(WORDS.get(k), SPECIALS.size() + k);
        }
        model.add("vocab", vocab);
        model.addProperty("unk_token", UNK);
        tok.add("model", model);

        Map<String, Object> config = new LinkedHashMap<>();
        config.put("tokenizer_class", "PreTrainedTokenizerFast");
        config.put("add_bos_token", true);
        config.put("add_eos_token", false);
        config.put("bos_token", BOS);
        config.put("eos_token", EOS);
        config.put("pad_token", PAD);
        config.put("unk_token", UNK);
        config.put("clean_up_tokenization_spaces", false);

        var gson = new GsonBuilder().setPrettyPrinting().disableHtmlEscaping().serializeNulls().create();
        try {
            AtomicFiles.writeString(dir.resolve("tokenizer.json"), gson.toJson(tok));
            AtomicFiles.writeString(dir.resolve("tokenizer_config.json"), gson.toJson(config));
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write the synthetic tokenizer in " + dir + ": " + e.getMessage(), e);
        }
    }

    /** Writes the tokenizer to a temporary folder, loads it, and deletes the folder. */
    public static TextTokenizer loadTokenizer() {
        Path dir = null;
        try {
            dir = Files.createTempDirectory("spo4j-synthetic-tokenizer");
            writeTokenizer(dir);
            return TextTokenizer.load(dir);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        } finally {
            if (dir != null) {
                try {
                    AtomicFiles.deleteTree(dir);
                } catch (IOException ignored) {
                    // a leftover temporary folder is harmless
                }
            }
        }
    }

    // ---- grammar ----

    private static String prompt(Random rnd, String topic) {
        return switch (rnd.nextInt(3)) {
            case 0 -> "describe the " + topic + " .";
            case 1 -> "tell me about a " + topic + " .";
            default -> "write about the " + pick(rnd, adjectivePool(rnd)) + " " + topic + " .";
        };
    }

    private static String completion(Random rnd, String topic) {
        double u = rnd.nextDouble();
        int clauses = u < 0.45 ? 1 : u < 0.8 ? 2 : 3;
        StringBuilder sb = new StringBuilder();
        for (int c = 0; c < clauses; c++) {
            if (c > 0) {
                sb.append(" , ");
            }
            sb.append(clause(rnd, topic));
        }
        sb.append(rnd.nextDouble() < 0.8 ? " ." : " !");
        return sb.toString();
    }

    private static String clause(Random rnd, String topic) {
        return switch (rnd.nextInt(4)) {
            case 0 -> "the " + noun(rnd, topic) + " " + pick(rnd, COPULAS) + " " + adjective(rnd);
            case 1 -> "the " + noun(rnd, topic) + " " + pick(rnd, COPULAS) + " " + adjective(rnd) + " and "
                    + adjective(rnd);
            case 2 -> "a " + adjective(rnd) + " " + noun(rnd, topic) + " " + pick(rnd, TRANSITIVE) + " the "
                    + noun(rnd, topic);
            default -> "the " + noun(rnd, topic) + " " + pick(rnd, TRANSITIVE) + " a " + adjective(rnd) + " "
                    + noun(rnd, topic);
        };
    }

    private static String noun(Random rnd, String topic) {
        return rnd.nextBoolean() ? topic : pick(rnd, NOUNS);
    }

    private static String adjective(Random rnd) {
        String adj = pick(rnd, adjectivePool(rnd));
        return rnd.nextDouble() < 0.2 ? "very " + adj : adj;
    }

    private static List<String> adjectivePool(Random rnd) {
        return switch (rnd.nextInt(3)) {
            case 0 -> POSITIVE;
            case 1 -> NEGATIVE;
            default -> NEUTRAL;
        };
    }

    private static String pick(Random rnd, List<String> words) {
        return words.get(rnd.nextInt(words.size()));
    }

    private static String[] splitWords(String text) {
        String t = text.strip().toLowerCase(Locale.ROOT);
        return t.isEmpty() ? new String[0] : t.split("\\s+");
    }

    static double sigmoid(double x) {
        return x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x));
    }

    private static Map<String, Integer> sentiment() {
        Map<String, Integer> m = new java.util.HashMap<>();
        POSITIVE.forEach(w -> m.put(w, 1));
        NEGATIVE.forEach(w -> m.put(w, -1));
        return Map.copyOf(m);
    }
}
