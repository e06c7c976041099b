#!/bin/bash
# The Pareto front's 5x point again (benchmarks/LADDER.md), one after the other on an otherwise idle machine:
# a default run timed as a user runs it (with and without its report: the baseline), then the point that
# validation chose for 5x a default run's time, 3 seeds, named so ladder_pareto.py finds them: resnet-mini
# (resnet-cpu at half its widths; the sittings of 2026-11-28 named it by its spec, the same network) with the
# strong recipe (LADDER_SWEEP.md s14), 7 epochs, the epochs set by the time budget; and (s21) the same network
# trained selectively, FLAGS="--select 0.5" EPOCHS=12 NAME=pareto5x-mini-select. FLAGS are settings beside
# the recipe's, as in strong_check.sh (the 2026-11-28 sitting named this variable SELECT).
#
#     RUNS=/tmp/pareto-runs bash benchmarks/pareto_check.sh           (~10 min on the 2-core AVX-512 EPYC)
#     python benchmarks/ladder_pareto.py $RUNS --baseline sitting-default-noreport
R=${RUNS:-/tmp/pareto-runs}
PY=${PY:-python3}
EPOCHS=${EPOCHS:-7}
FLAGS=${FLAGS:-}
NAME=${NAME:-pareto5x-mini}
source "$(dirname "$0")/sitting.sh"     # set -eu, the timer, the two default runs
for s in 0 1 2; do
  t $NAME-s$s $CL train --model resnet-mini --recipe strong \
      --epochs "$EPOCHS" $FLAGS --seed $s --no-report --runs-dir "$R" --name $NAME-s$s
done
echo "END $(date -u +%FT%TZ)"
