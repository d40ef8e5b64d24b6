"""A grpo config's reward functions as attributes of this module, for TRL's grpo script: `trl/scripts/grpo.py
--reward_funcs benchmarks.pref_rewards.exact_match ...` imports each dotted path (it puts the working directory on
sys.path), while our configs name the built-in rewards bare (finetune.rewards builds them as closures over the
config's reward section). These are the very functions our run calls: finetune.rewards.load of the same config, each
under TRL's __name__ (so both log rewards/<name>/mean) and with our per-call checks.

The config is the one benchmarks/pref_bench.py gives our run, told through the environment:
  PREF_BENCH_GRPO_CONFIG  the config file (default configs/grpo.yaml)
  PREF_BENCH_GRPO_SET     its --set overrides, a JSON list of "KEY=VALUE" (default none)

attribute(name, index) says under which attribute a function is found here: a built-in's own name, `reward_<index>`
for user code (module:function, which is no attribute name). The config is read on the first such look-up, not on
import: pref_bench imports attribute() from here.
"""

from __future__ import annotations

import json
import os

CONFIG_ENV, SET_ENV = "PREF_BENCH_GRPO_CONFIG", "PREF_BENCH_GRPO_SET"


def attribute(name: str, index: int) -> str:
    return name if name.isidentifier() else f"reward_{index}"


_FUNCTIONS: dict = {}


def __getattr__(name: str):  # PEP 562: TRL's getattr(module, "exact_match") lands here
    if name.startswith("__"):  # what tools probe modules for (__path__, __wrapped__, ...): no config read for it
        raise AttributeError(name)
    if not _FUNCTIONS:
        _FUNCTIONS.update(_load())
    if name not in _FUNCTIONS:
        raise AttributeError(f"{__name__} has no reward {name!r}; the config's: {', '.join(_FUNCTIONS)}")
    return _FUNCTIONS[name]


def _load() -> dict:
    from finetune import rewards
    from finetune.config import load_config

    cfg = load_config(os.environ.get(CONFIG_ENV, "configs/grpo.yaml"), json.loads(os.environ.get(SET_ENV, "[]")))
    functions = rewards.load(cfg.reward)
    return {attribute(name, i): f for i, (name, f) in enumerate(zip(cfg.reward.functions, functions))}
