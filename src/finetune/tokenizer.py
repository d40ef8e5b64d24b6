"""Tokenizers: load one by name, or build a character-level one locally from the training data (tiny offline runs).

The built tokenizer is a real `tokenizers` tokenizer with a chat template; it is saved with every run and loads back
with `AutoTokenizer.from_pretrained(run_dir)`.
"""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

SPECIAL = {"pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<s>", "eos_token": "<|end|>"}
ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>"]

# A minimal chat format: <|role|>content<|end|> per message; generation starts after <|assistant|>.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_char_tokenizer(texts) -> PreTrainedTokenizerFast:
    """One token per character seen in `texts`, plus the special and role tokens."""
    chars = sorted({ch for text in texts for ch in text})
    vocab = {tok: i for i, tok in enumerate([*SPECIAL.values(), *ROLE_TOKENS, *chars])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens([*SPECIAL.values(), *ROLE_TOKENS])
    return PreTrainedTokenizerFast(tokenizer_object=tok, chat_template=CHAT_TEMPLATE, **SPECIAL)


def load_tokenizer(name_or_path: str):
    tok = AutoTokenizer.from_pretrained(name_or_path)
    if tok.pad_token is None:  # decoder-only checkpoints often ship without one
        tok.pad_token = tok.eos_token
    return tok
