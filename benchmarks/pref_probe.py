"""Where a dpo or grpo run's time goes, for benchmarks/pref_bench.py: one command run in this process with clocks
around the trainer's methods (TRL's and the Trainer's); the command itself is unchanged.

    python -m benchmarks.pref_probe OUT.json -- finetune train configs/grpo.yaml --set ...   # ours
    python -m benchmarks.pref_probe OUT.json -- .../trl/scripts/grpo.py --dataset_name ...   # TRL's script

`finetune ...` runs finetune.cli.main in this process; a path to a .py file (a python interpreter before it is left
out) runs that script as __main__ (runpy), as `python SCRIPT` would. Before it starts, the clocks are put on the
classes both commands build their trainer from, never on finetune's code (which runs as it is):

  transformers.Trainer.train      wrapped to add one TrainerCallback, StepClock, to the trainer it trains: each
                                  optimizer step's seconds from on_step_begin to on_step_end (forward and backward
                                  passes, a grpo step's generation, the optimizer step) and its CPU seconds (the
                                  process's, time.process_time), and when the training loop began and ended (and
                                  the process's CPU seconds then); also the trainer's own _save_checkpoint (ours:
                                  finetune's atomic one; TRL's script: TRL's), timed on that one instance
  trl.GRPOTrainer (grpo)          _generate_and_score_completions: a step's completions sampled and scored (the
                                  rewards, the old and the reference model's log-probabilities, the advantages);
                                  inside it _generate (the sampling: tokenizing, model.generate, decoding) and
                                  _calculate_rewards (the reward functions)
  trl.DPOTrainer.__init__,        when the trainer was built (TRL's __init__: the reference model, the dataset's
  trl.GRPOTrainer.__init__,       tokenizing; in TRL's script also the model), and when the final model was saved
  transformers.Trainer.save_model (the command's own save_model call, not a checkpoint's)

OUT.json: the marks init_begin, init_end, train_begin, train_end, save_begin and save_end (time.time(): pref_bench
lays them beside the start and end it took of the process), train_begin_cpu and train_end_cpu, "steps": [{"step",
"seconds", "cpu", "generate_and_score", "generate", "rewards"}] and "checkpoints": [seconds, ...]; written when
training returns and when the model is saved. The wrappers cost a perf_counter pair per call, a few calls a step;
pref_bench's timed runs go without them.
"""

from __future__ import annotations

import functools
import json
import runpy
import sys
import time
from pathlib import Path

GRPO_METHODS = {  # GRPOTrainer method -> its key in a step's record
    "_generate_and_score_completions": "generate_and_score",
    "_generate": "generate",
    "_calculate_rewards": "rewards",
}


class Record:
    """What the clocks measured, written to OUT.json."""

    def __init__(self, out: Path):
        self.out, self.steps, self.checkpoints = out, [], []
        self.current: dict = {}  # the step under way: seconds per timed method
        self.marks: dict = {}

    def add(self, key: str, seconds: float) -> None:
        self.current[key] = self.current.get(key, 0.0) + seconds

    def write(self) -> None:
        self.out.write_text(json.dumps({**self.marks, "steps": self.steps, "checkpoints": self.checkpoints}) + "\n")


def timed(function, seconds_to):
    """function, calling seconds_to(seconds) after each call."""

    @functools.wraps(function)
    def clocked(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            seconds_to(time.perf_counter() - start)

    return clocked


def install(record: Record) -> None:
    """The clocks: the Trainer's train (StepClock, _save_checkpoint) and GRPOTrainer's generation methods."""
    import trl
    from transformers import Trainer, TrainerCallback

    class StepClock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            record.marks["train_begin"], record.marks["train_begin_cpu"] = time.time(), time.process_time()

        def on_step_begin(self, args, state, control, **kwargs):
            record.current, self.started, self.cpu = {}, time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kwargs):
            seconds, cpu = time.perf_counter() - self.started, time.process_time() - self.cpu
            record.steps.append({"step": state.global_step, "seconds": seconds, "cpu": cpu, **record.current})

        def on_train_end(self, args, state, control, **kwargs):
            record.marks["train_end"], record.marks["train_end_cpu"] = time.time(), time.process_time()

    for name, key in GRPO_METHODS.items():
        setattr(trl.GRPOTrainer, name, timed(getattr(trl.GRPOTrainer, name), functools.partial(record.add, key)))
    train = Trainer.train

    @functools.wraps(train)
    def clocked_train(self, *args, **kwargs):
        self.add_callback(StepClock())
        self._save_checkpoint = timed(self._save_checkpoint, record.checkpoints.append)  # this instance only
        try:
            return train(self, *args, **kwargs)
        finally:
            record.write()

    Trainer.train = clocked_train
    for trainer_class in (trl.DPOTrainer, trl.GRPOTrainer):
        trainer_class.__init__ = clocked_init(trainer_class.__init__, record)
    save_model = Trainer.save_model

    @functools.wraps(save_model)
    def clocked_save_model(self, output_dir=None, _internal_call=False):
        if _internal_call:  # a checkpoint's: timed as the checkpoint
            return save_model(self, output_dir, _internal_call)
        record.marks["save_begin"] = time.time()
        save_model(self, output_dir, _internal_call)
        record.marks["save_end"] = time.time()
        record.write()

    Trainer.save_model = clocked_save_model


def clocked_init(init, record: Record):
    """A trainer class's __init__, marking when the first trainer's construction began and ended."""

    @functools.wraps(init)
    def clocked(self, *args, **kwargs):
        first = "init_begin" not in record.marks
        if first:
            record.marks["init_begin"] = time.time()
        init(self, *args, **kwargs)
        if first:
            record.marks["init_end"] = time.time()

    return clocked


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m benchmarks.pref_probe OUT.json -- COMMAND [ARGS ...]", file=sys.stderr)
        return 2
    out, command = Path(argv[0]), argv[2:]
    if Path(command[0]).name.startswith("python"):
        command = command[1:]
    install(Record(out))
    if Path(command[0]).name == "finetune":
        from finetune.cli import main as finetune_main

        return finetune_main(command[1:])
    sys.argv = command
    runpy.run_path(command[0], run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
