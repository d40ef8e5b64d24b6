"""`finetune export --format gguf`: one GGUF file for llama.cpp and Ollama, written with the `gguf` package (llama.cpp's
own writer, gguf-py). The tensors are named and laid out the way llama.cpp's convert_hf_to_gguf.py does it for its
"llama" architecture (gguf's TensorNameMap gives the names); anything this module cannot map faithfully is refused in
one line instead of written half-right.

What fits: a Llama-architecture model (the default's model.config) with the run's character tokenizer. The tokenizer
is written as a byte-level BPE vocabulary (llama.cpp's "gpt2" model, as Llama 3 and Qwen ship): every character a
token whose text is its UTF-8 bytes in GPT-2's byte-to-unicode alphabet (the space is "Ġ"), merges only to join the
bytes of a character outside ASCII; the special and role tokens as control tokens. Not SentencePiece's "llama" model:
llama.cpp's SentencePiece tokenizer falls back to the 256 byte tokens <0x00>..<0xFF> for anything outside the
vocabulary, and aborts the process while loading a vocabulary that lacks them (it looks up the newline's; found by
running the export in llama.cpp, tests/test_export.py); byte-level BPE skips a byte it has no token for instead. A
pretrained BPE tokenizer (a hub model) is out of scope: the HF export and llama.cpp's convert_hf_to_gguf.py handle it.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

from finetune.errors import UserError

TYPES = {"f16": ("F16", "MOSTLY_F16"), "q8_0": ("Q8_0", "MOSTLY_Q8_0")}


def refuse(why: str) -> UserError:
    return UserError(
        f"cannot write GGUF: {why}; --format hf writes any model (llama.cpp's convert_hf_to_gguf.py reads it)"
    )


@functools.cache  # byte_level asks for it once per token
def byte_alphabet() -> dict[int, str]:
    """GPT-2's byte-to-unicode table: each byte a printable character (printable ASCII and Latin-1 stand for
    themselves, the rest move up from U+0100), the alphabet byte-level BPE vocabularies are written in."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    moved = [b for b in range(256) if b not in kept]
    return {**{b: chr(b) for b in kept}, **{b: chr(256 + i) for i, b in enumerate(moved)}}


def byte_level(text: str) -> str:
    """text as a byte-level BPE vocabulary holds it: its UTF-8 bytes in GPT-2's alphabet (" " is "Ġ")."""
    alphabet = byte_alphabet()
    return "".join(alphabet[b] for b in text.encode())


def vocabulary(tokenizer) -> tuple[list[str], list[int]]:
    """(token texts, token types) in id order for the character tokenizer, or a one-line refusal."""
    import gguf

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    if spec["model"]["type"] != "WordLevel":
        raise refuse(f"the tokenizer is {spec['model']['type']}; only the run's character tokenizer is mapped")
    vocab = spec["model"]["vocab"]
    special = {t["content"] for t in spec.get("added_tokens", []) if t.get("special")}
    pieces, types = [""] * len(vocab), [0] * len(vocab)
    for text, i in vocab.items():
        if text in special:
            pieces[i], types[i] = text, gguf.TokenType.CONTROL
        elif len(text) != 1:
            raise refuse(f"token {text!r} is not one character; the GGUF vocabulary maps characters")
        else:
            pieces[i], types[i] = byte_level(text), gguf.TokenType.NORMAL
    if "" in pieces:
        raise refuse("the tokenizer's ids have gaps")
    unk = tokenizer.unk_token
    if unk in vocab:
        types[vocab[unk]] = gguf.TokenType.UNKNOWN
    return pieces, [int(t) for t in types]


def merges(pieces: list[str], types: list[int]) -> list[str]:
    """The BPE merges that join the bytes of each character outside ASCII back into its token ("a b" joins a and b),
    left to right; an ASCII character is one byte and needs none. llama.cpp refuses a file without merges and gguf
    writes no empty list, so an all-ASCII vocabulary gets one merge that never applies: two control tokens, which
    llama.cpp splits off before BPE sees the text."""
    import gguf

    out: list[str] = []
    for piece, kind in zip(pieces, types):
        if kind != gguf.TokenType.NORMAL:
            continue
        for end in range(2, len(piece) + 1):
            merge = f"{piece[: end - 1]} {piece[end - 1]}"
            if merge not in out:
                out.append(merge)
    control = [p for p, kind in zip(pieces, types) if kind == gguf.TokenType.CONTROL]
    if not out and control:
        out.append(f"{control[0]} {control[0]}")
    return out


def rope_interleaved(weight: np.ndarray, heads: int) -> np.ndarray:
    """transformers' Llama q/k rows hold each head's rotary pairs as two halves; llama.cpp's rope (type "normal")
    pairs neighbouring rows. Same reordering as convert_hf_to_gguf's LlamaModel.permute."""
    rows = weight.shape[0]
    return weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def gguf_tensors(model) -> list[tuple[str, np.ndarray]]:
    """(GGUF name, float32 array in llama.cpp's layout) for every weight; a tied output head is left out (llama.cpp
    reads token_embd then, as convert_hf_to_gguf writes it)."""
    import gguf

    config = model.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    kv_heads = config.num_key_value_heads or config.num_attention_heads
    out = []
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise refuse(f"no llama.cpp tensor for {hf_name}")
        array = tensor.detach().to("cpu").float().numpy()
        if hf_name.endswith("self_attn.q_proj.weight"):
            array = rope_interleaved(array, config.num_attention_heads)
        elif hf_name.endswith("self_attn.k_proj.weight"):
            array = rope_interleaved(array, kv_heads)
        out.append((name, array))
    return out


def check_model(model) -> None:
    config = model.config
    if config.model_type not in ("llama", "mistral"):
        raise refuse(f"model_type {config.model_type} is not mapped (llama and mistral are)")
    if getattr(config, "rope_scaling", None) and config.rope_scaling.get("rope_type", "default") != "default":
        raise refuse(f"rope scaling {config.rope_scaling} is not mapped")
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        raise refuse("attention or MLP biases are not mapped")


def write_gguf(model, tokenizer, path: Path, quant: str) -> str:
    """Write path (a .gguf file); returns the tensor type written."""
    import gguf

    check_model(model)
    pieces, types = vocabulary(tokenizer)
    config = model.config
    if len(pieces) != config.vocab_size:
        raise refuse(f"the tokenizer has {len(pieces)} tokens and the model {config.vocab_size} embeddings")
    tensor_type, file_type = TYPES[quant]
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name(path.stem)
    writer.add_file_type(gguf.LlamaFileType[file_type])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads or config.num_attention_heads)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_rope_freq_base(rope_theta(config))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(len(pieces))
    writer.add_tokenizer_model("gpt2")  # byte-level BPE (module docstring: why not SentencePiece's "llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(pieces)
    writer.add_token_types(types)
    writer.add_token_merges(merges(pieces, types))
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_unk_token_id(tokenizer.unk_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_add_bos_token(False)  # as the run trained and `finetune generate` prompts: no <s> before the prompt
    writer.add_add_eos_token(False)
    writer.add_add_space_prefix(False)  # no word-start space before the text: the run never had one
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)
    for name, array in gguf_tensors(model):
        writer.add_tensor(name, *encode(array, tensor_type))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return tensor_type.lower()


def encode(array: np.ndarray, tensor_type: str) -> tuple:
    """(data, raw_shape, raw_dtype) for GGUFWriter.add_tensor: 1-D tensors (norms) stay float32 as llama.cpp keeps
    them; 2-D ones become f16 or q8_0 (gguf's own quantizer: blocks of 32 along a row)."""
    import gguf

    if array.ndim == 1:
        return array.astype(np.float32), None, None
    if tensor_type == "F16":
        return array.astype(np.float16), None, None
    kind = gguf.GGMLQuantizationType.Q8_0
    if array.shape[-1] % gguf.GGML_QUANT_SIZES[kind][0]:
        raise refuse(f"a row of {array.shape[-1]} values is not a whole number of q8_0 blocks; use --quant f16")
    return gguf.quants.quantize(array, kind), None, kind  # uint8 bytes: the writer derives the shape


def rope_theta(config) -> float:
    """transformers 5 keeps rope_theta in rope_parameters; earlier configs had it at the top."""
    params = getattr(config, "rope_parameters", None) or {}
    return float(params.get("rope_theta") or getattr(config, "rope_theta", 10000.0))
