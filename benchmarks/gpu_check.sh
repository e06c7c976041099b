#!/bin/sh
# The GPU checks in one go, for a machine with a CUDA GPU and a Python that has PyTorch, NumPy,
# Pillow, matplotlib and safetensors (no virtual environment needed: the package runs from src/).
# Writes what it measured under $OUT (at most 8 files come back from the device: a few JSON
# files, a picture, and one archive of the runs' records); stops at the first failure.
#
#     DATA=folder/with/fashion-mnist/gz OUT=/tmp/gpu-check sh benchmarks/gpu_check.sh
#
# What the next GPU session still has to measure (2026-11-28; ~6 min of an H200, carry .data):
#     PARTS="seedfast sweep steps" SWEEP_CHOSEN=b512-lr11 DATA=.data/fashion-mnist OUT=$OUT sh benchmarks/gpu_check.sh
# the seed network with its start-up off the clock (device_warmup_s), the chosen large-batch resnet-gpu
# over 3 seeds, and the step profile again with the fixed arithmetic.
#
# PARTS picks what runs, in this order (default: all):
#   basic   issues 3 and 7: `train` with the defaults, `evaluate` (images/s), `explain`, `report`, a folder
#           of PNGs streamed from disk, a torchrun launch of one process (NCCL), `bench` of the convlens
#           recipe over 3 seeds (time to 91.28 %)
#   strong  issue 16: the GPU preset (STRONG_MODEL, resnet-gpu) with --recipe strong, SEEDS seeds trained at
#           once, fitted on all 60,000 images like the CPU's 20x check; its epochs are what fit BUDGET_S seconds
#           of training (the issue's 5 minutes), read off a 1-epoch probe of the same seeds at once (or
#           STRONG_EPOCHS); the mean and std of their test accuracy, plain and with flip TTA; one run
#           summarised and explained
#   seedfast  issue 16's 1-second aim: the seed network with each of SEEDFAST_FLAGS (';' between settings:
#           larger batches, chosen on the validation split on a CPU, LADDER_SWEEP.md s9), SEEDS seeds each,
#           one after another
#   sweep   resnet-gpu with larger batches: candidates chosen between on validation, the chosen one fitted on
#           all images over SEEDS seeds (benchmarks/gpu_sweep.py)
#   steps   where a training step's time goes: ms a step of the seed and resnet-gpu networks by batch size,
#           and a profile (benchmarks/gpu_steps.py)
set -eu
export PYTHONPATH="$(pwd)/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
DATA=${DATA:-.data/fashion-mnist}
OUT=${OUT:-/tmp/gpu-check}
RUNS=${RUNS:-/tmp/gpu-check-runs}      # runs and the made folder stay outside $OUT
FOLDER=${FOLDER:-/tmp/gpu-check-folder}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}     # DEVICE=cpu EPOCHS=1 SEEDS=1 STRONG_FLAGS="--limit 500": a quick run on a CPU machine
PARTS=${PARTS:-basic strong seedfast sweep steps}
EPOCHS=${EPOCHS:-5}
SEEDS=${SEEDS:-3}
STRONG_MODEL=${STRONG_MODEL:-resnet-gpu}
BUDGET_S=${BUDGET_S:-285}              # training seconds each strong run may take (under the issue's 5 min)
STRONG_EPOCHS=${STRONG_EPOCHS:-}       # set: these epochs, no probe
MAX_EPOCHS=${MAX_EPOCHS:-60}
PROBE_IMAGES=${PROBE_IMAGES:-25600}    # 400 steps of 64 images
THREADS_EACH=${THREADS_EACH:-4}        # CPU threads of each strong run (they share the machine's cores)
STRONG_FLAGS=${STRONG_FLAGS:-}
STEPS_FLAGS=${STEPS_FLAGS:-}           # e.g. "--quick" on a CPU; "--profile-only"
SEEDFAST_FLAGS=${SEEDFAST_FLAGS:-"--batch-size 2048 --lr 1.6e-2 --epochs 16;--batch-size 1024 --lr 1.2e-2 --epochs 8"}
SWEEP_EXTRA=${SWEEP_EXTRA:-}           # e.g. "--limit 512 --epochs 1" on a CPU
SWEEP_CHOSEN=${SWEEP_CHOSEN:-}         # b512-lr11: what 2026-11-28's sweep chose on validation; skips to its 3 seeds
mkdir -p "$OUT"

$PY - <<'EOF'
import torch
print("torch", torch.__version__, "on", torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU",
      flush=True)
EOF

case " $PARTS " in *" basic "*)
echo "== train (defaults) on $DEVICE"
$PY -m convlens train --device $DEVICE --data-dir "$DATA" --runs-dir "$RUNS" --name gpu --epochs "$EPOCHS"
echo "== evaluate on $DEVICE"
$PY -m convlens evaluate gpu --device $DEVICE --data-dir "$DATA" --runs-dir "$RUNS" --json > "$OUT/evaluate.json"
$PY -c "import json; e = json.load(open('$OUT/evaluate.json')); print('accuracy', e['accuracy'])"
echo "== explain, report, predict on $DEVICE"
$PY -m convlens explain gpu --device $DEVICE --data-dir "$DATA" --runs-dir "$RUNS" --out "$OUT/explain.png"
$PY -m convlens report gpu --device $DEVICE --data-dir "$DATA" --runs-dir "$RUNS" --out "$OUT/report.html"

echo "== an image folder streamed from disk, on $DEVICE"
$PY - "$DATA" "$FOLDER" <<'EOF'
import sys
from pathlib import Path
from PIL import Image
from convlens.datasets import load_fashion_mnist
data, root = load_fashion_mnist(sys.argv[1], val_split=0.0), Path(sys.argv[2])
for k, name in ((0, "tshirt"), (1, "trouser"), (8, "bag")):
    (root / name).mkdir(parents=True, exist_ok=True)
    for j, i in enumerate((data.train_y == k).nonzero()[:300, 0].tolist()):
        Image.fromarray(data.train_x[i, 0].numpy()).save(root / name / f"{j:03d}.png")
EOF
$PY -m convlens train --device $DEVICE --dataset "folder:$FOLDER" --stream --epochs "$EPOCHS" --runs-dir "$RUNS" \
    --name gpu-folder --no-report
$PY -m convlens predict gpu-folder --device $DEVICE --runs-dir "$RUNS" "$FOLDER/bag/000.png"

echo "== torchrun, one process (NCCL on a GPU)"
$PY -m torch.distributed.run --standalone --nproc_per_node 1 -m convlens train --device $DEVICE --data-dir "$DATA" \
    --runs-dir "$RUNS" --name gpu-ddp --epochs "$EPOCHS" --no-report

echo "== bench: the convlens recipe over $SEEDS seeds"
$PY -m convlens bench --only convlens --seeds "$SEEDS" --data-dir "$DATA" --out "$OUT/bench-gpu.json"
for run in gpu gpu-folder gpu-ddp; do cp "$RUNS/$run/results.json" "$OUT/results-$run.json"; done
;; esac

echo "== augmentation on $DEVICE draws what it draws on the CPU (the same seeded generator)"
$PY - "$DEVICE" <<'PYEOF'
import sys, torch
from convlens.augment import augment
x = torch.randint(1, 256, (64, 1, 28, 28), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
kw = dict(crop=1.0, crop_pad=2, flip=0.5, erase=0.5)
on = augment(x.to(sys.argv[1]), torch.Generator().manual_seed(3), **kw).cpu()
assert torch.equal(on, augment(x, torch.Generator().manual_seed(3), **kw)), "augmentation differs on the device"
print("augmentation: equal on", sys.argv[1])
PYEOF

case " $PARTS " in *" strong "*)
mkdir -p "$RUNS"
train_seeds() {   # prefix, then flags: SEEDS runs of STRONG_MODEL at once, each its own process (at_once.py)
    prefix=$1; shift
    $PY benchmarks/at_once.py --runs-dir "$RUNS" --prefix "$prefix" --seeds "$SEEDS" -- --device $DEVICE \
        --data-dir "$DATA" --model $STRONG_MODEL --recipe strong --val-split 0 --threads $THREADS_EACH --no-report \
        --progress lines "$@" $STRONG_FLAGS
}
epochs=$STRONG_EPOCHS
if [ -z "$epochs" ]; then
    echo "== $STRONG_MODEL, recipe strong: $SEEDS seeds at once, 1 epoch of $PROBE_IMAGES images, for the step time"
    train_seeds probe --epochs 1 --limit $PROBE_IMAGES
    epochs=$($PY - "$RUNS" "$SEEDS" "$BUDGET_S" "$MAX_EPOCHS" <<'PYEOF'
import json, math, sys
runs, seeds, budget, most = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
epoch_s = []
for s in range(seeds):
    config = json.load(open(f"{runs}/probe-{s}/config.json"))
    steps = math.ceil(config["resolved"]["train_images"] / config["settings"]["batch_size"])
    per_step = json.loads(open(f"{runs}/probe-{s}/metrics.jsonl").readline())["time_s"] / steps
    epoch_s.append(per_step * math.ceil(60_000 / config["settings"]["batch_size"]))
print(f"probe: an epoch of 60,000 images would take {max(epoch_s):.1f} s (slowest seed)", file=sys.stderr)
print(max(1, min(most, int(budget // max(epoch_s)))))
PYEOF
)
fi
echo "== $STRONG_MODEL, recipe strong, $epochs epochs, $SEEDS seeds at once, all 60,000 images, on $DEVICE"
train_seeds strong --epochs "$epochs"
$PY - "$RUNS" "$SEEDS" "$OUT/gpu-strong.json" "$STRONG_MODEL" <<'PYEOF'
import json, sys, torch
sys.path.insert(0, "benchmarks")
from at_once import group_summary, read_results
runs, seeds, out, model = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
summary = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", "torch": torch.__version__,
           "model": model, "recipe": "strong", "seeds_at_once": seeds,
           **group_summary(read_results(runs, [f"strong-{s}" for s in range(seeds)]))}
json.dump(summary, open(out, "w"), indent=1)
print(f"{model} strong: test {summary['test_mean_std'][0]} ± {summary['test_mean_std'][1]} % "
      f"(flip TTA {summary['tta_mean_std'][0]} ± {summary['tta_mean_std'][1]} %) over {seeds} seeds, "
      f"at most {summary['train_time_s_max']:.1f} s of training each, on {summary['device']}")
PYEOF
$PY -m convlens summary strong-0 --runs-dir "$RUNS" > "$RUNS/summary-strong-0.txt"
$PY -m convlens explain strong-0 --device $DEVICE --data-dir "$DATA" --runs-dir "$RUNS" --out "$OUT/explain-$STRONG_MODEL.png"
(cd "$RUNS" && tar czf "$OUT/strong-runs.tar.gz" *.log summary-strong-0.txt */config.json */metrics.jsonl */results.json)
;; esac

case " $PARTS " in *" seedfast "*)
mkdir -p "$RUNS"
k=0
echo "$SEEDFAST_FLAGS" | tr ';' '\n' > "$RUNS/seedfast-configs.txt"
while read -r flags; do
    echo "== the seed network, recipe fast, $flags: $SEEDS seeds one after another, on $DEVICE"
    for s in $(seq 0 $((SEEDS - 1))); do
        $PY -m convlens train --device $DEVICE --data-dir "$DATA" --runs-dir "$RUNS" --name "seedfast$k-$s" --seed $s \
            --no-report --progress lines $flags < /dev/null
    done
    k=$((k + 1))
done < "$RUNS/seedfast-configs.txt"
$PY - "$RUNS" "$SEEDS" "$OUT/gpu-seedfast.json" <<'PYEOF'
import json, sys, torch
sys.path.insert(0, "benchmarks")
from at_once import group_summary
runs, seeds, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
configs = []
for k, flags in enumerate(open(f"{runs}/seedfast-configs.txt").read().splitlines()):
    rows = []
    for s in range(seeds):
        r = json.load(open(f"{runs}/seedfast{k}-{s}/results.json"))
        epochs = [json.loads(line) for line in open(f"{runs}/seedfast{k}-{s}/metrics.jsonl")]
        rows.append({"seed": s, "test_accuracy": r["test_accuracy"], "train_time_s": r["train_time_s"],
                     "device_warmup_s": r.get("device_warmup_s", 0.0),
                     "epoch_time_s": [e["time_s"] for e in epochs],
                     "val_accuracy": [e.get("val_accuracy") for e in epochs]})
    group = group_summary(rows)
    configs.append({"flags": flags, "runs": rows, "test_mean_std": group["test_mean_std"],
                    "train_time_s_mean": group["train_time_s_mean"]})
    print(f"seed network, {flags}: test {configs[-1]['test_mean_std'][0]} ± {configs[-1]['test_mean_std'][1]} % in "
          f"{configs[-1]['train_time_s_mean']} s of training (mean of {seeds})")
device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
json.dump({"device": device, "torch": torch.__version__, "configs": configs}, open(out, "w"), indent=1)
PYEOF
;; esac

case " $PARTS " in *" sweep "*)
echo "== resnet-gpu with larger batches: chosen on validation, then fitted on all images (benchmarks/gpu_sweep.py)"
$PY benchmarks/gpu_sweep.py --device $DEVICE --data-dir "$DATA" --runs-dir "$RUNS/sweep" --seeds "$SEEDS" \
    --out "$OUT/gpu-sweep.json" --extra "$SWEEP_EXTRA" ${SWEEP_CHOSEN:+--chosen "$SWEEP_CHOSEN"}
(cd "$RUNS/sweep" && tar czf "$OUT/sweep-runs.tar.gz" *.log */config.json */metrics.jsonl */results.json)
;; esac

case " $PARTS " in *" steps "*)
echo "== where a training step's time goes, on $DEVICE"
$PY benchmarks/gpu_steps.py --device $DEVICE --data-dir "$DATA" --out "$OUT/gpu-steps.json" $STEPS_FLAGS
;; esac
