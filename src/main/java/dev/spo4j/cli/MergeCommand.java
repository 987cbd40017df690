package dev.spo4j.cli;

import dev.spo4j.model.LlamaModel;
import dev.spo4j.model.LoraAdapters;
import dev.spo4j.model.ModelConfig;
import dev.spo4j.model.ModelFolder;
import dev.spo4j.model.Precision;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.Callable;
import org.bytedeco.pytorch.global.torch.ScalarType;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

@Command(name = "merge", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Merge a PEFT LoRA adapter into its base: writes a full model folder with",
                "W + (lora_alpha / r) B A for every adapted projection, in the base's dtype."})
final class MergeCommand implements Callable<Integer> {
    @Option(names = "--model", required = true, paramLabel = "DIR", description = "the base model folder")
    Path model;
    @Option(names = "--adapter", required = true, paramLabel = "DIR", description = "PEFT LoRA adapter folder "
            + "(adapter_config.json, adapter_model.safetensors)")
    Path adapter;
    @Option(names = "--out", required = true, paramLabel = "DIR", description = "the merged model folder (written atomically)")
    Path out;
    @Mixin
    VerboseOption verbose;

    @Override
    public Integer call() throws Exception {
        if (!Files.isDirectory(model)) {
            throw new IllegalArgumentException("model folder " + model + " does not exist");
        }
        if (!Files.isDirectory(adapter)) {
            throw new IllegalArgumentException("adapter folder " + adapter + " does not exist");
        }
        // everything checked before the base is loaded or anything written
        LoraAdapters.checkFits(ModelConfig.read(model.resolve(ModelFolder.CONFIG)), adapter);
        ScalarType dtype = Precision.ofFolder(model).scalarType();
        LlamaModel m = ModelFolder.load(model);  // fp32: the sum is formed in fp32, then stored in the base's dtype
        LoraAdapters.load(m, adapter).mergeInto(m);  // and detaches them
        if (dtype != ScalarType.Float) {
            m.to(dtype, false);
        }
        ModelFolder.save(m, out, Files.isRegularFile(adapter.resolve("tokenizer.json")) ? adapter : model);
        System.out.println("merged " + adapter + " into " + model + ": " + out + " (" + dtype + ")");
        return 0;
    }

}
