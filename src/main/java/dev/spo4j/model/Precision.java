package dev.spo4j.model;

import com.google.gson.JsonElement;
import com.google.gson.JsonParser;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Locale;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * The floating dtype of a model's weights and activations: fp32, bf16 or fp16, under
 * LibTorch's and Hugging Face's ({@code torch_dtype}) names.
 */
public enum Precision {
    /** float32. */
    FP32(ScalarType.Float, "float32"),
    /** bfloat16: fp32's exponent range, 8 significant bits. */
    BF16(ScalarType.BFloat16, "bfloat16"),
    /** float16: 11 significant bits, max 65504 (gradients need loss scaling). */
    FP16(ScalarType.Half, "float16");

    private final ScalarType scalarType;
    private final String torchDtype;

    Precision(ScalarType s, String torchDtype) {
        this.scalarType = s;
        this.torchDtype = torchDtype;
    }

    /** LibTorch's scalar type. */
    public ScalarType scalarType() {
        return scalarType;
    }

    /** The Hugging Face config.json name (torch_dtype). */
    public String torchDtype() {
        return torchDtype;
    }

    /** Bytes per element. */
    public int bytes() {
        return this == FP32 ? 4 : 2;
    }

    /** fp32|float32, bf16|bfloat16, fp16|float16|half (case-insensitive); else IllegalArgumentException. */
    public static Precision parse(String s) {
        String v = s == null ? "" : s.trim().toLowerCase(Locale.ROOT);
        return switch (v) {
            case "fp32", "float32", "float" -> FP32;
            case "bf16", "bfloat16" -> BF16;
            case "fp16", "float16", "half" -> FP16;
            default -> throw new IllegalArgumentException("dtype '" + s + "' (expected bf16, fp16 or fp32)");
        };
    }

    /** The torch_dtype of a model folder's config.json; fp32 when absent or not one of these. */
    public static Precision ofFolder(Path modelDir) throws IOException {
        Path config = modelDir.resolve(ModelFolder.CONFIG);
        JsonElement e = JsonParser.parseString(Files.readString(config));
        if (!e.isJsonObject()) {
            return FP32;
        }
        JsonElement d = e.getAsJsonObject().get("torch_dtype");
        if (d == null || !d.isJsonPrimitive()) {
            return FP32;
        }
        try {
            return parse(d.getAsString());
        } catch (IllegalArgumentException unknown) {
            return FP32;
        }
    }
}
