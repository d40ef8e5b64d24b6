"""The timing callback of benchmarks/scale.py, the same in both Trainers (imported only by the run's subprocess).

StepClock synchronizes the GPU and notes (time, real tokens) at the end of the last warm-up step and at the last step;
tokens/s is the difference. The real-token count is each Trainer's own: ours' tokens_trained, the plain Trainer's
num_input_tokens_seen with include_num_input_tokens_seen="non_padding". It also keeps each step's end time and token
count (no extra sync) for the "steady" figure, which leaves out stalls: timed steps over 3x the median step.
"""

from __future__ import annotations

import time

import torch
from transformers import TrainerCallback

from benchmarks.scale_shapes import count_params


class StepClock(TrainerCallback):
    """Synchronize the GPU and note (step, time, real tokens) at the end of step `warmup` (or at the start when 0) and
    at the last step; also each step's end time and token count, and the model's parameter counts."""

    def __init__(self, warmup: int, tokens=None):
        self.warmup = warmup
        self.tokens = tokens  # state -> real tokens trained so far, by the trainer's own count
        self.marks: list[tuple[int, float, int]] = []
        self.ends: list[tuple[float, int]] = []  # per step: (perf_counter, tokens so far), no extra sync
        self.params: dict = {}
        self.begin = None

    def _mark(self, state):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.marks.append((state.global_step, time.perf_counter(), int(self.tokens(state))))

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is not None:
            self.params = count_params(model)
        self.begin = time.perf_counter()
        if self.warmup == 0:
            self._mark(state)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.warmup or state.global_step == state.max_steps:
            self._mark(state)
        self.ends.append((time.perf_counter(), int(self.tokens(state))))
        if state.global_step >= state.max_steps:
            control.should_save = False  # both Trainers checkpoint at the last step otherwise (after the clock)

    def on_train_end(self, args, state, control, **kwargs):
        if not self.marks or self.marks[-1][0] != state.global_step:
            self._mark(state)

    def result(self) -> dict:
        """Per-step seconds and tokens, parameter counts, the start time, and the timed window ("timed", None when
        the run did not get past warm-up)."""
        times = [self.begin, *(t for t, _ in self.ends)]
        counts = [0, *(k for _, k in self.ends)]
        seconds = [b - a for a, b in zip(times, times[1:])]
        tokens = [b - a for a, b in zip(counts, counts[1:])]
        out = {"step_seconds": seconds, "step_tokens": tokens, "params": self.params, "timed": None}
        if len(self.marks) >= 2 and self.marks[0][0] == self.warmup and self.marks[-1][0] > self.warmup:
            (s0, t0, k0), (s1, t1, k1) = self.marks[0], self.marks[-1]
            timed = {"steps": s1 - s0, "tokens": k1 - k0, "seconds": t1 - t0}
            timed["tokens_per_second"] = timed["tokens"] / timed["seconds"]
            timed["tokens_per_step"] = timed["tokens"] / timed["steps"]
            # stalls: timed steps over 3x the median step (a recompilation, an allocator retry...)
            window = list(zip(seconds[s0:s1], tokens[s0:s1]))
            typical = sorted(d for d, _ in window)[len(window) // 2]
            steady = [(d, k) for d, k in window if d <= 3 * typical]
            timed["stalled_steps"] = len(window) - len(steady)
            timed["stalled_seconds"] = sum(d for d, _ in window if d > 3 * typical)
            timed["steady_tokens_per_second"] = sum(k for _, k in steady) / sum(d for d, _ in steady)
            out["timed"] = timed
        return out
