package dev.spo4j.model;

import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParseException;
import dev.spo4j.io.StrictJson;
import dev.spo4j.io.AtomicFiles;
import java.io.IOException;
import java.lang.ref.Reference;
import java.math.BigDecimal;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * Reads and writes the safetensors format of Hugging Face: an unsigned 64-bit little-endian
 * header length N, N bytes of UTF-8 JSON {@code {name: {dtype, shape, data_offsets: [begin,
 * end]}, "__metadata__": {string: string}}}, then the raw little-endian tensor data, offsets
 * relative to the end of the header.
 *
 * <p>Reading checks the header before touching the data: a sane length, every offset pair
 * inside the data and equal to numel × element size, and the tensors tiling the data
 * without gaps or overlaps (what the safetensors library itself requires). A violation is
 * an {@link IllegalArgumentException} naming the file and the tensor. Each tensor is read
 * with positional reads straight into the memory of an owned CPU tensor, in chunks of at
 * most 256 MiB, so tensors and files over 2 GiB work.
 *
 * <p>Writing orders tensors by name, pads the header with spaces to a multiple of 8 bytes
 * (so the data is 8-byte aligned), writes a temporary file in the target's folder and
 * renames it over the target atomically: a failure never leaves a half-written file.
 *
 * <p>Dtypes: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL.
 */
public final class SafeTensors {
    private SafeTensors() {}

    /** The header may not exceed this (the safetensors library's own limit). */
    static final long MAX_HEADER_BYTES = 100L << 20;
    /** Bytes per read or write call: stays far below ByteBuffer's 2 GiB limit. */
    static final int CHUNK = 256 << 20;
    private static final String METADATA = "__metadata__";

    private enum Dtype {
        F64(ScalarType.Double, 8), F32(ScalarType.Float, 4), F16(ScalarType.Half, 2),
        BF16(ScalarType.BFloat16, 2), I64(ScalarType.Long, 8), I32(ScalarType.Int, 4),
        I16(ScalarType.Short, 2), I8(ScalarType.Char, 1), U8(ScalarType.Byte, 1), BOOL(ScalarType.Bool, 1);

        final ScalarType scalarType;
        final int size;

        Dtype(ScalarType scalarType, int size) {
            this.scalarType = scalarType;
            this.size = size;
        }

        static Dtype of(ScalarType t) {
            for (Dtype d : values()) {
                if (d.scalarType == t) {
                    return d;
                }
            }
            return null;
        }
    }

    private record Entry(String name, Dtype dtype, long[] shape, long begin, long end) {}

    private record Header(long dataStart, List<Entry> entries, Map<String, String> metadata) {}

    // ---------------------------------------------------------------- reading

    /** All tensors of the file as owned CPU tensors, in the order of their data in the file. */
    public static Map<String, Tensor> read(Path file) throws IOException {
        return read(file, CHUNK);
    }

    /** {@link #read(Path)} in chunks of the given size (small in tests, to exercise the chunking). */
    static Map<String, Tensor> read(Path file, int chunk) throws IOException {
        checkByteOrder();
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            Header h = header(file, ch);
            Map<String, Tensor> out = new LinkedHashMap<>();
            for (Entry e : h.entries()) {
                out.put(e.name(), readTensor(file, ch, h.dataStart(), e, chunk));
            }
            return out;
        }
    }

    /**
     * The file's tensors without their data: meta-device tensors of each entry's dtype and
     * shape (file order), for checking a state dict before any data is read.
     */
    public static Map<String, Tensor> describe(Path file) throws IOException {
        checkByteOrder();
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            Map<String, Tensor> out = new LinkedHashMap<>();
            for (Entry e : header(file, ch).entries()) {
                out.put(e.name(), torch.empty(e.shape(), new TensorOptions(e.dtype().scalarType)
                        .device(new org.bytedeco.pytorch.DeviceOptional(new org.bytedeco.pytorch.Device("meta"))), null));
            }
            return out;
        }
    }

    /**
     * Reads the file's tensors one at a time, in file order: each is handed to {@code consumer}
     * and freed when it returns, so the memory needed is that of the largest tensor, not the file.
     */
    public static void forEach(Path file, java.util.function.BiConsumer<String, Tensor> consumer) throws IOException {
        checkByteOrder();
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            Header h = header(file, ch);
            for (Entry e : h.entries()) {
                Tensor t = readTensor(file, ch, h.dataStart(), e, CHUNK);
                try {
                    consumer.accept(e.name(), t);
                } finally {
                    t.close();
                }
            }
        }
    }

    /** The names of the file's tensors (file order), without reading their data. */
    public static List<String> names(Path file) throws IOException {
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            List<String> names = new ArrayList<>();
            for (Entry e : header(file, ch).entries()) {
                names.add(e.name());
            }
            return names;
        }
    }

    /** The {@code __metadata__} map of the file (empty when absent). */
    public static Map<String, String> metadata(Path file) throws IOException {
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            return header(file, ch).metadata();
        }
    }

    private static Header header(Path file, FileChannel ch) throws IOException {
        long size = ch.size();
        if (size < 8) {
            throw new IllegalArgumentException(file + ": " + size + " bytes, too short for a safetensors file"
                    + " (expected an 8-byte header length)");
        }
        ByteBuffer len = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN);
        readFully(ch, len, 0, file);
        long n = len.getLong(0);
        if (n <= 0 || n > MAX_HEADER_BYTES || n > size - 8) {
            throw new IllegalArgumentException(file + ": header length " + Long.toUnsignedString(n)
                    + " is not within (0, " + Math.min(MAX_HEADER_BYTES, size - 8) + "] (file of " + size
                    + " bytes): not a safetensors file, or truncated");
        }
        ByteBuffer hb = ByteBuffer.allocate((int) n);
        readFully(ch, hb, 8, file);
        hb.flip();
        String json;
        try {
            json = StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT).decode(hb).toString();
        } catch (CharacterCodingException e) {
            throw new IllegalArgumentException(file + ": header is not UTF-8", e);
        }
        JsonObject root;
        try {
            JsonElement e = StrictJson.parse(json);
            if (!e.isJsonObject()) {
                throw new IllegalArgumentException(file + ": header is not a JSON object");
            }
            root = e.getAsJsonObject();
        } catch (StrictJson.DuplicateKeyException e) {
            throw new IllegalArgumentException(file + ": header has a " + e.getMessage()
                    + " (each tensor and metadata key may occur once)", e);
        } catch (JsonParseException e) {
            throw new IllegalArgumentException(file + ": header is not valid JSON (" + e.getMessage() + ")", e);
        }
        long dataStart = 8 + n;
        long dataLen = size - dataStart;
        Map<String, String> metadata = new LinkedHashMap<>();
        List<Entry> entries = new ArrayList<>();
        for (Map.Entry<String, JsonElement> kv : root.entrySet()) {
            String name = kv.getKey();
            if (METADATA.equals(name)) {
                if (!kv.getValue().isJsonObject()) {
                    throw new IllegalArgumentException(file + ": __metadata__ is not an object");
                }
                for (Map.Entry<String, JsonElement> m : kv.getValue().getAsJsonObject().entrySet()) {
                    if (!m.getValue().isJsonPrimitive() || !m.getValue().getAsJsonPrimitive().isString()) {
                        throw new IllegalArgumentException(file + ": __metadata__ value of '" + m.getKey()
                                + "' is " + m.getValue() + " (expected a string)");
                    }
                    metadata.put(m.getKey(), m.getValue().getAsString());
                }
                continue;
            }
            entries.add(entry(file, name, kv.getValue(), dataLen));
        }
        // the tensors must tile the data region exactly, as the safetensors library requires
        entries.sort(Comparator.comparingLong(Entry::begin).thenComparingLong(Entry::end));
        long at = 0;
        for (Entry e : entries) {
            if (e.begin() != at) {
                throw new IllegalArgumentException(file + ": tensor '" + e.name() + "' data_offsets ["
                        + e.begin() + ", " + e.end() + "] " + (e.begin() < at ? "overlap" : "leave a gap after")
                        + " the previous tensor, which ends at " + at);
            }
            at = e.end();
        }
        if (at != dataLen) {
            throw new IllegalArgumentException(file + ": the tensors cover " + at + " data bytes but the file has "
                    + dataLen + " after the header (trailing bytes)");
        }
        return new Header(dataStart, entries, metadata);
    }

    private static Entry entry(Path file, String name, JsonElement v, long dataLen) {
        String where = file + ": tensor '" + name + "'";
        if (!v.isJsonObject()) {
            throw new IllegalArgumentException(where + " has header entry " + v + " (expected an object)");
        }
        JsonObject o = v.getAsJsonObject();
        JsonElement dt = o.get("dtype");
        if (dt == null || !dt.isJsonPrimitive() || !dt.getAsJsonPrimitive().isString()) {
            throw new IllegalArgumentException(where + " has no dtype string");
        }
        Dtype dtype;
        try {
            dtype = Dtype.valueOf(dt.getAsString());
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(where + " has dtype " + dt.getAsString()
                    + " (supported: " + Arrays.toString(Dtype.values()) + ")");
        }
        long[] shape = longs(where, "shape", o.get("shape"), -1);
        long[] offsets = longs(where, "data_offsets", o.get("data_offsets"), 2);
        long numel = 1;
        for (long d : shape) {
            if (d < 0) {
                throw new IllegalArgumentException(where + " has shape " + Arrays.toString(shape)
                        + " (expected sizes >= 0)");
            }
            try {
                numel = Math.multiplyExact(numel, d);
            } catch (ArithmeticException x) {
                throw new IllegalArgumentException(where + " has shape " + Arrays.toString(shape) + " (too large)");
            }
        }
        long begin = offsets[0], end = offsets[1];
        if (begin < 0 || end < begin || end > dataLen) {
            throw new IllegalArgumentException(where + " has data_offsets [" + begin + ", " + end
                    + "] outside the " + dataLen + " data bytes of the file (truncated?)");
        }
        long expected;
        try {
            expected = Math.multiplyExact(numel, dtype.size);
        } catch (ArithmeticException x) {
            throw new IllegalArgumentException(where + " has shape " + Arrays.toString(shape) + " (too large)");
        }
        if (end - begin != expected) {
            throw new IllegalArgumentException(where + " has " + (end - begin) + " data bytes but "
                    + dtype + " " + Arrays.toString(shape) + " needs " + expected);
        }
        return new Entry(name, dtype, shape, begin, end);
    }

    private static long[] longs(String where, String key, JsonElement e, int length) {
        if (e == null || !e.isJsonArray() || (length >= 0 && e.getAsJsonArray().size() != length)) {
            throw new IllegalArgumentException(where + " has " + key + " " + e + " (expected an array of "
                    + (length >= 0 ? length + " " : "") + "integers)");
        }
        JsonArray a = e.getAsJsonArray();
        long[] out = new long[a.size()];
        for (int i = 0; i < out.length; i++) {
            JsonElement x = a.get(i);
            try {
                if (!x.isJsonPrimitive() || !x.getAsJsonPrimitive().isNumber()) {
                    throw new NumberFormatException();
                }
                out[i] = new BigDecimal(x.getAsString()).longValueExact();
            } catch (ArithmeticException | NumberFormatException ex) {
                throw new IllegalArgumentException(where + " has " + key + " " + e + " (expected integers)");
            }
        }
        return out;
    }

    private static Tensor readTensor(Path file, FileChannel ch, long dataStart, Entry e, int chunk)
            throws IOException {
        Tensor t = torch.empty(e.shape(), new TensorOptions(e.dtype().scalarType), null);
        long nbytes = e.end() - e.begin();
        if (nbytes == 0) {
            return t;  // an empty tensor has no data pointer
        }
        BytePointer base = new BytePointer(t.data_ptr());
        for (long off = 0; off < nbytes; off += chunk) {
            int len = (int) Math.min(chunk, nbytes - off);
            ByteBuffer dst = base.getPointer(off).capacity(len).asBuffer();
            readFully(ch, dst, dataStart + e.begin() + off, file);
        }
        Reference.reachabilityFence(t);
        return t;
    }

    private static void readFully(FileChannel ch, ByteBuffer dst, long position, Path file) throws IOException {
        while (dst.hasRemaining()) {
            int r = ch.read(dst, position);
            if (r < 0) {
                throw new IllegalArgumentException(file + ": unexpected end of file at byte " + position);
            }
            position += r;
        }
    }

    // ---------------------------------------------------------------- writing

    /**
     * Writes the tensors (any device, made contiguous CPU copies one at a time) ordered by
     * name, with optional string metadata, atomically.
     */
    public static void write(Path file, Map<String, Tensor> tensors, Map<String, String> metadata)
            throws IOException {
        write(file, tensors, metadata, CHUNK);
    }

    /**
     * {@link #write(Path, Map, Map)} with every floating-point tensor written in {@code floatCast}
     * (null: as it is), cast one tensor at a time after its copy to the CPU: a model on a GPU is
     * never cast there as a whole, and the host holds one tensor's copy at a time.
     */
    public static void write(Path file, Map<String, Tensor> tensors, Map<String, String> metadata,
                             ScalarType floatCast) throws IOException {
        write(file, tensors, metadata, CHUNK, floatCast);
    }

    /** {@link #write(Path, Map, Map)} in chunks of the given size. */
    static void write(Path file, Map<String, Tensor> tensors, Map<String, String> metadata, int chunk)
            throws IOException {
        write(file, tensors, metadata, chunk, null);
    }

    private static void write(Path file, Map<String, Tensor> tensors, Map<String, String> metadata, int chunk,
                              ScalarType floatCast) throws IOException {
        checkByteOrder();
        if (floatCast != null && (Dtype.of(floatCast) == null || !torch.isFloatingType(floatCast))) {
            throw new IllegalArgumentException(file + ": cast to " + floatCast + " (expected a floating-point dtype)");
        }
        TreeMap<String, Tensor> sorted = new TreeMap<>();
        for (Map.Entry<String, Tensor> kv : tensors.entrySet()) {
            String name = kv.getKey();
            if (name == null || name.isEmpty() || METADATA.equals(name)) {
                throw new IllegalArgumentException(file + ": tensor name '" + name + "' is not allowed");
            }
            Tensor t = kv.getValue();
            if (t == null || t.isNull() || !t.defined()) {
                throw new IllegalArgumentException(file + ": tensor '" + name + "' is null or undefined");
            }
            if (Dtype.of(t.scalar_type().intern()) == null) {
                throw new IllegalArgumentException(file + ": tensor '" + name + "' has dtype "
                        + t.scalar_type().intern() + " (safetensors writing supports "
                        + Arrays.toString(Dtype.values()) + ")");
            }
            sorted.put(name, t);
        }
        JsonObject header = new JsonObject();
        if (metadata != null && !metadata.isEmpty()) {
            JsonObject m = new JsonObject();
            new TreeMap<>(metadata).forEach(m::addProperty);
            header.add(METADATA, m);
        }
        long offset = 0;
        for (Map.Entry<String, Tensor> kv : sorted.entrySet()) {
            Tensor t = kv.getValue();
            Dtype d = Dtype.of(written(t, floatCast));
            JsonObject o = new JsonObject();
            o.addProperty("dtype", d.name());
            JsonArray shape = new JsonArray();
            for (int i = 0; i < t.dim(); i++) {
                shape.add(t.size(i));
            }
            o.add("shape", shape);
            long nbytes = t.numel() * d.size;
            JsonArray offs = new JsonArray();
            offs.add(offset);
            offs.add(offset + nbytes);
            o.add("data_offsets", offs);
            header.add(kv.getKey(), o);
            offset += nbytes;
        }
        byte[] json = header.toString().getBytes(StandardCharsets.UTF_8);
        int padded = (json.length + 7) / 8 * 8;
        ByteBuffer head = ByteBuffer.allocate(8 + padded).order(ByteOrder.LITTLE_ENDIAN);
        head.putLong(padded).put(json);
        while (head.hasRemaining()) {
            head.put((byte) ' ');
        }
        head.flip();

        AtomicFiles.write(file.toAbsolutePath(), ch -> {
            writeFully(ch, head);
            for (Tensor t : sorted.values()) {
                writeTensor(ch, t, chunk, floatCast);
            }
        });
    }

    /** The dtype a tensor is written in: {@code floatCast} for a floating-point one when given. */
    private static ScalarType written(Tensor t, ScalarType floatCast) {
        ScalarType own = t.scalar_type().intern();
        return floatCast != null && t.is_floating_point() ? floatCast : own;
    }

    private static void writeTensor(FileChannel ch, Tensor t, int chunk, ScalarType floatCast) throws IOException {
        ScalarType dt = written(t, floatCast);
        long nbytes = t.numel() * Dtype.of(dt).size;
        if (nbytes == 0) {
            return;
        }
        // the copies (to the CPU, then cast) are freed as the scope closes, one tensor at a time
        try (PointerScope scope = new PointerScope()) {
            Tensor c = t.detach().cpu();
            if (dt != c.scalar_type().intern()) {
                c = c.to(dt);
            }
            c = c.contiguous();
            Pointer p = c.data_ptr();
            BytePointer base = new BytePointer(p);
            for (long off = 0; off < nbytes; off += chunk) {
                int len = (int) Math.min(chunk, nbytes - off);
                writeFully(ch, base.getPointer(off).capacity(len).asBuffer());
            }
            Reference.reachabilityFence(c);
        }
    }

    private static void writeFully(FileChannel ch, ByteBuffer src) throws IOException {
        while (src.hasRemaining()) {
            ch.write(src);
        }
    }

    private static void checkByteOrder() {
        if (ByteOrder.nativeOrder() != ByteOrder.LITTLE_ENDIAN) {
            throw new UnsupportedOperationException("safetensors I/O needs a little-endian machine");
        }
    }
}
