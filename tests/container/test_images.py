"""The CPU runtime and dev images built from the shipped docker/Dockerfile, on a real engine (see conftest.py for
the harness and its stand-ins): non-root user, `invoke train --docker` with host-owned outputs, the manifest's
image facts, `invoke serve --docker` on that run, the shipped DPO config and the sources read through `datasets`
(issue 26), code-only rebuilds, and images without caches or compilers they do not need."""

from __future__ import annotations

import json
import re
import subprocess
import time
import tomllib
from pathlib import Path

import pytest
import yaml

from conftest import read_bytecode_check, run_imports_bytecode_check

from .conftest import FIGURES, REPO, free_port
from .helpers_builds import within_budget
from .helpers_engine import http_status
from .helpers_workspace import printed_run_dir

INVOKE_YAML = yaml.safe_load((REPO / "invoke.yaml").read_text())

pytestmark = [pytest.mark.container, pytest.mark.slow]


def test_runtime_image_runs_as_the_non_root_build_user(workspace, runtime_image):
    info = workspace.engine.inspect(runtime_image["image"])
    assert info["Config"]["User"] == f"{workspace.uid}:{workspace.gid}"
    ids = workspace.engine("run", "--rm", runtime_image["image"], "id", "-u").stdout.split()
    assert ids == [str(workspace.uid)] and workspace.uid != 0
    assert info["Config"]["Entrypoint"] == ["/usr/bin/tini", "--"]  # signals reach the trainer; zombies reaped
    assert "/home/finetune/.cache/huggingface" in (info["Config"]["Volumes"] or {})


def test_labels_name_revision_variant_lock_digest_and_apt_snapshot(workspace, runtime_image):
    labels = workspace.engine.inspect(runtime_image["image"])["Config"]["Labels"]
    head = subprocess.run(
        ["git", "-c", f"safe.directory={workspace.root}", "rev-parse", "HEAD"],
        cwd=workspace.root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert labels["org.opencontainers.image.revision"] == head
    assert labels["org.finetune.variant"] == "cpu" and labels["org.finetune.target"] == "runtime"
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", labels["org.finetune.lock-digest"])
    assert labels["org.finetune.apt-snapshot"] == INVOKE_YAML["image"]["apt_snapshot"]["date"]  # issue 29


@pytest.fixture(scope="module")
def docker_default_run(workspace, runtime_image) -> tuple[subprocess.CompletedProcess, Path]:
    """`invoke train --docker`: the embedded default run in the CPU runtime image (its output, its run folder)."""
    t0 = time.monotonic()
    proc = workspace.invoke("train", "--docker")
    FIGURES["default run in the cpu container, wall s"] = round(time.monotonic() - t0, 1)
    return proc, printed_run_dir(proc.stdout, workspace.root)


def test_invoke_train_docker_runs_the_default_fine_tune_with_host_owned_outputs(
    workspace, runtime_image, docker_default_run
):
    proc, run = docker_default_run
    assert "runtime: docker (--docker/--gpu)" in proc.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["eval_accuracy"] >= 0.9, summary
    # Everything the container wrote on the bind mount belongs to the host user, not root or another uid.
    owners = {(p.stat().st_uid, p.stat().st_gid) for p in [run, *run.rglob("*")]}
    assert owners == {(workspace.uid, workspace.gid)}, owners
    manifest = json.loads((run / "manifest.json").read_text())
    info = workspace.engine.inspect(runtime_image["image"])
    version = tomllib.loads((workspace.root / "pyproject.toml").read_text())["project"]["version"]
    assert manifest["runtime"] == "docker" and manifest["versions"]["finetune"] == version
    assert manifest["versions"]["torch"] == "2.13.0+cpu"
    assert manifest["container"]["image"] == "finetune:cpu"
    assert manifest["container"]["image_id"] == info["Id"]
    assert manifest["container"]["labels"] == info["Config"]["Labels"]


def test_invoke_serve_docker_answers_the_openai_client_on_the_host_with_the_key_it_printed(
    workspace, docker_default_run
):
    """`invoke serve --docker` on the run above: the key printed once, 401 without it, the right reversal with it."""
    from openai import OpenAI

    _, run = docker_default_run
    port = free_port()
    server = workspace.as_user(workspace.invoke_cmd("serve", "--docker", "--model", run, "--port", port), popen=True)
    try:
        t0, said = time.monotonic(), ""
        while not (key := re.search(r"Authorization: Bearer (\S+)\)", said)):
            line = server.stdout.readline()
            assert line, f"invoke serve exited {server.wait()}: {said[-3000:]}"
            said += line
        models = f"http://127.0.0.1:{port}/v1/models"
        while http_status(models) != 401:  # it answers, and refuses a request without the key
            assert server.poll() is None, f"invoke serve exited {server.returncode}: {server.stdout.read()[-3000:]}"
            assert time.monotonic() - t0 < 180, f"nothing answered on 127.0.0.1:{port} in 180 s"
            time.sleep(1)
        FIGURES["serve in the cpu container: answered after s"] = round(time.monotonic() - t0, 1)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key.group(1), max_retries=0)
        user = [{"role": "user", "content": "reverse: hello"}]
        chat = client.chat.completions.create(model="default", messages=user)
        assert chat.choices[0].message.content == "olleh", chat
    finally:
        workspace.engine("stop", f"finetune-serve-{port}", check=False)
        server.wait(timeout=60)


def test_code_only_change_rebuilds_without_reinstalling_the_environment(workspace, runtime_image):
    cli = workspace.root / "src" / "finetune" / "cli.py"
    cli.write_text(cli.read_text() + "\n# a code-only change made by the container tests\n")
    rebuilt = workspace.build("runtime")
    FIGURES["cpu runtime: code-only rebuild s"] = round(rebuilt["seconds"], 1)
    # BuildKit's plain progress: "#12 [env 5/5] RUN ...", later "#12 CACHED" (FROM steps are resolved, never cached)
    names = {n: name for n, name, op in re.findall(r"^#(\d+) \[([^\]]+)\] (\S+)", rebuilt["log"], re.M) if op != "FROM"}
    cached = set(re.findall(r"^#(\d+) CACHED$", rebuilt["log"], re.M))
    env_steps = [n for n in names if names[n].startswith(("env ", "runtime-base "))]
    assert env_steps, rebuilt["log"][-3000:]
    reinstalled = [names[n] for n in env_steps if n not in cached]
    assert not reinstalled, f"a code-only change re-ran environment steps: {reinstalled}"
    assert "COPY src/" in rebuilt["log"]
    out = workspace.engine("run", "--rm", rebuilt["image"], "tail", "-1", "/opt/finetune/src/finetune/cli.py").stdout
    assert "made by the container tests" in out
    assert rebuilt["seconds"] < runtime_image["seconds"]


def test_runtime_image_holds_no_caches_compilers_or_build_leftovers(workspace, runtime_image):
    script = r"""
set -u
for tool in gcc cc g++ c++ clang make git conda; do command -v "$tool" && echo "FOUND tool $tool"; done
for d in /root/.cache/pip "$HOME/.cache/pip" /opt/conda /opt/env/pkgs /tmp/env /wheelhouse /opt/cxx-headers \
         /opt/env/lib/python3.11/site-packages/torch/include /opt/env/lib/python3.11/site-packages/torch/test; do
  [ -e "$d" ] && echo "FOUND path $d"
done
find / -xdev \( -name '*.whl' -o -name '*.tar.bz2' -o -name '*.conda' \) -print 2>/dev/null | sed 's/^/FOUND file /'
find /opt/env -type d -name tests -print | sed 's/^/FOUND test suite /'
find /opt/env \( -name 'libarrow_flight.so*' -o -name '_flight.cpython-*.so' -o -path '*/pyarrow/include' \) -print \
  | sed 's/^/FOUND pyarrow leftover /'
true
"""
    out = workspace.engine("run", "--rm", "--user", "0", runtime_image["image"], "bash", "-c", script).stdout
    assert "FOUND" not in out, out


def test_an_uncached_hub_id_offline_stops_at_once_naming_the_cache_in_the_cpu_runtime_image(workspace, runtime_image):
    """The cpu image has `datasets` (issue 26: trl needs it), so a hub id is read there as in `.venv`: one that is not
    in the cache, offline, stops in one line (exit 2) naming the image's cache and how to fetch it once."""
    offline = ["run", "--rm", "--env", "HF_HUB_OFFLINE=1", runtime_image["image"]]
    run = [*offline, "finetune", "train", "configs/default.yaml"]
    proc = workspace.engine(*run, "--set", "data.train_file=someone/some-dataset", check=False)
    line = proc.stderr.strip()
    assert proc.returncode == 2 and len(line.splitlines()) == 1, proc.stderr
    assert line.startswith("finetune: error: someone/some-dataset: not a local file or folder, and hub dataset "), line
    assert "not in the local cache /home/finetune/.cache/huggingface/datasets (offline: HF_HUB_OFFLINE=1)" in line, line
    assert "datasets.load_dataset('someone/some-dataset', split='train')" in line, line


def test_invoke_train_docker_runs_the_shipped_dpo_config_from_a_short_sft_run(workspace, runtime_image):
    """Issue 26: the cpu image carries trl (with datasets, pyarrow, pandas) and runs configs/dpo.yaml, through
    `invoke train --docker` as a user runs it. The run it starts from (model.from_run) is made first by a one-step SFT
    run; DPO trains one step and scores 10 held-out pairs: what is checked is the image (the run completes, its
    summary and model are written, on the host), not what DPO learns (tests/test_preference.py)."""
    short = ["--set", "training.max_steps=1", "--set", "eval.max_samples=10"]
    t0 = time.monotonic()
    workspace.invoke("train", "--docker", "--output-dir", "runs/dpo-start", *short)
    dpo = ["--config", "configs/dpo.yaml", "--set", "model.from_run=runs/dpo-start"]
    proc = workspace.invoke("train", "--docker", *dpo, "--output-dir", "runs/dpo-in-image", *short)
    FIGURES["invoke train --docker: sft 1 step + dpo 1 step, wall s"] = round(time.monotonic() - t0, 1)
    run = printed_run_dir(proc.stdout, workspace.root)
    assert run == workspace.root / "runs" / "dpo-in-image", proc.stdout[-2000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 1, summary
    assert summary["metric"] == "preference_accuracy" and 0 <= summary["eval_accuracy"] <= 1, summary
    assert {"config.json", "model.safetensors"} <= {p.name for p in (run / "model").iterdir()}
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["runtime"] == "docker" and manifest["config"]["task"] == "dpo", manifest["config"]
    assert manifest["config"]["model"]["from_run"] == "runs/dpo-start"


# made in the container: the held-out reversal rows as a parquet file and a save_to_disk folder, then each source
# read by the reader a run uses; one line of records per source
READ_THROUGH_DATASETS = """
import json, datasets, pyarrow as pa, pyarrow.parquet as pq
from finetune.datafiles import read_records
rows = [json.loads(line) for line in open("data/reversal/eval.jsonl")]
pq.write_table(pa.Table.from_pylist(rows), "/tmp/eval.parquet")
datasets.disable_progress_bars()
datasets.Dataset.from_list(rows).save_to_disk("/tmp/eval-arrow")
for source in ("data/reversal/eval.jsonl", "/tmp/eval.parquet", "/tmp/eval-arrow"):
    print(json.dumps([r.messages for r in read_records(source, "causal_lm")]))
"""


def test_parquet_and_arrow_folders_are_read_in_the_cpu_runtime_image(workspace, runtime_image):
    """datasets and pyarrow are in the cpu image (issue 26) without Arrow Flight, which its build removes
    (docker/Dockerfile): a parquet file and a save_to_disk folder give the records of the JSONL they were made from."""
    out = workspace.engine("run", "--rm", runtime_image["image"], "python", "-c", READ_THROUGH_DATASETS).stdout
    jsonl, parquet, arrow = (json.loads(line) for line in out.splitlines())
    assert len(jsonl) == 200 and parquet == jsonl and arrow == jsonl, out[:2000]


def test_matplotlib_finds_its_cache_folder_writable_in_the_cpu_runtime_image(workspace, runtime_image):
    """Every run draws loss.png: matplotlib warned on each ("~/.cache/matplotlib is not a writable directory") while
    ~/.cache was root's (made as the HF cache volume's parent); it is the image user's now."""
    code = "import matplotlib.pyplot; import matplotlib; print(matplotlib.get_cachedir())"
    proc = workspace.engine("run", "--rm", runtime_image["image"], "python", "-c", code)
    assert "not a writable directory" not in proc.stderr, proc.stderr
    assert proc.stdout.strip() == "/home/finetune/.cache/matplotlib", (proc.stdout, proc.stderr)


def test_a_runs_imports_have_bytecode(workspace, runtime_image):
    """The image ships .pyc only for what a run imports (size); check a run's imports are among them (start time)."""
    code = run_imports_bytecode_check("/opt/env/")
    out = workspace.engine("run", "--rm", runtime_image["image"], "python", "-c", code).stdout
    total, missing, lines = read_bytecode_check(out)
    FIGURES["modules a run imports / without bytecode"] = f"{total} / {missing}"
    assert total > 500 and missing <= total * 0.02, lines


def test_dev_image_has_the_tools_and_runs_the_unit_tests_through_invoke(workspace, dev_image):
    out = workspace.engine(
        "run",
        "--rm",
        dev_image["image"],
        "bash",
        "-c",
        "id -u; git --version; jupyter lab --version; ruff --version; invoke --version",
    ).stdout
    assert out.splitlines()[0] == str(workspace.uid)
    assert "git version" in out and "ruff" in out and "Invoke" in out
    where = workspace.invoke("shell", "--cmd", "python -c 'import finetune; print(finetune.__file__)'").stdout
    assert "/workspace/src/finetune/__init__.py" in where  # the checkout's code, not the image's copy
    proc = workspace.invoke("test", "--docker", "--fast", "--args", "tests/test_units.py -q")
    assert re.search(r"\d+ passed", proc.stdout), proc.stdout[-2000:]
    assert "failed" not in proc.stdout


def test_a_base_that_already_has_the_build_uid_gets_our_user_instead(workspace, runtime_image):
    """nvidia/cuda's ubuntu:24.04 base ships user `ubuntu` as UID 1000, the UID most hosts build with: the image must
    replace that user (and reuse its group), not fail. Checked here on a base made to look like that."""
    base = (
        workspace.settings.get("image", {}).get("base_images", {}).get("cpu")
        or INVOKE_YAML["image"]["base_images"]["cpu"]
    )
    lookalike = "local/base-with-a-uid-user:test"
    uid, gid = workspace.uid, workspace.gid
    dockerfile = f"FROM {base}\nRUN groupadd -g {gid} ubuntu && useradd -m -u {uid} -g {gid} ubuntu\n"
    workspace.engine("build", "--quiet", "--tag", lookalike, "-", input=dockerfile)
    config = workspace.with_settings("lookalike", {"base_images": {"cpu": lookalike}})
    workspace.invoke("build", "--tag", "lookalike-test", config=config)
    out = workspace.engine(
        "run", "--rm", "finetune:lookalike-test", "bash", "-c", "id -un; id -u; id -g"
    ).stdout.split()
    assert out == ["finetune", str(uid), str(gid)]


# --- size budgets (invoke.yaml image.size_budget_mb: the measured size plus at most 5%) -----------------------------


def test_cpu_runtime_image_is_within_its_size_budget(runtime_image):
    within_budget(runtime_image, "cpu")


def test_cpu_dev_image_is_within_its_size_budget(dev_image):
    within_budget(dev_image, "cpu-dev")


# The CPU runtime image's aim, a decision rather than a measurement: issue 15 set it at 1.0 GB; issue 26 (the image
# runs task dpo/kto/grpo, so it carries trl with datasets, pyarrow and pandas) let it rise to the size measured with
# them plus 5%: 1143 MB on 2026-12-05, so 1200 MB.
CPU_RUNTIME_AIM_MB = 1200


def test_cpu_runtime_image_meets_its_size_aim(runtime_image):
    """Also when invoke.yaml's budget is raised: the aim moves only by an issue's decision (1000 MB by issue 15, 1200
    MB by issue 26), never by editing a budget to a new measurement."""
    assert round(runtime_image["size"] / 1e6) <= CPU_RUNTIME_AIM_MB
