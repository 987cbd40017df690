package dev.spo4j.model;

import static dev.spo4j.kernels.Tensors.toDoubles;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@link SafeTensors}: round trips of every dtype and awkward shapes, the byte layout the
 * Hugging Face library writes, reading the Python-written fixtures, and corrupt files.
 * Run: {@code mvn -B -q test -Dspo4j.cuda=OFF -Dtest=SafeTensorsTest}
 */
class SafeTensorsTest {
    @TempDir
    Path tmp;

    @BeforeAll
    static void seed() {
        torch.manual_seed(7);
    }

    static final ScalarType[] DTYPES = {ScalarType.Double, ScalarType.Float, ScalarType.Half, ScalarType.BFloat16,
        ScalarType.Long, ScalarType.Int, ScalarType.Short, ScalarType.Char, ScalarType.Byte, ScalarType.Bool};

    static Tensor sample(ScalarType dt, long... shape) {
        Tensor r = torch.randn(shape).mul(new org.bytedeco.pytorch.Scalar(50.0));
        if (dt == ScalarType.Bool) {
            return r.gt(new org.bytedeco.pytorch.Scalar(0.0));
        }
        if (dt == ScalarType.Byte) {
            return r.abs().to(dt);
        }
        return r.to(dt);
    }

    @Test
    void roundTripEveryDtypeAndShape() throws IOException {
        long[][] shapes = {{}, {0}, {0, 3}, {1}, {7}, {2, 3, 4}, {3, 1, 5}};
        Map<String, Tensor> in = new LinkedHashMap<>();
        for (ScalarType dt : DTYPES) {
            for (long[] s : shapes) {
                in.put(dt + "/" + Arrays.toString(s), sample(dt, s));
            }
        }
        Path f = tmp.resolve("all.safetensors");
        SafeTensors.write(f, in, Map.of("format", "pt", "note", "ünïcode ✓"));
        Map<String, Tensor> out = SafeTensors.read(f);
        assertEquals(in.keySet(), out.keySet());
        for (Map.Entry<String, Tensor> kv : in.entrySet()) {
            Tensor a = kv.getValue(), b = out.get(kv.getKey());
            assertSame(a.scalar_type().intern(), b.scalar_type().intern(), kv.getKey());
            assertArrayEquals(LlamaModel.shape(a), LlamaModel.shape(b), kv.getKey());
            assertTrue(torch.equal(a, b), kv.getKey());
            assertTrue(b.is_contiguous() && b.is_cpu(), kv.getKey());
        }
        assertEquals(Map.of("format", "pt", "note", "ünïcode ✓"), SafeTensors.metadata(f));

        // describe: the same names, dtypes and shapes, no data; forEach: the same tensors, one at a time
        Map<String, Tensor> meta = SafeTensors.describe(f);
        assertEquals(SafeTensors.names(f), new java.util.ArrayList<>(meta.keySet()));  // file order
        for (Map.Entry<String, Tensor> kv : in.entrySet()) {
            Tensor m = meta.get(kv.getKey());
            assertTrue(m.is_meta(), kv.getKey());
            assertSame(kv.getValue().scalar_type().intern(), m.scalar_type().intern(), kv.getKey());
            assertArrayEquals(LlamaModel.shape(kv.getValue()), LlamaModel.shape(m), kv.getKey());
        }
        java.util.List<String> seen = new java.util.ArrayList<>();
        java.util.List<Tensor> handed = new java.util.ArrayList<>();
        SafeTensors.forEach(f, (name, t) -> {
            seen.add(name);
            handed.add(t);
            assertTrue(torch.equal(in.get(name), t), name);
        });
        assertEquals(SafeTensors.names(f), seen);
        assertTrue(handed.stream().allMatch(t -> t.isNull()), "each tensor is freed once the consumer returns");
    }

    /** The >2 GiB path reads and writes in chunks; odd tiny chunks exercise the same code. */
    @Test
    void chunkedReadsAndWrites() throws IOException {
        Map<String, Tensor> in = new LinkedHashMap<>();
        in.put("a", sample(ScalarType.Double, 5, 7));
        in.put("b", sample(ScalarType.Half, 13));
        in.put("c", sample(ScalarType.Bool, 3));
        for (int chunk : new int[] {1, 3, 8, 1000}) {
            Path f = tmp.resolve("chunk" + chunk + ".safetensors");
            SafeTensors.write(f, in, null, chunk);
            Map<String, Tensor> out = SafeTensors.read(f, 7);
            for (String k : in.keySet()) {
                assertTrue(torch.equal(in.get(k), out.get(k)), k + " chunk " + chunk);
            }
            assertArrayEquals(Files.readAllBytes(tmp.resolve("chunk1.safetensors")), Files.readAllBytes(f));
        }
    }

    @Test
    void layoutIsTheHuggingFaceOne() throws IOException {
        Map<String, Tensor> in = new LinkedHashMap<>();
        in.put("zeta", sample(ScalarType.Float, 3));
        in.put("alpha", sample(ScalarType.Half, 5));  // odd byte count: the next tensor is unaligned
        in.put("mid", sample(ScalarType.Long, 2));
        Path f = tmp.resolve("layout.safetensors");
        SafeTensors.write(f, in, Map.of());
        byte[] bytes = Files.readAllBytes(f);
        long n = ByteBuffer.wrap(bytes, 0, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
        assertEquals(0, (8 + n) % 8, "data starts 8-byte aligned");
        String header = new String(bytes, 8, (int) n, StandardCharsets.UTF_8);
        String json = header.stripTrailing();
        assertTrue(json.startsWith("{") && json.endsWith("}"), header);
        assertTrue(header.substring(json.length()).chars().allMatch(c -> c == ' '), "padding is trailing spaces");
        JsonObject o = JsonParser.parseString(header).getAsJsonObject();
        assertEquals(List.of("alpha", "mid", "zeta"), new ArrayList<>(o.keySet()), "sorted, no metadata");
        assertEquals("[0,10]", o.getAsJsonObject("alpha").get("data_offsets").toString());
        assertEquals("[10,26]", o.getAsJsonObject("mid").get("data_offsets").toString());
        assertEquals("[26,38]", o.getAsJsonObject("zeta").get("data_offsets").toString());
        assertEquals(8 + n + 38, bytes.length);
        assertEquals(List.of("alpha", "mid", "zeta"), SafeTensors.names(f));
    }

    @Test
    void writesNonContiguousAsContiguous() throws IOException {
        Tensor base = sample(ScalarType.Float, 4, 6);
        Tensor view = base.transpose(0, 1).narrow(0, 1, 3);
        Path f = tmp.resolve("view.safetensors");
        SafeTensors.write(f, Map.of("v", view), null);
        Tensor back = SafeTensors.read(f).get("v");
        assertArrayEquals(new long[] {3, 4}, LlamaModel.shape(back));
        assertArrayEquals(toDoubles(view), toDoubles(back));
    }

    /**
     * A cast on writing: each floating-point tensor written in the cast dtype (header and bytes
     * those of {@code t.to(cast)}), any other as it is, the sources untouched; a cast to a
     * non-floating dtype is refused before the file exists.
     */
    @Test
    void writesFloatingTensorsCastOneAtATime() throws IOException {
        Map<String, Tensor> in = new LinkedHashMap<>();
        in.put("w", sample(ScalarType.Float, 5, 3));
        in.put("h", sample(ScalarType.Double, 4));
        in.put("ids", sample(ScalarType.Long, 6));
        Path f = tmp.resolve("cast.safetensors");
        SafeTensors.write(f, in, null, ScalarType.BFloat16);
        Map<String, Tensor> back = SafeTensors.read(f);
        for (String k : List.of("w", "h")) {
            assertSame(ScalarType.BFloat16, back.get(k).scalar_type().intern(), k);
            assertArrayEquals(toDoubles(in.get(k).to(ScalarType.BFloat16)), toDoubles(back.get(k)), k);
        }
        assertSame(ScalarType.Long, back.get("ids").scalar_type().intern());
        assertArrayEquals(toDoubles(in.get("ids")), toDoubles(back.get("ids")));
        assertSame(ScalarType.Float, in.get("w").scalar_type().intern(), "the source is not cast");
        Path g = tmp.resolve("int.safetensors");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> SafeTensors.write(g, in, null, ScalarType.Int));
        assertTrue(e.getMessage().contains("expected a floating-point dtype"), e.getMessage());
        assertFalse(java.nio.file.Files.exists(g));
    }

    @Test
    void readsTheFixtureWrittenByPython() throws IOException {
        Map<String, Tensor> e = SafeTensors.read(Path.of("test-data/tiny-llama/expected_logits.safetensors"));
        assertEquals(List.of("attention_mask", "input_ids", "logits"), new ArrayList<>(e.keySet()));
        assertSame(ScalarType.Long, e.get("input_ids").scalar_type().intern());
        assertArrayEquals(new long[] {2, 9, 61}, LlamaModel.shape(e.get("logits")));
        assertEquals("numpy float64", SafeTensors.metadata(
                Path.of("test-data/tiny-llama/expected_logits.safetensors")).get("reference"));
    }

    @Test
    void overwritesAtomicallyAndLeavesNoTempFiles() throws IOException {
        Path f = tmp.resolve("w.safetensors");
        SafeTensors.write(f, Map.of("a", sample(ScalarType.Float, 3)), null);
        byte[] before = Files.readAllBytes(f);
        Tensor complex = torch.zeros(new long[] {2}, new TensorOptions(ScalarType.ComplexFloat));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> SafeTensors.write(f, Map.of("c", complex), null));
        assertTrue(e.getMessage().contains("'c'"), e.getMessage());
        assertArrayEquals(before, Files.readAllBytes(f), "a failed write leaves the old file");
        SafeTensors.write(f, Map.of("b", sample(ScalarType.Int, 2)), null);
        assertEquals(List.of("b"), SafeTensors.names(f));
        try (Stream<Path> s = Files.list(tmp)) {
            assertEquals(List.of(f), s.toList(), "no temporary files left");
        }
    }

    // ---------------------------------------------------------------- corrupt files

    private Path valid() throws IOException {
        Path f = tmp.resolve("ok.safetensors");
        Map<String, Tensor> m = new LinkedHashMap<>();
        m.put("w", sample(ScalarType.Float, 4, 4));
        m.put("b", sample(ScalarType.Float, 4));
        SafeTensors.write(f, m, Map.of("format", "pt"));
        return f;
    }

    /** A file with the given header JSON (padded) followed by dataBytes zero bytes. */
    private Path withHeader(String json, int dataBytes) throws IOException {
        byte[] h = json.getBytes(StandardCharsets.UTF_8);
        ByteBuffer b = ByteBuffer.allocate(8 + h.length + dataBytes).order(ByteOrder.LITTLE_ENDIAN);
        b.putLong(h.length).put(h);
        Path f = tmp.resolve("bad.safetensors");
        Files.write(f, b.array());
        return f;
    }

    private static void assertRejected(Path f, String... fragments) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> SafeTensors.read(f));
        assertTrue(e.getMessage().contains(f.toString()), "names the file: " + e.getMessage());
        for (String s : fragments) {
            assertTrue(e.getMessage().contains(s), "mentions '" + s + "': " + e.getMessage());
        }
    }

    @Test
    void truncatedFileNamesFileAndTensor() throws IOException {
        Path f = valid();
        byte[] all = Files.readAllBytes(f);
        Path cut = tmp.resolve("cut.safetensors");
        Files.write(cut, Arrays.copyOf(all, all.length - 5));
        assertRejected(cut, "'w'");  // w comes last (sorted: b, w) and now ends past the file
        Files.write(cut, Arrays.copyOf(all, 5));
        assertRejected(cut);
        Files.write(cut, Arrays.copyOf(all, 40));
        assertRejected(cut, "header length");
    }

    @Test
    void trailingBytesAreRejected() throws IOException {
        Path f = valid();
        byte[] all = Files.readAllBytes(f);
        Path longer = tmp.resolve("longer.safetensors");
        Files.write(longer, Arrays.copyOf(all, all.length + 4));
        assertRejected(longer, "trailing");
    }

    @Test
    void badHeadersAreRejected() throws IOException {
        assertRejected(withHeader("{not json", 0), "JSON");
        assertRejected(withHeader("[1,2]", 0), "not a JSON object");
        assertRejected(withHeader("{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4),
                "'t'", "needs 8");
        assertRejected(withHeader("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 0),
                "'t'", "outside");
        assertRejected(withHeader("{\"t\":{\"dtype\":\"Q7\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4),
                "'t'", "Q7");
        assertRejected(withHeader("{\"t\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4),
                "'t'", "shape");
        assertRejected(withHeader("{\"t\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4),
                "'t'", "shape");
        assertRejected(withHeader("{\"t\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4), "'t'", "data_offsets");
        assertRejected(withHeader("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                + "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8), "overlap");
        assertRejected(withHeader("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8), "gap");
        assertRejected(withHeader("{\"__metadata__\":{\"k\":1}}", 0), "__metadata__");
        // a tensor or a metadata key given twice (a JSON parser keeps the last: the first would be lost)
        assertRejected(withHeader("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                + "\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4), "duplicate key \"t\"");
        assertRejected(withHeader("{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}}", 0),
                "duplicate key \"k\"", "$.__metadata__");
        assertRejected(withHeader("{\"t\":{\"dtype\":\"F32\",\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4),
                "duplicate key \"dtype\"", "$.t");
        // a header length larger than the file
        Path f = tmp.resolve("huge.safetensors");
        Files.write(f, ByteBuffer.allocate(16).order(ByteOrder.LITTLE_ENDIAN).putLong(1L << 40).array());
        assertRejected(f, "header length");
        Files.write(f, ByteBuffer.allocate(16).order(ByteOrder.LITTLE_ENDIAN).putLong(-8).array());
        assertRejected(f, "header length");
    }

    @Test
    void emptyFileAndEmptyHeader() throws IOException {
        Path f = tmp.resolve("empty.safetensors");
        Files.write(f, new byte[0]);
        assertRejected(f, "too short");
        Map<String, Tensor> none = SafeTensors.read(withHeader("{}      ", 0));
        assertTrue(none.isEmpty());
        SafeTensors.write(tmp.resolve("nothing.safetensors"), Map.of(), null);
        assertTrue(SafeTensors.read(tmp.resolve("nothing.safetensors")).isEmpty());
    }

    @Test
    void writeRejectsBadNames() {
        Path f = tmp.resolve("n.safetensors");
        assertThrows(IllegalArgumentException.class,
                () -> SafeTensors.write(f, Map.of("__metadata__", sample(ScalarType.Float, 1)), null));
        assertThrows(IllegalArgumentException.class,
                () -> SafeTensors.write(f, Map.of("", sample(ScalarType.Float, 1)), null));
        assertFalse(Files.exists(f));
    }
}
