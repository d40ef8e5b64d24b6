"""Derived settings, resolved once next to validation: what each `auto` means on this machine, and whether each
speed or memory lever (device, installed package, compiler) and each tracker (its package, where it logs) can work
here.

config.py checks what a config says; this module checks it against the machine it runs on, with the same
"file:line: key: message" errors, before any data is read or a model is built. The result is plain data that
run.py, modeling.py and the manifest use: nothing downstream decides "auto" again.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
from dataclasses import dataclass

import torch

from finetune import datafiles, tracking
from finetune.config import PREFERENCE_TASKS, TASK_METRICS, RunConfig, config_error
from finetune.prefdata import check_from_run

# Our optimizer names -> the Trainer's `optim` names
OPTIMIZERS = {"adamw": "adamw_torch", "adamw_fused": "adamw_torch_fused", "adamw_8bit": "adamw_bnb_8bit"}
DEV_IMAGE_HINT = "the dev image has one (invoke shell, invoke test --docker, the devcontainer)"


@dataclass(frozen=True)
class Settings:
    device: str  # cuda | cpu
    precision: str  # fp32 | bf16 | fp16 (mixed precision through the Trainer)
    dtype: str  # the weights' dtype: float32 | bfloat16 | float16
    attn_implementation: str  # what transformers is given
    optimizer: str  # our name (adamw, adamw_fused, adamw_8bit); OPTIMIZERS maps it to the Trainer's
    per_device_batch: int  # rows per process per micro-step
    metric: str  # exact_match | accuracy | none

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def has_package(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def find_compiler(env_var: str, names: tuple[str, ...]) -> str | None:
    """The compiler torch would use: $CXX / $CC when set, else the first of names on PATH."""
    wanted = os.environ.get(env_var)
    return shutil.which(wanted) if wanted else next((p for p in map(shutil.which, names) if p), None)


def c_compiler() -> str | None:  # Triton builds a small C launcher for every new kernel
    return find_compiler("CC", ("cc", "gcc", "clang"))


def cxx_compiler() -> str | None:  # inductor on CPU compiles C++
    return find_compiler("CXX", ("g++", "c++", "clang++"))


def resolve(cfg: RunConfig, world_size: int = 1, cuda: bool | None = None) -> Settings:
    """Settings for cfg on this machine (cuda: whether a CUDA GPU is used; default: whether one is visible)."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    precision = _precision(cfg, cuda)
    _check_levers(cfg, cuda)
    tracking.check(cfg.tracking, lambda message: config_error(cfg, "tracking", message))
    _check_data_readers(cfg)
    if cfg.task in PREFERENCE_TASKS:
        _need_package(cfg, "task", "trl", "trl")
        check_from_run(cfg)
    return Settings(
        device="cuda" if cuda else "cpu",
        precision=precision,
        dtype=_dtype(cfg, precision),
        attn_implementation=_attention(cfg, cuda),
        optimizer=_optimizer(cfg),
        per_device_batch=_per_device_batch(cfg, world_size),
        metric=resolve_metric(cfg),
    )


def _precision(cfg: RunConfig, cuda: bool) -> str:
    p = cfg.training.precision
    if p == "auto":
        return "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    if p == "fp16" and not cuda:
        raise config_error(cfg, "training.precision", "fp16 needs a CUDA GPU (none is visible); use auto or fp32")
    return p


def _dtype(cfg: RunConfig, precision: str) -> str:
    d = cfg.model.dtype
    if d == "auto":  # a frozen base needs no fp32 master copy; trained weights keep one under mixed precision
        return "bfloat16" if cfg.lora.enabled and precision == "bf16" else "float32"
    if d == "float16" and precision == "fp16" and not cfg.lora.enabled:
        raise config_error(
            cfg, "model.dtype", "float16 weights cannot be trained under fp16 mixed precision; use float32 or bfloat16"
        )
    return d


def _attention(cfg: RunConfig, cuda: bool) -> str:
    a = cfg.model.attn_implementation
    if a == "auto":
        if not (cuda and cfg.data.packing):
            return "sdpa"  # padded batches: sdpa's fused kernels; on CPU the best there is
        if has_package("flash_attn"):
            return "flash_attention_2"  # varlen kernel: packed rows without any mask
        # flex attention skips the blocks that the per-example mask of a packed row excludes; it needs Triton
        return "flex_attention" if c_compiler() else "sdpa"
    if a == "flex_attention":
        if not cuda:
            raise config_error(
                cfg, "model.attn_implementation", "flex_attention has no CPU backward in PyTorch; use auto or sdpa"
            )
        _need_c_compiler(cfg, "model.attn_implementation", "flex attention")
    if a == "flash_attention_2":
        if not cuda:
            raise config_error(cfg, "model.attn_implementation", "flash_attention_2 needs a CUDA GPU; use auto or sdpa")
        _need_package(cfg, "model.attn_implementation", "flash_attn", "flash-attn")
    return a


def _optimizer(cfg: RunConfig) -> str:
    o = cfg.training.optimizer
    if o == "auto":  # fused AdamW (one kernel for all parameters) on CPU and GPU, as the Trainer's own default
        return "adamw_fused"
    if o == "adamw_8bit":
        _need_package(cfg, "training.optimizer", "bitsandbytes", "bitsandbytes")
    return o


def _check_data_readers(cfg: RunConfig) -> None:
    """Parquet, save_to_disk folders and hub ids are read with `datasets` (with pyarrow and pandas), which `make venv`
    and every image have (the cpu image since issue 26); an environment of one's own may not: say so before any work,
    not as an ImportError mid-run."""
    for key in ("train_file", "eval_file"):
        source = getattr(cfg.data, key)
        if source and datafiles.reader_of(source) in ("datasets", "hub") and not has_package("datasets"):
            raise config_error(
                cfg,
                f"data.{key}",
                f"{source} is read with the datasets package, which is not installed here (`make venv` and the "
                "images have it): pip install datasets, or convert it to JSONL",
            )


def _check_levers(cfg: RunConfig, cuda: bool) -> None:
    t = cfg.training
    if t.compile and not cuda and not cxx_compiler():
        raise config_error(
            cfg,
            "training.compile",
            f"torch.compile on CPU needs a C++ compiler and none was found ($CXX, g++, c++, clang++): "
            f"install one (Debian/Ubuntu: apt-get install g++) or set it to false; {DEV_IMAGE_HINT}",
        )
    if t.compile and cuda:
        _need_c_compiler(cfg, "training.compile", "torch.compile")
    if t.liger_kernel:
        if not cuda:
            raise config_error(
                cfg, "training.liger_kernel", "Liger's kernels are Triton GPU kernels and no CUDA GPU is visible"
            )
        _need_package(cfg, "training.liger_kernel", "liger_kernel", "liger-kernel")
        _need_c_compiler(cfg, "training.liger_kernel", "Liger's Triton kernels")
    if cfg.lora.quantization:
        _need_package(cfg, "lora.quantization", "bitsandbytes", "bitsandbytes")
    if t.fsdp and not cuda:  # accelerate enables FSDP on accelerators only; on CPU processes it would be plain DDP
        raise config_error(
            cfg, "training.fsdp", "FSDP runs on CUDA GPUs only (accelerate has no CPU FSDP); set it to false on CPU"
        )


def _need_package(cfg: RunConfig, dotted: str, module: str, dist: str) -> None:
    if not has_package(module):
        raise config_error(
            cfg, dotted, f"needs the {dist} package, which is not installed (the cuda image has it; pip install {dist})"
        )


def _need_c_compiler(cfg: RunConfig, dotted: str, what: str) -> None:
    if not c_compiler():
        raise config_error(
            cfg,
            dotted,
            f"{what} runs Triton, which needs a C compiler, and none was found ($CC, cc, gcc, clang): "
            "install one (Debian/Ubuntu: apt-get install gcc); the cuda images have one",
        )


def _per_device_batch(cfg: RunConfig, world_size: int) -> int:
    t = cfg.training
    per_device, rest = divmod(t.batch_size, world_size * t.grad_accum)
    if rest or per_device < 1:
        raise config_error(
            cfg,
            "training.batch_size",
            f"{t.batch_size} must be a multiple of processes ({world_size}) x training.grad_accum ({t.grad_accum})",
        )
    return per_device


def resolve_metric(cfg: RunConfig) -> str:
    """eval.metric with auto decided: exact_match for causal_lm, accuracy for classification, preference_accuracy
    for dpo and kto, mean_reward for grpo (config.TASK_METRICS)."""
    if cfg.eval.metric != "auto":
        return cfg.eval.metric
    return TASK_METRICS[cfg.task][0]
