package dev.spo4j.train;

import dev.spo4j.model.LlamaModel;
import dev.spo4j.model.Precision;
import java.util.List;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;

/**
 * Mixed-precision full fine-tuning: the forward and backward run on a low-precision working
 * copy of the model (bf16), while AdamW updates an fp32 master copy (fp32 moments too):
 * <pre>
 *   per micro-batch:  master.grad += share · fp32(work.grad);  work.grad = 0
 *   per step:         clip and AdamW on the masters;  work = round(master)
 * </pre>
 * Gradients are summed across micro-batches (and ranks) in fp32; only one micro-batch's
 * gradient is ever held in the low precision. Memory per parameter: 2 (work) + 2 (work
 * grad) + 4 (master) + 4 (master grad) + 8 (moments) = 20 bytes, against 16 for fp32; the
 * saving is in the activations, which are bf16.
 */
final class MasterWeights {
    private final LlamaModel master, work;
    private final List<Tensor> masters, works;

    /** A working copy of {@code master} (fp32, on its device) in {@code precision}. */
    MasterWeights(LlamaModel master, Precision precision, org.bytedeco.pytorch.Device device) {
        this.master = master;
        // uninitialised in the working dtype: loadStateDict fills it (no fp32 model, no random draw)
        this.work = new LlamaModel(master.config(), precision.scalarType(), false);
        work.setAttention(master.attention()).setRowGroupTokens(master.rowGroupTokens());
        work.to(device, precision.scalarType(), false);
        work.loadStateDict(master.stateDict());
        this.masters = master.parameterList();
        this.works = work.parameterList();
        for (Tensor m : masters) {
            if (m.scalar_type().intern() != torch.ScalarType.Float) {
                throw new IllegalStateException("master weights must be fp32, got " + m.scalar_type().intern());
            }
        }
    }

    /** The fp32 master model (what the optimiser updates and checkpoints hold). */
    LlamaModel master() {
        return master;
    }

    /** The low-precision model the forward and backward run on. */
    LlamaModel work() {
        return work;
    }

    /** The working parameters, which receive autograd's gradients. */
    List<Tensor> workParameters() {
        return works;
    }

    /** Moves the working gradients (of one micro-batch) into the masters' fp32 gradients, then clears them. */
    void accumulate() {
        try (NoGradGuard ng = new NoGradGuard()) {
            for (int i = 0; i < works.size(); i++) {
                Tensor g = works.get(i).grad();
                if (g == null || g.isNull() || !g.defined()) {
                    continue;
                }
                Tensor m = masters.get(i);
                Tensor mg = m.grad();
                if (mg == null || mg.isNull() || !mg.defined()) {
                    m.mutable_grad().put(g.to(torch.ScalarType.Float));
                } else {
                    mg.add_(g.to(torch.ScalarType.Float));
                }
                g.zero_();
            }
        }
    }

    /** Rounds the masters into the working weights (after an optimiser step). */
    void copyToWork() {
        try (NoGradGuard ng = new NoGradGuard()) {
            for (int i = 0; i < works.size(); i++) {
                works.get(i).copy_(masters.get(i));
            }
        }
    }

}
