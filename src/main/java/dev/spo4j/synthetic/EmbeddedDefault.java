package dev.spo4j.synthetic;

import dev.spo4j.data.PreferencePair;
import dev.spo4j.model.LlamaModel;
import dev.spo4j.model.ModelConfig;
import dev.spo4j.model.ModelFolder;
import dev.spo4j.synthetic.SyntheticPreferences;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.bytedeco.pytorch.global.torch;

/**
 * The run that {@code train} does with no arguments: a tiny Llama-style model (4 layers,
 * hidden 128, grouped-query attention, 0.61M parameters) over the synthetic language of
 * {@link SyntheticPreferences}, initialised from the seed, and its preference pairs ranked by
 * the known gold reward (with scores, so SPO's target margin comes from them). Written into
 * the run folder so that the run is reproducible and its model folder loads like any other.
 * The run's settings (a higher learning rate for a tiny random model, ...) are
 * {@code TrainConfig.embeddedDefault()}.
 */
public final class EmbeddedDefault {
    /** Pairs drawn for training and for evaluation. */
    public static final int TRAIN_PAIRS = 2048, EVAL_PAIRS = 256;

    private EmbeddedDefault() {}

    /**
     * @param modelDir the model folder written into the run folder
     * @param train    the training pairs
     * @param eval     the evaluation pairs
     */
    public record Prepared(Path modelDir, List<PreferencePair> train, List<PreferencePair> eval) {}

    /**
     * A Llama config.json for the synthetic language's tokenizer (vocabulary, BOS 1, EOS 2,
     * PAD 0) with the given sizes.
     */
    public static void writeSyntheticConfig(Path file, int hidden, int intermediate, int layers, int heads,
                                            int kvHeads) throws IOException {
        Files.writeString(file, """
                {
                  "architectures": ["LlamaForCausalLM"],
                  "model_type": "llama",
                  "vocab_size": %d,
                  "hidden_size": %d,
                  "intermediate_size": %d,
                  "num_hidden_layers": %d,
                  "num_attention_heads": %d,
                  "num_key_value_heads": %d,
                  "rms_norm_eps": 1e-6,
                  "rope_theta": 10000.0,
                  "max_position_embeddings": 256,
                  "tie_word_embeddings": false,
                  "bos_token_id": 1,
                  "eos_token_id": 2,
                  "pad_token_id": 0,
                  "torch_dtype": "float32"
                }
                """.formatted(SyntheticPreferences.vocabSize(), hidden, intermediate, layers, heads, kvHeads));
    }

    /** Writes the model folder under {@code dir} (unless already there) and draws the pairs from {@code seed}. */
    public static Prepared prepare(Path dir, long seed) {
        try {
            Path modelDir = dir.resolve("tiny-llama");
            if (!Files.exists(modelDir.resolve("model.safetensors"))) {
                Path staging = dir.resolve("tokenizer");
                SyntheticPreferences.writeTokenizer(staging);
                Path config = staging.resolve("config.json");
                writeSyntheticConfig(config, 128, 256, 4, 8, 4);
                torch.manual_seed(seed);
                LlamaModel model = new LlamaModel(ModelConfig.read(config));
                ModelFolder.save(model, modelDir, staging);
            }
            return new Prepared(modelDir, SyntheticPreferences.generate(TRAIN_PAIRS, seed),
                    SyntheticPreferences.generate(EVAL_PAIRS, seed + 1));
        } catch (IOException e) {
            throw new UncheckedIOException("cannot prepare the embedded default in " + dir, e);
        }
    }
}
