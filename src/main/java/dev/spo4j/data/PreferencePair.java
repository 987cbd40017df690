package dev.spo4j.data;

/**
 * One preference pair: a prompt, the chosen and the rejected completion, and optional
 * per-pair numbers.
 *
 * <p>Optional fields come in pairs, both or neither: reward scores ({@code score_chosen},
 * {@code score_rejected}; SPO's target margin comes from their difference) and precomputed
 * reference log-probs ({@code ref_chosen_logps}, {@code ref_rejected_logps}: the reference
 * model's SUMMED log-probs of each completion, so no reference model need be loaded).
 *
 * <p>The constructor checks what every consumer relies on: non-null texts, non-empty
 * completions (the prompt may be empty), both-or-neither optional fields, finite numbers.
 * {@link PreferenceDataset#read} reports the same problems with the file and line first.
 *
 * @param prompt           the prompt text; may be empty
 * @param chosen           the preferred completion; not empty
 * @param rejected         the other completion; not empty
 * @param scoreChosen      the chosen completion's reward score, or null (with scoreRejected)
 * @param scoreRejected    the rejected completion's reward score, or null (with scoreChosen)
 * @param refChosenLogps   the reference model's summed log-prob of the chosen completion, or
 *                         null (with refRejectedLogps)
 * @param refRejectedLogps the same for the rejected completion, or null (with refChosenLogps)
 * @param source           where the pair came from, for messages ({@code file:line}, or
 *                         {@code synthetic:17}); {@code "<unknown>"} when null
 */
public record PreferencePair(String prompt, String chosen, String rejected,
                             Double scoreChosen, Double scoreRejected,
                             Double refChosenLogps, Double refRejectedLogps,
                             String source) {

    /**
     * Checks the pair as the class comment says; a null {@code source} becomes
     * {@code "<unknown>"}. Throws IllegalArgumentException naming the source and the field.
     */
    public PreferencePair {
        if (source == null) {
            source = "<unknown>";
        }
        requireText(prompt, "prompt", source, true);
        requireText(chosen, "chosen", source, false);
        requireText(rejected, "rejected", source, false);
        requireBothOrNeither(scoreChosen, scoreRejected, "score_chosen", "score_rejected", source);
        requireBothOrNeither(refChosenLogps, refRejectedLogps, "ref_chosen_logps", "ref_rejected_logps", source);
        requireLogProb(refChosenLogps, "ref_chosen_logps", source);
        requireLogProb(refRejectedLogps, "ref_rejected_logps", source);
    }

    /** A pair with no scores and no reference log-probs. */
    public static PreferencePair of(String prompt, String chosen, String rejected) {
        return new PreferencePair(prompt, chosen, rejected, null, null, null, null, null);
    }

    /** A copy with these reward scores (finite). */
    public PreferencePair withScores(double chosenScore, double rejectedScore) {
        return new PreferencePair(prompt, chosen, rejected, chosenScore, rejectedScore,
                refChosenLogps, refRejectedLogps, source);
    }

    /** A copy with these precomputed reference log-probs (summed over each completion; finite). */
    public PreferencePair withReferenceLogps(double chosenLogps, double rejectedLogps) {
        return new PreferencePair(prompt, chosen, rejected, scoreChosen, scoreRejected,
                chosenLogps, rejectedLogps, source);
    }

    /** A copy with another source ({@code "<unknown>"} when null). */
    public PreferencePair withSource(String newSource) {
        return new PreferencePair(prompt, chosen, rejected, scoreChosen, scoreRejected,
                refChosenLogps, refRejectedLogps, newSource);
    }

    /** Whether the pair has reward scores (then both are set). */
    public boolean hasScores() {
        return scoreChosen != null;
    }

    /** Whether the pair has precomputed reference log-probs (then both are set). */
    public boolean hasReferenceLogps() {
        return refChosenLogps != null;
    }

    private static void requireText(String value, String field, String source, boolean mayBeEmpty) {
        if (value == null) {
            throw new IllegalArgumentException(source + ": field \"" + field + "\" is null (expected a string)");
        }
        if (!mayBeEmpty && value.isEmpty()) {
            throw new IllegalArgumentException(source + ": field \"" + field
                    + "\" is empty (a completion needs at least one character)");
        }
    }

    private static void requireBothOrNeither(Double a, Double b, String nameA, String nameB, String source) {
        if ((a == null) != (b == null)) {
            String present = a != null ? nameA : nameB;
            String missing = a != null ? nameB : nameA;
            throw new IllegalArgumentException(source + ": field \"" + missing + "\" is missing but \"" + present
                    + "\" is present (give both or neither)");
        }
        requireFinite(a, nameA, source);
        requireFinite(b, nameB, source);
    }

    /** A summed log-probability is at most 0 (a probability is at most 1). */
    private static void requireLogProb(Double v, String field, String source) {
        if (v != null && v > 0) {
            throw new IllegalArgumentException(source + ": field \"" + field + "\" is " + v
                    + " (expected a log-probability, <= 0)");
        }
    }

    private static void requireFinite(Double v, String field, String source) {
        if (v != null && !Double.isFinite(v)) {
            throw new IllegalArgumentException(source + ": field \"" + field + "\" is " + v
                    + " (expected a finite number)");
        }
    }
}
