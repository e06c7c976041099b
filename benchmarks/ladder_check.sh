#!/bin/bash
# Issue 16's measurements in one sitting, one after the other on an otherwise idle machine
# (benchmarks/LADDER.md): a default run timed as a user runs it, the strong preset's 3 seeds at the
# longer rung's epochs (timed, report written, named so the ladder finds them), the 3-seed ladder,
# the two budget runs of the Pareto front, then every verb on seed 0's run of each trained rung.
#
#     RUNS=/tmp/ladder-runs bash benchmarks/ladder_check.sh        (~2 h on the 2-core AVX-512 EPYC)
#     python benchmarks/ladder_pareto.py $RUNS --baseline sitting-default-noreport
R=${RUNS:-/tmp/ladder-runs}
O=${VERBS_OUT:-$R/verbs}
PY=${PY:-python3}
source "$(dirname "$0")/sitting.sh"     # set -eu, the timer, the two default runs
for s in 0 1 2; do
  t strong-s$s $CL train --model resnet-cpu --recipe strong --epochs 18 --seed $s --runs-dir "$R" --name ladder-longer-s$s
done
t ladder $CL ladder --seeds 3 --runs-dir "$R"
for s in 0 1 2; do    # 2x a default run's time: seed-bn at ~6.5 s an epoch
  cl train --model seed-bn --epochs 8 --seed $s --no-report --runs-dir "$R" --name pareto2x-s$s
done
for s in 0 1 2; do    # 5x: seed-bn with the augment rung's crops and flips
  cl train --model seed-bn --crop 1 --crop-pad 2 --flip 0.5 --epochs 20 --seed $s --no-report --runs-dir "$R" \
      --name pareto5x-s$s
done

echo "VERBS $(date -u +%FT%TZ)"
mkdir -p "$O"
$PY - "$O/boot-photo.png" <<'PY'
import sys
from PIL import Image
from convlens.datasets import load_fashion_mnist
image = load_fashion_mnist(None, val_split=0.0).test_x[0, 0].numpy()      # an ankle boot
Image.fromarray(255 - image).resize((112, 112)).save(sys.argv[1])         # dark on light, larger: photo-like
PY
for rung in seed bn augment resnet ema longer; do
  run=ladder-$rung-s0
  echo "=== $run"
  cl summary "$R/$run"
  cl evaluate $run --runs-dir "$R" --tta --out-dir "$O/$run/eval"
  cl predict $run "$O/boot-photo.png" --runs-dir "$R"
  cl activations $run --runs-dir "$R" --index 0 --out-dir "$O/$run/act"
  cl filters $run --runs-dir "$R" --out "$O/$run/filters.png"
  cl explain $run --runs-dir "$R" --index 0 --out "$O/$run/explain.png"
  cl features $run --runs-dir "$R" --steps 32 --out-dir "$O/$run/features"
  cl export $run --runs-dir "$R" --out "$O/$run/onnx"
done
cl report ladder-longer-s0 --runs-dir "$R" --out "$O/longer-report.html"
cl compare ladder-seed-s0 ladder-longer-s0 --runs-dir "$R" --out "$O/compare.png"
echo "END $(date -u +%FT%TZ)"
