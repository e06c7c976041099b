#!/bin/bash
# Issue 16's 20x check again, with the strong preset trained on all 60,000 training images: its settings
# were chosen on the validation split (LADDER_SWEEP.md), so the final fit also learns from the 6,000
# images that were held out. One after the other on an otherwise idle machine (benchmarks/LADDER.md):
# a default run timed as a user runs it (with and without its report), then the preset's 3 seeds,
# each with its report.
#
#     RUNS=/tmp/strong-runs bash benchmarks/strong_check.sh        (~50 min on the 2-core AVX-512 EPYC)
#     python benchmarks/ladder_pareto.py $RUNS --baseline sitting-default-noreport
R=${RUNS:-/tmp/strong-runs}
PY=${PY:-python3}
EPOCHS=${EPOCHS:-18}
MODEL=${MODEL:-resnet-cpu}  # or a spec chosen on validation (LADDER_SWEEP.md s24: RES128_THRICE, tested in LADDER.md's sixth sitting)
FLAGS=${FLAGS:-}          # settings beside the recipe's, e.g. "--lr 6e-3" (chosen on validation: LADDER_SWEEP.md s11)
source "$(dirname "$0")/sitting.sh"     # set -eu, the timer, the two default runs
for s in 0 1 2; do
  t strong-all-s$s $CL train --model "$MODEL" --recipe strong --val-split 0 --epochs "$EPOCHS" --seed $s \
      --runs-dir "$R" --name strong-all-s$s $FLAGS
done
echo "END $(date -u +%FT%TZ)"
