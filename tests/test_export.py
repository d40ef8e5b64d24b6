"""`finetune export` (issue 27): the hf folder loads in a fresh process with transformers alone (no finetune, no
PEFT) and completes a prompt as `finetune generate` does; a LoRA run exports merged; GGUF read back with the `gguf`
package matches the hf export tensor for tensor; a non-empty target is refused and a failed export leaves nothing."""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, explain, fresh_generate, read_json, run_cli

pytestmark = pytest.mark.slow


def test_hf_export_of_the_default_run_loads_with_transformers_alone(shipped_run, tmp_path):
    out = tmp_path / "export"
    run_cli("export", shipped_run, "--out", out)
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "README.md"} <= files
    assert "chat_template.jinja" in files and not any(f.startswith(".") for f in files)
    assert read_json(out / "tokenizer_config.json")["tokenizer_class"] == "PreTrainedTokenizerFast"
    classes, completion = fresh_generate(out, "reverse: planet")
    assert classes == "TokenizersBackend LlamaForCausalLM"  # transformers 5's PreTrainedTokenizerFast
    assert completion == run_cli("generate", shipped_run, "reverse: planet").stdout.strip() == "tenalp"

    card = (out / "README.md").read_text()
    manifest = read_json(shipped_run / "manifest.json")
    for digest in [*manifest["data"].values(), *manifest["locks"].values(), manifest["git"]["commit"]]:
        assert digest in card
    assert "built from model.config (llama)" in card and "exact_match before -> after | 0." in card

    again = run_cli("export", shipped_run, "--out", out, check=False)  # not empty: refused without --force
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "--force" in again.stderr, again.stderr
    run_cli("export", shipped_run, "--out", out, "--force", "--dtype", "bf16")
    assert read_json(out / "config.json")["dtype"] == "bfloat16"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no staging or replaced folder left beside it


def test_lora_run_exports_merged_and_loads_without_peft(lora_run, tmp_path):
    out = tmp_path / "merged"
    run_cli("export", lora_run, "--out", out)
    assert not (out / "adapter_config.json").exists() and (out / "model.safetensors").exists()
    assert "LoRA merged into the base" in (out / "README.md").read_text()
    _, completion = fresh_generate(out, "reverse: abc")
    assert completion == run_cli("generate", lora_run, "reverse: abc").stdout.strip()


def test_a_failed_export_leaves_no_folder(lora_run, tmp_path):
    broken = tmp_path / "run"
    broken.mkdir()
    (broken / "manifest.json").write_bytes((lora_run / "manifest.json").read_bytes())  # a run without its model/
    proc = run_cli("export", broken, "--out", tmp_path / "out", check=False)
    assert proc.returncode == 2 and "no final model" in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


@pytest.mark.parametrize("quant", ["f16", "q8_0"])
def test_gguf_export_reads_back_equal_to_the_hf_export(shipped_run, tmp_path, quant):
    """The check of the GGUF: read back with gguf (llama.cpp's own reader) and every tensor compared with the hf
    export's, in llama.cpp's layout; the vocabulary and chat template with the tokenizer's."""
    import gguf
    from safetensors.numpy import load_file

    from finetune.gguf_export import byte_level, rope_interleaved

    run_cli("export", shipped_run, "--out", tmp_path / "hf")
    run_cli("export", shipped_run, "--out", tmp_path / "gguf", "--format", "gguf", "--quant", quant)
    path = tmp_path / "gguf" / f"default-{quant}.gguf"
    reader = gguf.GGUFReader(path)
    config = read_json(tmp_path / "hf" / "config.json")
    hf = load_file(tmp_path / "hf" / "model.safetensors")
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config["num_hidden_layers"])
    expected = {}
    for hf_name, array in hf.items():
        if hf_name == "lm_head.weight":
            continue  # tied to the embeddings: llama.cpp reads token_embd
        if "q_proj" in hf_name or "k_proj" in hf_name:
            array = rope_interleaved(array, config["num_attention_heads"])
        expected[names.get_name(hf_name, try_suffixes=(".weight",))] = array
    got = {t.name: t for t in reader.tensors}
    assert set(got) == set(expected), (sorted(got), sorted(expected))
    for name, want in expected.items():
        tensor = got[name]
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(want.shape)
        if want.ndim == 1:
            assert tensor.tensor_type == gguf.GGMLQuantizationType.F32 and np.array_equal(values, want), name
        elif quant == "f16":
            assert tensor.tensor_type == gguf.GGMLQuantizationType.F16, name
            assert np.array_equal(values, want.astype(np.float16).astype(np.float32)), name
        else:  # q8_0: a block of 32 keeps one scale d = max|x| / 127, stored as f16: the error is at most half a
            # step plus the f16 rounding of d (relative 2**-11) times the largest integer, 127
            assert tensor.tensor_type == gguf.GGMLQuantizationType.Q8_0, name
            step = np.abs(want.reshape(-1, 32)).max(axis=1, keepdims=True) / 127
            bound = step * (0.5 + 127 * 2**-11) + 1e-7
            assert (np.abs(values.reshape(-1, 32) - want.reshape(-1, 32)) <= bound).all(), name

    def field(key):
        f = reader.fields[key]
        return [f.contents(i) for i in range(len(f.data))] if len(f.data) > 1 else f.contents()

    tokenizer = json.loads((tmp_path / "hf" / "tokenizer.json").read_text())
    vocab = sorted(tokenizer["model"]["vocab"].items(), key=lambda kv: kv[1])
    special = {t["content"] for t in tokenizer["added_tokens"] if t["special"]}
    assert field("tokenizer.ggml.tokens") == [t if t in special else byte_level(t) for t, _ in vocab]
    assert field("tokenizer.ggml.model") == "gpt2" and byte_level(" ") == "\u0120"  # GPT-2's "Ġ"
    assert field("tokenizer.ggml.merges") == ["<pad> <pad>"]  # all ASCII: the one merge that never applies
    assert field("tokenizer.chat_template") == (tmp_path / "hf" / "chat_template.jinja").read_text()
    assert field("general.architecture") == "llama" and field("llama.context_length") == 128
    assert not field("tokenizer.ggml.add_bos_token") and not field("tokenizer.ggml.add_space_prefix")


@pytest.fixture(scope="session")
def llama_cpp(tmp_path_factory):
    """llama.cpp itself, to run the GGUF export: node-llama-cpp's prebuilt linux-x64 binaries of ggml-org/llama.cpp
    (no compiler, no GPU), installed from npm at the versions tests/llama_cpp/package-lock.json pins (npm checks
    their sha512). llama-cpp-python, the Python binding, builds llama.cpp from source: over 15 minutes on 2 cores."""
    if not (sys.platform == "linux" and platform.machine() == "x86_64"):
        pytest.skip("llama.cpp's prebuilt binaries here are linux-x64's; the GGUF is checked with gguf's reader above")
    if not shutil.which("npm"):
        pytest.skip("the llama.cpp check needs node and npm (Debian: apt-get install nodejs npm)")
    folder = tmp_path_factory.mktemp("llama-cpp")
    for name in ("package.json", "package-lock.json", "complete.mjs"):
        shutil.copy(REPO / "tests" / "llama_cpp" / name, folder / name)
    install = ["npm", "install", "--omit=optional", "--ignore-scripts", "--no-audit", "--no-fund"]
    proc = subprocess.run(install, cwd=folder, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, explain(proc, "npm install of node-llama-cpp")
    return folder


@pytest.mark.parametrize("quant", ["f16", "q8_0"])
def test_gguf_export_runs_in_llama_cpp_and_reverses_as_the_run_does(shipped_run, tmp_path, llama_cpp, quant):
    """The GGUF loaded by llama.cpp (as Ollama and LM Studio load it): greedy completions of the chat prompt equal the
    run's answers. Found by it: a SentencePiece-style vocabulary without byte tokens made llama.cpp abort while
    loading (std::out_of_range: its byte fallback looks up <0x0A> and the like)."""
    run_cli("export", shipped_run, "--out", tmp_path / "gguf", "--format", "gguf", "--quant", quant)
    prompts = [f"<|user|>reverse: {word}<|end|><|assistant|>" for word in ("hello", "planet")]  # the chat template's
    command = ["node", llama_cpp / "complete.mjs", tmp_path / "gguf" / f"default-{quant}.gguf", *prompts]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, explain(proc, "llama.cpp (node-llama-cpp) on the GGUF export")
    answer = json.loads(proc.stdout.strip().splitlines()[-1])
    assert answer == {"architecture": "llama", "context": 128, "completions": ["olleh", "tenalp"]}, answer
