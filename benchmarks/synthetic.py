"""Synthetic chat data and a tokenizer of a real model's vocabulary size, built offline (no hub download).

The tokenizer is a real `tokenizers` WordLevel tokenizer wrapped in PreTrainedTokenizerFast, like
finetune.tokenizer.build_char_tokenizer: the same special and role tokens and the same chat template
(`<|role|>content<|end|>`), and words `w0`, `w1`, ... filling the vocabulary up to EXACTLY the requested size, so a
model built from it (finetune.modeling sets vocab_size = len(tokenizer)) has the real embedding and LM-head shapes.
Text is random vocabulary words separated by spaces, so one word is one token and a conversation's token count is
known before tokenizing: 2 tokens per message (role token and <|end|>) plus its words.

Example lengths (whole conversations, template tokens included) are log-normal: median `median` tokens, shape
`sigma`, clipped to [min_tokens, cap]. One to three user/assistant turns; assistant turns get about twice the words of
user turns on average (Dirichlet split).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from finetune.tokenizer import CHAT_TEMPLATE, ROLE_TOKENS, SPECIAL

MESSAGE_OVERHEAD = 2  # <|role|> and <|end|> per message under CHAT_TEMPLATE
TURN_PROBS = {1: 0.6, 2: 0.25, 3: 0.15}  # user/assistant exchanges per conversation


def special_tokens() -> list[str]:
    return [*SPECIAL.values(), *ROLE_TOKENS]


def build_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """A word-level tokenizer with exactly `vocab_size` tokens: the special/role tokens, then w0, w1, ..."""
    specials = special_tokens()
    if vocab_size < len(specials) + 16:
        raise ValueError(f"vocab_size {vocab_size} is too small (at least {len(specials) + 16})")
    words = [f"w{i}" for i in range(vocab_size - len(specials))]
    vocab = {tok: i for i, tok in enumerate(specials + words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece()  # joins words with spaces
    tok.add_special_tokens(specials)  # already in the vocabulary: same ids, now matched before pre-tokenization
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, chat_template=CHAT_TEMPLATE, **SPECIAL)
    if len(fast) != vocab_size:
        raise AssertionError(f"built {len(fast)} tokens, wanted {vocab_size}")
    return fast


def save_tokenizer(vocab_size: int, directory: Path) -> Path:
    """Build and save (once: an existing directory with the right size is reused); returns the directory."""
    directory = Path(directory)
    marker = directory / "synthetic.json"
    if marker.exists() and json.loads(marker.read_text()).get("vocab_size") == vocab_size:
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    build_tokenizer(vocab_size).save_pretrained(directory)
    marker.write_text(json.dumps({"vocab_size": vocab_size, "words": vocab_size - len(special_tokens())}) + "\n")
    return directory


def sample_lengths(rng: np.random.Generator, n: int, median: float, sigma: float, cap: int, min_tokens: int = 16):
    """n conversation lengths in tokens: log-normal (median, sigma), clipped to [min_tokens, cap]."""
    raw = rng.lognormal(mean=math.log(median), sigma=sigma, size=n)
    return np.clip(np.rint(raw), min_tokens, cap).astype(int).tolist()


def _split(rng: np.random.Generator, total: int, weights: list[float]) -> list[int]:
    """Split `total` words over messages in proportion to Dirichlet(weights) shares, at least 1 word each."""
    shares = rng.dirichlet(weights)
    counts = [1] * len(weights)
    rest = total - len(weights)
    extra = np.floor(shares * rest).astype(int)
    counts = [c + int(e) for c, e in zip(counts, extra)]
    for i in np.argsort(-(shares * rest - extra))[: total - sum(counts)]:  # largest remainders
        counts[int(i)] += 1
    return counts


def conversation(rng: np.random.Generator, length: int, n_words: int) -> list[dict]:
    """A chat of exactly `length` tokens under CHAT_TEMPLATE, user/assistant alternating, ending with the assistant."""
    turns = int(rng.choice(list(TURN_PROBS), p=list(TURN_PROBS.values())))
    while turns > 1 and length < turns * 2 * (MESSAGE_OVERHEAD + 1) + 8:
        turns -= 1
    n_msgs = 2 * turns
    words = _split(rng, length - n_msgs * MESSAGE_OVERHEAD, [1.0, 2.0] * turns)
    messages = []
    for i, k in enumerate(words):
        ids = rng.integers(0, n_words, size=k)
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": " ".join(f"w{j}" for j in ids)})
    return messages


def conversation_tokens(messages: list[dict]) -> int:
    return sum(MESSAGE_OVERHEAD + len(m["content"].split()) for m in messages)


def make_conversations(
    seed: int, n: int, vocab_size: int, median: float, sigma: float, cap: int, min_tokens: int = 16
) -> list[list[dict]]:
    rng = np.random.default_rng(seed)
    n_words = vocab_size - len(special_tokens())
    return [conversation(rng, L, n_words) for L in sample_lengths(rng, n, median, sigma, cap, min_tokens)]


def write_jsonl(conversations: list[list[dict]], path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for messages in conversations:
            f.write(json.dumps({"messages": messages}) + "\n")
    return path


def attention_span(lengths) -> float:
    """T for the attention FLOPs: each token attends within its own document, so T = sum(len^2) / sum(len)."""
    lengths = [int(x) for x in lengths]
    return sum(x * x for x in lengths) / sum(lengths)
