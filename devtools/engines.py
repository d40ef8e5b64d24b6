"""What the configured container client (invoke.yaml's docker.client) and its engine can do, asked of the host:

- the client: Docker or Podman (Podman's `docker` shim included, which answers `--version` as podman), its version,
  and whether it can run a BuildKit build (buildx present, or a Docker client before 23.0, which uses the engine's
  built-in BuildKit with DOCKER_BUILDKIT=1); when it cannot, the package that fixes it on this system;
- the engine: rootless or not (then containers run so that the host user owns what they write), and whether it
  takes CDI devices, with the host's NVIDIA CDI spec (`--device nvidia.com/gpu=...` instead of `--gpus`).

`probe(cmd)` runs a shell command and returns an invoke Result (tasks pass their quiet probe; tests put FAKE
commands first on PATH). Pure rules (which flags follow from the facts) are kept apart from the probes.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

# From Docker 23.0 on, the docker CLI builds with BuildKit only through the buildx plugin ("docker build" is an alias
# of "docker buildx build"; without the plugin it stops with "BuildKit is enabled but the buildx component is missing
# or broken"). Earlier clients ask the engine's built-in BuildKit directly when DOCKER_BUILDKIT=1.
BUILDX_NEEDED_FROM = (23, 0)
NVIDIA_CDI_KIND = "nvidia.com/gpu"  # the device kind of NVIDIA's CDI spec (nvidia-ctk cdi generate)
CDI_GENERATE = "sudo nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml"  # NVIDIA's documented command
# Podman 4 does not report where it reads CDI specs; these are the tools' defaults (settings: docker.cdi_spec_dirs)
PODMAN_INFO = {".ServerVersion": ".Version.Version", ".DockerRootDir": ".Store.GraphRoot"}
OS_RELEASE = Path("/etc/os-release")


@dataclass(frozen=True)
class Client:
    program: str  # docker.client as configured: a name on PATH or a path
    kind: str  # docker | podman | unknown (no answer to --version)
    version: tuple[int, ...] | None
    said: str  # the first line of `--version`
    buildx: bool = False

    def describe(self) -> str:
        ver = ".".join(map(str, self.version or ())) or "?"
        return f"{self.program} ({'Podman' if self.kind == 'podman' else 'Docker'} client {ver})"


def parse_version(said: str) -> tuple[str, tuple[int, ...] | None]:
    """('docker'|'podman'|'unknown', version) from a client's `--version` line."""
    m = re.search(r"\b(docker|podman)\b version v?(\d+)\.(\d+)(?:\.(\d+))?", said, re.IGNORECASE)
    if not m:
        return "unknown", None
    return m.group(1).lower(), tuple(int(g) for g in m.groups()[1:] if g is not None)


_CLIENTS: dict = {}  # one probe per client and PATH in a task's process


def client(c, probe) -> Client:
    key = (c.docker.client, os.environ.get("PATH"))
    if key not in _CLIENTS:
        res = probe(f"{shlex.quote(c.docker.client)} --version")
        said = (res.stdout.strip().splitlines() or [""])[0] if res.ok else ""
        kind, version = parse_version(said)
        buildx = kind == "docker" and probe(f"{shlex.quote(c.docker.client)} buildx version").ok
        _CLIENTS[key] = Client(c.docker.client, kind, version, said, buildx)
    return _CLIENTS[key]


def info_template(kind: str, template: str) -> str:
    """docker info's template for this client: Podman's `info` has other field names for the same facts."""
    if kind != "podman":
        return template
    return PODMAN_INFO.get(template, template)


def docker_info(c, template: str, probe):
    """`docker info --format '{{TEMPLATE}}'`: the one way devtools asks the engine about itself. `.ServerVersion`
    answers whether an engine runs at all, `json .Runtimes` which runtimes it has (devtools/gpu.py),
    `.DockerRootDir` where its images live (doctor's disk check). probe runs the command (tasks: the quiet probe of
    devtools/images.py; doctor its own; tests fake the commands); returns its invoke Result."""
    template = info_template(client(c, probe).kind, template)  # Podman names some facts otherwise
    return probe(f"{c.docker.client} info --format {shlex.quote('{{' + template + '}}')}")


# --- BuildKit -------------------------------------------------------------------------------------------------------


def buildkit(cl: Client) -> str:
    """How this client builds: 'buildx', 'engine' (DOCKER_BUILDKIT=1, pre-23 client), 'buildah' (Podman),
    'missing' (a Docker 23+ client without buildx) or 'unknown' (the client did not say what it is)."""
    if cl.kind == "podman":
        return "buildah"
    if cl.kind != "docker":
        return "unknown"
    if cl.buildx:
        return "buildx"
    return "engine" if cl.version < BUILDX_NEEDED_FROM else "missing"


def buildx_missing(cl: Client) -> str:
    ver = ".".join(map(str, cl.version or ()))
    return (
        f"{cl.program} is Docker client {ver} without the buildx plugin, which Docker clients need for every "
        "BuildKit build from 23.0 on"
    )


def buildx_fix(cl: Client, probe) -> str:
    """The package that gives this client buildx on this system: by the package the client came from, else by the
    system (/etc/os-release), else the plugin's own page."""
    path = shutil.which(cl.program) or cl.program
    real = os.path.realpath(path)
    owner = ""
    res = probe(f"dpkg-query -S {shlex.quote(real)}")
    if res.ok and ":" in res.stdout:
        owner, manager = res.stdout.split(":", 1)[0].strip(), "apt-get"
    else:
        res = probe(f"rpm -qf --queryformat '%{{NAME}}' {shlex.quote(real)}")
        if res.ok and res.stdout.strip():
            owner, manager = res.stdout.strip(), "dnf"
    if owner == "docker.io" and probe("apt-cache show docker-buildx").ok:  # docker.io leaves buildx to this package
        return "install docker-buildx (`sudo apt-get install docker-buildx`), the buildx package beside docker.io"
    if owner in ("docker-ce-cli", "docker-ee-cli"):
        return (
            f"install docker-buildx-plugin (`sudo {manager} install docker-buildx-plugin`, Docker's repository, "
            f"where {owner} comes from)"
        )
    if platform.system() == "Darwin":
        return "install Docker Desktop (it has buildx), or `brew install docker-buildx` and link it as brew says"
    ids = _os_ids()
    for system in ("ubuntu", "debian", "fedora", "centos", "rhel"):
        if system in ids:
            why = f"{owner} has no buildx package here" if owner else f"{real} comes from no {ids[0]} package"
            return (
                f"{why}: install docker-buildx-plugin from Docker's repository for {system} "
                f"(https://docs.docker.com/engine/install/{system}/)"
            )
    return "install the buildx plugin as ~/.docker/cli-plugins/docker-buildx (https://docs.docker.com/go/buildx/)"


def _os_ids() -> list[str]:
    try:
        fields = dict(
            line.split("=", 1)
            for line in OS_RELEASE.read_text().splitlines()
            if "=" in line and not line.startswith("#")
        )
    except OSError:
        return []
    return [fields.get("ID", "").strip('"')] + fields.get("ID_LIKE", "").strip('"').split()


def build_problem(c, probe) -> str | None:
    """None when the configured client can run a BuildKit build, else one line: what is missing and the fix."""
    cl = client(c, probe)
    if buildkit(cl) != "missing":
        return None
    return f"{buildx_missing(cl)}: {buildx_fix(cl, probe)}"


# --- the engine: rootless, CDI ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Engine:
    kind: str  # docker | podman | unknown (the client's)
    rootless: bool
    cdi_dirs: tuple[str, ...]  # where the engine reads CDI specs; empty: it takes no CDI devices (or cannot say)


def engine(c, probe) -> Engine:
    cl, prog = client(c, probe), shlex.quote(c.docker.client)
    if cl.kind == "podman":
        res = probe(f"{prog} info --format '{{{{.Host.Security.Rootless}}}}'")
        dirs = tuple(d for d in str(c.docker.cdi_spec_dirs).split(":") if d)  # Podman takes CDI devices since 4.1
        return Engine("podman", res.ok and res.stdout.strip() == "true", dirs)
    res = probe(f"{prog} info --format '{{{{json .SecurityOptions}}}}'")
    rootless = res.ok and "name=rootless" in res.stdout
    # Docker 25+ (API 1.44): the engine's CDI spec directories; an empty list: CDI is off (Docker 25-27 need it
    # switched on in daemon.json). A client that does not know the field fails: no CDI as far as we can tell.
    res = probe(f"{prog} info --format '{{{{json .CDISpecDirs}}}}'")
    try:
        dirs = tuple(json.loads(res.stdout) or ()) if res.ok else ()
    except ValueError:
        dirs = ()
    return Engine(cl.kind, rootless, dirs)


def nvidia_cdi_spec(dirs) -> tuple[Path, list[str]] | None:
    """The first CDI spec for NVIDIA GPUs in these folders, and the device names it declares."""
    for folder in dirs:
        for spec in sorted(Path(folder).glob("*")) if Path(folder).is_dir() else []:
            if spec.suffix not in (".yaml", ".yml", ".json") or not spec.is_file():
                continue
            try:
                text = spec.read_text()
            except OSError:
                continue
            if re.search(r"""["']?kind["']?\s*:\s*["']?nvidia\.com/gpu\b""", text):
                return spec, re.findall(r"""["']?name["']?\s*:\s*["']?([\w.:-]+)""", text)
    return None


def run_as(eng: Engine, uid: int | None = None) -> str:
    """Whose files a container writes on bind mounts: 'image' (its user, built with the host user's UID), 'root'
    (rootless Docker: the container's root is the host user, its other UIDs are subordinate ones; and root on a
    rootful engine: the image's user is UID 1000 then, which cannot write root's folders), 'keep-id' (rootless
    Podman: --userns=keep-id maps the host user's UID onto itself, the image's user)."""
    if not eng.rootless:
        return "root" if (os.getuid() if uid is None else uid) == 0 else "image"
    return "keep-id" if eng.kind == "podman" else "root"


USER_FLAGS = {"image": [], "root": ["--user", "0:0"], "keep-id": ["--userns=keep-id"]}
