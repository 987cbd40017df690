package dev.spo4j.cli;

import dev.spo4j.data.ChatTemplate;
import dev.spo4j.data.PreferenceCollator;
import dev.spo4j.data.PreferenceDataset;
import dev.spo4j.data.PreferenceFormats;
import dev.spo4j.data.TextTokenizer;
import dev.spo4j.data.TokenizedPair;
import dev.spo4j.loss.LmHead;
import dev.spo4j.model.LlamaModel;
import dev.spo4j.train.ReferenceLogProbs;
import dev.spo4j.train.TrainConfig;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.Callable;
import org.bytedeco.pytorch.global.torch;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/**
 * Precomputes reference log-probs exactly as {@code train} would: the data is read in TRL's
 * formats ({@link PreferenceFormats}, conversational records rendered by the model's chat
 * template) and tokenized by the collator of {@link TrainConfig#collator} with the same length
 * options, so the values equal the run's {@code reference_logps.json} for the same settings.
 */
@Command(name = "logps", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Precompute reference log-probs: writes each input record with ref_chosen_logps and",
                "ref_rejected_logps added (TRL's names), so training needs no reference model. The data and",
                "length options are read as train reads them: give train's --max-length, --max-prompt-length,",
                "--max-completion-length and --truncation-mode."})
final class LogpsCommand implements Callable<Integer> {
    @Option(names = "--model", required = true, paramLabel = "DIR", description = "Hugging Face model folder")
    Path model;
    @Option(names = "--data", required = true, paramLabel = "FILE", description = "preference JSONL (TRL's formats)")
    Path data;
    @Option(names = "--out", required = true, paramLabel = "FILE", description = "output JSONL (written atomically)")
    Path out;
    @Option(names = "--batch-size", defaultValue = "8", description = "(default: ${DEFAULT-VALUE})")
    int batchSize;
    @Mixin
    LengthOptions lengthOptions;
    @Option(names = "--threads", defaultValue = "0", description = "0 = LibTorch's default (default: ${DEFAULT-VALUE})")
    int threads;
    @Option(names = "--lm-head", defaultValue = "fused", description = "fused (log-probs from the hidden states, one "
            + "chunk of logits at a time) | materialised (the model's full logits) (default: ${DEFAULT-VALUE})")
    LmHead lmHead;
    @Option(names = "--lm-head-chunk-mb", defaultValue = "256", paramLabel = "MIB",
            description = "fused LM head: MiB of logits in flight at most (default: ${DEFAULT-VALUE})")
    int lmHeadChunkMb;
    @Mixin
    ModelOptions modelOptions;
    @Mixin
    VerboseOption verbose;

    @Override
    public Integer call() throws Exception {
        if (batchSize < 1) {
            throw new IllegalArgumentException("--batch-size = " + batchSize + " (expected >= 1)");
        }
        modelOptions.check(model);
        if (lmHeadChunkMb < 1) {
            throw new IllegalArgumentException("--lm-head-chunk-mb = " + lmHeadChunkMb + " (expected >= 1)");
        }
        TrainConfig lengths = lengthOptions.config();  // the length options as train reads them
        if (!Files.isDirectory(model)) {
            throw new IllegalArgumentException("model folder " + model + " does not exist");
        }
        // everything is read and tokenized (and a bad record named) before the model is loaded
        PreferenceFormats.Loaded loaded = PreferenceFormats.read(data, ChatTemplate.forModel(model));
        if (threads > 0) {
            dev.spo4j.kernels.OpenMp.setThreads(threads);
        }
        long truncated;
        try (TextTokenizer tok = TextTokenizer.load(model)) {
            PreferenceCollator collator = lengths.collator(tok, model, loaded.templated());
            truncated = collator.tokenizeAll(loaded.pairs()).stream().filter(TokenizedPair::truncated).count();
            LlamaModel m = modelOptions.load(model);
            double[][] refs = ReferenceLogProbs.compute(m, collator, loaded.pairs(), batchSize,
                    threads > 0 ? threads : torch.get_num_threads(), lmHead, (long) lmHeadChunkMb << 20);
            PreferenceDataset.writeWithReferenceLogps(data, out, refs[0], refs[1]);
        }
        System.out.println("wrote " + loaded.pairs().size() + " records (" + loaded.format() + (loaded.templated()
                ? ", rendered with the chat template" : "") + "; " + truncated + " truncated) with ref_chosen_logps, "
                + "ref_rejected_logps to " + out);
        return 0;
    }
}
