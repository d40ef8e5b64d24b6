"""Training to the end a run should reach, resumed or not: the end step a --resume may move (never back), and a
checkpoint saved at the last step resumed without training a step too many. Used by run.py and prefrun.py alike."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_callback import TrainerState
from transformers.trainer_utils import TrainOutput

from finetune import checkpoints
from finetune.rundir import RunDirError


def run_training(trainer, stopper, checkpoint) -> tuple:
    """trainer.train, with the signal handlers restored after; returns (result, real tokens trained by all ranks)."""
    try:
        if checkpoint and resume_target(trainer, checkpoint) == checkpoints.saved_step(Path(checkpoint)):
            result = finished_at(trainer, checkpoint)
        else:
            result = trainer.train(resume_from_checkpoint=checkpoint)
    finally:
        stopper.restore()
    tokens = trainer.accelerator.reduce(  # all ranks; on the training device (NCCL has no CPU backend)
        torch.tensor(trainer.tokens_trained, device=trainer.args.device), reduction="sum"
    )
    return result, int(tokens)


def end_step(trainer) -> int:
    """The step the run ends at, as the Trainer computes it: training.max_steps, else epochs x optimizer steps an
    epoch (its dataloader's batches over grad_accum, rounded up)."""
    if trainer.args.max_steps > 0:
        return trainer.args.max_steps
    per_epoch = math.ceil(len(trainer.get_train_dataloader()) / trainer.args.gradient_accumulation_steps)
    return math.ceil(trainer.args.num_train_epochs * max(per_epoch, 1))


def resume_target(trainer, checkpoint: str) -> int:
    """The end step of a resumed run, said when the config moved it past the checkpoint's; refused (one line) when it
    lies before the checkpoint: steps trained cannot be taken back."""
    step, end = checkpoints.saved_step(Path(checkpoint)), end_step(trainer)
    if end < step:
        raise RunDirError(
            f"{checkpoint} is at step {step}, past the end this config sets (step {end}): training.max_steps or "
            "training.epochs can only grow on --resume; train a new --output-dir for a shorter run"
        )
    if end > step and checkpoints.saved_max_steps(Path(checkpoint)) < end:
        print(f"[finetune] training on from step {step} to step {end} (the learning-rate schedule recomputed for "
              "the new end, continuing at the checkpoint's step)", flush=True)  # fmt: skip
    return end


def finished_at(trainer, checkpoint: str) -> TrainOutput:
    """Resuming from a checkpoint saved at the run's last step (a crash during the final evaluation): the Trainer
    would train one step too many (it fast-forwards into the epoch and steps before it checks max_steps), so the
    checkpoint's weights and state are loaded and no step is trained. train_loss: the last logged one."""
    trainer.state = TrainerState.load_from_json(str(Path(checkpoint) / TRAINER_STATE_NAME))
    trainer._load_from_checkpoint(checkpoint)
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return TrainOutput(trainer.state.global_step, losses[-1] if losses else None, {"train_runtime": 0.0})
