package dev.spo4j.train;

/**
 * A run stopped because several optimiser steps in a row had a non-finite loss or gradient
 * norm ({@link Trainer#MAX_NONFINITE_IN_A_ROW}); those steps left the weights as they were.
 */
public final class NonFiniteTrainingException extends IllegalStateException {
    private static final long serialVersionUID = 1L;

    /** A message naming the step, the count and what to try. */
    public NonFiniteTrainingException(String message) {
        super(message);
    }
}
