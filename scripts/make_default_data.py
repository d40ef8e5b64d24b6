#!/usr/bin/env python3
"""Generate the embedded default dataset: string reversal in chat format, deterministic for a given seed.

    python scripts/make_default_data.py            # writes data/reversal/{train,eval}.jsonl

Reversal is a task where learning is unambiguous: an untrained model scores 0 exact-match, a trained one near 1.
Eval strings never occur in the training set. Standard library only, so it runs before any environment exists.
"""

import argparse
import json
import random
from pathlib import Path

ALPHABET = "abcdefghijklmnopqrstuvwxyz"


def make(seed: int, n_train: int, n_eval: int, min_len: int, max_len: int):
    rng = random.Random(seed)
    seen, words = set(), []
    while len(words) < n_train + n_eval:
        word = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(min_len, max_len)))
        if word not in seen:
            seen.add(word)
            words.append(word)

    def example(word):
        return {
            "messages": [{"role": "user", "content": f"reverse: {word}"}, {"role": "assistant", "content": word[::-1]}]
        }

    return [example(w) for w in words[:n_train]], [example(w) for w in words[n_train:]]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="data/reversal", help="output folder (default data/reversal)")
    p.add_argument("--seed", type=int, default=1234, help="random seed (default 1234)")
    p.add_argument("--train", type=int, default=4000, help="training examples (default 4000)")
    p.add_argument("--eval", type=int, default=200, help="held-out examples (default 200)")
    p.add_argument("--min-len", type=int, default=3, help="shortest string (default 3)")
    p.add_argument("--max-len", type=int, default=8, help="longest string (default 8)")
    a = p.parse_args()
    train, evals = make(a.seed, a.train, a.eval, a.min_len, a.max_len)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in [("train", train), ("eval", evals)]:
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {len(train)} train and {len(evals)} eval examples to {out}/")


if __name__ == "__main__":
    main()
