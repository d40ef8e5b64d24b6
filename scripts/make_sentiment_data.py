#!/usr/bin/env python3
"""Generate a small sentiment-classification dataset (JSONL with text,label), deterministic for a given seed.

    python scripts/make_sentiment_data.py          # writes data/sentiment/{train,eval}.jsonl

The held-out split uses sentiment words that never occur in training, so only a model that already knows English
(a pretrained encoder such as MiniLM) can do well on it; a randomly initialised one sits near chance. That makes the
value of pretraining measurable offline. Standard library only.
"""

import argparse
import json
import random
from pathlib import Path

TEMPLATES = [
    "the movie was {w}",
    "i found the book {w}",
    "honestly the food was {w}",
    "the service here is {w}",
    "what a {w} experience",
    "the hotel room felt {w}",
    "our trip was {w}",
    "that concert was {w}",
    "the new phone is {w}",
    "this game is {w}",
    "the lecture was {w}",
    "my day has been {w}",
]
WORDS = {
    "train": {
        "positive": ["great", "wonderful", "excellent", "lovely", "amazing", "delightful"],
        "negative": ["terrible", "awful", "horrible", "dreadful", "disgusting", "miserable"],
    },
    "eval": {
        "positive": ["fantastic", "superb", "brilliant", "marvelous", "pleasant", "enjoyable"],
        "negative": ["atrocious", "lousy", "appalling", "abysmal", "unpleasant", "boring"],
    },
}


def make(split: str, seed: int) -> list[dict]:
    rng = random.Random(f"{seed}-{split}")
    rows = [
        {"text": t.format(w=w), "label": label}
        for label, words in WORDS[split].items()
        for w in words
        for t in TEMPLATES
    ]
    rng.shuffle(rows)
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="data/sentiment", help="output folder (default data/sentiment)")
    p.add_argument("--seed", type=int, default=1234, help="random seed (default 1234)")
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "eval"):
        rows = make(split, a.seed)
        (out / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(f"wrote {len(rows)} {split} examples to {out}/{split}.jsonl")


if __name__ == "__main__":
    main()
