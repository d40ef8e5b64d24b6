"""A GPU lost mid-run (a container whose devices a `systemctl daemon-reload` took away: NVML "Unknown Error") stops
the trainer with one line naming the cause and the fix, exit 69, instead of a CUDA traceback; `invoke doctor`'s check
for the known cause (devtools/gpu_loss.py).

There is no GPU here, so every GPU in this file is a FAKE: a FAKE training step that raises the RuntimeError text
torch gives when its NVML init fails, FAKE probe answers for the doctor check, and FAKE device files (links to
/dev/null and /dev/zero, real character devices) for the check's shell script. None of it claims a real GPU host.
"""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest

from conftest import DEFAULT_CONFIG, REPO, SHORT, cli_env
from devtools.gpu_loss import cgroup_device_check, device_links_command
from finetune import cli
from finetune.errors import GPU_LOST_SIGNS, GpuLost
from finetune.trainer import gpu_guard

# torch's text when its NVML init fails (TORCH_INTERNAL_ASSERT in c10/cuda/CUDACachingAllocator.cpp; the line number
# and path differ by build, the FAKE's are made up)
TORCH_NVML_ASSERT = (
    'NVML_SUCCESS == DriverAPI::get()->nvmlInit_v2_() INTERNAL ASSERT FAILED at "/pytorch/c10/cuda/'
    'CUDACachingAllocator.cpp":1131, please report a bug to PyTorch. '
)
# The training run with a FAKE step: the real Trainer step twice, then the text torch raises once the GPU is gone.
FAKE_LOST_GPU_RUN = r"""
import sys, transformers
from finetune.cli import main
real, calls = transformers.Trainer.training_step, []
def fake_training_step(self, *args, **kwargs):  # FAKE: the GPU goes away at the third step
    calls.append(1)
    if len(calls) == 3:
        raise RuntimeError(sys.argv[1])
    return real(self, *args, **kwargs)
transformers.Trainer.training_step = fake_training_step
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow  # trains two real steps first
def test_a_gpu_lost_mid_run_stops_with_one_line_naming_cause_and_fix(tmp_path):
    """The FAKE step raises at step 3; the run must end at once (no hang: timeout) with exit 69 and one line."""
    run = [sys.executable, "-c", FAKE_LOST_GPU_RUN, TORCH_NVML_ASSERT, "train", DEFAULT_CONFIG]
    run += ["--output-dir", tmp_path / "run", *SHORT]
    proc = subprocess.run(run, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 69, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("finetune: error: the GPU stopped answering at step 3 (NVML_SUCCESS == DriverAPI"), line
    assert "systemctl daemon-reload" in line and "--resume" in line and "invoke doctor" in line
    assert "nvidia-ctk system create-dev-char-symlinks --create-all" in line
    assert '"exec-opts": ["native.cgroupdriver=cgroupfs"]' in line


@pytest.mark.parametrize(
    "text",
    [
        TORCH_NVML_ASSERT,
        "Failed to initialize NVML: Unknown Error",  # nvidia-smi's, and NVML's own
        "CUDA unknown error - this may be due to an incorrectly set up environment, e.g. changing env variable "
        "CUDA_VISIBLE_DEVICES after program start. Setting the available devices to be zero.",  # torch's lazy init
        "CUDA error: unknown error\nCUDA kernel errors might be asynchronously reported at some other API call, so "
        "the stacktrace below might be incorrect.",  # cudaErrorUnknown from a CUDA call
    ],
)
def test_each_known_text_of_a_lost_gpu_becomes_the_one_line_error(text):
    with pytest.raises(GpuLost) as caught, gpu_guard("at step 7"):
        raise RuntimeError(text)  # FAKE: what torch raises
    assert str(caught.value).startswith("the GPU stopped answering at step 7 (")
    assert "\n" not in str(caught.value) and caught.value.exit_code == 69
    assert len(GPU_LOST_SIGNS) == 4  # one case above per sign


def test_other_gpu_errors_pass_unchanged():
    """An out-of-memory is the run's own problem (batch size), not a lost GPU: it must keep its traceback."""
    oom = RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.11 GiB total capacity)")
    with pytest.raises(RuntimeError) as caught, gpu_guard("at step 7"):
        raise oom
    assert caught.value is oom


def test_the_cli_gives_the_one_line_for_a_gpu_lost_outside_a_training_step(monkeypatch, capsys):
    def fake_eval(args):  # FAKE: moving the model to the GPU fails as torch does once the GPU is gone
        raise RuntimeError("CUDA error: unknown error")

    monkeypatch.setattr(cli, "cmd_eval", fake_eval)
    assert cli.main(["eval", "runs/none"]) == 69
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("finetune: error: the GPU stopped answering (CUDA error: unknown error)")

    def other_error(args):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(cli, "cmd_eval", other_error)
    assert cli.main(["eval", "runs/none"]) == 1  # any other error: its traceback (URL passwords cut out), exit 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: CUDA out of memory" in err, err
    assert "the GPU stopped answering" not in err  # not mistaken for a lost GPU


def fake_probe(cgroup_driver: str | None, device_rows: str = ""):
    """FAKE host answers: `docker info --format {{.CgroupDriver}}` (None: no engine) and the device-links script."""

    def probe(cmd: str):
        if cmd == f"{CLIENT} --version":
            return SimpleNamespace(ok=True, stdout="Docker version 28.2.2, build FAKE\n", stderr="")
        if cmd == f"{CLIENT} buildx version":
            return SimpleNamespace(ok=False, stdout="", stderr="FAKE: no buildx")
        if cmd.startswith(f"{CLIENT} info"):
            return SimpleNamespace(ok=cgroup_driver is not None, stdout=f"{cgroup_driver or ''}\n", stderr="")
        assert cmd == device_links_command(), cmd
        return SimpleNamespace(ok=True, stdout=device_rows, stderr="")

    return probe


CLIENT = "fake-docker-for-gpu-loss"  # its own name: devtools.engines remembers each client's answers per process
C = SimpleNamespace(docker=SimpleNamespace(client=CLIENT))


@pytest.mark.parametrize(
    "driver, rows, state, found",
    [
        (None, "", "skip", "needs the engine"),
        ("cgroupfs", "", "ok", "cgroup driver is cgroupfs"),
        ("systemd", "", "skip", "no NVIDIA device files"),
        ("systemd", "linked 195:255 nvidiactl\nlinked 195:0 nvidia0\n", "ok", "links all 2 NVIDIA devices"),
        ("systemd", "linked 195:255 nvidiactl\nmissing 195:0 nvidia0\nmissing 235:0 nvidia-uvm\n", "fail", "nvidia0,"),
    ],
)
def test_doctor_check_for_the_known_cause_on_fake_hosts(driver, rows, state, found):
    check = cgroup_device_check(C, fake_probe(driver, rows))
    assert (check.state, check.name) == (state, "GPU kept across daemon-reload")
    assert found in check.found, check.found
    if state == "fail":
        assert "nvidia-uvm" in check.found and "systemctl daemon-reload" in check.found
        assert "nvidia-ctk system create-dev-char-symlinks --create-all" in check.fix
        assert "native.cgroupdriver=cgroupfs" in check.fix


def test_the_device_links_script_on_fake_device_files(tmp_path):
    """The check's real shell script over a FAKE /dev: nvidiactl and nvidia-uvm are links to /dev/null (1:3) and
    /dev/zero (1:5), real character devices; dev/char has 1:3 only. A folder (nvidia-caps) is no device."""
    dev = tmp_path / "dev"
    (dev / "char").mkdir(parents=True)
    (dev / "nvidia-caps").mkdir()
    (dev / "nvidiactl").symlink_to("/dev/null")
    (dev / "nvidia-uvm").symlink_to("/dev/zero")
    (dev / "char" / "1:3").symlink_to("../nvidiactl")
    out = subprocess.run(device_links_command(str(tmp_path)), shell=True, capture_output=True, text=True, check=True)
    assert sorted(out.stdout.splitlines()) == ["linked 1:3 nvidiactl", "missing 1:5 nvidia-uvm"]

    def probe(cmd: str):
        if cmd.startswith(CLIENT):
            return fake_probe("systemd")(cmd)
        res = subprocess.run(cmd, shell=True, capture_output=True, text=True)
        return SimpleNamespace(ok=res.returncode == 0, stdout=res.stdout, stderr=res.stderr)

    check = cgroup_device_check(C, probe, root=str(tmp_path))
    assert check.state == "fail" and "no /dev/char link for nvidia-uvm:" in check.found
