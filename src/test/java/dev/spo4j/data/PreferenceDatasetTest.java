package dev.spo4j.data;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** JSONL reading (every error names file:line and the field), writing, and the reference-logps rewrite. */
class PreferenceDatasetTest {
    @TempDir
    Path dir;

    private Path file(String name, String... lines) throws IOException {
        Path p = dir.resolve(name);
        Files.writeString(p, String.join("\n", lines) + "\n", StandardCharsets.UTF_8);
        return p;
    }

    @Test
    void readsRequiredAndOptionalFieldsSkippingBlankLines() throws IOException {
        Path p = file("data.jsonl",
                "{\"prompt\": \"Hi\", \"chosen\": \"Hello!\", \"rejected\": \"Go away.\"}",
                "",
                "   ",
                "{\"prompt\": \"\", \"chosen\": \"a\", \"rejected\": \"b\", \"score_chosen\": 7.5, "
                        + "\"score_rejected\": -1, \"extra\": [1, 2]}",
                "{\"prompt\": \"p\", \"chosen\": \"\u00e9\u4e2d\", \"rejected\": \"b\", \"ref_chosen_logps\": -12.25, "
                        + "\"ref_rejected_logps\": -3e1, \"score_chosen\": null, \"score_rejected\": null}");
        List<PreferencePair> pairs = PreferenceDataset.read(p);
        assertEquals(3, pairs.size());

        PreferencePair a = pairs.get(0);
        assertEquals("Hi", a.prompt());
        assertEquals("Hello!", a.chosen());
        assertEquals("Go away.", a.rejected());
        assertFalse(a.hasScores());
        assertFalse(a.hasReferenceLogps());
        assertEquals(p + ":1", a.source());

        PreferencePair b = pairs.get(1);
        assertEquals("", b.prompt());
        assertEquals(7.5, b.scoreChosen());
        assertEquals(-1.0, b.scoreRejected());
        assertNull(b.refChosenLogps());
        assertEquals(p + ":4", b.source());

        PreferencePair c = pairs.get(2);
        assertEquals("\u00e9\u4e2d", c.chosen());
        assertFalse(c.hasScores());
        assertEquals(-12.25, c.refChosenLogps());
        assertEquals(-30.0, c.refRejectedLogps());
        assertEquals(p + ":5", c.source());
    }

    @Test
    void acceptsWindowsLineEndingsAndAByteOrderMark() throws IOException {
        Path p = dir.resolve("crlf.jsonl");
        Files.writeString(p, "\uFEFF{\"prompt\":\"p\",\"chosen\":\"c\",\"rejected\":\"r\"}\r\n"
                + "{\"prompt\":\"q\",\"chosen\":\"c\",\"rejected\":\"r\"}\r\n", StandardCharsets.UTF_8);
        List<PreferencePair> pairs = PreferenceDataset.read(p);
        assertEquals(2, pairs.size());
        assertEquals("q", pairs.get(1).prompt());
    }

    /** Each bad record on line 2 of a file: the message starts with file:2: and says what is wrong. */
    @ParameterizedTest(name = "{0}")
    @CsvSource(delimiter = '|', quoteCharacter = '\'', value = {
        "malformed JSON         | {\"prompt\": \"p\", \"chosen\": \"c\"                                  | malformed JSON",
        "trailing text          | {\"prompt\": \"p\", \"chosen\": \"c\", \"rejected\": \"r\"} x            | malformed JSON",
        "NaN literal            | {\"prompt\": \"p\", \"chosen\": \"c\", \"rejected\": \"r\", \"score_chosen\": NaN, \"score_rejected\": 1} | malformed JSON",
        "not an object          | [\"p\", \"c\", \"r\"]                                                 | expected a JSON object, found an array",
        "missing chosen         | {\"prompt\": \"p\", \"rejected\": \"r\"}                               | field \"chosen\" is missing (expected a string)",
        "missing prompt         | {\"chosen\": \"c\", \"rejected\": \"r\"}                               | field \"prompt\" is missing (expected a string)",
        "null rejected          | {\"prompt\": \"p\", \"chosen\": \"c\", \"rejected\": null}             | field \"rejected\" is null (expected a string)",
        "number prompt          | {\"prompt\": 3, \"chosen\": \"c\", \"rejected\": \"r\"}                | field \"prompt\" is a number (3) (expected a string)",
        "conversational prompt  | {\"prompt\": [{\"role\": \"user\"}], \"chosen\": \"c\", \"rejected\": \"r\"} | field \"prompt\" is an array (expected a string; conversational",
        "empty chosen           | {\"prompt\": \"p\", \"chosen\": \"\", \"rejected\": \"r\"}             | field \"chosen\" is empty",
        "empty rejected         | {\"prompt\": \"p\", \"chosen\": \"c\", \"rejected\": \"\"}             | field \"rejected\" is empty",
        "infinite score         | {\"prompt\": \"p\", \"chosen\": \"c\", \"rejected\": \"r\", \"score_chosen\": 1e999, \"score_rejected\": 1} | field \"score_chosen\" is 1e999, which is not a finite number",
        "NaN string score       | {\"prompt\": \"p\", \"chosen\": \"c\", \"rejected\": \"r\", \"score_chosen\": 1, \"score_rejected\": \"NaN\"} | field \"score_rejected\" is the string \"NaN\" (expected a finite number)",
        "only one score         | {\"prompt\": \"p\", \"chosen\": \"c\", \"rejected\": \"r\", \"score_chosen\": 1} | field \"score_rejected\" is missing but \"score_chosen\" is present",
        "only one ref logp      | {\"prompt\": \"p\", \"chosen\": \"c\", \"rejected\": \"r\", \"ref_rejected_logps\": -2} | field \"ref_chosen_logps\" is missing but \"ref_rejected_logps\" is present",
        "boolean ref logp       | {\"prompt\": \"p\", \"chosen\": \"c\", \"rejected\": \"r\", \"ref_chosen_logps\": true, \"ref_rejected_logps\": -2} | field \"ref_chosen_logps\" is a boolean (true) (expected a finite number)",
        "duplicate key          | {\"prompt\": \"p\", \"chosen\": \"c\", \"rejected\": \"r\", \"chosen\": \"d\"} | duplicate key \"chosen\"",
        "duplicate score        | {\"prompt\": \"p\", \"chosen\": \"c\", \"rejected\": \"r\", \"score_chosen\": 1, \"score_rejected\": 0, \"score_chosen\": 2} | duplicate key \"score_chosen\"",
        "negative infinite logp | {\"prompt\": \"p\", \"chosen\": \"c\", \"rejected\": \"r\", \"ref_chosen_logps\": -1e400, \"ref_rejected_logps\": -2} | field \"ref_chosen_logps\" is -1e400, which is not a finite number",
    })
    void badRecordIsReportedWithFileLineAndField(String name, String line, String expected) throws IOException {
        Path p = file("data.jsonl", "{\"prompt\": \"ok\", \"chosen\": \"c\", \"rejected\": \"r\"}", line.strip());
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> PreferenceDataset.read(p));
        String msg = e.getMessage();
        assertTrue(msg.startsWith(p + ":2: "), msg);
        assertTrue(msg.contains(expected.strip()), msg);
    }

    @Test
    void exampleMessageFromTheSpecification() throws IOException {
        Path p = file("data.jsonl", "{\"prompt\": \"p\", \"chosen\": \"c\", \"rejected\": \"r\"}",
                "", "", "", "", "",
                "{\"prompt\": \"p\", \"rejected\": \"r\"}");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> PreferenceDataset.read(p));
        assertEquals(p + ":7: field \"chosen\" is missing (expected a string)", e.getMessage());
    }

    @Test
    void wholeFileIsValidatedAndSeveralProblemsAreListed() throws IOException {
        String good = "{\"prompt\": \"p\", \"chosen\": \"c\", \"rejected\": \"r\"}";
        String[] lines = new String[30];
        for (int i = 0; i < lines.length; i++) {
            lines[i] = good;
        }
        lines[29] = "{\"prompt\": \"p\", \"chosen\": \"c\"}";  // the only problem is on the last line
        Path late = file("late.jsonl", lines);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> PreferenceDataset.read(late));
        assertTrue(e.getMessage().startsWith(late + ":30: field \"rejected\" is missing"), e.getMessage());

        for (int i = 0; i < lines.length; i++) {
            lines[i] = "{}";
        }
        Path all = file("all.jsonl", lines);
        e = assertThrows(IllegalArgumentException.class, () -> PreferenceDataset.read(all));
        String msg = e.getMessage();
        assertTrue(msg.startsWith(all + ":1: field \"prompt\" is missing"), msg);
        assertTrue(msg.contains(all + ":1: field \"chosen\" is missing"), msg);
        assertTrue(msg.contains("(90 problems in all, the first 10 shown)"), msg);
    }

    @Test
    void missingEmptyAndNonUtf8FilesAreReported() throws IOException {
        Path missing = dir.resolve("nope.jsonl");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> PreferenceDataset.read(missing));
        assertEquals(missing + ": no such file", e.getMessage());

        Path empty = file("empty.jsonl", "", "  ");
        e = assertThrows(IllegalArgumentException.class, () -> PreferenceDataset.read(empty));
        assertTrue(e.getMessage().startsWith(empty + ": no records"), e.getMessage());

        Path latin1 = dir.resolve("latin1.jsonl");
        Files.write(latin1, "{\"prompt\": \"caf\u00e9\", \"chosen\": \"c\", \"rejected\": \"r\"}\n"
                .getBytes(StandardCharsets.ISO_8859_1));
        e = assertThrows(IllegalArgumentException.class, () -> PreferenceDataset.read(latin1));
        assertTrue(e.getMessage().startsWith(latin1 + ":1: not valid UTF-8"), e.getMessage());

        // a bad byte deep in a file is reported on its own line (a reader that decodes ahead named line 226 for
        // 250), and the lines after it are still checked
        java.io.ByteArrayOutputStream deep = new java.io.ByteArrayOutputStream();
        byte[] good = ("{\"prompt\": \"" + "p".repeat(60) + "\", \"chosen\": \"c\", \"rejected\": \"r\"}\n")
                .getBytes(StandardCharsets.UTF_8);
        for (int i = 1; i <= 260; i++) {
            deep.writeBytes(i == 250 ? "{\"prompt\": \"caf\u00e9\", \"chosen\": \"c\", \"rejected\": \"r\"}\r\n"
                    .getBytes(StandardCharsets.ISO_8859_1) : i == 255 ? "{\"prompt\": 1}\n".getBytes(StandardCharsets.UTF_8) : good);
        }
        Path bad250 = dir.resolve("bad250.jsonl");
        Files.write(bad250, deep.toByteArray());
        e = assertThrows(IllegalArgumentException.class, () -> PreferenceDataset.read(bad250));
        assertTrue(e.getMessage().startsWith(bad250 + ":250: not valid UTF-8 text (byte 16 of the line)"), e.getMessage());
        assertTrue(e.getMessage().contains(bad250 + ":255: "), "later lines still checked: " + e.getMessage());
        Files.write(bad250, Arrays.copyOf(deep.toByteArray(), 249 * good.length + 1));  // no final newline
        e = assertThrows(IllegalArgumentException.class, () -> PreferenceDataset.read(bad250));
        assertTrue(e.getMessage().startsWith(bad250 + ":250: "), e.getMessage());

        e = assertThrows(IllegalArgumentException.class, () -> PreferenceDataset.read(dir));
        assertTrue(e.getMessage().contains("is a directory"), e.getMessage());
    }

    @Test
    void writeThenReadRoundTripsExactly() {
        List<PreferencePair> pairs = List.of(
                PreferencePair.of("Say <b>hi</b> & \"quote\"\n", "h\u00e9llo \u2028 \ud83d\ude00", "no"),
                PreferencePair.of("", "a", "b").withScores(0.1, -2.0000000000000004),
                PreferencePair.of("p", "c", "r").withReferenceLogps(-123.456789012345, -1e-300)
                        .withScores(3, 4));
        Path out = dir.resolve("out.jsonl");
        PreferenceDataset.write(out, pairs);
        List<PreferencePair> back = PreferenceDataset.read(out);
        assertEquals(pairs.size(), back.size());
        for (int i = 0; i < pairs.size(); i++) {
            assertEquals(pairs.get(i).withSource(out + ":" + (i + 1)), back.get(i));
        }
    }

    @Test
    void writeUsesTrlNamesOnlyForPresentFieldsAndLeavesNoTemporaryFile() throws IOException {
        Path out = dir.resolve("out.jsonl");
        Files.writeString(out, "old contents that are replaced\n");
        PreferenceDataset.write(out, List.of(PreferencePair.of("<p>", "c", "r").withScores(1, 0.5)));
        assertEquals("{\"prompt\":\"<p>\",\"chosen\":\"c\",\"rejected\":\"r\",\"score_chosen\":1.0,"
                + "\"score_rejected\":0.5}\n", Files.readString(out));
        try (var files = Files.list(dir)) {
            assertEquals(List.of(out), files.toList());
        }
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> PreferenceDataset.write(dir.resolve("no/such/dir/x.jsonl"), List.of()));
        assertTrue(e.getMessage().contains("does not exist"), e.getMessage());
    }

    @Test
    void writeWithReferenceLogpsKeepsEveryOtherFieldInPlace() throws IOException {
        Path in = file("in.jsonl",
                "{\"id\": 7, \"prompt\": \"p\", \"chosen\": \"c\", \"rejected\": \"r\", \"meta\": {\"x\": 1.50}}",
                "",
                "{\"prompt\": \"q\", \"ref_chosen_logps\": 0.0, \"chosen\": \"c\", \"rejected\": \"r\", "
                        + "\"ref_rejected_logps\": 9}");
        Path out = dir.resolve("with-ref.jsonl");
        PreferenceDataset.writeWithReferenceLogps(in, out, new double[] {-10.5, -3.25}, new double[] {-11, -4});

        List<String> lines = Files.readAllLines(out);
        assertEquals(2, lines.size());
        assertEquals("{\"id\":7,\"prompt\":\"p\",\"chosen\":\"c\",\"rejected\":\"r\",\"meta\":{\"x\":1.50},"
                + "\"ref_chosen_logps\":-10.5,\"ref_rejected_logps\":-11.0}", lines.get(0));
        JsonObject second = JsonParser.parseString(lines.get(1)).getAsJsonObject();
        assertEquals(List.of("prompt", "ref_chosen_logps", "chosen", "rejected", "ref_rejected_logps"),
                List.copyOf(second.keySet()));  // overwritten in place
        assertEquals(-3.25, second.get("ref_chosen_logps").getAsDouble());

        List<PreferencePair> pairs = PreferenceDataset.read(out);
        assertEquals(-10.5, pairs.get(0).refChosenLogps());
        assertEquals(-4.0, pairs.get(1).refRejectedLogps());

        // in place, and wrong counts or non-finite values rejected before anything is written
        PreferenceDataset.writeWithReferenceLogps(out, out, new double[] {-1, -2}, new double[] {-3, -4});
        assertEquals(-2.0, PreferenceDataset.read(out).get(1).refChosenLogps());
        String before = Files.readString(out);
        assertThrows(IllegalArgumentException.class,
                () -> PreferenceDataset.writeWithReferenceLogps(out, out, new double[] {1}, new double[] {3}));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> PreferenceDataset.writeWithReferenceLogps(out, out, new double[] {1, Double.NaN},
                        new double[] {3, 4}));
        assertTrue(e.getMessage().contains("record 2"), e.getMessage());
        assertEquals(before, Files.readString(out));
    }

    @Test
    void pairConstructorChecksWhatConsumersRelyOn() {
        assertThrows(IllegalArgumentException.class, () -> PreferencePair.of(null, "c", "r"));
        assertThrows(IllegalArgumentException.class, () -> PreferencePair.of("p", "", "r"));
        assertThrows(IllegalArgumentException.class,
                () -> new PreferencePair("p", "c", "r", 1.0, null, null, null, "x"));
        assertThrows(IllegalArgumentException.class,
                () -> PreferencePair.of("p", "c", "r").withReferenceLogps(Double.NEGATIVE_INFINITY, 0));
        assertEquals("<unknown>", PreferencePair.of("p", "c", "r").source());
    }
}
