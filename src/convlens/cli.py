"""The command line: one thin function per verb over the Python API.

Errors are one line (`convlens: error: …`) with exit status 2; `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path

from .errors import ConvlensError


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line like every other error."""

    def error(self, message: str):
        raise ConvlensError(f"{message} (see `{self.prog} --help`)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _say(*lines: str) -> None:
    print(*lines, sep="\n", flush=True)


# ---------------------------------------------------------------------------
# verbs

def cmd_summary(args) -> None:
    from .summary import summarize
    from .folders import parse_image_size
    h, w = parse_image_size(args.image_size)
    s = summarize(args.model, (args.channels, h, w), args.classes)
    _say(json.dumps(s.to_dict(), indent=2) if args.json else s.text())


# Flags that describe a run's training; --resume takes them all from the run itself.
_RUN_SETTINGS = ("model", "dataset", "image_size", "channels", "stream", "recipe", "epochs", "batch_size", "lr",
                 "label_smoothing", "seed", "val_split", "early_stopping", "precision", "threads", "compile",
                 "checkpoint_every", "deterministic", "tensorboard", "name")


def cmd_train(args) -> None:
    from .summary import summarize
    from .train import TrainConfig, resume, train

    if args.resume:
        defaults = build_parser().parse_args(["train"])
        given = [k for k in _RUN_SETTINGS if getattr(args, k) != getattr(defaults, k)]
        if given:
            raise ConvlensError(f"--resume continues with the run's own settings; drop --{given[0].replace('_', '-')}")
    config = TrainConfig(model=args.model, dataset=args.dataset, data_dir=args.data_dir, image_size=args.image_size,
                         channels=args.channels, stream=args.stream, recipe=args.recipe,
                         epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         label_smoothing=args.label_smoothing, seed=args.seed, val_split=args.val_split,
                         early_stopping=args.early_stopping, device=args.device, precision=args.precision,
                         threads=args.threads, compile=args.compile, checkpoint_every=args.checkpoint_every,
                         deterministic=args.deterministic, tensorboard=args.tensorboard, runs_dir=args.runs_dir,
                         name=args.name)
    where: list[Path] = []

    def on_start(path, model, data):
        where.append(path)
        progress.event("start", run=str(path), epochs=config.epochs)
        if args.resume:
            _say(f"Resuming {path}: {progress.done} of {config.epochs} epochs done, going on from its checkpoint")
        else:
            _say(summarize(config.model, data.input_shape, data.num_classes).text(), "",
                 f"Training {config.model!r} on {data.name}: {len(data.train_y):,} images "
                 f"({len(data.val_y):,} held out for validation), recipe {settings.name}: "
                 f"batch {settings.batch_size}, lr {settings.lr:g} {settings.schedule}, {config.epochs} epochs → {path}")

    if args.resume:
        from .runs import open_run
        saved = open_run(args.resume, args.runs_dir)
        config = replace(config, **{k: saved.config[k] for k in (*_RUN_SETTINGS, "data_dir") if k in saved.config})
        config = replace(config, data_dir=args.data_dir or config.data_dir)
    config.check()
    settings = config.settings()
    data = config.load_data()
    progress = _EpochProgress(config.epochs, args.progress)
    try:
        if args.resume:
            progress.done = len(saved.metrics)
            run = resume(saved.path, data=data, data_dir=config.data_dir,
                         device=args.device if args.device != "auto" else None,
                         on_start=on_start, on_epoch=progress.epoch, on_step=progress.step)
        else:
            run = train(config, data, on_start=on_start, on_epoch=progress.epoch, on_step=progress.step)
    except KeyboardInterrupt:
        if where and any(where[0].glob("checkpoint*.safetensors")):
            raise ConvlensError(f"interrupted before the first epoch finished; "
                                f"`convlens train --resume {where[0]}` continues from the checkpoint") from None
        raise
    finally:
        progress.close()
    if run is None:              # a rank other than 0 of a torchrun launch: rank 0 reports
        return
    res = run.results
    progress.event("done", **res)
    if res.get("interrupted"):
        epoch, step = res.get("stopped_at") or (res["epochs_run"] + 1, 0)
        where_ = f"after epoch {epoch - 1}" if not step else f"in epoch {epoch}, after step {step}"
        _say(f"Interrupted {where_}: kept the weights trained so far; "
             f"`convlens train --resume {run.path}` continues from there.")
    if res.get("stopped_early"):
        _say(f"Early stopping: no better validation loss after epoch {res['best_epoch']}; "
             f"restored its weights.")
    tta = f" (with flip test-time augmentation {res['test_accuracy_tta']:.2%})" if "test_accuracy_tta" in res else ""
    _say("", f"Test: loss {res['test_loss']:.4f}, accuracy {res['test_accuracy']:.2%}{tta} "
             f"({res['epochs_run']} epochs, {res['train_time_s']:.1f} s of training)")
    if res.get("overfitting"):
        _say(f"Note: {res['overfitting']}")
    if not args.no_report:
        from .report import write_run_report
        _say(f"Report: {write_run_report(run, data=data)}")
    _say(f"Run: {run.path}")


class _EpochProgress:
    """How training reports itself: a rich progress bar per epoch (a terminal), one plain line per
    epoch (a pipe or a log), or JSON lines for programs (the web explorer's training jobs)."""

    def __init__(self, epochs: int, mode: str = "auto"):
        self.epochs, self.bar, self.task, self.done = epochs, None, None, 0
        self.mode = ("bar" if sys.stdout.isatty() else "lines") if mode == "auto" else mode
        if self.mode == "bar":
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TextColumn("{task.fields[info]}"), transient=False)
            self.bar.start()

    def event(self, kind: str, **fields) -> None:
        if self.mode == "json":
            _say(json.dumps({"event": kind, **fields}))

    def step(self, done: int, total: int) -> None:
        if self.mode == "json" and (done % max(1, total // 100) == 0 or done == total):
            self.event("step", epoch=self.done + 1, step=done, steps=total)
        if not self.bar:
            return
        if self.task is None:
            self.task = self.bar.add_task(f"epoch {self.done + 1}/{self.epochs}", total=total, info="")
        if done % 20 == 0 or done == total:
            self.bar.update(self.task, completed=done)

    def epoch(self, rec: dict) -> None:
        self.done = rec["epoch"]
        if self.mode == "json":
            self.event("epoch", **rec)
            return
        line = (f"loss {rec['loss']:.4f} acc {rec['accuracy']:.4f}"
                + (f"  val_loss {rec['val_loss']:.4f} val_acc {rec['val_accuracy']:.4f}" if "val_loss" in rec else "")
                + f"  {rec['time_s']:.1f}s")
        if self.bar:
            self.bar.update(self.task, info=line)
            self.task = None
        else:
            _say(f"epoch {rec['epoch']}/{self.epochs}  {line}")

    def close(self) -> None:
        if self.bar:
            self.bar.stop()


def cmd_evaluate(args) -> None:
    from .evaluate import evaluate_run
    from .runs import open_run
    from . import figures
    from .inspect import most_confident_mistakes
    run = open_run(args.run, args.runs_dir)
    if args.dataset:        # the same model on other files: a CSV export of its test set, a new batch, …
        from .data import load_dataset
        data = load_dataset(args.dataset, args.data_dir, val_split=0.0, **run.data_options(args.dataset))
        if data.input_shape != tuple(run.model_info["input_shape"]) or data.num_classes > len(run.classes):
            raise ConvlensError(f"{args.dataset}: {data.num_classes} classes of {data.input_shape} images; run "
                                f"{run.name} takes {tuple(run.model_info['input_shape'])} and knows {len(run.classes)}")
    else:
        data = run.dataset(args.data_dir)
    ev = evaluate_run(run, data, device=args.device, tta=args.tta)
    if args.json:
        _say(json.dumps(ev.to_dict(), indent=2))
        return
    _say(ev.text())
    if args.no_figures:
        return
    out = Path(args.out_dir or run.path / "figures")
    worst = most_confident_mistakes(ev.probabilities, ev.labels, k=24)
    written = [
        _write(out / "confusion.png", figures.confusion_matrix(ev.confusion, ev.classes)),
        _write(out / "confusion-normalized.png", figures.confusion_matrix(ev.confusion, ev.classes, normalize=True)),
        _write(out / "per-class-accuracy.png", figures.per_class_bars(ev.recall, ev.classes, "accuracy per class",
                                                                      "recall")),
        _write(out / "misclassified.png", figures.gallery(
            data.test_x[worst, 0].numpy(),
            [f"#{i} true: {ev.classes[ev.labels[i]]}\npred: {ev.classes[ev.predictions[i]]} "
             f"({ev.probabilities[i].max():.2f})" for i in worst],
            "most confidently misclassified test images"))]
    _say("", "Figures: " + ", ".join(str(p) for p in written))


def cmd_predict(args) -> None:
    from .evaluate import predict
    from .runs import open_run
    from .train import pick_device
    run = open_run(args.run, args.runs_dir)
    model = run.load_model(pick_device(args.device))
    invert = {"auto": None, "yes": True, "no": False}[args.invert]
    for p in predict(model, run.classes, args.images, k=args.top, invert=invert, rule=run.image_rule):
        _say(f"{p.source}: " + ", ".join(f"{c} {prob:.1%}" for c, prob in p.top))


def _describe_own_data(args) -> None:
    """`convlens data --dataset folder:…|idx:…|csv:…`: what training would see, class by class."""
    import torch
    from .data import load_dataset
    from .folders import StreamedImages, parse_image_size
    if args.action != "show":
        raise ConvlensError(f"data {args.action}: your own data has no recorded checksums to "
                            f"{'verify' if args.action == 'verify' else 'fetch by'}; `convlens data` shows it")
    data = load_dataset(args.dataset, val_split=0.0, image_size=parse_image_size(args.image_size),
                        channels=args.channels)
    c, h, w = data.input_shape
    held = "streamed from disk" if isinstance(data.train_x, StreamedImages) else "held in memory"
    _say(f"{args.dataset}: {data.num_classes} classes, images {h}×{w}×{c} (height × width × channels), {held}",
         f"  {len(data.train_y):,} training and {len(data.test_y):,} test images"
         + (f"; {len(data.skipped):,} files skipped (listed above)" if data.skipped else ""))
    train_n = torch.bincount(data.train_y, minlength=data.num_classes).tolist()
    test_n = torch.bincount(data.test_y, minlength=data.num_classes).tolist()
    width = max(len("class"), *(len(name) for name in data.classes))
    _say(f"  {'class':{width}}  {'train':>8}  {'test':>7}")
    for name, a, b in zip(data.classes, train_n, test_n):
        _say(f"  {name:{width}}  {a:>8,}  {b:>7,}")


def cmd_data(args) -> None:
    from .data import dataset_info, fetch, locate, verify
    if ":" in args.dataset:
        return _describe_own_data(args)
    if args.image_size or args.channels:
        raise ConvlensError("--image-size and --channels apply to image folders (--dataset folder:PATH)")
    info = dataset_info(args.dataset)
    if args.action == "verify":
        rows = verify(info, args.data_dir)
        for loc, ok, detail in rows:
            _say(f"{'ok ' if ok else 'BAD'}  {info.files[loc.role].name:28} {detail}  ({loc.path or '-'})")
        if not all(ok for _, ok, _ in rows):
            raise ConvlensError(f"{info.name}: {sum(not ok for _, ok, _ in rows)} file(s) failed verification")
        return
    found = fetch(info, args.data_dir) if args.action == "fetch" else locate(info, args.data_dir)
    _say(f"{info.name}: {len(info.classes)} classes ({', '.join(info.classes)})")
    if info.archive and any(loc.path is None for loc in found):
        _say(f"  (the files come out of {info.archive.name}, {info.archive.size:,} bytes: downloaded, verified, "
             f"and deleted once they are extracted)")
    for loc in found:
        _say(f"  {info.files[loc.role].name:28} {loc.source:16} {loc.path or '(not found: `convlens data fetch` downloads it)'}")


def _write(path: Path, data: bytes) -> Path:
    from .runs import write_atomic
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data)
    return path


def _pixel(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        row, col = (int(v) for v in text.split(","))
    except ValueError:
        raise ConvlensError(f"--pixel expects ROW,COL (e.g. 10,12), got {text!r}") from None
    return row, col


def cmd_convolve(args) -> None:
    from . import figures
    from .convolution import KERNEL_DESCRIPTIONS, convolution_lab, lab_image, sample_image
    if args.image:
        image, label = lab_image(args.image), Path(args.image).name
    else:
        image, cls = sample_image(args.sample, args.data_dir)
        label = f"test image {args.sample} ({cls})"
    lab = convolution_lab(image, args.kernel, args.stride, args.padding, args.pool, _pixel(args.pixel))
    px = lab.pixel
    png = figures.convolution_lab(lab.image, lab.kernel, lab.kernel_name, lab.result, lab.pooled, lab.shapes,
                                  pixel=(px.row, px.col), patch_origin=(px.top, px.left),
                                  arithmetic_text=px.text())
    out = _write(Path(args.out), png)
    about = KERNEL_DESCRIPTIONS.get(lab.kernel_name, "")
    _say(f"{label}: kernel {lab.kernel_name}{' (' + about + ')' if about else ''}, stride {lab.stride}, "
         f"padding {lab.padding}, {lab.pool}×{lab.pool} max pool" if lab.pool else "",
         f"shapes: {lab.shapes}",
         f"reference sum(pixel × kernel) vs torch conv2d: max difference {lab.torch_max_diff:.2e}", "",
         px.text(), "", f"Figure: {out}")


def _inspect_image(args, run, data):
    """The image a run-based verb looks at: a user file (prepared like predict) or test image --index."""
    from .images import load_image
    c, h, w = tuple(run.model_info["input_shape"])
    if getattr(args, "image", None):
        return load_image(args.image, (h, w), c, rule=run.image_rule), Path(args.image).name, None
    if not 0 <= args.index < len(data.test_y):
        raise ConvlensError(f"--index {args.index}: the test set has {len(data.test_y):,} images "
                            f"(0 to {len(data.test_y) - 1})")
    label = int(data.test_y[args.index])
    return data.test_x[args.index], f"test image {args.index} ({run.classes[label]})", label


def _model(run, args):
    """The run's trained network on --device."""
    from .train import pick_device
    return run.load_model(pick_device(args.device))


def cmd_activations(args) -> None:
    from . import figures
    from .inspect import activations, filter_across_images
    from .runs import open_run
    run = open_run(args.run, args.runs_dir)
    model = _model(run, args)
    data = run.dataset(args.data_dir)
    image, label, _ = _inspect_image(args, run, data)
    try:
        indices = [int(i) for i in args.images.split(",")]
    except ValueError:
        raise ConvlensError(f"--images expects test image indices like 0,7,26, got {args.images!r}") from None
    bad = [i for i in indices if not 0 <= i < len(data.test_y)]
    if bad:
        raise ConvlensError(f"--images: no test image {bad[0]} (0 to {len(data.test_y) - 1})")
    grid = filter_across_images(model, data.test_x[indices], args.filter)   # checks --filter before any writing
    out_dir = Path(args.out_dir or run.path / "figures")
    _say(f"{label}: every layer's output")
    for i, layer in enumerate(activations(model, image)):
        line = f"  {layer.name:22} {layer.type:20} {layer.shape}"
        if layer.output.ndim == 3:
            path = _write(out_dir / f"activations-{i + 1:02d}-{layer.name}.png",
                          figures.feature_map_grid(layer.output, f"{layer.name} ({layer.type}) {layer.shape}: "
                                                   f"all {layer.output.shape[0]} maps for {label}"))
            line += f"  → {path}"
        _say(line)
    labels = [f"#{i} {run.classes[int(data.test_y[i])]}" for i in indices]
    path = _write(out_dir / f"filter-{args.filter}.png",
                  figures.filter_comparison(grid.maps, labels, [c.split()[0] for c in grid.col_labels],
                                            f"filter {args.filter} across layers (rows: test images)"))
    _say(f"Filter {args.filter} on test images {', '.join(map(str, indices))} across "
         f"{', '.join(grid.col_labels)} → {path}")


def cmd_filters(args) -> None:
    from . import figures
    from .inspect import kernels
    from .runs import open_run
    run = open_run(args.run, args.runs_dir)
    ks = kernels(_model(run, args), args.layer)
    out = Path(args.out or run.path / "figures" / f"kernels-{ks.layer}.png")
    o, i, k, _ = ks.weights.shape
    summary = "per_input" if i == 1 else args.summary
    _write(out, figures.kernel_grid(ks.weights, f"{ks.layer}: {o} learned {k}×{k} kernels over {i} input channel(s)",
                                    summary=summary))
    _say(f"{ks.layer}: {o} kernels of {k}×{k}×{i}, weights in [{ks.weights.min():.3f}, {ks.weights.max():.3f}] → {out}")


def cmd_explain(args) -> None:
    from . import figures
    from .inspect import grad_cam, saliency, top_k
    from .runs import open_run
    run = open_run(args.run, args.runs_dir)
    model = _model(run, args)
    args.image = args.image_pos or args.image
    image, label, true = _inspect_image(args, run, None if args.image else run.dataset(args.data_dir))
    top = top_k(model, image, run.classes, k=3)
    cam = grad_cam(model, image, method=args.cam)
    sal = saliency(model, image)
    out = Path(args.out or run.path / "figures" / "explain.png")
    _write(out, figures.explanation(image[0].float().numpy() / 255 if image.shape[0] == 1 else
                                    image.float().mean(0).numpy() / 255, sal, cam.cam, top,
                                    true_label=run.classes[true] if true is not None else None,
                                    layer_name=cam.layer, cam_name=CAM_NAMES[args.cam]))
    _say(f"{label}: " + ", ".join(f"{c} {p:.1%}" for c, p in top),
         f"{CAM_NAMES[args.cam]} on {cam.layer} for {run.classes[cam.target]}; gradient saliency → {out}")


CAM_NAMES = {"layercam": "LayerCAM", "gradcam": "Grad-CAM"}


def cmd_report(args) -> None:
    from .report import write_run_report
    from .runs import open_run
    from .train import pick_device
    run = open_run(args.run, args.runs_dir)
    path = write_run_report(run, Path(args.out) if args.out else None, data_dir=args.data_dir,
                            device=pick_device(args.device))
    _say(f"Report: {path}")


def cmd_compare(args) -> None:
    from . import figures
    from .compare import comparison_text, curve_series
    from .runs import open_run
    runs = [open_run(r, args.runs_dir) for r in args.runs]
    _say(comparison_text(runs))
    out = _write(Path(args.out), figures.curves([curve_series(r) for r in runs]))
    _say("", f"Curves: {out}")


def cmd_export(args) -> None:
    from .export import check_onnx, export_run
    from .runs import open_run
    run = open_run(args.run, args.runs_dir)
    path = export_run(run, args.format, args.out)
    _say(f"{run.name} → {path} ({path.stat().st_size / 1e6:.2f} MB), preprocessing in {path.parent / 'preprocessing.json'}")
    if args.format == "onnx" and not args.no_check:
        data = run.dataset(args.data_dir)
        _say("onnxruntime vs PyTorch: " + check_onnx(run, path, data.test_x).text())


def cmd_serve(args) -> None:
    from .server import serve
    from .train import pick_device
    pick_device(args.device)          # a GPU that is not there: say so before announcing the address
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        if not args.public:
            raise ConvlensError(f"--host {args.host} would let other machines use this server (it runs models "
                                "and starts training); add --public if that is what you want")
        print(f"convlens: warning: serving on {args.host}:{args.port}: anyone who can reach this address can "
              "browse your runs, upload images and start training", file=sys.stderr, flush=True)
    Path(args.runs_dir).mkdir(parents=True, exist_ok=True)
    _say(f"convlens explorer: http://{'localhost' if args.host in ('127.0.0.1', '::1') else args.host}:{args.port}/"
         f"  (runs in {Path(args.runs_dir).resolve()}; Ctrl-C stops)")
    serve(args.runs_dir, args.host, args.port, args.data_dir, args.device)


def cmd_bench(args) -> None:
    from .bench import VARIANTS, run_bench, table
    from .runs import write_json
    variants = args.only.split(",") if args.only else list(VARIANTS)
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise ConvlensError(f"--only: unknown variant {bad[0]!r}; known: {', '.join(VARIANTS)}")
    epochs = {"convlens": args.epochs} if args.epochs else {}
    out = Path(args.out or f"benchmarks/results/bench-{time.strftime('%Y%m%d-%H%M%S')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    result = run_bench(variants, args.seeds, epochs, args.data_dir, args.keras_python,
                       log=lambda m: print(m, file=sys.stderr, flush=True),
                       on_result=lambda r: write_json(out, r))
    write_json(out, result)
    _say(table(result), "", f"JSON: {out}")


# ---------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .models import PRESETS
    from .train import RECIPES, TrainConfig

    d = TrainConfig()
    p = _Parser(prog="convlens", description="Train, explain and serve small convolutional image classifiers.")
    p.add_argument("--version", action="version", version=f"convlens {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)

    def verb(name, func, help):
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(func=func)
        sp.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
        return sp

    def data_args(sp):
        sp.add_argument("--dataset", default=d.dataset, help="a registered dataset (default %(default)s), or your own: "
                        "folder:PATH (one sub-folder of images per class), idx:FOLDER (four IDX files) "
                        "or csv:PATH (Kaggle layout: label,pixel1,…)")
        sp.add_argument("--data-dir", default=None, help="folder with the dataset files (default: $CONVLENS_DATA, "
                        "the cache, /usr/share/datasets, then download)")

    def run_args(sp):
        sp.add_argument("--runs-dir", default=d.runs_dir, help="where runs live (default %(default)s)")
        sp.add_argument("--device", default="auto", help="auto | cpu | cuda (default %(default)s)")

    presets = ", ".join(PRESETS)
    sp = verb("train", cmd_train, "train a model into a run directory")
    sp.add_argument("--model", default=d.model, help=f"preset ({presets}) or spec (default %(default)s)")
    data_args(sp)
    sp.add_argument("--image-size", default=None, metavar="S|HxW", help="image folders: resize every image to "
                    "this (64 or 48x64; default: the most common size in the folder)")
    sp.add_argument("--channels", type=int, default=None, choices=(1, 3), help="image folders: 1 grayscale or "
                    "3 RGB (default: 3 if any image has colour)")
    sp.add_argument("--stream", action="store_true", help="image folders: decode from disk every epoch with "
                    "worker processes, even when the images would fit in memory (above 1 GiB they always do)")
    sp.add_argument("--recipe", default=d.recipe, choices=list(RECIPES), help="training recipe (default %(default)s)")
    sp.add_argument("--epochs", type=int, default=d.epochs, help="passes over the data (default %(default)s)")
    sp.add_argument("--batch-size", type=int, default=None, help="images per step (default: the recipe's)")
    sp.add_argument("--lr", type=_float, default=None, help="peak learning rate (default: the recipe's)")
    sp.add_argument("--label-smoothing", type=_float, default=None, help="(default: the recipe's)")
    sp.add_argument("--seed", type=int, default=d.seed, help="random seed (default %(default)s)")
    sp.add_argument("--val-split", type=_float, default=None,
                    help="share of training images held out for validation (default: the recipe's, 0.1; "
                         "keras: 0 = train on all 60,000 like the seed)")
    sp.add_argument("--early-stopping", type=int, default=0, metavar="PATIENCE",
                    help="stop after PATIENCE epochs without a better validation loss, keep the best weights")
    sp.add_argument("--precision", default=d.precision, help="auto | fp32 | bf16 (default %(default)s)")
    sp.add_argument("--threads", type=int, default=0, help="CPU threads (default: one per core)")
    sp.add_argument("--compile", action="store_true",
                    help="torch.compile the model (off: on a 2-core CPU it compiled for 23 s and ran 2× slower)")
    sp.add_argument("--name", default=None, help="run name (default: MODEL-DATE-TIME)")
    sp.add_argument("--no-report", action="store_true", help="skip writing RUN/report.html at the end")
    sp.add_argument("--resume", default=None, metavar="RUN",
                    help="continue a stopped or killed run from its latest checkpoint, with its own settings")
    sp.add_argument("--checkpoint-every", type=int, default=0, metavar="STEPS",
                    help="also write a checkpoint every STEPS optimizer steps (default: after each epoch)")
    sp.add_argument("--progress", choices=["auto", "bar", "lines", "json"], default="auto",
                    help="a bar (terminal), a line per epoch (pipe), or JSON lines for programs (default auto)")
    sp.add_argument("--tensorboard", action="store_true",
                    help="also write TensorBoard event files to RUN/tensorboard (scalars, histograms, images)")
    sp.add_argument("--deterministic", action="store_true",
                    help="bit-for-bit repeatable on the CPU: the same seed gives the same weights (a little slower)")
    run_args(sp)

    sp = verb("summary", cmd_summary, "the Keras-style layer table with parameter arithmetic")
    sp.add_argument("model", nargs="?", default="seed", help=f"preset ({presets}) or spec (default seed)")
    sp.add_argument("--image-size", default="28", metavar="S|HxW", help="input size: 64, or 48x64 as "
                    "height×width (default 28)")
    sp.add_argument("--channels", type=_positive_int, default=1, help="input channels (default 1)")
    sp.add_argument("--classes", type=_positive_int, default=10, help="number of classes (default 10)")
    sp.add_argument("--json", action="store_true", help="print JSON")

    sp = verb("evaluate", cmd_evaluate, "test metrics, confusion matrix, most-confused pairs of a run")
    sp.add_argument("run", help="run name or directory")
    sp.add_argument("--data-dir", default=None, help="folder with the dataset files")
    sp.add_argument("--dataset", default=None, help="evaluate on another dataset's test split (default: the run's), "
                    "e.g. csv:FOLDER or idx:FOLDER")
    sp.add_argument("--tta", action="store_true", help="average each image with its mirror image")
    sp.add_argument("--json", action="store_true", help="print JSON")
    sp.add_argument("--out-dir", default=None, help="where the figures go (default RUN/figures)")
    sp.add_argument("--no-figures", action="store_true", help="text only")
    run_args(sp)

    sp = verb("predict", cmd_predict, "top classes for your own image files")
    sp.add_argument("run", help="run name or directory")
    sp.add_argument("images", nargs="+", help="PNG, JPEG, BMP, GIF or WebP files")
    sp.add_argument("--top", type=_positive_int, default=3, help="how many classes (default 3)")
    sp.add_argument("--invert", choices=["auto", "yes", "no"], default="auto",
                    help="invert to a light object on black (default: auto, from the border)")
    run_args(sp)

    sp = verb("convolve", cmd_convolve, "the convolution lab: a kernel on an image as sum(pixel × kernel), then max pooling")
    sp.add_argument("image", nargs="?", help="your image (default: a Fashion-MNIST test image)")
    sp.add_argument("--sample", type=int, default=0, help="test image index when no IMAGE is given (default 0)")
    sp.add_argument("--kernel", default="vertical",
                    help="vertical, horizontal, sobel_x, sobel_y, laplacian, sharpen, blur, gaussian, identity, "
                         "emboss, outline, or a matrix like '1,0,-1;2,0,-2;1,0,-1' (default vertical)")
    sp.add_argument("--stride", type=_positive_int, default=1)
    sp.add_argument("--padding", type=int, default=0)
    sp.add_argument("--pool", type=int, default=2, help="max pooling size after the convolution (0: none)")
    sp.add_argument("--pixel", default=None, help="output pixel ROW,COL to work out (default: strongest response)")
    sp.add_argument("--out", default="convolve.png", help="figure path (default %(default)s)")
    sp.add_argument("--data-dir", default=None)

    def look_args(sp, image=True):
        sp.add_argument("run", help="run name or directory")
        if image:
            sp.add_argument("--image", default=None, help="your image file (default: test image --index)")
            sp.add_argument("--index", type=int, default=0, help="test image index (default 0)")
        sp.add_argument("--data-dir", default=None)
        sp.add_argument("--runs-dir", default=d.runs_dir)
        sp.add_argument("--device", default="auto", help="auto | cpu | cuda (default %(default)s)")

    sp = verb("activations", cmd_activations, "every layer's feature maps; one filter across images and layers")
    look_args(sp)
    sp.add_argument("--filter", type=int, default=6, help="filter index for the comparison figure (default 6, "
                    "as the seed's imshow(pred[1][0,:,:,6]))")
    sp.add_argument("--images", default="0,7,26", help="test images for the comparison rows (default 0,7,26)")
    sp.add_argument("--out-dir", default=None, help="where the PNGs go (default RUN/figures)")

    sp = verb("filters", cmd_filters, "the learned kernels of a conv layer as images")
    look_args(sp, image=False)
    sp.add_argument("--layer", default=None, help="conv layer: 0-based index among conv layers or a name "
                    "like conv2d_2 (default the first)")
    sp.add_argument("--summary", choices=["per_input", "mean"], default="per_input",
                    help="deeper layers: one tile per input channel (first 8) or their mean")
    sp.add_argument("--out", default=None)

    sp = verb("explain", cmd_explain, "gradient saliency and Grad-CAM for one prediction")
    look_args(sp)
    sp.add_argument("image_pos", nargs="?", metavar="IMAGE", help="your image file (or use --index)")
    sp.add_argument("--cam", choices=["layercam", "gradcam"], default="layercam",
                    help="class activation map: LayerCAM (Grad-CAM weighted per position; default, it lands on "
                         "the object behind the seed's dense head) or plain Grad-CAM")
    sp.add_argument("--out", default=None)

    sp = verb("report", cmd_report, "one offline HTML page with everything about a run")
    look_args(sp, image=False)
    sp.add_argument("--out", default=None, help="HTML path (default RUN/report.html)")

    sp = verb("compare", cmd_compare, "runs side by side: metrics table and overlaid curves")
    sp.add_argument("runs", nargs="+", help="run names or directories")
    sp.add_argument("--runs-dir", default=d.runs_dir)
    sp.add_argument("--out", default="compare.png", help="curves figure (default %(default)s)")

    sp = verb("export", cmd_export, "a run's model as ONNX or TorchScript, with its preprocessing beside it")
    sp.add_argument("run", help="run name or directory")
    sp.add_argument("--format", choices=["onnx", "torchscript"], default="onnx", help="(default %(default)s)")
    sp.add_argument("--out", default=None, help="folder for the files (default RUN/export)")
    sp.add_argument("--no-check", action="store_true",
                    help="skip running the ONNX file in onnxruntime over the test set against PyTorch")
    sp.add_argument("--data-dir", default=None)
    sp.add_argument("--runs-dir", default=d.runs_dir)

    sp = verb("serve", cmd_serve, "the local web explorer: runs, training, evaluation and inspection in the browser")
    sp.add_argument("--runs-dir", default=d.runs_dir, help="where runs live (default %(default)s)")
    sp.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s: this machine only)")
    sp.add_argument("--port", type=_positive_int, default=8000, help="(default %(default)s)")
    sp.add_argument("--public", action="store_true", help="allow a --host other than this machine's loopback")
    sp.add_argument("--data-dir", default=None, help="folder with the dataset files")
    sp.add_argument("--device", default="auto", help="where models run and training jobs train: auto | cpu | cuda "
                    "(default %(default)s)")

    sp = verb("bench", cmd_bench, "time to the seed's 91.28 %%: convlens vs a plain PyTorch loop vs the seed's Keras code")
    sp.add_argument("--seeds", type=_positive_int, default=3, help="seeds per variant (default 3)")
    sp.add_argument("--only", default=None, help="comma-separated variants: convlens,pytorch,keras (default all)")
    sp.add_argument("--epochs", type=_positive_int, default=None, help="epochs of the convlens variant (default 3)")
    sp.add_argument("--keras-python", default=None, help="a Python with TensorFlow (default .venv-keras/bin/python)")
    sp.add_argument("--data-dir", default=None, help="folder with the dataset files")
    sp.add_argument("--out", default=None, help="JSON path (default benchmarks/results/bench-DATE.json)")

    sp = verb("data", cmd_data, "where each dataset file is; verify checksums; fetch; "
              "or what your own data holds, class by class")
    sp.add_argument("action", nargs="?", choices=["show", "verify", "fetch"], default="show")
    data_args(sp)
    sp.add_argument("--image-size", default=None, metavar="S|HxW", help="image folders: as for train")
    sp.add_argument("--channels", type=int, default=None, choices=(1, 3), help="image folders: as for train")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 0
        args.func(args)
        return 0
    except ConvlensError as e:
        if debug:
            traceback.print_exc()
        print(f"convlens: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("convlens: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:   # a bug: say so in one line, keep the traceback for --debug
        if debug:
            traceback.print_exc()
        print(f"convlens: error: internal error: {type(e).__name__}: {e} (rerun with --debug for details)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
