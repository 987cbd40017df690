package dev.spo4j.train;

import org.bytedeco.pytorch.AdamW;
import org.bytedeco.pytorch.AdamWOptions;
import org.bytedeco.pytorch.Optimizer;
import org.bytedeco.pytorch.TensorVector;

/** LibTorch optimisers with every hyper-parameter set explicitly. */
public final class Optimizers {
    private Optimizers() {}

    /**
     * AdamW. Note two LibTorch/JavaCPP facts (pinned by OptimizersTest): the default weight
     * decay is 0.01, not 0, and {@code betas()} exposes the std::tuple's memory, in which
     * libstdc++ stores the second element first.
     */
    public static AdamW adamW(TensorVector params, double lr, double beta1, double beta2, double eps,
                              double weightDecay) {
        AdamWOptions o = new AdamWOptions(lr);
        o.betas().put(0, beta2).put(1, beta1);
        o.eps().put(eps);
        o.weight_decay().put(weightDecay);
        return new AdamW(params, o);
    }

    /** Sets the learning rate of every parameter group. */
    public static void setLearningRate(Optimizer optimizer, double lr) {
        for (long i = 0; i < optimizer.param_groups().size(); i++) {
            optimizer.param_groups().get(i).options().set_lr(lr);
        }
    }

    /** The learning rate of the first parameter group. */
    public static double learningRate(Optimizer optimizer) {
        return optimizer.param_groups().get(0).options().get_lr();
    }
}
