"""benchmarks/pref_bench.py: dpo and grpo, `finetune train` against TRL's own example scripts. No training here: its
command line, the commands it builds for both tools (TRL's own parser reads the flags into exactly the training
arguments our run builds from the same config), the reward functions it hands TRL's grpo script, the figures it reads
from a finished run's files, the probe's split of a step, and its tables from a fixed report. The real runs are in
benchmarks/README.md ("DPO and GRPO against TRL's own scripts")."""

from __future__ import annotations

import json

import pytest

from benchmarks import pref_bench, pref_probe, pref_report
from benchmarks.runner import main as runner
from conftest import REPO
from finetune.config import load_config
from finetune.resolve import Settings


def cpu_settings(cfg) -> Settings:
    """What resolve() gives these configs on a CPU (resolve itself wants model.from_run to exist)."""
    return Settings("cpu", "fp32", "float32", "sdpa", "adamw_fused", cfg.training.batch_size, "preference_accuracy")


def task_config(task: str, steps: int = 12):
    return load_config(REPO / pref_bench.CONFIGS[task], [f"training.max_steps={steps}"])


def test_help_says_what_is_compared_and_how(capsys):
    with pytest.raises(SystemExit) as info:
        runner(["pref_bench", "--help"])
    assert info.value.code == 0
    shown = capsys.readouterr().out
    assert shown.startswith("usage: python -m benchmarks pref_bench ")
    for words in ("trl/scripts/dpo.py", "train_runtime", "OMP_NUM_THREADS", "load average", "--probe-runs", "fp32"):
        assert words in shown, words
    args = pref_bench.parse_args([])
    assert (args.tasks, args.steps, args.repeat, args.probe_runs, args.threads) == (["dpo", "grpo"], 60, 2, 1, 1)


@pytest.mark.parametrize("argv", [["--tasks", "kto"], ["--repeat", "0"], ["--probe-runs", "-1"], ["--steps", "0"]])
def test_bad_arguments_are_a_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as info:
        pref_bench.parse_args(argv)
    assert info.value.code == 2


def test_ours_is_the_config_with_its_steps_set(tmp_path):
    command = pref_bench.ours_command("configs/dpo.yaml", 40, ["training.save_steps=40"], tmp_path / "run")
    assert command[0].endswith("finetune") and command[1:3] == ["train", "configs/dpo.yaml"]
    assert command[3:] == ["--set", "training.max_steps=40", "--set", "training.save_steps=40", "--output-dir",
                           str(tmp_path / "run")]  # fmt: skip


def test_both_tools_run_in_one_environment():
    env = pref_bench.child_env(1, "configs/grpo.yaml", ["reward.weights=[1,1]"])
    assert (env["OMP_NUM_THREADS"], env["MKL_NUM_THREADS"], env["CUDA_VISIBLE_DEVICES"]) == ("1", "1", "")
    assert env["HF_HUB_OFFLINE"] == env["HF_DATASETS_OFFLINE"] == "1"
    assert env["PREF_BENCH_GRPO_CONFIG"] == "configs/grpo.yaml"  # for benchmarks/pref_rewards.py in TRL's script
    assert env["PREF_BENCH_GRPO_SET"] == '["reward.weights=[1,1]"]'
    assert "PREF_BENCH_GRPO_CONFIG" not in pref_bench.child_env(2, None, [])


def test_a_config_that_cannot_run_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    argv = ["--dry-run", "--tasks", "dpo", "--set", "model.from_run=runs/not-made", "--out", str(tmp_path / "r.json")]
    assert pref_bench.main(pref_bench.parse_args(argv)) == 2
    err = capsys.readouterr().err
    assert err.startswith("pref_bench: --set model.from_run: runs/not-made is not a finished run")
    assert err.count("\n") == 1


def test_flags_are_written_as_trls_parser_reads_them():
    flags = {"bf16": False, "reward_funcs": ["a.b", "a.c"], "reward_weights": [0.5, 0.5], "beta": 0.1}
    assert pref_bench.flag_args(flags) == [
        "--bf16", "False", "--reward_funcs", "a.b", "a.c", "--reward_weights", "0.5", "0.5", "--beta", "0.1",
    ]  # fmt: skip


@pytest.mark.parametrize("task", ["dpo", "grpo"])
def test_trls_script_gets_the_training_arguments_our_run_builds(task, tmp_path):
    """The flags, read by TRL's own script parser, give field for field the TRL config finetune.prefrun builds from
    the same config (the extras as build_trainer adds them): fp32, no activation checkpointing, same batch, ..."""
    import trl
    from trl.scripts import dpo, grpo

    from finetune import rewards
    from finetune.run import training_arguments

    cfg = task_config(task)
    settings = cpu_settings(cfg)
    flags = pref_bench.trl_flags(cfg, settings, tmp_path / "data", tmp_path / "run")
    parsed = {"dpo": dpo, "grpo": grpo}[task].make_parser().parse_args_and_config(pref_bench.flag_args(flags))
    script_args, theirs = parsed[0], parsed[1]
    extra = {"beta": cfg.preference.beta}
    if task == "grpo":
        g = cfg.grpo
        extra |= dict(num_generations=g.num_generations, max_completion_length=g.max_completion_length,
                      temperature=g.temperature, reward_weights=rewards.weights(cfg.reward))  # fmt: skip
    else:
        extra["max_length"] = cfg.data.max_length
    config_class = {"dpo": trl.DPOConfig, "grpo": trl.GRPOConfig}[task]
    ours = training_arguments(cfg, settings, tmp_path / "run", False, config_class, **extra)
    assert type(theirs) is type(ours)
    a, b = ours.to_dict(), theirs.to_dict()
    assert {k: (a[k], b.get(k)) for k in a if a[k] != b.get(k)} == {}
    assert (b["bf16"], b["fp16"], b["activation_checkpointing"], b["max_steps"]) == (False, False, False, 12)
    assert script_args.dataset_name == str(tmp_path / "data")
    expected_model = {"dpo": "runs/default/model", "grpo": "runs/default-200/model"}[task]
    assert parsed[2].model_name_or_path == expected_model and parsed[2].dtype == "float32"
    if task == "grpo":
        assert script_args.reward_funcs == ["benchmarks.pref_rewards.exact_match", "benchmarks.pref_rewards.char_match"]


def test_trls_grpo_script_gets_our_reward_functions(monkeypatch):
    """The dotted paths TRL's script imports are finetune.rewards' functions of the same config, under their names."""
    import importlib

    monkeypatch.chdir(REPO)
    monkeypatch.setenv("PREF_BENCH_GRPO_CONFIG", "configs/grpo.yaml")
    monkeypatch.setenv("PREF_BENCH_GRPO_SET", "[]")
    module = importlib.import_module("benchmarks.pref_rewards")
    monkeypatch.setattr(module, "_FUNCTIONS", {})
    exact, chars = module.exact_match, module.char_match
    assert (exact.__name__, chars.__name__) == ("exact_match", "char_match")  # TRL logs rewards/<__name__>/mean
    completions = [[{"role": "assistant", "content": "cba"}], [{"role": "assistant", "content": "cbx"}]]
    assert exact(None, completions, reference=["cba", "cba"]) == [1.0, 0.0]
    assert chars(None, completions, reference=["cba", "cba"]) == [1.0, pytest.approx(2 / 3)]
    with pytest.raises(AttributeError, match="the config's: exact_match, char_match"):
        module.format  # noqa: B018
    assert pref_bench.trl_flags(task_config("grpo"), cpu_settings(task_config("grpo")), REPO, REPO)[
        "reward_weights"
    ] == [0.5, 0.5]


def test_the_rows_trl_reads_are_the_rows_our_run_trains_on(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    grpo = pref_bench.write_rows(task_config("grpo"), tmp_path / "grpo")
    rows = [json.loads(line) for line in (tmp_path / "grpo" / "train.jsonl").read_text().splitlines()]
    assert grpo["rows"] == len(rows) == 4000 and not grpo["same_rows_as_source_file"]  # made from the chat rows
    assert rows[0] == {"prompt": [{"role": "user", "content": "reverse: daczsb"}], "reference": "bszcad"}
    dpo = pref_bench.write_rows(task_config("dpo"), tmp_path / "dpo")
    assert dpo["rows"] == 1000 and dpo["same_rows_as_source_file"]  # the dpo file is in TRL's layout already


TRL_LOG = """Tokenizing train dataset: 100%|##| 1000/1000
{'loss': '0.6931', 'grad_norm': '1.2', 'epoch': '0.08'}
{'train_runtime': '5.437', 'train_samples_per_second': '176.6', 'train_steps_per_second': '11.04', 'train_loss': '0.6392', 'epoch': '0.96'}
"""  # noqa: E501


def test_a_finished_runs_figures_are_read_from_its_own_files(tmp_path):
    logged = [{"step": 5, "loss": 0.69, "step_time": 0.2, "reward": 0.3},
              {"step": 10, "loss": 0.5, "step_time": 0.4, "reward": 0.4}]  # fmt: skip
    state = {"global_step": 60, "log_history": logged}
    for name in ("ours", "trl"):
        (tmp_path / name / "checkpoint-20").mkdir(parents=True)
        (tmp_path / name / "checkpoint-60").mkdir(parents=True)
        (tmp_path / name / "checkpoint-60" / "trainer_state.json").write_text(json.dumps(state))
    (tmp_path / "ours" / "summary.json").write_text(json.dumps({"train_seconds": 4.0, "train_loss": 0.6, "steps": 60}))
    (tmp_path / "trl.log").write_text(TRL_LOG)
    ours = pref_bench.read_run("ours", tmp_path / "ours", tmp_path / "ours.log")
    theirs = pref_bench.read_run("trl", tmp_path / "trl", tmp_path / "trl.log")
    assert (ours["steps"], ours["train_s"], ours["steps_per_s"]) == (60, 4.0, 15.0)
    assert (theirs["steps"], theirs["train_s"], theirs["train_loss"]) == (60, 5.437, 0.6392)
    assert theirs["logged_steps"] == [5, 10] and theirs["logged_reward"] == [0.3, 0.4]
    assert theirs["trl_step_time_s"] == pytest.approx(0.3)


PROBE = {
    "init_begin": 105.0, "init_end": 106.0, "train_begin": 107.0, "train_end": 111.0, "save_begin": 112.0,
    "save_end": 112.5, "checkpoints": [0.2, 0.3], "train_begin_cpu": 7.0, "train_end_cpu": 10.5,
    "steps": [{"step": 1, "seconds": 2.0, "cpu": 1.5, "generate_and_score": 1.0, "generate": 0.6, "rewards": 0.1},
              {"step": 2, "seconds": 1.0, "cpu": 0.9, "generate_and_score": 0.5, "generate": 0.3, "rewards": 0.1}],
}  # fmt: skip


def test_the_probe_splits_a_grpo_step_and_the_whole_command():
    run = {"started": 100.0, "ended": 114.0, "wall_s": 14.0, "trl_step_time_s": 1.4}
    p = pref_report.split(PROBE, run)
    assert (p["step_cpu_s"], p["loop_cpu_s"]) == (pytest.approx(1.2), 3.5)
    assert p["step_s"] == 1.5 and p["sampling_s"] == pytest.approx(0.45) and p["scoring_s"] == pytest.approx(0.3)
    assert p["training_s"] == pytest.approx(0.75) and p["rewards_s"] == pytest.approx(0.1)
    assert (p["loop_s"], p["checkpoints_s"], p["other_in_loop_s"]) == (4.0, 0.5, pytest.approx(0.5))
    parts = [p[k] for _, k in pref_report.TIMELINE[:-1]]
    assert parts == [5.0, 1.0, 1.0, 4.0, 1.0, 0.5, 1.5] and sum(parts) == p["wall_s"]
    dpo = pref_report.split({**PROBE, "steps": [{"step": 1, "seconds": 0.1, "cpu": 0.1}]}, run)
    assert dpo["sampling_s"] is None and dpo["training_s"] == 0.1
    assert "error" in pref_report.split({"steps": []}, run)


def test_the_probe_runs_a_command_as_its_own_process_would(tmp_path, capsys, monkeypatch):
    import trl
    from transformers import Trainer

    clocked = [(Trainer, "train"), (Trainer, "save_model"), (trl.DPOTrainer, "__init__"), (trl.GRPOTrainer, "__init__")]
    clocked += [(trl.GRPOTrainer, name) for name in pref_probe.GRPO_METHODS]
    for owner, name in clocked:  # put back after the test: the clocks stay out of the other tests in this process
        monkeypatch.setattr(owner, name, getattr(owner, name))
    assert pref_probe.main(["out.json"]) == 2  # no command
    script = tmp_path / "script.py"
    script.write_text("import sys\nprint('ran as', __name__, sys.argv[1:])\n")
    assert pref_probe.main([str(tmp_path / "probe.json"), "--", "python3", str(script), "--flag", "1"]) == 0
    assert capsys.readouterr().out.strip() == "ran as __main__ ['--flag', '1']"
    assert all(hasattr(getattr(owner, name), "__wrapped__") for owner, name in clocked)


def fixed_report() -> dict:
    def run(tool, name, wall, train, probe=False):
        return {"task": "grpo", "tool": tool, "name": f"grpo-{tool}-{name}", "probe": probe, "exit_code": 0,
                "wall_s": wall, "cpu_s": wall / 2, "train_s": train, "steps": 60, "steps_per_s": 60 / train,
                "trl_step_time_s": 0.1, "loadavg_start": [1.5, 1, 1], "loadavg_end": [2.25, 1, 1]}  # fmt: skip

    runs = [run("ours", "1", 20.0, 10.0), run("trl", "1", 10.0, 8.0), run("ours", "2", 22.0, 12.0),
            run("trl", "2", 12.0, 12.0), run("ours", "probe1", 30.0, 9.0, True)]  # fmt: skip
    runs[-1]["probe_split"] = pref_report.split(PROBE, {"started": 100.0, "ended": 114.0, "wall_s": 14.0})
    matched = {
        "threads": 1, "model": "runs/default-200/model",
        "data_rows": {"rows": 4000, "source": "data/reversal/train.jsonl", "sha256": "ab" * 32,
                      "trl_reads_same_rows": True},
        "steps": {"requested": 60, "ours": [60, 60, 60], "trl": [60, 60]},
        "precision": {t: {"bf16": False, "fp16": False, "model_dtype": "float32"} for t in ("ours", "trl")},
        "training_args": {"fields_compared": 191, "differ": {"output_dir": {}}, "unexpected": []},
        "logged": {"steps": [5, 10], "same_steps": True, "max_loss_difference": 0.0},
    }  # fmt: skip
    environment = {"cpu": "test CPU", "cpu_count": 2, "torch": "2", "transformers": "5", "loadavg_start": [1.0],
                   "loadavg_end": [3.0]}  # fmt: skip
    task = {"runs": runs, "matched": matched, "summary": pref_report.summarize(runs)}
    return {"created": "2026-12-05", "command": ["python", "-m", "benchmarks", "pref_bench"],
            "environment": environment, "tasks": {"grpo": task}}  # fmt: skip


def test_the_tables_come_from_the_report_alone(capsys):
    data = fixed_report()
    s = data["tasks"]["grpo"]["summary"]
    assert s["median"]["ours"]["train_s"] == 11.0 and s["median"]["trl"]["train_s"] == 10.0  # probe runs left out
    assert s["median"]["ours"]["runs"] == 2
    assert s["ratio_wall_s"] == pytest.approx(21 / 11) and s["ratio_train_s"] == pytest.approx(1.1)
    assert s["ratio_cpu_s"] == pytest.approx(21 / 11)
    assert s["paired_steps_per_s"] == [pytest.approx(0.8), pytest.approx(1.0)]
    pref_report.print_report(data)
    out = capsys.readouterr().out
    assert "| ours (finetune train) |    2 |    60 |   21.0 |  10.5 |   11.00 |    5.50 |               0.88x |" in out
    assert "grpo: steps/s ours/theirs 0.80, 1.00; wall ours/theirs 2.00, 1.83; cpu ours/theirs 2.00, 1.83" in out
    assert "read back by TRL's datasets unchanged: yes" in out and "(unexpected: none)" in out
    assert "load average at start 1.00, at end 3.00" in out and "|          1.50 |        2.25" in out
    assert "|     2 |  1.500 |      1.200 |" in out and "|   4.00 |       3.50" in out  # step and loop, cpu
    assert "0.450 (30%)" in out and "0.300 (20%)" in out and "0.750 (50%)" in out  # sampling, scoring, training
    assert "|             5.00 |         1.00 |            1.00 | 4.00 |" in out  # the time line's first parts
