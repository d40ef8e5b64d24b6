"""Reproducible images (issue 29) without an engine: the plan of `invoke verify-image` and `invoke build
--reproducible` (`invoke --dry`, a FAKE podman client), their refusals, and devtools/imagediff.py on small archives
made here. The real builds: tests/container/test_verify_image.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import shlex
import subprocess
import tarfile

from fakes import docker_calls, fake_host

from conftest import REPO, invoke
from devtools import imagediff

FAKE_PODMAN = """#!/bin/sh
# FAKE podman (tests/test_reproducible.py): answers --version as Podman 4.3.1; records every other call
case "$*" in
  "--version") echo "podman version 4.3.1" ;;
  *) echo "$*" >> "$FAKE_LOG" ;;
esac
"""


def fake_podman(tmp_path) -> dict:
    env = fake_host(tmp_path, None)
    podman = tmp_path / "fakebin" / "podman"
    podman.write_text(FAKE_PODMAN)
    podman.chmod(0o755)
    return env | {"INVOKE_DOCKER_CLIENT": str(podman)}


def commit_time() -> str:
    return subprocess.run(["git", "log", "-1", "--format=%ct"], cwd=REPO, capture_output=True, text=True).stdout.strip()


def test_dry_verify_image_plans_two_builds_in_two_empty_storages_then_the_compare(tmp_path):
    env = fake_podman(tmp_path)
    env.pop("SOURCE_DATE_EPOCH", None)
    bases = tmp_path / "bases.tar"
    bases.write_bytes(b"")
    work = tmp_path / "verify"
    proc = invoke(env, "--dry", "verify-image", "--bases", bases, "--workdir", work)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    builds = [shlex.split(line) for line in lines if " build " in line]
    assert len(builds) == 2, proc.stdout
    epoch = commit_time()
    for n, cmd in zip("12", builds, strict=True):
        assert cmd[0] == f"TMPDIR={work}/{n}/tmp"  # its own cache mounts: fresh builder state
        assert cmd[2:5] == ["--root", f"{work}/{n}/storage", "--runroot"] and len(cmd[5]) <= 50, cmd  # Podman's limit
        run = cmd[5].removesuffix(f"/{n}")
        assert cmd[6] == "build" and "--no-cache" in cmd and cmd[cmd.index("--timestamp") + 1] == epoch
        assert f"SOURCE_DATE_EPOCH={epoch}" in cmd and "--target" in cmd and cmd[cmd.index("--target") + 1] == "runtime"
        own = f"{env['INVOKE_DOCKER_CLIENT']} --root {work}/{n}/storage --runroot {run}/{n}"
        assert f"{own} load --quiet --input {bases}" in lines
        saved = f"{own} save --quiet --format docker-archive --output {work}/{n}/image.tar.raw finetune:cpu"
        normalize = f" -m devtools.imagediff --normalize {work}/{n}/image.tar.raw {work}/{n}/image.tar"
        assert lines.index(saved) < next(i for i, x in enumerate(lines) if x.endswith(normalize))
    same = [a.replace(f"{work}/2", f"{work}/1").replace(f"{run}/2", f"{run}/1") for a in builds[1][1:]]
    assert builds[0][1:] == same  # the same inputs
    compare = next(line for line in lines if "-m devtools.imagediff" in line and "--normalize" not in line)
    assert compare.endswith(f"{work}/1/image.tar {work}/2/image.tar")
    assert lines.index(compare) > max(i for i, x in enumerate(lines) if " build " in x)
    assert lines[-1] == f"rm -rf {work} {run}"
    assert docker_calls(tmp_path) == []  # --dry ran nothing


def test_dry_build_reproducible_uses_podman_with_the_commits_time(tmp_path):
    env = fake_podman(tmp_path) | {"SOURCE_DATE_EPOCH": "1700000000"}  # the convention: the environment's wins
    proc = invoke(env, "--dry", "build", "--reproducible")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    cmd = shlex.split(next(line for line in lines if " build " in line))
    assert cmd[1] == "build" and cmd[cmd.index("--timestamp") + 1] == "1700000000"
    assert "SOURCE_DATE_EPOCH=1700000000" in cmd and "DOCKER_BUILDKIT=1" not in proc.stdout
    # then saved, its config rid of the build's container ids (devtools/imagediff.py), and loaded under its tag
    assert [line.split()[1] for line in lines[-5:]] == ["save", "-m", "-f", "load", "-f"], lines[-5:]


def test_reproducible_without_podman_and_bad_input_exit_2_in_one_line(tmp_path):
    env = fake_host(tmp_path, None)  # a FAKE Docker 20.10 client, and a `podman` that is not there
    (tmp_path / "fakebin" / "podman").write_text("#!/bin/sh\nexit 127\n")
    (tmp_path / "fakebin" / "podman").chmod(0o755)
    proc = invoke(env, "build", "--reproducible")
    assert proc.returncode == 2 and "--reproducible needs Podman" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    for args, said in [
        (["--variant", "tpu"], "--variant 'tpu': allowed: cpu, cuda"),
        (["--target", "prod"], "--target 'prod': allowed: runtime, dev"),
        (["--bases", tmp_path / "none.tar"], "no such file"),
        (["--workdir", REPO], "not empty"),
    ]:
        proc = invoke(fake_podman(tmp_path), "verify-image", *args)
        assert proc.returncode == 2 and said in proc.stderr, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1
    bad = invoke(fake_podman(tmp_path) | {"SOURCE_DATE_EPOCH": "yesterday"}, "build", "--reproducible")
    assert bad.returncode == 2 and "SOURCE_DATE_EPOCH 'yesterday'" in bad.stderr
    assert docker_calls(tmp_path) == []


def saved_image(path, files: dict[str, bytes], mtime: int = 0) -> None:
    """A docker-archive of one layer holding files, as `podman save` writes one."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), mtime
            tar.addfile(info, io.BytesIO(data))
    diff_id = "sha256:" + hashlib.sha256(layer.getvalue()).hexdigest()
    config = json.dumps({"created": "x", "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    with tarfile.open(path, "w") as out:
        for name, data in [("layer.tar", layer.getvalue()), ("config.json", config)]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
        manifest = json.dumps([{"Config": "config.json", "Layers": ["layer.tar"]}]).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(manifest)
        out.addfile(info, io.BytesIO(manifest))


def test_imagediff_equal_archives_and_the_first_layer_and_files_that_differ(tmp_path):
    a, b, c = tmp_path / "a.tar", tmp_path / "b.tar", tmp_path / "c.tar"
    saved_image(a, {"etc/x": b"1", "opt/y.pyc": b"same"})
    saved_image(b, {"etc/x": b"1", "opt/y.pyc": b"same"})
    saved_image(c, {"etc/x": b"2", "opt/y.pyc": b"same", "var/log/dpkg.log": b"today"}, mtime=5)
    assert imagediff.normalize(str(a), str(tmp_path / "n.tar")) == imagediff.read_saved(str(tmp_path / "n.tar")).id
    equal, lines = imagediff.compare(str(a), str(b))
    assert equal and lines[0].split()[2] == lines[1].split()[2], lines
    equal, lines = imagediff.compare(str(a), str(c))
    text = "\n".join(lines)
    assert not equal and "first layer that differs: 1 of 1" in text, text
    assert "etc/x: mtime 0 != 5, content/link" in text and "var/log/dpkg.log: only in the second" in text
    assert "opt/y.pyc: mtime 0 != 5" in text
    assert imagediff.main([str(a), str(tmp_path / "none.tar")]) == 2


def test_normalize_drops_what_names_one_builds_containers_and_keeps_the_rest():
    config = {
        "container": "54c57c2618c4",
        "parent": "sha256:fad8790586e7",
        "config": {"Hostname": "d0139c0ce55a", "User": "1000:1000"},
        "container_config": {"Hostname": "d0139c0ce55a"},
        "history": [{"created_by": "ARG X", "comment": "FROM 9e3d94bbe647"}, {"comment": "FROM localhost/debian:x"}],
    }  # as Podman 4.3.1's Docker-format config of a multi-stage build records them (measured here)
    assert imagediff.normalized_config(config) == {
        "config": {"Hostname": "", "User": "1000:1000"},
        "container_config": {"Hostname": ""},
        "history": [{"created_by": "ARG X"}, {"comment": "FROM localhost/debian:x"}],
    }


def test_reproduces_image_verdict_compares_digests_in_either_form_and_says_when_it_cannot():
    from finetune.manifest import image_verdict

    digest = "sha256:" + "c" * 64
    run = {"image_id": digest, "image": "finetune:cpu", "labels": {"org.opencontainers.image.revision": "abc123"}}
    assert image_verdict(run, {"image_id": "c" * 64}) == (f"image: the same as the run's ({digest})", True)
    assert image_verdict({**run, "image_id": "c" * 64}, {"image_id": digest})[1] is True
    line, same = image_verdict(run, {"image_id": "d" * 64})
    assert same is False and line == (
        f"image: NOT the run's: this one is sha256:{'d' * 64}, the run's was finetune:cpu {digest}, revision abc123"
    )
    line, same = image_verdict(run, None)
    assert same is None and line.startswith(f"image: the run's was finetune:cpu {digest}, revision abc123; this")
    assert "invoke reproduce RUN rebuilds it" in line
    assert image_verdict(None, {"image_id": digest}) == (
        "image: the run was made outside a container: no image to compare",
        None,
    )
