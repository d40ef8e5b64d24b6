"""The benchmarks: our pipeline (finetune.run.train) against a plain Hugging Face Trainer, timed the same way.

    python -m benchmarks NAME [ARGS]     # NAME: one of BENCHMARKS; `python -m benchmarks NAME --help` for its flags
    invoke bench NAME [--args "..."]     # the same through tasks.py

Layers, lowest first (a module imports only from the layers below it):
  what runs      plain_trainer.py (the baseline Trainer), synthetic.py (data and tokenizer of a real vocabulary size),
                 scale_shapes.py (model shapes, parameters, FLOPs, MFU), scale_clock.py and scale_profile.py (the
                 TrainerCallbacks both trainers get: ours through finetune.run.Hooks, never a patched method)
  machine, runs  machine.py (versions, CPU/GPU, git), worker.py (one case in its own subprocess: spawn() in the
                 parent, the child reads a JSON spec and writes a JSON result)
  report         report.py (text tables, the JSON report's stamp and file): the one place a table or report is made
  benchmarks     throughput.py, scale.py (+ scale_plan.py, scale_runs.py, scale_experiments.py, scale_report.py):
                 each declares its cases and command line
  runner         cli.py (python -m benchmarks NAME)
"""

# name -> what it measures; benchmarks/<name>.py runs it (its parse_args(argv) and main(args))
BENCHMARKS = {
    "throughput": "ours vs a plain Trainer on the default config's model and data (CPU or GPU)",
    "scale": "real model shapes on a GPU: ours vs a plain Trainer at equal tokens per step, MFU, the fit table",
}
