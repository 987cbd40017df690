#!/usr/bin/env python3
"""Writes PAIRS preference pairs whose prompt, chosen and rejected are each about WORDS words of
seeded random English-like text (standard TRL format with scores), for memory benchmarks
where the sequence length is set by truncation (--max-prompt-length, --max-length).

Usage: make_data.py OUT.jsonl [PAIRS=4] [WORDS=900] [SEED=0]
"""
import json
import random
import sys

WORDS = ("the model reads a long document about rivers and mountains then writes a careful "
         "answer with numbers dates names places and reasons for each claim it makes while the "
         "reader checks every step of the argument against the source text").split()


def text(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n)) + "."


def main(argv):
    if not argv:
        sys.exit(__doc__)
    out = argv[0]
    pairs = int(argv[1]) if len(argv) > 1 else 4
    words = int(argv[2]) if len(argv) > 2 else 900
    rng = random.Random(int(argv[3]) if len(argv) > 3 else 0)
    with open(out, "w") as f:
        for i in range(pairs):
            f.write(json.dumps({"prompt": text(rng, words), "chosen": text(rng, words), "rejected": text(rng, words),
                                "score_chosen": 1.0 + i % 3, "score_rejected": 0.0}) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
