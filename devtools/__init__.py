"""Helpers for tasks.py: docker command lines, image builds, GPU and host probes, deploy over SSH.

devtools uses a few pure-stdlib modules of the finetune package (finetune.names, finetune.urls) so that a name or URL
rule lives in one place. invoke may run from a Python that does not have the package installed (only invoke, e.g. a
Docker-only host, or the workflow's bare python3), so the repository's src/ is put on the import path here.
"""

import sys
from pathlib import Path

_SRC = str(Path(__file__).resolve().parents[1] / "src")
if _SRC not in sys.path:
    sys.path.append(_SRC)  # appended: an installed finetune (the same code in .venv, editable) still wins
