#!/usr/bin/env python3
"""Generate the preference data of configs/dpo.yaml and configs/kto.yaml from the reversal task, deterministically.

    python scripts/make_preference_data.py   # data/reversal/ -> data/preference/{dpo_train,dpo_eval,kto_train}.jsonl

Each pair's chosen completion is the right reversal and its rejected one a near miss: two neighbouring characters
swapped, one character changed, or one dropped. Rows are in TRL's conversational layout (message lists), which the
default tokenizer's chat template renders exactly as SFT saw them. Held-out pairs come from data/reversal/eval.jsonl,
whose strings never occur in training. configs/grpo.yaml reads data/reversal/ itself. Standard library only.
"""

import argparse
import json
import random
from pathlib import Path

ALPHABET = "abcdefghijklmnopqrstuvwxyz"


def near_miss(answer: str, rng: random.Random) -> str:
    """A wrong answer close to the right one (never equal to it)."""
    while True:
        chars, kind, i = list(answer), rng.choice(("swap", "change", "drop")), rng.randrange(len(answer))
        if kind == "swap" and i + 1 < len(chars):
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
        elif kind == "change":
            chars[i] = rng.choice(ALPHABET.replace(chars[i], ""))
        elif kind == "drop" and len(chars) > 1:
            del chars[i]
        wrong = "".join(chars)
        if wrong != answer:
            return wrong


def words(path: Path) -> list[tuple[str, str]]:
    """(prompt, answer) of each reversal example."""
    rows = [json.loads(line)["messages"] for line in path.read_text().splitlines() if line.strip()]
    return [(m[0]["content"], m[1]["content"]) for m in rows]


def user(prompt: str) -> list[dict]:
    return [{"role": "user", "content": prompt}]


def assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def pairs(examples, rng) -> list[dict]:
    return [{"prompt": user(p), "chosen": assistant(a), "rejected": assistant(near_miss(a, rng))} for p, a in examples]


def kto_rows(examples, rng) -> list[dict]:
    """Each prompt once with its right answer (label true) and once with a near miss (false), shuffled."""
    rows = []
    for p, a in examples:
        rows.append({"prompt": user(p), "completion": assistant(a), "label": True})
        rows.append({"prompt": user(p), "completion": assistant(near_miss(a, rng)), "label": False})
    rng.shuffle(rows)
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default="data/reversal", help="the reversal data (default data/reversal)")
    p.add_argument("--out", default="data/preference", help="output folder (default data/preference)")
    p.add_argument("--seed", type=int, default=1234, help="random seed (default 1234)")
    p.add_argument("--train", type=int, default=1000, help="training prompts (default 1000)")
    p.add_argument("--eval", type=int, default=200, help="held-out pairs (default 200)")
    a = p.parse_args()
    rng = random.Random(a.seed)
    train, evals = words(Path(a.source) / "train.jsonl")[: a.train], words(Path(a.source) / "eval.jsonl")[: a.eval]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"dpo_train": pairs(train, rng), "dpo_eval": pairs(evals, rng), "kto_train": kto_rows(train, rng)}
    for name, rows in files.items():
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(", ".join(f"{len(rows)} rows in {out}/{name}.jsonl" for name, rows in files.items()))


if __name__ == "__main__":
    main()
