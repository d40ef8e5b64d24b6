"""Is this host ready for GPU containers? The NVIDIA driver (and its version against the CUDA variant's minimum), and
how containers get the GPUs: CDI devices (`--device nvidia.com/gpu=...`) when the engine takes CDI devices and the
host has NVIDIA's CDI spec (Podman's only way), else `--gpus` through the NVIDIA container toolkit (docker.gpu_devices
in invoke.yaml: auto | cdi | gpus). `probe(cmd)` runs a shell command and returns an invoke Result (tasks.py passes
its quiet probe, tests fake the commands).
"""

from __future__ import annotations

from dataclasses import dataclass

from devtools import engines

ENABLE_DOCKER_CDI = (
    'Docker takes CDI devices from 25.0 when CDI is on: "features": {"cdi": true} in /etc/docker/daemon.json, then '
    "`sudo systemctl restart docker` (`docker info` then lists the CDI spec directories)"
)


@dataclass
class GpuRuntime:
    driver: str | None  # the driver version nvidia-smi reports, None when it does not answer
    problem: str | None = None  # what is missing; None when the runtime is ready
    fix: str = ""
    devices: str = "gpus"  # how containers get the GPUs: cdi (--device nvidia.com/gpu=...) or gpus (--gpus)
    found: str = ""  # which path was found and why, for doctor

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
    return _devices(c, probe, driver)


def _devices(c, probe, driver: str) -> GpuRuntime:
    """CDI or --gpus, by docker.gpu_devices (auto: CDI when the engine takes it and NVIDIA's spec is there)."""
    eng, wanted = engines.engine(c, probe), c.docker.gpu_devices
    spec = engines.nvidia_cdi_spec(eng.cdi_dirs)
    where = ", ".join(eng.cdi_dirs)
    if wanted in ("auto", "cdi") and spec:
        names = ", ".join(n for n in spec[1] if n != "all")[:80]
        return GpuRuntime(driver, devices="cdi", found=f"CDI: --device nvidia.com/gpu=... ({spec[0]}: {names})")
    generate = f"{engines.CDI_GENERATE} (nvidia-container-toolkit), then `nvidia-ctk cdi list`"
    if eng.kind == "podman" or wanted == "cdi":
        who = "Podman gives containers GPUs only as CDI devices" if eng.kind == "podman" else "docker.gpu_devices: cdi"
        if not eng.cdi_dirs:
            return GpuRuntime(driver, f"{who}, and this engine takes no CDI devices", ENABLE_DOCKER_CDI)
        return GpuRuntime(driver, f"{who}, and no NVIDIA CDI spec is in {where}", f"Generate it: {generate}")
    runtimes = engines.docker_info(c, "json .Runtimes", probe).stdout
    toolkit = probe("command -v nvidia-ctk || command -v nvidia-container-cli").ok
    if "nvidia" not in runtimes and not toolkit:
        return GpuRuntime(
            driver,
            "the NVIDIA container toolkit is missing, so Docker cannot give containers a GPU",
            "Install nvidia-container-toolkit, then `sudo nvidia-ctk runtime configure --runtime=docker && sudo "
            "systemctl restart docker`; see https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/"
            "latest/install-guide.html (or run deploy/cloud-init.yaml on a fresh VM)",
        )
    why = f"no NVIDIA CDI spec in {where}: {generate}" if where else "this engine takes no CDI devices"
    return GpuRuntime(driver, found=f"--gpus (NVIDIA container toolkit); not CDI: {why}")
