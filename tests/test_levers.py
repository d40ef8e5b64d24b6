"""Speed and memory levers: what `auto` resolves to on each kind of machine, the one-line error where a lever cannot
work, how each maps onto the Trainer, and (slow) real CPU runs with each lever that can run on a CPU.

GPU-only levers (Liger, flex attention in training, FSDP) are checked here for their errors and their mapping only;
benchmarks/gpu_check.sh runs them for real on a GPU.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from conftest import DEFAULT_CONFIG, SHORT, read_json, rel_diff, run_cli
from finetune import resolve as resolve_module
from finetune.config import load_config
from finetune.datafiles import Record
from finetune.errors import ConfigError
from finetune.features import Collator, pack, tokenize_causal
from finetune.resolve import resolve
from finetune.run import training_arguments
from finetune.tokenizer import build_char_tokenizer


def cfg_with(*overrides: str):
    return load_config(DEFAULT_CONFIG, list(overrides))


@pytest.fixture
def fake_gpu_host(monkeypatch):
    """A stand-in for a CUDA host with bf16 (resolve is given cuda=True; nothing here touches a real GPU)."""
    monkeypatch.setattr(resolve_module.torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(resolve_module, "c_compiler", lambda: "/usr/bin/cc")
    monkeypatch.setattr(resolve_module, "cxx_compiler", lambda: "/usr/bin/c++")  # what compiles is not under test
    installed = {"liger_kernel", "bitsandbytes"}
    monkeypatch.setattr(resolve_module, "has_package", lambda name: name in installed)
    return installed


# --- what auto means -------------------------------------------------------------------------------------------


def test_auto_on_cpu_is_sdpa_fp32_fused_adamw():
    s = resolve(cfg_with(), cuda=False)
    assert (s.device, s.attn_implementation, s.precision, s.dtype, s.optimizer) == (
        "cpu",
        "sdpa",
        "fp32",
        "float32",
        "adamw_fused",
    )
    assert s.per_device_batch == 16 and s.metric == "exact_match"


def test_auto_on_a_gpu_picks_flex_for_packed_rows_and_sdpa_for_padded(fake_gpu_host):
    packed = resolve(cfg_with(), cuda=True)
    assert (packed.attn_implementation, packed.precision, packed.optimizer) == ("flex_attention", "bf16", "adamw_fused")
    assert packed.dtype == "float32", "a full fine-tune keeps fp32 master weights under bf16 mixed precision"
    assert resolve(cfg_with("data.packing=false"), cuda=True).attn_implementation == "sdpa"


def test_auto_prefers_an_installed_varlen_kernel_and_needs_a_compiler_for_flex(fake_gpu_host, monkeypatch):
    fake_gpu_host.add("flash_attn")
    assert resolve(cfg_with(), cuda=True).attn_implementation == "flash_attention_2"
    fake_gpu_host.discard("flash_attn")
    monkeypatch.setattr(resolve_module, "c_compiler", lambda: None)  # flex needs Triton, Triton needs cc
    assert resolve(cfg_with(), cuda=True).attn_implementation == "sdpa"


def test_frozen_lora_base_is_bf16_on_a_gpu(fake_gpu_host):
    assert resolve(cfg_with("lora.enabled=true"), cuda=True).dtype == "bfloat16"
    assert resolve(cfg_with("lora.enabled=true"), cuda=False).dtype == "float32"


# --- levers that cannot work here say so, naming the key -------------------------------------------------------

CPU_ERRORS = [
    ("training.liger_kernel=true", "training.liger_kernel: Liger's kernels are Triton GPU kernels"),
    ("model.attn_implementation=flex_attention", "model.attn_implementation: flex_attention has no CPU backward"),
    ("model.attn_implementation=flash_attention_2", "model.attn_implementation: flash_attention_2 needs a CUDA GPU"),
    ("training.fsdp=true", "training.fsdp: FSDP runs on CUDA GPUs only"),
    ("training.precision=fp16", "training.precision: fp16 needs a CUDA GPU"),
]


@pytest.mark.parametrize("override, message", CPU_ERRORS, ids=[c[0].split("=")[0] for c in CPU_ERRORS])
def test_gpu_levers_on_cpu_are_refused_with_the_key(override, message):
    with pytest.raises(ConfigError) as e:
        resolve(cfg_with(override), cuda=False)
    assert str(e.value) == f"--set {message}" or str(e.value).startswith(f"--set {message}")


def test_lever_error_names_file_and_line(tmp_path):
    text = DEFAULT_CONFIG.read_text().replace(
        "  lr_scheduler: cosine\n", "  lr_scheduler: cosine\n  liger_kernel: true\n"
    )
    path = tmp_path / "liger.yaml"
    path.write_text(text)
    line = text.splitlines().index("  liger_kernel: true") + 1
    with pytest.raises(ConfigError, match=rf"^{path}:{line}: training\.liger_kernel: "):
        resolve(load_config(path), cuda=False)


@pytest.mark.parametrize(
    "override, package",
    [
        ("training.liger_kernel=true", "liger-kernel"),
        ("model.attn_implementation=flash_attention_2", "flash-attn"),
        ("training.optimizer=adamw_8bit", "bitsandbytes"),
    ],
)
def test_missing_package_is_named(fake_gpu_host, override, package):
    fake_gpu_host.clear()
    with pytest.raises(
        ConfigError, match=rf"needs the {package} package, which is not installed .*pip install {package}"
    ):
        resolve(cfg_with(override), cuda=True)


def test_compile_without_a_compiler_points_at_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no g++, c++, clang++, cc
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.delenv("CC", raising=False)
    with pytest.raises(
        ConfigError, match=r"training\.compile: torch\.compile on CPU needs a C\+\+ compiler.*dev image"
    ):
        resolve(cfg_with("training.compile=true"), cuda=False)
    with pytest.raises(ConfigError, match=r"training\.compile: torch\.compile runs Triton, which needs a C compiler"):
        resolve(cfg_with("training.compile=true"), cuda=True)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["lora.quantization=4bit"], "lora.quantization: quantizes the frozen base of a LoRA run"),
        (["lora.enabled=true", "lora.quantization=4bit", "training.fsdp=true"], "training.fsdp: cannot shard"),
        (["lora.quantization=2bit"], "lora.quantization: got '2bit'; allowed: one of '4bit', '8bit' or null"),
        (["training.optimizer=sgd"], "training.optimizer: got 'sgd'; allowed: one of 'auto', 'adamw'"),
    ],
)
def test_lever_combinations_rejected_at_load(overrides, message):
    with pytest.raises(ConfigError, match="^--set " + message.replace("(", r"\(").replace(")", r"\)")):
        cfg_with(*overrides)


def test_a_moved_key_names_its_new_place_and_old_manifests_still_load():
    from finetune.config import from_dict, upgrade_manifest_config

    with pytest.raises(
        ConfigError, match=r"^--set model\.gradient_checkpointing: moved to training\.gradient_checkpointing$"
    ):
        cfg_with("model.gradient_checkpointing=true")
    old = cfg_with().to_dict()
    old["model"]["gradient_checkpointing"] = old["training"].pop("gradient_checkpointing") or True  # as 7a16ff3 wrote
    assert from_dict(upgrade_manifest_config(old)).training.gradient_checkpointing is True
    assert "gradient_checkpointing" in old["model"], "the manifest's own dict is left as it was"


def test_cli_refuses_a_gpu_lever_on_cpu_in_one_line(tmp_path):
    proc = run_cli(
        "train", DEFAULT_CONFIG, "--output-dir", tmp_path / "x", "--set", "training.liger_kernel=true", check=False
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "finetune: error: --set training.liger_kernel: "
        "Liger's kernels are Triton GPU kernels and no CUDA GPU is visible"
    ]
    assert not (tmp_path / "x").exists(), "refused before the run directory was made"


# --- how the levers reach the Trainer --------------------------------------------------------------------------


def test_levers_map_onto_training_arguments(tmp_path, fake_gpu_host):
    cfg = cfg_with("training.gradient_checkpointing=true", "training.compile=true", "training.optimizer=adamw_8bit")
    args = training_arguments(cfg, resolve(cfg, cuda=False), tmp_path, has_eval=True)
    assert args.activation_checkpointing and args.activation_checkpointing_kwargs == {"use_reentrant": False}
    assert args.torch_compile and args.optim == "adamw_bnb_8bit" and not args.use_liger_kernel
    plain = training_arguments(cfg_with(), resolve(cfg_with(), cuda=False), tmp_path, has_eval=True)
    assert not plain.activation_checkpointing and not plain.torch_compile and plain.optim == "adamw_torch_fused"


def test_flex_and_compile_get_one_row_width_and_sdpa_keeps_dynamic_padding(fake_gpu_host):
    """One row width where a kernel is compiled: flex attention, and training.compile (measured: a compiled 60-step
    default run on CPU compiled twice, 31 s and then 23 s more at step 31 when a shorter packed row came and the graph
    went dynamic; with one width, once: 67.8 -> 45.7 CPU-seconds, the same losses)."""
    from finetune.run import collator

    cfg, compiled = cfg_with(), cfg_with("training.compile=true")
    tok = build_char_tokenizer(["reverse: abc cba"])
    assert collator(cfg, resolve(cfg, cuda=True), tok).pad_to == cfg.data.max_length  # flex compiles once
    assert collator(cfg, resolve(cfg, cuda=False), tok).pad_to is None
    assert collator(compiled, resolve(compiled, cuda=False), tok).pad_to == cfg.data.max_length
    unpacked = cfg_with("training.compile=true", "data.packing=false")
    assert collator(unpacked, resolve(unpacked, cuda=False), tok).pad_to is None  # rows as long as their example


def test_fsdp_maps_to_fsdp2_with_its_own_activation_checkpointing():
    from finetune.run import memory_levers

    levers = memory_levers(cfg_with("training.fsdp=true", "training.gradient_checkpointing=true"))
    assert levers["fsdp_config"]["version"] == 2
    assert levers["fsdp_config"]["activation_checkpointing"] is True
    assert not levers.get("activation_checkpointing"), (
        "FSDP checkpoints per wrapped layer; the Trainer's would double it"
    )


# --- real CPU runs ---------------------------------------------------------------------------------------------


def _packed_batch():
    words = ["abc", "fedcba", "xyzw", "mnopq"]
    recs = [
        Record(
            line=i, messages=[{"role": "user", "content": f"reverse: {w}"}, {"role": "assistant", "content": w[::-1]}]
        )
        for i, w in enumerate(words)
    ]
    tok = build_char_tokenizer(f"reverse: {w} {w[::-1]}" for w in words)
    examples, _ = tokenize_causal(tok, recs, max_length=256)
    rows = pack(examples, max_length=256)
    assert len(rows) == 1, "all four examples share one row"
    batch = Collator(tok.pad_token_id)(rows)
    batch.pop("num_tokens")
    starts = [i for i, p in enumerate(batch["position_ids"][0].tolist()) if p == 0]
    return tok, batch, starts


# A fresh machine may have no compiler (the newcomer test's Debian has none): these compile kernels for real.
NO_CXX = "torch.compile and flex attention on CPU compile C++ (inductor): no C++ compiler here (apt-get install g++)"


@pytest.mark.slow
@pytest.mark.skipif(resolve_module.cxx_compiler() is None, reason=NO_CXX)
def test_packed_rows_eager_sdpa_flex_agree_and_never_mix_examples():
    """Forward only: PyTorch has no CPU backward for flex attention (training uses it on GPUs)."""
    tok, batch, starts = _packed_batch()
    config = AutoConfig.for_model(
        "llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=256,
    )  # fmt: skip
    a_end = starts[1]  # example A: the first one in the row; the others must not see it
    perturbed = batch["input_ids"].clone()
    perturbed[0, a_end - 3] = (perturbed[0, a_end - 3] + 1) % len(tok)
    losses = {}
    for impl in ("eager", "sdpa", "flex_attention"):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, attn_implementation=impl).eval()
        model.config.use_cache = False
        with torch.no_grad():
            out = model(**batch)
            moved = model(input_ids=perturbed, position_ids=batch["position_ids"]).logits
        losses[impl] = out.loss.item()
        assert torch.equal(moved[0, a_end:], out.logits[0, a_end:]), f"{impl}: a token of A changed another example"
        assert (moved[0, a_end - 3 : a_end] - out.logits[0, a_end - 3 : a_end]).abs().max() > 1e-3, impl
    # float32 on CPU: the kernels differ only in summation order
    assert rel_diff(losses["sdpa"], losses["eager"]) < 1e-5, losses
    assert rel_diff(losses["flex_attention"], losses["eager"]) < 1e-5, losses


@pytest.mark.slow
def test_gradient_checkpointing_gives_the_same_run(tmp_path, reference_run):
    out = tmp_path / "ckpt"
    proc = run_cli(
        "train", DEFAULT_CONFIG, "--output-dir", out, *SHORT, "--set", "training.gradient_checkpointing=true"
    )
    assert "gradient_checkpointing" in proc.stdout
    ours, ref = read_json(out / "summary.json"), read_json(reference_run / "summary.json")
    assert ours["steps"] == ref["steps"] == 60
    assert rel_diff(ours["train_loss"], ref["train_loss"]) < 1e-5, (ours["train_loss"], ref["train_loss"])
    assert rel_diff(ours["eval_loss"], ref["eval_loss"]) < 1e-5, (ours["eval_loss"], ref["eval_loss"])


@pytest.mark.slow
@pytest.mark.skipif(resolve_module.cxx_compiler() is None, reason=NO_CXX)
def test_compiled_run_on_cpu_matches_and_really_compiles(tmp_path, reference_run, monkeypatch):
    cache = tmp_path / "inductor"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(cache))
    out = tmp_path / "compiled"
    run_cli("train", DEFAULT_CONFIG, "--output-dir", out, *SHORT, "--set", "training.compile=true", timeout=900)
    ours, ref = read_json(out / "summary.json"), read_json(reference_run / "summary.json")
    assert ours["status"] == "completed" and ours["steps"] == 60
    assert rel_diff(ours["eval_loss"], ref["eval_loss"]) < 0.01, (ours["eval_loss"], ref["eval_loss"])
    compiled = [p for p in cache.rglob("*") if p.suffix in (".so", ".cpp", ".py") and p.stat().st_size]
    assert compiled, f"inductor wrote no kernels under {cache}: the model was not compiled"


def test_qlora_quantizes_every_projection_of_a_model_built_from_config():
    """model.config + QLoRA: the fresh weights are saved and loaded back through bitsandbytes' quantizer."""
    from bitsandbytes.nn import Linear4bit

    from finetune.modeling import build_model

    cfg = cfg_with("lora.enabled=true", "lora.quantization=4bit")
    model = build_model(cfg, resolve(cfg, cuda=False), build_char_tokenizer(["reverse: abc cba"]))
    quantized = [n for n, m in model.named_modules() if isinstance(m, Linear4bit)]
    assert len(quantized) == 2 * 7, f"every attention and MLP projection of both layers in 4 bit: {quantized}"
    assert all(p.requires_grad == ("lora_" in n) for n, p in model.named_parameters()), "only the adapters train"
    # an evaluation (exact match runs before training) must leave the 4-bit weights as training reads them
    before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    model.eval()
    with torch.no_grad():
        model(input_ids=torch.tensor([[1, 2, 3, 4]]))
    model.train()
    changed = [n for n, p in model.named_parameters() if n in before and not torch.equal(before[n], p.detach())]
    assert not changed, f"bitsandbytes repacked these for inference and training would misread them: {changed}"


@pytest.mark.slow
def test_qlora_4bit_on_a_pretrained_directory_learns_on_cpu(tmp_path, reference_run):
    """QLoRA as users run it: a saved model loaded in NF4 through bitsandbytes (its CPU backend here), adapters on
    every projection, trained further; the eval loss must improve on the model it started from."""
    out = tmp_path / "qlora"
    proc = run_cli(
        "train", DEFAULT_CONFIG, "--output-dir", out, *SHORT,
        "--set", "model.config=null", "--set", f"model.name_or_path={reference_run / 'model'}",
        "--set", "tokenizer.build_from_data=false", "--set", "lora.enabled=true", "--set", "lora.quantization=4bit",
        "--set", "lora.target_modules=[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]",
        "--set", "training.learning_rate=1e-2",
    )  # fmt: skip
    assert "4bit base" in proc.stdout
    qlora, base = read_json(out / "summary.json"), read_json(reference_run / "summary.json")
    assert qlora["eval_loss"] < base["eval_loss"], (qlora["eval_loss"], base["eval_loss"])
    assert (out / "model" / "adapter_config.json").exists()
    run_cli("generate", out, "reverse: abc")  # the adapter loads back through PEFT


@pytest.mark.slow
def test_8bit_adamw_trains_on_cpu(tmp_path, reference_run):
    out = tmp_path / "adam8"
    run_cli("train", DEFAULT_CONFIG, "--output-dir", out, *SHORT, "--set", "training.optimizer=adamw_8bit")
    assert read_json(out / "manifest.json")["resolved"]["optimizer"] == "adamw_8bit"
    ours, ref = read_json(out / "summary.json"), read_json(reference_run / "summary.json")
    # 8-bit moments are an approximation: close to fp32 AdamW, not equal
    assert rel_diff(ours["eval_loss"], ref["eval_loss"]) < 0.05, (ours["eval_loss"], ref["eval_loss"])
