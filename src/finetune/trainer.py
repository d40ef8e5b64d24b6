"""What we add to the Hugging Face Trainer: atomic checkpoints, a clean stop on SIGTERM/SIGINT, metrics.jsonl,
a count of the real (non-pad) tokens trained on, for an honest tokens/s figure, and one line naming the cause and the
fix when the GPU goes away mid-run (finetune.errors.gpu_lost) instead of a CUDA traceback."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from pathlib import Path

import torch
import torch.distributed as dist
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import ProgressCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from finetune import checkpoints, safefiles
from finetune.errors import gpu_lost

STAGING = ".checkpoint-staging"  # not matched by get_last_checkpoint's "checkpoint-<n>" pattern


class AtomicCheckpoints:
    """Mixed in before a Trainer class (ours below; TRL's in finetune.prefrun): checkpoints that appear whole or not
    at all, and a lost GPU said in one line."""

    tokens_trained = 0  # real (non-pad) tokens trained on; counted where the batches say (FinetuneTrainer)
    _staging = False

    def training_step(self, model, inputs, num_items_in_batch=None):
        with gpu_guard(f"at step {self.state.global_step + 1}"):  # where a lost GPU surfaces: a step's forward/backward
            return super().training_step(model, inputs, num_items_in_batch)

    def _get_output_dir(self, trial):
        run_dir = super()._get_output_dir(trial)
        return os.path.join(run_dir, STAGING) if self._staging else run_dir

    def _save_checkpoint(self, model, trial):
        """Write the checkpoint into a staging folder, seal it (fsync, sizes and digests), then rename it into place:
        a crash or a hard reset leaves no half checkpoint, and a failed write is one line (checkpoints.StorageError)."""
        run_dir = Path(super()._get_output_dir(trial))
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staged, final = run_dir / STAGING / name, run_dir / name
        with checkpoints.storage_errors(staged, cleanup=staged if self.args.should_save else None):
            if self.args.should_save and staged.exists():
                shutil.rmtree(staged)
            self.accelerator.wait_for_everyone()
            self._staging = True
            try:
                super()._save_checkpoint(model, trial)
            finally:
                self._staging = False
            self.accelerator.wait_for_everyone()  # every rank has written its RNG state into the staging folder
            if self.args.should_save:
                checkpoints.seal(staged)
                checkpoints.replace_into_place(staged, final)
                # older checkpoints go only now, after the new one is whole and in place
                checkpoints.rotate(run_dir, self.args.save_total_limit)
        self.accelerator.wait_for_everyone()


class FinetuneTrainer(AtomicCheckpoints, Trainer):
    """A Trainer whose checkpoints appear whole or not at all, and that counts real tokens."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        num_tokens = inputs.pop("num_tokens", None)
        if num_tokens is not None and model.training:
            self.tokens_trained += int(num_tokens)
        return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs.pop("num_tokens", None)
        with gpu_guard(f"in the evaluation after step {self.state.global_step}"):
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)


@contextlib.contextmanager
def gpu_guard(where: str):
    """A lost GPU (finetune.errors.gpu_lost) becomes its one-line GpuLost, saying where; other errors pass unchanged."""
    try:
        yield
    except Exception as err:
        lost = gpu_lost(err, where)
        if lost is None:
            raise
        raise lost from err


class GracefulStop(TrainerCallback):
    """On SIGTERM (a preempted VM, `docker stop`) or SIGINT (Ctrl-C): finish the step, checkpoint, stop.

    A second SIGINT stops at once. Under torchrun the flag is agreed across ranks, so all stop at the same step.
    """

    def __init__(self):
        self.signum: int | None = None
        self._previous = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        print(
            f"\n[finetune] {signal.Signals(signum).name} received: saving a checkpoint at the end of this step, "
            "then stopping (resume with --resume)",
            flush=True,
        )

    def restore(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _agreed(self, device) -> bool:
        flag = self.signum is not None
        if dist.is_available() and dist.is_initialized():
            # on the training device: NCCL (every CUDA run under torchrun) has no CPU backend, and a CPU tensor
            # there fails the first step with "No backend type associated with device type cpu"
            t = torch.tensor([int(flag)], device=device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            flag = bool(t.item())
            if flag and self.signum is None:
                self.signum = signal.SIGTERM
        return flag

    def on_step_end(self, args, state, control, **kwargs):
        if self._agreed(args.device):
            control.should_save = True
            control.should_training_stop = True
            control.should_evaluate = False


class MetricsLog(TrainerCallback):
    """Append every log event (train loss, eval loss, learning rate...) as one JSON line to metrics.jsonl."""

    def __init__(self, path: Path):
        self.path = path
        self.start = time.time()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        row = {
            "step": state.global_step,
            "epoch": round(state.epoch or 0.0, 4),
            "time": round(time.time() - self.start, 3),
            **logs,
        }
        safefiles.append_line(self.path, json.dumps(row))


class QuietProgress(ProgressCallback):
    """The Trainer's progress bar, with the latest losses in its postfix instead of a printed dict per log step
    (metrics.jsonl and TensorBoard keep every value)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs:
            shown = {k: f"{logs[k]:.4g}" for k in ("loss", "eval_loss", "eval_accuracy") if k in logs}
            if shown:
                self.training_bar.set_postfix(shown, refresh=False)
