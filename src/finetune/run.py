"""One training run, top to bottom: data, tokenizer, model, Trainer, metrics, artifacts.

Run directory layout (runs/<name>/ or --output-dir):
  manifest.json  metrics.jsonl  summary.json  loss.png  tensorboard/  checkpoint-<step>/  model/ (final model+tokenizer)
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import torch
from transformers import TrainingArguments, set_seed
from transformers.integrations import TensorBoardCallback
from transformers.trainer_callback import ProgressCallback
from transformers.trainer_utils import get_last_checkpoint
from transformers.utils import logging as transformers_logging

from finetune import datafiles, features
from finetune.config import RunConfig
from finetune.errors import ConfigError, DataError
from finetune.evaluate import classification_accuracy, exact_match
from finetune.manifest import build_manifest
from finetune.modeling import build_model, count_parameters
from finetune.report import human_summary, plot_loss, read_metrics, write_json
from finetune.tokenizer import build_char_tokenizer, load_tokenizer
from finetune.trainer import STAGING, FinetuneTrainer, GracefulStop, MetricsLog, QuietProgress


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def load_data(cfg: RunConfig):
    """Read and validate the data files; returns (train_records, eval_records, labels)."""
    d = cfg.data
    train = datafiles.read_records(d.train_file, cfg.task, d.text_field, d.label_field)
    evals = datafiles.read_records(d.eval_file, cfg.task, d.text_field, d.label_field) if d.eval_file else []
    labels = None
    if cfg.task == "classification":
        labels = d.labels or sorted({r.label for r in train})
        datafiles.check_labels(train, labels, d.train_file)
        datafiles.check_labels(evals, labels, d.eval_file)
        if len(labels) < 2:
            raise DataError(d.train_file, None, f"classification needs at least 2 labels, found {labels}")
    return train, evals, labels


def record_texts(records):
    for r in records:
        if r.messages is not None:
            yield from (m["content"] for m in r.messages)
        else:
            yield from (t for t in (r.prompt, r.completion, r.text) if t)


def make_tokenizer(cfg: RunConfig, run_dir: Path, resume: bool, records):
    saved = run_dir / "tokenizer"
    if resume and saved.exists():
        return load_tokenizer(str(saved))
    if cfg.tokenizer.build_from_data:
        return build_char_tokenizer(record_texts(records))
    return load_tokenizer(cfg.tokenizer.name_or_path or cfg.model.name_or_path)


def make_datasets(cfg: RunConfig, tokenizer, train, evals, labels):
    d = cfg.data
    if cfg.task == "classification":
        return (
            features.tokenize_classification(tokenizer, train, labels, d.max_length),
            features.tokenize_classification(tokenizer, evals, labels, d.max_length),
            {},
        )
    train_ex, stats = features.tokenize_causal(tokenizer, train, d.max_length)
    eval_ex, _ = features.tokenize_causal(tokenizer, evals, d.max_length)
    if not train_ex:
        raise DataError(
            d.train_file, None, "no example has a completion left to learn after truncation to data.max_length"
        )
    if d.packing:
        train_ex = features.pack(train_ex, d.max_length)
        eval_ex = features.pack(eval_ex, d.max_length)
    return train_ex, eval_ex, stats


def check_enough_rows(cfg: RunConfig, train_ex: list) -> None:
    if len(train_ex) < cfg.training.batch_size:  # the last partial batch is dropped, so there would be no step
        raise DataError(
            cfg.data.train_file,
            None,
            f"{len(train_ex)} training rows are fewer than one batch "
            f"(training.batch_size={cfg.training.batch_size}); lower the batch size or add data",
        )


def precision_flags(cfg: RunConfig) -> dict:
    p = cfg.training.precision
    if p == "auto":
        p = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    return {"bf16": p == "bf16", "fp16": p == "fp16"}


def training_arguments(cfg: RunConfig, run_dir: Path, has_eval: bool) -> TrainingArguments:
    t = cfg.training
    per_device, rest = divmod(t.batch_size, world_size() * t.grad_accum)
    if rest or per_device < 1:
        raise ConfigError(
            f"training.batch_size: {t.batch_size} must be a multiple of processes ({world_size()}) "
            f"x training.grad_accum ({t.grad_accum})"
        )
    eval_strategy = "no" if not has_eval else ("steps" if t.eval_steps else "epoch")
    return TrainingArguments(
        output_dir=str(run_dir),
        seed=cfg.seed,
        data_seed=cfg.seed,
        per_device_train_batch_size=per_device,
        per_device_eval_batch_size=max(per_device, 8),
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
        use_cpu=not torch.cuda.is_available(),
        **precision_flags(cfg),
    )


def train(cfg: RunConfig, run_dir: Path, resume: bool = False, argv: list[str] | None = None) -> tuple[dict, int]:
    """Train; returns (summary, exit_code). Exit code 0, or 128+signal when stopped by SIGTERM/SIGINT."""
    started = time.time()
    transformers_logging.disable_progress_bar()  # loading/saving weights bars; the training bar stays
    checkpoint = get_last_checkpoint(str(run_dir)) if run_dir.exists() else None
    if not resume and run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(
            f"{run_dir}: run directory exists; pass --resume to continue it or --output-dir for a new one"
        )
    if resume and checkpoint is None and is_main():
        print(f"[finetune] no checkpoint in {run_dir}: starting from scratch", flush=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    if is_main() and (run_dir / STAGING).exists():
        shutil.rmtree(run_dir / STAGING)  # a checkpoint that a crash left unfinished

    set_seed(cfg.seed)
    train_records, eval_records, labels = load_data(cfg)
    tokenizer = make_tokenizer(cfg, run_dir, resume, train_records + eval_records)
    train_ex, eval_ex, stats = make_datasets(cfg, tokenizer, train_records, eval_records, labels)
    check_enough_rows(cfg, train_ex)
    set_seed(cfg.seed)  # model init does not depend on how much randomness data prep used
    model = build_model(cfg, tokenizer, labels)
    model.config.use_cache = False  # training; also lets packed rows get their block-diagonal mask

    args = training_arguments(cfg, run_dir, bool(eval_ex))
    stopper = GracefulStop()
    metrics_path = run_dir / "metrics.jsonl"
    callbacks = [stopper, MetricsLog(metrics_path)]
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / "tensorboard")  # read by TensorBoardCallback
    callbacks.append(TensorBoardCallback())  # writes on the main process only
    trainer = FinetuneTrainer(
        model=model,
        args=args,
        processing_class=tokenizer,
        train_dataset=features.ListDataset(train_ex),
        eval_dataset=features.ListDataset(eval_ex) if eval_ex else None,
        data_collator=features.Collator(tokenizer.pad_token_id, 8 if torch.cuda.is_available() else None),
        compute_metrics=classification_accuracy if cfg.task == "classification" else None,
        callbacks=callbacks,
    )
    trainer.remove_callback(ProgressCallback)
    for cb in [cb for cb in trainer.callback_handler.callbacks if type(cb).__name__ == "NotebookProgressCallback"]:
        trainer.remove_callback(cb)  # Jupyter's HTML table (by name: importing it needs IPython): QuietProgress reports
    trainer.add_callback(QuietProgress())
    metric = (
        cfg.eval.metric if cfg.eval.metric != "auto" else ("exact_match" if cfg.task == "causal_lm" else "accuracy")
    )
    gen_eval = eval_records[: cfg.eval.max_samples] if metric == "exact_match" else []

    if is_main():
        if not resume or checkpoint is None:
            tokenizer.save_pretrained(run_dir / "tokenizer")
            write_json(
                run_dir / "manifest.json",
                build_manifest(
                    cfg.to_dict(), argv or sys.argv, [cfg.data.train_file, cfg.data.eval_file], world_size()
                ),
            )
        params = count_parameters(model)
        print(
            f"[finetune] {cfg.task}: {len(train_records)} train / {len(eval_records)} eval examples, "
            f"{len(train_ex)} rows{' (packed)' if cfg.data.packing else ''}, "
            f"{params['trainable']:,} of {params['total']:,} parameters trainable, {world_size()} process(es)"
            + (f"; {stats['truncated']} truncated, {stats['dropped']} dropped" if stats.get("truncated") else ""),
            flush=True,
        )
    if resume and checkpoint is not None and is_main():
        print(f"[finetune] resuming from {checkpoint}", flush=True)
    initial_acc = None
    if gen_eval and checkpoint is None and is_main():
        initial_acc, _ = exact_match(model, tokenizer, gen_eval, cfg.eval.max_new_tokens, cfg.eval.batch_size)

    try:
        result = trainer.train(resume_from_checkpoint=checkpoint if resume else None)
    finally:
        stopper.restore()
    tokens = int(trainer.accelerator.reduce(torch.tensor(trainer.tokens_trained), reduction="sum"))  # all ranks
    summary = {
        "status": "completed",
        "steps": trainer.state.global_step,
        "train_loss": result.training_loss,
        "tokens_trained": tokens,
        "train_seconds": result.metrics["train_runtime"],
        "tokens_per_second": tokens / result.metrics["train_runtime"] if result.metrics["train_runtime"] else None,
        "metric": metric,
        "initial_eval_accuracy": initial_acc,
        "eval_loss": None,
        "eval_accuracy": None,
    }
    exit_code = 0
    if stopper.signum is not None:
        summary["status"] = "interrupted"
        exit_code = 128 + stopper.signum
    else:
        if eval_ex:
            evaluation = trainer.evaluate()
            summary["eval_loss"] = evaluation["eval_loss"]
            summary["eval_accuracy"] = evaluation.get("eval_accuracy")
        if gen_eval and is_main():
            summary["eval_accuracy"], samples = exact_match(
                model, tokenizer, gen_eval, cfg.eval.max_new_tokens, cfg.eval.batch_size
            )
            write_json(run_dir / "eval_samples.json", {"samples": samples[:50]})
        trainer.save_model(str(run_dir / "model"))  # final model (or LoRA adapter) + tokenizer
    summary["wall_seconds"] = time.time() - started
    if is_main():
        write_json(run_dir / "summary.json", summary)
        plot_loss(read_metrics(metrics_path), run_dir / "loss.png", f"{cfg.name}: {cfg.task}")
        print("\n" + human_summary(summary, run_dir), flush=True)
    return summary, exit_code
