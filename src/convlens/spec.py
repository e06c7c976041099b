"""Model specs: a one-line grammar and the preset registry.

A spec reads like the seed's layer list, tokens joined by '-':

    conv64-pool-conv64-pool-flatten-dense128-dense10      (the seed, preset `seed`)

    conv<C>[k<K>][s<S>][p<P>|same][nb][_<act>]
                            2-D convolution: C filters of K×K (default 3), stride S (default 1),
                            zero padding P (default 0) or `same` (the output is ⌈input / S⌉, padded
                            as Keras and TensorFlow pad: the odd pixel at the bottom and right),
                            `nb`: no bias; act default relu
    pool[<N>][s<S>][same] / avgpool[<N>][s<S>][same]
                            N×N max / average pooling (default 2), stride S (default N), `same`
                            as for conv (an average counts only the image's pixels, as Keras)
    res<C>[s<S>]            a residual block (He et al. 2016's basic block), one layer:
                            conv3×3 (stride S, default 1) → bn → relu → conv3×3 → bn, plus the skip,
                            then relu; both convs pad 1 (the output is ⌈input / S⌉, as `same`) and have
                            no bias; the skip is the input itself, or a 1×1 conv with stride S and bn
                            where the width or the stride changes. e.g. res64, res128s2 (residual.py)
    gap                     global average pooling (one value per channel)
    bn[e<eps>]              batch normalisation; eps default 1e-5 (PyTorch's; Keras's is 0.001)
    dropout<P>              dropout with rate P in [0, 1), e.g. dropout0.25
    relu, tanh, sigmoid, gelu, elu
                            an activation on its own (Keras's Activation layer)
    flatten                 (C, H, W) -> C·H·W
    dense<N>[nb][_<act>]    fully connected, N units; act default relu, except the last layer,
                            whose N must equal the number of classes and which gives logits
                            (softmax is applied to them, as Keras's `activation="softmax"` does)

activations: relu, tanh, sigmoid, gelu, elu, leaky, linear. Sizes are bounded (MAX_*), far above
any small CNN, so that a typo or a hostile model.json is one clear error instead of gigabytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import SpecError

ACTIVATION_NAMES = ("relu", "tanh", "sigmoid", "gelu", "elu", "leaky", "linear")
# Non-decreasing activations commute with max pooling: max(f(x)) = f(max(x)), so the
# engine pools first and activates 4× fewer values (gelu dips below zero: not monotonic).
MONOTONIC = {"relu", "tanh", "sigmoid", "elu", "leaky", "linear"}
STANDALONE = ("relu", "tanh", "sigmoid", "gelu", "elu")     # activations that may stand as a layer

MAX_SPEC_CHARS = 4000     # a 100-layer spec is ~1,000 characters
MAX_LAYERS = 200
MAX_WIDTH = 65_536        # filters of a conv layer, units of a dense one
MAX_WINDOW = 64           # kernel, stride, padding and pool sizes

PRESETS: dict[str, tuple[str, str]] = {}   # name -> (spec, one-line description)


def register_preset(name: str, spec: str, description: str) -> None:
    """Add a named model to the registry (`convlens summary NAME`, `--model NAME`)."""
    PRESETS[name] = (spec, description)


register_preset("seed", "conv64-pool-conv64-pool-flatten-dense128-dense10",
                "the study note's CNN: two 3×3 conv layers of 64 filters, 2×2 max pooling, dense 128")
register_preset("dense", "flatten-dense128-dense10",
                "the fully connected baseline the seed builds on: flatten, dense 128, dense 10")
register_preset("seed-bn", "conv64-pool-bn-conv64-pool-bn-flatten-dense128-dense10",
                "the seed with batch normalisation after each conv layer's pooling (512 more parameters)")
register_preset("resnet-cpu", "conv32same-bn-res32-res64s2-res64-res128s2-res128-gap-dense10",
                "a small ResNet for a CPU: a 3×3 stem, five residual blocks (32 filters at 28×28, 64 at 14×14, "
                "128 at 7×7), global average pooling")
register_preset("resnet-mini", "conv16same-bn-res16-res32s2-res32-res64s2-res64-gap-dense10",
                "resnet-cpu at half its widths (16, 32, 64 filters; a quarter of its multiply-adds): with "
                "--recipe strong --select 0.5, the most accurate in 5× a default run's time")
register_preset("resnet-gpu", "conv64same-bn-res64-res64-res128s2-res128-res256s2-res256-gap-dense10",
                "a ResNet-18-like network for a GPU: six residual blocks of 64, 128 and 256 filters at 28×28, "
                "14×14 and 7×7")


@dataclass(frozen=True)
class LayerSpec:
    kind: str              # conv, res, maxpool, avgpool, gap, bn, dropout, act, flatten, dense
    token: str             # the text it came from
    index: int             # 1-based position of the token in the spec
    units: int = 0         # conv and res filters / dense units / pool size
    kernel: int = 0
    stride: int = 1        # conv, res and pools (a pool's default: its size)
    padding: int = 0       # conv: zeros on every side
    same: bool = False     # conv and pools: Keras's padding="same"
    bias: bool = True      # conv and dense
    rate: float = 0.0      # dropout
    eps: float = 1e-5      # batch normalisation
    act: str | None = None


_ACT = r"(?:_(?P<act>[a-z]+))?"
_PATTERNS = [
    ("conv", re.compile(r"conv(?P<units>\d+)(?:k(?P<kernel>\d+))?(?:s(?P<stride>\d+))?"
                        r"(?:p(?P<padding>\d+)|(?P<same>same))?(?P<nb>nb)?" + _ACT)),
    ("res", re.compile(r"res(?P<units>\d+)(?:s(?P<stride>\d+))?")),
    ("maxpool", re.compile(r"(?:max)?pool(?P<units>\d+)?(?:s(?P<stride>\d+))?(?P<same>same)?")),
    ("avgpool", re.compile(r"avgpool(?P<units>\d+)?(?:s(?P<stride>\d+))?(?P<same>same)?")),
    ("gap", re.compile(r"gap")),
    ("bn", re.compile(r"bn(?:e(?P<eps>\d*\.?\d+(?:e-?\d+)?))?")),
    ("dropout", re.compile(r"dropout(?P<rate>0?\.\d+|0)")),
    ("act", re.compile(r"(?P<act>" + "|".join(STANDALONE) + ")")),
    ("flatten", re.compile(r"flatten")),
    ("dense", re.compile(r"dense(?P<units>\d+)(?P<nb>nb)?" + _ACT)),
]
_HINTS = {"conv": "conv needs a filter count, e.g. conv64 or conv32k5",
          "res": "res needs a filter count, e.g. res64 or res128s2", "dense": "dense needs a width, e.g. dense128",
          "dropout": "dropout needs a rate in [0, 1), e.g. dropout0.25"}


def resolve(model: str, num_classes: int | None = None) -> str:
    """A preset name becomes its spec, its output layer sized to `num_classes` when given (a preset
    fits any dataset); anything else is taken as a spec, exactly as written."""
    if model not in PRESETS:
        return model
    spec = PRESETS[model][0]
    return re.sub(r"dense\d+$", f"dense{num_classes}", spec) if num_classes else spec


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def fail(spec: str, index: int, token: str, why: str) -> SpecError:
    """The SpecError for token `index` of `spec`, pointing at it."""
    error = SpecError(f"model spec {_short(spec)!r}, token {index} {_short(token, 40)!r}: {why}")
    error.token_index = index
    return error


def parse_spec(spec: str, whole: bool = True) -> list[LayerSpec]:
    """Parse a spec string (or preset name) into layers; SpecError names the bad token. whole=False: the
    start of a spec still being typed (it need not end with the output layer yet)."""
    if not isinstance(spec, str) or not spec.strip():
        raise SpecError("empty model spec; try 'seed' or 'conv64-pool-flatten-dense10'")
    if len(spec) > MAX_SPEC_CHARS:
        raise SpecError(f"model spec of {len(spec):,} characters; convlens reads specs of at most {MAX_SPEC_CHARS:,}")
    text = resolve(spec.strip())
    tokens = text.split("-")
    if len(tokens) > MAX_LAYERS:
        raise SpecError(f"model spec of {len(tokens):,} layers; convlens builds at most {MAX_LAYERS}")
    layers = [_parse_token(text, i, token) for i, token in enumerate(tokens, start=1)]
    last = layers[-1]
    if whole and last.kind != "dense":
        raise fail(text, last.index, last.token,
                   "a model must end with a dense layer giving one output per class, e.g. dense10")
    # Default activations: relu everywhere except the output layer (logits).
    return [l if l.act is not None else _with_act(l, "linear" if l is last else "relu")
            for l in layers]


def _match(text: str, i: int, token: str) -> tuple[str, dict]:
    tok = token.strip().lower()
    for kind, pattern in _PATTERNS:
        if m := pattern.fullmatch(tok):
            return kind, {k: v for k, v in m.groupdict().items() if v is not None}
    stem = re.match(r"[a-z]*", tok).group()
    if stem in _HINTS:
        raise fail(text, i, token, _HINTS[stem])
    known = "conv<C>, res<C>, pool, avgpool, gap, bn, dropout<P>, relu, flatten, dense<N>"
    raise fail(text, i, token, f"unknown layer (known: {known}; or a preset: {', '.join(PRESETS)})")


def _parse_token(text: str, i: int, token: str) -> LayerSpec:
    """Token i of the spec as a layer, its sizes within bounds; SpecError naming the token."""
    kind, g = _match(text, i, token)
    act = g.get("act")
    if act is not None and act not in ACTIVATION_NAMES:
        raise fail(text, i, token, f"unknown activation {act!r} (known: {', '.join(ACTIVATION_NAMES)})")
    pool = "pool" in kind
    units = int(g.get("units", 2 if pool else 0))
    layer = LayerSpec(kind=kind, token=token, index=i, units=units, kernel=int(g.get("kernel", 3)) if kind in
                      ("conv", "res") else 0, stride=int(g.get("stride", units if pool else 1)),
                      padding=int(g.get("padding", 1 if kind == "res" else 0)), same="same" in g,
                      bias="nb" not in g and kind != "res", rate=float(g.get("rate", 0.0)),
                      eps=float(g.get("eps", 1e-5)), act=act)
    if kind in ("conv", "res", "dense", "maxpool", "avgpool") and layer.units < 1:
        raise fail(text, i, token, "size must be at least 1")
    if kind in ("conv", "res", "maxpool", "avgpool") and (layer.kernel < 1 and kind == "conv" or layer.stride < 1):
        raise fail(text, i, token, "kernel and stride must be at least 1")
    if kind in ("conv", "res", "dense") and layer.units > MAX_WIDTH:
        what = "units" if kind == "dense" else "filters"
        raise fail(text, i, token, f"{layer.units:,} {what}; at most {MAX_WIDTH:,}")
    if max(layer.kernel, layer.stride, layer.padding, units if pool else 0) > MAX_WINDOW:
        raise fail(text, i, token, f"kernel, stride, padding and pool sizes go up to {MAX_WINDOW}")
    if kind == "bn" and not 0 < layer.eps < 1:
        raise fail(text, i, token, f"a batch-norm epsilon is between 0 and 1, got {layer.eps:g}")
    return layer


def _with_act(layer: LayerSpec, act: str) -> LayerSpec:
    if layer.kind not in ("conv", "res", "dense"):
        return layer
    return LayerSpec(**{**layer.__dict__, "act": act})
