package dev.spo4j.io;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.Comparator;
import java.util.concurrent.ThreadLocalRandom;
import java.util.stream.Stream;

/**
 * Every file and folder spo4j writes goes through here, so that a crash, a kill or a full disk
 * leaves either the old content or the new one, never a half-written file: the content is
 * written to a hidden temporary sibling ({@code .<name>.<random>.<tag>}), forced to disk and
 * renamed over the target. Deletion renames first, so an interrupted delete leaves only a
 * hidden folder, never a half-deleted one that looks complete.
 *
 * <p>Temporary siblings are created plainly (unlike {@code Files.createTempFile}, which makes
 * owner-only entries), so what is renamed into place gets the permissions of the user's umask.
 */
public final class AtomicFiles {
    private AtomicFiles() {}

    /** Writes a file through a channel (positioned at 0 of an empty file). */
    @FunctionalInterface
    public interface ChannelWriter {
        /** Writes the content. */
        void write(FileChannel channel) throws IOException;
    }

    /** Writes a file at a path (for libraries that open the file themselves). */
    @FunctionalInterface
    public interface PathWriter {
        /** Writes the content to {@code tmp}, an existing empty file. */
        void write(Path tmp) throws IOException;
    }

    /** Writes {@code target} through {@code body}: temporary sibling, fsync, rename. */
    public static void write(Path target, ChannelWriter body) throws IOException {
        Path tmp = newTempFileBeside(target);
        try {
            try (FileChannel ch = FileChannel.open(tmp, StandardOpenOption.WRITE, StandardOpenOption.TRUNCATE_EXISTING)) {
                body.write(ch);
                ch.force(true);
            }
            replace(tmp, target);
        } finally {
            Files.deleteIfExists(tmp);
        }
    }

    /** Writes {@code target} by a library call on a temporary path, then forces and renames it. */
    public static void writeAt(Path target, PathWriter body) throws IOException {
        Path tmp = newTempFileBeside(target);
        try {
            body.write(tmp);
            try (FileChannel ch = FileChannel.open(tmp, StandardOpenOption.WRITE)) {
                ch.force(true);
            }
            replace(tmp, target);
        } finally {
            Files.deleteIfExists(tmp);
        }
    }

    /** Writes UTF-8 text to {@code target}. */
    public static void writeString(Path target, String text) throws IOException {
        byte[] bytes = text.getBytes(StandardCharsets.UTF_8);
        write(target, ch -> writeFully(ch, java.nio.ByteBuffer.wrap(bytes)));
    }

    /** Writes every remaining byte of {@code buffer} (a channel may write fewer per call). */
    public static void writeFully(FileChannel ch, java.nio.ByteBuffer buffer) throws IOException {
        while (buffer.hasRemaining()) {
            ch.write(buffer);
        }
    }

    /** A new empty file {@code .<name>.<random>.tmp} in the target's folder (created if needed). */
    public static Path newTempFileBeside(Path target) throws IOException {
        Path dir = parentOf(target);
        Files.createDirectories(dir);
        for (int attempt = 0; ; attempt++) {
            try {
                return Files.createFile(dir.resolve(siblingName(target, "tmp")));
            } catch (FileAlreadyExistsException e) {
                if (attempt > 100) {
                    throw e;
                }
            }
        }
    }

    /** A new empty folder {@code .<name>.<random>.<tag>} beside the target (its parent is created if needed). */
    public static Path newTempDirBeside(Path target, String tag) throws IOException {
        Path dir = parentOf(target);
        Files.createDirectories(dir);
        for (int attempt = 0; ; attempt++) {
            try {
                return Files.createDirectory(dir.resolve(siblingName(target, tag)));
            } catch (FileAlreadyExistsException e) {
                if (attempt > 100) {
                    throw e;
                }
            }
        }
    }

    /** Whether {@code p}'s name has the form of a temporary sibling of {@code targetName} written here. */
    public static boolean isTempSiblingOf(Path p, String targetName) {
        String n = p.getFileName().toString();
        return n.startsWith("." + targetName + ".");
    }

    /** Renames {@code tmp} over the file {@code target} atomically (replacing a file of that name). */
    public static void replace(Path tmp, Path target) throws IOException {
        try {
            Files.move(tmp, target, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        } catch (AtomicMoveNotSupportedException e) {
            Files.move(tmp, target, StandardCopyOption.REPLACE_EXISTING);
        }
    }

    /**
     * Puts the complete folder {@code tmpDir} (a sibling made by {@link #newTempDirBeside}) in
     * place of {@code target}: an existing target is moved aside first and put back if the
     * second rename fails, then deleted. On return {@code tmpDir} no longer exists.
     */
    public static void replaceDirectory(Path tmpDir, Path target) throws IOException {
        if (Files.exists(target)) {
            Path old = freeSiblingName(target, "old");
            Files.move(target, old, StandardCopyOption.ATOMIC_MOVE);
            try {
                Files.move(tmpDir, target, StandardCopyOption.ATOMIC_MOVE);
            } catch (IOException e) {
                Files.move(old, target, StandardCopyOption.ATOMIC_MOVE);  // put the old one back
                throw e;
            }
            deleteTree(old);
        } else {
            Files.move(tmpDir, target, StandardCopyOption.ATOMIC_MOVE);
        }
    }

    /**
     * Deletes a file or folder tree: a folder is first renamed to a hidden sibling, so that an
     * interrupted deletion never leaves a partial folder under the original name. Nothing
     * there is not an error.
     */
    public static void deleteTree(Path root) throws IOException {
        if (!Files.exists(root, java.nio.file.LinkOption.NOFOLLOW_LINKS)) {
            return;
        }
        Path doomed = root;
        if (Files.isDirectory(root, java.nio.file.LinkOption.NOFOLLOW_LINKS)
                && !root.getFileName().toString().startsWith(".")) {
            doomed = freeSiblingName(root, "del");
            Files.move(root, doomed, StandardCopyOption.ATOMIC_MOVE);
        }
        try (Stream<Path> walk = Files.walk(doomed)) {
            for (Path p : (Iterable<Path>) walk.sorted(Comparator.reverseOrder())::iterator) {
                try {
                    Files.delete(p);
                } catch (NoSuchFileException ignored) {
                    // already gone
                }
            }
        } catch (UncheckedIOException e) {
            throw e.getCause();
        }
    }

    /** An unused name {@code .<name>.<random>.<tag>} beside the target (nothing created). */
    static Path freeSiblingName(Path target, String tag) {
        Path dir = parentOf(target);
        Path p;
        do {
            p = dir.resolve(siblingName(target, tag));
        } while (Files.exists(p));
        return p;
    }

    private static Path parentOf(Path target) {
        return target.toAbsolutePath().getParent();
    }

    private static String siblingName(Path target, String tag) {
        return "." + target.getFileName() + "." + Long.toHexString(ThreadLocalRandom.current().nextLong()) + "." + tag;
    }
}
