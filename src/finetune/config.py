"""Run configuration as plain dataclasses, loaded from YAML with every key validated.

A bad key, type or value raises ConfigError naming the file, the line, the dotted key and what is allowed, e.g.
``configs/x.yaml:12: training.lr: unknown key (allowed: batch_size, epochs, ...)``. This module holds the schema (the
dataclasses), the keys that moved and the cross-field rules; typedyaml.py reads YAML into it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from finetune.datafiles import MAX_RECORD_BYTES
from finetune.errors import ConfigError
from finetune.formats import check_columns
from finetune.names import name_problem
from finetune.rewards import reward_problem
from finetune.typedyaml import apply_overrides, build, parse_yaml, where


@dataclass
class ModelConfig:
    name_or_path: str | None = None  # a hub id or a local directory, loaded with from_pretrained
    config: dict | None = None  # or build from scratch: {model_type: llama, hidden_size: 128, ...}
    # or start from an earlier run of this workspace (its model/ and tokenizer): runs/default (dpo, kto, grpo)
    from_run: str | None = None

    def source(self) -> str | None:
        """Where from_pretrained loads the model (and, unless tokenizer.name_or_path says, its tokenizer)."""
        return self.name_or_path or (f"{self.from_run.rstrip('/')}/model" if self.from_run else None)

    # auto: flash_attention_2 (if installed) or flex_attention for packed rows on a GPU, sdpa otherwise (resolve.py)
    attn_implementation: Literal["auto", "sdpa", "eager", "flex_attention", "flash_attention_2"] = "auto"
    # weights' dtype. auto: bfloat16 for a frozen LoRA base under bf16 precision (no fp32 master copy needed),
    # float32 otherwise (mixed precision keeps fp32 master weights for full fine-tunes)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"


@dataclass
class TokenizerConfig:
    name_or_path: str | None = None  # default: the model's own tokenizer
    build_from_data: bool = False  # build a character-level tokenizer from the training data (tiny runs)


@dataclass
class DataConfig:
    # a .jsonl/.json/.csv/.parquet file, a save_to_disk folder or a hub dataset id (finetune.datafiles)
    train_file: str = ""
    eval_file: str | None = None
    # the layout of the rows (finetune.formats); auto: per row, from the columns it has
    format: Literal["auto", "messages", "sharegpt", "alpaca", "prompt_completion", "text_label"] = "auto"
    columns: dict | None = None  # the layout's fields read from other columns, e.g. {prompt: question}
    split: str = "train"  # of train_file, for a hub id or a save_to_disk folder holding several splits
    eval_split: str = "test"  # of eval_file, likewise
    subset: str | None = None  # a hub dataset's configuration (load_dataset's name)
    max_length: int = 512  # longer examples are truncated (with a warning count)
    packing: bool = False  # causal_lm: pack several examples per row, attention kept within each example
    labels: list[str] | None = None  # classification: the label set (default: sorted labels of train_file)
    text_field: str = "text"
    label_field: str = "label"
    # a JSON line longer than this many bytes is an error naming file and line (read no further: bounded memory)...
    max_record_bytes: int = MAX_RECORD_BYTES
    long_records: Literal["error", "skip"] = "error"  # ...or, with skip, left out with a line saying so


@dataclass
class LoraConfig:
    enabled: bool = False
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] | None = None  # default: PEFT's choice for the architecture
    quantization: Literal["4bit", "8bit"] | None = None  # QLoRA: the frozen base in 4-bit NF4 or 8-bit (bitsandbytes)


@dataclass
class TrainingConfig:
    epochs: float = 1.0
    max_steps: int | None = None  # overrides epochs when set
    batch_size: int = 32  # global: summed over processes and accumulation steps
    grad_accum: int = 1
    learning_rate: float = 5e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    max_grad_norm: float = 1.0
    logging_steps: int = 10
    eval_steps: int | None = None  # default: evaluate at the end of each epoch
    save_steps: int = 200
    save_total_limit: int = 2
    num_workers: int = 0
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 on a GPU that has it, else fp32
    # Memory and speed levers (resolve.py checks each against the device and the installed packages)
    gradient_checkpointing: bool = False  # recompute activations in backward: much less memory, ~30% more compute
    compile: bool = False  # torch.compile the model (needs a C++ compiler on CPU, a C compiler for Triton on GPU)
    liger_kernel: bool = False  # Liger's Triton kernels: RMSNorm, RoPE, SwiGLU, fused linear cross-entropy (GPU)
    optimizer: Literal["auto", "adamw", "adamw_fused", "adamw_8bit"] = "auto"  # auto: adamw_fused
    fsdp: bool = False  # shard parameters, gradients and optimizer state over processes (accelerate's FSDP2)


@dataclass
class EvalConfig:
    # auto: exact_match (causal_lm), accuracy (classification), preference_accuracy (dpo, kto), mean_reward (grpo)
    metric: Literal["auto", "exact_match", "accuracy", "preference_accuracy", "mean_reward", "none"] = "auto"
    max_new_tokens: int = 32
    batch_size: int = 64
    max_samples: int | None = None


@dataclass
class PreferenceConfig:
    """dpo, kto and grpo (TRL's trainers): how far the policy may move from the reference model."""

    beta: float = 0.1  # the KL penalty's weight: smaller lets the policy drift further (grpo: 0 keeps no reference)


@dataclass
class GrpoConfig:
    """grpo (TRL's GRPOTrainer): the completions sampled per prompt and scored by reward.functions."""

    num_generations: int = 8  # completions per prompt; the advantage is a reward relative to its group's mean
    max_completion_length: int = 32
    temperature: float = 1.0


@dataclass
class RewardConfig:
    """grpo's rewards: built-in names (finetune.rewards.BUILTIN) or user code as module:function, TRL's signature."""

    functions: list[str] = field(default_factory=list)
    weights: list[float] | None = None  # one per function (default: 1 each); the reward is their weighted sum
    reference_field: str = "reference"  # the column exact_match, char_match and length_penalty compare against
    pattern: str | None = None  # format: the regular expression a completion must match in full


PREFERENCE_TASKS = ("dpo", "kto", "grpo")  # run on TRL's trainers (finetune.prefrun)
GENERATIVE_TASKS = ("causal_lm", *PREFERENCE_TASKS)  # their model is a causal LM: generate, export, serve it


@dataclass
class RunConfig:
    name: str = "run"
    task: Literal["causal_lm", "classification", "dpo", "kto", "grpo"] = "causal_lm"
    seed: int = 42
    model: ModelConfig = field(default_factory=ModelConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    preference: PreferenceConfig = field(default_factory=PreferenceConfig)
    grpo: GrpoConfig = field(default_factory=GrpoConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    # experiment trackers (finetune.tracking): each gets the config, metrics, summary, artifacts and provenance tags
    tracking: list[Literal["tensorboard", "mlflow", "wandb"]] = field(default_factory=lambda: ["tensorboard"])

    def __post_init__(self):
        # Not a dataclass field: no YAML key sets it, and to_dict() and the manifest stay plain data. from_dict sets it.
        self.origin: Origin = Origin()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Origin:
    """Where a config's values came from: the file (or another source's name) and the line of each dotted key, as
    tuples (0: a --set override), so that a check made after loading points where the validation's own errors do."""

    source: str = "<config>"
    lines: dict = field(default_factory=dict)


# Keys that moved between sections: a config naming the old place is told the new one; manifests of older runs
# (finetune eval/generate/reproduce) are read with the key in its new place (upgrade_manifest_config).
MOVED = {("model", "gradient_checkpointing"): ("training", "gradient_checkpointing")}


def upgrade_manifest_config(config: dict) -> dict:
    config = {k: dict(v) if isinstance(v, dict) else v for k, v in config.items()}
    for (old_section, key), (new_section, new_key) in MOVED.items():
        if key in config.get(old_section, {}):
            config.setdefault(new_section, {})[new_key] = config[old_section].pop(key)
    return config


def _check_values(cfg: RunConfig) -> None:
    """Cross-field rules that types alone cannot express."""

    def fail(dotted: str, message: str):
        raise config_error(cfg, dotted, message)

    if problem := name_problem(cfg.name):  # becomes runs/<name>: one safe path component
        fail("name", problem)
    if not cfg.data.train_file:
        fail(
            "data.train_file",
            "is required (a JSONL, JSON, CSV or parquet file, a save_to_disk folder, or a hub dataset id)",
        )
    if cfg.data.columns and (problem := check_columns(cfg.data.format, cfg.data.columns)):
        fail("data.columns", problem)
    if cfg.data.format != "auto" and (cfg.task == "classification") != (cfg.data.format == "text_label"):
        fail("data.format", f"{cfg.data.format} does not apply to task {cfg.task}")
    if cfg.task in PREFERENCE_TASKS:
        _check_preference(cfg, fail)
    if sum(map(bool, (cfg.model.name_or_path, cfg.model.config, cfg.model.from_run))) != 1:
        fail(
            "model",
            "set exactly one of model.name_or_path (hub id or directory), model.config (build from scratch) and "
            "model.from_run (an earlier run of this workspace)",
        )
    if cfg.model.from_run and cfg.task not in PREFERENCE_TASKS:
        fail("model.from_run", f"applies to tasks {', '.join(PREFERENCE_TASKS)}; allowed here: model.name_or_path")
    if cfg.model.config and "model_type" not in cfg.model.config:
        fail("model.config", "needs a model_type (for example llama)")
    if not cfg.tokenizer.build_from_data and not (
        cfg.tokenizer.name_or_path or cfg.model.name_or_path or cfg.model.from_run
    ):
        fail(
            "tokenizer",
            "set tokenizer.name_or_path or tokenizer.build_from_data: true when the model is built from a config",
        )
    for dotted, value, low in [
        ("training.batch_size", cfg.training.batch_size, 1),
        ("training.grad_accum", cfg.training.grad_accum, 1),
        ("training.logging_steps", cfg.training.logging_steps, 1),
        ("training.save_steps", cfg.training.save_steps, 1),
        ("training.save_total_limit", cfg.training.save_total_limit, 1),
        ("training.num_workers", cfg.training.num_workers, 0),
        ("data.max_length", cfg.data.max_length, 8),
        ("data.max_record_bytes", cfg.data.max_record_bytes, 1),
        ("lora.r", cfg.lora.r, 1),
        ("eval.max_new_tokens", cfg.eval.max_new_tokens, 1),
        ("eval.batch_size", cfg.eval.batch_size, 1),
    ]:
        if value < low:
            fail(dotted, f"got {value}; allowed: an integer >= {low}")
    for dotted in (
        "training.learning_rate",
        "training.epochs",
        "training.weight_decay",
        "training.max_grad_norm",
        "lora.dropout",
    ):
        section, key = dotted.split(".")
        if not math.isfinite(getattr(getattr(cfg, section), key)):
            fail(dotted, "allowed: a finite number")
    if cfg.training.learning_rate <= 0:
        fail("training.learning_rate", f"got {cfg.training.learning_rate}; allowed: a number > 0")
    if not 0 <= cfg.training.warmup_ratio < 1:
        fail("training.warmup_ratio", f"got {cfg.training.warmup_ratio}; allowed: 0 <= x < 1")
    if cfg.training.max_steps is None and cfg.training.epochs <= 0:
        fail("training.epochs", f"got {cfg.training.epochs}; allowed: a number > 0")
    if cfg.training.max_steps is not None and cfg.training.max_steps < 1:
        fail("training.max_steps", f"got {cfg.training.max_steps}; allowed: an integer >= 1 or null")
    if cfg.training.batch_size % cfg.training.grad_accum:
        fail(
            "training.batch_size",
            f"{cfg.training.batch_size} is not divisible by training.grad_accum={cfg.training.grad_accum}",
        )
    if cfg.task == "classification" and cfg.data.packing:
        fail("data.packing", "applies to task causal_lm only")
    if cfg.lora.quantization and not cfg.lora.enabled:
        fail("lora.quantization", "quantizes the frozen base of a LoRA run: set lora.enabled: true too")
    if cfg.training.fsdp and cfg.lora.quantization:
        fail("training.fsdp", "cannot shard a quantized (QLoRA) base; use lora.quantization: null or fsdp: false")
    if len(set(cfg.tracking)) != len(cfg.tracking):
        fail("tracking", f"got {cfg.tracking}; name each tracker once")
    metric = cfg.eval.metric
    if metric not in ("auto", "none", *TASK_METRICS[cfg.task]):
        allowed = ", ".join(("auto", "none", *TASK_METRICS[cfg.task]))
        fail("eval.metric", f"got {metric}; allowed for task {cfg.task}: {allowed}")


# The eval.metric values each task can compute; the first is what auto means (finetune.resolve.resolve_metric)
TASK_METRICS = {
    "causal_lm": ("exact_match",),
    "classification": ("accuracy",),
    "dpo": ("preference_accuracy",),
    "kto": ("preference_accuracy",),
    "grpo": ("mean_reward", "exact_match"),
}


def _check_preference(cfg: RunConfig, fail) -> None:
    """The rules of dpo, kto and grpo: their data layouts are their own, and grpo needs its rewards."""
    if cfg.data.format != "auto" or cfg.data.columns or cfg.data.packing:
        key = "data.format" if cfg.data.format != "auto" else "data.columns" if cfg.data.columns else "data.packing"
        fail(key, f"does not apply to task {cfg.task} (its rows are read by layout: docs/preference.md)")
    if cfg.tokenizer.build_from_data:
        fail("tokenizer.build_from_data", f"task {cfg.task} keeps the tokenizer of the model it starts from")
    beta, grpo = cfg.preference.beta, cfg.task == "grpo"  # TRL's grpo default is 0: no reference model
    if not (math.isfinite(beta) and (beta >= 0 if grpo else beta > 0)):
        allowed = "a number >= 0 for task grpo (0: no reference model)" if grpo else "a number > 0"
        fail("preference.beta", f"got {beta}; allowed: {allowed}")
    if cfg.task != "grpo":
        if cfg.reward.functions:
            fail("reward.functions", f"got {cfg.reward.functions}; allowed: none for task {cfg.task} (grpo only)")
        return
    if problem := reward_problem(cfg.reward):
        fail(*problem)
    g = cfg.grpo
    if g.num_generations < 2:
        fail("grpo.num_generations", f"got {g.num_generations}; allowed: an integer >= 2 (advantages compare them)")
    if g.max_completion_length < 1:
        fail("grpo.max_completion_length", f"got {g.max_completion_length}; allowed: an integer >= 1")
    if not (math.isfinite(g.temperature) and g.temperature > 0):
        fail("grpo.temperature", f"got {g.temperature}; allowed: a number > 0")
    if cfg.training.batch_size % g.num_generations:
        fail("training.batch_size", f"got {cfg.training.batch_size}; allowed: a multiple of grpo.num_generations "
             f"({g.num_generations}): each batch holds whole groups of completions")  # fmt: skip


def from_dict(data: dict, source: str = "<config>", lines: dict | None = None) -> RunConfig:
    lines = lines or {}
    cfg = build(RunConfig, data, lines, source, MOVED)
    cfg.origin = Origin(source, lines)
    _check_values(cfg)
    return cfg


def config_error(cfg: RunConfig, dotted: str, message: str) -> ConfigError:
    """A ConfigError located like the validation's own ("file:line: key: message"), for checks made after loading."""
    return ConfigError(f"{where(cfg.origin.source, cfg.origin.lines, tuple(dotted.split('.')))}: {message}")


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    data, lines = parse_yaml(text, str(path))
    apply_overrides(data, lines, overrides or [])
    return from_dict(data, str(path), lines)
