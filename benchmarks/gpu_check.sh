#!/bin/sh
# The GPU checks of issues 3 and 7 in one go, for a machine with a CUDA GPU and a Python that
# has PyTorch, NumPy, Pillow, matplotlib and safetensors (no virtual environment needed: the
# package runs from src/). Writes everything under $OUT; stops at the first failure.
#
#     DATA=folder/with/fashion-mnist/gz OUT=/tmp/gpu-check sh benchmarks/gpu_check.sh
#
# What it runs, each on the GPU: `train` with the defaults; `evaluate` (with its images/s);
# `explain` and `report`; a folder of PNGs streamed from disk; a torchrun launch of one process
# (NCCL); `bench` of the convlens recipe over 3 seeds (time to 91.28 %, issue 3's figure); and the
# accuracy ladder's strongest presets, resnet-cpu and resnet-gpu with the recipe strong (issue 16),
# each explained and summarised. STRONG_ONLY=1 runs only that last part.
set -eu
export PYTHONPATH="$(pwd)/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
DATA=${DATA:-.data/fashion-mnist}
OUT=${OUT:-/tmp/gpu-check}
RUNS=${RUNS:-/tmp/gpu-check-runs}      # runs and the made folder stay outside $OUT: 7 files come back
FOLDER=${FOLDER:-/tmp/gpu-check-folder}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}     # DEVICE=cpu EPOCHS=1 SEEDS=1: a quick run of the script itself on a CPU machine
EPOCHS=${EPOCHS:-5}
SEEDS=${SEEDS:-3}
STRONG_EPOCHS=${STRONG_EPOCHS:-30}     # the residual presets' schedule (the ladder's longest rung)
STRONG_ONLY=${STRONG_ONLY:-0}
STRONG_FLAGS=${STRONG_FLAGS:-}         # e.g. "--limit 500": a quick run of that part on a CPU
mkdir -p "$OUT"

$PY - <<'EOF'
import torch
print("torch", torch.__version__, "on", torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU",
      flush=True)
EOF

if [ "$STRONG_ONLY" != 1 ]; then
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
fi

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

echo "== the ladder's strongest presets, recipe strong, $STRONG_EPOCHS epochs, on $DEVICE"
for preset in resnet-cpu resnet-gpu; do
    $PY -m convlens train --device $DEVICE --data-dir "$DATA" --runs-dir "$RUNS" --name "gpu-$preset" --model $preset \
        --recipe strong --epochs "$STRONG_EPOCHS" --no-report --progress lines $STRONG_FLAGS
    $PY -m convlens summary "gpu-$preset" --runs-dir "$RUNS" > "$OUT/summary-$preset.txt"
    $PY -m convlens explain "gpu-$preset" --device $DEVICE --data-dir "$DATA" --runs-dir "$RUNS" \
        --out "$OUT/explain-$preset.png"
    cp "$RUNS/gpu-$preset/results.json" "$OUT/results-gpu-$preset.json"
    cp "$RUNS/gpu-$preset/metrics.jsonl" "$OUT/metrics-gpu-$preset.jsonl"
done
