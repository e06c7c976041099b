"""Training recipes and the training configuration: every setting of a run, declared once.

`TrainConfig` is the one description of a run's training. Each field carries its flag's help
text and type, so `convlens train`'s flags are generated from it (cli.py), the explorer's
training jobs turn it back into those flags (`to_argv`), and a run's config.json is read back
into it strictly (`from_json`). Values are checked once, when a config is made.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields, replace

from .dataref import DatasetRef, parse_image_size
from .engine import check_device_name
from .errors import ConvlensError, RunError
from .names import check_name
from .spec import parse_spec


OPTIMIZERS = ("adam", "adamw", "sgd")
FLIP_ORDERS = ("random", "alternate")


@dataclass(frozen=True)
class Recipe:
    """How a model is trained; `--recipe NAME` picks one, flags override single fields."""
    name: str
    batch_size: int          # images per optimizer step
    lr: float                # peak learning rate of the optimizer
    schedule: str            # "constant", or "onecycle": cosine warm-up from lr/25 to lr, cosine decay to ~0
    warmup: float            # fraction of all steps spent warming up (onecycle)
    label_smoothing: float   # share of the target mass spread over all classes
    init: str                # "torch" (Kaiming-uniform) or "glorot" (Keras's default, zero biases)
    eps: float               # Adam epsilon (Keras 1e-7, PyTorch 1e-8)
    val_split: float         # default share held out for validation (keras: 0, all 60,000 like the seed)
    normalize: bool = False  # train on (pixel - mean) / std, folded into the first layer afterwards
    # Augmentation of each training batch (augment.py), in this order; each image drawn by itself:
    crop: float = 0.0        # probability of a random crop: shifted by up to crop_pad pixels each way, the
    crop_pad: int = 2        # uncovered border black (zero padding: Fashion-MNIST's background is black)
    flip: float = 0.0        # probability of mirroring left-right (clothes are left-right symmetric); > 0 also
                             # reports flip test-time augmentation beside the plain test accuracy
    flip_order: str = "random"   # "random": a fresh coin for each image each epoch; "alternate": a coin in the
                                 # first epoch, then the other way each epoch after (augment.alternating)
    erase: float = 0.0       # probability of random erasing (Zhong et al. 2020): one rectangle of random pixels,
    erase_area: tuple[float, float] = (0.02, 0.4)   # its area a share of the image, uniform in this range,
    erase_ratio: tuple[float, float] = (0.3, 3.3)   # its height / width log-uniform in this range (the paper's)
    optimizer: str = "adam"  # adam | adamw | sgd (momentum 0.9, Nesterov)
    weight_decay: float = 0.0   # adamw: decoupled, × lr; sgd: L2; on conv and dense weights only (not on
                                # biases or batch norm); adam: none
    ema: float = 0.0         # decay of an exponential moving average of the weights (0: none); the average is
                             # what is validated, saved and tested (ema.py)
    resize_from: float = 1.0   # progressive resizing (resizing.py): the first epoch's training images at this
    resize_until: float = 0.7  # share of their side, growing to full size at this share of the epochs (1: off)
    select: float = 1.0        # selective training (selection.py): every epoch after the first trains on this share
    select_power: float = 1.0  # of the images (1: off), drawn by the rank of their last loss to this power


RECIPES = {
    # Least wall time to the seed's 91.28 % on the 2-core CPU (benchmarks/RESULTS.md): 3 epochs.
    "fast": Recipe("fast", batch_size=64, lr=4e-3, schedule="onecycle", warmup=0.15, label_smoothing=0.1,
                   init="glorot", eps=1e-8, val_split=0.1, normalize=True),
    # The same, also trained on mirror images; reports flip test-time augmentation beside the plain score.
    "flip": Recipe("flip", batch_size=64, lr=4e-3, schedule="onecycle", warmup=0.15, label_smoothing=0.1,
                   init="glorot", eps=1e-8, val_split=0.1, normalize=True, flip=0.5),
    # The top of the accuracy ladder (ladder.py): fast, plus random crops (±2 px) and flips, plus a moving
    # average of the weights. Chosen on the validation split only (benchmarks/LADDER_SWEEP.md): random erasing,
    # AdamW with weight decay and batch 128 did not pay at the budgets tried; they stay flags.
    "strong": Recipe("strong", batch_size=64, lr=4e-3, schedule="onecycle", warmup=0.15, label_smoothing=0.1,
                     init="glorot", eps=1e-8, val_split=0.1, normalize=True, crop=1.0, crop_pad=2, flip=0.5,
                     ema=0.999),
    # The seed notebook exactly: Adam(1e-3) constant, batch 32, every training image.
    "keras": Recipe("keras", batch_size=32, lr=1e-3, schedule="constant", warmup=0.0,
                    label_smoothing=0.0, init="glorot", eps=1e-7, val_split=0.0),
}


def _setting(default, help: str, kind: type = str, optional: bool = False, **flag):
    """A TrainConfig field: its default, and what its `convlens train` flag says and takes.
    kind: bool (a switch), int, float or str; optional: None is allowed ("the recipe's")."""
    return field(default=default, metadata={"help": help, "kind": kind, "optional": optional, **flag})


@dataclass(frozen=True)
class TrainConfig:
    """Everything `convlens train` takes; saved in config.json so the run can be repeated."""
    model: str = _setting("seed", "preset ({presets}) or spec (default %(default)s)")
    dataset: str = _setting("fashion-mnist", "a registered dataset (default %(default)s), or your own: "
                            "folder:PATH (one sub-folder of images per class), idx:FOLDER (four IDX files) "
                            "or csv:PATH (Kaggle layout: label,pixel1,…)")
    data_dir: str | None = _setting(None, "folder with the dataset files (default: $CONVLENS_DATA, the cache, "
                                    "/usr/share/datasets, then download)", optional=True)
    image_size: str | None = _setting(None, "image folders: resize every image to this (64 or 48x64; default: "
                                      "the most common size in the folder)", optional=True, metavar="S|HxW")
    channels: int | None = _setting(None, "image folders: 1 grayscale or 3 RGB (default: 3 if any image has "
                                    "colour)", int, optional=True, choices=(1, 3))
    stream: bool = _setting(False, "image folders: decode from disk every epoch with worker processes, even when "
                            "the images would fit in memory (above 1 GiB they always do)", bool)
    recipe: str = _setting("fast", "training recipe (default %(default)s)", choices=tuple(RECIPES))
    epochs: int = _setting(5, "passes over the data (default %(default)s)", int)
    batch_size: int | None = _setting(None, "images per step (default: the recipe's)", int, optional=True)
    lr: float | None = _setting(None, "peak learning rate (default: the recipe's)", float, optional=True)
    warmup: float | None = _setting(None, "share of the steps over which the onecycle schedule warms the learning "
                                    "rate up from lr/25 to lr (default: the recipe's, 0.15)", float, optional=True,
                                    metavar="SHARE")
    label_smoothing: float | None = _setting(None, "(default: the recipe's)", float, optional=True)
    optimizer: str | None = _setting(None, "adam | adamw | sgd (Nesterov, momentum 0.9) (default: the recipe's)",
                                     optional=True, choices=OPTIMIZERS)
    weight_decay: float | None = _setting(None, "on conv and dense weights: adamw's decoupled decay, sgd's L2 "
                                          "(default: the recipe's)", float, optional=True)
    ema: float | None = _setting(None, "decay of a moving average of the weights, which is what is validated, "
                                 "saved and tested, e.g. 0.999; 0: none (default: the recipe's)", float, optional=True)
    crop: float | None = _setting(None, "probability of a random crop of a training image, shifted up to "
                                  "--crop-pad pixels (default: the recipe's)", float, optional=True, metavar="P")
    crop_pad: int | None = _setting(None, "pixels a random crop may shift (default: the recipe's)", int,
                                    optional=True, metavar="PIXELS")
    flip: float | None = _setting(None, "probability of mirroring a training image left-right; > 0 also reports flip "
                                  "test-time augmentation (default: the recipe's)", float, optional=True, metavar="P")
    flip_order: str | None = _setting(None, "random: a fresh coin for each training image each epoch; alternate: a "
                                      "coin in the first epoch, then each image mirrored the other way each "
                                      "epoch after, so it is seen both ways every two epochs (default: the "
                                      "recipe's, random)", optional=True, choices=FLIP_ORDERS)
    erase: float | None = _setting(None, "probability of random erasing: a rectangle of 2-40 % of a training image "
                                   "replaced by random pixels (default: the recipe's)", float, optional=True,
                                   metavar="P")
    resize_from: float | None = _setting(None, "progressive resizing: train the first epoch on images shrunk to "
                                         "this share of their side, growing to full size by --resize-until of "
                                         "the epochs (1: off; default: the recipe's)", float, optional=True,
                                         metavar="SHARE")
    resize_until: float | None = _setting(None, "share of the epochs after which training images are full size; "
                                          "the last epoch always is (default: the recipe's, 0.7)", float,
                                          optional=True, metavar="SHARE")
    select: float | None = _setting(None, "selective training: every epoch after the first trains on this share "
                                    "of the images, drawn mostly from those with the highest loss when last seen; "
                                    "such an epoch costs about that share of a full one (1: off; default: the "
                                    "recipe's)",
                                    float, optional=True, metavar="SHARE")
    select_power: float | None = _setting(None, "how hard --select keeps to the hardest images: each is drawn with "
                                          "weight (rank of its loss / images) to this power; 0 draws uniformly "
                                          "(default: the recipe's, 1)", float, optional=True, metavar="P")
    seed: int = _setting(0, "random seed: weights, data order and validation split (default %(default)s)", int)
    val_split: float | None = _setting(None, "share of training images held out for validation (default: the "
                                       "recipe's, 0.1; keras: 0 = train on all 60,000 like the seed)", float,
                                       optional=True)
    limit: int = _setting(0, "train on the first N training images only, for quick trials (the validation and test "
                          "images stay as they are; default 0: all)", int, metavar="N")
    early_stopping: int = _setting(0, "stop after PATIENCE epochs without a better validation loss, keep the best "
                                   "weights (default 0: off)", int, metavar="PATIENCE")
    device: str = _setting("auto", "auto | cpu | cuda (default %(default)s)")
    precision: str = _setting("auto", "auto | fp32 | bf16 (default %(default)s)")
    threads: int = _setting(0, "CPU threads (default: one per core)", int)
    compile: bool = _setting(False, "torch.compile the model (off: on a 2-core CPU it compiled for 23 s and ran "
                             "2× slower; compile time counts as training time)", bool)
    checkpoint_every: int = _setting(0, "also write a checkpoint every STEPS optimizer steps (default: after each "
                                     "epoch)", int, metavar="STEPS")
    deterministic: bool = _setting(False, "bit-for-bit repeatable on the CPU: the same seed gives the same weights "
                                   "(a little slower)", bool)
    tensorboard: bool = _setting(False, "also write TensorBoard event files to RUN/tensorboard (scalars, "
                                 "histograms, images)", bool)
    probe: int = _setting(0, "test image whose feature maps and prediction are kept after every epoch, for the "
                          "explorer to show the filters forming (default %(default)s; -1: none)", int, metavar="INDEX")
    runs_dir: str = _setting("runs", "where runs live (default %(default)s)")
    name: str | None = _setting(None, "run name (default: MODEL-DATE-TIME)", optional=True)

    def __post_init__(self) -> None:
        for f in fields(self):
            _check_type(f, getattr(self, f.name))
        parse_spec(self.model)
        parse_image_size(self.image_size)
        object.__setattr__(self, "_ref", DatasetRef.parse(self.dataset))
        if self.recipe not in RECIPES:
            raise ConvlensError(f"unknown recipe {self.recipe!r}; known: {', '.join(RECIPES)}")
        object.__setattr__(self, "_settings", _apply(RECIPES[self.recipe], self))
        self._check_values()

    def _check_values(self) -> None:
        """Reject impossible values before anything is loaded or written."""
        if self.channels not in (None, 1, 3):
            raise ConvlensError(f"--channels must be 1 or 3, got {self.channels}")
        if self.epochs < 1:
            raise ConvlensError(f"--epochs must be at least 1, got {self.epochs}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConvlensError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.lr is not None and not (0 < self.lr < 10):
            raise ConvlensError(f"--lr must be in (0, 10), got {self.lr}")
        if self.warmup is not None and not 0 < self.warmup < 1:
            raise ConvlensError(f"--warmup is a share of the steps in (0, 1), got {self.warmup}")
        if self.warmup is not None and self.settings.schedule != "onecycle":
            raise ConvlensError(f"--warmup shapes the onecycle schedule; recipe {self.recipe} trains at a constant "
                                f"learning rate")
        if self.label_smoothing is not None and not 0 <= self.label_smoothing < 1:
            raise ConvlensError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.val_split is not None and not 0 <= self.val_split < 1:
            raise ConvlensError(f"--val-split must be in [0, 1), got {self.val_split}")
        self._check_augmentation()
        if self.weight_decay is not None and not 0 <= self.weight_decay < 1:
            raise ConvlensError(f"--weight-decay must be in [0, 1), got {self.weight_decay}")
        if self.ema is not None and not 0 <= self.ema < 1:
            raise ConvlensError(f"--ema is a decay in [0, 1) (0: off), got {self.ema}")
        if self.resize_from is not None and not 0.25 <= self.resize_from <= 1:
            raise ConvlensError(f"--resize-from is a share of the image's side in [0.25, 1] (1: off), "
                                f"got {self.resize_from}")
        if self.resize_until is not None and not 0 < self.resize_until <= 1:
            raise ConvlensError(f"--resize-until is a share of the epochs in (0, 1], got {self.resize_until}")
        if self.select is not None and not 0 < self.select <= 1:
            raise ConvlensError(f"--select is a share of the training images in (0, 1] (1: off), got {self.select}")
        if self.select_power is not None and not 0 <= self.select_power <= 10:
            raise ConvlensError(f"--select-power is a power in [0, 10], got {self.select_power}")
        if self.optimizer is not None and self.optimizer not in OPTIMIZERS:
            raise ConvlensError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.limit < 0:
            raise ConvlensError(f"--limit must be 0 (all images) or a number of images, got {self.limit}")
        if self.early_stopping < 0:
            raise ConvlensError(f"--early-stopping must be 0 (off) or a patience ≥ 1, got {self.early_stopping}")
        if self.early_stopping and self.settings.val_split == 0:
            raise ConvlensError("--early-stopping watches the validation loss: it needs --val-split > 0")
        check_device_name(self.device)
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConvlensError(f"--precision must be auto, fp32 or bf16, got {self.precision!r}")
        if self.checkpoint_every < 0:
            raise ConvlensError(f"--checkpoint-every must be ≥ 0 (0: after each epoch only), "
                                f"got {self.checkpoint_every}")
        if not 0 <= self.threads <= MAX_THREADS:
            raise ConvlensError(f"--threads must be 0 (one per core) to {MAX_THREADS}, got {self.threads}")
        if not 0 <= self.seed <= MAX_SEED:
            raise ConvlensError(f"--seed must be 0 to {MAX_SEED:,} (NumPy's seed range), got {self.seed}")
        if self.probe < -1:
            raise ConvlensError(f"--probe must be a test image's index, or -1 for none; got {self.probe}")
        if self.name is not None:
            check_name(self.name)

    def _check_augmentation(self) -> None:
        """The augmentations' probabilities, the crop's reach and the flips' order."""
        for name in ("crop", "flip", "erase"):
            if getattr(self, name) is not None and not 0 <= getattr(self, name) <= 1:
                raise ConvlensError(f"--{name} is a probability in [0, 1], got {getattr(self, name)}")
        if self.flip_order is not None and self.flip_order not in FLIP_ORDERS:
            raise ConvlensError(f"--flip-order must be one of {', '.join(FLIP_ORDERS)}, got {self.flip_order!r}")
        if self.settings.flip_order == "alternate" and not self.settings.flip:
            raise ConvlensError("--flip-order alternate orders the flips: it needs --flip > 0")
        if self.crop_pad is not None and not 0 <= self.crop_pad <= MAX_CROP_PAD:
            raise ConvlensError(f"--crop-pad must be 0 to {MAX_CROP_PAD} pixels, got {self.crop_pad}")

    @property
    def settings(self) -> Recipe:
        """The recipe with this config's overrides applied."""
        return self._settings

    @property
    def dataset_ref(self) -> DatasetRef:
        return self._ref

    # -- the ways in and out: command line, config.json ----------------------------------
    @classmethod
    def from_args(cls, args) -> "TrainConfig":
        """From an argparse namespace whose config flags default to SUPPRESS: given flags, else defaults."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})

    @classmethod
    def from_json(cls, obj: dict, source: str = "config.json") -> "TrainConfig":
        """A run's config.json, strictly: an unknown key is an error that names it (keys an older
        convlens did not write take their defaults)."""
        unknown = sorted(set(obj) - {f.name for f in fields(cls)} - set(RECORDED))
        if unknown:
            raise RunError(f"{source}: unknown setting{'s' if len(unknown) > 1 else ''} "
                           f"{', '.join(map(repr, unknown[:5]))}; known: {', '.join(f.name for f in fields(cls))}")
        try:
            return cls(**{f.name: obj[f.name] for f in fields(cls) if f.name in obj})
        except ConvlensError as e:
            raise RunError(f"{source}: {e}") from None

    def to_json(self) -> dict:
        return asdict(self)

    def to_argv(self) -> list[str]:
        """The `convlens train` flags that give this config (settings left at their defaults are left out)."""
        argv = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value == f.default:
                continue
            flag = "--" + f.name.replace("_", "-")
            text = repr(value) if isinstance(value, float) else str(value)
            argv += [flag] if f.metadata["kind"] is bool else [flag, text]
        return argv

    @classmethod
    def given(cls, args) -> list[str]:
        """The config fields a namespace from from_args's parser has values for (flags on the command line)."""
        return [f.name for f in fields(cls) if hasattr(args, f.name)]


MAX_SEED = 2**32 - 1     # numpy.random.seed takes no more
MAX_CROP_PAD = 16        # pixels: a 28×28 image shifted further is mostly border
MAX_THREADS = 256        # torch.set_num_threads(100000) crashes the process; no CPU here has 256 cores

# Keys config.json holds beside the settings: what the run resolved and recorded.
RECORDED = ("spec", "settings", "resolved", "versions", "command", "created", "imported")
# What `--resume` may change: where the data, the compute and the runs are now.
WHERE_NOW = ("data_dir", "device", "runs_dir")


def _check_type(f, value) -> None:
    kind, optional = f.metadata["kind"], f.metadata["optional"]
    if value is None and optional:
        return
    ok = (isinstance(value, bool) if kind is bool else
          isinstance(value, (int, float)) and not isinstance(value, bool) if kind is float else
          isinstance(value, kind) and not isinstance(value, bool))
    if not ok:
        expected = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}[kind]
        raise ConvlensError(f"--{f.name.replace('_', '-')} must be {expected}, got {value!r}")


def _apply(r: Recipe, c: TrainConfig) -> Recipe:
    """The recipe with the config's overrides: every optional setting that is given replaces the recipe's."""
    given = {name: getattr(c, name) for name in OVERRIDES if getattr(c, name) is not None}
    return replace(r, **given, batch_size=c.batch_size or r.batch_size, lr=c.lr or r.lr)


# Settings a config may give to replace its recipe's (batch_size and lr: also when given as 0, as before).
OVERRIDES = ("warmup", "label_smoothing", "val_split", "optimizer", "weight_decay", "ema", "crop", "crop_pad",
             "flip", "flip_order", "erase", "resize_from", "resize_until", "select", "select_power")


DEFAULTS = {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}
