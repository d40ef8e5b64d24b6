"""`invoke deploy*` and `invoke doctor --host` against hostile or unlucky input (issue 12): names and hosts that are
shell code or ssh options, a host that cannot be reached during `deploy.fetch --force`, links in a fetched run, a
redeploy over a running trainer, config values with spaces.

The remote host is a FAKE: a fake `ssh` first on PATH records its argv (one JSON list a line) and, when the test
gives it a fake remote home, runs the remote command with `sh -c` there, with a fake `docker` first on that PATH
(recording its argv too). Nothing here contacts a real host; one test uses the real `ssh` client only to show that a
host beginning with `-` never reaches it (ssh would run its ProxyCommand locally).
"""

from __future__ import annotations

import io
import json
import shlex
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml
from fakes import fake_host

from conftest import REPO, explain, invoke

SETTINGS = yaml.safe_load((REPO / "invoke.yaml").read_text())
DEPLOY_TASKS = ["deploy", "deploy.status", "deploy.logs", "deploy.fetch", "deploy.stop"]

FAKE_SSH = f"""#!{sys.executable}
# FAKE ssh (tests/test_deploy_safety.py): records its argv in $FAKE_SSH_LOG; exits $FAKE_SSH_EXIT when set (an
# unreachable host); with $FAKE_SSH_HOME runs the remote command with sh -c in that folder as $HOME.
import json, os, subprocess, sys

argv = sys.argv[1:]
with open(os.environ["FAKE_SSH_LOG"], "a") as log:
    log.write(json.dumps(argv) + "\\n")
if os.environ.get("FAKE_SSH_EXIT"):
    print("FAKE ssh: connect to host: Connection refused", file=sys.stderr)
    sys.exit(int(os.environ["FAKE_SSH_EXIT"]))
if not os.environ.get("FAKE_SSH_HOME"):
    sys.exit(0)
with_value, i = set("BbcDEeFIiJLlmOoPpQRSWw"), 0
while i < len(argv) and argv[i].startswith("-"):  # ssh's options, then the host, then the remote command
    if argv[i] == "--":
        i += 1
        break
    if argv[i][-1] in with_value and len(argv[i]) == 2:
        i += 1
    i += 1
command = " ".join(argv[i + 1 :])
env = dict(os.environ, HOME=os.environ["FAKE_SSH_HOME"], PATH=os.environ["FAKE_REMOTE_BIN"] + ":" + os.environ["PATH"])
for secret in ("HF_TOKEN", "WANDB_API_KEY"):  # like ssh: the local environment does not travel
    env.pop(secret, None)
sys.exit(subprocess.run(["sh", "-c", command], env=env, cwd=env["HOME"]).returncode)
"""

FAKE_REMOTE_DOCKER = f"""#!{sys.executable}
# FAKE docker on the FAKE remote host (tests/test_deploy_safety.py): records its argv in $FAKE_REMOTE_LOG, answers
# `inspect` with $FAKE_REMOTE_STATE (no such container when empty), and records which secrets `run` was given.
import json, os, sys

argv = sys.argv[1:]
with open(os.environ["FAKE_REMOTE_LOG"], "a") as log:
    log.write(json.dumps(argv) + "\\n")
if argv[0] == "inspect":
    state = os.environ.get("FAKE_REMOTE_STATE")
    print(state) if state else sys.exit("Error: No such object")
elif argv[0] == "image":
    sys.exit(1)
elif argv[0] == "load":
    sys.stdin.buffer.read()
elif argv[0] == "run":
    with open(os.environ["FAKE_REMOTE_ENV"], "a") as env:
        env.write(json.dumps({{k: os.environ.get(k) for k in ("HF_TOKEN", "WANDB_API_KEY")}}) + "\\n")
    print("fakecontainerid")
"""


def _script(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


def fake_remote(tmp_path: Path, *, home: bool = True, **extra) -> dict:
    """fake_host's env (FAKE local docker) plus a FAKE ssh first on PATH and, with home, a FAKE remote host."""
    env = fake_host(tmp_path, None)
    bin_, remote_bin = tmp_path / "fakebin", tmp_path / "remote-bin"
    remote_bin.mkdir()
    _script(bin_ / "ssh", FAKE_SSH)
    _script(remote_bin / "docker", FAKE_REMOTE_DOCKER)
    env.update(FAKE_SSH_LOG=str(tmp_path / "ssh.log"), FAKE_REMOTE_BIN=str(remote_bin))
    env.update(FAKE_REMOTE_LOG=str(tmp_path / "remote-docker.log"), FAKE_REMOTE_ENV=str(tmp_path / "remote-env.log"))
    env["INVOKE_FINETUNE_RUNS_DIR"] = str(tmp_path / "runs")  # deploy.fetch's local runs/
    if home:
        (tmp_path / "remote").mkdir(exist_ok=True)
        env["FAKE_SSH_HOME"] = str(tmp_path / "remote")
    for var in ("HF_TOKEN", "WANDB_API_KEY"):
        env.pop(var, None)
    return env | extra


def lines(path: Path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """The single line a refused task prints on stderr (no traceback)."""
    said = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(said) == 1, explain(proc)
    return said[0]


# 1. a deploy --name is one word by the project's one rule (finetune.names), on every deploy task


@pytest.mark.parametrize("task", DEPLOY_TASKS)
def test_every_deploy_task_refuses_a_name_that_is_shell_code(tmp_path, task):
    env = fake_remote(tmp_path)
    proc = invoke(env, task, "--host", "me@gpu-vm", "--name", f"x; touch {tmp_path}/PWNED #")
    assert "--name: got 'x; touch" in one_line_error(proc) and "allowed: 1-100 of letters" in proc.stderr
    assert not (tmp_path / "PWNED").exists() and lines(tmp_path / "ssh.log") == []


def test_a_name_with_a_space_is_refused_not_split(tmp_path):
    env = fake_remote(tmp_path)
    proc = invoke(env, "--dry", "deploy", "--host", "me@gpu-vm", "--name", "a b")
    assert "--name: got 'a b'" in one_line_error(proc)
    assert "rm -f finetune-a b" not in proc.stdout


# 2. doctor --host: the host is one ssh argument, and under --dry no other machine is contacted


def test_dry_doctor_contacts_no_deploy_host_and_runs_no_injected_command(tmp_path):
    env = fake_remote(tmp_path, home=False)
    proc = invoke(env, "--dry", "doctor", "--cpu", "--host", f"nohost.invalid; touch {tmp_path}/PWNED #")
    assert not (tmp_path / "PWNED").exists(), "the host's text ran as a local command"
    assert lines(tmp_path / "ssh.log") == [], "--dry contacted the deploy host"
    row = next(line for line in proc.stdout.splitlines() if "deploy host over SSH" in line)
    assert row.startswith("FAIL") and "--host: got 'nohost.invalid; touch" in row, proc.stdout  # no spaces in a host


def test_dry_doctor_skips_the_ssh_check(tmp_path):
    proc = invoke(fake_remote(tmp_path, home=False), "--dry", "doctor", "--cpu", "--host", "me@gpu-vm")
    assert lines(tmp_path / "ssh.log") == [], "--dry contacted the deploy host"
    row = next(line for line in proc.stdout.splitlines() if "deploy host over SSH" in line)
    assert row.startswith("skip") and "--dry" in row, proc.stdout


def test_doctor_gives_ssh_the_host_as_one_argument_after_double_dash(tmp_path):
    env = fake_remote(tmp_path, home=False, FAKE_SSH_EXIT="255")
    host = f"nohost.invalid$(touch${{IFS}}{tmp_path}/PWNED)"  # shell code without a space
    proc = invoke(env, "doctor", "--cpu", "--host", host)
    assert not (tmp_path / "PWNED").exists(), "the host's text ran as a local command"
    [argv] = lines(tmp_path / "ssh.log")
    assert argv[-3:] == ["--", host, "docker version --format '{{.Server.Version}}'"], argv
    row = next(line for line in proc.stdout.splitlines() if "deploy host over SSH" in line)
    assert row.startswith("FAIL") and proc.returncode == 1


# 3. deploy.fetch: a checked name, a temporary copy that replaces the old one only after a complete transfer, no links


def _local_run(tmp_path: Path, name: str = "myrun") -> Path:
    run = tmp_path / "runs" / name
    run.mkdir(parents=True)
    (run / "keep.txt").write_text("the local copy\n")
    return run


def _remote_run(tmp_path: Path, name: str = "myrun") -> Path:
    run = tmp_path / "remote" / "finetune" / "runs" / name
    (run / "checkpoint-2").mkdir(parents=True)
    (run / "summary.json").write_text('{"fake": "remote summary"}\n')
    (run / "checkpoint-2" / "weights.bin").write_bytes(b"FAKE weights")
    return run


def test_fetch_refuses_dot_dot_as_a_name(tmp_path):
    proc = invoke(fake_remote(tmp_path), "--dry", "deploy.fetch", "--host", "me@gpu-vm", "--name", "..", "--force")
    assert "--name: got '..'" in one_line_error(proc) and "rm -rf" not in proc.stdout


def test_fetch_from_an_unreachable_host_keeps_the_local_copy(tmp_path):
    run = _local_run(tmp_path)
    env = fake_remote(tmp_path, FAKE_SSH_EXIT="255")
    proc = invoke(env, "deploy.fetch", "--host", "me@gpu-vm", "--name", "myrun", "--force")
    assert proc.returncode != 0
    assert (run / "keep.txt").read_text() == "the local copy\n", "the local copy was lost"
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["myrun"], "a temporary folder was left"
    assert "unchanged" in proc.stderr.strip().splitlines()[-1]


def test_fetch_replaces_the_local_copy_after_a_complete_transfer(tmp_path):
    run, _ = _local_run(tmp_path), _remote_run(tmp_path)
    proc = invoke(fake_remote(tmp_path), "deploy.fetch", "--host", "me@gpu-vm", "--name", "myrun", "--force")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (run / "checkpoint-2" / "weights.bin").read_bytes() == b"FAKE weights" and not (run / "keep.txt").exists()
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["myrun"], "a temporary folder was left"


@pytest.mark.parametrize("target", ["/etc/passwd", "summary.json"])
def test_fetch_refuses_links_from_the_host(tmp_path, target):
    run, remote = _local_run(tmp_path), _remote_run(tmp_path)
    (remote / "checkpoint-2" / "link").symlink_to(target)
    proc = invoke(fake_remote(tmp_path), "deploy.fetch", "--host", "me@gpu-vm", "--name", "myrun", "--force")
    assert proc.returncode != 0 and "link" in proc.stderr, proc.stdout + proc.stderr
    assert (run / "keep.txt").exists(), "the local copy was replaced by one with a link"
    assert not [p for p in (tmp_path / "runs").rglob("*") if p.is_symlink()]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["myrun"], "a temporary folder was left"


def test_dry_fetch_prints_the_plan_and_changes_nothing(tmp_path):
    run = _local_run(tmp_path)
    proc = invoke(fake_remote(tmp_path), "--dry", "deploy.fetch", "--host", "me@gpu-vm", "--name", "myrun", "--force")
    assert proc.returncode == 0, proc.stderr
    plan = proc.stdout
    assert 'tar -C "$HOME"/finetune/runs -c myrun' in plan and f"mv {run} " in plan, plan
    assert plan.index("tar -C") < plan.index(f"mv {run} "), "the old copy is moved aside only after the transfer"
    assert (run / "keep.txt").exists() and lines(tmp_path / "ssh.log") == []


# 4. a host is never an ssh option, and a dry deploy contacts no host


@pytest.mark.skipif(not shutil.which("ssh"), reason="needs the ssh client (openssh-client)")
@pytest.mark.parametrize("task", DEPLOY_TASKS)
def test_every_deploy_task_refuses_a_host_that_is_an_ssh_option(tmp_path, task):
    env = fake_host(tmp_path, None)  # the REAL ssh client: it would run a ProxyCommand here, locally
    env["INVOKE_FINETUNE_RUNS_DIR"] = str(tmp_path / "runs")
    proc = invoke(env, "--dry", task, "--host", f"-oProxyCommand=touch {tmp_path}/PWNED", "--name", "myrun")
    assert not (tmp_path / "PWNED").exists(), "ssh ran the host's ProxyCommand"
    assert "--host: got '-oProxyCommand=touch" in one_line_error(proc) and "'-'" in proc.stderr


def test_ssh_gets_double_dash_before_the_host(tmp_path):
    env = fake_remote(tmp_path, home=False)
    proc = invoke(env, "deploy.status", "--host", "me@gpu-vm", "--name", "myrun")
    assert proc.returncode == 0, proc.stderr
    [argv] = lines(tmp_path / "ssh.log")
    assert argv[:2] == ["-o", "BatchMode=yes"] and argv[-3:-1] == ["--", "me@gpu-vm"], argv


def test_dry_deploy_contacts_no_host_and_plans_to_ship(tmp_path):
    env = fake_remote(tmp_path, home=False)
    proc = invoke(env, "--dry", "deploy", "--host", "me@gpu-vm")
    assert proc.returncode == 0, proc.stderr
    assert lines(tmp_path / "ssh.log") == [], "--dry contacted the host"
    assert "save finetune:cpu | gzip -1 | ssh -o BatchMode=yes -- me@gpu-vm 'gunzip | docker load'" in proc.stdout


# 5. a redeploy never kills a running trainer; each deploy reads its own configs and data; restarts are limited


def _deploy(env: dict, name: str, *extra) -> subprocess.CompletedProcess:
    return invoke(env, "deploy", "--host", "me@gpu-vm", "--name", name, "--config", "configs/default.yaml", *extra)


def test_redeploy_refuses_while_the_run_is_active(tmp_path):
    proc = _deploy(fake_remote(tmp_path, FAKE_REMOTE_STATE="running"), "myrun")
    line = one_line_error(proc)
    assert "finetune-myrun" in line and "--replace" in line
    calls = lines(tmp_path / "remote-docker.log")
    assert [c[0] for c in calls if c[0] != "load"] == ["inspect"], calls  # no rm, no stop, no run


def test_replace_stops_the_run_gracefully_then_starts_the_new_one(tmp_path):
    proc = _deploy(fake_remote(tmp_path, FAKE_REMOTE_STATE="running"), "myrun", "--replace")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    calls = [c for c in lines(tmp_path / "remote-docker.log") if c[0] in ("inspect", "stop", "rm", "kill", "run")]
    assert [c[:3] for c in calls[:3]] == [["inspect", "--format", "{{.State.Status}}"], ["stop", "--time", "120"]] + [
        ["rm", "finetune-myrun"]
    ], calls
    assert calls[1][-1] == "finetune-myrun" and calls[3][0] == "run" and len(calls) == 4, calls


def _volume(run: list, inside: str) -> str:
    return next(v.split(":")[0] for k, v in zip(run, run[1:]) if k == "--volume" and v.split(":")[1] == inside)


def test_each_deploy_reads_its_own_configs_and_data(tmp_path):
    env, remote = fake_remote(tmp_path), tmp_path / "remote" / "finetune"
    assert _deploy(env, "run-a").returncode == 0
    (remote / "deploys" / "run-a" / "configs" / "marker").write_text("what run-a reads\n")
    assert _deploy(env, "run-b").returncode == 0
    assert (remote / "deploys" / "run-a" / "configs" / "marker").exists(), "deploying run-b changed run-a's configs"
    run_a, run_b = [c for c in lines(tmp_path / "remote-docker.log") if c[0] == "run"]
    for run, name in ((run_a, "run-a"), (run_b, "run-b")):
        assert _volume(run, "/workspace/configs") == str(remote / "deploys" / name / "configs")
        assert _volume(run, "/workspace/data") == str(remote / "deploys" / name / "data")
        assert _volume(run, "/workspace/runs") == str(remote / "runs")  # runs/ shared: runs/<name> per run
        assert run[-3:] == ["--output-dir", f"runs/{name}", "--resume"]
    assert (remote / "deploys" / "run-b" / "data").is_dir() and (remote / "runs" / "run-b").is_dir()


def test_restarts_are_limited_and_secrets_stay_off_command_lines(tmp_path):
    env = fake_remote(tmp_path, HF_TOKEN="hf_FAKE_secret_789")
    proc = _deploy(env, "myrun")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [run] = [c for c in lines(tmp_path / "remote-docker.log") if c[0] == "run"]
    assert run[run.index("--restart") + 1] == f"on-failure:{SETTINGS['deploy']['max_restarts']}"
    assert "--env" in run and "HF_TOKEN" in run
    assert lines(tmp_path / "remote-env.log") == [{"HF_TOKEN": "hf_FAKE_secret_789", "WANDB_API_KEY": None}]
    everything = (tmp_path / "ssh.log").read_text() + (tmp_path / "remote-docker.log").read_text() + proc.stdout
    assert "hf_FAKE_secret_789" not in everything + proc.stderr


def test_deploy_help_says_replace_keeps_the_config(tmp_path):
    proc = invoke(fake_host(tmp_path, None), "--help", "deploy")
    text = " ".join(proc.stdout.split())  # as one line: invoke wraps the help
    assert "--replace" in text and "a changed config needs a new --name" in text, proc.stdout


# 6. config values (deploy.remote_dir, deploy.ssh_options) reach the shell quoted


@pytest.mark.parametrize("remote_dir", ["~/fine tune", "fine tune", "ABSOLUTE/fine tune"])
def test_remote_dir_with_a_space_home_relative_or_absolute(tmp_path, remote_dir):
    remote_dir = remote_dir.replace("ABSOLUTE", str(tmp_path / "remote"))
    run = tmp_path / "remote" / "fine tune" / "runs" / "myrun"
    run.mkdir(parents=True)
    (run / "summary.json").write_text('{"fake": "summary read through remote_dir"}\n')
    env = fake_remote(tmp_path, INVOKE_DEPLOY_REMOTE_DIR=remote_dir)
    proc = invoke(env, "deploy.status", "--host", "me@gpu-vm", "--name", "myrun")
    assert proc.returncode == 0 and "summary read through remote_dir" in proc.stdout, proc.stdout + proc.stderr


def test_remote_dir_under_another_users_home_is_refused(tmp_path):
    env = fake_remote(tmp_path, INVOKE_DEPLOY_REMOTE_DIR="~bob/finetune")
    proc = invoke(env, "deploy.status", "--host", "me@gpu-vm", "--name", "myrun")
    assert "deploy.remote_dir '~bob/finetune'" in one_line_error(proc) and lines(tmp_path / "ssh.log") == []


def test_ssh_options_are_passed_word_by_word(tmp_path):
    env = fake_remote(tmp_path, home=False, INVOKE_DEPLOY_SSH_OPTIONS='-p 2222 -i "/keys/my key"')
    assert invoke(env, "deploy.stop", "--host", "me@gpu-vm", "--name", "myrun").returncode == 0
    [argv] = lines(tmp_path / "ssh.log")
    assert argv[:-1] == ["-o", "BatchMode=yes", "-p", "2222", "-i", "/keys/my key", "--", "me@gpu-vm"], argv
    assert shlex.split(argv[-1])[:4] == ["docker", "stop", "--time", "120"]


# issue 13: one place builds ssh command lines


def test_deploy_and_doctor_build_ssh_commands_in_one_place(tmp_path):
    env = fake_remote(tmp_path, home=False, FAKE_SSH_EXIT="255", INVOKE_DEPLOY_SSH_OPTIONS="-p 2222")
    invoke(env, "doctor", "--cpu", "--host", "me@gpu-vm")
    invoke(env, "deploy.status", "--host", "me@gpu-vm", "--name", "myrun")
    doctor_argv, deploy_argv = lines(tmp_path / "ssh.log")
    assert doctor_argv[:-1] == [*deploy_argv[:2], "-o", "ConnectTimeout=5", *deploy_argv[2:-1]], doctor_argv
    for module in ("deploy.py", "doctor.py"):
        assert "BatchMode" not in (REPO / "devtools" / module).read_text(), f"devtools/{module} builds its own ssh"


def _tar_stream(tmp_path, entries) -> io.BytesIO:
    """A tar stream with entries (name, kind, payload): kind file, symlink, hardlink or fifo."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, kind, payload in entries:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size, info.mode = len(payload), 0o4755  # setuid: must not survive
                tar.addfile(info, io.BytesIO(payload))
                continue
            info.type = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE}[kind]
            info.linkname = payload.decode()
            tar.addfile(info)
    buf.seek(0)
    return buf


@pytest.mark.parametrize("filters", [True, False], ids=["with tarfile filters", "Python before 3.11.4"])
@pytest.mark.parametrize(
    "bad",
    [("run/link", "symlink", b"/etc/passwd"), ("run/hard", "hardlink", b"run/ok.txt"), ("../escape", "file", b"x"),
     ("/abs", "file", b"x"), ("run/pipe", "fifo", b"")],
    ids=["symlink", "hardlink", "dotdot", "absolute", "fifo"],
)  # fmt: skip
def test_fetch_unpacking_refuses_what_could_escape_on_every_python(tmp_path, monkeypatch, filters, bad):
    """deploy.fetch unpacks with the invoke Python: Debian 12's is 3.11.2, which has no tarfile filters (the
    container deploy test failed there with TypeError); the fallback must refuse the same members."""
    from devtools import remote

    if not filters:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    dest = tmp_path / "dest"
    dest.mkdir()
    ok = _tar_stream(tmp_path, [("run/ok.txt", "file", b"fine")])
    remote.extract(dest, ok)
    assert (dest / "run" / "ok.txt").read_bytes() == b"fine"
    assert not (dest / "run" / "ok.txt").stat().st_mode & 0o7000  # no setuid from the host
    with pytest.raises(tarfile.TarError):
        remote.extract(dest, _tar_stream(tmp_path, [bad]))
    assert not (tmp_path / "escape").exists() and not (dest / "run" / "link").exists()
