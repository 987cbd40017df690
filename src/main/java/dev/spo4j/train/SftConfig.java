package dev.spo4j.train;

/** Settings of a supervised fine-tuning run ({@link SftTrainer}). */
public final class SftConfig {
    public String model;
    public String data;
    public String out;
    public double lr = 1e-3;
    public String schedule = "cosine";
    public int warmupSteps = 0;
    public double warmupRatio = 0.05;
    public double weightDecay = 0.0;
    public double maxGradNorm = 1.0;
    public int batchSize = 16;
    public int epochs = 1;
    public int maxSteps = -1;
    public int maxLength = 512;
    public long seed = 42;
    public int threads = 0;
    public int logEvery = 10;

    public void validate() {
        LrSchedule.Kind.parse(schedule);
        if (batchSize < 1 || epochs < 1 || maxLength < 2 || maxSteps == 0 || maxSteps < -1 || logEvery < 1
                || threads < 0) {
            throw new IllegalArgumentException("sft: batch size, epochs, log-every >= 1, max length >= 2, "
                    + "max steps > 0 or -1, threads >= 0 are required");
        }
        if (!(lr > 0 && Double.isFinite(lr)) || !(maxGradNorm >= 0) || !(weightDecay >= 0)) {
            throw new IllegalArgumentException("sft: lr = " + lr + " must be finite and > 0; max grad norm and "
                    + "weight decay >= 0");
        }
    }
}
