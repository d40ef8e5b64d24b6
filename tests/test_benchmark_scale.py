"""benchmarks/scale.py: real model shapes, synthetic chat data with a real-size vocabulary, ours vs a plain Trainer.

The quick tests check the pieces the GPU figures rest on (tokenizer size, the pipelines' tokenization of the synthetic
data, parameter counts, FLOPs and the GPU peak table); the slow one runs the whole benchmark on a tiny shape on CPU
(a smoke test: both pipelines train, nothing is timed for real).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from benchmarks import scale, scale_experiments, scale_plan, scale_report, scale_shapes, synthetic
from conftest import REPO, cli_env
from finetune import features
from finetune.datafiles import Record

SCALE = REPO / "benchmarks" / "scale.py"


def test_synthetic_tokenizer_has_the_real_vocabulary_and_the_chat_template_works():
    vocab = scale_shapes.SHAPES["qwen2.5-0.5b"]["vocab_size"]
    tok = synthetic.build_tokenizer(vocab)
    assert len(tok) == vocab == 151936
    conversations = synthetic.make_conversations(0, 40, vocab, median=400, sigma=1.0, cap=4096)
    assert any(len(c) > 2 for c in conversations), "no multi-turn conversation in the sample"
    records = [Record(line=i + 1, messages=c) for i, c in enumerate(conversations)]
    examples, stats = features.tokenize_causal(tok, records, 4096)  # runs features._segments' prefix checks
    assert stats == {"truncated": 0, "dropped": 0}
    for messages, ex in zip(conversations, examples):
        assert len(ex["input_ids"]) == synthetic.conversation_tokens(messages)  # one word = one token
        # the loss is on every assistant turn's words and its <|end|>, on nothing else
        answers = sum(len(m["content"].split()) + 1 for m in messages if m["role"] == "assistant")
        assert sum(label != features.IGNORE for label in ex["labels"]) == answers
        assert tok.unk_token_id not in ex["input_ids"]


def test_synthetic_lengths_are_log_normal_around_the_median_and_capped():
    import numpy as np

    lengths = synthetic.sample_lengths(np.random.default_rng(0), 4000, median=400, sigma=1.0, cap=4096)
    assert 370 <= sorted(lengths)[len(lengths) // 2] <= 430
    assert max(lengths) == 4096 and min(lengths) >= 16
    assert synthetic.attention_span([10, 30]) == (100 + 900) / 40


@pytest.mark.parametrize("name", sorted(scale_shapes.SHAPES))
def test_parameter_formula_matches_the_built_model(name):
    shape = dict(scale_shapes.SHAPES[name])
    config = AutoConfig.for_model(shape.pop("model_type"), **shape)
    with torch.device("meta"):  # shapes only: no memory, no init
        model = AutoModelForCausalLM.from_config(config)
    counted = scale_shapes.count_params(model)
    analytic = scale_shapes.analytic_params(scale_shapes.SHAPES[name])
    assert counted["total"] == analytic["total"]
    assert counted["matmul"] == analytic["matmul"]
    assert counted["tied"] == analytic["tied"]


def test_parameter_counts_match_the_published_model_cards():
    # Qwen2.5 model cards: 0.49B parameters (0.36B non-embedding); Qwen2.5(-Coder)-1.5B: 1.54B (1.31B non-embedding)
    for name, total, non_embedding in [("qwen2.5-0.5b", 0.49, 0.36), ("qwen2.5-1.5b", 1.54, 1.31)]:
        p = scale_shapes.analytic_params(scale_shapes.SHAPES[name])
        assert round(p["total"] / 1e9, 2) == total
        assert round((p["total"] - p["embedding"]) / 1e9, 2) == non_embedding


def test_flops_and_gpu_peaks():
    shape = scale_shapes.SHAPES["llama-3.1-8b"]
    p = scale_shapes.analytic_params(shape)
    assert not p["tied"] and p["matmul"] == p["total"] - p["embedding"]  # untied input embedding left out
    full = scale_shapes.flops_per_token(shape, p["matmul"], p["matmul"], span=1000)
    assert full == 6 * p["matmul"] + 12 * 32 * 32 * 128 * 1000
    lora = scale_shapes.flops_per_token(shape, p["matmul"] + 10, 10, span=1000)
    assert lora == 4 * (p["matmul"] + 10) + 2 * 10 + 12 * 32 * 32 * 128 * 1000
    assert scale_shapes.peak_flops("NVIDIA H100 80GB HBM3") == 989.4e12
    assert scale_shapes.peak_flops("NVIDIA H100 PCIe") == 756e12
    assert scale_shapes.peak_flops("NVIDIA H100 NVL") == 835e12
    assert scale_shapes.peak_flops("NVIDIA H200") == 989.4e12
    assert scale_shapes.peak_flops("NVIDIA GH200 480GB") is None
    assert scale_shapes.peak_flops("Tesla T4") is None and scale_shapes.peak_flops(None) is None


def test_variants():
    assert scale_plan.variant_settings("base") == scale_plan.BASE
    v = scale_plan.variant_settings("+flex+liger")
    assert v["model.attn_implementation"] == "flex_attention" and v["training.liger_kernel"] is True
    assert scale_plan.variant_settings("+flex")["training.optimizer"] == "auto"


@pytest.mark.slow
def test_scale_smoke_on_cpu(tmp_path):
    out = tmp_path / "scale.json"
    cmd = [sys.executable, str(SCALE), "--model", "tiny", "--steps", "3", "--seq-len", "256", "--median-tokens", "40"]
    cmd += ["--tokens-per-step", "512", "--out", str(out)]
    started = time.time()
    proc = subprocess.run(cmd, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    print(f"scale.py smoke: {time.time() - started:.1f} s")
    assert "ours/plain" in proc.stdout

    report = json.loads(out.read_text())
    assert {"benchmark", "created", "command", "environment", "settings", "peak_bf16_flops", "mfu_definition"} <= set(
        report
    )
    assert {"budgets", "budget_tolerance", "budget_checks", "runs", "fit_table"} <= set(report)
    env = report["environment"]
    assert {"torch", "transformers", "peft", "gpu", "git_commit", "cpu"} <= set(env)
    gpu = env["gpu"]

    runs = report["runs"]
    assert sorted(r["pipeline"] for r in runs) == ["ours", "plain"], runs
    budget = report["budgets"]["tiny"]
    for r in runs:
        assert r["status"] == "ok", r
        assert r["steps"] == 3 and r["timed"]["steps"] == 2  # one warm-up step left out
        assert len(r["step_seconds"]) == 3 and sum(r["step_tokens"]) == r["tokens_trained"]
        assert r["steady_tokens_per_second"] > 0 and r["setup_seconds"] > 0
        assert r["tokens_per_second"] > 0 and r["timed"]["seconds"] > 0
        assert "mfu" in r and ((r["mfu"] is None) if gpu is None or report["peak_bf16_flops"] is None else r["mfu"] > 0)
        assert ("peak_memory_gib" in r) and ((r["peak_memory_gib"] is None) == (gpu is None))
        assert r["n_matmul_counted"] == r["n_matmul"]  # the FLOPs formula's N is the built model's
        assert r["flops_per_token"] > 6 * r["n_matmul"]
    ours = next(r for r in runs if r["pipeline"] == "ours")
    plain = next(r for r in runs if r["pipeline"] == "plain")
    assert ours["resolved"]["attn_implementation"] == "sdpa"  # "base": packing, no lever
    assert plain["tokens_trained"] == round(budget["examples"] * budget["example_tokens_mean"])  # exactly one epoch
    assert ours["ratio_vs_plain"] == pytest.approx(ours["tokens_per_second"] / plain["tokens_per_second"])

    # equal real tokens per optimizer step: planned and measured, within the stated tolerance
    tol = report["budget_tolerance"]
    assert tol == 0.05
    assert budget["planned_difference"] <= 0.01  # the planner scales the lengths' median until within 1%
    assert budget["plain_micro_batch"] == 4 and 0.8 <= budget["median_scale"] <= 1.25
    assert report["budget_checks"] and all(c["ok"] for c in report["budget_checks"])
    assert abs(ours["tokens_per_step"] - plain["tokens_per_step"]) <= tol * plain["tokens_per_step"]

    # --print shows the saved report's tables again, exactly as the run printed them, without running anything
    cmd = [sys.executable, str(SCALE), "--print", str(out)]
    printed = subprocess.run(cmd, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=60)
    assert printed.returncode == 0, printed.stderr[-3000:]
    first, tables = printed.stdout.split("\n", 1)
    assert first.startswith(f"{out}: ") and first.endswith(", complete")
    assert "ours/plain" in tables and tables in proc.stdout


def invocation(args, tmp_path, fake_spawn) -> scale_experiments.Invocation:
    """A CPU invocation of 3 steps after 1 of warm-up, its report in tmp_path, its runs started by fake_spawn."""
    args.steps, args.warmup_steps = 3, 1
    report = scale_report.Report(tmp_path / "scale.json", {"gpu": None, "cpu": "test"}, scale.settings(args), None)
    return scale_experiments.Invocation(args, {}, tmp_path, tmp_path, report, on_gpu=False, spawn=fake_spawn)


def test_plain_trainer_retries_at_half_the_micro_batch_after_an_oom(tmp_path):
    """A plain run that runs out of GPU memory is tried again at half the micro-batch (data re-planned to the same
    tokens per step), and ours runs on the final plan's data and is compared with the plain run that finished."""
    args = scale.parse_args(
        ["--model", "tiny", "--seq-len", "256", "--median-tokens", "40", "--tokens-per-step", "512"]
    )
    args.variants = ["base"]
    calls = []

    def fake_spawn(spec, log, timeout):
        calls.append(spec)
        if spec["pipeline"] == "plain" and spec["examples_per_step"] // spec["grad_accum"] == 4:
            return {"status": "oom", "error": "OutOfMemoryError: fake", "peak_memory_gib": 70.0, "process_seconds": 1}
        timed = {"steps": 2, "tokens_per_second": 100.0 if spec["pipeline"] == "plain" else 300.0, "stalled_steps": 0}
        timed["steady_tokens_per_second"] = timed["tokens_per_second"]
        return {
            "status": "ok",
            "timed": timed,
            "tokens_trained": 1500,
            "steps": 3,
            "params": {},
            "setup_seconds": 1,
            "process_seconds": 1,
        }

    run = invocation(args, tmp_path, fake_spawn)
    scale_experiments.compare_model("tiny", run)
    budgets, comparison = run.report.budgets, run.report.runs
    assert [(c["pipeline"], c.get("examples_per_step", 0) // c.get("grad_accum", 1)) for c in calls][:2] == [
        ("plain", 4),
        ("plain", 2),
    ]
    assert [r["label"] for r in comparison] == ["plain Trainer mb4", "plain Trainer mb2", "ours base"]
    assert budgets["tiny"]["plain_micro_batch"] == 2
    assert calls[2]["config"]["data"]["train_file"] == budgets["tiny"]["train_file"]  # ours on the final data
    assert comparison[2]["ratio_vs_plain"] == 3.0 and comparison[2]["plain_label"] == "plain Trainer mb2"


def test_quick_preset_trims_the_gpu_defaults_and_explicit_flags_win(monkeypatch):
    monkeypatch.setattr(scale, "gpu_visible", lambda: True)
    full, quick = scale.parse_args([]), scale.parse_args(["--quick"])
    assert (full.steps, full.warmup_steps, full.worker_timeout) == (10, 3, 300)
    assert full.variants == ["base", "+flex", "+flex+liger"]
    assert (quick.steps, quick.warmup_steps, quick.worker_timeout) == (6, 3, 120)
    assert quick.variants == ["base", "+flex+liger"]
    assert quick.model == full.model == ["qwen2.5-0.5b", "llama-3.2-1b"]
    assert quick.plain_micro_batch == full.plain_micro_batch == 4 and quick.fit_steps == full.fit_steps == 3
    assert full.plain_micro_batch_start == {} and quick.plain_micro_batch_start == {"llama-3.2-1b": 2}
    explicit = scale.parse_args(["--quick", "--steps", "8", "--variants", "base", "--worker-timeout", "50"])
    assert (explicit.steps, explicit.variants, explicit.worker_timeout) == (8, ["base"], 50)
    explicit = scale.parse_args(["--quick", "--plain-micro-batch", "8"])
    assert explicit.plain_micro_batch == 8 and explicit.plain_micro_batch_start == {}
    monkeypatch.setattr(scale, "gpu_visible", lambda: False)
    cpu = scale.parse_args(["--quick"])
    assert (cpu.model, cpu.steps, cpu.warmup_steps, cpu.variants) == (["tiny"], 3, 1, ["base"])
    assert scale.parse_args(["--print", "a.json", "b.json"]).print_files == ["a.json", "b.json"]


def test_quick_fit_table_stops_each_method_at_the_largest_shape_that_fits(tmp_path):
    """--quick --fit-table: per method, from the largest shape down until one fits (here as on today's H100: the
    8B full fine-tune runs out of memory, everything else fits); without --quick, every shape x method in order."""
    argv = ["--no-compare", "--fit-table", "--seq-len", "256", "--median-tokens", "40", "--tokens-per-step", "512"]
    calls = []

    def fake_spawn(spec, log, timeout):
        calls.append((spec["model"], spec["label"]))
        if (spec["model"], spec["label"]) == ("llama-3.1-8b", "fit full"):
            return {"status": "oom", "error": "OutOfMemoryError: fake", "peak_memory_gib": 75.3, "process_seconds": 1}
        timed = {"steps": 2, "tokens_per_second": 100.0, "steady_tokens_per_second": 100.0, "stalled_steps": 0}
        return {"status": "ok", "timed": timed, "tokens_trained": 1500, "steps": 3, "params": {}, "process_seconds": 1}

    def fit_table(args) -> dict:
        calls.clear()
        run = invocation(args, tmp_path, fake_spawn)
        scale_experiments.run_fit_table(run)
        return run.report.save(partial=False)

    quick = fit_table(scale.parse_args([*argv, "--quick"]))
    assert calls == [
        ("llama-3.1-8b", "fit full"),
        ("llama-3.2-3b", "fit full"),
        ("llama-3.1-8b", "fit lora"),
        ("llama-3.1-8b", "fit qlora"),
    ]
    assert set(quick["budgets"]) == {"fit:llama-3.1-8b", "fit:llama-3.2-3b"} and quick["settings"]["quick"]
    rows = scale_report.summary(quick).splitlines()[-2:]
    assert rows[0].startswith("llama-3.1-8b") and "OOM (peak 75.3 GiB)" in rows[0]
    assert rows[1].startswith("llama-3.2-3b") and rows[1].count("tok/s") == 1

    every = fit_table(scale.parse_args([*argv, "--fit-models", "llama-3.2-3b,llama-3.1-8b"]))
    shapes = ["llama-3.2-3b", "llama-3.1-8b"]
    assert calls == [(m, f"fit {method}") for m in shapes for method in scale_plan.FIT_METHODS]
    assert [r["status"] for r in every["fit_table"]] == ["ok", "ok", "ok", "oom", "ok", "ok"]


def test_quick_starts_a_models_plain_trainer_at_its_own_micro_batch(tmp_path):
    args = scale.parse_args(
        ["--model", "tiny", "--seq-len", "256", "--median-tokens", "40", "--tokens-per-step", "512"]
    )
    args.plain_micro_batch_start = {"tiny": 2}  # as --quick sets it for llama-3.2-1b on a GPU
    calls = []

    def fake_spawn(spec, log, timeout):
        calls.append(spec)
        return {"status": "error", "error": "RuntimeError: fake", "process_seconds": 1}

    run = invocation(args, tmp_path, fake_spawn)
    scale_experiments.compare_model("tiny", run)
    budgets = run.report.budgets
    assert calls[0]["examples_per_step"] // calls[0]["grad_accum"] == 2 and budgets["tiny"]["plain_micro_batch"] == 2
    assert [c["label"] for c in calls] == ["plain Trainer mb2", "ours base"]  # an error is not retried smaller


def test_no_plain_runs_only_ours_and_a_profile_labels_its_runs(tmp_path):
    args = scale.parse_args(
        ["--model", "tiny", "--seq-len", "256", "--median-tokens", "40", "--tokens-per-step", "512"]
        + ["--no-plain", "--profile", str(tmp_path / "prof"), "--variants", "base,+compile"]
    )
    calls = []

    def fake_spawn(spec, log, timeout):
        calls.append(spec)
        return {"status": "error", "error": "RuntimeError: fake", "process_seconds": 1}

    scale_experiments.compare_model("tiny", invocation(args, tmp_path, fake_spawn))
    assert [c["label"] for c in calls] == ["ours base (profiled)", "ours +compile (profiled)"]  # no plain run
    assert [c["profile"] for c in calls] == [
        str(tmp_path / "prof" / "tiny-base"),
        str(tmp_path / "prof" / "tiny-pcompile"),
    ]


def test_profile_breakdown_sorts_kernel_time_by_kind():
    """Kernel names as the H200 trace of 2026-12-04 has them; CPU-side events are not kernel time."""
    from benchmarks import scale_profile

    names = {
        "nvjet_sm90_tst_128x256_64x4_2x1_v_bz_coopA_NTN": ("matmul", 300),
        "triton_tem_fused_flex_attention_backward_mul_1": ("attention", 100),
        "void at::native::vectorized_elementwise_kernel<8, at::native::bfloat16_copy_kernel_cuda(": ("copies", 50),
        "void at::native::multi_tensor_apply_kernel<FusedOptimizerTensorListMetadata<4>>": ("optimizer", 20),
        "_rms_norm_backward_kernel": ("norms and activations", 10),
        "void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float>": (
            "other elementwise and reductions",
            5,
        ),
    }
    events = [{"cat": "kernel", "name": n, "dur": us} for n, (_, us) in names.items()]
    events += [{"cat": "cpu_op", "name": "aten::mm", "dur": 10_000}, {"cat": "kernel", "name": "no duration"}]
    out = scale_profile.breakdown({"traceEvents": events}, wall=0.001, steps=2)
    assert {scale_profile.kind_of(n) for n in names} == {kind for kind, _ in names.values()}
    assert all(scale_profile.kind_of(n) == kind for n, (kind, _) in names.items())
    assert out["kernel_seconds"] == pytest.approx(485e-6) and out["gpu_busy_share"] == pytest.approx(0.485)
    assert list(out["seconds_by_kind"])[:2] == ["matmul", "attention"]  # longest first
    assert out["top_kernels"][0]["name"].startswith("nvjet") and len(out["top_kernels"]) == len(names)
