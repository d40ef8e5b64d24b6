"""The images the container tests share, built once per session through `invoke build` as a user builds them."""

from __future__ import annotations

import pytest
import yaml

from .helpers_engine import FIGURES, REPO
from .helpers_workspace import Workspace


def within_budget(built: dict, key: str) -> None:
    """The image `built` is no bigger than invoke.yaml's image.size_budget_mb[key] (the one place of the budgets);
    the measured size and the budget are printed with the session's figures."""
    budget = yaml.safe_load((REPO / "invoke.yaml").read_text())["image"]["size_budget_mb"][key]
    measured = round(built["size"] / 1e6)
    FIGURES[f"{key}: size / budget MB"] = f"{measured} / {budget}"
    assert measured <= budget, f"{built['image']} is {measured} MB, over its budget of {budget} MB (invoke.yaml)"


@pytest.fixture(scope="session")
def runtime_image(workspace: Workspace) -> dict:
    built = workspace.build("runtime", "--no-cache")  # every layer built (downloads come from BuildKit's cache)
    FIGURES["cpu runtime: full build s (--no-cache)"] = round(built["seconds"], 1)
    FIGURES["cpu runtime: image size MB"] = round(built["size"] / 1e6)
    return built


@pytest.fixture(scope="session")
def dev_image(workspace: Workspace, runtime_image: dict) -> dict:
    built = workspace.build("dev")
    FIGURES["cpu dev: build s (after runtime)"] = round(built["seconds"], 1)
    FIGURES["cpu dev: image size MB"] = round(built["size"] / 1e6)
    return built
