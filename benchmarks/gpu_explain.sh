#!/bin/sh
# Issue 13's checked explanations and features, and issue 12's one-precision rule, on a CUDA GPU: a
# python3 with PyTorch, NumPy, Pillow, matplotlib and safetensors; Captum may come on PYTHONPATH
# (CAPTUM=folder holding captum/). Writes the commands' output and timings under $OUT.
#
#     DATA=folder/with/fashion-mnist/gz CAPTUM=folder OUT=/tmp/gpu-explain sh benchmarks/gpu_explain.sh
set -eu
export PYTHONPATH="$(pwd)/src${CAPTUM:+:$CAPTUM}${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
DATA=${DATA:-.data/fashion-mnist}
OUT=${OUT:-/tmp/gpu-explain}
RUNS=${RUNS:-/tmp/gpu-explain-runs}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
timed() {   # label, then the convlens command: its wall time into $OUT/times.txt, its output into $OUT/LABEL.txt
    label=$1; shift
    start=$($PY -c "import time; print(time.time())")
    $PY -m convlens "$@" > "$OUT/$label.txt" 2>&1 || { tail -20 "$OUT/$label.txt"; exit 1; }
    echo "$label $($PY -c "import sys, time; print(round(time.time() - float(sys.argv[1]), 1))" "$start") s" \
        | tee -a "$OUT/times.txt"
}
$PY -c "import torch, captum; print('torch', torch.__version__, 'captum', captum.__version__, 'on', torch.cuda.get_device_name())" | tee "$OUT/device.txt"
timed train train --device $DEVICE --data-dir "$DATA" --runs-dir "$RUNS" --name seed --no-report
timed evaluate evaluate seed --device $DEVICE --data-dir "$DATA" --runs-dir "$RUNS" --no-figures
timed explain-check explain seed --index 9 --check --deletion --device $DEVICE --data-dir "$DATA" --runs-dir "$RUNS"
timed features features seed --device $DEVICE --data-dir "$DATA" --runs-dir "$RUNS"
timed report report seed --device $DEVICE --data-dir "$DATA" --runs-dir "$RUNS" --out "$OUT/report.html"
cp "$RUNS/seed/results.json" "$OUT/results.json"
grep -h "accuracy\|Test" "$OUT/train.txt" "$OUT/evaluate.txt" | head -4
