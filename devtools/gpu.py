"""Is this host ready for GPU containers? The NVIDIA driver (and its version against the CUDA variant's minimum)
and the NVIDIA container toolkit. `probe(cmd)` runs a shell command and returns an invoke Result (tasks.py passes
its quiet probe, tests fake the commands).
"""

from __future__ import annotations

from dataclasses import dataclass

from devtools.images import docker_info


@dataclass
class GpuRuntime:
    driver: str | None  # the driver version nvidia-smi reports, None when it does not answer
    problem: str | None = None  # what is missing; None when the runtime is ready
    fix: str = ""

    def message(self) -> str:
        return f"--gpu: {self.problem}. {self.fix}"


def gpu_runtime(c, probe) -> GpuRuntime:
    """The driver version, and what is missing for `--gpu` on this host with its fix (problem None: ready)."""
    smi = probe("nvidia-smi --query-gpu=driver_version --format=csv,noheader")
    need = c.cuda.min_driver
    if not smi.ok:
        return GpuRuntime(
            None,
            "no NVIDIA driver answers (`nvidia-smi` failed)",
            f"Install the NVIDIA driver >= {need} (CUDA {c.cuda.version}), e.g. on Ubuntu `sudo ubuntu-drivers "
            "install`, then reboot; see https://docs.nvidia.com/datacenter/tesla/driver-installation-guide/",
        )
    driver = smi.stdout.split()[0]
    if tuple(map(int, driver.split("."))) < tuple(map(int, need.split("."))):
        return GpuRuntime(
            driver,
            f"NVIDIA driver {driver} is older than {need}, the minimum for CUDA {c.cuda.version}",
            "Upgrade the driver (e.g. `sudo ubuntu-drivers install`), then reboot",
        )
    runtimes = docker_info(c, "json .Runtimes", probe).stdout
    toolkit = probe("command -v nvidia-ctk || command -v nvidia-container-cli").ok
    if "nvidia" not in runtimes and not toolkit:
        return GpuRuntime(
            driver,
            "the NVIDIA container toolkit is missing, so Docker cannot give containers a GPU",
            "Install nvidia-container-toolkit, then `sudo nvidia-ctk runtime configure --runtime=docker && sudo "
            "systemctl restart docker`; see https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/"
            "latest/install-guide.html (or run deploy/cloud-init.yaml on a fresh VM)",
        )
    return GpuRuntime(driver)
