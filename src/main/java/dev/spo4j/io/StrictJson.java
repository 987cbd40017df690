package dev.spo4j.io;

import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonNull;
import com.google.gson.JsonObject;
import com.google.gson.JsonParseException;
import com.google.gson.JsonPrimitive;
import com.google.gson.Strictness;
import com.google.gson.internal.LazilyParsedNumber;
import com.google.gson.stream.JsonReader;
import com.google.gson.stream.JsonToken;
import java.io.IOException;
import java.io.StringReader;

/**
 * Reads JSON as Gson's element tree does, but refuses an object with the same key twice
 * (Gson keeps the last one silently): a duplicate key in a data line or a safetensors header
 * is a mistake to report, not a value to guess. Strict syntax (RFC 8259), one value per text.
 */
public final class StrictJson {
    private StrictJson() {}

    /** A key that occurs twice in one object; {@link #getMessage()} names it and its path. */
    public static final class DuplicateKeyException extends JsonParseException {
        private final String key;

        DuplicateKeyException(String key, String path) {
            super("duplicate key \"" + key + "\" in the object at " + path);
            this.key = key;
        }

        /** The key that occurs twice. */
        public String key() {
            return key;
        }
    }

    /**
     * Parses one JSON value from {@code text}; text after it is an error.
     *
     * @throws DuplicateKeyException an object holds a key twice
     * @throws JsonParseException    the text is not one strict JSON value
     */
    public static JsonElement parse(String text) {
        try {
            JsonReader r = new JsonReader(new StringReader(text));
            r.setStrictness(Strictness.STRICT);
            JsonElement e = read(r, 0);
            if (r.peek() != JsonToken.END_DOCUMENT) {
                throw new JsonParseException("unexpected text after the JSON value");
            }
            return e;
        } catch (IOException | IllegalStateException | NumberFormatException e) {
            throw new JsonParseException(e.getMessage(), e);
        }
    }

    private static final int MAX_DEPTH = 512;

    private static JsonElement read(JsonReader r, int depth) throws IOException {
        if (depth > MAX_DEPTH) {
            throw new JsonParseException("JSON nested deeper than " + MAX_DEPTH + " levels at " + r.getPath());
        }
        switch (r.peek()) {
            case BEGIN_OBJECT -> {
                String path = r.getPath();
                JsonObject o = new JsonObject();
                r.beginObject();
                while (r.hasNext()) {
                    String key = r.nextName();
                    if (o.has(key)) {
                        throw new DuplicateKeyException(key, path);
                    }
                    o.add(key, read(r, depth + 1));
                }
                r.endObject();
                return o;
            }
            case BEGIN_ARRAY -> {
                JsonArray a = new JsonArray();
                r.beginArray();
                while (r.hasNext()) {
                    a.add(read(r, depth + 1));
                }
                r.endArray();
                return a;
            }
            case STRING -> {
                return new JsonPrimitive(r.nextString());
            }
            case NUMBER -> {
                return new JsonPrimitive(new LazilyParsedNumber(r.nextString()));
            }
            case BOOLEAN -> {
                return new JsonPrimitive(r.nextBoolean());
            }
            case NULL -> {
                r.nextNull();
                return JsonNull.INSTANCE;
            }
            default -> throw new JsonParseException("unexpected " + r.peek() + " at " + r.getPath());
        }
    }
}
