package dev.spo4j.loss;

import dev.spo4j.kernels.TensorChecks;
import java.util.Arrays;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;
import org.bytedeco.pytorch.global.torch.ScalarType;

/**
 * What a preference loss sees for B pairs, derived from the summed log-probs: the one
 * definition of length normalisation and of SPO's margins from scores, shared by the native
 * path ({@link PreferenceLoss}) and the LibTorch twin ({@link CompositePreferenceLoss}).
 * <ul>
 *   <li>normalised: every log-prob divided by its completion's token count (a graph-carrying
 *       division when the inputs carry a graph), and the counts kept so that a gradient with
 *       respect to the normalised value becomes one with respect to the sum;</li>
 *   <li>margins: {@code rewardScale (scoreChosen - scoreRejected)} when scores are given, else
 *       the explicit margins, else null (the loss uses m0);</li>
 *   <li>reference-free losses (simpo, cpo): the reference log-probs are 0, whatever was given.</li>
 * </ul>
 */
record PairTerms(Tensor policyChosen, Tensor policyRejected, Tensor refChosen, Tensor refRejected,
                 Tensor margins, Tensor chosenCounts, Tensor rejectedCounts) {

    static PairTerms of(PreferenceLossConfig c, long pairs, Tensor policyChosen, Tensor policyRejected,
                        Tensor refChosen, Tensor refRejected, Tensor scoreChosen, Tensor scoreRejected,
                        Tensor margins, Tensor chosenTokens, Tensor rejectedTokens) {
        return of(c, pairs, policyChosen, policyRejected, refChosen, refRejected, scoreChosen, scoreRejected,
                margins, chosenTokens, rejectedTokens, true);
    }

    /**
     * As above; with {@code checkCounts} false the token counts' values are not checked (their
     * shape still is): for a caller that checked every count >= 1 once for the batch, since the
     * check reads the minimum back to the host (a device sync on a GPU).
     */
    static PairTerms of(PreferenceLossConfig c, long pairs, Tensor policyChosen, Tensor policyRejected,
                        Tensor refChosen, Tensor refRejected, Tensor scoreChosen, Tensor scoreRejected,
                        Tensor margins, Tensor chosenTokens, Tensor rejectedTokens, boolean checkCounts) {
        if (!c.needsReference()) {  // simpo, cpo: reference log-probs are not read (0)
            refChosen = torch.zeros_like(policyChosen);
            refRejected = torch.zeros_like(policyRejected);
        }
        Tensor m = null;
        if (scoreChosen != null) {
            Tensor sc = floatVector(scoreChosen, "scoreChosen", pairs);
            Tensor sr = floatVector(scoreRejected, "scoreRejected", pairs);
            m = sc.sub(sr).mul(new Scalar(c.rewardScale())).contiguous();
        } else if (margins != null) {
            m = floatVector(margins, "margins", pairs);
        }
        if (!c.lengthNormalised()) {
            return new PairTerms(policyChosen, policyRejected, refChosen, refRejected, m, null, null);
        }
        Tensor nc = counts(chosenTokens, "chosenTokens", pairs, checkCounts);
        Tensor nr = counts(rejectedTokens, "rejectedTokens", pairs, checkCounts);
        return new PairTerms(policyChosen.div(nc), policyRejected.div(nr), refChosen.div(nc), refRejected.div(nr),
                m, nc, nr);
    }

    boolean normalised() {
        return chosenCounts != null;
    }

    /** A gradient with respect to the chosen value the loss saw, as one with respect to the summed log-prob. */
    Tensor chosenGradient(Tensor g) {
        return normalised() ? g.div(chosenCounts) : g;
    }

    /** The same for the rejected completion. */
    Tensor rejectedGradient(Tensor g) {
        return normalised() ? g.div(rejectedCounts) : g;
    }

    private static Tensor floatVector(Tensor t, String name, long pairs) {
        TensorChecks.defined(t, name);
        TensorChecks.dtype(t, name, ScalarType.Float);
        TensorChecks.vector(t, name, pairs);
        return t;
    }

    private static Tensor counts(Tensor t, String name, long pairs, boolean checkValues) {
        TensorChecks.defined(t, name);
        if (t.dim() != 1 || t.size(0) != pairs) {
            throw new IllegalArgumentException(name + " has shape " + Arrays.toString(TensorChecks.shape(t))
                    + " (expected [" + pairs + "])");
        }
        Tensor f = t.to(ScalarType.Float);
        if (checkValues && f.min().item_double() < 1) {
            throw new IllegalArgumentException(name + " has a count < 1 (min " + f.min().item_double()
                    + "; every completion needs at least one token)");
        }
        return f;
    }
}
