package dev.spo4j.io;

import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CharsetDecoder;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;

/**
 * Reads a text file line by line, decoding each line on its own, so that bytes that are not
 * UTF-8 are reported on their own line (a {@code BufferedReader} decodes ahead of the line it
 * returns and fails on an earlier one). Lines end at '\n'; a '\r' before it is dropped.
 */
public final class Utf8Lines {
    private Utf8Lines() {}

    /** What is done with each line: its text, or null and the byte offset in the line where it is not UTF-8. */
    @FunctionalInterface
    public interface Visitor {
        /**
         * @param lineNo   1-based line number
         * @param text     the decoded line, or null when it is not UTF-8
         * @param badByte  when text is null, the 0-based offset in the line of the first bad byte
         */
        void line(int lineNo, String text, int badByte);
    }

    /** Visits every line of {@code file} (the last one also without a final '\n'). */
    public static void read(Path file, Visitor visitor) throws IOException {
        CharsetDecoder dec = StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT)
                .onUnmappableCharacter(CodingErrorAction.REPORT);
        byte[] chunk = new byte[1 << 16];
        byte[] line = new byte[256];
        int len = 0, lineNo = 0;
        try (InputStream in = Files.newInputStream(file)) {
            int n;
            while ((n = in.read(chunk)) > 0) {
                int start = 0;
                for (int i = 0; i < n; i++) {
                    if (chunk[i] == '\n') {
                        int add = i - start;
                        line = ensure(line, len + add);
                        System.arraycopy(chunk, start, line, len, add);
                        len += add;
                        visit(dec, line, len, ++lineNo, visitor);
                        len = 0;
                        start = i + 1;
                    }
                }
                int add = n - start;
                line = ensure(line, len + add);
                System.arraycopy(chunk, start, line, len, add);
                len += add;
            }
        }
        if (len > 0) {
            visit(dec, line, len, ++lineNo, visitor);
        }
    }

    private static byte[] ensure(byte[] a, int size) {
        return size <= a.length ? a : Arrays.copyOf(a, Math.max(size, 2 * a.length));
    }

    private static void visit(CharsetDecoder dec, byte[] line, int len, int lineNo, Visitor visitor) {
        if (len > 0 && line[len - 1] == '\r') {
            len--;
        }
        ByteBuffer in = ByteBuffer.wrap(line, 0, len);
        String text;
        try {
            text = dec.reset().decode(in).toString();
        } catch (CharacterCodingException e) {
            visitor.line(lineNo, null, in.position());
            return;
        }
        visitor.line(lineNo, text, -1);
    }
}
