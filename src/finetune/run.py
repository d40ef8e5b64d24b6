"""One training run, top to bottom: data, tokenizer, model, Trainer, metrics, artifacts.

Run directory layout (runs/<name>/ or --output-dir):
  manifest.json  metrics.jsonl  summary.json  loss.png  tensorboard/  checkpoint-<step>/  model/ (final model+tokenizer)
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from transformers import TrainingArguments, set_seed
from transformers.trainer_callback import ProgressCallback
from transformers.utils import logging as transformers_logging

from finetune import features, tracking
from finetune.checkpoints import storage_errors
from finetune.config import RunConfig, config_error
from finetune.evaluate import classification_accuracy, task_metric
from finetune.manifest import build_manifest
from finetune.modeling import BASE, build_model, count_parameters
from finetune.report import human_summary, plot_loss, read_metrics, write_json
from finetune.resolve import OPTIMIZERS, Settings, resolve
from finetune.resuming import run_training
from finetune.rundata import RunData, build_data, carry_eval_data
from finetune.rundir import open_run_dir
from finetune.trainer import FinetuneTrainer, GracefulStop, MetricsLog, QuietProgress


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def training_arguments(cfg: RunConfig, settings: Settings, run_dir: Path, has_eval: bool, args_class=None, **extra):
    """The Trainer's arguments (a TrainingArguments, or args_class: TRL's DPOConfig and the like, given extra)."""
    t = cfg.training
    eval_strategy = "no" if not has_eval else ("steps" if t.eval_steps else "epoch")
    arguments = dict(
        output_dir=str(run_dir),
        seed=cfg.seed,
        data_seed=cfg.seed,
        per_device_train_batch_size=settings.per_device_batch,
        per_device_eval_batch_size=max(settings.per_device_batch, 8),
        gradient_accumulation_steps=t.grad_accum,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps or -1,
        learning_rate=t.learning_rate,
        weight_decay=t.weight_decay,
        warmup_steps=t.warmup_ratio,  # v5: a float < 1 is a ratio of all steps
        lr_scheduler_type=t.lr_scheduler,
        max_grad_norm=t.max_grad_norm,
        logging_steps=t.logging_steps,
        eval_strategy=eval_strategy,
        eval_steps=t.eval_steps,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        dataloader_drop_last=True,  # equal global batches for any process count (no padded last batch)
        dataloader_num_workers=t.num_workers,
        dataloader_persistent_workers=t.num_workers > 0,
        report_to="none",
        disable_tqdm=not is_main(),
        remove_unused_columns=False,
        use_cpu=settings.device == "cpu",
        bf16=settings.precision == "bf16",
        fp16=settings.precision == "fp16",
        optim=OPTIMIZERS[settings.optimizer],
        torch_compile=t.compile,
        use_liger_kernel=t.liger_kernel,
        **memory_levers(cfg),
    )
    return (args_class or TrainingArguments)(**{**arguments, **extra})


def memory_levers(cfg: RunConfig) -> dict:
    """Activation checkpointing and FSDP2 sharding; under FSDP, checkpointing is FSDP's own, per wrapped layer."""
    t = cfg.training
    if not t.fsdp:
        return {
            "activation_checkpointing": t.gradient_checkpointing,
            "activation_checkpointing_kwargs": {"use_reentrant": False} if t.gradient_checkpointing else None,
        }
    return {
        "fsdp": True,  # FSDP2, full shard, each decoder layer wrapped (the model's _no_split_modules)
        "fsdp_config": {
            "version": 2,
            "reshard_after_forward": True,
            "activation_checkpointing": t.gradient_checkpointing,
            "state_dict_type": "FULL_STATE_DICT",  # final model and checkpoints load without FSDP
        },
    }


def collator(cfg: RunConfig, settings: Settings, tokenizer) -> features.Collator:
    static = cfg.data.packing and settings.attn_implementation == "flex_attention"  # one shape, one compile
    return features.Collator(
        tokenizer.pad_token_id,
        pad_to_multiple_of=8 if settings.device == "cuda" else None,  # tensor-core friendly widths
        pad_to=cfg.data.max_length if static else None,
    )


def build_trainer(cfg: RunConfig, settings: Settings, run_dir: Path, model, tokenizer, train_ex, eval_ex, trackers):
    args = training_arguments(cfg, settings, run_dir, bool(eval_ex))
    stopper, callbacks = run_callbacks(run_dir, trackers)
    trainer = FinetuneTrainer(
        model=model,
        args=args,
        processing_class=tokenizer,
        train_dataset=features.ListDataset(train_ex),
        eval_dataset=features.ListDataset(eval_ex) if eval_ex else None,
        data_collator=collator(cfg, settings, tokenizer),
        compute_metrics=classification_accuracy if cfg.task == "classification" else None,
        callbacks=callbacks,
    )
    quiet_progress(trainer)
    if cfg.training.fsdp and not trainer.is_fsdp_enabled:
        stopper.restore()
        raise config_error(
            cfg,
            "training.fsdp",
            "accelerate did not enable FSDP: launch with torchrun (torchrun --nproc-per-node N -m finetune train ...)",
        )
    return trainer, stopper


def run_callbacks(run_dir: Path, trackers) -> tuple[GracefulStop, list]:
    """The stop on SIGTERM/SIGINT, and the callbacks every run's trainer gets: metrics.jsonl and the trackers."""
    stopper = GracefulStop()
    return stopper, [stopper, MetricsLog(run_dir / "metrics.jsonl"), *tracking.callbacks(trackers)]


def quiet_progress(trainer) -> None:
    """The progress bar without a printed dict per log step (QuietProgress)."""
    trainer.remove_callback(ProgressCallback)
    for cb in [cb for cb in trainer.callback_handler.callbacks if type(cb).__name__ == "NotebookProgressCallback"]:
        trainer.remove_callback(cb)  # Jupyter's HTML table (by name: importing it needs IPython): QuietProgress reports
    trainer.add_callback(QuietProgress())


def announce(cfg: RunConfig, settings: Settings, model, n_train: int, n_eval: int, rows: int, stats: dict) -> None:
    params = count_parameters(model)
    levers = [k for k in ("gradient_checkpointing", "compile", "liger_kernel", "fsdp") if getattr(cfg.training, k)]
    print(
        f"[finetune] {cfg.task}: {n_train} train / {n_eval} eval examples, "
        f"{rows} rows{' (packed)' if cfg.data.packing else ''}, "
        f"{params['trainable']:,} of {params['total']:,} parameters trainable, {world_size()} process(es)"
        + (f"; {stats['truncated']} truncated, {stats['dropped']} dropped" if stats.get("truncated") else ""),
        flush=True,
    )
    print(
        f"[finetune] {settings.device}, {settings.precision} ({settings.dtype} weights), "
        f"attention {settings.attn_implementation}, optimizer {settings.optimizer}"
        + (f", {cfg.lora.quantization} base" if cfg.lora.quantization else "")
        + (f", {', '.join(levers)}" if levers else ""),
        flush=True,
    )


@dataclass(frozen=True)
class Hooks:
    """What a caller adds to a run without changing what it trains (the benchmarks time and profile runs with it).

    trainer_ready: called with the FinetuneTrainer (dpo, kto, grpo: TRL's trainer) once it is built, before the first
        step: add TrainerCallbacks with trainer.add_callback; trainer.tokens_trained is its own count of the real
        tokens trained (SFT's trainer only).
    save_model: False leaves out the final model save, which comes after training (GBs for large shapes)."""

    trainer_ready: Callable[[FinetuneTrainer], None] | None = None
    save_model: bool = True


def train(
    cfg: RunConfig,
    run_dir: Path,
    resume: bool = False,
    argv: list[str] | None = None,
    allow_config_change=False,
    hooks: Hooks = Hooks(),  # frozen: one shared default is safe
    body=None,
) -> tuple[dict, int]:
    """Train; returns (summary, exit_code). Exit code 0, or 128+signal when stopped by SIGTERM/SIGINT. hooks: Hooks,
    for every task. body: the run's steps inside its locked folder (default: SFT's; finetune.prefrun.run_body for dpo,
    kto and grpo), called with hooks= as a keyword."""
    started = time.time()
    transformers_logging.disable_progress_bar()  # loading/saving weights bars; the training bar stays
    settings = resolve(cfg, world_size())  # every "auto" decided, every lever and tracker checked before any work
    tracking.check_reachable(cfg.tracking)  # a tracking server that does not answer: stop now, not mid-run
    with open_run_dir(cfg, run_dir, resume, allow_config_change, is_main()) as checkpoint:  # locked while we write
        return (body or _train)(cfg, settings, run_dir, checkpoint, resume, argv or sys.argv, started, hooks=hooks)


def _train(
    cfg: RunConfig, settings: Settings, run_dir: Path, checkpoint, resume, argv, started, hooks: Hooks = Hooks()
) -> tuple[dict, int]:
    """The fixed steps of a run, as the transformers examples read: data, model, trainer, train, evaluate, finish."""
    data = build_data(cfg, run_dir, resume)
    set_seed(cfg.seed)  # model init does not depend on how much randomness data prep used
    model = build_model(cfg, settings, data.tokenizer, data.labels, base_dir=run_dir / BASE if is_main() else None)
    model.config.use_cache = False  # training; also lets packed rows get their block-diagonal mask
    trackers = tracking.make_trackers(cfg, run_dir, is_main())  # tensorboard, mlflow, wandb: config `tracking`
    trainer, stopper = build_trainer(
        cfg, settings, run_dir, model, data.tokenizer, data.train_ex, data.eval_ex, trackers
    )
    if hooks.trainer_ready:
        hooks.trainer_ready(trainer)
    initial_acc = start_run(cfg, settings, run_dir, checkpoint, argv, data, model)
    result, tokens = run_training(trainer, stopper, checkpoint)
    summary = {
        "status": "completed",
        "steps": trainer.state.global_step,
        "train_loss": result.training_loss,
        "tokens_trained": tokens,
        "train_seconds": result.metrics["train_runtime"],
        "tokens_per_second": tokens / result.metrics["train_runtime"] if result.metrics["train_runtime"] else None,
        "metric": settings.metric,
        "initial_eval_accuracy": initial_acc,
        "eval_loss": None,
        "eval_accuracy": None,
    }
    return finish(cfg, run_dir, trainer, stopper, trackers, started, summary,
                  lambda: evaluate_run(cfg, settings, run_dir, trainer, data), hooks)  # fmt: skip


def finish(cfg: RunConfig, run_dir: Path, trainer, stopper, trackers, started, summary: dict, evaluate, hooks: Hooks):
    """The end of every run (SFT's, and finetune.prefrun's): the final evaluation (evaluate() returns its summary
    keys) and model (unless hooks.save_model is False), or the status of a run a signal stopped; then summary.json,
    loss.png and the trackers. Returns (summary, exit code)."""
    exit_code = 0
    if stopper.signum is not None:
        summary["status"], exit_code = "interrupted", 128 + stopper.signum
    else:
        summary.update(evaluate())
        if hooks.save_model:
            with storage_errors(run_dir / "model"):
                trainer.save_model(str(run_dir / "model"))  # final model (or LoRA adapter) + tokenizer
    summary["wall_seconds"] = time.time() - started
    report(cfg, run_dir, summary)
    tracking.finish(trackers, summary)  # after report: loss.png and summary.json exist to upload
    finish_processes(trainer)
    return summary, exit_code


def start_run(cfg: RunConfig, settings: Settings, run_dir: Path, checkpoint, argv, data: RunData, model):
    """Main process: the tokenizer and manifest of a new run, what was chosen, and the task metric before training
    (returned; None when resuming or when the metric needs no generation)."""
    if not is_main():
        return None
    if checkpoint is None:
        write_start(cfg, settings, run_dir, argv, data.tokenizer)
    announce(cfg, settings, model, len(data.train_records), len(data.eval_records), len(data.train_ex), data.stats)
    if checkpoint is not None or settings.metric != "exact_match" or not data.eval_records:
        return None
    return task_metric(model, data.tokenizer, cfg, settings.metric, data.eval_records, data.labels)[0]


def write_start(cfg: RunConfig, settings: Settings, run_dir: Path, argv, tokenizer) -> None:
    """What a new run writes first: its tokenizer, its copy of the eval data and manifest.json."""
    with storage_errors(run_dir):
        tokenizer.save_pretrained(run_dir / "tokenizer")
        carry_eval_data(cfg, run_dir)
        manifest = build_manifest(cfg.to_dict(), argv, [cfg.data.train_file, cfg.data.eval_file], world_size())
        write_json(run_dir / "manifest.json", {**manifest, "resolved": settings.to_dict()})


def evaluate_run(cfg: RunConfig, settings: Settings, run_dir: Path, trainer, data: RunData) -> dict:
    """Final evaluation: the Trainer's eval loss (and its accuracy for classifiers) over the eval rows; for
    exact_match, the same task metric `finetune eval` computes, with its samples in eval_samples.json."""
    out = {}
    if data.eval_ex:
        evaluation = trainer.evaluate()
        out = {"eval_loss": evaluation["eval_loss"], "eval_accuracy": evaluation.get("eval_accuracy")}
    if settings.metric == "exact_match" and data.eval_records and is_main():
        model, tokenizer = trainer.model, data.tokenizer
        out["eval_accuracy"], samples = task_metric(model, tokenizer, cfg, settings.metric, data.eval_records, None)
        write_json(run_dir / "eval_samples.json", {"samples": samples[:50]})
    return out


def report(cfg: RunConfig, run_dir: Path, summary: dict) -> None:
    """Main process: summary.json, loss.png and the printed summary."""
    if not is_main():
        return
    with storage_errors(run_dir):
        write_json(run_dir / "summary.json", summary)
        plot_loss(read_metrics(run_dir / "metrics.jsonl"), run_dir / "loss.png", f"{cfg.name}: {cfg.task}")
    print("\n" + human_summary(summary, run_dir), flush=True)


def finish_processes(trainer) -> None:
    """Under torchrun every rank waits here for the main one, which evaluates and reports alone: a rank that left
    while the main one was still generating was seen to abort at exit ("terminate called without an active
    exception", 1 CI run in 3). Destroying the process group here instead hung once in 12 runs (gloo), so it is not."""
    trainer.accelerator.wait_for_everyone()
