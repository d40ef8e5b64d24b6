#!/usr/bin/env bash
# GPU checks for a lent GPU machine, all in one call of under 10 minutes: the default run on CUDA (attention auto ->
# flex for packed rows), every speed/memory lever on a real run, the training tests on CUDA, the real-scale benchmark
# (`python -m benchmarks scale`: ours vs a plain Trainer at Qwen2.5-0.5B and Llama-3.2-1B shapes, MFU) and the largest-model
# table. Written for the `device` tool's machines: torch, transformers, peft and accelerate but no Docker and no
# network, so the package runs from src/ on the machine's own Python (PYTHONPATH), not from our image; the benchmarks
# run as `python -m benchmarks` from the repository root (cd below), which puts the root on the import path.
#
# Packages the machine lacks, or has at other versions than our locks, travel as wheels in .whl/ (gitignored) and are
# installed into /tmp/site first: our locked transformers and peft, and the cuda lock's liger-kernel and bitsandbytes.
# Fetch them (on any machine with PyPI) with:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 -d .whl \
#     transformers==5.24.0 peft==0.21.2 liger-kernel==0.8.5 bitsandbytes==0.50.2
#
# Usage:  OUT=/tmp/gpu-check benchmarks/gpu_check.sh [SECTION ...]
#   The default set (issue 30, planned at about 9 minutes on one H200; BUDGET_S=540 seconds in all, each section
#   started only with time left and cut to what is left, the most wanted first):
#     fsdp     FSDP under torchrun, one process (60 steps of the default run): the multi-GPU path on NCCL
#     mfu1b    llama-3.2-1b: the plain Trainer, ours +flex+liger, ours +flex+liger+compile (compile off and on)
#     lora8b   llama-3.1-8b LoRA r16 on every linear layer, bf16 base, +flex+liger, 1 packed row x 4 accumulated
#     profile  llama-3.2-1b +flex+liger, 2 steps under torch.profiler: trace, operator table, kernel time by kind
#     mfu05b   qwen2.5-0.5b: the plain Trainer, ours +flex+liger, ours +flex+liger+compile
#   Older sections, by name: default levers tests scale fit (the 2026-11 runs; see benchmarks/README.md).
#   MODEL_1B, MODEL_05B, MODEL_BIG, VARIANTS and SCALE_ARGS replace the shapes, variants and `benchmarks scale` presets; the
#   plumbing runs on CPU in about 7 minutes (no figure means anything there; FSDP refuses CPU, exit 2, by design):
#     OUT=/tmp/gc PY=.venv/bin/python MODEL_1B=tiny MODEL_05B=tiny MODEL_BIG=tiny VARIANTS=base,+compile \
#       SCALE_ARGS="--steps 3 --seq-len 256 --median-tokens 40 --tokens-per-step 512" BUDGET_S=1200 benchmarks/gpu_check.sh
# Results in $OUT (at most 8 files come back from the device machine): gpu_check.log (everything), levers.tsv,
# mfu1b.json, lora8b.json, mfu05b.json, profile.tar.gz (trace.json.gz, ops.txt, breakdown.json), logs.tar.gz (every
# run's log). Each step has its own time limit; a failure is logged and the next step runs. The last lines are the
# summary tables.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check}
PY=${PY:-python3}
WORK=$(mktemp -d)
mkdir -p "$OUT"
SECTIONS=${*:-fsdp mfu1b lora8b profile mfu05b}
BUDGET_S=${BUDGET_S:-540}
DEADLINE=$(( $(date +%s) + BUDGET_S ))
MODEL_1B=${MODEL_1B:-llama-3.2-1b} MODEL_05B=${MODEL_05B:-qwen2.5-0.5b} MODEL_BIG=${MODEL_BIG:-llama-3.1-8b}
VARIANTS=${VARIANTS:-+flex+liger,+flex+liger+compile}
# no tracker in ours (the plain Trainer reports to none): equal work, and no writer in the timed steps
read -r -a SCALE <<<"${SCALE_ARGS:---quick --worker-timeout 150 --set tracking=[]}"
RES=$WORK/results  # benchmarks scale's JSON, logs and data; what comes back is copied to $OUT at the end
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
LOG=$OUT/gpu_check.log
step() { echo "== $* ($(date -u +%T))" | tee -a "$LOG"; }
timed() {  # timed SECONDS CMD...: run with a limit (cut to what is left of BUDGET_S), log the exit status and wall
  local limit=$1 t0 rc left; shift; t0=$(date +%s.%N); left=$(( DEADLINE - $(date +%s) ))
  (( left < limit )) && limit=$left
  if (( limit < 20 )); then echo "   not run (budget spent): $*" | tee -a "$LOG"; return 124; fi
  timeout "$limit" "$@" >>"$LOG" 2>&1; rc=$?
  printf '   exit %s after %.1f s: %s\n' "$rc" "$(awk "BEGIN{print $(date +%s.%N) - $t0}")" "$*" | tee -a "$LOG"
  return $rc
}
wants() { [[ " $SECTIONS " == *" $1 "* ]]; }
lever() {  # lever NAME LAUNCHER... ARGS...: one short run of the default config, one row of levers.tsv
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

# a short default run: same model and data, 60 steps, no scheduled checkpoints
SHORT=(--set training.max_steps=60 --set training.save_steps=100000 --set eval.max_samples=100)

printf 'lever\texit\tsteps\ttrain_loss\teval_loss\ttokens/s\n' >"$OUT/levers.tsv"
scale() {  # scale NAME LIMIT ARGS...: one `benchmarks scale` invocation, its JSON as $RES/NAME.json
  local name=$1 limit=$2; shift 2
  timed "$limit" "$PY" -m benchmarks scale "$@" --out "$RES/$name.json"
}
LORA=(--set lora.enabled=true --set lora.r=16 --set lora.alpha=32
      --set "lora.target_modules=[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]")

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
  timed 330 "$PY" -m benchmarks scale --quick --model qwen2.5-0.5b --model llama-3.2-1b --out "$OUT/scale.json"
fi

if wants fit; then
  step "largest-model table: 0.5B/1.5B/3B/8B x full/LoRA/QLoRA on this GPU"
  timed 210 "$PY" -m benchmarks scale --quick --no-compare --fit-table --out "$OUT/fit.json"
fi

if wants fsdp; then
  # FSDP under torchrun runs every collective of the package on NCCL (the stop flag, the token count) that plain DDP
  # runs, and FSDP's own: plain DDP is left to the `levers` section to keep this set inside its budget
  step "the multi-GPU path on one GPU: FSDP under torchrun (NCCL), 60 steps of the default run"
  lever fsdp_1proc "$PY" -m torch.distributed.run --nproc-per-node 1 -m finetune train configs/default.yaml \
    --set training.fsdp=true
fi

if wants mfu1b; then
  step "$MODEL_1B: plain Trainer vs ours, compile off and on"
  scale mfu1b 220 "${SCALE[@]}" --model "$MODEL_1B" --variants "$VARIANTS"
fi

if wants lora8b; then
  step "$MODEL_BIG LoRA speed: r16 on every linear layer, bf16 base, flex+liger, 1 packed row x 4 accumulated"
  scale lora8b 150 "${SCALE[@]}" --no-plain --model "$MODEL_BIG" --variants "${VARIANTS%%,*}" "${LORA[@]}" \
    --set training.grad_accum=4  # training.batch_size stays the 4 rows of a step: micro-batches of 1 row
fi

if wants profile; then
  step "$MODEL_1B profile: 2 steps after warm-up under torch.profiler"
  scale profile 100 "${SCALE[@]}" --no-plain --model "$MODEL_1B" --variants "${VARIANTS%%,*}" --steps 5 \
    --profile "$RES/profile"
  for f in "$RES"/profile/*/breakdown.json; do [ -f "$f" ] && cat "$f" | tee -a "$LOG"; done
  for f in "$RES"/profile/*/ops.txt; do [ -f "$f" ] && head -22 "$f" | cut -c1-170 | tee -a "$LOG"; done
fi

if wants mfu05b; then
  step "$MODEL_05B: plain Trainer vs ours, compile off and on"
  scale mfu05b 220 "${SCALE[@]}" --model "$MODEL_05B" --variants "$VARIANTS"
fi

step "done"
for f in mfu1b lora8b mfu05b; do [ -f "$RES/$f.json" ] && cp "$RES/$f.json" "$OUT/"; done
[ -d "$RES/profile" ] && tar -C "$RES" -czf "$OUT/profile.tar.gz" profile $( [ -f "$RES/profile.json" ] && echo profile.json)
[ -d "$RES/logs" ] && tar -C "$RES" -czf "$OUT/logs.tar.gz" logs
[ -f "$OUT/levers.tsv" ] && "$PY" -c 'import sys  # an aligned table (no `column` on every machine)
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])]
w = [max(len(r[i]) for r in rows if len(r) > max(i, 1)) for i in range(max(map(len, rows)))]
print("\n".join("  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip() for r in rows))' "$OUT/levers.tsv"
for f in "$OUT"/scale.json "$OUT"/fit.json "$OUT"/mfu1b.json "$OUT"/lora8b.json "$OUT"/mfu05b.json; do
  [ -f "$f" ] && "$PY" -m benchmarks scale --print "$f" 2>/dev/null
done
exit 0
