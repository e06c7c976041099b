"""The validation-only sweep behind the ladder's rungs and the recipe `strong` (benchmarks/LADDER_SWEEP.md).

Every run trains through convlens.train with the test split replaced by the validation split, so the
test images are never evaluated while choosing: results.json's "test" figures of these runs are
validation figures. One JSON line per run goes to benchmarks/results/ladder-sweep.jsonl.

    PYTHONPATH=src python benchmarks/ladder_sweep.py s3 [--threads 1] [--runs-dir /tmp/sweep-runs] [--only NAME ...]

Groups s1–s5 are what was run on 2026-11-27 (1 thread each, the other core busy); `full` is the sweep
still to run at the ladder's real budget (30 epochs of resnet-cpu: ~15–30 min a run).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from torch import nn

from convlens import TrainConfig, train
from convlens.datasets import training_data
from convlens.models import PRESETS
from convlens.residual import ResidualBlock

train_module = sys.modules["convlens.train"]      # the module (the package's `train` is its function)

AUG = {"crop": 1.0, "crop_pad": 2, "flip": 0.5}
ERASE = {**AUG, "erase": 0.25}
BN_AFTER_POOL, BN_BEFORE_POOL = ("conv64-pool-bn-conv64-pool-bn-flatten-dense128-dense10",
                                 "conv64-bn-pool-conv64-bn-pool-flatten-dense128-dense10")
RES32_FIRST = "conv32same-bn-res32-res64s2-res64-res128s2-res128-gap-dense10"    # resnet-cpu since s5
RES64_FIRST = "conv32same-bn-res64s2-res64-res128s2-res128-gap-dense10"           # resnet-cpu in s1–s5
POOLED_NARROW = "conv32same-bn-conv64same-pool-bn-res64-conv128same-pool-bn-res128-gap-dense10"     # 58 M mult-adds
POOLED = "conv32same-bn-conv64same-pool-bn-res64-conv128same-pool-bn-res128-conv256same-poolsame-bn-gap-dense10"
RES32_TWICE = "conv32same-bn-res32-res32-res64s2-res64-res128s2-gap-dense10"   # resnet-cpu's last block moved to 28×28
RES128_THRICE = "conv32same-bn-res32-res64s2-res64-res128s2-res128-res128-gap-dense10"   # a third block at 7×7
RES_TINY = PRESETS["resnet-mini"][0]        # resnet-cpu's widths / 2 (a preset since s21; runs record its spec)
FIRST_STRONG = {"recipe": "strong", "batch_size": 128, "lr": 2e-3, "optimizer": "adamw", "weight_decay": 0.05,
                "erase": 0.25}   # the first guess at `strong` (it also used init torch: not a flag, see the notes)
SCRIPT_ONLY = ("zero_residual",)     # settings this script applies itself (no flag gives them)
STRONG = {"model": "resnet-cpu", "recipe": "strong"}     # the strong preset; its runs add epochs and one change


def seeded(name: str, settings: dict, seeds: tuple[int, ...] = (0, 1)) -> list[tuple[str, dict]]:
    """One run of `settings` per seed, named NAME-sSEED: the later screens run two seeds side by side."""
    return [(f"{name}-s{seed}", {**settings, "seed": seed}) for seed in seeds]


GROUPS = {
    "s1": [("s1-seed", {"model": "seed", "epochs": 5}),
           ("s1-seedbn-poolbn", {"model": BN_AFTER_POOL, "epochs": 5}),
           ("s1-seedbn-bnpool", {"model": BN_BEFORE_POOL, "epochs": 5}),
           ("s1-resnet-strong4", {"model": RES64_FIRST, "epochs": 4, **FIRST_STRONG, "ema": 0.999})],
    "s2": [("s2-strong-noema", {"model": RES64_FIRST, "epochs": 4, **FIRST_STRONG, "ema": 0.0}),
           ("s2-strong-noerase", {"model": RES64_FIRST, "epochs": 4, **FIRST_STRONG, "ema": 0.999, "erase": 0.0}),
           ("s2-fast-aug", {"model": RES64_FIRST, "recipe": "fast", "epochs": 4, **ERASE}),
           ("s2-strong-lr4e-3", {"model": RES64_FIRST, "epochs": 4, **FIRST_STRONG, "ema": 0.999, "lr": 4e-3})],
    "s3": [("s3-fast-aug-ema", {"model": RES64_FIRST, "recipe": "fast", "epochs": 4, "ema": 0.999, **ERASE}),
           ("s3-L10k-fast-aug", {"model": RES64_FIRST, "recipe": "fast", "epochs": 20, "limit": 10000, **ERASE}),
           ("s3-L10k-fast-aug-ema", {"model": RES64_FIRST, "recipe": "fast", "epochs": 20, "limit": 10000,
                                     "ema": 0.999, **ERASE}),
           ("s3-L10k-fast-aug-adamw", {"model": RES64_FIRST, "recipe": "fast", "epochs": 20, "limit": 10000,
                                       "optimizer": "adamw", "weight_decay": 0.05, **ERASE}),
           ("s3-L10k-fast-noerase", {"model": RES64_FIRST, "recipe": "fast", "epochs": 20, "limit": 10000, **AUG})],
    "s4": [("s4-seed-e10", {"model": "seed", "recipe": "fast", "epochs": 10}),
           ("s4-seedbn-e10", {"model": "seed-bn", "recipe": "fast", "epochs": 10}),
           ("s4-seedbn-aug-e10", {"model": "seed-bn", "recipe": "fast", "epochs": 10, **AUG}),
           ("s4-L10k-res32first", {"model": RES32_FIRST, "recipe": "fast", "epochs": 20, "limit": 10000, **AUG})],
    "s5": [("s5-L10k-resnetcpu-e26", {"model": RES64_FIRST, "recipe": "fast", "epochs": 26, "limit": 10000,
                                      **AUG})],
    # After the 3-seed ladder (LADDER.md): the network without the 28×28 stage (21 % fewer multiply-adds) in the
    # time of the longer rung's 18 epochs, against that rung's seed-0 validation figure (95.10 %). 2 threads, idle.
    "s6": [("s6-res64first-e23", {"model": RES64_FIRST, "recipe": "strong", "epochs": 23})],
    # The strong recipe with SGD (Nesterov, momentum 0.9, L2 5e-4 on the weights), the usual ResNet optimizer, in
    # place of Adam, at the longer rung's 18 epochs, against its seed-0 validation figure (95.10 %). 1 thread each,
    # the two side by side.
    "s7": [("s7-sgd-lr0.05", {"model": "resnet-cpu", "recipe": "strong", "epochs": 18, "optimizer": "sgd",
                              "lr": 0.05, "weight_decay": 5e-4}),
           ("s7-sgd-lr0.1", {"model": "resnet-cpu", "recipe": "strong", "epochs": 18, "optimizer": "sgd",
                             "lr": 0.1, "weight_decay": 5e-4})],
    # Two of the usual short-schedule tricks, the same comparison, side by side on 1 thread each (both lost): the
    # last batch norm of every residual block starting at 0 (each block starts as the identity: Goyal et al. 2017, He et
    # al.'s "bag of tricks" 2019; not a flag, this script sets it), and label smoothing 0.2 for 0.1.
    "s8": [("s8-zero-residual", {"model": "resnet-cpu", "recipe": "strong", "epochs": 18, "zero_residual": True}),
           ("s8-smoothing0.2", {"model": "resnet-cpu", "recipe": "strong", "epochs": 18, "label_smoothing": 0.2})],
    # The strong recipe's peak learning rate, set on the seed network (4e-3), never swept on the residual network at
    # the budget's 18 epochs: one above, one below, side by side on 1 thread each (s9, s10: LADDER_SWEEP.md).
    "s11": [("s11-lr6e-3", {"model": "resnet-cpu", "recipe": "strong", "epochs": 18, "lr": 6e-3}),
            ("s11-lr2.5e-3", {"model": "resnet-cpu", "recipe": "strong", "epochs": 18, "lr": 2.5e-3})],
    # Downsampling by conv → max pool in place of strided residual blocks (the layout of Page's "ResNet-9", 2018),
    # each network given the epochs that fit the longer rung's 18 epochs of resnet-cpu (44.6 s an epoch of 60,000
    # images at batch 64 on 2 threads, 2026-11-28): POOLED_NARROW 33.7 s → 23 epochs, POOLED 40.9 s → 19.
    # Side by side on 1 thread each, against ladder-longer-s0's 95.10 %.
    "s12": [("s12-pooled-narrow-e23", {"model": POOLED_NARROW, "recipe": "strong", "epochs": 23}),
            ("s12-pooled-e19", {"model": POOLED, "recipe": "strong", "epochs": 19})],
    # The seed network for a GPU's 1-second aim, past s9's batch 2,048 (its GPU run: 91.66 % in 2.2 s, 0.10 s an
    # epoch of 27 launch-bound steps, LADDER.md): half the steps in batches of 4,096 (lr scaled by the square root
    # of the batch, and linearly), and batch 2,048 with 12 epochs. 2 threads, one after another.
    "s13": [("s13-b4096-lr2.2e-2-e16", {"model": "seed", "batch_size": 4096, "lr": 2.2e-2, "epochs": 16}),
            ("s13-b4096-lr3.2e-2-e16", {"model": "seed", "batch_size": 4096, "lr": 3.2e-2, "epochs": 16}),
            ("s13-b2048-lr1.6e-2-e12", {"model": "seed", "batch_size": 2048, "lr": 1.6e-2, "epochs": 12})],
    # The Pareto front's 2x and 5x points (LADDER.md: seed-bn, 8 epochs, 92.47 %; seed-bn with crops and flips, 20
    # epochs, 92.68 %) against a residual network at half resnet-cpu's widths (16.6 M mult-adds, a quarter of its, 18.5 s an
    # epoch of 54,000 images on 2 threads against seed-bn's 5.9 s), at the epochs that fit the same budgets
    # (5x: ~155 s from first step to test result; 2x: ~62 s). 2 threads, one after another.
    "s14": [("s14-tiny-strong-e7", {"model": RES_TINY, "recipe": "strong", "epochs": 7}),
            ("s14-seedbn-aug-e20", {"model": "seed-bn", "recipe": "fast", "epochs": 20, **AUG}),
            ("s14-tiny-strong-e3", {"model": RES_TINY, "recipe": "strong", "epochs": 3}),
            ("s14-tiny-fast-aug-e3", {"model": RES_TINY, "recipe": "fast", "epochs": 3, **AUG}),
            ("s14-seedbn-e8", {"model": "seed-bn", "recipe": "fast", "epochs": 8})],
    # Progressive resizing (resizing.py): the first epochs on shrunk images, full size from 70 % of the epochs on,
    # with the epochs that cost what the longer rung's 18 full-size ones do (a step of resnet-cpu at batch 64, 2
    # threads, 2026-11-28: 47, 33, 26 and 20 ms at 28, 24, 20 and 16 px). Side by side on 1 thread each, against
    # ladder-longer-s0's 95.10 %.
    "s16": [("s16-resize16-e24", {"model": "resnet-cpu", "recipe": "strong", "epochs": 24, "resize_from": 16 / 28}),
            ("s16-resize20-e22", {"model": "resnet-cpu", "recipe": "strong", "epochs": 22, "resize_from": 20 / 28})],
    # Batches of 32 in place of 64: twice the steps for ~2 % more time an image (resnet-cpu, 2 threads, 2026-11-28:
    # 743-752 against 727-749 µs), at the peak lr of batch 64 and at it scaled by 1/√2. Side by side on 1 thread
    # each, against ladder-longer-s0's 95.10 %.
    "s17": [("s17-b32-lr4e-3", {"model": "resnet-cpu", "recipe": "strong", "epochs": 18, "batch_size": 32}),
            ("s17-b32-lr2.8e-3", {"model": "resnet-cpu", "recipe": "strong", "epochs": 18, "batch_size": 32,
                                  "lr": 2.8e-3})],
    # Less label smoothing: s8's 0.2 lost 0.38 points to the recipe's 0.1 at 18 epochs; does the trend go on below?
    # Side by side on 1 thread each, against ladder-longer-s0's 95.10 %.
    "s18": [("s18-smoothing0.05", {"model": "resnet-cpu", "recipe": "strong", "epochs": 18, "label_smoothing": 0.05}),
            ("s18-smoothing0", {"model": "resnet-cpu", "recipe": "strong", "epochs": 18, "label_smoothing": 0.0})],
    # Two free settings never swept on the residual network: a shorter warm-up (5 % of the steps for 15 %: more of
    # them at the peak learning rate, which s11 found can go higher) and a longer weight average (0.9995 for 0.999:
    # ~2,000 steps, 2.4 epochs, for ~1,000). Side by side on 1 thread each, against ladder-longer-s0's 95.10 %.
    "s19": [("s19-warmup0.05", {"model": "resnet-cpu", "recipe": "strong", "epochs": 18, "warmup": 0.05}),
            ("s19-ema0.9995", {"model": "resnet-cpu", "recipe": "strong", "epochs": 18, "ema": 0.9995})],
    # Selective training (selection.py, Jiang et al. 2019's stale selective backprop): after a full first epoch, each
    # epoch takes a share of the images drawn towards the highest last losses (power 1), with the epochs that cost
    # what the longer rung's 18 full ones do (1 + 17 / share). 1 thread each, side by side. Both were run with a
    # prototype of the same draws patched onto the loop; the module gave the prototype's validation figures exactly
    # on a 4-epoch check (seed-bn, 3,000 images), not on these runs themselves.
    "s20": [("s20-select0.5-e35", {"model": "resnet-cpu", "recipe": "strong", "epochs": 35, "select": 0.5}),
            ("s20-select0.7-e25", {"model": "resnet-cpu", "recipe": "strong", "epochs": 25, "select": 0.7})],
    # The same at the Pareto front's budgets (s14's runs, 2 threads, one after another): 2x seed-bn 8 epochs; 5x
    # seed-bn with crops and flips 20 epochs; the half-width residual network's 7 epochs of the strong recipe.
    "s21": [("s21-seedbn-select0.5-e15", {"model": "seed-bn", "recipe": "fast", "epochs": 15, "select": 0.5}),
            ("s21-seedbn-aug-select0.5-e39", {"model": "seed-bn", "recipe": "fast", "epochs": 39, **AUG,
                                              "select": 0.5}),
            ("s21-tiny-strong-select0.5-e13", {"model": RES_TINY, "recipe": "strong", "epochs": 13, "select": 0.5}),
            ("s21-tiny-strong-select0.5-e5", {"model": RES_TINY, "recipe": "strong", "epochs": 5, "select": 0.5})],
    # s20's better share at seeds 1 and 2, each on its own seed's validation split, against the recipe's runs of the
    # same seeds and splits (ladder-longer-s1, -s2: 95.32 and 94.72 %). 1 thread each, side by side.
    "s22": seeded("s22-select0.7-e25", {**STRONG, "epochs": 25, "select": 0.7}, seeds=(1, 2)),
    # A second residual block at full resolution in place of the last one at 7×7 (the same multiply-adds, 4 % more
    # time an epoch on the 2-core Xeon with AMX): dropping the 28×28 stage cost 0.5 points (s6), so is more there
    # worth more? 17 epochs, what costs the recipe's 18; seeds 0 and 1, 1 thread each, side by side, against
    # ladder-longer-s0 and -s1 (95.10, 95.32 %).
    "s23": seeded("s23-res32twice-e17", {"model": RES32_TWICE, "recipe": "strong", "epochs": 17}),
    # The other way: a third block at 7×7, where this CPU's convolutions run fastest (+22 % multiply-adds, +14 % time
    # an epoch), 16 epochs for the recipe's 18; beside the recipe itself on this machine (s23 compared with runs
    # from the EPYC), seed 0, 1 thread each, side by side.
    "s24": [("s24-recipe-e18-s0", {"model": "resnet-cpu", "recipe": "strong", "epochs": 18}),
            ("s24-res128thrice-e16-s0", {"model": RES128_THRICE, "recipe": "strong", "epochs": 16})],
    # Alternating flip (Jordan 2024): each image mirrored in every other epoch, a coin deciding only the first, in place
    # of a fresh coin each epoch; the same cost. Seeds 0 and 1, 1 thread each, side by side, against s24-recipe-e18-s0
    # (this Xeon, 94.77 %) and ladder-longer-s1 (the EPYC, 95.32 %).
    "s25": seeded("s25-altflip-e18", {**STRONG, "epochs": 18, "flip_order": "alternate"}),
    # Decoupled weight decay (AdamW, 0.05 on the conv and dense weights) in place of Adam without decay: the recipe
    # never tried it on resnet-cpu at 18 epochs (s3's AdamW run was the older network, 10k images, with erasing).
    # Seeds 0 and 1, 1 thread each, side by side, against s24-recipe-e18-s0 (this Xeon) and ladder-longer-s1 (EPYC).
    "s26": seeded("s26-adamw0.05-e18", {**STRONG, "epochs": 18, "optimizer": "adamw", "weight_decay": 0.05}),
    # Wider random crops: ±3 px for the recipe's ±2 (`--crop-pad 3`), the same cost; seeds 0 and 1, 1 thread each, side
    # by side, against the same two recipe runs as s25 and s26.
    "s27": seeded("s27-pad3-e18", {**STRONG, "epochs": 18, "crop_pad": 3}),
    # What more epochs buy now: the recipe at 22 epochs (~1.22× its training, the epochs LADDER.md's extrapolation says
    # the 95.0 % aim needs), seeds 0 and 1, 1 thread each, side by side, against the same two 18-epoch runs.
    "s28": seeded("s28-recipe-e22", {**STRONG, "epochs": 22}),
    # Not run: the strong recipe and its neighbours at 30 epochs (30 epochs do not fit the 20× budget).
    "full": [("full-strong-e30", {"model": "resnet-cpu", "recipe": "strong", "epochs": 30}),
             ("full-strong-e30-erase", {"model": "resnet-cpu", "recipe": "strong", "epochs": 30, "erase": 0.25}),
             ("full-strong-e30-noema", {"model": "resnet-cpu", "recipe": "strong", "epochs": 30, "ema": 0.0}),
             ("full-res64first-e38", {"model": RES64_FIRST, "recipe": "strong", "epochs": 38})],   # ~ equal time
}


@contextmanager
def zero_residual_init(on: bool):
    """While on: after the recipe's init, every residual block's last batch norm scales by 0 (an identity
    block). The recipe's init is put back after, so the group's next run is not touched."""
    recipe_init = train_module.init_weights

    def init(model, how):
        recipe_init(model, how)
        for m in model.modules():
            if isinstance(m, ResidualBlock):
                nn.init.zeros_(m.bn2.weight)
    train_module.init_weights = init if on else recipe_init
    try:
        yield
    finally:
        train_module.init_weights = recipe_init


def run(name: str, settings: dict, runs_dir: str, threads: int, data_dir: str | None, out: Path) -> dict:
    config = TrainConfig(**{"recipe": "fast", **{k: v for k, v in settings.items() if k not in SCRIPT_ONLY}},
                         runs_dir=runs_dir, name=name, threads=threads, data_dir=data_dir)
    data = training_data(config)
    data = replace(data, test_x=data.val_x, test_y=data.val_y)       # never the test set
    t0 = time.perf_counter()
    with zero_residual_init(settings.get("zero_residual", False)):
        r = train(config, data=data)
    line = {"name": name, **settings, "val_acc_per_epoch": [round(e["val_accuracy"], 4) for e in r.metrics],
            "val_final": round(r.metrics[-1]["val_accuracy"], 4),
            "val_tta": round(r.results.get("val_accuracy_tta", float("nan")), 4),
            "train_s": r.results["train_time_s"], "wall_s": round(time.perf_counter() - t0, 1), "threads": threads}
    with out.open("a") as f:
        f.write(json.dumps(line) + "\n")
    return line


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("group", choices=list(GROUPS))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs-dir", default="/tmp/ladder-sweep-runs")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--only", nargs="*", help="these runs of the group only (to run them side by side)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "ladder-sweep.jsonl"))
    args = p.parse_args(argv)
    for name, settings in GROUPS[args.group]:
        if args.only and name not in args.only:
            continue
        print(json.dumps(run(name, settings, args.runs_dir, args.threads, args.data_dir, Path(args.out))), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
