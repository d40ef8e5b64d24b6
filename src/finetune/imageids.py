"""The one form of an image id: `sha256:<hex>`, as Docker writes it; Podman's `image inspect` gives the bare hex of
the same digest. Standard library only: devtools (`invoke reproduce`) and the run manifest both compare ids with it.
"""

from __future__ import annotations


def image_digest(image_id: str | None) -> str | None:
    """sha256:<hex> for either form; None for no id."""
    return None if not image_id else image_id if image_id.startswith("sha256:") else f"sha256:{image_id}"
