"""grpo's reward functions: the built-in ones, user code named as module:function, and the checks around both.

Every function has TRL's reward signature, `f(prompts, completions, **kwargs) -> list[float]`: one number per
completion; kwargs hold the dataset's other columns (the reference among them) and TRL's own (completion_ids,
trainer_state). A completion is a string, or a list of messages for conversational prompts.

Built-in (reward.functions names them bare; each compares with the column reward.reference_field):
  exact_match     1 when the completion equals the reference (whitespace-stripped), else 0
  char_match      the share of the reference's characters the completion has at the same position, in [0, 1]
  format          1 when the whole completion matches the regular expression reward.pattern, else 0
  length_penalty  minus the completion's length distance to the reference's, as a share of it, in [-1, 0]

A reward that raises, or returns anything but one finite number per completion, stops the run with one line naming
the function (RewardError); the checkpoints already written stay.
"""

from __future__ import annotations

import importlib
import math
import re

from finetune.errors import ConfigError, RewardError

USER_CODE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


def text(completion) -> str:
    """A completion's text: the string, or the content of its messages."""
    if isinstance(completion, list):
        return "".join(m.get("content", "") for m in completion)
    return completion


def exact_match(completion: str, reference: str, cfg) -> float:
    return float(completion.strip() == reference.strip())


def char_match(completion: str, reference: str, cfg) -> float:
    completion, reference = completion.strip(), reference.strip()
    same = sum(a == b for a, b in zip(completion, reference))
    return same / max(len(reference), len(completion), 1)  # extra characters count against it too


def format_match(completion: str, reference: str | None, cfg) -> float:
    return float(re.fullmatch(cfg.pattern, completion.strip()) is not None)


def length_penalty(completion: str, reference: str, cfg) -> float:
    return -min(1.0, abs(len(completion.strip()) - len(reference.strip())) / max(len(reference.strip()), 1))


BUILTIN = {
    "exact_match": exact_match,
    "char_match": char_match,
    "format": format_match,
    "length_penalty": length_penalty,
}
NEEDS_REFERENCE = {"exact_match", "char_match", "length_penalty"}


def reward_problem(reward) -> tuple[str, str] | None:
    """(dotted key, message) for what is wrong with a RewardConfig (grpo), else None. Nothing is imported here."""
    if not reward.functions:
        return "reward.functions", f"got none; allowed: a list of {', '.join(BUILTIN)} or module:function"
    for name in reward.functions:
        if name not in BUILTIN and not USER_CODE.fullmatch(name):
            return "reward.functions", f"got {name!r}; allowed: {', '.join(BUILTIN)} or module:function"
    if reward.weights is not None and len(reward.weights) != len(reward.functions):
        n = len(reward.functions)
        return "reward.weights", f"got {len(reward.weights)} weights; allowed: one per function ({n})"
    if reward.weights is not None and not all(math.isfinite(w) for w in reward.weights):
        return "reward.weights", f"got {reward.weights}; allowed: finite numbers"
    if "format" in reward.functions:
        if not reward.pattern:
            return "reward.pattern", "got none; allowed: a regular expression (the format reward needs one)"
        try:
            re.compile(reward.pattern)
        except re.error as e:
            return "reward.pattern", f"got {reward.pattern!r}; allowed: a regular expression ({e})"
    return None


def user_code(reward) -> list[str]:
    """The functions a config names that are not built in: code of the user's that the run will import and call."""
    return [name for name in reward.functions if name not in BUILTIN]


def load(reward) -> list:
    """The reward functions of a RewardConfig, each checked on every call (checked()). User code is imported here:
    a module or function that is not there is one line."""
    functions = []
    for name in reward.functions:
        if name in BUILTIN:
            functions.append(checked(name, builtin(name, reward)))
            continue
        module_name, _, attr = name.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise ConfigError(f"reward.functions: {name}: cannot import {module_name} ({e})") from None
        if not callable(getattr(module, attr, None)):
            raise ConfigError(f"reward.functions: {name}: {module_name} has no function {attr}")
        functions.append(checked(name, getattr(module, attr)))
    return functions


def builtin(name: str, reward):
    score, field = BUILTIN[name], reward.reference_field

    def builtin_reward(prompts, completions, **kwargs):
        references = kwargs.get(field)
        if name in NEEDS_REFERENCE and references is None:
            raise RewardError(f"reward.functions: {name} compares with the column {field!r}, which the data has not "
                              "(reward.reference_field names it)")  # fmt: skip
        references = references if references is not None else [None] * len(completions)
        return [score(text(c), r, reward) for c, r in zip(completions, references)]

    return builtin_reward


def checked(name: str, function):
    """The function, stopping the run in one line (RewardError) when it raises or returns anything but one finite
    number per completion. Named as in the config: TRL logs rewards/<name>/mean under its __name__."""

    def reward(prompts, completions, **kwargs):
        try:
            values = function(prompts, completions, **kwargs)
        except RewardError:
            raise
        except Exception as e:  # the user's code: any error, said in one line with where it came from
            raise RewardError(f"reward {name} raised {type(e).__name__}: {e}") from None
        if not isinstance(values, (list, tuple)) or len(values) != len(completions):
            got = f"{len(values)} values" if isinstance(values, (list, tuple)) else type(values).__name__
            raise RewardError(f"reward {name} returned {got}; allowed: a list of {len(completions)} numbers, one "
                              "per completion")  # fmt: skip
        for i, v in enumerate(values):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise RewardError(f"reward {name} returned {v!r} for completion {i}; allowed: a finite number")
        return [float(v) for v in values]

    reward.__name__ = name
    return reward
