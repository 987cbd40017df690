package dev.spo4j.cli;

import dev.spo4j.data.PreferenceCollator;
import dev.spo4j.data.PreferenceDataset;
import dev.spo4j.data.PreferencePair;
import dev.spo4j.data.TextTokenizer;
import dev.spo4j.loss.LmHead;
import dev.spo4j.model.LlamaModel;
import dev.spo4j.train.ReferenceLogProbs;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.Callable;
import org.bytedeco.pytorch.global.torch;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

@Command(name = "logps", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Precompute reference log-probs: writes each input record with ref_chosen_logps and",
                "ref_rejected_logps added (TRL's names), so training needs no reference model."})
final class LogpsCommand implements Callable<Integer> {
    @Option(names = "--model", required = true, paramLabel = "DIR", description = "Hugging Face model folder")
    Path model;
    @Option(names = "--data", required = true, paramLabel = "FILE", description = "preference JSONL")
    Path data;
    @Option(names = "--out", required = true, paramLabel = "FILE", description = "output JSONL (written atomically)")
    Path out;
    @Option(names = "--batch-size", defaultValue = "8", description = "(default: ${DEFAULT-VALUE})")
    int batchSize;
    @Option(names = "--max-length", defaultValue = "512", description = "(default: ${DEFAULT-VALUE})")
    int maxLength;
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
        if (threads > 0) {
            torch.set_num_threads(threads);
        }
        List<PreferencePair> pairs = PreferenceDataset.read(data);
        try (TextTokenizer tok = TextTokenizer.load(model)) {
            LlamaModel m = modelOptions.load(model);
            double[][] refs = ReferenceLogProbs.compute(m, new PreferenceCollator(tok, maxLength), pairs, batchSize,
                    threads > 0 ? threads : torch.get_num_threads(), lmHead, (long) lmHeadChunkMb << 20);
            PreferenceDataset.writeWithReferenceLogps(data, out, refs[0], refs[1]);
        }
        System.out.println("wrote " + pairs.size() + " records with ref_chosen_logps, ref_rejected_logps to " + out);
        return 0;
    }
}
