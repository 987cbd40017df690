package dev.spo4j.loss;

import static org.junit.jupiter.api.Assertions.assertEquals;

import dev.spo4j.testing.AllClose;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.global.torch;
import org.junit.jupiter.api.Test;

/** The SFT objective through the fused kernel: loss and dL/dlogits = LibTorch's cross-entropy with autograd. */
class SftObjectiveTest {

    @Test
    void gradientMatchesLibTorchCrossEntropy() {
        torch.manual_seed(5);
        long b = 3, t = 7, v = 29;
        Tensor z = torch.randn(new long[] {b, t, v}).mul(new Scalar(3.0));
        z.set_requires_grad(true);
        long[] tg = new long[(int) (b * t)];
        java.util.Random rnd = new java.util.Random(2);
        int scored = 0;
        for (int i = 0; i < tg.length; i++) {
            tg[i] = rnd.nextInt(3) == 0 ? -100 : rnd.nextInt((int) v);
            scored += tg[i] >= 0 ? 1 : 0;
        }
        Tensor targets = torch.empty(new long[] {b, t}, new TensorOptions(torch.ScalarType.Long), null);
        targets.data_ptr_long().put(tg);

        Tensor logits = z.mul(new Scalar(1.0));  // a non-leaf the kernel may overwrite
        SftObjective.Result r = new SftObjective(2).compute(logits, targets);
        r.backward();
        Tensor fusedGrad = z.grad().clone();
        assertEquals(scored, r.tokens());

        Tensor z2 = z.detach().clone();
        z2.set_requires_grad(true);
        Tensor flat = targets.view(-1);
        Tensor keep = flat.ne(new Scalar(-100));
        Tensor ls = torch.log_softmax(z2.view(-1, v), 1);
        Tensor picked = torch.gather(ls, 1, flat.clamp_min(new Scalar(0L)).unsqueeze(1)).squeeze(1);
        Tensor loss = picked.mul(keep.to(torch.ScalarType.Float)).sum().neg().div(new Scalar((double) scored));
        loss.backward();
        Tensor refGrad = z2.grad().clone();
        assertEquals(loss.item_double(), r.loss(), 1e-5);
        AllClose.assertAllClose("dL/dlogits", toDoubles(refGrad), toDoubles(fusedGrad), 1e-6, 1e-4);
    }

    /**
     * The fused head's single pass (hidden states and head weight in, chunks of 4 rows so the
     * 21 rows leave a short last chunk) against LibTorch's cross-entropy through linear and
     * autograd: the loss, the gradient of the head weight and of the hidden states' source.
     */
    @Test
    void fusedHeadMatchesLibTorchLinearCrossEntropy() {
        torch.manual_seed(6);
        long b = 3, t = 7, hid = 10, v = 31;
        long[] tg = new long[(int) (b * t)];
        java.util.Random rnd = new java.util.Random(3);
        int scored = 0;
        for (int i = 0; i < tg.length; i++) {
            tg[i] = rnd.nextInt(3) == 0 ? -100 : rnd.nextInt((int) v);
            scored += tg[i] >= 0 ? 1 : 0;
        }
        Tensor targets = torch.empty(new long[] {b, t}, new TensorOptions(torch.ScalarType.Long), null);
        targets.data_ptr_long().put(tg);
        Tensor x = torch.randn(new long[] {b, t, hid});
        double[][] grads = new double[2][];
        double[][] xGrads = new double[2][];
        double[] losses = new double[2];
        for (int mode = 0; mode < 2; mode++) {
            torch.manual_seed(7);
            Tensor w0 = torch.randn(new long[] {v, hid});
            Tensor xs = x.detach().clone();
            xs.set_requires_grad(true);
            w0.set_requires_grad(true);
            Tensor h = torch.tanh(xs);
            if (mode == 0) {
                Tensor flat = targets.view(-1);
                Tensor ls = torch.log_softmax(torch.linear(h, w0).view(-1, v), 1);
                Tensor picked = torch.gather(ls, 1, flat.clamp_min(new Scalar(0L)).unsqueeze(1)).squeeze(1);
                Tensor loss = picked.mul(flat.ne(new Scalar(-100)).to(torch.ScalarType.Float)).sum().neg()
                        .div(new Scalar((double) scored));
                loss.backward();
                losses[0] = loss.item_double();
            } else {
                SftObjective.Result r = new SftObjective(2, 4L * v * 4).compute(h, w0, targets);
                assertEquals(scored, r.tokens());
                r.backward();
                losses[1] = r.loss();
            }
            grads[mode] = toDoubles(w0.grad().clone());
            xGrads[mode] = toDoubles(xs.grad().clone());
            java.lang.ref.Reference.reachabilityFence(w0);
            java.lang.ref.Reference.reachabilityFence(xs);
        }
        assertEquals(losses[0], losses[1], 1e-5);
        AllClose.assertAllClose("dL/dW", grads[0], grads[1], 1e-6, 1e-4);
        AllClose.assertAllClose("dL/dx", xGrads[0], xGrads[1], 1e-6, 1e-4);
    }

    private static double[] toDoubles(Tensor t) {
        Tensor c = t.contiguous().view(-1).to(torch.ScalarType.Double).contiguous();
        double[] d = new double[(int) c.numel()];
        c.data_ptr_double().get(d);
        return d;
    }
}
