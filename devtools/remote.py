"""SSH to a deploy host, in one place (issues 12 and 13): `invoke deploy*` and `invoke doctor --host` build their ssh
command lines here, so the host, the options and the remote script are quoted the same way everywhere.

  ssh -o BatchMode=yes [-o ConnectTimeout=N] <deploy.ssh_options, word by word> -- HOST 'SCRIPT'

The host comes after `--`, so it is never read as an ssh option, and check_host refuses one beginning with `-` before
any command is built. The remote script is one quoted argument: the remote shell sees it exactly as written here.

Run as a script (`python devtools/remote.py extract DEST`), it unpacks a tar stream from stdin into DEST for
`invoke deploy.fetch`, refusing links and anything that would land outside DEST: a run folder from another machine
must not plant a link that a later read or write follows out of runs/. Standard library only, for that reason.
"""

from __future__ import annotations

import copy
import os
import re
import shlex
import sys
import tarfile
from pathlib import Path

HOST_ALLOWED = "USER@HOST or a name from your ssh config: not beginning with '-', no spaces or control characters"


def check_host(host: str) -> str:
    """`host` if ssh can only read it as a destination, else ValueError("--host: got ...; allowed: ...")."""
    if not host or host.startswith("-") or re.search(r"[\s\x00-\x1f\x7f]", host):
        raise ValueError(f"--host: got {host!r}; allowed: {HOST_ALLOWED}")
    return host


def ssh_argv(c, host: str, connect_timeout: int | None = None) -> list[str]:
    """ssh's argv up to and including the host; deploy.ssh_options split like a shell would, then kept word by word."""
    try:
        options = shlex.split(c.deploy.ssh_options)
    except ValueError as err:
        raise ValueError(f"deploy.ssh_options {c.deploy.ssh_options!r}: not shell words ({err})") from None
    timeout = ["-o", f"ConnectTimeout={connect_timeout}"] if connect_timeout else []
    return ["ssh", "-o", "BatchMode=yes", *timeout, *options, "--", check_host(host)]


def ssh(c, host: str, script: str, connect_timeout: int | None = None) -> str:
    """The local command line that runs `script` on `host` (every word quoted for the local shell)."""
    return shlex.join([*ssh_argv(c, host, connect_timeout), script])


def remote_dir(c) -> str:
    """deploy.remote_dir as remote shell text: an absolute path quoted; `~`, `~/x` and relative ones under "$HOME"."""
    d = c.deploy.remote_dir
    if d.startswith("/"):
        return shlex.quote(d)
    if d == "~" or d.startswith("~/"):
        d = d[2:]
    elif d.startswith("~"):  # ~user: the remote shell would expand it, but not once quoted; say so instead
        raise ValueError(f"deploy.remote_dir {d!r}: allowed: an absolute path, ~/PATH, or a path under the home")
    return f'"$HOME"/{shlex.quote(d)}' if d.strip("/") else '"$HOME"'


class RefusedMember(tarfile.TarError):
    """A member of the host's tar stream that a fetch must not unpack."""


def _refuse(member: tarfile.TarInfo) -> None:
    """What no Python may unpack from the host: links, special files, absolute paths, `..`."""
    if member.issym() or member.islnk():
        raise RefusedMember(f"{member.name} is a link (to {member.linkname}): links from the host are refused")
    if not (member.isfile() or member.isdir()):
        raise RefusedMember(f"{member.name}: only files and folders are unpacked")
    if member.name.startswith("/") or ".." in Path(member.name).parts:
        raise RefusedMember(f"{member.name}: a path outside the destination")


def _refuse_links(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    """The refusals above, then tarfile's own 'data' filter (modes, owners, and its own path checks)."""
    _refuse(member)
    return tarfile.data_filter(member, dest)


def _checked_without_filters(member: tarfile.TarInfo) -> tarfile.TarInfo:
    """The same rules for Pythons without extraction filters (before 3.11.4, e.g. Debian 12's 3.11.2): regular files
    and folders only, relative paths without `..`, no special mode bits, owned by whoever unpacks."""
    _refuse(member)
    member = copy.copy(member)
    member.uid, member.gid, member.uname, member.gname = os.getuid(), os.getgid(), "", ""
    member.mode &= 0o755
    return member


def extract(dest: Path, stream) -> None:
    """Unpack the tar `stream` into `dest`, member by member (a pipe cannot seek), refusing links (see above)."""
    filters = hasattr(tarfile, "data_filter")
    with tarfile.open(fileobj=stream, mode="r|*") as tar:
        for member in tar:
            if filters:
                tar.extract(member, dest, filter=_refuse_links)
            else:
                tar.extract(_checked_without_filters(member), dest)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "extract":
        sys.exit("usage: python devtools/remote.py extract DEST  (a tar stream on stdin)")
    try:
        extract(Path(sys.argv[2]), sys.stdin.buffer)
    except (tarfile.TarError, OSError) as err:
        sys.exit(f"deploy.fetch: {err}")
