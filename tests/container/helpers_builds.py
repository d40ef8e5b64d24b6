"""The images the container tests share, built once per session through `invoke build` as a user builds them."""

from __future__ import annotations

import pytest

from .helpers_engine import FIGURES
from .helpers_workspace import Workspace


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
