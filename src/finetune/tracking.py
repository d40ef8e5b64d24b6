"""Experiment tracking (config key `tracking`: tensorboard, mlflow, wandb). Each tracker is a TrainerCallback that gets
the resolved config as parameters and the provenance tags (git commit, dirty flag, lock digest, image id: from the
run's manifest.json) when training begins, every logged metric at its step, and, from finish() after the run's own
report, the summary and the artifacts (loss.png, manifest.json, summary.json).

MLflow logs to the server MLFLOW_TRACKING_URI names (`invoke mlflow` starts one) with the slim client
(mlflow-skinny); W&B runs online with WANDB_API_KEY, or offline (WANDB_MODE=offline: no account) into <run>/wandb/.
The ids of a run's MLflow and W&B runs are kept in <run>/tracking.json, so --resume continues the same runs.
Only the main process tracks. Which trackers exist: config.RunConfig.tracking.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

from transformers import TrainerCallback

from finetune import safefiles
from finetune.errors import ServiceUnavailable
from finetune.urls import strip_userinfo

ARTIFACTS = ("loss.png", "manifest.json", "summary.json")
CONNECT_TIMEOUT_S = 5  # reaching the tracking server before the run; MLflow's own requests: MLFLOW_HTTP_* below
PACKAGES = {  # tracker -> the module it needs, and which of our images carry it
    "tensorboard": ("tensorboardX", "every image has it"),
    "mlflow": ("mlflow", "the cuda image and the dev layer have it; the cpu image has mlflow-skinny only"),
    "wandb": ("wandb", "the cuda image and the dev layer have it"),
}


def check(trackers: list[str], where) -> None:
    """Before any work: each tracker's package is installed and it knows where to log. where(message) -> error."""
    for name in trackers:
        module, images = PACKAGES[name]
        if importlib.util.find_spec(module) is None:
            raise where(
                f"{name} needs the {module} package, which is not installed here ({images}): "
                f"pip install {module}, or train without it: --set tracking=[]"
            )
    if "mlflow" in trackers and not os.environ.get("MLFLOW_TRACKING_URI"):
        raise where("mlflow logs to the server MLFLOW_TRACKING_URI names: start one with `invoke mlflow`, then set it")


def check_reachable(trackers: list[str]) -> None:
    """Before the run folder exists: the MLflow server MLFLOW_TRACKING_URI names (http or https) accepts a connection,
    or the run stops in one line, exit 69, the URL without its password (MLflow alone retried for minutes, then died
    with a traceback that printed the password)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    parts = urlsplit(uri)
    if "mlflow" not in trackers or parts.scheme not in ("http", "https"):
        return  # a file store, databricks, ...: MLflow's business
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        socket.create_connection((parts.hostname, port), timeout=CONNECT_TIMEOUT_S).close()
    except (OSError, ValueError) as e:  # ValueError: a port that is not a number
        why = getattr(e, "strerror", None) or str(e) or type(e).__name__
        raise ServiceUnavailable(
            f"tracking: the mlflow server {strip_userinfo(uri)} (MLFLOW_TRACKING_URI) does not answer "
            f"({strip_userinfo(why)}): start it (`invoke mlflow`), correct the URL, or leave mlflow out of tracking"
        ) from None


def flatten(config: dict, prefix: str = "") -> dict[str, str]:
    """{"training": {"batch_size": 16}} -> {"training.batch_size": "16"}: trackers' parameters are flat strings."""
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = json.dumps(value) if not isinstance(value, str) else value
    return out


def provenance(manifest: dict) -> dict[str, str]:
    """The tags every tracker gets. lock_digest: one sha256 over every lockfile digest the manifest lists."""
    git = manifest.get("git") or {}
    locks = json.dumps(manifest.get("locks") or {}, sort_keys=True).encode()
    return {
        "git_commit": str(git.get("commit")),
        "git_dirty": str(git.get("dirty")),
        "lock_digest": hashlib.sha256(locks).hexdigest(),
        "image_id": str((manifest.get("container") or {}).get("image_id")),
    }


def numeric(logs: dict) -> dict[str, float]:
    return {k: float(v) for k, v in logs.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class Tracker(TrainerCallback):
    """One tracking backend. start() at train begin (params, tags), metric() per log, finish() after the report."""

    def __init__(self, config: dict, run_dir: Path):
        self.config, self.run_dir, self.started = config, run_dir, False

    def manifest(self) -> dict:
        path = self.run_dir / "manifest.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def on_train_begin(self, args, state, control, **kwargs):
        if not self.started:
            self.start(flatten(self.config), provenance(self.manifest()))
            self.started = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.started and logs and (values := numeric(logs)):
            self.metric(values, state.global_step)

    def ids(self) -> dict:
        path = self.run_dir / "tracking.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def keep_id(self, key: str, value: str) -> None:
        safefiles.write_text(self.run_dir / "tracking.json", json.dumps({**self.ids(), key: value}, indent=2) + "\n")

    def start(self, params: dict, tags: dict) -> None: ...
    def metric(self, values: dict, step: int) -> None: ...
    def finish(self, summary: dict, status: str) -> None: ...


class TensorBoardTracker(Tracker):
    """transformers' TensorBoardCallback writes the metrics; this adds the config, tags, summary and loss plot."""

    def __init__(self, config: dict, run_dir: Path):
        # tensorboardX: the same event files as torch.utils.tensorboard's writer, without needing the tensorboard
        # package (its server and grpc: 47 MB the cpu image has no room for); the viewer is in the dev layer
        from tensorboardX import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        class KeepOpen(TensorBoardCallback):
            def on_train_end(self, args, state, control, **kwargs):
                # transformers closes its writer here, and the final evaluation's log, after this, then opened a
                # second one under <run>/runs/: the one writer stays open until finish() has written the summary
                self.tb_writer.flush()

        super().__init__(config, run_dir)
        self.writer = SummaryWriter(str(run_dir / "tensorboard"))
        self.metrics = KeepOpen(self.writer)

    def start(self, params, tags):
        self.writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in params.items()))
        self.writer.add_text("tags", "\n".join(f"    {k}: {v}" for k, v in tags.items()))

    def finish(self, summary, status):
        self.writer.add_text("summary", "    " + json.dumps(summary, indent=2).replace("\n", "\n    "))
        if (plot := self.run_dir / "loss.png").exists():
            from matplotlib.image import imread

            self.writer.add_image("loss.png", imread(plot)[..., :3], dataformats="HWC")
        self.writer.add_text("manifest", "    " + json.dumps(self.manifest(), indent=2).replace("\n", "\n    "))
        self.writer.close()


class MlflowTracker(Tracker):
    def __init__(self, config: dict, run_dir: Path, name: str):
        from mlflow.tracking import MlflowClient

        # MLflow's defaults (120 s a request, 7 retries with backoff) kept a run going for minutes on a server that
        # went away; a user's own settings win
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        super().__init__(config, run_dir)
        self.client, self.name, self.run_id = MlflowClient(), name, None

    def start(self, params, tags):
        from mlflow.entities import Param, RunTag

        self.run_id = self.ids().get("mlflow_run_id")
        if self.run_id is None:  # a new run (a resumed one keeps its id, params and tags)
            experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME", self.name)
            found = self.client.get_experiment_by_name(experiment)
            experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
            run = self.client.create_run(experiment_id, run_name=self.run_dir.name)
            self.run_id = run.info.run_id
            self.keep_id("mlflow_run_id", self.run_id)
            items = [Param(k, v[:6000]) for k, v in params.items()]  # MLflow's limit on a parameter's length
            for i in range(0, len(items), 100):  # log_batch takes at most 100 parameters at a time
                self.client.log_batch(self.run_id, params=items[i : i + 100])
            self.client.log_batch(self.run_id, tags=[RunTag(f"finetune.{k}", v) for k, v in tags.items()])
        else:
            self.client.update_run(self.run_id, status="RUNNING")

    def metric(self, values, step):
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in values.items()])

    def finish(self, summary, status):
        for name in ARTIFACTS:
            if (self.run_dir / name).exists():
                self.client.log_artifact(self.run_id, str(self.run_dir / name))
        # the summary's numbers as metrics at the last step (summary.json, an artifact, has all of it)
        self.metric({f"summary.{k}": v for k, v in numeric(summary).items()}, int(summary.get("steps") or 0))
        self.client.set_terminated(self.run_id, "FINISHED" if status == "completed" else "KILLED")


class WandbTracker(Tracker):
    def __init__(self, config: dict, run_dir: Path, name: str):
        super().__init__(config, run_dir)
        self.name, self.run = name, None

    def start(self, params, tags):
        import wandb

        run_id = self.ids().get("wandb_run_id")
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "finetune"),
            name=self.run_dir.name,
            id=run_id,
            resume="allow" if run_id else None,
            dir=str(self.run_dir),
            config={**params, **{f"finetune.{k}": v for k, v in tags.items()}},
            tags=[f"{k}={v}"[:64] for k, v in tags.items()],  # W&B's tag length limit; full values are in config
        )
        self.keep_id("wandb_run_id", self.run.id)

    def metric(self, values, step):
        self.run.log(values, step=step)

    def finish(self, summary, status):
        for name in ARTIFACTS:
            if (self.run_dir / name).exists():
                self.run.save(str(self.run_dir / name), base_path=str(self.run_dir), policy="now")
        self.run.summary.update({k: v for k, v in summary.items() if v is not None})
        self.run.finish(exit_code=0 if status == "completed" else 1)


def make_trackers(cfg, run_dir: Path, main: bool) -> list[Tracker]:
    """The trackers the config asks for, on the main process (the others log nothing)."""
    if not main:
        return []
    config, out = cfg.to_dict(), []
    for name in cfg.tracking:
        if name == "tensorboard":
            out.append(TensorBoardTracker(config, run_dir))
        elif name == "mlflow":
            out.append(MlflowTracker(config, run_dir, cfg.name))
        elif name == "wandb":
            out.append(WandbTracker(config, run_dir, cfg.name))
    return out


def callbacks(trackers: list[Tracker]) -> list[TrainerCallback]:
    """What the Trainer gets: each tracker, and TensorBoard's metric writer."""
    out: list[TrainerCallback] = []
    for t in trackers:
        out += [t, t.metrics] if isinstance(t, TensorBoardTracker) else [t]
    return out


def finish(trackers: list[Tracker], summary: dict) -> None:
    for t in trackers:
        if t.started:
            t.finish(summary, summary.get("status", "completed"))
