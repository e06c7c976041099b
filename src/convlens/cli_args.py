"""The command line's arguments, verb by verb; cli.py runs them.

`convlens train`'s flags are generated from TrainConfig's fields (config.py): help, type,
choices and defaults are written there once, and their defaults are SUPPRESSed here so that
a namespace holds exactly the flags given (TrainConfig.from_args; --resume refuses settings).
"""

from __future__ import annotations

import argparse
from dataclasses import fields

from .attribution import CAM_METHODS, METHODS
from .baselines import BASELINES, DEFAULT_BASELINE
from .config import TrainConfig
from .convolution import KERNEL_DESCRIPTIONS
from .errors import ConvlensError
from .features import Ascent
from .spec import PRESETS
from .views import INVERT


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line like every other error."""

    def error(self, message: str):
        raise ConvlensError(f"{message} (see `{self.prog} --help`)")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def add_config_flags(sp: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, from the field's own help, type and choices. Defaults are
    SUPPRESSed, so the namespace holds exactly the flags given (TrainConfig.from_args, --resume)."""
    types = {int: int, float: number, str: str}
    for f in fields(TrainConfig):
        m, flag = f.metadata, "--" + f.name.replace("_", "-")
        help_text = (m["help"].replace("{presets}", ", ".join(PRESETS)).replace("%(default)s", str(f.default))
                     .replace("%", "%%"))
        if m["kind"] is bool:
            sp.add_argument(flag, action="store_true", default=argparse.SUPPRESS, help=help_text)
        else:
            sp.add_argument(flag, type=types[m["kind"]], default=argparse.SUPPRESS, help=help_text,
                            **{k: m[k] for k in ("choices", "metavar") if k in m})


def data_args(sp, dataset_default: str | None = "fashion-mnist") -> None:
    sp.add_argument("--dataset", default=dataset_default, help=TrainConfig.__dataclass_fields__["dataset"]
                    .metadata["help"].replace("%(default)s", str(dataset_default)))
    sp.add_argument("--data-dir", default=None, help="folder with the dataset files (default: $CONVLENS_DATA, "
                    "the cache, /usr/share/datasets, then download)")


def run_args(sp, image: bool = False, data: bool = True) -> None:
    sp.add_argument("run", help="run name or directory")
    if image:
        sp.add_argument("--image", default=None, help="your image file (default: test image --index)")
        sp.add_argument("--index", type=int, default=0, help="test image index (default 0)")
    if data:
        sp.add_argument("--data-dir", default=None, help="folder with the dataset files")
    sp.add_argument("--runs-dir", default="runs", help="where runs live (default %(default)s)")
    sp.add_argument("--device", default="auto", help="auto | cpu | cuda (default %(default)s)")


def add_train(sp) -> None:
    add_config_flags(sp)
    sp.add_argument("--no-report", action="store_true", help="skip writing RUN/report.html at the end")
    sp.add_argument("--resume", default=None, metavar="RUN",
                    help="continue a stopped or killed run from its latest checkpoint, with its own settings")
    sp.add_argument("--progress", choices=["auto", "bar", "lines", "json"], default="auto",
                    help="a bar (terminal), a line per epoch (pipe), or JSON lines for programs (default auto)")


def add_summary(sp) -> None:
    sp.add_argument("model", nargs="?", default="seed", help=f"preset ({', '.join(PRESETS)}), spec, or a run "
                    "(its model, as trained or imported) (default seed)")
    sp.add_argument("--runs-dir", default="runs", help="where runs live (default %(default)s)")
    sp.add_argument("--image-size", default="28", metavar="S|HxW", help="input size: 64, or 48x64 as "
                    "height×width (default 28)")
    sp.add_argument("--channels", type=positive_int, default=1, help="input channels (default 1)")
    sp.add_argument("--classes", type=positive_int, default=10, help="number of classes (default 10)")
    sp.add_argument("--json", action="store_true", help="print JSON")


def add_data(sp) -> None:
    sp.add_argument("action", nargs="?", choices=["show", "verify", "fetch"], default="show")
    data_args(sp)
    sp.add_argument("--image-size", default=None, metavar="S|HxW", help="image folders: as for train")
    sp.add_argument("--channels", type=int, default=None, choices=(1, 3), help="image folders: as for train")


def add_evaluate(sp) -> None:
    run_args(sp)
    sp.add_argument("--dataset", default=None, help="evaluate on another dataset's test split (default: the run's), "
                    "e.g. csv:FOLDER or idx:FOLDER")
    sp.add_argument("--tta", action="store_true", help="average each image with its mirror image")
    sp.add_argument("--precision", choices=("run", "auto", "fp32", "bf16"), default="run",
                    help="run: the precision the run's recorded test figures used (results.json's "
                         "test_precision), so the numbers agree; auto: bf16 where the CPU or GPU computes it "
                         "natively (a few test images may flip); fp32: every logit as PyTorch or Keras "
                         "computes it in float32")
    sp.add_argument("--json", action="store_true", help="print JSON")
    sp.add_argument("--out-dir", default=None, help="where the figures go (default RUN/figures)")
    sp.add_argument("--no-figures", action="store_true", help="text only")


def add_predict(sp) -> None:
    run_args(sp, data=False)
    sp.add_argument("images", nargs="+", help="PNG, JPEG, BMP, GIF or WebP files")
    sp.add_argument("--top", type=positive_int, default=3, help="how many classes (default 3)")
    sp.add_argument("--invert", choices=list(INVERT), default="auto",
                    help="invert to a light object on black (default: auto, from the border)")


def add_activations(sp) -> None:
    run_args(sp, image=True)
    sp.add_argument("--filter", type=int, default=6, help="filter index for the comparison figure (default 6, "
                    "as the seed's imshow(pred[1][0,:,:,6]))")
    sp.add_argument("--images", default="0,7,26", help="test images for the comparison rows (default 0,7,26)")
    sp.add_argument("--out-dir", default=None, help="where the PNGs go (default RUN/figures)")


def add_filters(sp) -> None:
    run_args(sp, data=False)
    sp.add_argument("--layer", default=None, help="conv layer: 0-based index among conv layers or a name "
                    "like conv2d_2 (default the first)")
    sp.add_argument("--summary", choices=["per_input", "mean"], default="per_input",
                    help="deeper layers: one tile per input channel (first 8) or their mean")
    sp.add_argument("--out", default=None)


def add_explain(sp) -> None:
    run_args(sp, image=True)
    sp.add_argument("image_pos", nargs="?", metavar="IMAGE", help="your image file (or use --index)")
    sp.add_argument("--cam", choices=CAM_METHODS, default="layercam",
                    help="class activation map: LayerCAM (Grad-CAM weighted per position; default, it lands on "
                         "the object behind the seed's dense head) or plain Grad-CAM")
    sp.add_argument("--methods", default=None, metavar="all|NAME,…",
                    help=f"also draw these maps side by side (OUT-methods.png): all, or some of {', '.join(METHODS)}; "
                         "--check and --deletion use them (default all)")
    sp.add_argument("--baseline", choices=list(BASELINES), default=DEFAULT_BASELINE,
                    help="what a missing pixel is for Integrated Gradients and Occlusion (default mean: a black "
                         "baseline gives black pixels zero attribution by construction, and Fashion-MNIST's "
                         "backgrounds are black)")
    sp.add_argument("--check", action="store_true",
                    help="the sanity check (OUT-check.png): redraw each map as the layers are randomised from the "
                         "top, with the Spearman rank correlation to the original and a verdict")
    sp.add_argument("--deletion", action="store_true",
                    help="deletion curves (OUT-deletion.png): remove the pixels each map ranks highest and follow "
                         "the class's probability against a random order; a faithfulness score per map")
    sp.add_argument("--seed", type=int, default=0, help="random draws of the check and of SmoothGrad (default 0)")
    sp.add_argument("--out", default=None, help="figure path (default RUN/figures/explain.png; the others beside it)")


def add_features(sp) -> None:
    run_args(sp)
    sp.add_argument("--layer", default=None, help="conv layer: 0-based index among conv layers or a name like "
                    "conv2d_1 (default every conv layer)")
    sp.add_argument("--steps", type=positive_int, default=Ascent.steps,
                    help=f"optimisation steps per input (default {Ascent.steps})")
    sp.add_argument("--seed", type=int, default=0, help="the optimised inputs' random start and transformations "
                    "(default 0)")
    sp.add_argument("--list", action="store_true", help="one line per filter: its best test images and activations")
    sp.add_argument("--no-class-view", action="store_true", help="skip the inputs optimised for each class")
    sp.add_argument("--out-dir", default=None, help="where the PNGs go (default RUN/figures)")


def add_report(sp) -> None:
    run_args(sp)
    sp.add_argument("--out", default=None, help="HTML path (default RUN/report.html)")


def add_compare(sp) -> None:
    sp.add_argument("runs", nargs="+", help="run names or directories")
    sp.add_argument("--runs-dir", default="runs")
    sp.add_argument("--out", default="compare.png", help="curves figure (default %(default)s)")


def add_export(sp) -> None:
    run_args(sp)
    sp.add_argument("--format", choices=["onnx", "torchscript"], default="onnx", help="(default %(default)s)")
    sp.add_argument("--out", default=None, help="folder for the files (default RUN/export)")
    sp.add_argument("--force", action="store_true", help="replace the files of an earlier export in --out")
    sp.add_argument("--no-check", action="store_true",
                    help="skip running the ONNX file in onnxruntime over the test set against PyTorch")


def add_convolve(sp) -> None:
    sp.add_argument("image", nargs="?", help="your image (default: a Fashion-MNIST test image)")
    sp.add_argument("--sample", type=int, default=0, help="test image index when no IMAGE is given (default 0)")
    sp.add_argument("--kernel", default="vertical",
                    help=f"{', '.join(KERNEL_DESCRIPTIONS)}, or a matrix like '1,0,-1;2,0,-2;1,0,-1' (default vertical)")
    sp.add_argument("--stride", type=positive_int, default=1)
    sp.add_argument("--padding", type=int, default=0)
    sp.add_argument("--pool", type=int, default=2, help="max pooling size after the convolution (0: none)")
    sp.add_argument("--pixel", default=None, help="output pixel ROW,COL to work out (default: strongest response)")
    sp.add_argument("--out", default="convolve.png", help="figure path (default %(default)s)")
    sp.add_argument("--data-dir", default=None)


def add_serve(sp) -> None:
    def port(text: str) -> int:
        value = positive_int(text)
        if value > 65535:
            raise argparse.ArgumentTypeError(f"a TCP port is 1 to 65535, got {value}")
        return value
    sp.add_argument("--runs-dir", default="runs", help="where runs live (default %(default)s)")
    sp.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s: this machine only)")
    sp.add_argument("--port", type=port, default=8000, help="1 to 65535 (default %(default)s)")
    sp.add_argument("--public", action="store_true", help="allow a --host other than this machine's loopback")
    sp.add_argument("--data-dir", default=None, help="folder with the dataset files")
    sp.add_argument("--device", default="auto", help="where models run and training jobs train: auto | cpu | cuda "
                    "(default %(default)s)")


def add_bench(sp) -> None:
    sp.add_argument("--seeds", type=positive_int, default=3, help="seeds per variant (default 3)")
    sp.add_argument("--only", default=None, help="comma-separated variants: convlens,pytorch,keras (default all)")
    sp.add_argument("--epochs", type=positive_int, default=None, help="epochs of the convlens variant (default 3)")
    sp.add_argument("--keras-python", default=None, help="a Python with TensorFlow (default .venv-keras/bin/python)")
    sp.add_argument("--data-dir", default=None, help="folder with the dataset files")
    sp.add_argument("--out", default=None, help="JSON path (default benchmarks/results/bench-DATE.json)")


def add_ladder(sp, rungs: list[str]) -> None:
    sp.add_argument("--seeds", type=positive_int, default=3, help="runs per rung, seeds 0, 1, … (default 3)")
    sp.add_argument("--epochs-scale", type=number, default=1.0, metavar="F",
                    help="every rung's epochs × F, at least 1 (default 1; 0.2: a quick look)")
    sp.add_argument("--only", default=None, metavar="RUNG,…",
                    help=f"these rungs only, of {', '.join(rungs)} (default all)")
    sp.add_argument("--runs-dir", default="runs", help="where the rungs' runs live (default %(default)s)")
    sp.add_argument("--data-dir", default=None, help="folder with the dataset files")
    sp.add_argument("--threads", type=int, default=0, help="CPU threads (default: one per core)")
    sp.add_argument("--device", default="auto", help="auto | cpu | cuda (default %(default)s)")
    sp.add_argument("--limit", type=int, default=0, metavar="N",
                    help="quick trials only: train every rung on the first N training images (default 0: all)")
    sp.add_argument("--out-dir", default=None, help="where ladder.json, ladder.md and ladder.png go "
                    "(default RUNS_DIR/ladder)")


def add_import(sp) -> None:
    sp.add_argument("source", help="a Keras model: MODEL.keras, MODEL.h5, or MODEL.weights.h5 with --model")
    sp.add_argument("--model", default=None, help="for a .weights.h5: the convlens spec or preset of its layers")
    sp.add_argument("--name", default=None, help="run name (default: FILE-keras-DATE-TIME)")
    data_args(sp)
    sp.add_argument("--keras-input", choices=("0-1", "0-255"), default="0-1",
                    help="what the Keras model was fed when it has no Rescaling layer: pixels / 255 (0-1, as the "
                         "seed notebook; default) or raw pixels (0-255)")
    sp.add_argument("--runs-dir", default="runs", help="where runs live (default %(default)s)")
