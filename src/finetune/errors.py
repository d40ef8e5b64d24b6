"""User-facing errors: bad config, data, model or run directory, and a GPU lost mid-run. The CLI prints one line, no
traceback, and exits with the class's exit_code (2 unless a subclass says otherwise: storage 74, a run folder that
cannot be created 73, busy run directory 75, GPU lost or a tracker unreachable 69)."""


class UserError(Exception):
    """An error the user can fix by editing a file or a flag; printed as one line."""

    exit_code = 2


class ConfigError(UserError):
    """A config key is unknown, has the wrong type, or an invalid value."""


class LoadError(UserError):
    """A model or tokenizer the config names cannot be loaded (no such directory, hub id not cached offline)."""


class DataError(UserError):
    """A data file is missing, malformed, empty, or holds a value the task cannot use."""

    def __init__(self, path, line, message):
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {message}")


class RewardError(UserError):
    """A grpo reward function raised or returned something other than one number per completion (finetune.rewards):
    the run stops in one line naming the function; the checkpoints already written stay."""


class StorageError(UserError):
    """Writing the run directory failed (disk full, read-only, permission denied): distinct exit code, one line."""

    exit_code = 74  # EX_IOERR (sysexits.h)


class ServiceUnavailable(UserError):
    """A service the run was told to use (a tracking server) does not answer: stopped before any training."""

    exit_code = 69  # EX_UNAVAILABLE (sysexits.h)


class GpuLost(UserError):
    """The GPU stopped answering in the middle of a run: in a container, almost always the container lost access to
    its GPU devices (see GPU_LOST_SIGNS). Not the run's fault, so not exit 2: the host needs a fix, then --resume."""

    exit_code = 69  # EX_UNAVAILABLE (sysexits.h): a service the program needs is unavailable


# What torch and NVML say when a process can no longer open the GPU's device files. On a Docker host whose container
# cgroups systemd manages, a `systemctl daemon-reload` (run by many package upgrades) rewrites the container's device
# rules without the NVIDIA devices (runc names each device to systemd by its /dev/char/MAJOR:MINOR link, which the
# NVIDIA driver does not create), and NVML then fails with "Unknown Error": NVIDIA's notice
# https://github.com/NVIDIA/nvidia-container-toolkit/issues/48 and the toolkit's troubleshooting page ("Containers
# losing access to GPUs with error: Failed to initialize NVML: Unknown Error"). The texts: nvidia-smi's and NVML's own;
# torch's assert when its NVML init fails (c10/cuda/CUDACachingAllocator.cpp, DriverAPI); torch's lazy CUDA init;
# cudaErrorUnknown from any CUDA call.
GPU_LOST_SIGNS = (
    "Failed to initialize NVML: Unknown Error",
    "NVML_SUCCESS == DriverAPI::get()->nvmlInit_v2_()",
    "CUDA unknown error - this may be due to an incorrectly set up environment",
    "CUDA error: unknown error",
)
# NVIDIA's documented workarounds on the host (same sources), most recommended first. devtools/gpu_loss.py (`invoke
# doctor`) checks for the cause and gives the same fix.
GPU_LOST_FIX = (
    "on the host, `sudo nvidia-ctk system create-dev-char-symlinks --create-all` (and at every boot: NVIDIA's udev "
    'rule), or Docker\'s cgroupfs driver ("exec-opts": ["native.cgroupdriver=cgroupfs"] in /etc/docker/daemon.json, '
    "then restart Docker)"
)


def gpu_lost(err: BaseException, where: str = "") -> GpuLost | None:
    """The one-line GpuLost for an exception that says the GPU became unreachable (None: any other error)."""
    text = str(err)
    sign = next((s for s in GPU_LOST_SIGNS if s in text), None)
    if sign is None:
        return None
    return GpuLost(
        f"the GPU stopped answering{f' {where}' if where else ''} ({sign}): most often the container lost access to "
        "its GPU devices, which a `systemctl daemon-reload` on a Docker host with the systemd cgroup driver does "
        f"(NVIDIA/nvidia-container-toolkit#48). Fix: {GPU_LOST_FIX}; `invoke doctor` checks it. Then start the "
        "container again with --resume (the last checkpoint is whole)"
    )
