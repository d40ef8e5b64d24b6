"""URLs that are safe to record: without the credentials a git remote may carry (`https://user:token@host/...`).

One rule for every place a URL leaves the machine's private state: the image's source label and build argument
(devtools/containers.py) and a run's manifest.json (manifest.py). No imports beyond the standard library, so
devtools and the CLI can use it without loading torch.
"""

from __future__ import annotations

import re

# scheme://userinfo@ : userinfo is everything up to the last @ before the host (RFC 3986 percent-encodes a "/" or
# "@" inside it). scp-like remotes (git@host:path) have no scheme and name a login, never a secret: left as they are.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#\s]*@")


def strip_userinfo(text: str) -> str:
    """text with the user:password@ (or token@) of every URL in it removed; anything else unchanged."""
    return _USERINFO.sub(r"\1", text)
