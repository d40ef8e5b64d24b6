#!/usr/bin/env bash
# GPU checks for a lent GPU machine, all in one call of under 10 minutes: the default run on CUDA (attention auto ->
# flex for packed rows), every speed/memory lever on a real run, the training tests on CUDA, the real-scale benchmark
# (benchmarks/scale.py: ours vs a plain Trainer at Qwen2.5-0.5B and Llama-3.2-1B shapes, MFU) and the largest-model
# table. Written for the `device` tool's machines: torch, transformers, peft and accelerate but no Docker and no
# network, so the package runs from src/ on the machine's own Python (PYTHONPATH), not from our image.
#
# Packages the machine lacks, or has at other versions than our locks, travel as wheels in .whl/ (gitignored) and are
# installed into /tmp/site first: our locked transformers and peft, and the cuda lock's liger-kernel and bitsandbytes.
# Fetch them (on any machine with PyPI) with:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 -d .whl \
#     transformers==5.24.0 peft==0.21.2 liger-kernel==0.8.5 bitsandbytes==0.50.2
#
# Usage:  OUT=/tmp/gpu-check benchmarks/gpu_check.sh [SECTION ...]
#   sections: default levers scale fit (the default set, planned at about 9.5 minutes on one H100 from the
#   2026-11-25 runs: default 1, levers 2, scale --quick 4, fit --quick 2.5) and tests (the lever and training
#   tests on CUDA, about 2.5 more; name it to run it). Attention kernels and Liger are compared in `scale`.
# Results in $OUT: gpu_check.log (everything), levers.tsv, scale.json, fit.json, pytest-gpu.log, default-summary.json.
# Each step has its own time limit; a failure is logged and the next step runs. The last lines are the summary tables.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check}
PY=${PY:-python3}
WORK=$(mktemp -d)
mkdir -p "$OUT"
SECTIONS=${*:-default levers scale fit}
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
LOG=$OUT/gpu_check.log
step() { echo "== $* ($(date -u +%T))" | tee -a "$LOG"; }
timed() {  # timed SECONDS CMD...: run with a limit, log the exit status and wall time; returns the exit status
  local limit=$1 t0 rc; shift; t0=$(date +%s.%N)
  timeout "$limit" "$@" >>"$LOG" 2>&1; rc=$?
  printf '   exit %s after %.1f s: %s\n' "$rc" "$(awk "BEGIN{print $(date +%s.%N) - $t0}")" "$*" | tee -a "$LOG"
  return $rc
}
wants() { [[ " $SECTIONS " == *" $1 "* ]]; }
# a short default run: same model and data, 60 steps, no scheduled checkpoints
SHORT=(--set training.max_steps=60 --set training.save_steps=100000 --set eval.max_samples=100)

step "machine"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; nproc
  "$PY" -c 'import sys, torch, transformers, peft, accelerate
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
      "transformers", transformers.__version__, "peft", peft.__version__, "accelerate", accelerate.__version__)
from importlib.metadata import version, PackageNotFoundError
for name in ("triton", "liger-kernel", "bitsandbytes", "flash-attn"):
    try: print(name, version(name))
    except PackageNotFoundError: print(name, "- not installed")
if torch.cuda.is_available(): print("gpu", torch.cuda.get_device_name(0), "bf16", torch.cuda.is_bf16_supported())
else: print("gpu: none visible")'; } 2>&1 | tee -a "$LOG"

if wants default; then
  step "default fine-tune on the GPU (configs/default.yaml: attention auto, precision auto)"
  timed 120 "$PY" -m finetune train configs/default.yaml --output-dir "$WORK/default"
  cp "$WORK/default/summary.json" "$OUT/default-summary.json" 2>/dev/null
  grep -h '\[finetune\]' "$LOG" | tail -2
  "$PY" -c 'import json,sys; m=json.load(open(sys.argv[1])); print("resolved", m["resolved"])' \
    "$WORK/default/manifest.json" 2>&1 | tee -a "$LOG"
fi

if wants levers; then
  step "each lever on a real run (default model and data, 60 steps)"
  base_model=$WORK/default/model
  [ -d "$base_model" ] || timed 120 "$PY" -m finetune train configs/default.yaml --output-dir "$WORK/default" "${SHORT[@]}"
  printf 'lever\texit\tsteps\ttrain_loss\teval_loss\ttokens/s\n' >"$OUT/levers.tsv"
  lever() {  # lever NAME LAUNCHER... -- ARGS...: one run, one row of levers.tsv
    local name=$1; shift; local dir=$WORK/lever-$name rc
    timed 90 "$@" --output-dir "$dir" "${SHORT[@]}"; rc=$?
    "$PY" - "$name" "$rc" "$dir" >>"$OUT/levers.tsv" <<'EOF'
import json, sys
name, rc, d = sys.argv[1:]
try:
    s = json.load(open(f"{d}/summary.json"))
    row = [s["steps"], f'{s["train_loss"]:.4f}', f'{s["eval_loss"]:.4f}', f'{s["tokens_per_second"]:,.0f}']
except Exception as e:
    row = ["-", "-", "-", "-"]
print("\t".join([name, rc, *map(str, row)]))
EOF
  }
  run=("$PY" -m finetune train configs/default.yaml)
  lever compile "${run[@]}" --set training.compile=true
  lever checkpointing "${run[@]}" --set training.gradient_checkpointing=true
  lever adamw_8bit "${run[@]}" --set training.optimizer=adamw_8bit
  # under torchrun the process group is NCCL, which takes no CPU tensors: one process is enough to prove every
  # collective runs on the GPU (both runs crashed at the first collective before 2026-11-26)
  lever torchrun_1proc "$PY" -m torch.distributed.run --nproc-per-node 1 -m finetune train configs/default.yaml
  lever fsdp_1proc "$PY" -m torch.distributed.run --nproc-per-node 1 -m finetune train configs/default.yaml \
    --set training.fsdp=true
  # QLoRA as users run it: a saved model (the default run's) loaded in 4 bit, adapters on every projection
  qlora=(--set model.config=null --set "model.name_or_path=$base_model" --set tokenizer.build_from_data=false
         --set lora.enabled=true --set "lora.target_modules=[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]")
  lever qlora_4bit_on_default "${run[@]}" "${qlora[@]}" --set lora.quantization=4bit
  "$PY" -c 'import json,sys; print("default run it started from: eval_loss", json.load(open(sys.argv[1]))["eval_loss"])' \
    "$WORK/default/summary.json" 2>&1 | tee -a "$OUT/levers.tsv" >/dev/null
fi

if wants tests; then
  step "lever and training tests on the GPU"
  LOG=$OUT/pytest-gpu.log timed 150 "$PY" -m pytest -q -p no:cacheprovider -o addopts="-ra" \
    tests/test_levers.py tests/test_units.py tests/test_training.py \
    -k "not torchrun and not minilm and not MiniLM and not on_cpu and not default_run_learns"
  tail -3 "$OUT/pytest-gpu.log" | tee -a "$LOG"
fi

if wants scale; then
  step "real-scale benchmark: ours vs plain Trainer, Qwen2.5-0.5B and Llama-3.2-1B shapes, 4k packed rows, bf16"
  timed 330 "$PY" benchmarks/scale.py --quick --model qwen2.5-0.5b --model llama-3.2-1b --out "$OUT/scale.json"
fi

if wants fit; then
  step "largest-model table: 0.5B/1.5B/3B/8B x full/LoRA/QLoRA on this GPU"
  timed 210 "$PY" benchmarks/scale.py --quick --no-compare --fit-table --out "$OUT/fit.json"
fi

step "done"
[ -f "$OUT/levers.tsv" ] && "$PY" -c 'import sys  # an aligned table (no `column` on every machine)
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])]
w = [max(len(r[i]) for r in rows if len(r) > max(i, 1)) for i in range(max(map(len, rows)))]
print("\n".join("  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip() for r in rows))' "$OUT/levers.tsv"
for f in scale fit; do
  [ -f "$OUT/$f.json" ] && "$PY" benchmarks/scale.py --print "$OUT/$f.json" 2>/dev/null
done
exit 0
