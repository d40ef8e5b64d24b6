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

# name -> the module whose parse_args(argv) and main(args) run it
BENCHMARKS = {
    "throughput": "benchmarks.throughput",  # the tiny default config: ours vs plain on the same model and data
    "scale": "benchmarks.scale",  # real model shapes on a GPU: ours vs plain at equal tokens per step, MFU, fit table
}
