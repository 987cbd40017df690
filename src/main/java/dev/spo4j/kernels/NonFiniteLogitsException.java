package dev.spo4j.kernels;

/**
 * A kernel found logits it cannot turn into log-probabilities: a row whose logits are all -inf,
 * or (CPU) a NaN or +inf logit. The message names the row, its target and the first such column.
 */
public final class NonFiniteLogitsException extends IllegalArgumentException {
    private static final long serialVersionUID = 1L;

    /** The kernel's message. */
    public NonFiniteLogitsException(String message) {
        super(message);
    }
}
