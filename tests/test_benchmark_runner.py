"""The one runner of the benchmarks, `python -m benchmarks NAME` (benchmarks/runner.py): it lists every benchmark, runs
each by name with the flags of its own command line, and refuses an unknown name in one line (exit 2). In process:
the runs themselves are tests/test_benchmark_scale.py's smoke test."""

from __future__ import annotations

import importlib

import pytest

from benchmarks import BENCHMARKS
from benchmarks.runner import main


def test_the_runner_lists_every_benchmark(capsys):
    assert main([]) == 2  # no name: the list, and a usage error
    listed = capsys.readouterr().out
    assert set(BENCHMARKS) == {"throughput", "scale", "serve", "pref_bench"}
    assert all(f"  {name} " in listed for name in BENCHMARKS), listed


def test_an_unknown_benchmark_is_one_line_and_exit_2(capsys):
    assert main(["nope", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    allowed = "throughput, scale, serve, pref_bench"
    assert err.strip() == f"python -m benchmarks: unknown benchmark 'nope'; allowed: {allowed}"


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_each_benchmark_has_its_command_line_under_the_runner(name, capsys):
    module = importlib.import_module(f"benchmarks.{name}")
    assert callable(module.main)
    with pytest.raises(SystemExit) as info:
        main([name, "--help"])
    assert info.value.code == 0
    shown = capsys.readouterr().out
    assert shown.startswith(f"usage: python -m benchmarks {name} ")
    assert "--out OUT" in shown  # every benchmark writes its JSON report where --out says
    if name != "serve":  # the training benchmarks' shared flags (benchmarks/cli.py); serve trains nothing
        assert "--set KEY=VALUE" in shown
