"""`finetune serve RUN_OR_EXPORT`: the run's (or an exported folder's) model behind an OpenAI-compatible HTTP API
(finetune.openai_api), served by uvicorn.

Why not `transformers serve`: it loads models by hub id per request (a run directory holds a LoRA adapter and our
own tokenizer, which it does not load), and it needs its own extra packages; this app is FastAPI and uvicorn, which
the runtime images already carry (mlflow-skinny brings them), and about 200 lines.

Listening beyond this machine needs an API key: `--host 0.0.0.0` without one refuses to start.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

from finetune.errors import UserError


def is_loopback(host: str) -> bool:
    """127.0.0.1, ::1 or a name that resolves only to loopback addresses."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def load(path: Path):
    """(model, tokenizer, name) of a run directory (LoRA merged) or an exported folder."""
    from finetune.runmodel import load_export, load_model, load_run, require_generative

    if (path / "manifest.json").exists():
        _, cfg = load_run(path)
        require_generative(path, cfg.task, "serve")
        model, tokenizer = load_model(path, cfg.task, merged=True)
        return model, tokenizer, cfg.name
    model, tokenizer = load_export(path)
    return model, tokenizer, path.resolve().name


def serve(path: Path, host: str, port: int, api_key: str | None) -> int:
    if not is_loopback(host) and not api_key:
        raise UserError(
            f"--host {host} listens beyond this machine: give an API key (--api-key or FINETUNE_API_KEY), or keep "
            "the default 127.0.0.1"
        )
    if not 0 < port < 65536:
        raise UserError(f"--port {port}: allowed 1 to 65535")
    import uvicorn
    from transformers.utils import logging as transformers_logging

    from finetune.openai_api import Engine, create_app

    transformers_logging.disable_progress_bar()

    model, tokenizer, name = load(path)
    app = create_app(Engine(model, tokenizer, name), api_key or None)
    where = f"http://{host}:{port}/v1"
    print(f"[finetune] serving {name} at {where} ({'API key required' if api_key else 'no API key'})", flush=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    except SystemExit as e:  # uvicorn exits 1 after logging, e.g. a port in use
        raise UserError(f"{where}: the server could not start (port in use, or no such address?)") from e
    return 0
