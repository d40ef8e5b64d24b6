"""The output of `python -m benchmarks pref_bench`: the medians and ratios per task, the split of a step from the probe
runs, and the lines and tables it prints, from the report's data alone (`pref_bench --print FILE.json` again)."""

from __future__ import annotations

from benchmarks import report

LABELS = {"ours": "ours (finetune train)", "trl": "TRL's script"}


def split(probe: dict, run: dict) -> dict:
    """Where a probed run's time went (benchmarks/pref_probe.py's record, and the run's own figures): each step's
    mean seconds, for grpo as sampling + scoring + training; checkpoints and the rest of the loop; and the whole
    command as a time line, from its start to its exit."""
    steps = probe.get("steps", [])
    n, total = len(steps), sum(s["seconds"] for s in steps)
    marks = ("init_begin", "init_end", "train_begin", "train_end", "save_begin", "save_end")
    if not n or any(m not in probe for m in marks):
        return {"steps": n, "error": "the probe recorded no complete run (trainer, loop and final save)"}
    generated = any("generate_and_score" in s for s in steps)
    score = sum(s.get("generate_and_score", 0.0) for s in steps)
    sample = sum(s.get("generate", 0.0) for s in steps)
    loop = probe["train_end"] - probe["train_begin"]
    checkpoints = sum(probe.get("checkpoints", []))
    return {
        "steps": n,
        "step_s": total / n,
        "step_cpu_s": sum(s.get("cpu", 0.0) for s in steps) / n,  # the process's CPU seconds in a step
        "loop_cpu_s": probe["train_end_cpu"] - probe["train_begin_cpu"] if "train_end_cpu" in probe else None,
        "first_step_s": steps[0]["seconds"],
        "median_step_s": report.median([s["seconds"] for s in steps]),
        "sampling_s": sample / n if generated else None,
        "scoring_s": (score - sample) / n if generated else None,
        "rewards_s": sum(s.get("rewards", 0.0) for s in steps) / n if generated else None,
        "training_s": (total - score) / n,
        "trl_step_time_s": run.get("trl_step_time_s"),
        "loop_s": loop,
        "in_steps_s": total,
        "checkpoints_s": checkpoints,
        "checkpoints": len(probe.get("checkpoints", [])),
        "other_in_loop_s": loop - total - checkpoints,  # data, logging, callbacks between the steps
        # the command's time line (time.time() of both processes)
        "to_trainer_s": probe["init_begin"] - run["started"],  # Python, imports, config, data, (ours) the model
        "trainer_s": probe["init_end"] - probe["init_begin"],  # the trainer's __init__ (TRL's script: the model)
        "to_loop_s": probe["train_begin"] - probe["init_end"],  # ours: the held-out measurement before training
        "to_save_s": probe["save_begin"] - probe["train_end"],  # ours: the held-out measurement after training
        "save_s": probe["save_end"] - probe["save_begin"],  # the final model
        "to_exit_s": run["ended"] - probe["save_end"],  # ours: summary, loss.png, trackers; TRL's: model card
        "wall_s": run["wall_s"],
    }


def summarize(runs: list[dict]) -> dict:
    """Medians per tool over the timed runs (not the probe runs), and the ratios ours/theirs: of the medians, and of
    each repeat's pair (ours i, theirs i)."""
    timed = {t: [r for r in runs if r["tool"] == t and not r["probe"]] for t in LABELS}
    keys = ("wall_s", "cpu_s", "train_s", "steps_per_s", "steps", "trl_step_time_s")
    medians = {t: {k: report.median([r.get(k) for r in rs]) for k in keys} for t, rs in timed.items()}
    for tool, rs in timed.items():
        medians[tool]["runs"] = len(rs)

    def ratio(a, b):
        return a / b if a is not None and b else None

    pairs = list(zip(timed["ours"], timed["trl"]))
    return {
        "median": medians,
        "ratio_steps_per_s": ratio(medians["ours"]["steps_per_s"], medians["trl"]["steps_per_s"]),
        "ratio_train_s": ratio(medians["ours"]["train_s"], medians["trl"]["train_s"]),
        "ratio_wall_s": ratio(medians["ours"]["wall_s"], medians["trl"]["wall_s"]),
        "ratio_cpu_s": ratio(medians["ours"]["cpu_s"], medians["trl"]["cpu_s"]),
        "paired_steps_per_s": [ratio(a.get("steps_per_s"), b.get("steps_per_s")) for a, b in pairs],
        "paired_wall_s": [ratio(a["wall_s"], b["wall_s"]) for a, b in pairs],
        "paired_cpu_s": [ratio(a.get("cpu_s"), b.get("cpu_s")) for a, b in pairs],
    }


def load(values) -> str:
    return report.fmt(values[0] if values else None, ".2f")


def print_run(r: dict) -> None:
    kind = "probe" if r["probe"] else "run"
    status = "" if r["exit_code"] == 0 else f"  EXIT {r['exit_code']}: see the log"
    print(f"[pref_bench] {r['task']} {LABELS[r['tool']]:<21} {kind} {r['name'].rsplit('-', 1)[-1]:>6}: wall "
          f"{r['wall_s']:6.1f} s (cpu {report.fmt(r.get('cpu_s'), '.1f')} s), train "
          f"{report.fmt(r['train_s'], '6.2f')} s, {r['steps']} steps, "
          f"{report.fmt(r['steps_per_s'], '.2f')} steps/s; load {load(r['loadavg_start'])} -> "
          f"{load(r['loadavg_end'])}{status}", flush=True)  # fmt: skip


def runs_table(data: dict) -> str:
    header = ["task", "tool", "run", "wall s", "cpu s", "train s", "steps", "steps/s", "load 1m start", "load 1m end"]
    rows = [
        [
            task,
            LABELS[r["tool"]],
            r["name"].rsplit("-", 1)[-1],
            report.fmt(r["wall_s"], ".1f"),
            report.fmt(r.get("cpu_s"), ".1f"),
            report.fmt(r["train_s"], ".2f"),
            report.fmt(r["steps"], "d"),
            report.fmt(r["steps_per_s"], ".2f"),
            load(r["loadavg_start"]),
            load(r["loadavg_end"]),
        ]  # fmt: skip
        for task, t in data["tasks"].items()
        for r in t["runs"]
    ]
    return report.render(header, rows, left=3)


def summary_table(data: dict) -> str:
    header = ["task", "tool", "runs", "steps", "wall s", "cpu s", "train s", "steps/s", "ours/theirs steps/s",
              "ours/theirs wall", "ours/theirs cpu"]  # fmt: skip
    rows = []
    for task, t in data["tasks"].items():
        s = t["summary"]
        for tool, m in s["median"].items():

            def ratio(key, ours=tool == "ours", s=s):
                return report.fmt(s.get(key), ".2f") + "x" if ours else ""

            rows.append([task, LABELS[tool], str(m["runs"]), report.fmt(m["steps"], ".0f"),
                         report.fmt(m["wall_s"], ".1f"), report.fmt(m.get("cpu_s"), ".1f"),
                         report.fmt(m["train_s"], ".2f"), report.fmt(m["steps_per_s"], ".2f"),
                         ratio("ratio_steps_per_s"), ratio("ratio_wall_s"), ratio("ratio_cpu_s")])  # fmt: skip
    return report.render(header, rows, left=2)


def probed(data: dict):
    """(task, tool label, split) of every probe run that recorded a whole run."""
    for task, t in data["tasks"].items():
        for r in t["runs"]:
            if r.get("probe_split") and "error" not in r["probe_split"]:
                yield task, LABELS[r["tool"]], r["probe_split"]


def step_table(data: dict) -> str | None:
    """A step's mean seconds and, for grpo, its parts, with their share of the step."""
    header = ["task", "tool", "steps", "step s", "step cpu s", "sampling", "scoring", "training",
              "TRL step_time s", "checkpoints s", "other in loop s", "loop s", "loop cpu s"]  # fmt: skip
    rows = []
    for task, label, p in probed(data):

        def part(key, p=p):
            return "-" if p[key] is None else f"{p[key]:.3f} ({p[key] / p['step_s']:.0%})"

        rows.append([task, label, str(p["steps"]), f"{p['step_s']:.3f}", f"{p['step_cpu_s']:.3f}",
                     part("sampling_s"), part("scoring_s"), part("training_s"),
                     report.fmt(p["trl_step_time_s"], ".3f"), f"{p['checkpoints_s']:.2f} ({p['checkpoints']})",
                     f"{p['other_in_loop_s']:.2f}", f"{p['loop_s']:.2f}",
                     report.fmt(p["loop_cpu_s"], ".2f")])  # fmt: skip
    return report.render(header, rows, left=2) if rows else None


TIMELINE = [  # the whole command, in order: (column, key)
    ("start to trainer", "to_trainer_s"),
    ("trainer init", "trainer_s"),
    ("trainer to loop", "to_loop_s"),
    ("loop", "loop_s"),
    ("loop to final save", "to_save_s"),
    ("final save", "save_s"),
    ("save to exit", "to_exit_s"),
    ("wall", "wall_s"),
]


def timeline_table(data: dict) -> str | None:
    """The whole command's seconds, part by part."""
    rows = [[task, label, *(f"{p[k]:.2f}" for _, k in TIMELINE)] for task, label, p in probed(data)]
    return report.render(["task", "tool", *(c for c, _ in TIMELINE)], rows, left=2) if rows else None


def matched_lines(task: str, m: dict) -> list[str]:
    rows, args = m["data_rows"], m.get("training_args", {})
    steps = m["steps"]
    lines = [
        f"{task}: model {m['model']}; {rows['rows']} rows from {rows['source']} (sha256 {rows['sha256'][:12]}), "
        f"read back by TRL's datasets unchanged: {yes(rows.get('trl_reads_same_rows'))}; steps ours {steps['ours']}, "
        f"TRL {steps['trl']} (asked {steps['requested']}); precision ours {precision(m['precision']['ours'])}, "
        f"TRL {precision(m['precision']['trl'])}; OMP_NUM_THREADS={m['threads']}",
    ]
    if args:
        unexpected = ", ".join(args["unexpected"]) or "none"
        lines.append(f"{task}: training arguments: {args['fields_compared']} fields compared, differ: "
                     f"{', '.join(args['differ']) or 'none'} (unexpected: {unexpected})")  # fmt: skip
    logged = m["logged"]
    if logged["same_steps"] and logged["max_loss_difference"] is not None:
        reward = logged.get("max_reward_difference")
        lines.append(f"{task}: logged at steps {logged['steps']}: largest difference ours - TRL, loss "
                     f"{logged['max_loss_difference']:.3g}" + (f", reward {reward:.3g}" if reward is not None else
                     ""))  # fmt: skip
    else:
        lines.append(f"{task}: the two runs logged at different steps: {logged['steps']} vs TRL's")
    return lines


def yes(value) -> str:
    return {True: "yes", False: "NO", None: "-"}[value]


def precision(p: dict) -> str:
    mixed = "bf16" if p.get("bf16") else "fp16" if p.get("fp16") else "no mixed precision"
    return f"{p.get('model_dtype')} weights, {mixed}"


def print_report(data: dict) -> None:
    env = data["environment"]
    print(f"\npref_bench {data['created']}: {' '.join(data['command'])}")
    print(f"{env.get('cpu')}, {env.get('cpu_count')} CPUs; torch {env.get('torch')}, transformers "
          f"{env.get('transformers')}; load average at start {load(env.get('loadavg_start'))}, at end "
          f"{load(env.get('loadavg_end'))}\n")  # fmt: skip
    print(runs_table(data))
    print()
    print(summary_table(data))
    print("\nsteps/s from train s, the training loop's own train_runtime; ratios of the medians, per repeat:")
    for task, t in data["tasks"].items():
        s = t["summary"]
        per = ", ".join(report.fmt(x, ".2f") for x in s["paired_steps_per_s"])
        wall = ", ".join(report.fmt(x, ".2f") for x in s["paired_wall_s"])
        cpu = ", ".join(report.fmt(x, ".2f") for x in s.get("paired_cpu_s", []))
        print(f"  {task}: steps/s ours/theirs {per}; wall ours/theirs {wall}; cpu ours/theirs {cpu}")
    print()
    for task, t in data["tasks"].items():
        print("\n".join(matched_lines(task, t["matched"])))
    steps, timeline = step_table(data), timeline_table(data)
    if steps:
        print("\na step, in the probe runs (benchmarks/pref_probe.py): mean seconds and share of the step")
        print(steps)
    if timeline:
        print("\nthe whole command, in the probe runs: seconds from its start to its exit")
        print(timeline)
