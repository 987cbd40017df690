package dev.spo4j.train;

import com.google.gson.Gson;
import com.google.gson.GsonBuilder;
import dev.spo4j.loss.LossType;
import dev.spo4j.loss.PreferenceLossConfig;

/**
 * Everything a training run needs, with TRL-like defaults; serialised into each checkpoint
 * so that {@code --resume} continues the same run. Null model/data mean the embedded default
 * (a tiny Llama-style model and a synthetic preference set ranked by a known gold reward).
 */
public final class TrainConfig {
    public String model;
    public String data;
    public String evalData;
    public String refModel;
    public String out;

    public String loss = "spo";
    public double beta = PreferenceLossConfig.DEFAULT_BETA;
    public double margin = PreferenceLossConfig.DEFAULT_MARGIN;
    public double rewardScale = 1.0;
    public double labelSmoothing = 0.0;
    /** null: the loss's default (IPO yes, others no). */
    public Boolean lengthNormalised;
    public double sftWeight = 0.0;
    public String lossImpl = "fused";

    public double lr = 5e-6;
    public String schedule = "cosine";
    public int warmupSteps = 0;
    public double warmupRatio = 0.1;
    public double weightDecay = 0.0;
    public double adamBeta1 = 0.9;
    public double adamBeta2 = 0.999;
    public double adamEps = 1e-8;
    public double maxGradNorm = 1.0;

    /** Pairs per micro-batch per process (TRL's per_device_train_batch_size): a step's global batch is batchSize x WORLD_SIZE x gradAccum. */
    public int batchSize = 8;
    public int gradAccum = 1;
    public int epochs = 1;
    public int maxSteps = -1;
    public int maxLength = 512;
    public long seed = 42;
    public int threads = 0;
    /** "cpu", "cuda" or "cuda:N". */
    public String device = "cpu";

    /** Data parallel: seconds a rank waits for its peers (rendezvous, each collective) before the job fails. */
    public double distTimeout = 300;
    /** Processes that trained this run (set by the trainer from WORLD_SIZE; a resume must use as many). */
    public int worldSize = 1;

    public int logEvery = 1;
    public int evalEvery = 0;
    public int evalBatches = 0;
    public int checkpointEvery = 0;
    public int keepCheckpoints = 2;

    private static final Gson GSON = new GsonBuilder().setPrettyPrinting().serializeNulls().create();

    public PreferenceLossConfig lossConfig() {
        LossType t = LossType.parse(loss);
        PreferenceLossConfig c = PreferenceLossConfig.of(t).withBeta(beta).withMargin(margin)
                .withRewardScale(rewardScale).withLabelSmoothing(labelSmoothing);
        return lengthNormalised == null ? c : c.withLengthNormalised(lengthNormalised);
    }

    /** Throws IllegalArgumentException naming the first bad setting. */
    public void validate() {
        lossConfig();
        LossImpl.parse(lossImpl);
        LrSchedule.Kind.parse(schedule);
        positive("batch size", batchSize);
        positive("gradient accumulation", gradAccum);
        positive("epochs", epochs);
        positive("max length", maxLength);
        if (maxLength < 2) {
            throw new IllegalArgumentException("max length = " + maxLength + " (expected >= 2)");
        }
        if (maxSteps == 0 || maxSteps < -1) {
            throw new IllegalArgumentException("max steps = " + maxSteps + " (expected > 0, or -1 for epochs)");
        }
        if (!(lr > 0 && Double.isFinite(lr))) {
            throw new IllegalArgumentException("learning rate = " + lr + " (expected a finite value > 0)");
        }
        if (!(warmupRatio >= 0 && warmupRatio < 1) || warmupSteps < 0) {
            throw new IllegalArgumentException("warm-up = " + warmupSteps + " steps / ratio " + warmupRatio
                    + " (expected steps >= 0 and 0 <= ratio < 1)");
        }
        if (!(maxGradNorm >= 0) || !(weightDecay >= 0) || !(sftWeight >= 0)) {
            throw new IllegalArgumentException("max grad norm, weight decay and sft weight must be >= 0");
        }
        if (device == null || !device.matches("cpu|cuda(:\\d+)?")) {
            throw new IllegalArgumentException("device '" + device + "' (expected cpu, cuda or cuda:N)");
        }
        if (!(distTimeout > 0 && Double.isFinite(distTimeout))) {
            throw new IllegalArgumentException("dist timeout = " + distTimeout + " s (expected a finite value > 0)");
        }
        if (threads < 0 || keepCheckpoints < 1 || logEvery < 1 || evalEvery < 0 || checkpointEvery < 0) {
            throw new IllegalArgumentException("threads >= 0, keep-checkpoints >= 1, log-every >= 1, "
                    + "eval-every >= 0 and checkpoint-every >= 0 are required");
        }
    }

    private static void positive(String name, int v) {
        if (v < 1) {
            throw new IllegalArgumentException(name + " = " + v + " (expected >= 1)");
        }
    }

    public String toJson() {
        return GSON.toJson(this);
    }

    public static TrainConfig fromJson(String json) {
        return GSON.fromJson(json, TrainConfig.class);
    }

    public TrainConfig copy() {
        return fromJson(toJson());
    }
}
