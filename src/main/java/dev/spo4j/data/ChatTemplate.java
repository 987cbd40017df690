package dev.spo4j.data;

import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonPrimitive;
import com.hubspot.jinjava.Jinjava;
import com.hubspot.jinjava.JinjavaConfig;
import com.hubspot.jinjava.LegacyOverrides;
import com.hubspot.jinjava.el.JinjavaInterpreterResolver;
import com.hubspot.jinjava.interpret.JinjavaInterpreter;
import com.hubspot.jinjava.interpret.RenderResult;
import com.hubspot.jinjava.interpret.TemplateError;
import com.hubspot.jinjava.lib.filter.Filter;
import com.hubspot.jinjava.lib.fn.ELFunctionDefinition;
import com.hubspot.jinjava.objects.SafeString;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.math.BigDecimal;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.LocalDateTime;
import java.time.format.TextStyle;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import jinjava.javax.el.CompositeELResolver;
import jinjava.javax.el.ELContext;
import jinjava.javax.el.ELResolver;

/**
 * A Hugging Face chat template ({@code chat_template} of {@code tokenizer_config.json}, or a
 * {@code chat_template.jinja} file beside it), rendered as transformers'
 * {@code apply_chat_template} renders it.
 *
 * <p>transformers compiles the template with jinja2's {@code ImmutableSandboxedEnvironment},
 * {@code trim_blocks=True}, {@code lstrip_blocks=True}, the loop-controls extension, its own
 * {@code tojson} filter ({@code json.dumps} with {@code ensure_ascii=False}) and the globals
 * {@code raise_exception} and {@code strftime_now}, and passes {@code messages},
 * {@code add_generation_prompt} and the tokenizer's special tokens ({@code bos_token},
 * {@code eos_token}, {@code pad_token}, {@code unk_token}, ...) as variables. This class does
 * the same on jinjava, which lacks the Python string and dict methods that templates call on
 * values ({@code .strip()}, {@code .split()}, {@code .startswith()}, {@code .items()}, ...):
 * those are added by an expression resolver placed before jinjava's own (see
 * {@link PythonMethods}). The reference renderer for the tests is
 * {@code test-data/chat-templates/render_goldens.py} (Python jinja2, set up as above).
 *
 * <p>A template that calls {@code raise_exception(msg)} makes {@link #render} throw a
 * {@link TemplateException} with that message; so does any error jinjava reports (unknown
 * filter, syntax error).
 */
public final class ChatTemplate {
    /** A message the template itself rejected, or a template that failed to render. */
    public static final class TemplateException extends IllegalArgumentException {
        public TemplateException(String message) {
            super(message);
        }
    }

    private static final ThreadLocal<String> RAISED = new ThreadLocal<>();

    private final String source;
    private final String rendered;
    private final Map<String, Object> specialTokens;
    private final Jinjava jinjava;

    private ChatTemplate(String source, Map<String, Object> specialTokens) {
        this.source = source;
        this.rendered = normalise(source);
        this.specialTokens = specialTokens;
        CompositeELResolver resolver = new CompositeELResolver();
        resolver.add(new PythonMethods());
        resolver.add(JinjavaInterpreterResolver.DEFAULT_RESOLVER_READ_WRITE);
        JinjavaConfig config = JinjavaConfig.newBuilder()
                .withTrimBlocks(true)
                .withLstripBlocks(true)
                .withElResolver(resolver)
                .withFailOnUnknownTokens(false)
                // the overrides make jinjava behave as jinja2 where it differs by default:
                // Python operator precedence, Python
                // printing of values, iteration over a dict's keys, {{- and -}} trimming around
                // expressions as around statements
                .withLegacyOverrides(LegacyOverrides.newBuilder()
                        .withUseNaturalOperatorPrecedence(true)
                        .withUsePyishObjectMapper(true)
                        .withIterateOverMapKeys(true)
                        .withEvaluateMapKeys(true)
                        .withKeepNullableLoopValues(true)
                        .withUseTrimmingForNotesAndExpressions(true)
                        .build())
                .build();
        this.jinjava = new Jinjava(config);
        jinjava.registerFunction(new ELFunctionDefinition("", "raise_exception", ChatTemplate.class,
                "raiseException", String.class));
        jinjava.registerFunction(new ELFunctionDefinition("", "strftime_now", ChatTemplate.class,
                "strftimeNow", String.class));
        jinjava.registerFilter(new ToJson());
    }

    /** A template from its source and the special-token variables it may read. */
    public static ChatTemplate of(String source, Map<String, Object> specialTokens) {
        return new ChatTemplate(source, new LinkedHashMap<>(specialTokens));
    }

    /**
     * The template of a model folder: {@code chat_template.jinja} when present, else
     * {@code tokenizer_config.json}'s {@code chat_template} (a string, or a list of
     * {@code {name, template}} of which the one named {@code default} is used); null when
     * the folder defines none.
     */
    public static ChatTemplate load(Path modelDir, JsonObject tokenizerConfig) {
        Path jinjaFile = modelDir.resolve("chat_template.jinja");
        String source = null;
        if (Files.isRegularFile(jinjaFile)) {
            try {
                source = Files.readString(jinjaFile, StandardCharsets.UTF_8);
            } catch (IOException e) {
                throw new UncheckedIOException(jinjaFile + ": " + e.getMessage(), e);
            }
        } else if (tokenizerConfig != null && tokenizerConfig.has("chat_template")) {
            source = templateSource(tokenizerConfig.get("chat_template"),
                    modelDir.resolve("tokenizer_config.json"));
        }
        if (source == null) {
            return null;
        }
        Map<String, Object> tokens = new LinkedHashMap<>();
        for (String key : List.of("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token",
                "mask_token")) {
            String value = tokenizerConfig == null ? null : tokenString(tokenizerConfig.get(key));
            if (value != null) {                 // as special_tokens_map: unset tokens are left undefined
                tokens.put(key, value);
            }
        }
        if (tokenizerConfig != null && tokenizerConfig.get("additional_special_tokens") instanceof JsonArray a) {
            List<Object> extra = new ArrayList<>();
            for (JsonElement e : a) {
                extra.add(tokenString(e));
            }
            tokens.put("additional_special_tokens", extra);
        }
        return new ChatTemplate(source, tokens);
    }

    /** {@link #load} with the folder's tokenizer_config.json (when present); null when the folder defines no template. */
    public static ChatTemplate forModel(Path modelDir) {
        Path file = modelDir.resolve("tokenizer_config.json");
        JsonObject config = null;
        if (Files.isRegularFile(file)) {
            try {
                JsonElement e = com.google.gson.JsonParser.parseString(Files.readString(file, StandardCharsets.UTF_8));
                if (!e.isJsonObject()) {
                    throw new IllegalArgumentException(file + ": expected a JSON object");
                }
                config = e.getAsJsonObject();
            } catch (com.google.gson.JsonParseException e) {
                throw new IllegalArgumentException(file + ": malformed JSON: " + e.getMessage(), e);
            } catch (IOException e) {
                throw new UncheckedIOException(file + ": " + e.getMessage(), e);
            }
        }
        return load(modelDir, config);
    }

    private static String templateSource(JsonElement e, Path file) {
        if (e == null || e.isJsonNull()) {
            return null;
        }
        if (e.isJsonPrimitive() && e.getAsJsonPrimitive().isString()) {
            return e.getAsString();
        }
        if (e.isJsonArray()) {
            for (JsonElement t : e.getAsJsonArray()) {
                if (t.isJsonObject() && "default".equals(jsonString(t.getAsJsonObject().get("name")))) {
                    return jsonString(t.getAsJsonObject().get("template"));
                }
            }
            throw new IllegalArgumentException(file + ": chat_template is a list with no template named "
                    + "\"default\"");
        }
        throw new IllegalArgumentException(file + ": chat_template is " + e
                + " (expected a string or a list of {name, template})");
    }

    private static String jsonString(JsonElement e) {
        return e != null && e.isJsonPrimitive() && e.getAsJsonPrimitive().isString() ? e.getAsString() : null;
    }

    private static String tokenString(JsonElement e) {
        if (e == null || e.isJsonNull()) {
            return null;
        }
        if (e.isJsonObject() && e.getAsJsonObject().has("content")) {
            return jsonString(e.getAsJsonObject().get("content"));
        }
        return jsonString(e);
    }

    /**
     * Two spots where jinjava's expression parser reads Python differently, rewritten inside
     * tags only (text, comments and string literals are left alone) before jinjava parses:
     * <ul>
     *   <li>{@code seq[::-1]}, the one slice it lacks (Qwen's templates walk messages
     *       backwards with it), becomes {@code (seq|reverse|list)} for an identifier path
     *       {@code seq} such as {@code messages} or {@code message.content};</li>
     *   <li>a keyword argument's value is parsed by jinjava with the {@code =} binding
     *       tighter than arithmetic ({@code namespace(i=messages|length - 1)} would subtract 1
     *       from the keyword argument), so each keyword argument's value is put in
     *       parentheses: {@code namespace(i=(messages|length - 1))}.</li>
     * </ul>
     */
    static String normalise(String source) {
        StringBuilder out = new StringBuilder(source.length() + 16);
        int i = 0, n = source.length();
        while (i < n) {
            int open = nextTag(source, i);
            if (open < 0) {
                out.append(source, i, n);
                break;
            }
            out.append(source, i, open + 2);
            String closer = source.charAt(open + 1) == '{' ? "}}" : "%}";
            int close = tagEnd(source, open + 2, closer);
            if (close < 0) {                       // unterminated: leave it to jinjava to report
                out.append(source, open + 2, n);
                break;
            }
            out.append(rewriteExpression(source.substring(open + 2, close)));
            out.append(closer);
            i = close + 2;
        }
        return out.toString();
    }

    private static int nextTag(String s, int from) {
        for (int i = s.indexOf('{', from); i >= 0 && i + 1 < s.length(); i = s.indexOf('{', i + 1)) {
            char c = s.charAt(i + 1);
            if (c == '{' || c == '%') {
                return i;
            }
            if (c == '#') {                        // a comment: skip to its end
                int end = s.indexOf("#}", i + 2);
                if (end < 0) {
                    return -1;
                }
                i = end;
            }
        }
        return -1;
    }

    /** The index of {@code closer} ending a tag's expression, outside string literals. */
    private static int tagEnd(String s, int from, String closer) {
        char quote = 0;
        for (int i = from; i + 1 < s.length(); i++) {
            char c = s.charAt(i);
            if (quote != 0) {
                if (c == '\\') {
                    i++;
                } else if (c == quote) {
                    quote = 0;
                }
            } else if (c == '\'' || c == '"') {
                quote = c;
            } else if (c == closer.charAt(0) && s.charAt(i + 1) == closer.charAt(1)) {
                return i;
            }
        }
        return -1;
    }

    private static final java.util.regex.Pattern REVERSED = java.util.regex.Pattern.compile(
            "([A-Za-z_][A-Za-z_0-9]*(?:\\.[A-Za-z_][A-Za-z_0-9]*)*)\\[\\s*:\\s*:\\s*-1\\s*\\]");
    private static final java.util.regex.Pattern KEYWORD = java.util.regex.Pattern.compile(
            "\\s*[A-Za-z_][A-Za-z_0-9]*\\s*=(?!=)");

    private static String rewriteExpression(String e) {
        // 1. seq[::-1] outside string literals
        StringBuilder a = new StringBuilder(e.length());
        int last = 0;
        java.util.regex.Matcher m = REVERSED.matcher(e);
        while (m.find()) {
            if (inString(e, m.start())) {
                continue;
            }
            a.append(e, last, m.start()).append('(').append(m.group(1)).append("|reverse|list)");
            last = m.end();
        }
        e = a.append(e.substring(last)).toString();
        // 2. keyword arguments of calls: name=value -> name=(value)
        StringBuilder out = new StringBuilder(e.length() + 8);
        java.util.ArrayDeque<boolean[]> stack = new java.util.ArrayDeque<>();  // per bracket: {isCall, inKeyword}
        char quote = 0;
        for (int i = 0; i < e.length(); i++) {
            char c = e.charAt(i);
            if (quote != 0) {
                out.append(c);
                if (c == '\\' && i + 1 < e.length()) {
                    out.append(e.charAt(++i));
                } else if (c == quote) {
                    quote = 0;
                }
                continue;
            }
            if (c == '\'' || c == '"') {
                quote = c;
                out.append(c);
                continue;
            }
            boolean[] top = stack.peek();
            if (c == '(' || c == '[' || c == '{') {
                boolean call = c == '(' && i > 0 && (Character.isLetterOrDigit(e.charAt(i - 1)) || e.charAt(i - 1) == '_');
                stack.push(new boolean[] {call, false});
                out.append(c);
                if (call) {
                    i = keywordStart(e, i + 1, out, stack.peek());
                }
                continue;
            }
            if (c == ')' || c == ']' || c == '}') {
                if (top != null && top[1]) {
                    out.append(')');
                }
                if (!stack.isEmpty()) {
                    stack.pop();
                }
                out.append(c);
                continue;
            }
            if (c == ',' && top != null && top[0]) {
                if (top[1]) {
                    out.append(')');
                    top[1] = false;
                }
                out.append(c);
                i = keywordStart(e, i + 1, out, top);
                continue;
            }
            out.append(c);
        }
        return out.toString();
    }

    /** At an argument's start: copies {@code name=} and opens a parenthesis when it is a keyword argument. */
    private static int keywordStart(String e, int from, StringBuilder out, boolean[] frame) {
        java.util.regex.Matcher k = KEYWORD.matcher(e).region(from, e.length());
        if (k.lookingAt()) {
            out.append(e, from, k.end()).append('(');
            frame[1] = true;
            return k.end() - 1;
        }
        return from - 1;
    }

    private static boolean inString(String e, int at) {
        char quote = 0;
        for (int i = 0; i < at; i++) {
            char c = e.charAt(i);
            if (quote != 0) {
                if (c == '\\') {
                    i++;
                } else if (c == quote) {
                    quote = 0;
                }
            } else if (c == '\'' || c == '"') {
                quote = c;
            }
        }
        return quote != 0;
    }

    /** The template's source text. */
    public String source() {
        return source;
    }

    /** The special tokens given to the template as variables (a name to its string, or null). */
    public Map<String, Object> specialTokens() {
        return specialTokens;
    }

    /**
     * Renders {@code messages} (each a map with at least {@code role} and {@code content}; see
     * {@link #toJava}) as {@code apply_chat_template(messages, tokenize=False,
     * add_generation_prompt=...)}.
     *
     * @throws TemplateException when the template raises or fails; the message says why
     */
    public String render(List<Map<String, Object>> messages, boolean addGenerationPrompt) {
        Map<String, Object> vars = new LinkedHashMap<>(specialTokens);
        vars.put("messages", messages);
        vars.put("add_generation_prompt", addGenerationPrompt);
        RAISED.remove();
        RenderResult result;
        try {
            result = jinjava.renderForResult(rendered, vars);
        } catch (RuntimeException e) {
            String raised = RAISED.get();
            RAISED.remove();
            throw new TemplateException(raised != null ? "the chat template raised: " + raised
                    : "the chat template failed: " + e.getMessage());
        }
        String raised = RAISED.get();
        RAISED.remove();
        if (raised != null) {
            throw new TemplateException("the chat template raised: " + raised);
        }
        for (TemplateError err : result.getErrors()) {
            if (err.getSeverity() == TemplateError.ErrorType.FATAL) {
                throw new TemplateException("the chat template failed at line " + err.getLineno() + ": "
                        + err.getMessage());
            }
        }
        return result.getOutput();
    }

    /** Called by templates as {@code raise_exception(message)}. */
    public static String raiseException(String message) {
        RAISED.set(message);
        throw new TemplateException(message);
    }

    /** Called by templates as {@code strftime_now(format)}: the local time, Python strftime codes. */
    public static String strftimeNow(String format) {
        return strftime(LocalDateTime.now(), format);
    }

    /** Python's {@code datetime.strftime} for the codes chat templates use (C locale). */
    static String strftime(LocalDateTime t, String format) {
        StringBuilder out = new StringBuilder();
        for (int i = 0; i < format.length(); i++) {
            char c = format.charAt(i);
            if (c != '%' || i + 1 == format.length()) {
                out.append(c);
                continue;
            }
            char code = format.charAt(++i);
            switch (code) {
                case 'd' -> out.append(String.format("%02d", t.getDayOfMonth()));
                case 'm' -> out.append(String.format("%02d", t.getMonthValue()));
                case 'Y' -> out.append(t.getYear());
                case 'y' -> out.append(String.format("%02d", t.getYear() % 100));
                case 'H' -> out.append(String.format("%02d", t.getHour()));
                case 'I' -> out.append(String.format("%02d", (t.getHour() + 11) % 12 + 1));
                case 'M' -> out.append(String.format("%02d", t.getMinute()));
                case 'S' -> out.append(String.format("%02d", t.getSecond()));
                case 'p' -> out.append(t.getHour() < 12 ? "AM" : "PM");
                case 'j' -> out.append(String.format("%03d", t.getDayOfYear()));
                case 'b' -> out.append(t.getMonth().getDisplayName(TextStyle.SHORT, Locale.ENGLISH));
                case 'B' -> out.append(t.getMonth().getDisplayName(TextStyle.FULL, Locale.ENGLISH));
                case 'a' -> out.append(t.getDayOfWeek().getDisplayName(TextStyle.SHORT, Locale.ENGLISH));
                case 'A' -> out.append(t.getDayOfWeek().getDisplayName(TextStyle.FULL, Locale.ENGLISH));
                case '%' -> out.append('%');
                default -> throw new TemplateException("strftime_now: unsupported format code %" + code
                        + " in \"" + format + "\"");
            }
        }
        return out.toString();
    }

    /**
     * A JSON value as the plain Java values templates index: objects as insertion-ordered maps,
     * arrays as lists, integral numbers as Long, others as Double, strings, booleans, null.
     */
    public static Object toJava(JsonElement e) {
        if (e == null || e.isJsonNull()) {
            return null;
        }
        if (e.isJsonObject()) {
            Map<String, Object> m = new LinkedHashMap<>();
            for (Map.Entry<String, JsonElement> en : e.getAsJsonObject().entrySet()) {
                m.put(en.getKey(), toJava(en.getValue()));
            }
            return m;
        }
        if (e.isJsonArray()) {
            List<Object> l = new ArrayList<>();
            for (JsonElement x : e.getAsJsonArray()) {
                l.add(toJava(x));
            }
            return l;
        }
        JsonPrimitive p = e.getAsJsonPrimitive();
        if (p.isBoolean()) {
            return p.getAsBoolean();
        }
        if (p.isNumber()) {
            BigDecimal d = p.getAsBigDecimal();
            if (d.scale() <= 0 || d.stripTrailingZeros().scale() <= 0 && !p.getAsString().contains(".")) {
                try {
                    return d.longValueExact();
                } catch (ArithmeticException ignored) {
                    return d.doubleValue();
                }
            }
            return d.doubleValue();
        }
        return p.getAsString();
    }

    // ---- Python methods on strings, dicts and lists ----

    /**
     * Resolves the Python methods templates call on strings ({@code strip lstrip rstrip split
     * rsplit startswith endswith upper lower title capitalize replace find count join isdigit
     * isspace}), dicts ({@code items keys values get}) and lists ({@code index count}), with
     * Python's semantics; anything else falls through to jinjava.
     */
    static final class PythonMethods extends ELResolver {
        private static final Set<String> STRING_METHODS = Set.of("strip", "lstrip", "rstrip", "split", "rsplit",
                "startswith", "endswith", "upper", "lower", "title", "capitalize", "replace", "find", "count",
                "join", "isdigit", "isspace", "isalpha", "isalnum");
        private static final Set<String> DICT_METHODS = Set.of("items", "keys", "values", "get");

        @Override
        public Object invoke(ELContext context, Object base, Object method, Class<?>[] paramTypes, Object[] params) {
            if (method == null) {
                return null;
            }
            String name = method.toString();
            Object[] args = params == null ? new Object[0] : params;
            if ((base instanceof String || base instanceof SafeString) && STRING_METHODS.contains(name)) {
                context.setPropertyResolved(true);
                return stringMethod(base.toString(), name, args);
            }
            if (base instanceof Map<?, ?> map && DICT_METHODS.contains(name)) {
                context.setPropertyResolved(true);
                return dictMethod(map, name, args);
            }
            return null;
        }

        private static String str(Object o, String method) {
            if (o == null) {
                return null;
            }
            if (o instanceof String || o instanceof SafeString) {
                return o.toString();
            }
            throw new TemplateException("str." + method + "() got " + o.getClass().getSimpleName() + " " + o
                    + " (expected a string)");
        }

        static Object stringMethod(String s, String name, Object[] a) {
            switch (name) {
                case "strip":
                    return rstrip(lstrip(s, a.length > 0 ? str(a[0], name) : null), a.length > 0 ? str(a[0], name) : null);
                case "lstrip":
                    return lstrip(s, a.length > 0 ? str(a[0], name) : null);
                case "rstrip":
                    return rstrip(s, a.length > 0 ? str(a[0], name) : null);
                case "split":
                    return split(s, a.length > 0 ? str(a[0], name) : null, a.length > 1 ? toInt(a[1]) : -1);
                case "rsplit":
                    return rsplit(s, a.length > 0 ? str(a[0], name) : null, a.length > 1 ? toInt(a[1]) : -1);
                case "startswith":
                    return affix(s, a, true);
                case "endswith":
                    return affix(s, a, false);
                case "upper":
                    return s.toUpperCase(Locale.ROOT);
                case "lower":
                    return s.toLowerCase(Locale.ROOT);
                case "title":
                    return title(s);
                case "capitalize":
                    return s.isEmpty() ? s : s.substring(0, 1).toUpperCase(Locale.ROOT) + s.substring(1).toLowerCase(Locale.ROOT);
                case "replace":
                    if (a.length < 2) {
                        throw new TemplateException("str.replace() takes 2 arguments, got " + a.length);
                    }
                    return s.replace(str(a[0], name), str(a[1], name));
                case "find":
                    return (long) s.indexOf(str(a[0], name));
                case "count":
                    return (long) count(s, str(a[0], name));
                case "join": {
                    List<String> parts = new ArrayList<>();
                    for (Object o : iterable(a[0])) {
                        parts.add(String.valueOf(o));
                    }
                    return String.join(s, parts);
                }
                case "isdigit":
                    return !s.isEmpty() && s.chars().allMatch(Character::isDigit);
                case "isspace":
                    return !s.isEmpty() && s.chars().allMatch(Character::isWhitespace);
                case "isalpha":
                    return !s.isEmpty() && s.chars().allMatch(Character::isLetter);
                case "isalnum":
                    return !s.isEmpty() && s.chars().allMatch(Character::isLetterOrDigit);
                default:
                    throw new IllegalStateException(name);
            }
        }

        private static Object dictMethod(Map<?, ?> map, String name, Object[] a) {
            switch (name) {
                case "items": {
                    List<Object> items = new ArrayList<>();
                    for (Map.Entry<?, ?> e : map.entrySet()) {
                        items.add(Arrays.asList(e.getKey(), e.getValue()));
                    }
                    return items;
                }
                case "keys":
                    return new ArrayList<>(map.keySet());
                case "values":
                    return new ArrayList<>(map.values());
                case "get":
                    return map.containsKey(a[0]) ? map.get(a[0]) : a.length > 1 ? a[1] : null;
                default:
                    throw new IllegalStateException(name);
            }
        }

        private static Iterable<?> iterable(Object o) {
            if (o instanceof Iterable<?> it) {
                return it;
            }
            if (o instanceof Object[] arr) {
                return Arrays.asList(arr);
            }
            throw new TemplateException("expected a list, got " + o);
        }

        private static int toInt(Object o) {
            if (o instanceof Number n) {
                return n.intValue();
            }
            throw new TemplateException("expected an integer, got " + o);
        }

        private static boolean isPyWhitespace(char c) {
            return Character.isWhitespace(c) || Character.isSpaceChar(c);
        }

        static String lstrip(String s, String chars) {
            int i = 0;
            while (i < s.length() && (chars == null ? isPyWhitespace(s.charAt(i)) : chars.indexOf(s.charAt(i)) >= 0)) {
                i++;
            }
            return s.substring(i);
        }

        static String rstrip(String s, String chars) {
            int j = s.length();
            while (j > 0 && (chars == null ? isPyWhitespace(s.charAt(j - 1)) : chars.indexOf(s.charAt(j - 1)) >= 0)) {
                j--;
            }
            return s.substring(0, j);
        }

        static List<Object> split(String s, String sep, int maxsplit) {
            List<Object> out = new ArrayList<>();
            if (sep == null) {                     // runs of whitespace, no empty strings
                int i = 0, n = s.length(), splits = 0;
                while (true) {
                    while (i < n && isPyWhitespace(s.charAt(i))) {
                        i++;
                    }
                    if (i == n) {
                        break;
                    }
                    if (maxsplit >= 0 && splits == maxsplit) {
                        out.add(rstrip(s.substring(i), null));
                        break;
                    }
                    int j = i;
                    while (j < n && !isPyWhitespace(s.charAt(j))) {
                        j++;
                    }
                    out.add(s.substring(i, j));
                    splits++;
                    i = j;
                }
                return out;
            }
            if (sep.isEmpty()) {
                throw new TemplateException("str.split(): empty separator");
            }
            int from = 0, splits = 0;
            while (maxsplit < 0 || splits < maxsplit) {
                int at = s.indexOf(sep, from);
                if (at < 0) {
                    break;
                }
                out.add(s.substring(from, at));
                from = at + sep.length();
                splits++;
            }
            out.add(s.substring(from));
            return out;
        }

        static List<Object> rsplit(String s, String sep, int maxsplit) {
            if (sep == null || maxsplit < 0) {
                return split(s, sep, maxsplit < 0 ? -1 : maxsplit);
            }
            if (sep.isEmpty()) {
                throw new TemplateException("str.rsplit(): empty separator");
            }
            List<Object> out = new ArrayList<>();
            int to = s.length(), splits = 0;
            while (splits < maxsplit) {
                int at = s.lastIndexOf(sep, to - sep.length());
                if (at < 0) {
                    break;
                }
                out.add(0, s.substring(at + sep.length(), to));
                to = at;
                splits++;
            }
            out.add(0, s.substring(0, to));
            return out;
        }

        private static boolean affix(String s, Object[] a, boolean start) {
            if (a.length == 0) {
                throw new TemplateException((start ? "startswith" : "endswith") + "() takes one argument");
            }
            Collection<?> options = a[0] instanceof Collection<?> c ? c : List.of(a[0]);
            for (Object o : options) {
                String x = str(o, start ? "startswith" : "endswith");
                if (start ? s.startsWith(x) : s.endsWith(x)) {
                    return true;
                }
            }
            return false;
        }

        private static int count(String s, String sub) {
            if (sub.isEmpty()) {
                return s.length() + 1;
            }
            int n = 0;
            for (int at = s.indexOf(sub); at >= 0; at = s.indexOf(sub, at + sub.length())) {
                n++;
            }
            return n;
        }

        private static String title(String s) {
            StringBuilder b = new StringBuilder(s.length());
            boolean prevCased = false;
            for (char c : s.toCharArray()) {
                b.append(prevCased ? Character.toLowerCase(c) : Character.toUpperCase(c));
                prevCased = Character.isLetter(c);
            }
            return b.toString();
        }

        @Override
        public Class<?> getCommonPropertyType(ELContext context, Object base) {
            return null;
        }

        @Override
        public java.util.Iterator<java.beans.FeatureDescriptor> getFeatureDescriptors(ELContext context, Object base) {
            return null;
        }

        @Override
        public Class<?> getType(ELContext context, Object base, Object property) {
            return null;
        }

        @Override
        public Object getValue(ELContext context, Object base, Object property) {
            return null;
        }

        @Override
        public boolean isReadOnly(ELContext context, Object base, Object property) {
            return false;
        }

        @Override
        public void setValue(ELContext context, Object base, Object property, Object value) {
            // not ours: left unresolved for the next resolver
        }
    }

    // ---- tojson as transformers defines it ----

    /**
     * {@code tojson} as transformers overrides it: {@code json.dumps(x, ensure_ascii=False,
     * indent=indent, separators=separators, sort_keys=sort_keys)} (no HTML escaping, unlike
     * jinja2's own filter).
     */
    static final class ToJson implements Filter {
        @Override
        public String getName() {
            return "tojson";
        }

        @Override
        public Object filter(Object var, JinjavaInterpreter interpreter, String... args) {
            return filter(var, interpreter, args, Map.of());
        }

        @Override
        public Object filter(Object var, JinjavaInterpreter interpreter, Object[] args, Map<String, Object> kwargs) {
            Object indentArg = kwargs.containsKey("indent") ? kwargs.get("indent") : args.length > 0 ? args[0] : null;
            Integer indent = indentArg == null ? null : ((Number) (indentArg instanceof String s
                    ? Long.parseLong(s) : indentArg)).intValue();
            boolean sortKeys = Boolean.TRUE.equals(kwargs.get("sort_keys"));
            StringBuilder out = new StringBuilder();
            dump(var, indent, sortKeys, 0, out);
            return out.toString();
        }

        static void dump(Object v, Integer indent, boolean sortKeys, int depth, StringBuilder out) {
            String itemSep = indent == null ? ", " : ",";
            if (v == null) {
                out.append("null");
            } else if (v instanceof Boolean b) {
                out.append(b ? "true" : "false");
            } else if (v instanceof Long || v instanceof Integer || v instanceof Short || v instanceof Byte) {
                out.append(v);
            } else if (v instanceof Number n) {
                out.append(pythonFloat(n.doubleValue()));
            } else if (v instanceof String || v instanceof SafeString || v instanceof Character) {
                quote(v.toString(), out);
            } else if (v instanceof Map<?, ?> m) {
                if (m.isEmpty()) {
                    out.append("{}");
                    return;
                }
                List<Map.Entry<?, ?>> entries = new ArrayList<>(m.entrySet());
                if (sortKeys) {
                    entries.sort((x, y) -> String.valueOf(x.getKey()).compareTo(String.valueOf(y.getKey())));
                }
                out.append('{');
                for (int i = 0; i < entries.size(); i++) {
                    if (i > 0) {
                        out.append(itemSep);
                    }
                    newline(indent, depth + 1, out);
                    quote(String.valueOf(entries.get(i).getKey()), out);
                    out.append(": ");
                    dump(entries.get(i).getValue(), indent, sortKeys, depth + 1, out);
                }
                newline(indent, depth, out);
                out.append('}');
            } else if (v instanceof Iterable<?> || v instanceof Object[]) {
                List<Object> items = new ArrayList<>();
                PythonMethods.iterable(v).forEach(items::add);
                if (items.isEmpty()) {
                    out.append("[]");
                    return;
                }
                out.append('[');
                for (int i = 0; i < items.size(); i++) {
                    if (i > 0) {
                        out.append(itemSep);
                    }
                    newline(indent, depth + 1, out);
                    dump(items.get(i), indent, sortKeys, depth + 1, out);
                }
                newline(indent, depth, out);
                out.append(']');
            } else {
                throw new TemplateException("tojson: cannot serialise " + v.getClass().getSimpleName() + " " + v);
            }
        }

        private static void newline(Integer indent, int depth, StringBuilder out) {
            if (indent != null) {
                out.append('\n').append(" ".repeat(indent * depth));
            }
        }

        private static String pythonFloat(double d) {
            if (Double.isNaN(d)) {
                return "NaN";
            }
            if (Double.isInfinite(d)) {
                return d > 0 ? "Infinity" : "-Infinity";
            }
            if (d == Math.rint(d) && Math.abs(d) < 1e16) {
                return (long) d + ".0";
            }
            String s = Double.toString(d);                 // shortest repr, as Python's
            int e = s.indexOf('E');
            if (e < 0) {
                return s;
            }
            String mant = s.substring(0, e);
            int exp = Integer.parseInt(s.substring(e + 1));
            if (mant.endsWith(".0")) {
                mant = mant.substring(0, mant.length() - 2);
            }
            return mant + "e" + (exp < 0 ? "-" : "+") + String.format("%02d", Math.abs(exp));
        }

        private static void quote(String s, StringBuilder out) {
            out.append('"');
            for (int i = 0; i < s.length(); i++) {
                char c = s.charAt(i);
                switch (c) {
                    case '"' -> out.append("\\\"");
                    case '\\' -> out.append("\\\\");
                    case '\n' -> out.append("\\n");
                    case '\r' -> out.append("\\r");
                    case '\t' -> out.append("\\t");
                    case '\b' -> out.append("\\b");
                    case '\f' -> out.append("\\f");
                    default -> {
                        if (c < 0x20) {
                            out.append(String.format("\\u%04x", (int) c));
                        } else {
                            out.append(c);
                        }
                    }
                }
            }
            out.append('"');
        }
    }
}
