"""Helpers for tasks.py: docker command lines, image builds, GPU and host probes, deploy over SSH.

devtools uses a few pure-stdlib modules of the finetune package (finetune.names, finetune.urls, finetune.errors) so
that a name or URL rule lives in one place. The package comes from the environment invoke runs in: .venv has it
installed (editable, with devtools: pyproject.toml); a Python with only invoke gets the checkout's src/ on its path
(PYTHONPATH=src, as the images workflow sets it).
"""
