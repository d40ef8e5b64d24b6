"""Helpers for tasks.py: docker command lines, image builds, GPU and host probes, deploy over SSH.

Layers, lowest first (a module imports only from its own layer or the ones below; tests/test_import_layers.py
checks that there is no cycle):
  pure data and argv   nodes.py (finetune or torchrun; Nodes: several machines or containers as one job),
                       containers.py (docker build and run command lines, Build), remote.py (ssh command lines,
                       the tar extractor deploy.fetch runs), checks.py (a Check and the doctor's table)
  questions to a host  engines.py (client, engine, rootless, CDI), gpu.py (driver, toolkit), gpu_loss.py, each
                       through a `probe(cmd)` it is given; doctor.py (the doctor's checks)
  actions (c.run)      images.py (probes, build, ensure_image), reproduce.py (invoke reproduce: rebuild a run's
                       image, compare its digest, re-run in it), launch.py (invoke train: .venv or a container),
                       services.py (shell, JupyterLab, TensorBoard, MLflow), deploy.py (a remote Docker host over SSH)
  user-facing          tasks.py (each task: parse its flags, call one of the above, report) and deploy.py's
                       `invoke deploy.*` tasks; checks.table is what `invoke doctor` prints

devtools uses a few pure-stdlib modules of the finetune package (finetune.names, finetune.urls, finetune.errors,
finetune.imageids) so that a name, path or URL rule lives in one place (tests/test_import_layers.py checks they
import nothing else). The package comes from the environment invoke runs in: .venv has it installed (editable, with
devtools: pyproject.toml); a Python with only invoke gets the checkout's src/ on its path (PYTHONPATH=src, as the
images workflow sets it).
"""
