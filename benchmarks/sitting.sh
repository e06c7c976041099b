# Sourced by the check scripts (ladder_check.sh, strong_check.sh): the package from this checkout,
# a timer, and the sitting's first two runs: a default `convlens train` timed as a user runs it, with
# its report and without (the baseline of every "× default"). Needs R (the runs folder) and PY set.
set -eu
export PYTHONPATH="$(pwd)/src${PYTHONPATH:+:$PYTHONPATH}"
cl() { $PY -m convlens "$@"; }
CL="$PY -m convlens"      # what /usr/bin/time runs (it cannot run a shell function)
t() { local name=$1; shift; /usr/bin/time -f "TIME $name %e s wall, %M KB peak" "$@"; }
echo "START $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)"

t default $CL train --runs-dir "$R" --name sitting-default
t default-noreport $CL train --runs-dir "$R" --name sitting-default-noreport --no-report
