"""The benchmarks: our pipeline (finetune.run.train) against a plain Hugging Face Trainer, timed the same way.

    python -m benchmarks NAME [ARGS]     # NAME: one of BENCHMARKS; `python -m benchmarks NAME --help` for its flags
    invoke bench NAME [--args "..."]     # the same through tasks.py

Layers, lowest first (a module imports only from its own layer or the ones below):
  what runs      plain_trainer.py (the baseline Trainer), synthetic.py (data and a tokenizer of a real vocabulary size),
                 scale_shapes.py (model shapes, parameters, FLOPs, MFU), scale_plan.py (data, token budgets, run
                 configs), scale_clock.py and scale_profile.py (the TrainerCallbacks both trainers get: ours through
                 finetune.run.Hooks, never a patched method), scale_runs.py (the scale cases, in their process),
                 pref_rewards.py (a grpo config's rewards as attributes for TRL's grpo script), pref_probe.py (a
                 dpo/grpo command run under clocks on the trainer classes' methods, TRL's and the Trainer's, for
                 pref_bench: the one benchmark that times a whole command it does not build, so no Hooks there)
  machine, runs  machine.py (versions, CPU/GPU, git), worker.py (one case in its own subprocess: spawn() in the
                 parent; the child reads a JSON spec, calls its module's run_case, writes a JSON result)
  report         report.py (text tables, the JSON report's stamp and file: the one place they are made),
                 throughput_report.py, scale_report.py and pref_report.py (each benchmark's report and tables, from
                 its data alone)
  benchmarks     throughput.py (its cases, CASES, and command line), scale.py (command line) and
                 scale_experiments.py (the comparison and the fit table), pref_bench.py (finetune train against TRL's
                 example scripts, each a subprocess), with cli.py's shared flags
  runner         runner.py (python -m benchmarks NAME, __main__.py)
"""

# name -> what it measures; benchmarks/<name>.py runs it (its parse_args(argv) and main(args))
BENCHMARKS = {
    "throughput": "ours vs a plain Trainer on the default config's model and data (CPU or GPU)",
    "scale": "real model shapes on a GPU: ours vs a plain Trainer at equal tokens per step, MFU, the fit table",
    "serve": "finetune serve (CPU) under 1, 4 and 16 concurrent openai clients: requests/s, tokens/s, latency",
    "pref_bench": "dpo and grpo on CPU: finetune train vs TRL's own example scripts, same model, data and settings",
}
