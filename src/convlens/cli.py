"""The command line: one thin function per verb over the Python API and views.py.

Errors are one line (`convlens: error: …`) with exit status 2; `--debug` shows the traceback.
`convlens train`'s flags are generated from TrainConfig's fields (config.py): help, type,
choices and defaults are written there once.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from functools import partial
from pathlib import Path

from . import cli_args, explanations, feature_views, views
from .attribution import methods_for
from .config import WHERE_NOW, TrainConfig
from .convolution import KERNEL_DESCRIPTIONS, convolution_lab, lab_image
from .dataref import DatasetRef, parse_image_size
from .datasets import load_dataset, mean_pixel, model_data
from .engine import pick_device, set_threads, unit_pixels
from .errors import ConvlensError
from .evaluate import predict
from .features import Ascent
from .files import read_json, write_atomic, write_json
from .ladder import RUNGS, chosen_rungs, climb, machine, table_text, write_ladder
from .models import conv_layers
from .progress import TrainingProgress, progress_text, say
from .registry import dataset_info
from .runs import is_run, open_run
from .sources import fetch, locate, verify
from .summary import summarize
from .train import resume, train
from .versions import convlens_version


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data)
    return path


# ---------------------------------------------------------------------------
# train, summary, data: the model and its data


def _resume_run(name: str, given: dict, progress: TrainingProgress):
    """--resume RUN: of the settings, only where things are now (--data-dir, --device, --runs-dir) may be given."""
    settings = [k for k in given if k not in WHERE_NOW]
    if settings:
        raise ConvlensError(f"--resume continues with the run's own settings; drop --{settings[0].replace('_', '-')}")
    device = given.get("device", "auto")
    return resume(name, given.get("runs_dir", "runs"), data_dir=given.get("data_dir"),
                  device=None if device == "auto" else device, on_start=progress.begin, on_epoch=progress.epoch,
                  on_step=progress.step)


def cmd_train(args) -> None:
    progress = TrainingProgress(args.progress, resumed=bool(args.resume))
    try:
        run = (_resume_run(args.resume, {k: getattr(args, k) for k in TrainConfig.given(args)}, progress)
               if args.resume else train(TrainConfig.from_args(args), on_start=progress.begin,
                                         on_epoch=progress.epoch, on_step=progress.step))
    except KeyboardInterrupt:
        raise _interrupted(progress.path, progress.done) or KeyboardInterrupt from None
    finally:
        progress.close()
    if run is None:              # a rank other than 0 of a torchrun launch: rank 0 reports
        return
    progress.finish(run)
    if not args.no_report:
        from .report import write_run_report
        try:
            say(f"Report: {write_run_report(run, data=progress.data)}")
        except KeyboardInterrupt:
            raise _interrupted(run.path, progress.done) from None
    say(f"Run: {run.path}")


def _interrupted(path, epochs_done: int) -> ConvlensError | None:
    """What a Ctrl-C that reached the command line leaves behind, and how to go on (None: nothing)."""
    if path is None:
        return None
    if (path / "results.json").exists():
        res = read_json(path / "results.json")
        if not res.get("interrupted"):
            return ConvlensError(f"interrupted after training: the weights and results are in {path}; "
                                 f"`convlens report {path}` writes its report")
        return ConvlensError(f"interrupted {progress_text(res)}: kept the weights and results; "
                             f"`convlens train --resume {path}` continues from there")
    if any(path.glob("checkpoint*.safetensors")):
        where = f"after epoch {epochs_done}" if epochs_done else "before the first epoch finished"
        return ConvlensError(f"interrupted {where}; `convlens train --resume {path}` continues from the checkpoint")
    return None


def cmd_summary(args) -> None:
    if is_run(args.model, args.runs_dir):
        run = open_run(args.model, args.runs_dir)
        s = views.summary_of(run)
        return say(json.dumps(s.to_dict(), indent=2) if args.json else "\n".join(views.run_summary(run)))
    h, w = parse_image_size(args.image_size)
    s = summarize(args.model, (args.channels, h, w), args.classes)
    say(json.dumps(s.to_dict(), indent=2) if args.json else s.text())


def cmd_import(args) -> None:
    from .kerasimport import import_keras
    run = import_keras(args.source, args.model, args.dataset, args.data_dir, args.runs_dir, args.name,
                       args.keras_input)
    res, imported = run.results, run.record["imported"]
    say(*views.run_summary(run), "",
        f"Imported {args.source} → {run.path}",
        f"Test on {run.model_info.dataset}: loss {res['test_loss']:.4f}, accuracy {res['test_accuracy']:.2%} "
        f"(SHA-256 of the file {imported['sha256'][:16]}…)")


def cmd_data(args) -> None:
    ref = DatasetRef.parse(args.dataset)
    if ref.kind != "registered":
        if args.action != "show":
            raise ConvlensError(f"data {args.action}: your own data has no recorded checksums to "
                                f"{'verify' if args.action == 'verify' else 'fetch by'}; `convlens data` shows it")
        data = load_dataset(ref, val_split=0.0, image_size=parse_image_size(args.image_size), channels=args.channels)
        return say(*views.data_table(data, args.dataset))
    if args.image_size or args.channels:
        raise ConvlensError("--image-size and --channels apply to image folders (--dataset folder:PATH)")
    info = dataset_info(ref.where)
    if args.action == "verify":
        rows = verify(info, args.data_dir)
        say(*views.verified_files(info, rows))
        if not all(ok for _, ok, _ in rows):
            raise ConvlensError(f"{info.name}: {sum(not ok for _, ok, _ in rows)} file(s) failed verification")
        return
    found = fetch(info, args.data_dir) if args.action == "fetch" else locate(info, args.data_dir)
    say(*views.dataset_files(info, found))


# ---------------------------------------------------------------------------
# evaluate, predict, activations, filters, explain, report, compare, export: a run


def _looked(run, image: str | None, index: int, data) -> views.Looked:
    """The image a run-based verb looks at: the user's file (prepared like predict) or test image --index;
    data: the run's Dataset, or a function that loads it (not called for a user's file)."""
    if image:
        return views.user_image(run, image)
    return views.test_image(data() if callable(data) else data, index)


def cmd_evaluate(args) -> None:
    run = open_run(args.run, args.runs_dir)
    if args.dataset:        # the same model on other files: a CSV export of its test set, a new batch, …
        data = model_data(args.dataset, run.input_shape, args.data_dir, all_test=True)   # handed over: all test
        if data.input_shape != run.input_shape or data.num_classes > len(run.classes):
            raise ConvlensError(f"{args.dataset}: {data.num_classes} classes of {data.input_shape} images; run "
                                f"{run.name} takes {run.input_shape} and knows {len(run.classes)}")
    else:
        data = views.data_of(run, args.data_dir)
    ev = views.evaluate_run(run, data, device=args.device, precision=args.precision, tta=args.tta)
    if args.json:
        return say(json.dumps(ev.to_dict(), indent=2))
    say(ev.text())
    if not args.no_figures:
        out = Path(args.out_dir or run.path / "figures")
        pngs = views.evaluation_figures(ev, data.test_x, views.model_of(run, args.device))   # mistakes with reasons
        written = [_write(out / name, png) for name, png in pngs.items()]
        say("", "Figures: " + ", ".join(str(p) for p in written))


def cmd_predict(args) -> None:
    run = open_run(args.run, args.runs_dir)
    model = views.model_of(run, args.device)
    for p in predict(model, run.classes, args.images, k=args.top, invert=views.INVERT[args.invert],
                     rule=run.image_rule):
        say(f"{p.source}: " + ", ".join(f"{c} {prob:.1%}" for c, prob in p.top))


def cmd_activations(args) -> None:
    run = open_run(args.run, args.runs_dir)
    model, data = views.model_of(run, args.device), views.data_of(run, args.data_dir)
    looked = _looked(run, args.image, args.index, data)
    try:
        indices = [int(i) for i in args.images.split(",")]
    except ValueError:
        raise ConvlensError(f"--images expects test image indices like 0,7,26, got {args.images!r}") from None
    columns, grid_png = views.filter_figure(model, data, indices, args.filter)   # checks --filter before writing
    out_dir = Path(args.out_dir or run.path / "figures")
    say(f"{looked.label}: every layer's output")
    for i, (layer, png) in enumerate(views.layer_figures(model, looked.image, looked.label)):
        where = f"  → {_write(out_dir / f'activations-{i + 1:02d}-{layer.name}.png', png)}" if png else ""
        say(f"  {layer.name:22} {layer.type:20} {layer.shape}{where}")
    path = _write(out_dir / f"filter-{args.filter}.png", grid_png)
    say(f"Filter {args.filter} on test images {', '.join(map(str, indices))} across {', '.join(columns)} → {path}")


def cmd_filters(args) -> None:
    run = open_run(args.run, args.runs_dir)
    ks, caption, png = views.kernel_figure(views.model_of(run, args.device), args.layer, args.summary)
    say(f"{caption} → {_write(Path(args.out or run.path / 'figures' / f'kernels-{ks.layer}.png'), png)}")


def cmd_explain(args) -> None:
    run = open_run(args.run, args.runs_dir)
    model = views.model_of(run, args.device)
    data = _once(lambda: views.data_of(run, args.data_dir))
    looked = _looked(run, args.image_pos or args.image, args.index, data)
    ex = views.explain(model, looked.image, run.classes, args.cam)
    out = Path(args.out or run.path / "figures" / "explain.png")
    lines = ex.text(looked.label, run.classes)
    say(*lines[:-1], f"{lines[-1]} → {_write(out, ex.png(looked, run.classes))}")
    if args.methods or args.check or args.deletion:
        _explain_further(run, model, looked, data, args.methods or "all", args.baseline, args.check, args.deletion,
                         args.seed, out)


def _once(load):
    """load() the first time it is called, the same value after."""
    kept = []
    return lambda: kept[0] if kept else kept.append(load()) or kept[0]


def _explain_further(run, model, looked, data, methods: str, baseline: str, check: bool, deletion: bool,
                     seed: int, out: Path) -> None:
    """explain --methods/--check/--deletion: every map side by side, the sanity check, the deletion curves."""
    chosen, classes = methods_for(model, methods), run.classes
    needs_mean = baseline == "mean" and {"ig", "occlusion"} & set(chosen)
    mean = mean_pixel(data()) if needs_mean else None
    side = lambda name: out.with_name(f"{out.stem}-{name}.png")
    maps = explanations.method_maps(model, looked, classes, chosen, baseline, mean)
    say("", *maps.text(looked, classes)[1:], f"  → {_write(side('methods'), maps.png(looked, classes))}")
    if check:
        view = explanations.sanity_check(model, looked, classes, chosen, baseline, mean, seed, maps.target)
        say("", *view.text(classes), f"  → {_write(side('check'), view.png(looked.image))}")
    if deletion:
        view = explanations.deletion(model, looked, classes, maps)
        say("", *view.text(), f"  → {_write(side('deletion'), view.png(classes))}")


def cmd_features(args) -> None:
    run = open_run(args.run, args.runs_dir)
    model, data = views.model_of(run, args.device), views.data_of(run, args.data_dir)
    set_threads()
    out_dir, ascent = Path(args.out_dir or run.path / "figures"), Ascent(steps=args.steps, seed=args.seed)
    layers = [args.layer] if args.layer is not None else [info.name for _, info in conv_layers(model, blocks=True)]
    if not layers:
        say(f"{run.name}: the model {model.spec!r} has no conv layer, so no filters to show")
    for layer in layers:
        lf = feature_views.layer_features(model, data, layer, ascent)
        lines = lf.text(len(data.test_y))
        say(f"{lines[0]} → {_write(out_dir / f'features-{lf.layer}.png', lf.png())}", *lines[1:])
        if args.list:
            say(*lf.filter_lines(run.classes, data.test_y))
    if not args.no_class_view:
        captions, png = feature_views.class_view(model, run.classes)
        say("Class views (an input optimised for each class; its probability): "
            + ", ".join(c.replace("\np = ", " ") for c in captions) + f" → {_write(out_dir / 'class-views.png', png)}")


def cmd_report(args) -> None:
    from .report import write_run_report
    run = open_run(args.run, args.runs_dir)
    path = write_run_report(run, Path(args.out) if args.out else None, data_dir=args.data_dir,
                            device=pick_device(args.device))
    say(f"Report: {path}")


def cmd_compare(args) -> None:
    from .compare import comparison_text
    runs = [open_run(r, args.runs_dir) for r in args.runs]
    say(comparison_text(runs), "", f"Curves: {_write(Path(args.out), views.curves_figure(runs))}")


def cmd_export(args) -> None:
    from .export import check_onnx, export_run
    run = open_run(args.run, args.runs_dir)
    path = export_run(run, args.format, args.out, replace=args.force)
    say(f"{run.name} → {path} ({path.stat().st_size / 1e6:.2f} MB), "
        f"preprocessing in {path.parent / 'preprocessing.json'}")
    if args.format == "onnx" and not args.no_check:
        say("onnxruntime vs PyTorch: " + check_onnx(run, path, views.data_of(run, args.data_dir).test_x).text())


# ---------------------------------------------------------------------------
# convolve, serve, bench


def _pixel(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        row, col = (int(v) for v in text.split(","))
    except ValueError:
        raise ConvlensError(f"--pixel expects ROW,COL (e.g. 10,12), got {text!r}") from None
    return row, col


def cmd_convolve(args) -> None:
    if args.image:
        image, label = unit_pixels(lab_image(args.image)), Path(args.image).name
    else:
        image, label = views.lab_sample(load_dataset("fashion-mnist", args.data_dir, val_split=0.0), args.sample)
    lab = convolution_lab(image, args.kernel, args.stride, args.padding, args.pool, _pixel(args.pixel))
    out = _write(Path(args.out), views.lab_figure(lab))
    about = KERNEL_DESCRIPTIONS.get(lab.kernel_name, "")
    say(f"{label}: kernel {lab.kernel_name}{' (' + about + ')' if about else ''}, stride {lab.stride}, "
        f"padding {lab.padding}" + (f", {lab.pool}×{lab.pool} max pool" if lab.pool else ""),
        f"shapes: {lab.shapes}",
        f"reference sum(pixel × kernel) vs torch conv2d: max difference {lab.torch_max_diff:.2e}", "",
        lab.pixel.text(), "", f"Figure: {out}")


def cmd_serve(args) -> None:
    from .server import serve
    pick_device(args.device)          # a GPU that is not there: say so before announcing the address
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        if not args.public:
            raise ConvlensError(f"--host {args.host} would let other machines use this server (it runs models "
                                "and starts training); add --public if that is what you want")
        print(f"convlens: warning: serving on {args.host}:{args.port}: anyone who can reach this address can "
              "browse your runs, upload images and start training", file=sys.stderr, flush=True)
    runs = Path(args.runs_dir)
    if runs.exists() and not runs.is_dir():
        raise ConvlensError(f"--runs-dir {runs} is a file, not a folder of runs")
    try:
        runs.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConvlensError(f"--runs-dir {runs}: cannot create it: {e.strerror or e}") from None
    say(f"convlens explorer: http://{'localhost' if args.host in ('127.0.0.1', '::1') else args.host}:{args.port}/"
        f"  (runs in {runs.resolve()}; Ctrl-C stops)")
    serve(args.runs_dir, args.host, args.port, args.data_dir, args.device)


def cmd_bench(args) -> None:
    from .bench import VARIANTS, run_bench, table
    variants = args.only.split(",") if args.only else list(VARIANTS)
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise ConvlensError(f"--only: unknown variant {bad[0]!r}; known: {', '.join(VARIANTS)}")
    out = Path(args.out or f"benchmarks/results/bench-{time.strftime('%Y%m%d-%H%M%S')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    result = run_bench(variants, args.seeds, {"convlens": args.epochs} if args.epochs else {}, args.data_dir,
                       args.keras_python, log=lambda m: print(m, file=sys.stderr, flush=True),
                       on_result=lambda r: write_json(out, r))
    write_json(out, result)
    say(table(result), "", f"JSON: {out}")


def cmd_ladder(args) -> None:
    rungs = chosen_rungs(args.only)

    def epoch_line(rec: dict) -> None:
        val = f"  val_acc {rec['val_accuracy']:.4f}" if "val_accuracy" in rec else ""
        say(f"  epoch {rec['epoch']}  loss {rec['loss']:.4f} acc {rec['accuracy']:.4f}{val}  {rec['time_s']:.1f}s")
    rows = climb(rungs, args.seeds, args.epochs_scale, log=say, on_epoch=epoch_line, runs_dir=args.runs_dir,
                 data_dir=args.data_dir, threads=args.threads, device=args.device, limit=args.limit)
    paths = write_ladder(rows, Path(args.out_dir or Path(args.runs_dir) / "ladder"), args.runs_dir,
                         machine(args.threads))
    say("", table_text(rows), "", "Written: " + ", ".join(map(str, paths)))


# ---------------------------------------------------------------------------

VERBS = [  # name, what it does, its arguments, the function
    ("train", "train a model into a run directory", cli_args.add_train, cmd_train),
    ("summary", "the Keras-style layer table with parameter arithmetic", cli_args.add_summary, cmd_summary),
    ("evaluate", "test metrics, confusion matrix, most-confused pairs of a run", cli_args.add_evaluate, cmd_evaluate),
    ("predict", "top classes for your own image files", cli_args.add_predict, cmd_predict),
    ("convolve", "the convolution lab: a kernel on an image as sum(pixel × kernel), then max pooling",
     cli_args.add_convolve, cmd_convolve),
    ("activations", "every layer's feature maps; one filter across images and layers", cli_args.add_activations,
     cmd_activations),
    ("filters", "the learned kernels of a conv layer as images", cli_args.add_filters, cmd_filters),
    ("explain", "why one prediction: saliency, Grad-CAM / LayerCAM, Integrated Gradients, SmoothGrad, Occlusion; "
                "--check: can these maps be trusted; --deletion: do they show what the model uses",
     cli_args.add_explain, cmd_explain),
    ("features", "what each filter looks for: its top 9 test crops and an input optimised to excite it; the class "
                 "views", cli_args.add_features, cmd_features),
    ("report", "one offline HTML page with everything about a run", cli_args.add_report, cmd_report),
    ("compare", "runs side by side: metrics table and overlaid curves", cli_args.add_compare, cmd_compare),
    ("export", "a run's model as ONNX or TorchScript, with its preprocessing beside it", cli_args.add_export,
     cmd_export),
    ("serve", "the local web explorer: runs, training, evaluation and inspection in the browser", cli_args.add_serve,
     cmd_serve),
    ("ladder", "the accuracy ladder: rungs from the seed network upwards, each adding one thing (batch norm, "
               "augmentation, a residual network, a moving average, test-time augmentation, a longer schedule), "
               "every seed, one table",
     partial(cli_args.add_ladder, rungs=[r.name for r in RUNGS]), cmd_ladder),
    ("bench", "time to the seed's 91.28 %%: convlens vs a plain PyTorch loop vs the seed's Keras code",
     cli_args.add_bench, cmd_bench),
    ("data", "where each dataset file is; verify checksums; fetch; or what your own data holds, class by class",
     cli_args.add_data, cmd_data),
    ("import", "a trained Keras model (.keras, .h5) as a convlens run that every verb takes", cli_args.add_import,
     cmd_import),
]


def build_parser() -> argparse.ArgumentParser:
    p = cli_args.Parser(prog="convlens", description="Train, explain and serve small convolutional image classifiers.")
    p.add_argument("--version", action="version", version=f"convlens {convlens_version()}")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="verb", metavar="VERB", parser_class=cli_args.Parser)
    for name, help_text, add_arguments, func in VERBS:
        sp = sub.add_parser(name, help=help_text, description=help_text)
        sp.set_defaults(func=func)
        sp.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
        add_arguments(sp)
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
        hint = "" if debug else " (rerun with --debug for details)"
        print(f"convlens: error: internal error: {type(e).__name__}: {e}{hint}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
