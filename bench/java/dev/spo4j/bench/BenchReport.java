package dev.spo4j.bench;

import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import dev.spo4j.kernels.TokenLogProbs;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.TreeMap;
import org.bytedeco.pytorch.BoolOptional;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorArrayRefOptional;
import org.bytedeco.pytorch.global.torch;

/**
 * Turns a JMH JSON result (bench/run.sh) into the summary table: median ms per kernel,
 * provider, mode, dtype and size; GB/s of minimum traffic; native speed-up over LibTorch;
 * the bandwidth floor (minimum bytes / STREAM copy bandwidth of the same run) and how close
 * the native kernel gets to it; and the peak extra resident memory of one call of each
 * provider, measured here (Linux: /proc/self/clear_refs resets VmHWM). Writes the table as
 * Markdown next to the JSON.
 *
 * <p>Usage: {@code BenchReport RESULT.json [MORE.json ...] [--no-memory]}; the table is written
 * beside the first file, with the extension .md.
 */
public final class BenchReport {
    private BenchReport() {}

    /** One JMH result: the median of its samples and, where reported, the largest peakExtraMiB sample. */
    record Row(String benchmark, Map<String, String> params, double median, String unit, double peakMiB,
               int source) {}

    public static void main(String[] args) throws IOException {
        List<Path> files = new ArrayList<>();
        for (String a : args) {
            if (!a.startsWith("--")) {
                files.add(Path.of(a));
            }
        }
        if (files.isEmpty()) {
            System.err.println("usage: BenchReport RESULT.json [MORE.json ...] [--no-memory]");
            System.exit(2);
        }
        Path json = files.get(0);
        boolean memory = !Arrays.asList(args).contains("--no-memory");
        List<Row> rows = new ArrayList<>();
        for (int i = 0; i < files.size(); i++) {
            rows.addAll(parse(files.get(i), i));
        }
        Map<String, Double> bandwidth = new TreeMap<>();
        for (Row r : rows) {
            if (r.benchmark.contains("StreamBench.")) {
                String op = r.benchmark.substring(r.benchmark.lastIndexOf('.') + 1);
                double bytes = (op.equals("sum") ? 1.0 : 2.0) * StreamBench.ELEMENTS * 4;
                bandwidth.put(op, bytes / (r.median / 1e3) / 1e9);
            }
        }
        double streamGBs = bandwidth.values().stream().mapToDouble(Double::doubleValue).max().orElse(Double.NaN);
        StringBuilder md = new StringBuilder();
        StringBuilder bw = new StringBuilder();
        bandwidth.forEach((op, v) -> bw.append(String.format(Locale.ROOT, "%s %.1f GB/s, ", op, v)));
        md.append(String.format(Locale.ROOT, "Machine: %s. Memory bandwidth (1 GiB fp32, LibTorch): %s"
                + "floor uses the best: %.1f GB/s.%n%n", machine(), bw, streamGBs));

        // token log-probs: group by (mode, dtype, rows, vocab, threads)
        Map<String, Map<String, Row>> groups = new TreeMap<>();
        for (Row r : rows) {
            if (r.benchmark.endsWith("TokenLogProbsBench.run")) {
                Map<String, String> p = r.params;
                String key = String.join("|", p.get("mode"), p.get("dtype"), p.get("rows"), p.get("vocab"), p.get("threads"));
                groups.computeIfAbsent(key, k -> new LinkedHashMap<>()).put(p.get("provider"), r);
            }
        }
        Map<String, long[]> peaks = memory ? measurePeaks(groups.keySet()) : Map.of();
        md.append("Token log-probs (threads = kernel and LibTorch threads; times are medians of single calls):\n\n");
        md.append("| mode | dtype | rows x V | threads | native ms | libtorch ms | speed-up | native GB/s | floor ms | native / floor | peak extra MB native | peak extra MB libtorch |\n");
        md.append("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for (Map.Entry<String, Map<String, Row>> e : groups.entrySet()) {
            String[] k = e.getKey().split("\\|");
            Row nat = e.getValue().get("native"), lib = e.getValue().get("libtorch");
            double bytes = BenchData.floorBytes(k[0], Long.parseLong(k[2]), Long.parseLong(k[3]), BenchData.elementSize(k[1]));
            double floorMs = bytes / (streamGBs * 1e9) * 1e3;
            long[] peak = peaks.getOrDefault(e.getKey(), new long[] {-1, -1});
            md.append(String.format(Locale.ROOT, "| %s | %s | %s x %s | %s | %s | %s | %s | %s | %.1f | %s | %s | %s |%n",
                    k[0], k[1], k[2], k[3], k[4], ms(nat), ms(lib),
                    nat != null && lib != null ? String.format(Locale.ROOT, "%.2fx", lib.median / nat.median) : "-",
                    nat != null ? String.format(Locale.ROOT, "%.1f", bytes / (nat.median / 1e3) / 1e9) : "-",
                    floorMs,
                    nat != null ? String.format(Locale.ROOT, "%.2f", nat.median / floorMs) : "-",
                    mb(peak[0]), mb(peak[1])));
        }
        List<Row> loss = new ArrayList<>();
        for (Row r : rows) {
            if (r.benchmark.endsWith("PreferenceLossBench.run")) {
                loss.add(r);
            }
        }
        if (!loss.isEmpty()) {
            md.append("\nPreference loss + gradient + metrics (mean us per call, 1 thread):\n\n");
            md.append("| loss | pairs | native us | libtorch us | speed-up |\n|---|---:|---:|---:|---:|\n");
            Map<String, Map<String, Row>> lg = new TreeMap<>();
            for (Row r : loss) {
                lg.computeIfAbsent(r.params.get("loss") + "|" + String.format("%08d", Integer.parseInt(r.params.get("pairs"))),
                        k -> new LinkedHashMap<>()).put(r.params.get("provider"), r);
            }
            for (Map.Entry<String, Map<String, Row>> e : lg.entrySet()) {
                String[] k = e.getKey().split("\\|");
                Row nat = e.getValue().get("native"), lib = e.getValue().get("libtorch");
                md.append(String.format(Locale.ROOT, "| %s | %d | %s | %s | %s |%n", k[0], Integer.parseInt(k[1]),
                        nat == null ? "-" : String.format(Locale.ROOT, "%.1f", nat.median),
                        lib == null ? "-" : String.format(Locale.ROOT, "%.1f", lib.median),
                        nat != null && lib != null ? String.format(Locale.ROOT, "%.2fx", lib.median / nat.median) : "-"));
            }
        }
        List<Row> steps = new ArrayList<>();
        for (Row r : rows) {
            if (r.benchmark.endsWith("TrainStepBench.trainStep")) {
                steps.add(r);
            }
        }
        if (!steps.isEmpty()) {
            md.append("\nTraining step (SPO; Llama-style, 2 layers, hidden 256; median of single steps; peak extra RSS of one"
                    + " step after warm-up):\n\n");
            md.append("| impl | LM head | model | V | pairs x T | threads | ms/step | tokens/s | speed-up vs libtorch"
                    + " materialised | peak extra MB |\n"
                    + "|---|---|---|---:|---|---:|---:|---:|---:|---:|\n");
            Map<String, Row> libRows = new TreeMap<>();  // per model and V: libtorch over materialised logits
            for (Row r : steps) {
                if (r.params.get("impl").equals("libtorch")
                        && r.params.getOrDefault("lmHead", "materialised").equals("materialised")) {
                    libRows.put(r.params.getOrDefault("model", "llama256") + "/" + r.params.get("vocab"), r);
                }
            }
            for (Row r : steps) {
                Map<String, String> p = r.params;
                double tokens = 2.0 * Integer.parseInt(p.get("pairs")) * Integer.parseInt(p.get("seqLen"));
                long peak = memory ? stepPeak(p) : -1;
                Row libRow = libRows.get(p.getOrDefault("model", "llama256") + "/" + p.get("vocab"));
                String speed = libRow != null && r != libRow
                        ? String.format(Locale.ROOT, "%.2fx", libRow.median / r.median) : "-";
                String head = p.getOrDefault("lmHead", "materialised");
                if (head.equals("fused")) {
                    head += ", " + p.getOrDefault("headMb", "256") + " MiB chunks";
                }
                md.append(String.format(Locale.ROOT, "| %s | %s | %s | %s | %s x %s | %s | %.1f | %.0f | %s | %s |%n",
                        p.get("impl"), head, p.getOrDefault("model", "llama256"),
                        p.get("vocab"), p.get("pairs"), p.get("seqLen"), p.get("threads"), r.median,
                        tokens / (r.median / 1e3), speed, mb(peak)));
            }
        }
        List<Row> heads = new ArrayList<>();
        for (Row r : rows) {
            if (r.benchmark.endsWith("LmHeadLogProbsBench.run")) {
                heads.add(r);
            }
        }
        if (!heads.isEmpty()) {
            headTable(md, heads);
        }
        md.append("\nfloor ms = minimum bytes (forward: rows x V x elem; backward: 2x; forwardBackward: 3x; plus O(rows))"
                + " / the best measured bandwidth. Peak extra memory: growth of the resident set during one call,"
                + " beyond the logits (the native path allocates O(rows) outputs).\n");
        System.out.println();
        System.out.print(md);
        Path out = Path.of(json.toString().replaceAll("\\.json$", "") + ".md");
        Files.writeString(out, md.toString());
        System.out.println("\nwrote " + out);
    }

    /**
     * The LM head table. A point measured in several rounds (one result file per round, each a
     * pass over every point, so the providers alternate in time) shows the median of its rounds'
     * times and the median of its per-round ratios to the materialised path of the same round,
     * with their range: the ratio that drift between rounds cannot fake. A point without a
     * materialised result in its own file is compared with the materialised median.
     */
    static void headTable(StringBuilder md, List<Row> heads) {
        Map<String, List<Row>> byPoint = new java.util.LinkedHashMap<>();
        Map<String, Map<Integer, Row>> matByRound = new TreeMap<>();
        for (Row r : heads) {
            Map<String, String> p = r.params;
            String shapeKey = p.get("shape") + "|" + p.get("dtype") + "|" + p.get("threads") + "|" + p.get("chunkMb");
            byPoint.computeIfAbsent(shapeKey + "|" + p.get("provider"), k -> new ArrayList<>()).add(r);
            if (p.get("provider").equals("materialised")) {
                matByRound.computeIfAbsent(shapeKey, k -> new TreeMap<>()).put(r.source, r);
            }
        }
        md.append("\nLM head + token log-probs, forward and backward (logp, dL/dh, dL/dW; single calls, median over"
                + " rounds; time ratio = median of the per-round ratios to the same round's materialised call, range"
                + " in brackets; peak extra = largest resident growth during a call, dW included):\n\n");
        md.append("| shape H x V x N | dtype | provider | threads | chunk MiB | rounds | ms | time vs materialised |"
                + " peak extra MiB | memory vs materialised |\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
        for (List<Row> point : byPoint.values()) {
            Map<String, String> p = point.get(0).params;
            String shapeKey = p.get("shape") + "|" + p.get("dtype") + "|" + p.get("threads") + "|" + p.get("chunkMb");
            Map<Integer, Row> mats = matByRound.getOrDefault(shapeKey, Map.of());
            double matMedian = median(mats.values().stream().map(Row::median).toList());
            double matPeak = mats.values().stream().mapToDouble(Row::peakMiB).filter(d -> !Double.isNaN(d)).max()
                    .orElse(Double.NaN);
            List<Double> times = new ArrayList<>(), ratios = new ArrayList<>();
            double peak = Double.NaN;
            for (Row r : point) {
                times.add(r.median);
                Row m = mats.get(r.source);
                double base = m != null ? m.median : matMedian;
                if (!Double.isNaN(base)) {
                    ratios.add(r.median / base);
                }
                if (!Double.isNaN(r.peakMiB)) {  // a round without the secondary result does not blank the others
                    peak = Double.isNaN(peak) ? r.peakMiB : Math.max(peak, r.peakMiB);
                }
            }
            String ratio = "-";
            if (!ratios.isEmpty()) {
                ratio = String.format(Locale.ROOT, "%.2fx", median(ratios));
                if (ratios.size() > 1) {
                    ratio += String.format(Locale.ROOT, " [%.2f-%.2f]", java.util.Collections.min(ratios),
                            java.util.Collections.max(ratios));
                }
            }
            md.append(String.format(Locale.ROOT, "| %s | %s | %s | %s | %s | %d | %.0f | %s | %.0f | %s |%n",
                    p.get("shape"), p.get("dtype"), p.get("provider"), p.get("threads"), p.get("chunkMb"), point.size(),
                    median(times), ratio, peak,
                    Double.isNaN(matPeak) ? "-" : String.format(Locale.ROOT, "%.2fx", peak / matPeak)));
        }
    }

    static double median(List<Double> values) {
        if (values.isEmpty()) {
            return Double.NaN;
        }
        List<Double> v = new ArrayList<>(values);
        v.sort(Double::compare);
        int n = v.size();
        return n % 2 == 1 ? v.get(n / 2) : (v.get(n / 2 - 1) + v.get(n / 2)) / 2;
    }

    static String ms(Row r) {
        return r == null ? "-" : String.format(Locale.ROOT, "%.1f", r.median);
    }

    static String mb(long bytes) {
        return bytes < 0 ? "-" : String.format(Locale.ROOT, "%.2f", bytes / 1048576.0);
    }

    static List<Row> parse(Path json, int source) throws IOException {
        List<Row> out = new ArrayList<>();
        JsonArray all = JsonParser.parseString(Files.readString(json)).getAsJsonArray();
        for (JsonElement el : all) {
            JsonObject o = el.getAsJsonObject();
            Map<String, String> params = new TreeMap<>();
            if (o.has("params")) {
                for (Map.Entry<String, JsonElement> p : o.getAsJsonObject("params").entrySet()) {
                    params.put(p.getKey(), p.getValue().getAsString());
                }
            }
            JsonObject pm = o.getAsJsonObject("primaryMetric");
            List<Double> raw = new ArrayList<>();
            for (JsonElement fork : pm.getAsJsonArray("rawData")) {
                for (JsonElement v : fork.getAsJsonArray()) {
                    raw.add(v.getAsDouble());
                }
            }
            raw.sort(Double::compare);
            int n = raw.size();
            double median = n == 0 ? pm.get("score").getAsDouble()
                    : n % 2 == 1 ? raw.get(n / 2) : (raw.get(n / 2 - 1) + raw.get(n / 2)) / 2;
            double peakMiB = Double.NaN;
            JsonObject sec = o.getAsJsonObject("secondaryMetrics");
            if (sec != null && sec.has("peakExtraMiB")) {
                for (JsonElement fork : sec.getAsJsonObject("peakExtraMiB").getAsJsonArray("rawData")) {
                    for (JsonElement v : fork.getAsJsonArray()) {
                        peakMiB = Double.isNaN(peakMiB) ? v.getAsDouble() : Math.max(peakMiB, v.getAsDouble());
                    }
                }
            }
            out.add(new Row(o.get("benchmark").getAsString(), params, median, pm.get("scoreUnit").getAsString(),
                    peakMiB, source));
        }
        return out;
    }

    /** Peak extra resident bytes of one call, {native, libtorch}, per table key. */
    static Map<String, long[]> measurePeaks(Iterable<String> keys) {
        Map<String, long[]> out = new LinkedHashMap<>();
        if (!Files.isWritable(Path.of("/proc/self/clear_refs"))) {
            System.err.println("peak memory: /proc/self/clear_refs is not writable here; skipped");
            return out;
        }
        for (String key : keys) {
            String[] k = key.split("\\|");
            String mode = k[0], dtype = k[1];
            int rows = Integer.parseInt(k[2]), vocab = Integer.parseInt(k[3]), threads = Integer.parseInt(k[4]);
            torch.set_num_threads(threads);
            Tensor logits = BenchData.logits(rows, vocab, dtype, 1234);
            Tensor targets = BenchData.targets(rows, vocab, 1234);
            Tensor g = BenchData.upstream(rows, 1234);
            long[] peak = new long[2];
            // native: the trainer's path (the backward overwrites the logits in place)
            Tensor lse = mode.equals("backward")
                    ? TokenLogProbs.forward(logits, targets, -100, false, threads).lse() : null;
            long base = resetPeak();
            if (mode.equals("backward")) {
                TokenLogProbs.backward(logits, targets, lse, g, -100, true, threads);
            } else {
                TokenLogProbs.Result r = TokenLogProbs.forward(logits, targets, -100, false, threads);
                if (mode.equals("forwardBackward")) {
                    TokenLogProbs.backward(logits, targets, r.lse(), g, -100, true, threads);
                }
            }
            peak[0] = peakSince(base);
            // libtorch composite; the graph for "backward" is built before the measurement
            Tensor x = logits.clone();
            x.set_requires_grad(!mode.equals("forward"));
            Tensor lp = null;
            if (mode.equals("backward")) {
                lp = BenchData.compositeLogp(x, targets);
            }
            base = resetPeak();
            if (mode.equals("forward")) {
                try (NoGradGuard ng = new NoGradGuard()) {
                    BenchData.compositeLogp(x, targets).close();
                }
            } else {
                if (lp == null) {
                    lp = BenchData.compositeLogp(x, targets);
                }
                lp.backward(g, new BoolOptional(), false, new TensorArrayRefOptional());
            }
            peak[1] = peakSince(base);
            if (lp != null) {
                lp.close();
            }
            x.close();
            logits.close();
            System.gc();
            out.put(key, peak);
            System.err.printf(Locale.ROOT, "peak extra memory %s: native %s MB, libtorch %s MB%n", key, mb(peak[0]), mb(peak[1]));
        }
        return out;
    }

    /** Peak extra resident bytes of one training step (after two warm-up steps). */
    static long stepPeak(Map<String, String> p) {
        TrainStepBench.Step step = new TrainStepBench.Step(p.get("impl"), p.getOrDefault("lmHead", "materialised"),
                p.getOrDefault("model", "llama256"), Integer.parseInt(p.get("vocab")),
                Integer.parseInt(p.get("pairs")), Integer.parseInt(p.get("seqLen")), Integer.parseInt(p.get("threads")),
                Integer.parseInt(p.getOrDefault("headMb", "256")));
        step.run();
        step.run();
        System.gc();
        long base = resetPeak();
        step.run();
        long peak = peakSince(base);
        System.err.printf(Locale.ROOT, "peak extra memory train step %s (%s LM head): %s MB%n", p.get("impl"),
                p.getOrDefault("lmHead", "materialised"), mb(peak));
        return peak;
    }

    /** Resets the high-water mark; returns the current resident bytes. */
    static long resetPeak() {
        try {
            Files.writeString(Path.of("/proc/self/clear_refs"), "5");
            return status("VmRSS:");
        } catch (IOException e) {
            return -1;
        }
    }

    static long peakSince(long base) {
        return base < 0 ? -1 : Math.max(0, status("VmHWM:") - base);
    }

    static long status(String field) {
        try {
            for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
                if (line.startsWith(field)) {
                    return Long.parseLong(line.substring(field.length()).trim().split("\\s+")[0]) * 1024;
                }
            }
        } catch (IOException | NumberFormatException e) {
            return -1;
        }
        return -1;
    }

    static String machine() {
        String cpu = "unknown CPU";
        try {
            for (String line : Files.readAllLines(Path.of("/proc/cpuinfo"))) {
                if (line.startsWith("model name")) {
                    cpu = line.substring(line.indexOf(':') + 1).trim();
                    break;
                }
            }
        } catch (IOException ignored) {
            // not Linux: keep the placeholder
        }
        return cpu + ", " + Runtime.getRuntime().availableProcessors() + " cores, OMP_NUM_THREADS="
                + System.getenv("OMP_NUM_THREADS") + ", OMP_WAIT_POLICY=" + System.getenv("OMP_WAIT_POLICY");
    }
}
