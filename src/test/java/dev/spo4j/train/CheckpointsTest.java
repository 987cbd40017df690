package dev.spo4j.train;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.bytedeco.pytorch.AdamW;
import org.bytedeco.pytorch.OutputArchive;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Checkpoint I/O: the optimiser archive through the atomic writer, a full disk, corrupt checkpoints. */
class CheckpointsTest {
    /** An AdamW over {@code n} floats after one step (so its moments are filled). */
    static AdamW steppedAdamW(int n) {
        torch.manual_seed(1);
        Tensor w = torch.randn(n);
        w.set_requires_grad(true);
        AdamW opt = Optimizers.adamW(new TensorVector(w), 1e-3, 0.9, 0.999, 1e-8, 0.0);
        w.mul(w).sum().backward();
        opt.step();
        return opt;
    }

    /** Written through our callback and read back, the AdamW state takes the next step exactly as the original. */
    @Test
    void optimizerArchiveRoundTrips(@TempDir Path tmp) throws IOException {
        int n = 70_000;  // records larger than one write
        torch.manual_seed(1);
        Tensor w = torch.randn(n).set_requires_grad(true);
        AdamW opt = Optimizers.adamW(new TensorVector(w), 1e-2, 0.9, 0.999, 1e-8, 0.0);
        w.mul(w).sum().backward();
        opt.step();
        Checkpoints.saveOptimizer(opt, tmp.resolve("ours.pt"));
        try (Stream<Path> s = Files.list(tmp)) {
            assertEquals(1, s.count(), "no temporary file left");
        }
        assertTrue(Files.size(tmp.resolve("ours.pt")) > 2L * 4 * n, "both moments are in the archive");
        Tensor v = w.detach().clone().set_requires_grad(true);
        AdamW copy = Optimizers.adamW(new TensorVector(v), 1e-2, 0.9, 0.999, 1e-8, 0.0);
        Checkpoints.loadOptimizer(tmp, "ours.pt", copy, new org.bytedeco.pytorch.Device("cpu"));
        for (AdamW o : List.of(opt, copy)) {
            Tensor p = o == opt ? w : v;
            o.zero_grad(true);
            p.mul(p).mul(torch.tensor(new float[] {3f})).sum().backward();
            o.step();
        }
        float[] a = new float[n], b = new float[n];
        w.data_ptr_float().get(a);
        v.data_ptr_float().get(b);
        assertArrayEquals(a, b, "the second step after a save and load");
    }

    @Test
    void truncatedOptimizerArchiveNamesTheFile(@TempDir Path tmp) throws IOException {
        AdamW opt = steppedAdamW(1000);
        Checkpoints.saveOptimizer(opt, tmp.resolve("optimizer.pt"));
        byte[] all = Files.readAllBytes(tmp.resolve("optimizer.pt"));
        Files.write(tmp.resolve("optimizer.pt"), java.util.Arrays.copyOf(all, all.length / 2));
        IllegalStateException e = assertThrows(IllegalStateException.class,
                () -> Checkpoints.loadOptimizer(tmp, "optimizer.pt", opt, new org.bytedeco.pytorch.Device("cpu")));
        assertTrue(e.getMessage().contains(tmp.resolve("optimizer.pt").toString()) && !e.getMessage().contains("\n"),
                e.getMessage());
    }

    /**
     * A full disk while optimizer.pt is written: LibTorch's own writer aborted the JVM (exit 134);
     * now an IOException says so and nothing is left. Needs a small tmpfs (root and mount(8)).
     */
    @Test
    void fullDiskWhileWritingTheOptimizerIsAnIOException(@TempDir Path tmp) throws Exception {
        Path mnt = Files.createDirectories(tmp.resolve("small"));
        Assumptions.assumeTrue(mount(mnt, "512k"), "cannot mount a 512 KiB tmpfs here (needs root); "
                + "the full-disk regression is not exercised");
        try {
            AdamW opt = steppedAdamW(200_000);  // two 800 KB moments: more than the tmpfs holds
            IOException e = assertThrows(IOException.class, () -> Checkpoints.saveOptimizer(opt, mnt.resolve("optimizer.pt")));
            assertTrue(String.valueOf(e.getMessage()).contains("No space left"), String.valueOf(e));
            try (Stream<Path> s = Files.list(mnt)) {
                assertEquals(List.of(), s.toList(), "nothing left on the full disk");
            }
            // and a small archive still fits afterwards: the writer's state was not poisoned
            Checkpoints.saveOptimizer(steppedAdamW(1000), mnt.resolve("small.pt"));
            assertTrue(Files.size(mnt.resolve("small.pt")) > 8000);
        } finally {
            new ProcessBuilder("umount", mnt.toString()).inheritIO().start().waitFor(30, TimeUnit.SECONDS);
        }
    }

    static boolean mount(Path dir, String size) {
        try {
            Process p = new ProcessBuilder("mount", "-t", "tmpfs", "-o", "size=" + size, "tmpfs", dir.toString())
                    .redirectErrorStream(true).redirectOutput(ProcessBuilder.Redirect.DISCARD).start();
            return p.waitFor(30, TimeUnit.SECONDS) && p.exitValue() == 0;
        } catch (IOException e) {
            return false;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return false;
        }
    }

    /**
     * A data-parallel rank gets its own generator state back from rankRngStates, not rank 0's;
     * a rank the checkpoint has no state for is refused, naming it.
     */
    @Test
    void eachRankRestoresItsOwnGeneratorState() {
        torch.manual_seed(7);
        String r0 = java.util.Base64.getEncoder().encodeToString(Checkpoints.cpuGeneratorState());
        torch.randn(1000);  // rank 1 drew more
        String r1 = java.util.Base64.getEncoder().encodeToString(Checkpoints.cpuGeneratorState());
        double next1 = torch.randn(1).item_double();
        Checkpoints.State st = new Checkpoints.State();
        st.rngState = r0;
        st.rankRngStates = new String[] {r0, r1};
        torch.manual_seed(99);
        Checkpoints.restoreGenerator(st, null, 1);
        assertEquals(next1, torch.randn(1).item_double(), 0.0);
        Checkpoints.restoreGenerator(st, null, 0);
        assertEquals(r0, java.util.Base64.getEncoder().encodeToString(Checkpoints.cpuGeneratorState()));
        IllegalStateException e = assertThrows(IllegalStateException.class,
                () -> Checkpoints.restoreGenerator(st, null, 2));
        assertTrue(e.getMessage().contains("rank 2 has none"), e.getMessage());
    }
}
