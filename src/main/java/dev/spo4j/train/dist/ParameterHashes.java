package dev.spo4j.train.dist;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.List;
import java.util.Locale;
import java.util.zip.CRC32;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.pytorch.Tensor;

/**
 * A debugging aid for data-parallel runs: with the environment variable
 * {@code SPO4J_PARAM_HASHES=DIR}, each rank appends "step crc32" of its parameters' raw bytes
 * (in the trainer's parameter order) to {@code DIR/params-rank<r>.txt}
 * after every optimiser step, so that tests can check that the ranks hold identical weights.
 * Without the variable it does nothing.
 */
public final class ParameterHashes {
    /** The environment variable naming the folder. */
    public static final String ENV = "SPO4J_PARAM_HASHES";
    private final Path file;

    private ParameterHashes(Path file) {
        this.file = file;
    }

    /** The recorder of rank {@code rank}: a no-op unless {@link #ENV} is set. */
    public static ParameterHashes fromEnvironment(int rank) {
        String dir = System.getenv(ENV);
        return new ParameterHashes(dir == null || dir.isBlank() ? null : Path.of(dir).resolve("params-rank" + rank + ".txt"));
    }

    /** Appends "step crc32" of {@code params} (in order) to this rank's file. */
    public void record(int step, List<Tensor> params) {
        if (file == null) {
            return;
        }
        CRC32 crc = new CRC32();
        for (Tensor p : params) {
            Tensor c = p.cpu().contiguous();
            byte[] b = new byte[(int) c.nbytes()];
            new BytePointer(c.data_ptr()).get(b);
            crc.update(b);
        }
        try {
            Files.createDirectories(file.getParent());
            Files.writeString(file, String.format(Locale.ROOT, "%d %08x%n", step, crc.getValue()), StandardCharsets.UTF_8,
                    StandardOpenOption.CREATE, StandardOpenOption.APPEND);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write " + file, e);
        }
    }
}
