package dev.spo4j.train;

import com.google.gson.Gson;
import com.google.gson.GsonBuilder;
import dev.spo4j.io.AtomicFiles;
import dev.spo4j.model.LlamaModel;
import dev.spo4j.model.LoraAdapters;
import dev.spo4j.model.ModelFolder;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Base64;
import java.util.Comparator;
import java.util.List;
import java.util.stream.Stream;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.pytorch.ArchiveWriter;
import org.bytedeco.pytorch.InputArchive;
import org.bytedeco.pytorch.Optimizer;
import org.bytedeco.pytorch.OutputArchive;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;

/**
 * Checkpoints of a run: {@code RUN/checkpoints/step-NNNNNNN/} holding {@code model/} (the
 * Hugging Face layout), {@code optimizer.pt} (LibTorch's archive of the AdamW moments and
 * step counts) and {@code trainer_state.json} (step, data position, the run's config,
 * LibTorch's CPU generator state and, on a GPU, that device's generator state). Each is
 * written into a temporary folder and renamed, so a crash leaves either a complete
 * checkpoint or none; only the newest {@code keep} stay.
 */
public final class Checkpoints {
    private static final Gson GSON = new GsonBuilder().setPrettyPrinting().create();
    static final String STATE = "trainer_state.json", OPTIMIZER = "optimizer.pt", MODEL = "model";
    /** A LoRA run's checkpoint holds its adapters (PEFT layout) here instead of {@link #MODEL}. */
    static final String ADAPTER = "adapter";
    /** Every other file of the checkpoint with its size and CRC-32C, written last. */
    static final String MANIFEST = "manifest.json";

    private Checkpoints() {}

    /** What a checkpoint records besides the weights and the optimiser. */
    public static final class State {
        /** Optimiser steps done. */
        public int step;
        /** The data position: epoch ... */
        public int epoch;
        /** ... and the next batch's index in it. */
        public int batchIndex;
        /** The run's {@link TrainConfig} as JSON. */
        public String config;
        /** LibTorch's CPU generator state, base64. */
        public String rngState;
        /**
         * The training device's generator state, base64, when that is a GPU (LoRA dropout draws
         * its masks there); null on the CPU and in checkpoints written before it was kept.
         */
        public String deviceRngState;
        /**
         * Data parallel: every rank's CPU generator state, base64, by rank (rank 0's is also
         * {@link #rngState}); null for one process and in checkpoints written before it was kept.
         */
        public String[] rankRngStates;
        /** Data parallel on GPUs: every rank's device generator state, as {@link #rankRngStates}. */
        public String[] rankDeviceRngStates;
        /** The loss's running state: bco-pair's {mean reward, batch count}; null for the other losses. */
        public double[] lossState;
    }

    /**
     * Writes {@code runDir/checkpoints/step-NNNNNNN/} for {@code state.step} (replacing one of
     * that step), tokenizer files copied from {@code tokenizerDir}, then deletes all but the
     * newest {@code keep} checkpoints. Fills in {@code state.rngState}; returns the checkpoint
     * folder. I/O errors surface as {@link UncheckedIOException}.
     */
    public static Path save(Path runDir, LlamaModel model, Optimizer optimizer, State state, Path tokenizerDir,
                            int keep) {
        return save(runDir, model, null, optimizer, state, tokenizerDir, keep);
    }

    /**
     * As {@link #save(Path, LlamaModel, Optimizer, State, Path, int)}; with {@code adapters}
     * not null (a LoRA run) the checkpoint holds {@code adapter/} (PEFT layout) instead of the
     * frozen base's weights.
     */
    public static Path save(Path runDir, LlamaModel model, LoraAdapters adapters, Optimizer optimizer, State state,
                            Path tokenizerDir, int keep) {
        try {
            Path root = Files.createDirectories(runDir.resolve("checkpoints"));
            String name = String.format(java.util.Locale.ROOT, "step-%07d", state.step);
            Path dst = root.resolve(name);
            removeLeftovers(root);
            Path tmp = AtomicFiles.newTempDirBeside(dst, "tmp");
            try {
                if (adapters == null) {
                    ModelFolder.save(model, tmp.resolve(MODEL), tokenizerDir);
                } else {
                    adapters.save(tmp.resolve(ADAPTER), tokenizerDir.toString(), tokenizerDir);
                }
                saveOptimizer(optimizer, tmp.resolve(OPTIMIZER));
                // this process's states; in data parallel, the caller fills in every rank's
                // (rankRngStates), since the ranks' draws part with their micro-batches' shapes
                state.rngState = Base64.getEncoder().encodeToString(cpuGeneratorState());
                org.bytedeco.pytorch.Device device = model.parameterList().get(0).device();
                byte[] onDevice = deviceGeneratorState(device);
                state.deviceRngState = onDevice == null ? null : Base64.getEncoder().encodeToString(onDevice);
                Files.writeString(tmp.resolve(STATE), GSON.toJson(state));
                AtomicFiles.writeString(tmp.resolve(MANIFEST), GSON.toJson(manifest(tmp)));
                AtomicFiles.replaceDirectory(tmp, dst);
            } finally {
                AtomicFiles.deleteTree(tmp);
            }
            List<Path> all = list(runDir);
            for (int i = 0; i + keep < all.size(); i++) {
                AtomicFiles.deleteTree(all.get(i));
            }
            return dst;
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write a checkpoint in " + runDir, e);
        }
    }

    /** Complete checkpoints of a run, oldest first. */
    public static List<Path> list(Path runDir) {
        Path root = runDir.resolve("checkpoints");
        List<Path> out = new ArrayList<>();
        if (!Files.isDirectory(root)) {
            return out;
        }
        try (Stream<Path> s = Files.list(root)) {
            s.filter(p -> p.getFileName().toString().startsWith("step-") && Files.exists(p.resolve(STATE)))
                    .sorted(Comparator.comparing(p -> p.getFileName().toString()))
                    .forEach(out::add);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return out;
    }

    /** A checkpoint folder, or a run folder (its newest checkpoint). */
    public static Path resolve(Path dir) {
        return resolve(dir, null);
    }

    /**
     * A checkpoint folder (which must verify), or a run folder's newest checkpoint that verifies
     * ({@link #verify}): a damaged one is passed over with a warning on {@code warn} (when not
     * null) naming the bad file, and the next older one is tried. Leftovers of interrupted
     * saves and deletions are removed first.
     */
    public static Path resolve(Path dir, java.io.PrintStream warn) {
        if (Files.exists(dir.resolve(STATE))) {
            String bad = verify(dir);
            if (bad != null) {
                throw new IllegalArgumentException("the checkpoint " + dir + " is damaged: " + bad
                        + " (resume from the run folder to fall back to an older checkpoint)");
            }
            return dir;
        }
        Path root = dir.resolve("checkpoints");
        if (Files.isDirectory(root)) {
            try {
                removeLeftovers(root);
            } catch (IOException e) {
                throw new UncheckedIOException("cannot remove leftovers in " + root, e);
            }
        }
        List<Path> all = list(dir);
        if (all.isEmpty()) {
            throw new IllegalArgumentException("no checkpoint in " + dir
                    + " (expected a checkpoint folder with " + STATE + ", or a run folder with checkpoints/step-*)");
        }
        List<String> damaged = new ArrayList<>();
        for (int i = all.size() - 1; i >= 0; i--) {
            Path c = all.get(i);
            String bad = verify(c);
            if (bad == null) {
                if (!damaged.isEmpty() && warn != null) {
                    warn.println("spo4j: warning: " + String.join("; ", damaged) + "; resuming from " + c.getFileName());
                }
                return c;
            }
            damaged.add("checkpoint " + c.getFileName() + " is damaged (" + bad + ")");
        }
        throw new IllegalArgumentException("no usable checkpoint in " + dir + ": " + String.join("; ", damaged));
    }

    /**
     * Null when the checkpoint is complete and intact: its trainer_state.json parses and every
     * file of its manifest has the recorded size and CRC-32C (a checkpoint written before
     * manifests existed is checked for its state file only). Otherwise what is wrong, naming
     * the file.
     */
    static String verify(Path checkpoint) {
        try {
            State st = GSON.fromJson(Files.readString(checkpoint.resolve(STATE)), State.class);
            if (st == null || st.config == null) {
                return checkpoint.resolve(STATE) + " is empty or has no config";
            }
        } catch (IOException e) {
            return checkpoint.resolve(STATE) + " cannot be read: " + e;
        } catch (RuntimeException e) {
            return checkpoint.resolve(STATE) + " is not valid JSON: " + firstLine(e.getMessage());
        }
        Path mf = checkpoint.resolve(MANIFEST);
        if (!Files.exists(mf)) {
            return Files.exists(checkpoint.resolve(OPTIMIZER)) ? null : checkpoint.resolve(OPTIMIZER) + " is missing";
        }
        java.util.Map<String, String> want;
        try {
            want = GSON.fromJson(Files.readString(mf),
                    new com.google.gson.reflect.TypeToken<java.util.TreeMap<String, String>>() {}.getType());
        } catch (IOException | RuntimeException e) {
            return mf + " cannot be read: " + firstLine(String.valueOf(e.getMessage()));
        }
        if (want == null || want.isEmpty()) {
            return mf + " is empty";
        }
        for (java.util.Map.Entry<String, String> e : want.entrySet()) {
            Path f = checkpoint.resolve(e.getKey());
            if (!Files.isRegularFile(f)) {
                return f + " is missing";
            }
            String got;
            try {
                got = checksum(f);
            } catch (IOException ex) {
                return f + " cannot be read: " + ex;
            }
            if (!got.equals(e.getValue())) {
                return f + " does not match the manifest (size and CRC-32C " + got + ", expected " + e.getValue() + ")";
            }
        }
        return null;
    }

    /** relative path → "size crc32c" of every file under {@code dir} (the manifest left out). */
    static java.util.TreeMap<String, String> manifest(Path dir) throws IOException {
        java.util.TreeMap<String, String> out = new java.util.TreeMap<>();
        try (Stream<Path> walk = Files.walk(dir)) {
            for (Path f : walk.filter(Files::isRegularFile).toList()) {
                String rel = dir.relativize(f).toString().replace('\\', '/');
                if (!rel.equals(MANIFEST)) {
                    out.put(rel, checksum(f));
                }
            }
        }
        return out;
    }

    static String checksum(Path f) throws IOException {
        java.util.zip.CRC32C crc = new java.util.zip.CRC32C();
        long size = 0;
        try (java.io.InputStream in = Files.newInputStream(f)) {
            byte[] buf = new byte[1 << 16];
            for (int n; (n = in.read(buf)) > 0; ) {
                crc.update(buf, 0, n);
                size += n;
            }
        }
        return size + " " + String.format(java.util.Locale.ROOT, "%08x", crc.getValue());
    }

    /** The trainer_state.json of a checkpoint folder. */
    public static State readState(Path checkpoint) {
        Path file = checkpoint.resolve(STATE);
        State st;
        try {
            st = GSON.fromJson(Files.readString(file), State.class);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read " + file, e);
        } catch (RuntimeException e) {
            throw new IllegalArgumentException(file + " is not valid JSON: " + firstLine(e.getMessage()));
        }
        if (st == null || st.config == null) {
            throw new IllegalArgumentException(file + " is empty or has no config");
        }
        return st;
    }

    /**
     * Writes LibTorch's archive of {@code optimizer} to {@code file} through {@link AtomicFiles}.
     * LibTorch's own file writer throws from a destructor when a write fails (a full disk),
     * which aborts the process; here LibTorch writes into a callback that never fails: the
     * first I/O error is kept, the rest of the archive is discarded, and the error is thrown
     * once LibTorch has returned.
     */
    static void saveOptimizer(Optimizer optimizer, Path file) throws IOException {
        OutputArchive archive = new OutputArchive();
        optimizer.save(archive);
        AtomicFiles.write(file, ch -> {
            try (ArchiveSink sink = new ArchiveSink(ch)) {
                archive.save_to(sink);
                if (sink.error != null) {
                    throw sink.error;
                }
            }
        });
    }

    /** LibTorch's archive writer callback over a channel: reports every byte written, keeps the first error. */
    private static final class ArchiveSink extends ArchiveWriter {
        private final FileChannel channel;
        IOException error;

        ArchiveSink(FileChannel channel) {
            this.channel = channel;
        }

        @Override
        public long call(Pointer data, long size) {
            if (error == null) {
                try {
                    for (long off = 0; off < size; ) {
                        int n = (int) Math.min(size - off, 1 << 30);
                        BytePointer p = new BytePointer(data);
                        p.position(off).limit(off + n);
                        AtomicFiles.writeFully(channel, p.asByteBuffer());
                        off += n;
                    }
                } catch (IOException e) {
                    error = e;
                } catch (RuntimeException | Error e) {  // nothing may escape into LibTorch's writer
                    error = new IOException(e.toString(), e);
                }
            }
            return size;
        }
    }

    /** The run's settings recorded in a checkpoint's state, validated; IllegalArgumentException naming the file when they are not valid. */
    public static TrainConfig config(Path checkpoint, State state) {
        try {
            TrainConfig c = TrainConfig.fromJson(state.config);
            if (c == null) {
                throw new IllegalArgumentException("empty");
            }
            c.validate();
            return c;
        } catch (RuntimeException e) {
            throw new IllegalArgumentException(checkpoint.resolve(STATE) + ": its \"config\" is not a run's settings ("
                    + firstLine(e.getMessage()) + ")");
        }
    }

    /** Loads the checkpoint's optimizer.pt into {@code optimizer}, its tensors mapped to {@code device}. */
    public static void loadOptimizer(Path checkpoint, Optimizer optimizer, org.bytedeco.pytorch.Device device) {
        loadOptimizer(checkpoint, OPTIMIZER, optimizer, device);
    }

    static void loadOptimizer(Path checkpoint, String name, Optimizer optimizer, org.bytedeco.pytorch.Device device) {
        Path file = checkpoint.resolve(name);
        try {
            InputArchive archive = new InputArchive();
            archive.load_from(file.toString(), new org.bytedeco.pytorch.DeviceOptional(device));
            optimizer.load(archive);
        } catch (RuntimeException e) {
            throw new IllegalStateException("cannot read the optimizer state " + file + ": " + firstLine(e.getMessage()), e);
        }
    }

    /**
     * Restores LibTorch's CPU generator from {@code state.rngState} and, on a GPU, that device's
     * generator from {@code state.deviceRngState}; each does nothing when its state is null.
     */
    public static void restoreGenerator(State state, org.bytedeco.pytorch.Device device) {
        restoreGenerator(state, device, 0);
    }

    /**
     * As {@link #restoreGenerator(State, org.bytedeco.pytorch.Device)} for data-parallel rank
     * {@code rank}: its own states from {@code rankRngStates} / {@code rankDeviceRngStates} where
     * the checkpoint has them (the caller has checked that the world size is the run's), else
     * rank 0's (checkpoints written before they were kept).
     */
    public static void restoreGenerator(State state, org.bytedeco.pytorch.Device device, int rank) {
        String cpu = state.rankRngStates != null ? rankEntry(state.rankRngStates, rank, "rankRngStates")
                : state.rngState;
        String dev = state.rankDeviceRngStates != null
                ? rankEntry(state.rankDeviceRngStates, rank, "rankDeviceRngStates") : state.deviceRngState;
        if (cpu != null) {
            torch.getDefaultCPUGenerator().set_state(bytesTensor(Base64.getDecoder().decode(cpu)));
        }
        if (dev != null && device != null && !device.is_cpu()) {
            deviceGenerator(device).set_state(bytesTensor(Base64.getDecoder().decode(dev)));
        }
    }

    private static String rankEntry(String[] states, int rank, String what) {
        if (rank < 0 || rank >= states.length) {
            throw new IllegalStateException("the checkpoint's " + what + " holds " + states.length
                    + " ranks' states; rank " + rank + " has none (resume with the run's world size)");
        }
        return states[rank];
    }

    /** This process's CPU generator state (LibTorch's default CPU generator). */
    public static byte[] cpuGeneratorState() {
        return generatorState(torch.getDefaultCPUGenerator());
    }

    /** The default generator state of {@code device}; null for the CPU. */
    public static byte[] deviceGeneratorState(org.bytedeco.pytorch.Device device) {
        return device == null || device.is_cpu() ? null : generatorState(deviceGenerator(device));
    }

    /** The default generator of a (GPU) device. */
    private static org.bytedeco.pytorch.Generator deviceGenerator(org.bytedeco.pytorch.Device device) {
        return torch.globalContext().defaultGenerator(device);
    }

    /** A CPU uint8 tensor holding {@code bytes} (a generator state). */
    private static Tensor bytesTensor(byte[] bytes) {
        Tensor t = torch.empty(new long[] {bytes.length}, new TensorOptions(torch.ScalarType.Byte), null);
        new BytePointer(t.data_ptr()).put(bytes);
        return t;
    }

    /** The first line of a (LibTorch) message, which goes on with a C++ backtrace. */
    static String firstLine(String message) {
        if (message == null) {
            return "(no message)";
        }
        int nl = message.indexOf('\n');
        return nl < 0 ? message : message.substring(0, nl);
    }

    private static byte[] generatorState(org.bytedeco.pytorch.Generator g) {
        Tensor t = g.get_state().cpu().contiguous();  // a CPU uint8 tensor for the CPU and CUDA generators
        byte[] b = new byte[(int) t.numel()];
        new BytePointer(t.data_ptr()).get(b);
        return b;
    }

    /** Hidden temporary folders that an interrupted save or deletion left in {@code checkpoints/}. */
    private static void removeLeftovers(Path root) throws IOException {
        try (Stream<Path> s = Files.list(root)) {
            for (Path p : s.filter(q -> q.getFileName().toString().startsWith(".step-")).toList()) {
                AtomicFiles.deleteTree(p);
            }
        }
    }
}
