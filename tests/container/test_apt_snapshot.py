"""docker/apt/install in a real build (issue 29: apt pinned to a dated snapshot): a two-line Dockerfile on the CPU
base installs tini through it, with no layer cache. Here snapshot.debian.org is the STAND-IN
(tests/container/standin/snapshot_server.py: today's mirror under snapshot URLs, started by `docker/engine.sh
snapshot`), so this shows the pinned path works end to end (sources rewritten to the date's URL, Release files past
Valid-Until accepted, the base's /etc/apt untouched, a source with no snapshot left out, nothing left in the layer),
not that the date gives that day's versions. The images built by `invoke build` take the same path
(helpers_standins.py passes the stand-in's URL); the label check is in test_images.py.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest
import yaml

from .conftest import REPO
from .helpers_standins import STANDIN_DEBIAN

pytestmark = [pytest.mark.container, pytest.mark.slow]

SHIPPED = yaml.safe_load((REPO / "invoke.yaml").read_text())["image"]
LOG = Path("/tmp/finetune-engine/snapshot.log")
DOCKERFILE = """\
ARG BASE
FROM ${BASE}
ARG APT_SNAPSHOT
ARG APT_SNAPSHOT_DEBIAN
ARG APT_SNAPSHOT_UBUNTU
ARG APT_LEFTOVERS=/var/lib/apt/lists/*
ARG DROP_BASE_SOURCES=""
RUN if [ -n "${DROP_BASE_SOURCES}" ]; then rm -f /etc/apt/sources.list /etc/apt/sources.list.d/*; fi \
    && { cat /etc/apt/sources.list /etc/apt/sources.list.d/* > /before 2>/dev/null || true; }
COPY extra/ /etc/apt/sources.list.d/
RUN --mount=type=bind,source=docker/apt,target=/mnt bash /mnt/install tini
"""


@pytest.fixture
def build(engine, standins, tmp_path):
    base = STANDIN_DEBIAN if standins else SHIPPED["base_images"]["cpu"]
    url = (standins or {"image": SHIPPED})["image"]["apt_snapshot"]["debian"]
    ctx = tmp_path / "ctx"
    shutil.copytree(REPO / "docker" / "apt", ctx / "docker" / "apt")
    (ctx / "extra").mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE)

    def run(date: str, extra: dict[str, str] | None = None, check=True, drop_base=False):
        for name, text in (extra or {}).items():
            (ctx / "extra" / name).write_text(text)
        tag = f"apt-snapshot-test:{uuid.uuid4().hex[:8]}"
        args = ["build", "--no-cache", "--progress=plain", "--tag", tag, "--build-arg", f"BASE={base}"]
        args += ["--build-arg", f"APT_SNAPSHOT={date}", "--build-arg", f"APT_SNAPSHOT_DEBIAN={url}"]
        args += ["--build-arg", f"DROP_BASE_SOURCES={'1' if drop_base else ''}", ctx]
        before = LOG.read_text().count("\n") if LOG.exists() else 0
        proc = engine(*args, check=check)
        served = LOG.read_text().splitlines()[before:] if LOG.exists() else []
        return proc, tag, served

    return run


def test_packages_come_from_the_dated_snapshot_and_the_bases_sources_stay(engine, standins, build):
    if not standins:
        pytest.skip("the real snapshot.debian.org is used: the stand-in's request log is not there to read")
    date = SHIPPED["apt_snapshot"]["date"]
    nvidia = "deb https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2404/x86_64/ /\n"
    proc, tag, served = build(date, {"cuda.list": nvidia})
    out = proc.stdout + proc.stderr
    assert f"apt-install: from the snapshot {date}" in out, out[-3000:]
    assert "apt-install: /etc/apt/sources.list.d/cuda.list left out of this install: no snapshot of its archive" in out
    fetched = [line.split() for line in served]
    assert any(f[2:4] == ["debian", date] and f[4].endswith("InRelease") for f in fetched), served
    assert any(f[2:4] == ["debian", date] and "/tini_" in f[4] and f[5] == "200" for f in fetched), served
    # the image: tini installed; /etc/apt as the base's (plus the list this test added); no lists left in the layer
    check = (
        "test -x /usr/bin/tini && cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources 2>/dev/null"
        " | cmp - /before && ls -A /var/lib/apt/lists | grep -v '^partial$' | wc -l && ls /tmp"
    )
    inside = engine("run", "--rm", tag, "bash", "-c", check)
    assert inside.stdout.split() == ["0"], inside.stdout
    engine("image", "rm", tag)


def test_an_empty_date_installs_from_the_bases_own_sources(engine, standins, build):
    proc, tag, served = build("")
    out = proc.stdout + proc.stderr
    assert "apt-install: from the snapshot" not in out and "Unpacking tini" in out, out[-3000:]
    assert served == []
    engine("image", "rm", tag)


def test_a_base_with_no_archive_that_has_snapshots_stops_the_build_naming_the_way_out(engine, standins, build):
    nvidia = "deb https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2404/x86_64/ /\n"
    proc, _, served = build(SHIPPED["apt_snapshot"]["date"], {"cuda.list": nvidia}, check=False, drop_base=True)
    assert proc.returncode != 0
    assert (
        "apt-install: APT_SNAPSHOT=20260918T000000Z, but no source of this base is a Debian or Ubuntu archive "
        "(deb.debian.org, archive.ubuntu.com, ...): build with APT_SNAPSHOT empty to use the base's sources as they are"
    ) in proc.stdout + proc.stderr
    assert served == []
