"""apt from a dated snapshot (issue 29) without an engine: docker/apt/install's rewrite of each kind of sources file
(Debian one-line and deb822, Ubuntu's archive, security and ports, a source with no snapshot), its refusals, the
build arguments and label `invoke build` passes, and that every package install in docker/Dockerfile goes through
it. The builds through it, for real (the stand-in for snapshot.debian.org): tests/container/test_apt_snapshot.py.
"""

from __future__ import annotations

import re
import shlex
import subprocess

import pytest
import yaml
from fakes import fake_host

from conftest import REPO, invoke, plain

INSTALL = REPO / "docker" / "apt" / "install"
SHIPPED = yaml.safe_load((REPO / "invoke.yaml").read_text())["image"]["apt_snapshot"]
DATE = "20260918T000000Z"


def rewrite(tmp_path, text: str, **env) -> subprocess.CompletedProcess:
    src = tmp_path / "sources"
    src.write_text(text)
    return subprocess.run(
        ["bash", str(INSTALL), "--rewrite", str(src)],
        env={"PATH": "/usr/bin:/bin", "APT_SNAPSHOT": DATE, **env},
        capture_output=True,
        text=True,
    )


@pytest.mark.parametrize(
    "line, pinned",
    [
        (
            "deb http://deb.debian.org/debian bookworm main",
            f"deb http://snapshot.debian.org/archive/debian/{DATE}/ bookworm main",
        ),
        (
            "deb http://deb.debian.org/debian-security bookworm-security main",
            f"deb http://snapshot.debian.org/archive/debian-security/{DATE}/ bookworm-security main",
        ),
        (
            "deb https://security.debian.org/debian-security/ bookworm-security main",
            f"deb http://snapshot.debian.org/archive/debian-security/{DATE}/ bookworm-security main",
        ),
        ("URIs: http://deb.debian.org/debian", f"URIs: http://snapshot.debian.org/archive/debian/{DATE}/"),
        ("URIs: http://archive.ubuntu.com/ubuntu/", f"URIs: http://snapshot.ubuntu.com/ubuntu/{DATE}/"),
        ("URIs: http://us.archive.ubuntu.com/ubuntu/", f"URIs: http://snapshot.ubuntu.com/ubuntu/{DATE}/"),
        ("URIs: http://security.ubuntu.com/ubuntu/", f"URIs: http://snapshot.ubuntu.com/ubuntu/{DATE}/"),
        ("URIs: http://ports.ubuntu.com/ubuntu-ports/", f"URIs: http://snapshot.ubuntu.com/ubuntu-ports/{DATE}/"),
        (  # NVIDIA's CUDA repository (in the CUDA base): no snapshot of it, so unchanged (the install leaves it out)
            "deb [signed-by=/usr/share/keyrings/cuda-archive-keyring.gpg] "
            "https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2404/x86_64/ /",
            "deb [signed-by=/usr/share/keyrings/cuda-archive-keyring.gpg] "
            "https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2404/x86_64/ /",
        ),
    ],
)
def test_each_archive_url_becomes_its_snapshots_and_other_sources_stay(tmp_path, line, pinned):
    proc = rewrite(tmp_path, f"# a comment stays\n{line}\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"# a comment stays\n{pinned}\n"


def test_a_deb822_file_keeps_every_other_field_and_a_site_mirror_of_the_snapshots_is_used(tmp_path):
    text = (
        "Types: deb\n# http://snapshot.debian.org/archive/debian/20250520T000000Z\nURIs: http://deb.debian.org/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )
    proc = rewrite(tmp_path, text, APT_SNAPSHOT_DEBIAN="http://mirror.example/snap/")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == text.replace("http://deb.debian.org/debian", f"http://mirror.example/snap/debian/{DATE}/")


@pytest.mark.parametrize("date", ["2026-09-18", "20260918", "latest", "20260918T000000"])
def test_a_malformed_snapshot_date_stops_before_apt_runs_naming_the_allowed_form(tmp_path, date):
    proc = subprocess.run(
        ["bash", str(INSTALL), "tini"],
        env={"PATH": "/usr/bin:/bin", "APT_SNAPSHOT": date},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"apt-install: APT_SNAPSHOT={date}: allowed: YYYYMMDDTHHMMSSZ (e.g. 20260918T000000Z), or empty"
    )


def test_every_package_install_in_the_dockerfile_goes_through_the_snapshot_script():
    text = (REPO / "docker" / "Dockerfile").read_text()
    runs = re.findall(r"^RUN (?:[^\n]*\\\n)*[^\n]*", text, re.MULTILINE)
    installs = [r for r in runs if "apt-get" in r or "/mnt/install" in r]
    assert len(installs) == 5, installs  # env (binutils), runtime-base, cc, cxx, dev: one each
    for run in installs:
        assert "apt-get" not in run, run
        assert run.startswith("RUN --mount=type=bind,source=docker/apt,target=/mnt bash /mnt/install "), run
    stages = re.split(r"^FROM ", text, flags=re.MULTILINE)[1:]
    for stage in stages:  # each stage that installs declares the ARGs the script reads (an undeclared ARG is empty)
        if "/mnt/install" in stage:
            for arg in ("APT_SNAPSHOT", "APT_SNAPSHOT_DEBIAN", "APT_SNAPSHOT_UBUNTU", "APT_LEFTOVERS"):
                assert re.search(rf"^ARG {arg}$", stage, re.MULTILINE), (arg, stage.splitlines()[0])
    assert "!docker/apt/" in (REPO / ".dockerignore").read_text().splitlines()


def test_build_passes_the_snapshot_as_build_args_and_a_label(tmp_path):
    proc = invoke(fake_host(tmp_path, None), "--dry", "build")
    assert proc.returncode == 0, proc.stderr
    cmd = shlex.split(plain(next(line for line in proc.stdout.splitlines() if " build " in line)))
    args = dict(cmd[i + 1].split("=", 1) for i, a in enumerate(cmd) if a == "--build-arg")
    assert args["APT_SNAPSHOT"] == SHIPPED["date"] == DATE
    assert args["APT_SNAPSHOT_DEBIAN"] == SHIPPED["debian"] == "http://snapshot.debian.org/archive"
    assert args["APT_SNAPSHOT_UBUNTU"] == SHIPPED["ubuntu"] == "http://snapshot.ubuntu.com"
    labels = dict(cmd[i + 1].split("=", 1) for i, a in enumerate(cmd) if a == "--label")
    assert labels["org.finetune.apt-snapshot"] == DATE
    (tmp_path / "off").mkdir()
    off = invoke(fake_host(tmp_path / "off", None) | {"INVOKE_IMAGE_APT_SNAPSHOT_DATE": ""}, "--dry", "build")
    cmd = shlex.split(plain(next(line for line in off.stdout.splitlines() if " build " in line)))
    assert "APT_SNAPSHOT=" in cmd and "org.finetune.apt-snapshot=none (the bases' own sources)" in cmd
