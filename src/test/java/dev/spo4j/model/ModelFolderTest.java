package dev.spo4j.model;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;

/**
 * {@link ModelFolder}: save/load round trips (bytes and logits), replacing a folder,
 * tokenizer files, sharded checkpoints and the errors for incomplete folders.
 * Run: {@code mvn -B -q test -Dspo4j.cuda=OFF -Dtest=ModelFolderTest}
 */
class ModelFolderTest {
    @TempDir
    Path tmp;

    static final Path LLAMA = Path.of("test-data/tiny-llama");
    static final Path QWEN2 = Path.of("test-data/tiny-qwen2");

    static Tensor ids() {
        return LlamaModelTest.randomIds(2, 7, 61, 99);
    }

    @Test
    void saveThenLoadGivesIdenticalWeightsAndLogits() throws IOException {
        for (Path fixture : List.of(LLAMA, QWEN2)) {
            LlamaModel a = ModelFolder.load(fixture);
            Path dir = tmp.resolve("out-" + fixture.getFileName());
            ModelFolder.save(a, dir);
            LlamaModel b = ModelFolder.load(dir);
            assertEquals(a.config(), b.config());
            Map<String, Tensor> sa = a.stateDict(), sb = b.stateDict();
            assertEquals(List.copyOf(sa.keySet()), List.copyOf(sb.keySet()));
            for (String k : sa.keySet()) {
                assertTrue(torch.equal(sa.get(k), sb.get(k)), k);
            }
            assertTrue(torch.equal(a.forward(ids(), null), b.forward(ids(), null)), "identical logits");
            // the saved weights are the fixture's bytes, since both are sorted fp32 safetensors
            Map<String, Tensor> orig = SafeTensors.read(fixture.resolve("model.safetensors"));
            Map<String, Tensor> saved = SafeTensors.read(dir.resolve("model.safetensors"));
            assertEquals(orig.keySet(), saved.keySet());
            for (String k : orig.keySet()) {
                assertTrue(torch.equal(orig.get(k), saved.get(k)), k);
            }
        }
    }

    @Test
    void saveInAnotherDtypeCastsTheWeightsAndNamesIt() throws IOException {
        LlamaModel a = ModelFolder.load(LLAMA);
        Path dir = tmp.resolve("bf16");
        ModelFolder.save(a, dir, null, "bfloat16");
        assertEquals("bfloat16", ModelFolder.torchDtypeOf(dir));
        Map<String, Tensor> saved = SafeTensors.read(dir.resolve("model.safetensors"));
        for (Map.Entry<String, Tensor> e : a.stateDict().entrySet()) {
            Tensor t = saved.get(e.getKey());
            assertEquals(torch.ScalarType.BFloat16, t.scalar_type().intern(), e.getKey());
            assertTrue(torch.equal(e.getValue().to(torch.ScalarType.BFloat16), t), "a rounding of the fp32 weight: " + e.getKey());
        }
        long fp32 = Files.size(LLAMA.resolve("model.safetensors")), bf16 = Files.size(dir.resolve("model.safetensors"));
        assertTrue(bf16 < 0.6 * fp32, bf16 + " bytes vs " + fp32);
        assertEquals(torch.ScalarType.Float, a.stateDict().get("model.embed_tokens.weight").scalar_type().intern(),
                "the model is not changed");
        assertEquals("float32", ModelFolder.torchDtypeOf(LLAMA));
        assertThrows(IllegalArgumentException.class, () -> ModelFolder.save(a, tmp.resolve("x"), null, "int8"));
    }

    @Test
    void loadingInBf16EqualsLoadingInFp32ThenCasting() throws IOException {
        for (Path fixture : List.of(LLAMA, QWEN2)) {
            LlamaModel direct = ModelFolder.load(fixture, ScalarType.BFloat16);
            LlamaModel viaFp32 = ModelFolder.load(fixture);
            viaFp32.to(ScalarType.BFloat16, false);
            Map<String, Tensor> a = direct.stateDict(), b = viaFp32.stateDict();
            assertEquals(b.keySet(), a.keySet());
            for (Map.Entry<String, Tensor> kv : b.entrySet()) {
                Tensor t = a.get(kv.getKey());
                assertEquals(ScalarType.BFloat16, t.scalar_type().intern(), kv.getKey());
                assertTrue(torch.equal(t, kv.getValue()), fixture + ": " + kv.getKey());
            }
        }
    }

    @Test
    void tiedModelSavesNoHead() throws IOException {
        LlamaModel q = ModelFolder.load(QWEN2);
        ModelFolder.save(q, tmp.resolve("q"));
        assertFalse(SafeTensors.names(tmp.resolve("q/model.safetensors")).contains("lm_head.weight"));
        assertTrue(SafeTensors.names(tmp.resolve("q/model.safetensors")).contains("model.layers.1.self_attn.k_proj.bias"));
    }

    @Test
    void saveReplacesAnExistingFolderAndCopiesTokenizerFiles() throws IOException {
        Path tok = tmp.resolve("tok");
        Files.createDirectories(tok);
        Files.writeString(tok.resolve("tokenizer.json"), "{\"t\":1}");
        Files.writeString(tok.resolve("generation_config.json"), "{\"g\":2}");
        Files.writeString(tok.resolve("unrelated.txt"), "x");
        Path dir = tmp.resolve("parent/model");
        Files.createDirectories(dir);
        Files.writeString(dir.resolve("stale.bin"), "old");

        LlamaModel m = ModelFolder.load(LLAMA);
        ModelFolder.save(m, dir, tok);
        try (Stream<Path> s = Files.list(dir)) {
            assertEquals(List.of("config.json", "generation_config.json", "model.safetensors", "tokenizer.json"),
                    s.map(p -> p.getFileName().toString()).sorted().toList());
        }
        assertEquals("{\"t\":1}", Files.readString(dir.resolve("tokenizer.json")));
        try (Stream<Path> s = Files.list(dir.getParent())) {
            assertEquals(List.of(dir.toAbsolutePath()), s.map(Path::toAbsolutePath).toList(), "no temp folders left");
        }
        // saving over itself keeps the tokenizer files
        ModelFolder.save(m, dir, dir);
        assertEquals("{\"g\":2}", Files.readString(dir.resolve("generation_config.json")));
        assertThrows(IllegalArgumentException.class, () -> ModelFolder.save(m, dir.resolve("config.json")));
    }

    /** Two shards and an index, split the way Hugging Face splits: by whole tensors. */
    @Test
    void loadsShardedCheckpoints() throws IOException {
        Path dir = tmp.resolve("sharded");
        Files.createDirectories(dir);
        Files.copy(LLAMA.resolve("config.json"), dir.resolve("config.json"));
        Map<String, Tensor> all = SafeTensors.read(LLAMA.resolve("model.safetensors"));
        Map<String, Tensor> one = new LinkedHashMap<>(), two = new LinkedHashMap<>();
        StringBuilder map = new StringBuilder();
        for (Map.Entry<String, Tensor> kv : all.entrySet()) {
            boolean first = kv.getKey().startsWith("model.layers.0") || kv.getKey().startsWith("lm_head");
            (first ? one : two).put(kv.getKey(), kv.getValue());
            String shard = first ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
            map.append(map.length() == 0 ? "" : ",").append('"').append(kv.getKey()).append("\":\"").append(shard).append('"');
        }
        SafeTensors.write(dir.resolve("model-00001-of-00002.safetensors"), one, Map.of("format", "pt"));
        SafeTensors.write(dir.resolve("model-00002-of-00002.safetensors"), two, Map.of("format", "pt"));
        Files.writeString(dir.resolve(ModelFolder.INDEX),
                "{\"metadata\":{\"total_size\":1},\"weight_map\":{" + map + "}}");
        LlamaModel sharded = ModelFolder.load(dir);
        LlamaModel single = ModelFolder.load(LLAMA);
        assertTrue(torch.equal(sharded.forward(ids(), null), single.forward(ids(), null)));

        // a shard the index names but which is absent
        Files.delete(dir.resolve("model-00002-of-00002.safetensors"));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> ModelFolder.load(dir));
        assertTrue(e.getMessage().contains("model-00002-of-00002.safetensors"), e.getMessage());
        // a tensor listed in the index but missing from its shard
        SafeTensors.write(dir.resolve("model-00002-of-00002.safetensors"), Map.of("model.norm.weight",
                two.get("model.norm.weight")), null);
        e = assertThrows(IllegalArgumentException.class, () -> ModelFolder.load(dir));
        assertTrue(e.getMessage().contains("is not in its shard model-00002-of-00002.safetensors"), e.getMessage());
    }

    @Test
    void incompleteFoldersNameWhatIsMissing() throws IOException {
        Path dir = tmp.resolve("empty");
        Files.createDirectories(dir);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> ModelFolder.load(dir));
        assertTrue(e.getMessage().contains("config.json"), e.getMessage());
        Files.copy(LLAMA.resolve("config.json"), dir.resolve("config.json"));
        e = assertThrows(IllegalArgumentException.class, () -> ModelFolder.load(dir));
        assertTrue(e.getMessage().contains("model.safetensors"), e.getMessage());
        // weights of the other architecture: strict loading names the first differences
        Files.copy(QWEN2.resolve("model.safetensors"), dir.resolve("model.safetensors"));
        e = assertThrows(IllegalArgumentException.class, () -> ModelFolder.load(dir));
        assertTrue(e.getMessage().contains("lm_head.weight") && e.getMessage().contains("q_proj.bias"), e.getMessage());
        assertTrue(e.getMessage().contains("model.layers.0.self_attn.k_proj.weight has shape [8, 32], expected [16, 32]"),
                e.getMessage());
    }

    /** The saved folder and files get the umask's permissions, not a temp file's owner-only ones. */
    @Test
    void savedFilesHaveOrdinaryPermissions() throws IOException {
        Assumptions.assumeTrue(tmp.getFileSystem().supportedFileAttributeViews().contains("posix"), "POSIX only");
        Path plainFile = Files.createFile(tmp.resolve("plain"));
        Path plainDir = Files.createDirectory(tmp.resolve("plainDir"));
        Path dir = tmp.resolve("perm");
        ModelFolder.save(ModelFolder.load(LLAMA), dir);
        assertEquals(Files.getPosixFilePermissions(plainDir), Files.getPosixFilePermissions(dir));
        for (String f : List.of("config.json", "model.safetensors")) {
            assertEquals(Files.getPosixFilePermissions(plainFile), Files.getPosixFilePermissions(dir.resolve(f)), f);
        }
    }

    @Test
    void savedConfigReadsBack() throws IOException {
        LlamaModel m = ModelFolder.load(QWEN2);
        ModelFolder.save(m, tmp.resolve("c"));
        assertEquals(m.config(), ModelConfig.read(tmp.resolve("c/config.json")));
        assertArrayEquals(new long[] {61, 32}, LlamaModel.shape(m.stateDict().get("model.embed_tokens.weight")));
    }
}
