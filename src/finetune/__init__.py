"""finetune: reproducible fine-tuning of language models on top of transformers, PEFT and accelerate."""

import logging as _logging
from importlib import metadata as _metadata
from pathlib import Path as _Path

# bitsandbytes (which peft imports when it is installed) warns at import that an optional CPU kernel from the Hugging
# Face hub is missing; runs here are offline and its built-in CPU path is used. The filter drops that one message.
_logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(lambda record: "kernels-community" not in record.msg)


def __getattr__(name: str):
    """`finetune.__version__`: pyproject.toml's version, the one place it is written (PEP 562, read when asked)."""
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:  # installed (make venv, pip): the version the install recorded
        return _metadata.version("finetune")
    except _metadata.PackageNotFoundError:  # a source tree on PYTHONPATH (the images): the pyproject.toml above it
        import tomllib

        pyproject = _Path(__file__).resolve().parents[2] / "pyproject.toml"
        return tomllib.loads(pyproject.read_text())["project"]["version"] if pyproject.exists() else None
