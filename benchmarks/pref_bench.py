"""DPO and GRPO on CPU: `finetune train` against TRL's own example scripts on the same model, data and settings.

    .venv/bin/python -m benchmarks pref_bench --help

Each run is the command a user types, in its own subprocess: ours `finetune train CONFIG --set training.max_steps=N`,
theirs `python .../trl/scripts/{dpo,grpo}.py` with the flags that say what the config says (trl_flags). The runs
alternate (ours, theirs, ours, theirs, ...); the report (pref_report.py) gives their medians, the ratio ours/theirs,
what was checked equal, and, from one more run of each under benchmarks/pref_probe.py, where a step's time goes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from importlib.util import find_spec
from pathlib import Path

from benchmarks import pref_report, report
from benchmarks.cli import add_out, add_set, parser
from benchmarks.machine import REPO
from benchmarks.pref_rewards import CONFIG_ENV, SET_ENV, attribute

CONFIGS = {"dpo": "configs/dpo.yaml", "grpo": "configs/grpo.yaml"}  # task -> the config ours trains
TOOLS = ("ours", "trl")
# training arguments (the Trainer's saved training_args.bin) that differ between the two runs by design
EXPECTED_DIFFERENCES = {
    "output_dir": "each run writes its own folder",
    "model_init_kwargs": "TRL's script hands the model path and these to the trainer, which loads the model; ours "
    "loads the same model/ itself (float32, sdpa: the same dtype and attention, checked under precision)",
}

DESCRIPTION = """\
DPO and GRPO on CPU: our run against TRL's own example scripts (the ones pip installs with trl, trl/scripts/dpo.py
and grpo.py, what `trl dpo` / `trl grpo` run), same model, data and hyperparameters, each command in its own
subprocess, --repeat times, interleaved (ours, theirs, ours, theirs, ...):

  ours    finetune train configs/dpo.yaml --set training.max_steps=N --output-dir ...   (and configs/grpo.yaml)
  theirs  python .../trl/scripts/dpo.py --dataset_name DIR --model_name_or_path runs/default/model ...

Same work, checked after the runs and written to the JSON under "matched": the same model folder (the config's
model.from_run/model), the same rows (finetune.prefdata.read_rows of the config's train file, written as
DIR/train.jsonl: TRL's script reads --dataset_name with datasets.load_dataset(DIR), the json builder, train split;
grpo's rows are the prompt/reference pairs our run makes of the chat file; the rows TRL's datasets reads back are
compared with ours), the same steps (each run's last checkpoint's global_step), batch, learning rate, schedule,
seed, beta, max_length (dpo), num_generations, max_completion_length and temperature (grpo), checkpoints and logging
every save_steps and logging_steps as the config says, fp32 (TRL's configs default to bf16 and to activation
checkpointing: both are turned off, as ours has them), and the same reward functions with their weights
(benchmarks/pref_rewards.py hands TRL's --reward_funcs our very functions). Every field of the two runs' saved
training arguments is compared; the ones that differ are listed. Both log the same losses at the same steps when
the work is the same (same seed, data order and model): compared too.

Measured per run: wall s, the whole command from start to exit (imports, data, model, our held-out measurement
before and after training, saving, ...); cpu s, the CPU seconds it used (user + system: what it computed, much less
moved by the other work on the machine than wall s); train s, the training loop's own train_runtime (ours:
summary.json's train_seconds; TRL's: the train_runtime its log prints, 4 significant digits); steps/s = steps /
train s; the load average (os.getloadavg) at the start and end of each run. OMP_NUM_THREADS (and MKL_NUM_THREADS)
is --threads in both, CUDA_VISIBLE_DEVICES is empty (CPU), HF_HUB_OFFLINE=1 and HF_DATASETS_OFFLINE=1.

Then, unless --probe-runs 0, one more run of each command under benchmarks/pref_probe.py (clocks on the Trainer's
train and TRL's GRPOTrainer methods, none on finetune's code): each step's seconds, for grpo split into sampling
(GRPOTrainer._generate), scoring (the rest of _generate_and_score_completions: rewards, reference log-probabilities,
advantages) and training (forward, backward, optimizer), the checkpoints' seconds, and the time before and after the
training loop, with the process's CPU seconds of a step and of the loop. TRL 1.16's GRPOTrainer logs `step_time`
itself (its training_step: generation plus forward and backward, no optimizer step), no split; it is reported beside
the probe's figures."""

EPILOG = """\
examples:
  .venv/bin/python -m benchmarks pref_bench                     # dpo and grpo, 60 steps, 2 repeats, 1 probe run each
  .venv/bin/python -m benchmarks pref_bench --tasks grpo --steps 20 --repeat 3
  .venv/bin/python -m benchmarks pref_bench --dry-run           # the commands, nothing run
  .venv/bin/python -m benchmarks pref_bench --print benchmarks/results/pref_bench.json   # a report's tables again

needs: runs/default (make train) for dpo, runs/default-200 for grpo (finetune train configs/default.yaml --set
training.max_steps=200 --output-dir runs/default-200). The runs, their logs and the data TRL's scripts read go to
<out folder>/pref_bench/ (emptied first). On a shared host the figures are as noisy as the load average printed
beside each run: compare ratios from one invocation, not figures across invocations."""


# --- what each tool runs ---------------------------------------------------------------------------------------------


def trl_script(task: str) -> Path:
    """TRL's example script for the task, as pip installed it (trl/scripts/dpo.py, grpo.py)."""
    return Path(find_spec("trl").submodule_search_locations[0]) / "scripts" / f"{task}.py"


def finetune_command() -> str:
    """The `finetune` console script beside this interpreter (the venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "finetune"
    return str(beside) if beside.exists() else "finetune"


def ours_command(config: str, steps: int, overrides: list[str], run_dir: Path) -> list[str]:
    sets = [f"training.max_steps={steps}", *overrides]
    return [finetune_command(), "train", config, *[a for s in sets for a in ("--set", s)], "--output-dir", str(run_dir)]


def model_path(cfg) -> str:
    """What TRL's script loads: the run the config starts from (its model/), or the config's model name."""
    return str(Path(cfg.model.from_run) / "model") if cfg.model.from_run else cfg.model.name_or_path


def trl_flags(cfg, settings, data_dir: Path, run_dir: Path) -> dict:
    """TRL's script flags for what the config (and its resolved settings) make our run do: the keys
    finetune.run.training_arguments and finetune.prefrun.build_trainer set, with the same values."""
    from finetune import rewards
    from finetune.resolve import OPTIMIZERS

    t = cfg.training
    if cfg.lora.enabled or t.compile or t.liger_kernel or t.fsdp or settings.device != "cpu":
        raise SystemExit("pref_bench: compares full fine-tuning on CPU; lora, compile, liger_kernel and fsdp are not "
                         "mapped to TRL's script flags")  # fmt: skip
    flags = {
        "dataset_name": str(data_dir),
        "model_name_or_path": model_path(cfg),
        "output_dir": str(run_dir),
        "dtype": settings.dtype,
        "attn_implementation": settings.attn_implementation,
        "seed": cfg.seed,
        "data_seed": cfg.seed,
        "max_steps": t.max_steps,
        "num_train_epochs": t.epochs,
        "per_device_train_batch_size": settings.per_device_batch,
        "per_device_eval_batch_size": max(settings.per_device_batch, 8),
        "gradient_accumulation_steps": t.grad_accum,
        "learning_rate": t.learning_rate,
        "weight_decay": t.weight_decay,
        "warmup_steps": t.warmup_ratio,
        "lr_scheduler_type": t.lr_scheduler,
        "max_grad_norm": t.max_grad_norm,
        "optim": OPTIMIZERS[settings.optimizer],
        "logging_steps": t.logging_steps,
        "save_steps": t.save_steps,
        "save_total_limit": t.save_total_limit,
        "dataloader_drop_last": True,
        "dataloader_num_workers": t.num_workers,
        "remove_unused_columns": False,
        "use_cpu": True,
        "bf16": settings.precision == "bf16",  # TRL's configs default to True; ours is fp32 on CPU
        "fp16": settings.precision == "fp16",
        "activation_checkpointing": t.gradient_checkpointing,  # TRL's configs default to True
        "report_to": "none",
        "beta": cfg.preference.beta,
    }
    if cfg.task == "grpo":
        g = cfg.grpo
        functions = [f"benchmarks.pref_rewards.{attribute(n, i)}" for i, n in enumerate(cfg.reward.functions)]
        flags |= dict(num_generations=g.num_generations, max_completion_length=g.max_completion_length,
                      temperature=g.temperature, reward_funcs=functions,
                      reward_weights=rewards.weights(cfg.reward))  # fmt: skip
    else:
        flags["max_length"] = cfg.data.max_length
    return flags


def flag_args(flags: dict) -> list[str]:
    """--key value pairs as TRL's parser takes them: booleans True/False, lists as several values."""
    args = []
    for key, value in flags.items():
        values = value if isinstance(value, list) else [value]
        args += [f"--{key}", *(str(v) for v in values)]
    return args


def trl_command(task: str, flags: dict) -> list[str]:
    return [sys.executable, str(trl_script(task)), *flag_args(flags)]


def child_env(threads: int, grpo_config: str | None, overrides: list[str]) -> dict:
    """The environment of every run, both tools (with grpo's config for benchmarks/pref_rewards.py)."""
    rewards = {CONFIG_ENV: grpo_config, SET_ENV: json.dumps(overrides)} if grpo_config else {}
    return {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "CUDA_VISIBLE_DEVICES": "",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
        **rewards,
    }


# --- the data TRL's script reads -------------------------------------------------------------------------------------


def write_rows(cfg, data_dir: Path) -> dict:
    """The rows our run trains on (finetune.prefdata.read_rows), as DIR/train.jsonl for TRL's --dataset_name DIR."""
    from finetune import prefdata

    rows = prefdata.read_rows(cfg, "train")
    data_dir.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    (data_dir / "train.jsonl").write_text(text, encoding="utf-8")
    source = Path(cfg.data.train_file)
    same = source.suffix == ".jsonl" and [json.loads(x) for x in source.read_text().splitlines() if x.strip()] == rows
    return {
        "rows": len(rows),
        "sha256": hashlib.sha256(text.encode()).hexdigest(),
        "source": cfg.data.train_file,
        "written_as": str(data_dir / "train.jsonl"),
        "same_rows_as_source_file": same,
        "_rows": rows,  # for the read-back check, left out of the report
    }


def trl_reads_same_rows(data_dir: Path, rows: list[dict]) -> bool:
    """Whether datasets.load_dataset(DIR), as TRL's script calls it, gives back exactly our rows, in order."""
    import datasets

    datasets.disable_progress_bars()
    return datasets.load_dataset(str(data_dir), split="train").to_list() == rows


# --- one run ---------------------------------------------------------------------------------------------------------

TRAIN_RUNTIME = re.compile(r"'train_runtime': '?([0-9.eE+-]+)")
TRAIN_LOSS = re.compile(r"'train_loss': '?([0-9.eE+-]+)")


def execute(command: list[str], env: dict, log: Path) -> dict:
    """Run a command to its end, output to log; its wall seconds, its CPU seconds (user + system, of the process and
    the ones it waited for: what it computed, whatever else the machine ran) and the load average before and after."""
    load_start, started, usage = os.getloadavg(), time.time(), resource.getrusage(resource.RUSAGE_CHILDREN)
    begin = time.perf_counter()
    with log.open("w") as f:
        code = subprocess.run(command, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - begin
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - usage.ru_utime + after.ru_stime - usage.ru_stime
    return {"exit_code": code, "wall_s": wall, "cpu_s": cpu, "started": started, "ended": time.time(),
            "loadavg_start": list(load_start), "loadavg_end": list(os.getloadavg()), "log": str(log)}  # fmt: skip


def last_checkpoint(run_dir: Path) -> Path | None:
    found = [(int(p.name.split("-")[1]), p) for p in run_dir.glob("checkpoint-*") if p.name.split("-")[1].isdigit()]
    return max(found)[1] if found else None


def read_run(tool: str, run_dir: Path, log: Path) -> dict:
    """What a finished run says of itself: train seconds, steps, loss, and the losses and step_time it logged."""
    checkpoint = last_checkpoint(run_dir)
    state = json.loads((checkpoint / "trainer_state.json").read_text()) if checkpoint else {"log_history": []}
    logged = [h for h in state["log_history"] if "loss" in h]
    out = {
        "steps": state.get("global_step"),
        "logged_steps": [h["step"] for h in logged],
        "logged_loss": [h["loss"] for h in logged],
        "logged_reward": [h["reward"] for h in logged if "reward" in h],
        "trl_step_time_s": report.median([h["step_time"] for h in logged if "step_time" in h]),
    }
    if tool == "ours":
        summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
        out |= {"train_s": summary.get("train_seconds"), "train_loss": summary.get("train_loss"),
                "summary_steps": summary.get("steps"), "run_wall_s": summary.get("wall_seconds")}  # fmt: skip
    else:
        text = log.read_text(errors="replace")
        runtime, loss = TRAIN_RUNTIME.findall(text), TRAIN_LOSS.findall(text)
        out |= {"train_s": float(runtime[-1]) if runtime else None, "train_loss": float(loss[-1]) if loss else None}
    out["steps_per_s"] = out["steps"] / out["train_s"] if out["steps"] and out["train_s"] else None
    return out


def one_run(plan: dict, tool: str, name: str, probe: bool = False) -> dict:
    """One command of the plan in a fresh folder; with probe, under benchmarks/pref_probe.py."""
    work = plan["work"]
    run_dir, log = work / "runs" / name, work / "logs" / f"{name}.log"
    shutil.rmtree(run_dir, ignore_errors=True)
    command = plan["command"](tool, run_dir)
    probe_json = work / "logs" / f"{name}.probe.json"
    if probe:
        command = [sys.executable, "-m", "benchmarks.pref_probe", str(probe_json), "--", *command]
    result = {"task": plan["task"], "tool": tool, "name": name, "probe": probe, "command": command,
              **execute(command, plan["env"], log)}  # fmt: skip
    result |= read_run(tool, run_dir, log)
    result["run_dir"] = str(run_dir)
    if probe and probe_json.exists():
        result["probe_split"] = pref_report.split(json.loads(probe_json.read_text()), result)
    return result


# --- what was matched ------------------------------------------------------------------------------------------------


def training_args(path: Path) -> dict:
    import torch

    return torch.load(path, weights_only=False).to_dict()  # a TRL config object: needs the full unpickler


def matched(plan: dict, runs: list[dict]) -> dict:
    """What the two tools were checked to share, from the runs' own outputs (the first run of each)."""
    first = {tool: next(r for r in runs if r["tool"] == tool and not r["probe"]) for tool in TOOLS}
    dirs = {tool: Path(first[tool]["run_dir"]) for tool in TOOLS}
    saved = {"ours": dirs["ours"] / "model" / "training_args.bin", "trl": dirs["trl"] / "training_args.bin"}
    args = {tool: training_args(p) for tool, p in saved.items() if p.exists()}
    out = {"threads": plan["threads"], "model": plan["model"], "data_rows": plan["rows"]}
    if len(args) == 2:
        a, b = args["ours"], args["trl"]
        differ = {k: [a.get(k), b.get(k)] for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}
        out["training_args"] = {
            "fields_compared": len(set(a) | set(b)),
            "differ": {k: {"ours": v[0], "trl": v[1]} for k, v in differ.items()},
            "expected": {k: EXPECTED_DIFFERENCES[k] for k in differ if k in EXPECTED_DIFFERENCES},
            "unexpected": sorted(k for k in differ if k not in EXPECTED_DIFFERENCES),
        }
        keys = ["per_device_train_batch_size", "gradient_accumulation_steps", "max_steps", "learning_rate",
                "lr_scheduler_type", "seed", "beta", "max_length", "num_generations", "max_completion_length",
                "temperature", "reward_weights", "optim", "save_steps", "logging_steps", "bf16", "fp16",
                "activation_checkpointing", "use_cpu"]  # fmt: skip
        out["settings"] = {k: {"ours": a.get(k), "trl": b.get(k)} for k in keys if k in a or k in b}
    out["precision"] = {tool: {"bf16": args.get(tool, {}).get("bf16"), "fp16": args.get(tool, {}).get("fp16"),
                               "model_dtype": saved_dtype(dirs[tool], tool)} for tool in TOOLS}  # fmt: skip
    out["steps"] = {"requested": plan["steps"], **{t: [r["steps"] for r in runs if r["tool"] == t] for t in TOOLS}}
    out["processes"] = 1
    same_steps = first["ours"]["logged_steps"] == first["trl"]["logged_steps"]
    out["logged"] = {"steps": first["ours"]["logged_steps"], "same_steps": same_steps}
    for key in ("loss", "reward"):
        values = [first[t][f"logged_{key}"] for t in TOOLS]
        out["logged"][key] = dict(zip(TOOLS, values))
        largest = max((abs(x - y) for x, y in zip(*values)), default=None)
        out["logged"][f"max_{key}_difference"] = largest if same_steps else None
    return out


def saved_dtype(run_dir: Path, tool: str) -> str | None:
    config = (run_dir / "model" if tool == "ours" else run_dir) / "config.json"
    if not config.exists():
        return None
    data = json.loads(config.read_text())
    return data.get("dtype") or data.get("torch_dtype")


# --- the invocation --------------------------------------------------------------------------------------------------


def plan_task(task: str, args, work: Path) -> dict:
    """Config, settings, data and the two commands of one task."""
    from finetune.config import load_config
    from finetune.resolve import resolve

    config = getattr(args, f"{task}_config")
    cfg = load_config(config, [f"training.max_steps={args.steps}", *args.overrides])
    if cfg.task != task:
        raise SystemExit(f"pref_bench: {config} is a {cfg.task} config, not {task}")
    settings = resolve(cfg, 1, cuda=False)
    data_dir = work / "data" / task

    def command(tool: str, run_dir: Path) -> list[str]:
        if tool == "ours":
            return ours_command(config, args.steps, args.overrides, run_dir)
        return trl_command(task, trl_flags(cfg, settings, data_dir, run_dir))

    return {"task": task, "config": config, "steps": args.steps, "threads": args.threads, "work": work,
            "model": model_path(cfg), "cfg": cfg, "data_dir": data_dir, "command": command,
            "env": child_env(args.threads, config if task == "grpo" else None, args.overrides)}  # fmt: skip


def run_task(plan: dict, args) -> dict:
    rows = plan["rows"] = write_rows(plan["cfg"], plan["data_dir"])
    rows["trl_reads_same_rows"] = trl_reads_same_rows(plan["data_dir"], rows.pop("_rows"))
    runs = []
    for i in range(1, args.repeat + 1):
        for tool in TOOLS:
            runs.append(one_run(plan, tool, f"{plan['task']}-{tool}-{i}"))
            pref_report.print_run(runs[-1])
    for i in range(1, args.probe_runs + 1):
        for tool in TOOLS:
            runs.append(one_run(plan, tool, f"{plan['task']}-{tool}-probe{i}", probe=True))
            pref_report.print_run(runs[-1])
    return {"config": plan["config"], "steps": plan["steps"], "runs": runs, "matched": matched(plan, runs)}


def main(args) -> int:
    if args.print:
        for path in args.print:
            pref_report.print_report(json.loads(Path(path).read_text()))
        return 0
    os.chdir(REPO)  # the configs' paths (data, model.from_run) are relative to the repository root
    out = Path(args.out)
    work = out.parent / "pref_bench"
    if not args.dry_run:
        shutil.rmtree(work, ignore_errors=True)
        (work / "logs").mkdir(parents=True)
    from finetune.errors import UserError

    try:
        plans = {task: plan_task(task, args, work) for task in args.tasks}
    except UserError as e:  # a config that does not load, a starting run not made yet: what finetune train says
        print(f"pref_bench: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        for task, plan in plans.items():
            for tool in TOOLS:
                command = plan["command"](tool, work / "runs" / f"{task}-{tool}-1")
                print(f"# {task}, {tool}\n{' '.join(command)}\n")
        return 0
    from benchmarks.machine import environment

    data = {
        **report.stamp("pref_bench"),
        "settings": {
            "tasks": args.tasks,
            "steps": args.steps,
            "repeat": args.repeat,
            "probe_runs": args.probe_runs,
            "threads": args.threads,
            "overrides": args.overrides,
            "order": "interleaved: ours, trl, ours, trl, ... then the probe runs",
        },  # fmt: skip
        "environment": {**environment(), "loadavg_start": list(os.getloadavg())},
        "tasks": {},
    }
    print(f"[pref_bench] {', '.join(args.tasks)}: {args.steps} steps, {args.repeat} repeat(s) + "
          f"{args.probe_runs} probe run(s) each, OMP_NUM_THREADS={args.threads}; load average "
          f"{os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip
    for task, plan in plans.items():
        data["tasks"][task] = run_task(plan, args)
        data["tasks"][task]["summary"] = pref_report.summarize(data["tasks"][task]["runs"])
        report.write(out, data)  # after each task: a stopped invocation keeps what it measured
    data["environment"]["loadavg_end"] = list(os.getloadavg())
    report.write(out, data)
    pref_report.print_report(data)
    print(f"wrote {out}")
    failed = [r["name"] for t in data["tasks"].values() for r in t["runs"] if r["exit_code"] != 0]
    return 1 if failed else 0


def parse_args(argv=None):
    p = parser("pref_bench", DESCRIPTION, EPILOG)
    p.add_argument("--tasks", default="dpo,grpo", help="comma-separated, of dpo and grpo (default: dpo,grpo)")
    p.add_argument("--steps", type=int, default=60, metavar="N", help="optimizer steps per run (default 60)")
    p.add_argument("--repeat", type=int, default=2, metavar="N", help="timed runs per tool and task (default 2)")
    p.add_argument("--probe-runs", type=int, default=1, metavar="N",
                   help="runs per tool and task under benchmarks/pref_probe.py, for the split of a step (default 1; "
                   "0: none)")  # fmt: skip
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="OMP_NUM_THREADS and MKL_NUM_THREADS in every run, both tools (default 1: steadier on a "
                   "shared 2-core host)")  # fmt: skip
    p.add_argument("--dpo-config", default=CONFIGS["dpo"], help=f"our dpo config (default {CONFIGS['dpo']})")
    p.add_argument("--grpo-config", default=CONFIGS["grpo"], help=f"our grpo config (default {CONFIGS['grpo']})")
    add_set(p, "override a config key of every task's config, repeatable (as in `finetune train --set`); TRL's "
            "flags follow it where trl_flags maps the key, and the training-arguments check lists what still "
            "differs")  # fmt: skip
    add_out(p, "pref_bench", "; the runs, logs and data go to a pref_bench/ folder beside it")
    p.add_argument("--dry-run", action="store_true", help="print the commands of the first repeat and run nothing")
    p.add_argument("--print", nargs="+", metavar="FILE.json", help="print a saved report's tables and run nothing")
    args = p.parse_args(argv)
    args.tasks = [t for t in args.tasks.split(",") if t]
    if not args.tasks or set(args.tasks) - set(CONFIGS):
        p.error(f"--tasks: allowed: {', '.join(CONFIGS)}")
    for name in ("steps", "repeat", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    if args.probe_runs < 0:
        p.error("--probe-runs must be >= 0")
    args.out = str(Path(args.out).resolve())
    return args


if __name__ == "__main__":
    sys.exit(main(parse_args()))
