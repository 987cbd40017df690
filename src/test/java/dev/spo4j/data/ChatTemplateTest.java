package dev.spo4j.data;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import dev.spo4j.testing.RealTokenizers;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.time.LocalDateTime;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Chat templates rendered by jinjava, against goldens from Python jinja2 configured as
 * transformers does ({@code test-data/chat-templates/render_goldens.py}).
 */
class ChatTemplateTest {
    private static final Path DIR = Paths.get("test-data", "chat-templates");

    static JsonObject json(Path file) throws IOException {
        return JsonParser.parseString(Files.readString(file, StandardCharsets.UTF_8)).getAsJsonObject();
    }

    @SuppressWarnings("unchecked")
    static List<Map<String, Object>> messages(JsonElement e) {
        List<Map<String, Object>> out = new ArrayList<>();
        for (Object m : (List<Object>) ChatTemplate.toJava(e)) {
            out.add((Map<String, Object>) m);
        }
        return out;
    }

    @ParameterizedTest
    @ValueSource(strings = {"llama3", "llama3_1", "qwen3", "gemma3"})
    void rendersAsJinja2(String name) throws IOException {
        Path folder = RealTokenizers.folder(name);
        ChatTemplate template = ChatTemplate.load(folder, json(folder.resolve("tokenizer_config.json")));
        JsonObject conversations = json(DIR.resolve("conversations.json"));
        JsonObject goldens = json(DIR.resolve("goldens.json")).getAsJsonObject(name);
        int checked = 0;
        for (String conv : conversations.keySet()) {
            for (int gen = 0; gen < 2; gen++) {
                JsonObject golden = goldens.getAsJsonObject(conv + "|" + gen);
                List<Map<String, Object>> msgs = messages(conversations.get(conv));
                boolean addGen = gen == 1;
                if (golden.has("error")) {
                    ChatTemplate.TemplateException e = assertThrows(ChatTemplate.TemplateException.class,
                            () -> template.render(msgs, addGen), conv);
                    assertTrue(e.getMessage().contains(golden.get("error").getAsString()), e.getMessage());
                } else {
                    assertEquals(golden.get("text").getAsString(), template.render(msgs, addGen), name + " " + conv + " gen=" + gen);
                }
                checked++;
            }
        }
        assertEquals(2 * conversations.size(), checked);
    }

    private static String render(String source, Object messages) {
        return ChatTemplate.of(source, Map.of("bos_token", "<s>"))
                .render((List<Map<String, Object>>) messages, false);
    }

    @Test
    void pythonStringMethods() {
        List<Map<String, Object>> msgs = List.of(Map.of("role", "user", "content", "\n a b  c \n"));
        assertEquals("[a b  c]", render("[{{ messages[0].content.strip() }}]", msgs));
        assertEquals("[a b  c \n]", render("[{{ messages[0].content.lstrip() }}]", msgs));
        assertEquals("[ a b  c ]", render("[{{ messages[0].content.strip('\\n') }}]", msgs));
        assertEquals("3|c", render("{{ messages[0].content.split()|length }}|{{ messages[0].content.split()[-1] }}", msgs));
        assertEquals("yes no", render("{{ 'yes' if 'abc'.startswith('ab') else 'no' }} "
                + "{{ 'yes' if 'abc'.endswith('b') else 'no' }}", msgs));
        assertEquals("yes", render("{{ 'yes' if 'abc'.endswith(('x', 'c')) else 'no' }}", msgs));
        assertEquals("['', 'b', '']", render("{{ 'xbx'.split('x') }}", msgs));
        assertEquals("x:1,y:2,", render("{% for k, v in {'x': 1, 'y': 2}.items() %}{{ k }}:{{ v }},{% endfor %}", msgs));
        assertEquals("<s>", render("{{ bos_token }}", msgs));
    }

    @Test
    void namespaceReverseSliceAndLoopControls() {
        List<Map<String, Object>> msgs = List.of(Map.of("role", "user", "content", "a"),
                Map.of("role", "assistant", "content", "b"), Map.of("role", "user", "content", "c"));
        assertEquals("cba", render("{% for m in messages[::-1] %}{{ m.content }}{% endfor %}", msgs));
        assertEquals("2", render("{% set ns = namespace(i=-1) %}{% for m in messages %}{% if m.role == 'user' %}"
                + "{% set ns.i = loop.index0 %}{% endif %}{% endfor %}{{ ns.i }}", msgs));
        assertEquals("a", render("{% for m in messages %}{% if loop.index0 == 1 %}{% break %}{% endif %}{{ m.content }}{% endfor %}", msgs));
        assertEquals("ac", render("{% for m in messages %}{% if m.role == 'assistant' %}{% continue %}{% endif %}{{ m.content }}{% endfor %}", msgs));
        assertEquals("bc", render("{% for m in messages[1:] %}{{ m.content }}{% endfor %}", msgs));
    }

    @Test
    void keywordArgumentsAndReversedSlicesAreRewrittenInsideTagsOnly() {
        assertEquals("{% set ns = namespace(a=(1), b=(messages|length - 1)) %}x=1, [::-1]",
                ChatTemplate.normalise("{% set ns = namespace(a=1, b=messages|length - 1) %}x=1, [::-1]"));
        assertEquals("{{ (m.content|reverse|list) }}{{ 'a[::-1]' }}{# f(x=1) #}",
                ChatTemplate.normalise("{{ m.content[::-1] }}{{ 'a[::-1]' }}{# f(x=1) #}"));
        assertEquals("{{ f(a == 1, 'k=v', g(x=(2))) }}", ChatTemplate.normalise("{{ f(a == 1, 'k=v', g(x=2)) }}"));
        assertEquals("1", render("{% set ns = namespace(i=messages|length - 1) %}{{ ns.i }}",
                List.of(Map.of("role", "user", "content", "a"), Map.of("role", "user", "content", "b"))));
    }

    @Test
    void trimAndLstripBlocks() {
        // trim_blocks drops the newline after a tag; lstrip_blocks the indentation before it
        assertEquals("a\nb\n", render("{% for m in ['a', 'b'] %}\n    {% if true %}\n{{ m }}\n    {% endif %}\n{% endfor %}\n", List.of()));
    }

    @Test
    void tojsonAsTransformers() {
        assertEquals("{\"name\": \"f\", \"args\": [1, 2.5, true, null], \"é\": \"<b>\"}",
                render("{{ {'name': 'f', 'args': [1, 2.5, true, none], 'é': '<b>'}|tojson }}", List.of()));
        assertEquals("{\n  \"a\": [\n    1\n  ]\n}", render("{{ {'a': [1]}|tojson(indent=2) }}", List.of()));
    }

    @Test
    void raiseExceptionStopsRendering() {
        ChatTemplate.TemplateException e = assertThrows(ChatTemplate.TemplateException.class,
                () -> render("before{{ raise_exception('roles must alternate') }}after", List.of()));
        assertTrue(e.getMessage().contains("roles must alternate"), e.getMessage());
    }

    @Test
    void strftimeCodes() {
        LocalDateTime t = LocalDateTime.of(2024, 7, 5, 14, 3, 9);
        assertEquals("05 Jul 2024", ChatTemplate.strftime(t, "%d %b %Y"));
        assertEquals("Friday, July 05 02:03:09 PM 100%", ChatTemplate.strftime(t, "%A, %B %d %I:%M:%S %p 100%%"));
        assertThrows(ChatTemplate.TemplateException.class, () -> ChatTemplate.strftime(t, "%Q"));
    }

    @Test
    void templateFromListAndJinjaFile(@org.junit.jupiter.api.io.TempDir Path dir) throws IOException {
        JsonObject config = JsonParser.parseString("{\"bos_token\": \"<s>\", \"chat_template\": "
                + "[{\"name\": \"tool_use\", \"template\": \"T\"}, {\"name\": \"default\", \"template\": \"D{{ bos_token }}\"}]}")
                .getAsJsonObject();
        assertEquals("D<s>", ChatTemplate.load(dir, config).render(List.of(), false));
        Files.writeString(dir.resolve("chat_template.jinja"), "J{{ messages|length }}");
        assertEquals("J0", ChatTemplate.load(dir, config).render(List.of(), false));
        Files.delete(dir.resolve("chat_template.jinja"));
        assertEquals(null, ChatTemplate.load(dir, JsonParser.parseString("{}").getAsJsonObject()));
        JsonObject bad = JsonParser.parseString("{\"chat_template\": [{\"name\": \"x\", \"template\": \"T\"}]}").getAsJsonObject();
        assertThrows(IllegalArgumentException.class, () -> ChatTemplate.load(dir, bad));
    }
}
