package dev.spo4j.cli;

import com.google.gson.JsonArray;
import com.google.gson.JsonObject;
import dev.spo4j.data.ChatTemplate;
import dev.spo4j.data.PreferenceCollator;
import dev.spo4j.data.PreferenceDataset;
import dev.spo4j.data.PreferenceFormats;
import dev.spo4j.data.PreferencePair;
import dev.spo4j.data.TextTokenizer;
import dev.spo4j.data.TokenizedPair;
import dev.spo4j.train.TrainConfig;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/**
 * Shows what {@code train} will train on: each pair's texts after the chat template and its
 * token ids after the token rule and truncation, one JSON line per pair.
 */
@Command(name = "tokenize", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Write each preference pair as train will use it: prompt_text, chosen_text, rejected_text",
                "(after the chat template) and prompt_input_ids, chosen_input_ids, rejected_input_ids (after the",
                "token rule and truncation), one JSON line per pair. The model folder needs only the tokenizer",
                "files (tokenizer.json, tokenizer_config.json) and config.json."})
final class TokenizeCommand implements Callable<Integer> {
    @Option(names = "--model", required = true, paramLabel = "DIR", description = "model or tokenizer folder")
    Path model;
    @Option(names = "--data", required = true, paramLabel = "FILE", description = "preference JSONL (TRL's formats)")
    Path data;
    @Option(names = "--out", required = true, paramLabel = "FILE", description = "output JSONL (written atomically)")
    Path out;
    @Mixin
    LengthOptions lengthOptions;
    @Mixin
    VerboseOption verbose;

    @Override
    public Integer call() throws java.io.IOException {
        TrainConfig lengths = lengthOptions.config();  // the length options as train reads them
        if (!java.nio.file.Files.isDirectory(model)) {
            throw new IllegalArgumentException("model folder " + model + " does not exist");
        }
        PreferenceFormats.Loaded loaded = PreferenceFormats.read(data, ChatTemplate.forModel(model));
        List<JsonObject> records = new ArrayList<>();
        long truncated = 0;
        try (TextTokenizer tok = TextTokenizer.load(model)) {
            PreferenceCollator collator = lengths.collator(tok, model, loaded.templated());
            for (PreferencePair p : loaded.pairs()) {
                TokenizedPair t = collator.tokenize(p);
                truncated += t.truncated() ? 1 : 0;
                JsonObject o = new JsonObject();
                o.addProperty("prompt_text", p.prompt());
                o.addProperty("chosen_text", p.chosen());
                o.addProperty("rejected_text", p.rejected());
                o.add("prompt_input_ids", ids(t.prompt()));
                o.add("chosen_input_ids", ids(t.chosen()));
                o.add("rejected_input_ids", ids(t.rejected()));
                o.addProperty("truncated", t.truncated());
                records.add(o);
            }
        }
        PreferenceDataset.writeRaw(out, records);
        System.out.println("wrote " + records.size() + " pairs (" + loaded.format() + (loaded.templated()
                ? ", rendered with the chat template" : "") + "; " + truncated + " truncated) to " + out);
        return 0;
    }

    private static JsonArray ids(long[] ids) {
        JsonArray a = new JsonArray(ids.length);
        for (long id : ids) {
            a.add(id);
        }
        return a;
    }
}
