package dev.spo4j.loss;

import static dev.spo4j.kernels.Tensors.floats;
import static dev.spo4j.kernels.Tensors.toDoubles;
import static dev.spo4j.testing.AllClose.assertAllClose;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch.ScalarType;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Agreement with TRL: every TRL loss type (and CPOTrainer's simpo and reference-free sigmoid)
 * against the table test-data/losses/trl_losses.csv, written by trl_losses.py beside it from
 * TRL's expressions in float64 NumPy (gradients by central differences). Each (loss, setting)
 * is two batches in sequence through one {@link PreferenceLoss}, so bco-pair's running mean
 * is checked across steps; the composite twin is checked on the same rows.
 */
class TrlLossTableTest {
    static final Path TABLE = Path.of("test-data/losses/trl_losses.csv");

    /** One CSV row. */
    record Row(String loss, int setting, int batch, double beta, double eps, double tau, double gamma,
               double pc, double pr, double rc, double rr, double lossPair, double meanLoss, double gc, double gr) {}

    static Stream<Arguments> cases() throws IOException {
        List<String> lines = Files.readAllLines(TABLE);
        assertEquals("loss,setting,batch,pair,beta,eps,tau,gamma,pc,pr,rc,rr,loss_pair,mean_loss,grad_c,grad_r",
                lines.get(0), "table header");
        Map<String, List<Row>> groups = new LinkedHashMap<>();
        for (String line : lines.subList(1, lines.size())) {
            String[] f = line.split(",");
            double[] v = new double[f.length];
            for (int i = 4; i < f.length; i++) {
                v[i] = Double.parseDouble(f[i]);
            }
            Row r = new Row(f[0], Integer.parseInt(f[1]), Integer.parseInt(f[2]), v[4], v[5], v[6], v[7], v[8],
                    v[9], v[10], v[11], v[12], v[13], v[14], v[15]);
            groups.computeIfAbsent(r.loss() + " setting " + r.setting(), k -> new ArrayList<>()).add(r);
        }
        assertEquals(30, groups.size(), "15 TRL losses x 2 settings");
        return groups.entrySet().stream().map(e -> Arguments.of(e.getKey(), e.getValue()));
    }

    static float[] col(List<Row> rows, java.util.function.ToDoubleFunction<Row> f) {
        float[] out = new float[rows.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = (float) f.applyAsDouble(rows.get(i));  // the table's inputs are float32 values
        }
        return out;
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("cases")
    void kernelAndCompositeMatchTrl(String name, List<Row> rows) {
        Row first = rows.get(0);
        // TRL's names: sigmoid is dpo; the table's simpo rows hold length-normalised log-probs already
        PreferenceLossConfig c = PreferenceLossConfig.of(LossType.parse(first.loss())).withBeta(first.beta())
                .withLabelSmoothing(first.eps()).withDiscopopTau(first.tau()).withSimpoGamma(first.gamma())
                .withLengthNormalised(false);
        PreferenceLoss loss = new PreferenceLoss(c);
        for (int batch = 0; batch < 2; batch++) {
            final int b = batch;
            List<Row> rs = rows.stream().filter(r -> r.batch() == b).toList();
            assertTrue(rs.size() > 1, "rows of batch " + b);
            float[] pc = col(rs, Row::pc), pr = col(rs, Row::pr), rc = col(rs, Row::rc), rr = col(rs, Row::rr);
            double[] lossPair = rs.stream().mapToDouble(Row::lossPair).toArray();
            double[] gc = rs.stream().mapToDouble(Row::gc).toArray();
            double[] gr = rs.stream().mapToDouble(Row::gr).toArray();
            String at = name + " batch " + b;

            PreferenceLoss.Result r = loss.compute(floats(pc), floats(pr), floats(rc), floats(rr));
            // fp32 outputs of double math: 1e-6 relative; the table's gradients are central
            // differences of float64 TRL expressions (~1e-9 absolute)
            assertEquals(rs.get(0).meanLoss(), r.loss(), 1e-6 * Math.max(1, Math.abs(r.loss())), at + " mean loss");
            assertAllClose(at + " per-pair loss", lossPair, toDoubles(r.perPairLoss()), 1e-6, 1e-6);
            assertAllClose(at + " dL/dchosen", gc, toDoubles(r.gradChosen()), 1e-8, 1e-5);
            assertAllClose(at + " dL/drejected", gr, toDoubles(r.gradRejected()), 1e-8, 1e-5);

            // the composite twin on float64, with the reward shift the kernel used
            Tensor xc = floats(pc).to(ScalarType.Double), xr = floats(pr).to(ScalarType.Double);
            xc.set_requires_grad(true);
            xr.set_requires_grad(true);
            Tensor mean = CompositePreferenceLoss.perPair(c, PairTerms.of(c, rs.size(), xc, xr,
                    floats(rc).to(ScalarType.Double), floats(rr).to(ScalarType.Double), null, null, null, null, null),
                    loss.lastBcoDelta()).mean();
            mean.backward();
            assertEquals(rs.get(0).meanLoss(), mean.item_double(), 1e-9 * Math.max(1, Math.abs(r.loss())),
                    at + " composite mean loss");
            assertAllClose(at + " composite dL/dchosen", gc, toDoubles(xc.grad()), 1e-8, 1e-5);
            assertAllClose(at + " composite dL/drejected", gr, toDoubles(xr.grad()), 1e-8, 1e-5);
            java.lang.ref.Reference.reachabilityFence(xc);
            java.lang.ref.Reference.reachabilityFence(xr);
        }
    }
}
