"""The pinned environments: locks fresh and hashed, staleness caught and explained, host venv == CPU lock + dev;
the lockfile module as the one reader and writer of locks; every fact stated in several files agrees with its source.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

import facts  # environments/ (pytest's pythonpath): the lock tool's modules import each other by name
import lockfile
import pytest
import resolve
import spec
import yaml
from installed import environment_differences

from conftest import REPO

ENVS = REPO / "environments"
LOCKS = sorted(ENVS.glob("*/pip.*.lock"))
parse_lock = lockfile.parse_lock


def run_lock(lock_script: Path, *args):
    return subprocess.run([sys.executable, lock_script, *args], capture_output=True, text=True)


def test_every_variant_has_its_locks():
    for env_file in ENVS.glob("*/environment.yml"):
        env = yaml.safe_load(env_file.read_text())
        assert env["channels"] == ["conda-forge"], f"{env_file}: conda-forge only"
        for platform in env["platforms"]:
            assert (env_file.parent / f"pip.{platform}.lock").exists(), (env_file, platform)
    assert {p.parent.name for p in LOCKS} >= {"cpu", "cuda", "dev", "vllm-server"}
    assert sorted(spec.KINDS) == spec.variants()  # every variant declared, with the kind whose rules it follows


def test_locks_are_fresh():
    proc = run_lock(ENVS / "lock.py", "--check")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("lock", LOCKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_lock_entry_is_pinned_with_sha256(lock):
    parsed = lockfile.read(lock)  # a header, then nothing but exact pins and sha256 hashes (else LockfileError)
    assert parsed.packages and parsed.field("input-digest")
    for package in parsed.packages:
        assert package.hashes, f"{lock.name}: {package.name} has no sha256 hash"
    assert parsed.text() == lock.read_text()  # what the parser read is all there is: it writes the same bytes


def test_the_lockfile_parser_names_the_line_it_cannot_read(tmp_path):
    lock = tmp_path / "pip.linux-64.lock"
    lock.write_text("# tool: uv 0.13.9\nsix==1.17.0 \\\n    --hash=sha256:abc\n")
    with pytest.raises(lockfile.LockfileError, match=rf"^{re.escape(str(lock))}:3: .*--hash=sha256:abc$"):
        lockfile.read(lock)


@pytest.mark.parametrize("variant", ["cpu", "cuda", "dev"])  # vllm: a server kind (its own rule, below)
def test_check_names_the_variant_and_the_added_package(tmp_path, variant):
    copy = tmp_path / "environments"
    shutil.copytree(ENVS, copy)
    env_file = copy / variant / "environment.yml"
    env_file.write_text(env_file.read_text().rstrip("\n") + "\n      - rich>=13\n")
    proc = run_lock(copy / "lock.py", "--check")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert re.search(rf"STALE {variant} \(linux-64\): added rich>=13", proc.stdout), proc.stdout
    assert "invoke lock --variant" in proc.stdout


def test_a_comment_edit_keeps_every_lock_fresh_but_a_changed_pin_does_not(tmp_path):
    # The digest covers what a lock is made from (the parsed file), not its wording: fixing a comment must not force
    # a relock, which would re-resolve every range against today's PyPI.
    copy = tmp_path / "environments"
    shutil.copytree(ENVS, copy)
    for env_file in copy.glob("*/environment.yml"):
        text = env_file.read_text().replace("# ", "#  reworded: ")
        env_file.write_text("# a new first comment line\n" + text + "\n# and a last one\n")
    proc = run_lock(copy / "lock.py", "--check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cpu = copy / "cpu" / "environment.yml"
    cpu.write_text(cpu.read_text().replace("pip=25.3", "pip=25.2"))
    proc = run_lock(copy / "lock.py", "--check")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert re.search(r"STALE cpu \(linux-64\): .*conda pip=25", proc.stdout), proc.stdout


def test_cpu_lock_has_the_cpu_torch_and_cuda_lock_the_cuda_build():
    """(That the cuda lock's CUDA runtime is invoke.yaml's cuda.version: the "CUDA version" fact below.)"""
    cpu, cuda = parse_lock(ENVS / "cpu" / "pip.linux-64.lock"), parse_lock(ENVS / "cuda" / "pip.linux-64.lock")
    torch = next(f for f in facts.FACTS if f.name == "torch").value(REPO)
    assert cpu["torch"]["version"] == f"{torch}+cpu" and not any(n.startswith("nvidia-") for n in cpu)
    assert cuda["torch"]["version"] == torch and "nvidia-cuda-runtime" in cuda
    shared = set(cpu) & set(cuda) - {"torch"}
    assert {n: cpu[n]["version"] for n in shared} == {n: cuda[n]["version"] for n in shared}


def test_the_vllm_lock_is_vllm_alone_with_the_torch_it_pins_from_pypi():
    """A server environment (spec.KINDS): its one program pinned, PyPI's CUDA torch (never +cpu), none of ours."""
    env = yaml.safe_load((ENVS / "vllm-server" / "environment.yml").read_text())
    [pin] = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    vllm = parse_lock(ENVS / "vllm-server" / "pip.linux-64.lock")
    assert pin == f"vllm=={vllm['vllm']['version']}" and env["platforms"] == ["linux-64"]
    assert "+" not in vllm["torch"]["version"] and "nvidia-cuda-runtime" in vllm
    cpu = parse_lock(ENVS / "cpu" / "pip.linux-64.lock")
    assert vllm["torch"]["version"] != cpu["torch"]["version"].removesuffix("+cpu")  # why it has its own lock
    assert not {"peft", "finetune", "mlflow-skinny", "tensorboardx", "gguf"} & set(vllm)


def test_a_server_environment_pins_its_one_program_and_every_variant_is_declared(tmp_path):
    copy = tmp_path / "environments"
    shutil.copytree(ENVS, copy)
    env_file = copy / "vllm-server" / "environment.yml"
    env_file.write_text(env_file.read_text().replace("vllm==0.33.0", "vllm>=0.33"))
    proc = run_lock(copy / "lock.py", "--check")
    assert proc.returncode == 1 and "a server environment pins its one program (name==version)" in proc.stderr
    shutil.copytree(copy / "cuda", copy / "rocm")
    env_file.write_text((ENVS / "vllm-server" / "environment.yml").read_text())
    proc = run_lock(copy / "lock.py", "--check")
    assert proc.returncode == 1 and "environments/rocm/ is not declared: add it to KINDS" in proc.stderr, proc.stderr


def test_cpu_lock_for_arm64_is_the_same_cpu_set():
    """linux-aarch64 (Apple-silicon Docker, Graviton) gets the +cpu torch and the same versions as linux-64."""
    x86, arm = parse_lock(ENVS / "cpu" / "pip.linux-64.lock"), parse_lock(ENVS / "cpu" / "pip.linux-aarch64.lock")
    assert {n: p["version"] for n, p in arm.items()} == {n: p["version"] for n, p in x86.items()}
    assert arm["torch"]["hashes"] != x86["torch"]["hashes"]  # a different wheel file, not a copy of x86_64's entry


def test_this_environment_matches_cpu_lock_plus_dev_layer():
    """`make test` runs in .venv, built from the CPU lock + dev lock: it must hold exactly those packages."""
    if Path(sys.prefix).resolve() != (REPO / ".venv").resolve():
        pytest.skip(f"not running in the project's .venv ({sys.prefix}); `make test` does")
    assert environment_differences(["cpu", "dev"], "linux-64") == []
    # and the comparison itself sees a difference when there is one
    expected = parse_lock(ENVS / "cpu" / "pip.linux-64.lock")
    assert metadata.version("torch") == expected["torch"]["version"]
    diffs = environment_differences(["cpu"], "linux-64")  # the dev layer's packages are then extra
    assert ("pytest", None, metadata.version("pytest")) in diffs


def test_lock_writer_reproduces_each_committed_lock_from_what_uv_printed(tmp_path, monkeypatch):
    """lock.py's write path (header, layer filtering, the aarch64 torch stand-in), with uv replaced by the packages
    each lock holds, in a copy of environments/: it writes every committed lock byte for byte."""
    copy = tmp_path / "environments"
    shutil.copytree(ENVS, copy)
    monkeypatch.setattr(spec, "HERE", copy)
    monkeypatch.setattr(resolve, "HERE", copy)
    locks = {p.relative_to(ENVS): lockfile.read(p) for p in LOCKS}
    torch = locks[Path("cpu/pip.linux-aarch64.lock")].by_name()["torch"]
    standin = {"version": torch.version, "sha256": torch.hashes[0], "deps": []}
    standin["wheel"] = f"torch-{torch.version}-cp311-cp311-manylinux_2_28_aarch64.whl"
    aarch64_only = lambda r, pl, py: standin if pl == "linux-aarch64" else None  # noqa: E731
    monkeypatch.setattr(resolve.torch_cpu, "torch_standin", aarch64_only)

    def packages(path, drop=()):
        return [p for p in locks[Path(path)].packages if p.key not in drop]

    printed = {  # what uv printed for each: for a layer, its base's packages too; for aarch64, no torch
        ("cpu", "linux-64"): packages("cpu/pip.linux-64.lock"),
        ("cuda", "linux-64"): packages("cuda/pip.linux-64.lock"),
        ("vllm-server", "linux-64"): packages("vllm-server/pip.linux-64.lock"),
        ("cpu", "linux-aarch64"): packages("cpu/pip.linux-aarch64.lock", drop={"torch"}),
        ("cpu", "osx-arm64"): packages("cpu/pip.osx-arm64.lock"),
        ("dev", "osx-arm64"): sorted(
            packages("cpu/pip.osx-arm64.lock") + packages("dev/pip.osx-arm64.lock"), key=lambda p: p.key
        ),
        ("dev", "linux-64"): sorted(
            packages("cpu/pip.linux-64.lock") + packages("dev/pip.linux-64.lock"), key=lambda p: p.key
        ),
        ("dev", "linux-aarch64"): sorted(  # resolved against the stand-in: no torch either
            packages("cpu/pip.linux-aarch64.lock", drop={"torch"}) + packages("dev/pip.linux-aarch64.lock"),
            key=lambda p: p.key,
        ),
    }
    for (variant, platform), out in printed.items():
        uv = lambda cmd, out=out, **kwargs: Path(cmd[cmd.index("-o") + 1]).write_text(lockfile.body(out))  # noqa: E731
        monkeypatch.setattr(resolve.subprocess, "run", uv)
        tool = locks[Path(variant, f"pip.{platform}.lock")].field("tool").split()[1]
        written = resolve.compile_lock(variant, platform, tool)
        assert written == copy / variant / f"pip.{platform}.lock"
        assert written.read_bytes() == (ENVS / variant / f"pip.{platform}.lock").read_bytes(), (variant, platform)


@pytest.mark.parametrize("upgrade", [False, True])
def test_a_relock_asks_uv_to_keep_the_pinned_versions_but_never_their_hashes(tmp_path, monkeypatch, upgrade):
    """What uv finds in its output file before it resolves (its preferences), with uv replaced by a fake that records
    it: the committed lock's pins, without hashes (uv would copy those unchecked), and nothing with --upgrade.
    Run for real on 2026-11-26: a lock hand-set to tqdm==4.66.0 with a zero hash came back as 4.66.0 with PyPI's two
    hashes, and as 4.70.1 with --upgrade."""
    copy = tmp_path / "environments"
    shutil.copytree(ENVS, copy)
    monkeypatch.setattr(spec, "HERE", copy)
    monkeypatch.setattr(resolve, "HERE", copy)
    committed = lockfile.read(ENVS / "cuda" / "pip.linux-64.lock")
    seen = {}

    def fake_uv(cmd, **kwargs):
        out = Path(cmd[cmd.index("-o") + 1])
        seen["preferences"] = out.read_text() if out.exists() else ""
        out.write_text(lockfile.body(committed.packages))

    monkeypatch.setattr(resolve.subprocess, "run", fake_uv)
    resolve.compile_lock("cuda", "linux-64", committed.field("tool").split()[1], upgrade=upgrade)
    if upgrade:
        assert seen["preferences"] == ""
    else:
        assert seen["preferences"].splitlines() == [p.pin for p in committed.packages]
        assert "--hash" not in seen["preferences"]


# --- the lockfile module as the Makefile, the workflow and the images use it ---------------------------------------


def lockfile_cli(*args):
    return subprocess.run([sys.executable, ENVS / "lockfile.py", *args], cwd=REPO, capture_output=True, text=True)


def locked_python() -> str:
    """X.Y of environments/cpu/environment.yml's python= pin (the python fact's source)."""
    return ".".join(next(f for f in facts.FACTS if f.name == "python").value(REPO).split(".")[:2])


def test_lockfile_cli_gives_the_python_the_conda_pins_and_the_torch_index():
    cpu = ENVS / "cpu" / "pip.linux-64.lock"
    assert lockfile_cli("python-version", ENVS / "dev" / "pip.linux-64.lock", cpu).stdout == locked_python() + "\n"
    pins = lockfile.read(cpu).conda
    assert lockfile_cli("conda-pins", cpu).stdout.split() == pins and [p.split("=")[0] for p in pins] == [
        "python",
        "pip",
    ]
    assert lockfile_cli("torch-find-links").stdout.strip() == lockfile.TORCH_CPU_FIND_LINKS
    assert lockfile_cli("no-such-command").returncode == 2


def test_the_makefile_reads_the_python_and_the_torch_index_through_the_environment_tools():
    makefile = (REPO / "Makefile").read_text()
    assert "PY=$$($(PYTHON) environments/hostpython.py --uv $(UV) $(LOCKS)) && $$PY -m venv --clear $(VENV)" in makefile
    assert (
        "TORCH_FIND_LINKS ?= $(if $(PIP_FIND_LINKS)$(filter osx-%,$(PLATFORM)),,"
        "$(shell $(PYTHON) environments/lockfile.py torch-find-links))" in makefile
    )


@pytest.mark.parametrize("reader", ["docker/Dockerfile", "deploy/skypilot.yaml"])
@pytest.mark.parametrize(
    "lock", [p for p in LOCKS if lockfile.read(p).conda], ids=lambda p: f"{p.parent.name}/{p.name}"
)
def test_shell_readers_of_the_conda_header_get_what_lockfile_reads(reader, lock):
    """The image's env stage and SkyPilot's setup run `conda create` before any Python exists, so they read the
    `# conda:` lines with sed: their sed must give exactly lockfile.py's pins, python and pip, each an exact version."""
    pins = lockfile.read(lock).conda
    assert sorted(p.split("=")[0] for p in pins) == ["pip", "python"]
    assert all(re.fullmatch(r"[a-z]+=\d+(\.\d+)+", p) for p in pins), pins
    scripts = re.findall(r"\$\((sed -n '[^']*') ", (REPO / reader).read_text())
    assert len(scripts) == 1, scripts
    proc = subprocess.run([*shlex.split(scripts[0]), str(lock)], capture_output=True, text=True, check=True)
    assert proc.stdout.split() == pins


def test_workflow_sets_up_the_python_the_locks_name_with_the_runners_bare_python3(tmp_path):
    """setup-python's version comes from the locks, read by lockfile.py with the runner's python3 (no PyYAML)."""
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "images.yml").read_text())
    steps = {s.get("id"): s for s in workflow["jobs"]["test"]["steps"]}
    assert steps["python"]["with"]["python-version"] == "${{ steps.locked.outputs.python }}"
    bare = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
    script = steps["locked"]["run"].replace("python3 ", f"{shlex.quote(bare)} ", 1)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["GITHUB_OUTPUT"] = str(tmp_path / "out")
    proc = subprocess.run(["bash", "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out").read_text() == f"python={locked_python()}\n"


# --- one source per fact -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fact", facts.FACTS, ids=lambda f: f.name)
def test_every_copy_of_a_fact_agrees_with_its_one_source(fact):
    """environments/facts.py: each fact's source, and every copy that cannot read it checked against it."""
    assert fact.disagreements(REPO) == []


@pytest.mark.parametrize(
    "path, old, new, named",
    [
        (
            "docs/environments.md",
            "uv downloads CPython 3.11, then",
            "uv downloads CPython 3.12, then",
            "3.12, but environments/cpu/environment.yml",
        ),
        ("docker/Dockerfile", "ARG TORCH_FIND_LINKS=https://", "ARG TORCH_FIND_LINKS=http://", "docker/Dockerfile:"),
        (
            "deploy/cloud-init.yaml",
            "CUDA 13.0 images",
            "CUDA 12.8 images",
            "12.8, but invoke.yaml cuda.version is 13.0",
        ),
        (
            "docs/environments.md",
            ">= 580.65.06 on",
            ">= 570.86.10 on",
            "570.86.10, but invoke.yaml cuda.min_driver is 580.65.06",
        ),
        ("docker/Dockerfile", "ARG CUDA_BASE_IMAGE=nvidia/cuda:13.0.3", "ARG CUDA_BASE_IMAGE=nvidia/cuda:13.0.2", ""),
        (
            "docs/serve.md",
            "(vLLM 0.33.0 alone",
            "(vLLM 0.34.0 alone",
            "0.34.0, but environments/vllm-server/environment.yml vllm== is 0.33.0",
        ),
        ("pyproject.toml", '    "tqdm>=4.66",\n', "", "pyproject.toml [project].dependencies: lacks tqdm>=4.66"),
        ("environments/cuda/environment.yml", "peft>=0.21,<1", "peft>=0.22,<1", "lacks peft>=0.21,<1"),
        ("deploy/cloud-init.yaml", "(CUDA 13.0 images need >= 580.65.06)", "", "no CUDA X.Y in the host check found"),
    ],
)
def test_a_copy_that_differs_from_its_source_is_named(tmp_path, path, old, new, named):
    for name in {f for fact in facts.FACTS for f in fact.files()}:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, tmp_path / name)
    assert facts.disagreements(tmp_path) == []
    text = (tmp_path / path).read_text()
    assert old in text
    (tmp_path / path).write_text(text.replace(old, new, 1))
    found = facts.disagreements(tmp_path)
    assert len(found) >= 1 and all(path in d for d in found) and named in found[0], found


# --- the devcontainers: what devtools gives every dev container ----------------------------------------------------


def jsonc(path: Path) -> dict:
    """devcontainer.json allows // comments (ours are whole-line comments only)."""
    return json.loads("\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("//")))


def namespace(node):
    return SimpleNamespace(**{k: namespace(v) for k, v in node.items()}) if isinstance(node, dict) else node


@pytest.mark.parametrize("gpu", [False, True], ids=["cpu", "gpu"])
def test_devcontainers_get_what_devtools_gives_a_dev_container(monkeypatch, gpu):
    """HF cache volume and path, workspace, PYTHONPATH, and /dev/shm (CPU) or the GPU flags (GPU), as
    devtools.containers.dev_container_args gives `invoke shell` from invoke.yaml."""
    monkeypatch.syspath_prepend(str(REPO))
    from devtools import containers

    for name in (*containers.SECRETS, *containers.THREADS):  # passed by name only when set on the host
        monkeypatch.delenv(name, raising=False)

    args = containers.dev_container_args(namespace(yaml.safe_load((REPO / "invoke.yaml").read_text())), gpu)
    pairs = list(zip(args[::2], args[1::2]))
    volumes = [v.split(":") for k, v in pairs if k == "--volume"]
    assert volumes[0] == [str(containers.REPO), containers.WORKSPACE]
    dev = jsonc(REPO / ".devcontainer" / ("gpu" if gpu else "") / "devcontainer.json")
    assert dev["workspaceFolder"] == containers.WORKSPACE
    assert dev["workspaceMount"] == f"source=${{localWorkspaceFolder}},target={containers.WORKSPACE},type=bind"
    assert dev["containerEnv"] == dict(v.split("=", 1) for k, v in pairs if k == "--env")
    assert dev["mounts"] == [f"source={src},target={dst},type=volume" for src, dst in volumes[1:]]
    assert volumes[1][1] == containers.HF_CACHE
    assert set(dev["secrets"]) <= set(containers.SECRETS)
    if gpu:  # the CLI adds --gpus all for hostRequirements.gpu; the rest are runArgs
        assert args[args.index("--gpus") : args.index("--gpus") + 2] == ["--gpus", "all"]
        assert dev["hostRequirements"] == {"gpu": True} and dev["runArgs"] == containers.GPU_RUN_FLAGS
        assert args[args.index("--gpus") + 2 :] == containers.GPU_RUN_FLAGS
    else:
        assert args[-2:] == ["--shm-size", dev["runArgs"][0].removeprefix("--shm-size=")] and len(dev["runArgs"]) == 1


def test_the_package_version_is_written_once_in_pyproject(tmp_path):
    """finetune.__version__ reads pyproject.toml's version: installed (.venv), and from a source tree on PYTHONPATH
    as the images run it (no installed metadata: pyproject.toml above src/)."""
    import tomllib

    import finetune

    assert finetune.__version__ == tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    shutil.copytree(REPO / "src" / "finetune", tmp_path / "src" / "finetune")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "finetune"\nversion = "9.8.7"\n')
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "src"))
    show = "import finetune; print(finetune.__version__)"
    proc = subprocess.run([sys.executable, "-S", "-c", show], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert proc.stdout == "9.8.7\n", proc.stderr
