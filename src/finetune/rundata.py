"""A run's data, before any model: the data files read and checked, the tokenizer made (or reloaded on resume), the
examples tokenized and packed into rows (run.py's first step; the throughput benchmark uses the same steps).
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path

from transformers import set_seed

from finetune import datafiles, features
from finetune.config import RunConfig
from finetune.errors import DataError
from finetune.tokenizer import build_char_tokenizer, load_tokenizer


def load_data(cfg: RunConfig):
    """Read and validate the data files; returns (train_records, eval_records, labels)."""
    d = cfg.data
    train = datafiles.read_config_data(d, cfg.task, "train")
    evals = datafiles.read_config_data(d, cfg.task, "eval") if d.eval_file else []
    labels = None
    if cfg.task == "classification":
        labels = d.labels or sorted({r.label for r in train})
        datafiles.check_labels(train, labels, d.train_file)
        datafiles.check_labels(evals, labels, d.eval_file)
        if len(labels) < 2:
            raise DataError(d.train_file, None, f"classification needs at least 2 labels, found {labels}")
    return train, evals, labels


CARRIED = "data"  # <run>/data/: the run's own copy of its eval file, for eval and generate from anywhere


def carry_eval_data(cfg: RunConfig, run_dir: Path) -> None:
    """A new run keeps a copy of a local eval file (checked on use against the manifest's sha256), so a run folder
    copied to another disk evaluates without the checkout it came from. Folders and hub ids stay pointers."""
    source = Path(cfg.data.eval_file or "")
    if cfg.data.eval_file and source.is_file():
        (run_dir / CARRIED).mkdir(exist_ok=True)
        shutil.copyfile(source, run_dir / CARRIED / source.name)  # a new run folder: nothing planted to follow


def eval_source(cfg: RunConfig, run_dir: Path, manifest: dict) -> str | None:
    """Where a finished run's eval data is read again (`finetune eval`): its carried copy when it has one (refused
    when it no longer matches the digest the manifest recorded), else data.eval_file as the config names it."""
    from finetune.manifest import sha256_file  # imports torch: only the commands that load a model come here

    source = cfg.data.eval_file
    carried = run_dir / CARRIED / Path(source).name if source else None
    if carried is not None and carried.is_file():
        recorded = (manifest.get("data") or {}).get(source)
        if recorded and sha256_file(carried) != recorded:
            raise DataError(
                carried, None, f"does not match the sha256 manifest.json records for {source}: restore it "
                "from the original run folder",
            )  # fmt: skip
        return str(carried)
    return source


def load_eval_data(cfg: RunConfig, run_dir: Path, manifest: dict, id2label: dict | None):
    """A finished run's eval records and labels for `finetune eval`, from eval_source."""
    d = cfg.data
    source = eval_source(cfg, run_dir, manifest)
    evals = datafiles.read_config_data(dataclasses.replace(d, eval_file=source), cfg.task, "eval") if source else []
    labels = None
    if cfg.task == "classification":  # the model's own labels, in its order: no need for the training file
        labels = d.labels or [id2label[i] for i in sorted(id2label)]
    return evals, labels


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
    return load_tokenizer(cfg.tokenizer.name_or_path or cfg.model.source())


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


@dataclass
class RunData:
    tokenizer: object
    train_records: list
    eval_records: list
    labels: list | None
    train_ex: list
    eval_ex: list
    stats: dict


def build_data(cfg: RunConfig, run_dir: Path, resume: bool) -> RunData:
    """Read and check the data, make (or reload) the tokenizer, tokenize and pack."""
    set_seed(cfg.seed)
    train_records, eval_records, labels = load_data(cfg)
    tokenizer = make_tokenizer(cfg, run_dir, resume, train_records + eval_records)
    train_ex, eval_ex, stats = make_datasets(cfg, tokenizer, train_records, eval_records, labels)
    check_enough_rows(cfg, train_ex)
    return RunData(tokenizer, train_records, eval_records, labels, train_ex, eval_ex, stats)
