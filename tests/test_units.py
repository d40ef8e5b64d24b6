"""Fast unit tests of the pieces: tokenizer, completion-only labels, packing, the default data generator."""

from __future__ import annotations

import subprocess
import sys

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from conftest import REPO
from finetune.datafiles import Record
from finetune.features import IGNORE, Collator, pack, render_prompt, tokenize_causal
from finetune.tokenizer import build_char_tokenizer

CHAT = Record(line=1, messages=[{"role": "user", "content": "reverse: abc"}, {"role": "assistant", "content": "cba"}])


def test_char_tokenizer_saves_and_loads_with_autotokenizer(tmp_path):
    tok = build_char_tokenizer(["reverse: abc", "cba"])
    text = tok.apply_chat_template(CHAT.messages, tokenize=False)
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded(text)["input_ids"] == tok(text)["input_ids"]
    assert loaded.decode(loaded(text)["input_ids"]) == text
    assert loaded.apply_chat_template(CHAT.messages, tokenize=False) == text


def test_loss_is_on_the_completion_only():
    tok = build_char_tokenizer(["reverse: abc", "cba"])
    [ex], _ = tokenize_causal(tok, [CHAT], max_length=64)
    trained = [t for t, label in zip(ex["input_ids"], ex["labels"]) if label != IGNORE]
    assert tok.decode(trained) == "cba<|end|>"
    prompt_len = len(tok(render_prompt(tok, CHAT), add_special_tokens=False)["input_ids"])
    assert all(label == IGNORE for label in ex["labels"][:prompt_len])


def test_prompt_completion_format_masks_the_prompt():
    tok = build_char_tokenizer(["Q: 2+2=", " 4"])
    [ex], _ = tokenize_causal(tok, [Record(line=1, prompt="Q: 2+2=", completion=" 4")], max_length=64)
    assert tok.decode([t for t, lab in zip(ex["input_ids"], ex["labels"]) if lab != IGNORE]) == " 4<|end|>"


def test_packing_keeps_examples_apart():
    """A packed example must give the same logits as the example alone (block-diagonal attention)."""
    tok = build_char_tokenizer(["reverse: abcdef", "fedcba"])
    recs = [
        Record(
            line=i, messages=[{"role": "user", "content": f"reverse: {w}"}, {"role": "assistant", "content": w[::-1]}]
        )
        for i, w in enumerate(["abc", "fedcb"])
    ]
    examples, _ = tokenize_causal(tok, recs, max_length=64)
    rows = pack(examples, max_length=64)
    assert len(rows) == 1 and len(rows[0]["input_ids"]) == sum(len(e["input_ids"]) for e in examples)
    torch.manual_seed(0)
    config = AutoConfig.for_model(
        "llama",
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        vocab_size=len(tok),
        max_position_embeddings=64,
    )
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()
    model.config.use_cache = False  # as in training: packed masks are derived only without a KV cache
    batch = Collator(tok.pad_token_id)(rows)
    batch.pop("num_tokens")
    assert "attention_mask" not in batch
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
        start = 0
        for ex in sorted(examples, key=lambda e: -len(e["input_ids"])):  # pack() is first-fit decreasing
            n = len(ex["input_ids"])
            alone = model(input_ids=torch.tensor([ex["input_ids"]])).logits[0]
            torch.testing.assert_close(packed[start : start + n], alone, atol=1e-5, rtol=1e-4)
            start += n


def test_collator_counts_real_tokens_and_pads_labels():
    batch = Collator(pad_token_id=0)(
        [{"input_ids": [5, 6, 7], "labels": [IGNORE, 6, 7]}, {"input_ids": [5], "labels": [5]}]
    )
    assert batch["num_tokens"] == 4 and isinstance(batch["num_tokens"], int), "a plain int: no device round trip"
    assert batch["labels"].tolist() == [[IGNORE, 6, 7], [5, IGNORE, IGNORE]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_collator_pads_packed_rows_to_a_fixed_width():
    rows = [{"input_ids": [5, 6, 7], "labels": [IGNORE, 6, 7], "position_ids": [0, 1, 0]}]
    batch = Collator(pad_token_id=0, pad_to=6)(rows)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0, 0, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 0, 0, 1, 2]], "the padding is a sequence of its own"
    assert batch["labels"].tolist() == [[IGNORE, 6, 7, IGNORE, IGNORE, IGNORE]]
    assert batch["num_tokens"] == 3


def test_data_scripts_regenerate_the_committed_files(tmp_path):
    for script, folder in [("make_default_data.py", "reversal"), ("make_sentiment_data.py", "sentiment")]:
        subprocess.run(
            [sys.executable, REPO / "scripts" / script, "--out", tmp_path / folder], check=True, capture_output=True
        )
        for name in ("train.jsonl", "eval.jsonl"):
            assert (tmp_path / folder / name).read_bytes() == (REPO / "data" / folder / name).read_bytes(), name


def test_classification_reads_csv_and_names_the_csv_line(tmp_path):
    import pytest

    from finetune.datafiles import read_records
    from finetune.errors import DataError

    good = tmp_path / "good.csv"
    good.write_text('text,label\n"great, really",positive\nawful,negative\n')
    records = read_records(good, "classification")
    assert [(r.text, r.label, r.line) for r in records] == [("great, really", "positive", 2), ("awful", "negative", 3)]
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nfine,positive\nno label here,\n")
    with pytest.raises(DataError, match=rf"{bad}:3: missing field 'label'"):
        read_records(bad, "classification")


def test_loss_plot_takes_negative_losses_and_plots_grpo_rewards_beside_them(tmp_path):
    """GRPO's loss is often below zero: a log axis warned ("no positive values") and drew nothing useful. The plot
    takes any sign, and a run that logs a reward gets it in a panel of its own."""
    import warnings

    from finetune.report import plot_loss

    rows = [{"step": s, "loss": -0.02 + 0.01 * (s % 3), "reward": 0.2 + s / 100} for s in range(5, 65, 5)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        png = plot_loss(rows, tmp_path / "loss.png", "grpo: grpo")
    assert png.read_bytes()[:4] == b"\x89PNG"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        only_loss = plot_loss([{k: r[k] for k in ("step", "loss")} for r in rows], tmp_path / "plain.png", "t")
    height = lambda path: int.from_bytes(path.read_bytes()[20:24], "big")  # noqa: E731 (PNG's IHDR height)
    assert height(png) > height(only_loss)  # the reward panel is drawn below the loss, not dropped


def test_the_manifest_records_the_versions_a_preference_run_depends_on():
    """dpo, kto and grpo runs train through trl on datasets: the manifest names their versions as it does torch's."""
    from importlib import metadata

    from finetune.manifest import versions

    found = versions()
    assert found["trl"] == metadata.version("trl") and found["datasets"] == metadata.version("datasets"), found
