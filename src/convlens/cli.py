"""The command line: one thin function per verb over the Python API.

Errors are one line (`convlens: error: …`) with exit status 2; `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
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
    s = summarize(args.model, (args.channels, args.image_size, args.image_size), args.classes)
    _say(json.dumps(s.to_dict(), indent=2) if args.json else s.text())


def cmd_train(args) -> None:
    from .data import load_dataset
    from .summary import summarize
    from .train import TrainConfig, train

    config = TrainConfig(model=args.model, dataset=args.dataset, data_dir=args.data_dir, recipe=args.recipe,
                         epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         label_smoothing=args.label_smoothing, seed=args.seed, val_split=args.val_split,
                         early_stopping=args.early_stopping, device=args.device, precision=args.precision,
                         threads=args.threads, runs_dir=args.runs_dir, name=args.name)
    config.check()
    settings = config.settings()
    data = load_dataset(config.dataset, config.data_dir, val_split=settings.val_split, seed=config.seed)
    _say(summarize(config.model, data.input_shape, data.num_classes).text(), "")
    progress = _EpochProgress(config.epochs)

    def on_start(path, model, data):
        _say(f"Training {config.model!r} on {data.name}: {len(data.train_y):,} images "
             f"({len(data.val_y):,} held out for validation), recipe {settings.name}: batch {settings.batch_size}, "
             f"lr {settings.lr:g} {settings.schedule}, {config.epochs} epochs → {path}")

    try:
        run = train(config, data, on_start=on_start, on_epoch=progress.epoch, on_step=progress.step)
    finally:
        progress.close()
    res = run.results
    if res.get("interrupted"):
        _say(f"Interrupted: kept the weights after {res['epochs_run']} epoch(s).")
    if res.get("stopped_early"):
        _say(f"Early stopping: no better validation loss after epoch {res['best_epoch']}; "
             f"restored its weights.")
    _say("", f"Test: loss {res['test_loss']:.4f}, accuracy {res['test_accuracy']:.2%} "
             f"({res['epochs_run']} epochs, {res['train_time_s']:.1f} s of training)")
    if res.get("overfitting"):
        _say(f"Note: {res['overfitting']}")
    _say(f"Run: {run.path}")


class _EpochProgress:
    """A rich progress bar per epoch on a terminal; one plain line per epoch otherwise."""

    def __init__(self, epochs: int):
        self.epochs, self.bar, self.task = epochs, None, None
        self.tty = sys.stdout.isatty()
        if self.tty:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TextColumn("{task.fields[info]}"), transient=False)
            self.bar.start()

    def step(self, done: int, total: int) -> None:
        if not self.bar:
            return
        if self.task is None:
            self.task = self.bar.add_task(f"epoch {self._epoch + 1}/{self.epochs}", total=total, info="")
        if done % 20 == 0 or done == total:
            self.bar.update(self.task, completed=done)

    _epoch = 0

    def epoch(self, rec: dict) -> None:
        self._epoch = rec["epoch"]
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
    ev = evaluate_run(open_run(args.run, args.runs_dir), device=args.device, data_dir=args.data_dir)
    _say(json.dumps(ev.to_dict(), indent=2) if args.json else ev.text())


def cmd_predict(args) -> None:
    from .evaluate import predict
    from .runs import open_run
    from .train import pick_device
    run = open_run(args.run, args.runs_dir)
    model = run.load_model(pick_device(args.device))
    invert = {"auto": None, "yes": True, "no": False}[args.invert]
    for p in predict(model, run.classes, args.images, k=args.top, invert=invert):
        _say(f"{p.source}: " + ", ".join(f"{c} {prob:.1%}" for c, prob in p.top))


def cmd_data(args) -> None:
    from .data import dataset_info, fetch, locate, verify
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
    for loc in found:
        _say(f"  {info.files[loc.role].name:28} {loc.source:16} {loc.path or '(not found: `convlens data fetch` downloads it)'}")


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
        sp.add_argument("--dataset", default=d.dataset, help="dataset name (default %(default)s)")
        sp.add_argument("--data-dir", default=None, help="folder with the dataset files (default: $CONVLENS_DATA, "
                        "the cache, /usr/share/datasets, then download)")

    def run_args(sp):
        sp.add_argument("--runs-dir", default=d.runs_dir, help="where runs live (default %(default)s)")
        sp.add_argument("--device", default="auto", help="auto | cpu | cuda (default %(default)s)")

    presets = ", ".join(PRESETS)
    sp = verb("train", cmd_train, "train a model into a run directory")
    sp.add_argument("--model", default=d.model, help=f"preset ({presets}) or spec (default %(default)s)")
    data_args(sp)
    sp.add_argument("--recipe", default=d.recipe, choices=list(RECIPES), help="training recipe (default %(default)s)")
    sp.add_argument("--epochs", type=int, default=d.epochs, help="passes over the data (default %(default)s)")
    sp.add_argument("--batch-size", type=int, default=None, help="images per step (default: the recipe's)")
    sp.add_argument("--lr", type=_float, default=None, help="peak learning rate (default: the recipe's)")
    sp.add_argument("--label-smoothing", type=_float, default=None, help="(default: the recipe's)")
    sp.add_argument("--seed", type=int, default=d.seed, help="random seed (default %(default)s)")
    sp.add_argument("--val-split", type=_float, default=d.val_split,
                    help="share of training images held out for validation (default %(default)s; 0 = train on all)")
    sp.add_argument("--early-stopping", type=int, default=0, metavar="PATIENCE",
                    help="stop after PATIENCE epochs without a better validation loss, keep the best weights")
    sp.add_argument("--precision", default=d.precision, help="auto | fp32 | bf16 (default %(default)s)")
    sp.add_argument("--threads", type=int, default=0, help="CPU threads (default: one per core)")
    sp.add_argument("--name", default=None, help="run name (default: MODEL-DATE-TIME)")
    run_args(sp)

    sp = verb("summary", cmd_summary, "the Keras-style layer table with parameter arithmetic")
    sp.add_argument("model", nargs="?", default="seed", help=f"preset ({presets}) or spec (default seed)")
    sp.add_argument("--image-size", type=_positive_int, default=28, help="input height and width (default 28)")
    sp.add_argument("--channels", type=_positive_int, default=1, help="input channels (default 1)")
    sp.add_argument("--classes", type=_positive_int, default=10, help="number of classes (default 10)")
    sp.add_argument("--json", action="store_true", help="print JSON")

    sp = verb("evaluate", cmd_evaluate, "test metrics, confusion matrix, most-confused pairs of a run")
    sp.add_argument("run", help="run name or directory")
    sp.add_argument("--data-dir", default=None, help="folder with the dataset files")
    sp.add_argument("--json", action="store_true", help="print JSON")
    run_args(sp)

    sp = verb("predict", cmd_predict, "top classes for your own image files")
    sp.add_argument("run", help="run name or directory")
    sp.add_argument("images", nargs="+", help="PNG, JPEG, BMP, GIF or WebP files")
    sp.add_argument("--top", type=_positive_int, default=3, help="how many classes (default 3)")
    sp.add_argument("--invert", choices=["auto", "yes", "no"], default="auto",
                    help="invert to a light object on black (default: auto, from the border)")
    run_args(sp)

    sp = verb("data", cmd_data, "where each dataset file is; verify checksums; fetch")
    sp.add_argument("action", nargs="?", choices=["show", "verify", "fetch"], default="show")
    data_args(sp)
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
