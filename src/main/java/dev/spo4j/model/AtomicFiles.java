package dev.spo4j.model;

import java.io.IOException;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.concurrent.ThreadLocalRandom;

/**
 * Temporary siblings for write-then-rename. Unlike {@code Files.createTempFile}, which makes
 * owner-only (0600/0700) entries, these are created plainly, so the file or folder that is
 * renamed into place gets the usual permissions of the user's umask.
 */
final class AtomicFiles {
    private AtomicFiles() {}

    /** A new empty file {@code .<name>.<random>.tmp} in the target's folder (created if needed). */
    static Path newTempFileBeside(Path target) throws IOException {
        Path dir = target.toAbsolutePath().getParent();
        Files.createDirectories(dir);
        for (int attempt = 0; ; attempt++) {
            Path p = dir.resolve(siblingName(target, "tmp"));
            try {
                return Files.createFile(p);
            } catch (FileAlreadyExistsException e) {
                if (attempt > 100) {
                    throw e;
                }
            }
        }
    }

    /** A new empty folder {@code .<name>.<random>.<tag>} beside the target. */
    static Path newTempDirBeside(Path target, String tag) throws IOException {
        Path dir = target.toAbsolutePath().getParent();
        Files.createDirectories(dir);
        for (int attempt = 0; ; attempt++) {
            Path p = dir.resolve(siblingName(target, tag));
            try {
                return Files.createDirectory(p);
            } catch (FileAlreadyExistsException e) {
                if (attempt > 100) {
                    throw e;
                }
            }
        }
    }

    /** An unused name {@code .<name>.<random>.<tag>} beside the target (nothing created). */
    static Path freeSiblingName(Path target, String tag) {
        Path dir = target.toAbsolutePath().getParent();
        Path p;
        do {
            p = dir.resolve(siblingName(target, tag));
        } while (Files.exists(p));
        return p;
    }

    private static String siblingName(Path target, String tag) {
        return "." + target.getFileName() + "." + Long.toHexString(ThreadLocalRandom.current().nextLong()) + "." + tag;
    }

    /** Renames tmp over target atomically (replacing a file of that name). */
    static void replace(Path tmp, Path target) throws IOException {
        Files.move(tmp, target, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
    }
}
