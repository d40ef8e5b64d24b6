"""`finetune eval` on a dpo, kto or grpo run: its held-out metric measured again on the saved model, under the keys
summary.json has (eval_accuracy with eval_reward_margin, or with eval_exact_match).

dpo, kto: preference accuracy compares the policy with the reference it trained against. With LoRA that is the saved
adapter's base (the adapter switched off); otherwise the model the run started from, built again the way the run
built it (model.from_run's final model, model.name_or_path, or model.config under the run's seed); a starting run
that is gone is one line, resolve's check_from_run, as for training. grpo: the run's own reward functions (user code
is imported as at training, from the same PYTHONPATH) on greedy completions, called with trainer_state None (there is
no trainer).
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

from transformers import set_seed

from finetune import prefdata, rewards
from finetune.errors import UserError
from finetune.prefmetrics import adapter_disabled, mean_reward, preference_accuracy
from finetune.runmodel import load_model


def rescore(cfg, run_dir: Path, eval_file: str | None, metric: str) -> dict:
    """The held-out metric of the run's final model on eval_file's rows (eval.max_samples of them)."""
    if not eval_file:
        raise UserError(f"{run_dir}: the run has no data.eval_file to evaluate on")
    if metric == "none":
        return {"eval_accuracy": None, "metric": metric, "n": 0}
    rows = prefdata.read_rows(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, eval_file=eval_file)), "eval")
    rows = rows[: cfg.eval.max_samples]
    policy, tokenizer = load_model(run_dir, cfg.task)
    if cfg.task == "grpo":
        reward, exact = mean_reward(policy, tokenizer, rows, rewards.load(cfg.reward), cfg, None)
        return {"eval_accuracy": reward, "eval_exact_match": exact, "metric": metric, "n": len(rows)}
    accuracy, margin = preference_accuracy(
        policy, reference(cfg, policy, tokenizer), tokenizer, rows, cfg.eval.batch_size
    )
    beta_margin = cfg.preference.beta * margin  # as TRL's rewards/margins, and summary.json's
    return {"eval_accuracy": accuracy, "eval_reward_margin": beta_margin, "metric": metric, "n": len(rows)}


def reference(cfg, policy, tokenizer):
    """The reference model as a context manager: the LoRA policy with its adapter off, or the starting model again."""
    from finetune.modeling import build_model
    from finetune.resolve import resolve

    if hasattr(policy, "disable_adapter"):
        return adapter_disabled(policy)
    set_seed(cfg.seed)  # model.config: the run's fresh weights come from its seed, as in finetune.prefrun
    # this machine's device; no tracker is contacted; a model.from_run that is gone is one line (check_from_run)
    settings = resolve(dataclasses.replace(cfg, tracking=[]))
    model = build_model(cfg, settings, tokenizer, lora=False).to(policy.device).eval()
    return contextlib.nullcontext(model)
