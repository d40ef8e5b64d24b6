"""Issue 12's hardening of tasks.py and its build files: no secret on a command line, in an image label or in a run's
manifest; no broad read-write mount of the host; plain warnings where a service has no login; least privilege in CI;
hashed build inputs; an unambiguous GPU selection.

The docker here is the FAKE one of tests/fakes.py (it records calls, answers probes); the git remote with a token
is a FAKE git in front of the real one (every other git command goes to the real git).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from fakes import docker_calls, fake_host, record_variable

from conftest import REPO, invoke, plain, run_line

TOKEN = "ghp_FAKEtoken1234567890abcdef"
REMOTE = f"https://x-access-token:{TOKEN}@github.com/org/finetune.git"


def volumes(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == "--volume"]


# --- 1. credentials in a git remote URL ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, clean",
    [
        (REMOTE, "https://github.com/org/finetune.git"),
        ("https://user:pa55@gitlab.example:8443/g/r.git", "https://gitlab.example:8443/g/r.git"),
        (f"https://{TOKEN}@github.com/org/r", "https://github.com/org/r"),  # a token alone, as the user name
        ("ssh://git@github.com/org/r.git", "ssh://github.com/org/r.git"),
        ("git@github.com:org/r.git", "git@github.com:org/r.git"),  # scp-like: a login name, no secret
        ("https://github.com/org/r.git", "https://github.com/org/r.git"),
        ("", ""),
        ("sha256:" + "0" * 64, "sha256:" + "0" * 64),  # not a URL: unchanged
    ],
)
def test_strip_userinfo_drops_credentials_from_urls(url, clean):
    from finetune.urls import strip_userinfo

    assert strip_userinfo(url) == clean


def fake_git_remote(env: dict, tmp_path: Path, url: str) -> dict:
    """A FAKE git first on PATH: `git remote get-url origin` answers url, everything else is the real git."""
    real = shutil.which("git")
    script = tmp_path / "fakebin" / "git"
    script.write_text(
        "#!/bin/sh\n# FAKE git (tests/test_tasks_safety.py): origin has credentials in its URL\n"
        f'[ "$*" = "remote get-url origin" ] && {{ echo {shlex.quote(url)}; exit 0; }}\n'
        f'exec {shlex.quote(real)} "$@"\n'
    )
    script.chmod(0o755)
    return env


def test_build_plan_has_no_credentials_from_the_git_remote(tmp_path):
    env = fake_git_remote(fake_host(tmp_path, None), tmp_path, REMOTE)
    proc = invoke(env, "--dry", "build")
    assert proc.returncode == 0, proc.stderr
    assert TOKEN not in proc.stdout + proc.stderr
    assert "--build-arg SOURCE_URL=https://github.com/org/finetune.git" in plain(proc.stdout)


def test_manifest_has_no_credentials_from_the_image_labels(tmp_path, monkeypatch):
    """An image built before the fix carries the token in its source label; the run's manifest must not."""
    from finetune.manifest import build_manifest

    labels = {"org.opencontainers.image.source": REMOTE, "org.finetune.variant": "cpu"}
    monkeypatch.setenv("FINETUNE_IMAGE_ID", "sha256:" + "1" * 64)
    monkeypatch.setenv("FINETUNE_IMAGE_LABELS", json.dumps(labels))
    manifest = build_manifest({"seed": 1}, ["finetune", "train", "configs/default.yaml"], [], 1)
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert TOKEN not in (tmp_path / "manifest.json").read_text()
    assert manifest["container"]["labels"]["org.opencontainers.image.source"] == "https://github.com/org/finetune.git"


# --- 2. mounts of host paths outside the repository ----------------------------------------------------------------


def test_docker_train_mounts_an_outside_config_read_only_and_alone(tmp_path):
    config = tmp_path / "elsewhere" / "my.yaml"
    config.parent.mkdir()
    shutil.copy(REPO / "configs" / "default.yaml", config)
    proc = invoke(fake_host(tmp_path, None), "--dry", "train", "--docker", "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    run = run_line(proc.stdout)
    assert f"{config}:/mnt/host{config}:ro" in volumes(run)
    assert not any(v.startswith(f"{config.parent}:") for v in volumes(run)), volumes(run)
    assert run[-1] == f"/mnt/host{config}"


def test_docker_train_mounts_only_the_output_dir_itself(tmp_path):
    out = tmp_path / "results" / "run1"
    proc = invoke(fake_host(tmp_path, None), "--dry", "train", "--docker", "--output-dir", str(out))
    assert proc.returncode == 0, proc.stderr
    run = run_line(proc.stdout)
    assert f"{out}:/mnt/host{out}" in volumes(run)
    assert not any(v.startswith(f"{out.parent}:") for v in volumes(run)), volumes(run)
    assert run[-2:] == ["--output-dir", f"/mnt/host{out}"]


@pytest.mark.parametrize(
    "output_dir", ["/", str(Path.home()), str(REPO), "/etc", "/usr", "/var", "/usr/local/lib", str(REPO.parent)]
)
@pytest.mark.parametrize("runtime", ["--docker", "--local"])
def test_train_refuses_an_output_dir_that_is_not_a_run_folder(tmp_path, output_dir, runtime):
    proc = invoke(fake_host(tmp_path, None), "--dry", "train", runtime, "--output-dir", output_dir)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    message = proc.stderr.strip()
    assert "\n" not in message and message.startswith(f"--output-dir {output_dir}: ") and "allowed: " in message
    assert "finetune train" not in proc.stdout and docker_calls(tmp_path) == []


# --- 3. TensorBoard has no login -----------------------------------------------------------------------------------


def test_tensorboard_on_all_interfaces_warns_that_it_has_no_login(tmp_path):
    proc = invoke(fake_host(tmp_path, None), "--dry", "tensorboard", "--host", "0.0.0.0", "--port", "6007")
    assert proc.returncode == 0, proc.stderr
    warning = next(line for line in proc.stdout.splitlines() if line.startswith("WARNING"))
    assert "token" not in warning
    assert "no authentication" in warning and "anyone who can reach 0.0.0.0:6007" in warning
    assert "ssh -L 6007:127.0.0.1:6007" in warning


# --- 4. the JupyterLab token -------------------------------------------------------------------------------------


def test_lab_token_is_not_in_the_plan(tmp_path):
    proc = invoke(fake_host(tmp_path, None), "--dry", "lab", "--token", "lab-secret-789")
    assert proc.returncode == 0, proc.stderr
    assert "lab-secret-789" not in proc.stdout + proc.stderr
    run = run_line(proc.stdout)
    assert "JUPYTER_TOKEN" in run and run[run.index("JUPYTER_TOKEN") - 1] == "--env"


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_lab_token_reaches_docker_only_through_its_environment(tmp_path, how):
    """A FAKE docker client that also records the JUPYTER_TOKEN it was started with."""
    env = fake_host(tmp_path, None)
    log = record_variable(env, tmp_path, "JUPYTER_TOKEN")
    args = ["lab", "--token", "lab-secret-790"] if how == "flag" else ["lab"]
    if how == "environment":
        env["JUPYTER_TOKEN"] = "lab-secret-790"
    proc = invoke(env, *args)
    assert proc.returncode == 0, proc.stderr
    run = next(call for call in docker_calls(tmp_path) if call.startswith("run "))
    assert "lab-secret-790" not in " ".join(docker_calls(tmp_path)) and "--env JUPYTER_TOKEN " in run
    assert log.read_text().splitlines()[-1] == "lab-secret-790"
    assert "lab-secret-790" not in proc.stdout + proc.stderr  # the user gave it: never echoed


@pytest.mark.parametrize("run_as", ["root", "image", "keep-id"])
def test_lab_allows_root_exactly_when_the_container_runs_as_root(tmp_path, run_as):
    """Jupyter refuses to start as root without --allow-root ("Running as root is not recommended", exit 1): seen
    with `invoke lab` as root on rootful Podman, where docker.run_as is root (so is rootless Docker)."""
    env = dict(fake_host(tmp_path, None), INVOKE_DOCKER_RUN_AS=run_as)
    proc = invoke(env, "--dry", "lab")
    assert proc.returncode == 0, proc.stderr
    run = run_line(proc.stdout)
    assert ("--allow-root" in run) == (run_as == "root"), run


# --- 5. CI permissions -------------------------------------------------------------------------------------------

WORKFLOW = REPO / ".github" / "workflows" / "images.yml"
ON_TAGS = "startsWith(github.ref, 'refs/tags/v')"


def test_workflow_grants_package_write_only_to_jobs_that_run_on_release_tags():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert workflow["permissions"] == {"contents": "read"}
    writers = {
        name: job for name, job in workflow["jobs"].items() if "write" in (job.get("permissions") or {}).values()
    }
    assert writers, "the release jobs push to ghcr.io"
    for name, job in writers.items():
        assert job["permissions"] == {"contents": "read", "packages": "write"}, name
        assert job.get("if") == ON_TAGS, f"{name}: write permissions on pull requests and branch pushes"
    for name, job in workflow["jobs"].items():
        if name not in writers:
            assert (job.get("permissions") or {"contents": "read"}) == {"contents": "read"}, name


@pytest.mark.skipif(not (REPO / ".venv" / "bin" / "actionlint").exists(), reason="actionlint not installed")
def test_workflow_passes_actionlint():
    proc = subprocess.run([str(REPO / ".venv" / "bin" / "actionlint"), str(WORKFLOW)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_workflow_runs_every_marker_that_ci_runs_as_its_own_step():
    """The markers plain `make test` deselects (pyproject addopts) and .ci/run runs as steps of their own each have a
    leg in the GitHub workflow's test job, so the real network runs them too."""
    ci = {m for m in re.findall(r'make test ARGS="-q -m (\w+)"', (REPO / ".ci" / "run").read_text())}
    addopts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["addopts"]
    assert ci and ci == set(re.findall(r"not (\w+)", " ".join(addopts) if isinstance(addopts, list) else addopts))
    legs = yaml.safe_load(WORKFLOW.read_text())["jobs"]["test"]["strategy"]["matrix"]["include"]
    assert {m for leg in legs for m in re.findall(r"-m (\w+)", leg["args"])} == ci
    assert any(leg["args"] == "-q" for leg in legs)  # and the suite itself


def test_workflow_lock_digest_step_runs_without_the_package_installed(tmp_path):
    """The images jobs' lock-digest step imports devtools.containers with the runner's bare python3 (which imports
    finetune.urls): it must work from a plain checkout, as invoke's digest does."""
    workflow = yaml.safe_load(WORKFLOW.read_text())
    step = next(s for s in workflow["jobs"]["images"]["steps"] if s.get("id") == "lock")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(step["env"], VARIANT="cpu", TARGET="runtime", GITHUB_OUTPUT=str(tmp_path / "out"))
    bare = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
    script = step["run"].replace("python3 -c", f"{shlex.quote(bare)} -c")  # not the .venv's python: no finetune
    proc = subprocess.run(["bash", "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(r"digest=sha256:[0-9a-f]{64}\n", (tmp_path / "out").read_text())


# --- 6. hashed build requirements ----------------------------------------------------------------------------------


def test_editable_install_builds_with_the_hashed_setuptools_of_the_locks():
    """pip's build isolation would fetch setuptools unpinned and unhashed; the locks make venv installs have it."""
    makefile = (REPO / "Makefile").read_text()
    editable = [line for line in makefile.splitlines() if re.search(r"install .*-e \.", line)]
    assert editable and all("--no-build-isolation" in line for line in editable), editable
    locks = re.search(r"^LOCKS\s*:=\s*(.+)$", makefile, re.M).group(1).replace("$(PLATFORM)", "linux-64").split()
    pinned = [
        re.search(r"^setuptools==([\d.]+) \\\n\s+--hash=sha256:", (REPO / lock).read_text(), re.M) for lock in locks
    ]
    versions = [m.group(1) for m in pinned if m]
    assert versions, f"none of {locks} pins setuptools with a hash"
    requires = re.search(r'requires = \["setuptools>=(\d+)"\]', (REPO / "pyproject.toml").read_text()).group(1)
    assert all(int(v.split(".")[0]) >= int(requires) for v in versions)


def test_make_venvs_editable_install_needs_no_index(tmp_path):
    """The Makefile's own install line, offline (--no-index, --dry-run, in a copy of the package): it builds with the
    environment's setuptools; an isolated build would have to download one."""
    line = next(line for line in (REPO / "Makefile").read_text().splitlines() if re.search(r"install .*-e \.", line))
    pip = [str(REPO / ".venv" / "bin" / "python"), "-m", "pip"]
    args = [a for a in shlex.split(line.strip())[1:] if a != "--quiet"] + ["--dry-run", "--no-index"]
    for name in ("pyproject.toml", "README.md", "src"):
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, tmp_path / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}  # no wheel folder, no pip settings
    proc = subprocess.run([*pip, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "Would install finetune" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]


# --- 7. --gpus: device ids, never a count ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "gpus, spec", [("0", '"device=0"'), ("1", '"device=1"'), ("0,2", '"device=0,2"'), ("all", "all")]
)
def test_gpus_selects_devices_by_id(tmp_path, gpus, spec):
    """A bare number is a count to Docker (`--gpus 0`: zero GPUs); here it is a device id, as in nvidia-smi."""
    proc = invoke(fake_host(tmp_path, None), "--dry", "train", "--gpu", "--gpus", gpus)
    assert proc.returncode == 0, proc.stderr
    run = run_line(proc.stdout)
    assert run[run.index("--gpus") + 1] == spec


@pytest.mark.parametrize("gpus", ["two", "count=2", "-1", "0,,1", "", "0 1", "device=0"])
def test_gpus_refuses_anything_but_all_or_device_ids(tmp_path, gpus):
    proc = invoke(fake_host(tmp_path, None), "train", "--gpu", f"--gpus={gpus}")
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stderr.strip() == f"--gpus {gpus!r}: allowed: all, or device ids as nvidia-smi numbers them (0 or 0,2)"
    assert docker_calls(tmp_path) == []


def test_gpus_help_says_ids_not_a_count(tmp_path):
    proc = invoke(fake_host(tmp_path, None), "--help", "train")
    assert "--gpus=STRING which GPUs with --gpu: all (default) or device ids" in " ".join(proc.stdout.split())
