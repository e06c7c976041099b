#!/bin/bash
# The Pareto front's 5x point again (benchmarks/LADDER.md), one after the other on an otherwise idle machine:
# a default run timed as a user runs it (with and without its report: the baseline), then the point that
# validation chose for 5x a default run's time (LADDER_SWEEP.md s14: resnet-cpu at half its widths with the
# strong recipe, 7 epochs, the epochs set by the time budget), 3 seeds, named so ladder_pareto.py finds them.
# It tested the same as the seed-bn point it was to replace (LADDER.md), so it is no preset.
#
#     RUNS=/tmp/pareto-runs bash benchmarks/pareto_check.sh           (~10 min on the 2-core AVX-512 EPYC)
#     python benchmarks/ladder_pareto.py $RUNS --baseline sitting-default-noreport
R=${RUNS:-/tmp/pareto-runs}
PY=${PY:-python3}
source "$(dirname "$0")/sitting.sh"     # set -eu, the timer, the two default runs
for s in 0 1 2; do
  t pareto5x-mini-s$s $CL train --model conv16same-bn-res16-res32s2-res32-res64s2-res64-gap-dense10 --recipe strong --epochs 7 --seed $s --no-report \
      --runs-dir "$R" --name pareto5x-mini-s$s
done
echo "END $(date -u +%FT%TZ)"
