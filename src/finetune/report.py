"""After a run: the loss plot, summary.json and the short human summary printed at the end."""

from __future__ import annotations

import io
import json
from pathlib import Path

from finetune import safefiles
from finetune.errors import DataError


def read_metrics(path: Path) -> list[dict]:
    """metrics.jsonl's rows; a line that is not one (a torn row that no resume cut off) is an error naming it."""
    if not path.exists():
        return []
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError(path, number, f"not a JSON row ({e.msg}); a crash tore it: delete that line") from None
    return rows


def plot_loss(metrics: list[dict], out: Path, title: str) -> Path | None:
    # A Figure of its own (no pyplot): no screen needed, and a notebook's plotting backend is left as it was.
    from matplotlib.figure import Figure

    train = [(m["step"], m["loss"]) for m in metrics if "loss" in m]
    evals = [(m["step"], m["eval_loss"]) for m in metrics if "eval_loss" in m]
    rewards = [(m["step"], m["reward"]) for m in metrics if "reward" in m]  # grpo: what its loss does not show
    if not train and not evals:
        return None
    fig = Figure(figsize=(7, 6.5 if rewards else 4), dpi=110)
    ax, *below = fig.subplots(2 if rewards else 1, 1, sharex=True, squeeze=False)[:, 0]
    if train:
        ax.plot(*zip(*train), label="train loss", color="tab:blue")
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss", color="tab:orange")
    ax.set_ylabel("loss")
    if all(v > 0 for _, v in train + evals):  # a log axis shows a falling loss best; grpo's can be below zero
        ax.set_yscale("log")
    ax.set_title(title)
    ax.legend()
    if rewards:
        below[0].plot(*zip(*rewards), label="mean reward of the sampled completions", color="tab:green")
        below[0].set_ylabel("reward")
        below[0].legend()
    for axis in (ax, *below):
        axis.grid(alpha=0.3)
    (below or [ax])[-1].set_xlabel("step")
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png")
    safefiles.write_bytes(out, png.getvalue())
    return out


def write_json(path: Path, data: dict) -> None:
    safefiles.write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")  # atomic, never through a link


def human_summary(summary: dict, run_dir: Path) -> str:
    def fmt(key, spec=".4f"):
        v = summary.get(key)
        return "n/a" if v is None else format(v, spec)

    lines = [
        f"status        {summary['status']}  ({summary['steps']} steps, {fmt('wall_seconds', '.1f')} s)",
        f"train loss    {fmt('train_loss')}",
        f"eval loss     {fmt('eval_loss')}",
    ]
    if summary.get("eval_accuracy") is not None:
        before = summary.get("initial_eval_accuracy")
        prefix = f"{before:.3f} before -> " if before is not None else ""
        lines.append(f"eval accuracy {prefix}{summary['eval_accuracy']:.3f}  ({summary.get('metric')})")
    if summary.get("eval_exact_match") is not None:  # grpo: beside its mean reward
        before = summary.get("initial_eval_exact_match")
        prefix = f"{before:.3f} before -> " if before is not None else ""
        lines.append(f"exact match   {prefix}{summary['eval_exact_match']:.3f}")
    lines += [f"throughput    {fmt('tokens_per_second', ',.0f')} tokens/s", f"run dir       {run_dir}"]
    return "\n".join(lines)
