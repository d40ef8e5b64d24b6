"""`invoke doctor`'s check for the known reason a GPU container loses its GPU mid-run ("Failed to initialize NVML:
Unknown Error"; the trainer then stops with exit 69, finetune.errors.gpu_lost): Docker lets systemd manage container
cgroups and /dev/char has no links to the NVIDIA device files, so a `systemctl daemon-reload` on the host drops the
GPUs from every running container's device rules (NVIDIA/nvidia-container-toolkit#48, and the toolkit's
troubleshooting page). Either of NVIDIA's fixes passes it: the /dev/char links (`nvidia-ctk system
create-dev-char-symlinks --create-all`) or Docker's cgroupfs driver.
"""

from __future__ import annotations

import shlex

from devtools import engines
from devtools.checks import Check
from finetune.errors import GPU_LOST_FIX

NAME = "GPU kept across daemon-reload"
# For each NVIDIA character device under ROOT/dev: "linked|missing MAJOR:MINOR NAME", by whether ROOT/dev/char has the
# MAJOR:MINOR link that runc gives systemd for it (stat -L: a device may be reached through a link).
DEVICE_LINKS = r"""
for d in "$1"/dev/nvidia*; do
  [ -c "$d" ] || continue
  n=$(printf '%d:%d' "0x$(stat -L -c %t "$d")" "0x$(stat -L -c %T "$d")")
  if [ -e "$1/dev/char/$n" ]; then echo "linked $n ${d##*/}"; else echo "missing $n ${d##*/}"; fi
done
"""


def device_links_command(root: str = "") -> str:
    """The probe's shell command; root "" is this host (tests give a folder that stands in for /)."""
    return f"sh -c {shlex.quote(DEVICE_LINKS)} sh {shlex.quote(root)}"


def cgroup_device_check(c, probe, root: str = ""):
    """doctor's Check: ok when Docker's cgroup
    driver is not systemd or every NVIDIA device has its /dev/char link, fail when a daemon-reload would take the
    GPUs, skip without an engine or NVIDIA devices."""
    if engines.client(c, probe).kind == "podman":
        return Check(NAME, "skip", "Podman: NVIDIA's notice is about Docker (runc with systemd cgroups)")
    driver = engines.docker_info(c, ".CgroupDriver", probe)
    if not driver.ok:
        return Check(NAME, "skip", "needs the engine")
    driver = driver.stdout.strip()
    if driver != "systemd":
        return Check(NAME, "ok", f"Docker's cgroup driver is {driver}: a daemon-reload leaves containers' GPUs")
    rows = [line.split() for line in probe(device_links_command(root)).stdout.splitlines() if line.strip()]
    if not rows:
        return Check(NAME, "skip", "no NVIDIA device files under /dev")
    missing = [name for state, _, name in rows if state == "missing"]
    if not missing:
        return Check(NAME, "ok", f"systemd cgroup driver; /dev/char links all {len(rows)} NVIDIA devices")
    return Check(
        NAME,
        "fail",
        f"systemd cgroup driver and no /dev/char link for {', '.join(missing)}: a `systemctl daemon-reload` takes the "
        "GPUs from running containers (NVML: Unknown Error)",
        GPU_LOST_FIX,
    )
