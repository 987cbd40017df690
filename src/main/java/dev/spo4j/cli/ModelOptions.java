package dev.spo4j.cli;

import dev.spo4j.model.LlamaModel;
import dev.spo4j.model.LoraAdapters;
import dev.spo4j.model.ModelConfig;
import dev.spo4j.model.ModelFolder;
import dev.spo4j.model.Precision;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import picocli.CommandLine.Option;

/** How {@code logps} and {@code generate} load their model: a PEFT LoRA adapter on top, and a dtype. */
final class ModelOptions {
    @Option(names = "--adapter", paramLabel = "DIR", description = "a PEFT LoRA adapter folder applied on the model")
    Path adapter;
    @Option(names = "--dtype", paramLabel = "DTYPE", description = "bf16 | fp32 weights and activations (default: fp32)")
    String dtype;

    /** Checks the options against the model folder's config (before anything is loaded or written). */
    void check(Path model) throws IOException {
        if (dtype != null && Precision.parse(dtype) == Precision.FP16) {
            throw new IllegalArgumentException("--dtype fp16 is not supported (use bf16 or fp32)");
        }
        if (adapter != null) {
            if (!Files.isDirectory(adapter)) {
                throw new IllegalArgumentException("adapter folder " + adapter + " does not exist");
            }
            LoraAdapters.checkFits(ModelConfig.read(model.resolve(ModelFolder.CONFIG)), adapter);
        }
    }

    /** The model folder's model in the chosen dtype, with the adapter attached when given. */
    LlamaModel load(Path model) throws IOException {
        check(model);
        LlamaModel m = ModelFolder.load(model, dtype == null ? Precision.FP32.scalarType()
                : Precision.parse(dtype).scalarType());
        if (adapter != null) {
            LoraAdapters.load(m, adapter);
        }
        return m;
    }
}
