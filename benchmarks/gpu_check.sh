#!/usr/bin/env bash
# GPU checks for a lent GPU machine: the package's real training on CUDA, the training tests on CUDA, and the
# throughput benchmark (ours vs a plain Hugging Face Trainer) on the GPU. Written for the `device` tool's machines,
# which have torch/transformers/peft/accelerate but no Docker and no network, so the package runs from src/ on the
# machine's own Python (PYTHONPATH) rather than from our image. Results go to $OUT (default /tmp/gpu-check):
#   gpu_check.log        versions, GPU, each step's output and timing
#   default-summary.json the default run's summary (eval accuracy before/after, tokens/s, precision)
#   default-loss.png     its loss curve
#   pytest-gpu.log       tests/test_units.py + tests/test_training.py on CUDA (torchrun-2-procs and MiniLM deselected:
#                        one GPU, and the MiniLM weights package is not installed there)
#   throughput-gpu*.json benchmarks/throughput.py on the GPU, default and variable-length data
# Usage:  OUT=/tmp/gpu-check benchmarks/gpu_check.sh        (each step has its own time limit; a failure goes on)
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check}
PY=${PY:-python3}
WORK=$(mktemp -d)
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
LOG=$OUT/gpu_check.log
step() { echo "== $* ($(date -u +%T))" | tee -a "$LOG"; }
timed() {  # timed SECONDS CMD...: run with a limit, log the exit status and wall time
  local limit=$1 t0 rc; shift; t0=$(date +%s.%N)
  timeout "$limit" "$@" >>"$LOG" 2>&1; rc=$?
  printf '   exit %s after %.1f s: %s\n' "$rc" "$(awk "BEGIN{print $(date +%s.%N) - $t0}")" "$*" | tee -a "$LOG"
}

step "machine"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; nproc
  $PY -c 'import sys, torch, transformers, peft, accelerate
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
      "transformers", transformers.__version__, "peft", peft.__version__, "accelerate", accelerate.__version__)
print("gpu", torch.cuda.get_device_name(0), "bf16", torch.cuda.is_bf16_supported())'; } >>"$LOG" 2>&1

step "default fine-tune on the GPU (configs/default.yaml, precision auto)"
timed 90 "$PY" -m finetune train configs/default.yaml --output-dir "$WORK/default"
cp "$WORK/default/summary.json" "$OUT/default-summary.json" 2>/dev/null
cp "$WORK/default/loss.png" "$OUT/default-loss.png" 2>/dev/null
grep -h '"precision"\|"device"\|"gpu"' "$WORK/default/manifest.json" >>"$LOG" 2>/dev/null

step "training tests on the GPU"
LOG=$OUT/pytest-gpu.log timed 180 "$PY" -m pytest -q -p no:cacheprovider tests/test_units.py tests/test_training.py \
  -k "not torchrun and not minilm and not MiniLM" -o addopts="-ra"
tail -3 "$OUT/pytest-gpu.log" >>"$LOG"

step "throughput on the GPU: default data"
timed 100 "$PY" benchmarks/throughput.py --epochs 2 --out "$OUT/throughput-gpu.json"
step "throughput on the GPU: variable-length data (1-50 letters)"
"$PY" scripts/make_default_data.py --out "$WORK/varlen" --min-len 1 --max-len 50 --train 2000 >>"$LOG" 2>&1
timed 100 "$PY" benchmarks/throughput.py --epochs 2 --out "$OUT/throughput-gpu-varlen.json" \
  --set "data.train_file=$WORK/varlen/train.jsonl" --set "data.eval_file=$WORK/varlen/eval.jsonl"
step "done"
