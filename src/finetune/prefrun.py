"""dpo, kto and grpo runs: TRL's DPOTrainer, KTOTrainer and GRPOTrainer inside this workspace's run.

run.train resolves the config, locks the run folder and finds the checkpoint to resume; run_body (its `body` for
these tasks) does the rest as SFT's does: rows read and checked (finetune.prefdata), the tokenizer and model of the run
it starts from (model.from_run) or of the config, the trainer with our atomic checkpoints, SIGTERM stop, metrics.jsonl
and trackers, the task metric before and after (finetune.prefmetrics), then summary.json, loss.png and model/.

trl is imported here only, and this module only when one of these tasks runs: SFT runs never import it. With LoRA the
adapter's config goes to TRL (peft_config), so the reference model is the base with the adapter disabled, no copy.
"""

from __future__ import annotations

import json

from transformers import set_seed

from finetune import prefdata, rewards, safefiles, tracking
from finetune.config import RunConfig
from finetune.modeling import BASE, build_model, count_parameters, lora_config
from finetune.prefmetrics import mean_reward, preference_accuracy, reference_of
from finetune.report import read_metrics
from finetune.resuming import run_training
from finetune.run import (
    Run,
    finish,
    is_main,
    quiet_progress,
    run_callbacks,
    training_arguments,
    world_size,
    write_start,
)
from finetune.rundata import make_tokenizer
from finetune.trainer import AtomicCheckpoints

TRL = {"dpo": ("DPOTrainer", "DPOConfig"), "kto": ("KTOTrainer", "KTOConfig"), "grpo": ("GRPOTrainer", "GRPOConfig")}


def run_body(run: Run) -> tuple[dict, int]:
    """The steps of a dpo, kto or grpo run inside its locked folder (run.train's body)."""
    cfg = run.cfg
    train_rows = prefdata.read_rows(cfg, "train")
    eval_rows = prefdata.read_rows(cfg, "eval") if cfg.data.eval_file else []
    functions = rewards.load(cfg.reward) if cfg.task == "grpo" else []
    tokenizer = make_tokenizer(cfg, run.dir, run.resume, [])  # the starting run's (or the resumed run's own copy)
    set_seed(cfg.seed)
    base_dir = run.dir / BASE if is_main() else None  # LoRA on a model built from model.config: its base kept
    model = build_model(cfg, run.settings, tokenizer, base_dir=base_dir, lora=False)  # LoRA: TRL applies it
    trackers = tracking.make_trackers(cfg, run.dir, is_main())
    trainer, stopper = build_trainer(run, model, tokenizer, train_rows, functions, trackers)
    if run.hooks.trainer_ready:
        run.hooks.trainer_ready(trainer)

    def measure() -> dict:
        return held_out(cfg, trainer, tokenizer, eval_rows, functions) if is_main() and eval_rows else {}

    before = start_run(run, trainer, tokenizer, train_rows, measure)
    before = {f"initial_{k}": v for k, v in before.items()}
    result, _ = run_training(trainer, stopper, run.checkpoint)
    summary = {
        "status": "completed",
        "steps": trainer.state.global_step,
        "train_loss": result.training_loss,
        "train_seconds": result.metrics["train_runtime"],
        "tokens_per_second": None,  # TRL's trainers do not count real tokens as ours does
        "metric": run.settings.metric,
        "initial_eval_accuracy": None,
        **before,
        "eval_loss": None,
        "eval_accuracy": None,
    }
    return finish(run, trainer, stopper, trackers, summary, measure)


def build_trainer(run: Run, model, tokenizer, rows: list[dict], functions: list, trackers):
    """TRL's trainer for the task, with our atomic checkpoints, SIGTERM stop, metrics.jsonl and trackers."""
    import datasets
    import trl

    datasets.disable_progress_bars()  # TRL's tokenizing map: one bar per pass, noise beside our own lines

    cfg = run.cfg
    trainer_name, config_name = TRL[cfg.task]
    extra = {"beta": cfg.preference.beta}
    if cfg.task == "grpo":
        g = cfg.grpo
        extra |= dict(num_generations=g.num_generations, max_completion_length=g.max_completion_length,
                      temperature=g.temperature, reward_weights=rewards.weights(cfg.reward))  # fmt: skip
    else:
        extra["max_length"] = cfg.data.max_length
    args = training_arguments(cfg, run.settings, run.dir, False, getattr(trl, config_name), **extra)
    stopper, callbacks = run_callbacks(run.dir, trackers)
    # create_model_card: TRL's README.md in the run folder, whose manifest.json already says how the run was made
    members = {"create_model_card": lambda self, *args, **kwargs: None}
    trainer_class = type(f"Finetune{trainer_name}", (AtomicCheckpoints, getattr(trl, trainer_name)), members)
    task_args = {"reward_funcs": functions} if cfg.task == "grpo" else {}
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=callbacks,
        peft_config=lora_config(cfg) if cfg.lora.enabled else None,
        **task_args,
    )
    quiet_progress(trainer)
    return trainer, stopper


def held_out(cfg: RunConfig, trainer, tokenizer, rows: list[dict], functions: list) -> dict:
    """The task metric on held-out rows (eval.max_samples of them), under summary.json's keys."""
    rows = rows[: cfg.eval.max_samples]
    if cfg.task == "grpo":
        model = trainer.accelerator.unwrap_model(trainer.model)
        reward, exact = mean_reward(model, tokenizer, rows, functions, cfg, trainer.state)
        return {"eval_accuracy": reward, "eval_exact_match": exact}
    policy = trainer.accelerator.unwrap_model(trainer.model)
    accuracy, margin = preference_accuracy(policy, reference_of(trainer), tokenizer, rows, cfg.eval.batch_size)
    return {"eval_accuracy": accuracy, "eval_reward_margin": cfg.preference.beta * margin}  # as TRL's rewards/margins


def start_run(run: Run, trainer, tokenizer, rows: list[dict], measure) -> dict:
    """Main process: the tokenizer and manifest of a new run, one line on what trains, and the task metric before
    training, kept in metrics.jsonl as its step-0 row so that a resumed run reports the same start."""
    if not is_main():
        return {}
    cfg, settings = run.cfg, run.settings
    if run.checkpoint is None:
        write_start(run, tokenizer)
    params = count_parameters(trainer.model)
    start = cfg.model.from_run or cfg.model.name_or_path or "a model built from model.config"
    print(f"[finetune] {cfg.task} (TRL): {len(rows)} train rows from {start}, {params['trainable']:,} of "
          f"{params['total']:,} parameters trainable, {world_size()} process(es); {settings.device}, "
          f"{settings.precision}", flush=True)  # fmt: skip
    if run.checkpoint is not None:
        start = [row for row in read_metrics(run.dir / "metrics.jsonl") if row.get("step") == 0 and "before" in row]
        return start[0]["before"] if start else {}
    before = measure()
    if before:
        print(f"[finetune] before training: {settings.metric} {before['eval_accuracy']:.3f}", flush=True)
        safefiles.append_line(run.dir / "metrics.jsonl", json.dumps({"step": 0, "before": before}))
    return before
