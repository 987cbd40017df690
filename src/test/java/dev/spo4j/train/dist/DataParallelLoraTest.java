package dev.spo4j.train.dist;

import static dev.spo4j.testing.RunFolders.metrics;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.spo4j.data.PreferenceDataset;
import dev.spo4j.synthetic.EmbeddedDefault;
import dev.spo4j.synthetic.SyntheticPreferences;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Data parallel with LoRA: two processes all-reduce only the adapters'
 * gradients and follow the single-process trajectory, with identical adapters on both ranks.
 * Run: {@code mvn -B -q test -Dspo4j.cuda=OFF -Dtest=DataParallelLoraTest}
 */
class DataParallelLoraTest {
    @Test
    void twoProcessesTrainTheSameAdapters(@TempDir Path tmp) throws Exception {
        Path model = EmbeddedDefault.prepare(tmp.resolve("embedded"), 42).modelDir();
        Path data = tmp.resolve("pairs.jsonl");
        PreferenceDataset.write(data, SyntheticPreferences.generate(16, 7));
        int steps = 3;
        List<String> common = List.of("train", "--model", model.toString(), "--data", data.toString(), "--lr", "1e-2",
                "--max-steps", String.valueOf(steps), "--threads", "1", "--dist-timeout", "60", "--warmup-steps", "1",
                "--lora-r", "4", "--lora-alpha", "8");  // fp32: bf16 rounding depends on each rank's padded length
        Path one = tmp.resolve("one"), two = tmp.resolve("two"), hashes = tmp.resolve("hashes");
        assertEquals(0, DataParallelTest.run(DataParallelTest.with(common, "--batch-size", "8", "--out", one.toString()),
                null, tmp.resolve("one.log")), Files.readString(tmp.resolve("one.log")));
        assertEquals(0, DataParallelTest.run(DataParallelTest.with(common, "--batch-size", "4", "--nproc-per-node", "2",
                "--out", two.toString()), hashes, tmp.resolve("two.log")), Files.readString(tmp.resolve("two.log")));
        DataParallelTest.compare(metrics(one), metrics(two), steps);
        DataParallelTest.assertSameParameters(hashes, steps);  // the hashed tensors are the trained ones: the adapters
        assertTrue(Files.exists(two.resolve("final-adapter/adapter_model.safetensors")));
        assertTrue(Files.readString(tmp.resolve("two.log")).contains("LoRA r 4"), "a LoRA run");
    }
}
