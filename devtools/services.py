"""What a user opens beside training: a shell in the dev image, JupyterLab, TensorBoard, an MLflow server, and a
run's model behind an OpenAI-compatible API in a container (`invoke serve --docker`).

Each starts through `c.run` (so `invoke --dry` prints its plan); a service published on any address but loopback is
preceded by a warning that says who can reach it. Command lines of the dev container: devtools/containers.py.
"""

from __future__ import annotations

import os
import secrets
import shlex
from pathlib import Path

from devtools import containers, images, launch
from devtools.containers import show
from devtools.images import stop
from finetune.names import default_export_dir


def published(host: str, port: int, inside: int, exposed: str) -> list[str]:
    """--publish on host:port; on any address but loopback, first a warning that says what others can reach."""
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"WARNING: publishing on {host}:{port}: {exposed}", flush=True)
    return ["--publish", f"{host}:{port}:{inside}"]


def tunnel(port: int) -> str:
    return f"safer: keep --host 127.0.0.1 and tunnel from your machine: ssh -L {port}:127.0.0.1:{port} THIS-HOST"


def shell(c, variant: str, gpu: bool, cmd: str | None) -> None:
    """An interactive bash in the dev image, or `cmd` in it (`invoke test --docker`)."""
    images.gpu_check(c, gpu)
    image = images.ensure_image(c, "cuda" if gpu else variant, "dev").name
    run = [c.docker.client, "run", "--rm", *([] if cmd else ["-it"]), *containers.dev_container_args(c, gpu)]
    c.run(show([*run, image, *(["bash", "-c", cmd] if cmd else ["bash"])]), pty=not cmd)


def lab(c, port: int, host: str, gpu: bool, token: str | None) -> None:
    """JupyterLab in the dev image, token login always on (the token by name only, never on a command line)."""
    images.gpu_check(c, gpu)
    image = images.ensure_image(c, "cuda" if gpu else "cpu", "dev").name
    exposed = f"reachable from other machines, and whoever has the token runs code here as you; {tunnel(port)}"
    run = [c.docker.client, "run", "--rm", "--name", f"finetune-lab-{port}"]
    run += published(host, port, containers.LAB_PORT, exposed)
    # The token by name: docker copies it from its own environment, so it is on no command line (`ps`) or plan.
    run += [*containers.dev_container_args(c, gpu), "--env", "JUPYTER_TOKEN"]
    # Inside, Jupyter listens on all of the container's interfaces; what the host exposes is --publish above.
    run += [image, "jupyter", "lab", "--ip=0.0.0.0", f"--port={containers.LAB_PORT}", "--no-browser"]
    run.append(f"--ServerApp.root_dir={containers.WORKSPACE}")
    if c.docker.run_as == "root":  # the container's root (root on a rootful engine; rootless Docker: you)
        run.append("--allow-root")  # else Jupyter stops at once: "Running as root is not recommended"
    given = token or os.environ.get("JUPYTER_TOKEN")
    token = given or secrets.token_urlsafe(24)
    # A token the user chose is never echoed; a new one is shown once, and not in a plan (--dry starts nothing).
    shown = "<your token>" if given else "<a new token, shown when it runs>" if c.config.run.dry else token
    print(f"JupyterLab: http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}/lab?token={shown}", flush=True)
    c.run(show(run), env={"JUPYTER_TOKEN": token}, pty=False)


def tensorboard(c, port: int, host: str) -> None:
    """TensorBoard over runs/, mounted read-only, in the cpu dev image."""
    image = images.ensure_image(c, "cpu", "dev").name
    exposed = f"TensorBoard has no authentication: anyone who can reach {host}:{port} sees every run; {tunnel(port)}"
    run = [c.docker.client, "run", "--rm", "--name", f"finetune-tensorboard-{port}"]
    run += published(host, port, containers.TENSORBOARD_PORT, exposed)
    runs = f"{containers.WORKSPACE}/{c.finetune.runs_dir}"  # where container_args mounts runs/ for training
    run += ["--volume", f"{containers.REPO / c.finetune.runs_dir}:{runs}:ro", image]
    run += ["tensorboard", "--logdir", runs, "--bind_all", "--port", str(containers.TENSORBOARD_PORT)]
    c.run(show(run), pty=False)


def mlflow(c, port: int, host: str, root: str | None, workers: int) -> None:
    """The dev layer's MLflow server over a SQLite store and an artifacts folder (default <runs_dir>/mlflow)."""
    store = Path(root or Path(c.finetune.runs_dir) / "mlflow").resolve()
    if not c.config.run.dry:
        store.mkdir(parents=True, exist_ok=True)
    url = f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}"
    print(f"MLflow tracking server: {url}  (export MLFLOW_TRACKING_URI={url})", flush=True)
    cmd = [launch.venv_bin(c, "mlflow"), "server", "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}"]
    cmd += ["--artifacts-destination", str(store / "artifacts"), "--host", host, "--port", str(port)]
    cmd += ["--workers", str(workers)]
    c.run(shlex.join(cmd), pty=False)


def serve_in_container(c, model: str, port: int, host: str, gpu: bool, api_key: str | None, vllm: bool = False):
    """`finetune serve` in the runtime image (CUDA's with --gpu), or with vllm vLLM's OpenAI server in its own image
    (finetune:vllm-server, on the GPUs): the run or export mounted read-only, the server's port published on host:port,
    always behind an API key: the one given, else a new one printed once (as the lab's token). Inside its container
    the server listens on the container's own interface, which is what --publish reaches; who else reaches it is the
    host address's business, warned about like every service."""
    images.gpu_check(c, gpu or vllm)
    path = Path(model).resolve()
    run = (path / "manifest.json").exists()
    if not (run or (path / "config.json").exists()):
        stop(c, f"--model {model}: not a run directory (manifest.json) or an exported folder (config.json)")
    name = path.name  # vLLM's served model name: the run's (runs/<name>) or the export's folder name
    if vllm and run:  # vLLM loads a transformers folder, not a run
        path = export_for_vllm(c, path)
    variant = "vllm-server" if vllm else "cuda" if gpu else "cpu"
    target = containers.SERVERS.get(variant, "runtime")
    image = images.ensure_image(c, variant, target).name
    exposed = f"whoever reaches it with the API key uses the model; {tunnel(port)}"
    if vllm:  # vLLM's security guide: its key guards its API routes (/v1 ...), not every route of the server
        exposed = f"vLLM checks the API key on its API routes (/v1), not on every route; {tunnel(port)}"
    key_name = "VLLM_API_KEY" if vllm else "FINETUNE_API_KEY"  # where each server reads its key
    run_ = [c.docker.client, "run", "--rm", "--name", f"finetune-serve-{port}"]
    run_ += published(host, port, containers.SERVE_PORT, exposed)
    run_ += [*containers.serve_container_args(c, path, gpu or vllm, key_name), image]
    listen = [containers.MODEL_MOUNT, "--host", "0.0.0.0", "--port", str(containers.SERVE_PORT)]
    run_ += ["vllm", "serve", *listen, "--served-model-name", name] if vllm else ["finetune", "serve", *listen]
    given = api_key or os.environ.get("FINETUNE_API_KEY")
    key = given or secrets.token_urlsafe(24)
    # As the lab's token: the key travels by name (docker reads it from its own environment), a new one is shown once.
    shown = "<your key>" if given else "<a new key, shown when it runs>" if c.config.run.dry else key
    url = f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}/v1"
    print(f"OpenAI-compatible API: {url}  (Authorization: Bearer {shown})", flush=True)
    c.run(show(run_), env={key_name: key}, pty=False)


def export_for_vllm(c, run: Path) -> Path:
    """The run's transformers folder, written first by .venv's `finetune export` as `invoke export` runs it, where
    that command writes it by default (RUN-hf, beside the run); an earlier export there is replaced (--force), so the
    served folder is always the run as it is now."""
    out = default_export_dir(run, "hf")
    cmd = [launch.venv_bin(c, "finetune"), "export", str(run), "--format", "hf", "--out", str(out), "--force"]
    c.run(shlex.join(cmd), pty=False)
    return out
