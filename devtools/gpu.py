"""Is this host ready for GPU containers? The NVIDIA driver (and its version against the CUDA variant's minimum)
and the NVIDIA container toolkit, each failure with its fix. `probe(cmd)` runs a shell command and returns an
invoke Result (tasks.py passes its quiet probe, tests fake the commands).
"""

from __future__ import annotations


def gpu_runtime_problem(c, probe) -> str | None:
    """What is missing for `--gpu` on this host, with the fix; None when the NVIDIA runtime is ready."""
    smi = probe("nvidia-smi --query-gpu=driver_version --format=csv,noheader")
    need = c.cuda.min_driver
    if not smi.ok:
        return (
            "--gpu: no NVIDIA driver answers (`nvidia-smi` failed). Install the NVIDIA driver "
            f">= {need} (CUDA {c.cuda.version}), e.g. on Ubuntu `sudo ubuntu-drivers install`, then reboot; "
            "see https://docs.nvidia.com/datacenter/tesla/driver-installation-guide/"
        )
    driver = smi.stdout.split()[0]
    if tuple(map(int, driver.split("."))) < tuple(map(int, need.split("."))):
        return f"--gpu: NVIDIA driver {driver} is older than {need}, the minimum for CUDA {c.cuda.version}: upgrade it"
    runtimes = probe(f"{c.docker.client} info --format '{{{{json .Runtimes}}}}'").stdout
    toolkit = probe("command -v nvidia-ctk || command -v nvidia-container-cli").ok
    if "nvidia" not in runtimes and not toolkit:
        return (
            "--gpu: the NVIDIA container toolkit is missing, so Docker cannot give containers a GPU. Install "
            "nvidia-container-toolkit, then `sudo nvidia-ctk runtime configure --runtime=docker && sudo systemctl "
            "restart docker`; see https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/latest/"
            "install-guide.html (or run deploy/cloud-init.yaml on a fresh VM)"
        )
    return None
