"""What cannot be exported says why in one line, before any file is written (issue 27): a model or tokenizer that
GGUF cannot hold faithfully, flags for the other format, a target that is a file or a non-empty folder."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from conftest import invoke, run_cli
from finetune.errors import UserError
from finetune.export import check_target
from finetune.gguf_export import write_gguf
from finetune.tokenizer import build_char_tokenizer


def tiny(model_type: str, tokenizer, **extra):
    config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), **extra)
    with torch.device("cpu"):
        return AutoModelForCausalLM.from_config(config)


LLAMA = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
             max_position_embeddings=64)  # fmt: skip


def test_gguf_refuses_an_architecture_it_does_not_map(tmp_path):
    tok = build_char_tokenizer(["reverse: abc"])
    model = tiny("gpt2", tok, n_embd=32, n_layer=1, n_head=2, n_positions=64)
    with pytest.raises(UserError, match="model_type gpt2 is not mapped") as e:
        write_gguf(model, tok, tmp_path / "x.gguf", "f16")
    assert "\n" not in str(e.value) and not (tmp_path / "x.gguf").exists()


def test_gguf_refuses_a_tokenizer_that_is_not_the_character_one(tmp_path, minilm_dir):
    tok = AutoTokenizer.from_pretrained(minilm_dir)  # WordPiece
    model = tiny("llama", tok, **LLAMA)
    with pytest.raises(UserError, match="the tokenizer is WordPiece"):
        write_gguf(model, tok, tmp_path / "x.gguf", "f16")


def test_gguf_writes_the_sentencepiece_space_mark_and_the_space_as_two_tokens(tmp_path):
    """With SentencePiece's vocabulary the space was written as its mark, so a text holding the mark was refused (the
    two would be one token); in byte-level BPE the space is "Ġ" and the mark its three bytes: both written, apart."""
    import gguf

    tok = build_char_tokenizer(["a\u2581b c"])
    write_gguf(tiny("llama", tok, **LLAMA), tok, tmp_path / "x.gguf", "f16")
    field = gguf.GGUFReader(tmp_path / "x.gguf").fields["tokenizer.ggml.tokens"]
    tokens = [field.contents(i) for i in range(len(field.data))]
    mark, space = tokens[tok.convert_tokens_to_ids("\u2581")], tokens[tok.convert_tokens_to_ids(" ")]
    assert space == "\u0120" and len(mark) == 3 and tokens.count(mark) == tokens.count(space) == 1, (mark, space)


def test_export_target_that_is_a_file_or_a_full_folder_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is not a folder"):
        check_target(tmp_path / "file", force=True)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(UserError, match="--force"):
        check_target(tmp_path / "full", force=False)
    check_target(tmp_path / "full", force=True)
    check_target(tmp_path / "empty", force=False)  # absent: fine


@pytest.mark.parametrize(
    ("flags", "says"),
    [(["--format", "gguf", "--dtype", "fp16"], "--dtype applies"), (["--quant", "q8_0"], "--quant applies")],
)
def test_export_flags_of_the_other_format_are_one_line(tmp_path, flags, says):
    proc = run_cli("export", tmp_path, *flags, check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and says in proc.stderr, proc.stderr


def test_invoke_export_and_serve_plan_the_finetune_commands():
    proc = invoke(None, "--dry", "export", "--run", "runs/x", "--format", "gguf", "--quant", "q8_0", "--force")
    assert proc.returncode == 0, proc.stderr
    assert ".venv/bin/finetune export runs/x --format gguf --quant q8_0 --force" in proc.stdout
    proc = invoke(None, "--dry", "serve", "--model", "runs/x", "--port", "8001", "--api-key", "s3cret")
    assert proc.returncode == 0, proc.stderr
    assert ".venv/bin/finetune serve runs/x --host 127.0.0.1 --port 8001" in proc.stdout
    assert "s3cret" not in proc.stdout  # the key goes in the environment, not the echoed plan


def test_gguf_vocabulary_is_byte_level_bpe_with_merges_only_for_characters_beyond_ascii():
    """Each character is a token of its UTF-8 bytes in GPT-2's alphabet; a character of several bytes gets the merges
    that join them, left to right, so llama.cpp's BPE finds it whole; special tokens keep their text."""
    import gguf

    from finetune.gguf_export import byte_level, merges, vocabulary

    tokenizer = build_char_tokenizer(["reverse: café €"])
    pieces, types = vocabulary(tokenizer)
    by_text = dict(zip([tokenizer.convert_ids_to_tokens(i) for i in range(len(pieces))], zip(pieces, types)))
    assert by_text[" "] == ("\u0120", gguf.TokenType.NORMAL) and by_text["a"] == ("a", gguf.TokenType.NORMAL)
    assert by_text["é"][0] == "\u00c3\u00a9" == byte_level("é")  # 0xC3 0xA9, both printable Latin-1 in the alphabet
    assert by_text["€"][0] == byte_level("€") and len(byte_level("€")) == 3  # 0xE2 0x82 0xAC: 0x82 moves up
    assert by_text[tokenizer.eos_token][1] == gguf.TokenType.CONTROL and by_text[tokenizer.eos_token][0] == "<|end|>"
    euro = byte_level("€")
    assert merges(pieces, types) == ["\u00c3 \u00a9", f"{euro[0]} {euro[1]}", f"{euro[:2]} {euro[2]}"]
