"""YAML with line numbers, read into typed dataclasses: every key path's line is kept, so an unknown key, a wrong type
or a bad --set names the file, the line, the dotted key and what is allowed ("configs/x.yaml:12: training.lr:
unknown key (allowed: ...)"). Generic: config.py gives it the schema (its dataclasses) and the keys that moved.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal

import yaml

from finetune.errors import ConfigError


def node_to_python(node: yaml.Node, lines: dict[tuple, int], path: tuple = ()) -> Any:
    """Turn a composed YAML node into plain Python, recording the line of each key path."""
    lines.setdefault(path, node.start_mark.line + 1)  # a key's own line wins over its value's first line
    if isinstance(node, yaml.MappingNode):
        out = {}
        for key_node, value_node in node.value:
            key = key_node.value
            lines[path + (key,)] = key_node.start_mark.line + 1
            out[key] = node_to_python(value_node, lines, path + (key,))
        return out
    if isinstance(node, yaml.SequenceNode):
        return [node_to_python(v, lines, path + (i,)) for i, v in enumerate(node.value)]
    return yaml.constructor.SafeConstructor().construct_object(node, deep=True)  # a scalar, by YAML's own rules


def parse_yaml(text: str, source: str) -> tuple[dict, dict[tuple, int]]:
    lines: dict[tuple, int] = {}
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = node_to_python(node, lines) if node is not None else {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{source}{line}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}:1: the config must be a mapping of keys to values")
    return data, lines


def describe(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {describe(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string", dict: "a mapping"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def coerce(value, tp, where: str):
    """Return value converted to tp, or raise ConfigError saying what is allowed."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return coerce(value, arg, where)
            except ConfigError:
                continue
    elif origin is Literal:
        if value in typing.get_args(tp):
            return value
    elif origin is list:
        if isinstance(value, list):
            return [coerce(v, typing.get_args(tp)[0], where) for v in value]
    elif tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string; accept it as the number it means
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is dict and isinstance(value, dict):
        return value
    raise ConfigError(f"{where}: got {value!r}; allowed: {describe(tp)}")


def where(source: str, lines: dict, keypath: tuple) -> str:
    dotted = ".".join(map(str, keypath))
    if not lines:  # a dict (a run's manifest.json): no line numbers to give, and none made up
        return f"{source}: {dotted}"
    line = lines.get(keypath, lines.get(keypath[:1], 1))
    return f"--set {dotted}" if line == 0 else f"{source}:{line}: {dotted}"


def build(cls, data: dict, lines: dict, source: str, moved: dict, path: tuple = ()):
    """cls from data, every key and value checked against its field; moved: {old key path: new key path}."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        at = where(source, lines, path + (key,))
        if path + (key,) in moved:
            raise ConfigError(f"{at}: moved to {'.'.join(moved[path + (key,)])}")
        if key not in names:
            raise ConfigError(f"{at}: unknown key (allowed: {', '.join(names)})")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(
                    f"{at}: must be a mapping with keys {', '.join(f.name for f in dataclasses.fields(tp))}"
                )
            kwargs[key] = build(tp, value, lines, source, moved, path + (key,))
        else:
            kwargs[key] = coerce(value, tp, at)
    return cls(**kwargs)


def apply_overrides(data: dict, lines: dict, overrides: list[str]) -> None:
    """--set KEY=VALUE items into data (VALUE read as YAML); their line is 0: "from the command line"."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item}: expected key=value, for example --set training.epochs=2")
        dotted, raw = item.split("=", 1)
        keys = dotted.strip().split(".")
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {dotted}: {k} is not a section")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        node[keys[-1]] = value
        for i in range(1, len(keys)):  # line 0 marks "from the command line"; new sections come from it too
            lines.setdefault(tuple(keys[:i]), 0)
        lines[tuple(keys)] = 0
