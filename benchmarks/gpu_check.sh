#!/usr/bin/env bash
# GPU checks, run on one CUDA machine: each section writes JSON into $OUT (default ./gpu_check_out).
# Usage: OUT=/some/dir bash benchmarks/gpu_check.sh        (PYTHON=... to pick the interpreter)
# Needs a CUDA build of torch; no network (the training section feeds random tokens and stdlib text).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_check_out}"
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" CHATSMITH_HOME="${CHATSMITH_HOME:-$OUT/home}"
mkdir -p "$OUT"
status=0
last_json() { tail -n 1 "$1" > "$2" && "$PY" -c "import json,sys; json.load(open(sys.argv[1]))" "$2"; }
run() {  # run NAME TIMEOUT CMD...: log to $OUT/NAME.log, last line (JSON) to $OUT/NAME.json
  local name=$1 limit=$2; shift 2
  echo "== $name: $*"
  if timeout "$limit" "$@" > "$OUT/$name.log" 2>&1 && last_json "$OUT/$name.log" "$OUT/$name.json"; then
    cat "$OUT/$name.json"; echo
  else
    echo "$name FAILED (see $OUT/$name.log)"; tail -n 20 "$OUT/$name.log"; status=1
  fi
}

"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA'; print(torch.__version__, torch.cuda.get_device_name())" \
  || exit 1

# ---- training (chatsmith.train): peak, then d12 throughput and MFU against fp32 eager AdamW ----
run train_peak 120 "$PY" -m chatsmith bench peak --seconds 3
# 300 steps of d12 as the preset trains it (bf16, compile, Muon, one GPU: 16 micro-steps per step
# are cut to 1 here so a step is one micro-batch of 32x2048); the baseline needs far fewer steps.
run train_d12 480 "$PY" -m chatsmith bench train --preset d12 --steps 300 --baseline-steps 20 \
  --set pretrain.total_batch_tokens=0
# The real path end to end on one GPU: stdlib text, checkpoints, resume.
run train_d12_pretrain 420 bash -c "'$PY' -m chatsmith pretrain --preset d12 --run.name=gpucheck \
  --data.corpus_mb=8 --tokenizer.vocab_size=8192 --tokenizer.train_mb=4 --pretrain.steps=60 \
  --pretrain.total_batch_tokens=0 --pretrain.ckpt_every=30 --pretrain.eval_every=30 --pretrain.log_every=10 \
  && tail -n 1 '$CHATSMITH_HOME/runs/gpucheck/metrics.jsonl'"

# ---- (other benchmarks add their sections below) ----

exit $status
