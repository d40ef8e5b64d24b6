"""Helpers for tasks.py (docker command lines); not part of the finetune package."""
