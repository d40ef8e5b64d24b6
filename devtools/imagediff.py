"""Compare two saved images layer by layer (`invoke verify-image`): our own small diffoci, stdlib only.

Input: two `podman save --format docker-archive` (or `docker save`) archives. The image digest printed is the
image id, the sha256 of the image's config, which names every layer's diff id (the sha256 of its uncompressed tar),
the history and the created time: two images with equal ids are equal bit for bit. When they differ, it names the
config fields that differ and the first layer that differs, with its files: name, type, mode, owner, mtime, size,
content, link target, and the files only one of the two holds.

    python -m devtools.imagediff A.tar B.tar     # exit 0: equal, 1: different, 2: not an image archive
    python -m devtools.imagediff --normalize IN.tar OUT.tar

--normalize: Podman 4.3 (Buildah 1.28) writes into a Docker-format config the id and hostname of the container each
build ran in, the id of its parent (intermediate) image and, in the history, the ids of the intermediate images each
stage started FROM: random per build, whatever `--timestamp` fixes. The OCI format has none of them, but Buildah then
ignores the Dockerfile's SHELL for its RUNs (bash arrays fail under /bin/sh). So a reproducible build rewrites its
saved image's config without them (`invoke build --reproducible`, `invoke verify-image`), layers untouched.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import sys
import tarfile
from dataclasses import dataclass

MAX_FILES = 20  # files listed for the first differing layer


@dataclass(frozen=True)
class Saved:
    """One saved image: its id (sha256 of the config), config, and layer tar paths inside the archive, in order."""

    path: str
    id: str
    config: dict
    layers: list[str]


def read_saved(path: str) -> Saved:
    with tarfile.open(path) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))[0]
        raw = outer.extractfile(manifest["Config"]).read()
    return Saved(path, "sha256:" + hashlib.sha256(raw).hexdigest(), json.loads(raw), manifest["Layers"])


def members(archive: str, layer: str) -> dict[str, tuple]:
    """name -> (type, mode, uid, gid, mtime, size, content sha256 or link target) of one layer tar's members."""
    out = {}
    with tarfile.open(archive) as outer, tarfile.open(fileobj=outer.extractfile(layer)) as tar:
        for m in tar:
            what = hashlib.file_digest(tar.extractfile(m), "sha256").hexdigest()[:16] if m.isfile() else m.linkname
            out[m.name.removeprefix("./")] = (m.type.decode(), oct(m.mode), m.uid, m.gid, m.mtime, m.size, what)
    return out


FIELDS = ("type", "mode", "uid", "gid", "mtime", "size", "content/link")


def file_differences(a: dict[str, tuple], b: dict[str, tuple]) -> list[str]:
    """One line per file that differs: what differs, with both values; then the files only one layer holds."""
    lines = []
    for name in sorted(a.keys() & b.keys()):
        if a[name] != b[name]:
            diff = [f"{f} {x} != {y}" for f, x, y in zip(FIELDS, a[name], b[name], strict=True) if x != y]
            lines.append(f"  {name}: {', '.join(diff)}")
    lines += [f"  {name}: only in the first" for name in sorted(a.keys() - b.keys())]
    lines += [f"  {name}: only in the second" for name in sorted(b.keys() - a.keys())]
    order_a, order_b = [n for n in a if n in b], [n for n in b if n in a]
    if not lines and order_a != order_b:
        lines.append("  (same files, in another order in the layer tar)")
    return lines


def config_differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    """The config's keys whose values differ (dotted paths; the layers' diff ids are reported per layer instead)."""
    out = []
    for key in sorted(a.keys() | b.keys()):
        if key == "rootfs":
            continue
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            out += config_differences(x, y, f"{prefix}{key}.")
        elif x != y:
            out.append(f"{prefix}{key}")
    return out


def compare(path_a: str, path_b: str) -> tuple[bool, list[str]]:
    """(equal, report lines)."""
    a, b = read_saved(path_a), read_saved(path_b)
    lines = [f"image 1: {a.id}  ({a.path})", f"image 2: {b.id}  ({b.path})"]
    if a.id == b.id:
        return True, [*lines, "equal: the two builds are the same image, bit for bit"]
    fields = config_differences(a.config, b.config)
    if fields:
        lines.append(f"config differs: {', '.join(fields)}")
    ids_a, ids_b = a.config["rootfs"]["diff_ids"], b.config["rootfs"]["diff_ids"]
    history = [h for h in a.config.get("history", []) if not h.get("empty_layer")]
    for i, (x, y) in enumerate(zip(ids_a, ids_b, strict=False)):
        if x != y:
            step = history[i].get("created_by", "?")[:160] if i < len(history) else "?"
            lines.append(f"first layer that differs: {i + 1} of {len(ids_a)} ({x[:19]} != {y[:19]}), made by: {step}")
            diffs = file_differences(members(a.path, a.layers[i]), members(b.path, b.layers[i]))
            more = f"  ... and {len(diffs) - MAX_FILES} more" if len(diffs) > MAX_FILES else None
            lines += [f"files that differ ({len(diffs)}):", *diffs[:MAX_FILES], *([more] if more else [])]
            break
    else:
        if len(ids_a) != len(ids_b):
            lines.append(f"layer count differs: {len(ids_a)} != {len(ids_b)}")
    return False, lines


BUILD_ONLY = ("container", "parent")  # the build's container and the intermediate image it committed on
FROM_ID = re.compile(r"FROM [0-9a-f]{12,64}")  # history comment of a stage that started from an intermediate image


def normalized_config(config: dict) -> dict:
    """The config without what names one build's containers and intermediate images (module docstring)."""
    out = {k: v for k, v in config.items() if k not in BUILD_ONLY}
    for key in ("config", "container_config"):
        if isinstance(out.get(key), dict) and "Hostname" in out[key]:
            out[key] = {**out[key], "Hostname": ""}
    history = config.get("history", [])
    out["history"] = [{k: v for k, v in h.items() if not (k == "comment" and FROM_ID.fullmatch(v))} for h in history]
    return out


def normalize(src: str, dst: str) -> str:
    """dst: the archive src with its config normalized (a config file named by its new digest); returns the id."""
    with tarfile.open(src) as outer, tarfile.open(dst, "w") as out:
        manifest = json.load(outer.extractfile("manifest.json"))
        old = manifest[0]["Config"]
        raw = json.dumps(normalized_config(json.loads(outer.extractfile(old).read())), separators=(",", ":")).encode()
        digest = hashlib.sha256(raw).hexdigest()
        for m in outer:
            if m.name not in ("manifest.json", old):
                out.addfile(m, outer.extractfile(m) if m.isfile() else None)
        manifest[0]["Config"] = f"{digest}.json"
        for name, data in ((f"{digest}.json", raw), ("manifest.json", json.dumps(manifest).encode())):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            out.addfile(info, io.BytesIO(data))
    return f"sha256:{digest}"


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "--normalize":
        print(f"normalized: {normalize(argv[1], argv[2])}  ({argv[2]})", flush=True)
        return 0
    if len(argv) != 2:
        print("usage: python -m devtools.imagediff [--normalize] IMAGE1.tar IMAGE2.tar", file=sys.stderr)
        return 2
    try:
        equal, lines = compare(*argv)
    except (OSError, KeyError, ValueError, tarfile.TarError) as err:
        print(f"imagediff: not a saved image archive: {err}", file=sys.stderr)
        return 2
    print("\n".join(lines), flush=True)
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
