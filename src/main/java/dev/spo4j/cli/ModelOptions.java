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

/** How {@code logps} and {@code generate} load their model: a PEFT LoRA adapter on top, a dtype, a device. */
final class ModelOptions {
    @Option(names = "--device", description = "cpu | cuda | cuda:N (CUDA needs the -Pgpu build) (default: ${DEFAULT-VALUE})")
    String device = "cpu";
    @Option(names = "--adapter", paramLabel = "DIR", description = "a PEFT LoRA adapter folder applied on the model")
    Path adapter;
    @Option(names = "--dtype", paramLabel = "DTYPE", description = "bf16 | fp32 weights and activations (default: fp32)")
    String dtype;

    /** Checks the options against the model folder's config (before anything is loaded or written). */
    void check(Path model) throws IOException {
        dev.spo4j.train.Trainer.device(device);  // malformed, or a GPU this build cannot use: refused here
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
        org.bytedeco.pytorch.global.torch.ScalarType dt = dtype == null ? Precision.FP32.scalarType()
                : Precision.parse(dtype).scalarType();
        LlamaModel m = ModelFolder.load(model, dt);
        org.bytedeco.pytorch.Device d = dev.spo4j.train.Trainer.device(device);
        if (!d.is_cpu()) {
            m.to(d, dt, false);  // before the adapter, which is loaded onto the model's device
        }
        if (adapter != null) {
            LoraAdapters.load(m, adapter);
        }
        return m;
    }
}
