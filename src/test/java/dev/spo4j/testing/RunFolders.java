package dev.spo4j.testing;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/** Reading a training run folder in tests. */
public final class RunFolders {
    private RunFolders() {}

    /** The training rows of {@code runDir/metrics.jsonl} (eval rows, which carry eval/ names, left out). */
    public static List<JsonObject> metrics(Path runDir) throws IOException {
        List<JsonObject> rows = new ArrayList<>();
        for (String line : Files.readAllLines(runDir.resolve("metrics.jsonl"))) {
            JsonObject o = JsonParser.parseString(line).getAsJsonObject();
            if (o.has("loss")) {
                rows.add(o);
            }
        }
        return rows;
    }
}
