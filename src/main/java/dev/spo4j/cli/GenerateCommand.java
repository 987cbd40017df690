package dev.spo4j.cli;

import com.google.gson.Gson;
import com.google.gson.JsonObject;
import dev.spo4j.data.TextTokenizer;
import dev.spo4j.generate.GenerationConfig;
import dev.spo4j.generate.Generator;
import dev.spo4j.model.LlamaModel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;
import picocli.CommandLine.ArgGroup;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

@Command(name = "generate", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Sample completions (batched; temperature, top-k, top-p, seed; any EOS id of the model stops a",
                "sequence; --chat renders each prompt as a user message with the chat template).",
                "Prints one JSON line per sample: prompt, sample index, completion, tokens, eos."})
final class GenerateCommand implements Callable<Integer> {
    @Option(names = "--model", required = true, paramLabel = "DIR", description = "Hugging Face model folder")
    Path model;

    static final class Prompts {
        @Option(names = "--prompt", paramLabel = "TEXT", description = "one prompt")
        String prompt;
        @Option(names = "--prompts", paramLabel = "FILE", description = "one prompt per line")
        Path file;
    }

    @ArgGroup(exclusive = true, multiplicity = "1")
    Prompts prompts;
    @Option(names = "--temperature", defaultValue = "1.0", description = "0 = greedy (default: ${DEFAULT-VALUE})")
    double temperature;
    @Option(names = "--top-k", defaultValue = "0", description = "0 = off (default: ${DEFAULT-VALUE})")
    int topK;
    @Option(names = "--top-p", defaultValue = "1.0", description = "1 = off (default: ${DEFAULT-VALUE})")
    double topP;
    @Option(names = "--seed", defaultValue = "0", description = "(default: ${DEFAULT-VALUE})")
    long seed;
    @Option(names = "--max-new-tokens", defaultValue = "64", description = "(default: ${DEFAULT-VALUE})")
    int maxNewTokens;
    @Option(names = "--num-samples", defaultValue = "1", description = "samples per prompt (default: ${DEFAULT-VALUE})")
    int numSamples;
    @Option(names = "--threads", defaultValue = "0", description = "0 = LibTorch's default (default: ${DEFAULT-VALUE})")
    int threads;
    @Option(names = "--chat", description = "each prompt is a user message, rendered with the model's chat template "
            + "and its generation prompt")
    boolean chat;
    @Mixin
    ModelOptions modelOptions;
    @Mixin
    VerboseOption verbose;

    @Override
    public Integer call() throws Exception {
        GenerationConfig cfg = new GenerationConfig(temperature, topK, topP, maxNewTokens, seed);
        modelOptions.check(model);
        if (numSamples < 1) {
            throw new IllegalArgumentException("--num-samples = " + numSamples + " (expected >= 1)");
        }
        if (threads > 0) {
            dev.spo4j.kernels.OpenMp.setThreads(threads);
        }
        List<String> texts = new ArrayList<>();
        if (prompts.prompt != null) {
            texts.add(prompts.prompt);
        } else {
            for (String line : Files.readAllLines(prompts.file)) {
                if (!line.isBlank()) {
                    texts.add(line.strip());
                }
            }
        }
        List<String> batch = new ArrayList<>();
        for (String t : texts) {
            for (int k = 0; k < numSamples; k++) {
                batch.add(t);
            }
        }
        Gson gson = new Gson();
        try (TextTokenizer tok = TextTokenizer.load(model)) {
            LlamaModel m = modelOptions.load(model);
            List<long[]> ids = new ArrayList<>();
            for (String p : batch) {
                ids.add(chat ? Generator.chatPromptIds(tok, p) : Generator.promptIds(tok, p));
            }
            List<Generator.Sample> out = Generator.generate(m, ids, cfg, tok.eosIds());
            for (int i = 0; i < out.size(); i++) {
                JsonObject o = new JsonObject();
                o.addProperty("prompt", batch.get(i));
                o.addProperty("sample", i % numSamples);
                o.addProperty("completion", tok.decode(out.get(i).tokens()));
                o.addProperty("tokens", out.get(i).tokens().length);
                o.addProperty("eos", out.get(i).endedWithEos());
                System.out.println(gson.toJson(o));
            }
        }
        return 0;
    }
}
