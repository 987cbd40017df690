package dev.spo4j.train;

import com.google.gson.Gson;
import com.google.gson.GsonBuilder;
import dev.spo4j.io.AtomicFiles;
import dev.spo4j.model.LlamaModel;
import dev.spo4j.model.LoraAdapters;
import dev.spo4j.model.ModelFolder;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Base64;
import java.util.Comparator;
import java.util.List;
import java.util.stream.Stream;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.pytorch.InputArchive;
import org.bytedeco.pytorch.Optimizer;
import org.bytedeco.pytorch.OutputArchive;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;

/**
 * Checkpoints of a run: {@code RUN/checkpoints/step-NNNNNNN/} holding {@code model/} (the
 * Hugging Face layout), {@code optimizer.pt} (LibTorch's archive of the AdamW moments and
 * step counts) and {@code trainer_state.json} (step, data position, the run's config and
 * LibTorch's CPU generator state). Each is written into a temporary folder and renamed, so
 * a crash leaves either a complete checkpoint or none; only the newest {@code keep} stay.
 */
public final class Checkpoints {
    private static final Gson GSON = new GsonBuilder().setPrettyPrinting().create();
    static final String STATE = "trainer_state.json", OPTIMIZER = "optimizer.pt", MODEL = "model";
    /** A LoRA run's checkpoint holds its adapters (PEFT layout) here instead of {@link #MODEL}. */
    static final String ADAPTER = "adapter";

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
                OutputArchive archive = new OutputArchive();
                optimizer.save(archive);
                archive.save_to(tmp.resolve(OPTIMIZER).toString());
                state.rngState = Base64.getEncoder().encodeToString(generatorState());
                Files.writeString(tmp.resolve(STATE), GSON.toJson(state));
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
        if (Files.exists(dir.resolve(STATE))) {
            return dir;
        }
        List<Path> all = list(dir);
        if (all.isEmpty()) {
            throw new IllegalArgumentException("no checkpoint in " + dir
                    + " (expected a checkpoint folder with " + STATE + ", or a run folder with checkpoints/step-*)");
        }
        return all.get(all.size() - 1);
    }

    /** The trainer_state.json of a checkpoint folder. */
    public static State readState(Path checkpoint) {
        try {
            return GSON.fromJson(Files.readString(checkpoint.resolve(STATE)), State.class);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read " + checkpoint.resolve(STATE), e);
        }
    }

    /** Loads the checkpoint's optimizer.pt into {@code optimizer}, its tensors mapped to {@code device}. */
    public static void loadOptimizer(Path checkpoint, Optimizer optimizer, org.bytedeco.pytorch.Device device) {
        InputArchive archive = new InputArchive();
        archive.load_from(checkpoint.resolve(OPTIMIZER).toString(), new org.bytedeco.pytorch.DeviceOptional(device));
        optimizer.load(archive);
    }

    /** Restores LibTorch's CPU generator from {@code state.rngState}; does nothing when that is null. */
    public static void restoreGenerator(State state) {
        if (state.rngState == null) {
            return;
        }
        byte[] bytes = Base64.getDecoder().decode(state.rngState);
        Tensor t = torch.empty(new long[] {bytes.length}, new TensorOptions(torch.ScalarType.Byte), null);
        new BytePointer(t.data_ptr()).put(bytes);
        torch.getDefaultCPUGenerator().set_state(t);
    }

    private static byte[] generatorState() {
        Tensor t = torch.getDefaultCPUGenerator().get_state().contiguous();
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
