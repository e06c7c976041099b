"""`convlens import`: a Keras model (kerasfile.py reads it) becomes a normal convlens run.

Each Keras layer becomes a spec token (Conv2D(64, 3, activation="relu") is conv64, MaxPooling2D(2)
is pool, …), so the imported model is a ConvNet like any other and every verb takes it. Its weights
are converted, not reinterpreted:
- conv kernels (H, W, in, out) become (out, in, H, W); dense kernels are transposed;
- the first Dense after a Flatten has its rows put in convlens's order: Keras flattens height,
  width, channel, convlens channel, height, width (so does a 1-D BatchNormalization between them);
- BatchNormalization keeps its moving mean, variance and epsilon;
- a final softmax is dropped, so the model gives logits (their softmax is Keras's output);
- a Rescaling layer (or, without one, what the model was fed: pixels / 255 like the seed notebook,
  or raw 0–255 pixels) is folded into the first layer with weights, since convlens feeds pixels / 255.
Anything outside the supported layers is refused with one line naming the layer and its class.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from .config import TrainConfig
from .datasets import load_dataset, model_data
from .engine import loss_and_accuracy, predict_logits
from .errors import DataError
from .files import write_atomic, write_json
from .kerasfile import KerasFile, KerasLayer, read_keras, weights_only_layers
from .models import ConvNet, build_model
from .runs import PREPROCESSING, ModelInfo, Run, RunLock, new_run_dir, open_run, save_weights
from .versions import versions

SUPPORTED = ("InputLayer, Conv2D, MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D, Flatten, Dense, "
             "Dropout, BatchNormalization, Activation, ReLU, Rescaling")
KERAS_ACTS = {"relu": "relu", "tanh": "tanh", "sigmoid": "sigmoid", "gelu": "gelu", "elu": "elu",
              "linear": "linear", None: "linear"}


class Unsupported(DataError):
    """A layer or setting convlens cannot import."""


def _refuse(layer: KerasLayer, why: str = "") -> Unsupported:
    return Unsupported(f"layer {layer.name!r} ({layer.class_name}){': ' + why if why else ''} cannot be imported; "
                       f"convlens imports {SUPPORTED} (channels last; relu, tanh, sigmoid, linear, softmax)")


def _activation(layer: KerasLayer, last: bool) -> str:
    act = layer.config.get("activation")
    if isinstance(act, dict):                     # a serialised function: {"class_name": "function", "config": "relu"}
        act = act.get("config")
    if act == "softmax" and last:
        return "softmax"
    if act not in KERAS_ACTS:
        raise _refuse(layer, f"activation {act!r}")
    return KERAS_ACTS[act]


def _square(layer: KerasLayer, key: str, default=None) -> int:
    v = layer.config.get(key, default)
    v = [v, v] if isinstance(v, int) else v
    if not (isinstance(v, (list, tuple)) and len(v) == 2 and v[0] == v[1] and isinstance(v[0], int) and v[0] >= 1):
        raise _refuse(layer, f"{key} {v!r} (only square sizes)")
    return v[0]


def _check_common(layer: KerasLayer) -> None:
    c = layer.config
    if c.get("data_format") not in (None, "channels_last"):
        raise _refuse(layer, f"data_format {c['data_format']!r}")
    if c.get("dilation_rate", 1) not in (1, [1, 1], (1, 1)) or c.get("groups", 1) != 1:
        raise _refuse(layer, "dilation or groups")
    if c.get("padding", "valid") not in ("valid", "same"):
        raise _refuse(layer, f"padding {c['padding']!r}")


def _conv_token(layer: KerasLayer, last: bool) -> str:
    _check_common(layer)
    c, k, s = layer.config, _square(layer, "kernel_size"), _square(layer, "strides", 1)
    act = _activation(layer, False)
    return (f"conv{int(c['filters'])}" + (f"k{k}" if k != 3 else "") + (f"s{s}" if s != 1 else "")
            + ("same" if c.get("padding") == "same" else "") + ("" if c.get("use_bias", True) else "nb")
            + ("" if act == "relu" else f"_{act}"))


def _pool_token(layer: KerasLayer, last: bool) -> str:
    _check_common(layer)
    n = _square(layer, "pool_size", 2)
    s = _square(layer, "strides", n) if layer.config.get("strides") is not None else n
    stem = "pool" if layer.class_name == "MaxPooling2D" else "avgpool"
    return stem + (str(n) if n != 2 or s != n else "") + (f"s{s}" if s != n else "") + \
        ("same" if layer.config.get("padding") == "same" else "")


def _dense_token(layer: KerasLayer, last: bool) -> str:
    act = _activation(layer, last)
    token = f"dense{int(layer.config['units'])}" + ("" if layer.config.get("use_bias", True) else "nb")
    default = "linear" if last else "relu"
    return token + ("" if act in (default, "softmax") else f"_{act}")


def _bn_token(layer: KerasLayer, last: bool) -> str:
    axis = layer.config.get("axis", -1)
    if axis not in (-1, 3, [-1], [3], [1]):
        raise _refuse(layer, f"axis {axis!r} (only the channels, the last axis)")
    return f"bne{float(layer.config.get('epsilon', 1e-3)):g}"


def _dropout_token(layer: KerasLayer, last: bool) -> str:
    rate = float(layer.config.get("rate", 0.0))
    return "dropout0" if rate == 0 else "dropout" + f"{rate:.6f}".rstrip("0")


def _activation_token(layer: KerasLayer, last: bool) -> str | None:
    if layer.class_name == "ReLU":
        if any(layer.config.get(k) not in (None, 0, 0.0) for k in ("max_value", "negative_slope", "threshold")):
            raise _refuse(layer, "a clipped or leaky ReLU")
        return "relu"
    act = _activation(layer, last)
    return None if act in ("linear", "softmax") else act


def _gap_token(layer: KerasLayer, last: bool) -> str:
    _check_common(layer)
    if layer.config.get("keepdims"):
        raise _refuse(layer, "keepdims")
    return "gap"


TOKENS = {"Conv2D": _conv_token, "MaxPooling2D": _pool_token, "AveragePooling2D": _pool_token,
          "MaxPool2D": _pool_token, "AvgPool2D": _pool_token, "Dense": _dense_token, "BatchNormalization": _bn_token,
          "Dropout": _dropout_token, "Activation": _activation_token, "ReLU": _activation_token,
          "GlobalAveragePooling2D": _gap_token, "Flatten": lambda layer, last: "flatten"}


# ---------------------------------------------------------------------------
# The plan: a convlens spec for the Keras layers, and where each layer's weights come from

@dataclass
class Plan:
    spec: str
    input_shape: tuple[int, int, int]             # (C, H, W)
    sources: list[tuple[int, list]]               # (convlens layer index, the Keras layer's weight datasets)
    keras_layers: dict[int, KerasLayer]           # convlens layer index -> the Keras layer it came from
    scale: float = 1.0                            # the model's input is pixels / 255 × scale + offset
    offset: float = 0.0
    softmax_dropped: bool = False
    rescaled: bool = False                        # by a Rescaling layer (not only by what the model was fed)


def _input_shape(layers: list[KerasLayer], path) -> tuple[int, int, int]:
    for layer in layers[:1] + [lyr for lyr in layers if lyr.class_name == "InputLayer"]:
        shape = (layer.config.get("batch_shape") or layer.config.get("batch_input_shape")
                 or ([None] + list(layer.config["input_shape"]) if layer.config.get("input_shape") else None))
        if shape:
            if len(shape) != 4 or not all(isinstance(v, int) and v >= 1 for v in shape[1:]) or shape[3] not in (1, 3):
                raise DataError(f"{path}: input shape {shape}: convlens imports images (height, width, 1 or 3 "
                                "channels), channels last")
            return shape[3], shape[1], shape[2]
    raise DataError(f"{path}: the model does not say its input shape (build it with an Input or input_shape)")


def _rescaling(layer: KerasLayer) -> tuple[float, float]:
    scale, offset = layer.config.get("scale", 1.0), layer.config.get("offset", 0.0)
    if not all(isinstance(v, (int, float)) for v in (scale, offset)):
        raise _refuse(layer, "a scale or offset per channel")
    return float(scale), float(offset)


def keras_plan(kf: KerasFile, keras_input: str = "0-1") -> Plan:
    """The spec of a Keras model's layers, where their weights are, and what its input is scaled by."""
    fed = {"0-1": 1.0, "0-255": 255.0}[keras_input]     # what the model was given: pixels / 255, or pixels
    plan = Plan("", (0, 0, 0), [], {}, scale=fed)
    tokens: list[str] = []
    for pos, layer in enumerate(kf.layers):
        last = pos == len(kf.layers) - 1
        if layer.class_name == "InputLayer":
            continue
        if layer.custom or layer.class_name not in TOKENS and layer.class_name != "Rescaling":
            raise _refuse(layer)
        if layer.class_name == "Rescaling":
            if plan.sources or tokens:
                raise _refuse(layer, "a Rescaling after other layers")
            scale, offset = _rescaling(layer)
            plan.scale, plan.offset, plan.rescaled = plan.scale * scale, offset, True
            continue
        token = TOKENS[layer.class_name](layer, last)
        plan.softmax_dropped |= last and _activation_of(layer) == "softmax"
        if token is None:
            continue
        if layer.class_name in ("Conv2D", "Dense", "BatchNormalization"):
            plan.sources.append((len(tokens), layer.weights))
        plan.keras_layers[len(tokens)] = layer
        tokens.append(token)
    plan.spec, plan.input_shape = "-".join(tokens), _input_shape(kf.layers, kf.path)   # layers first: they say more
    return plan


def _activation_of(layer: KerasLayer):
    act = layer.config.get("activation")
    return act.get("config") if isinstance(act, dict) else act


def weights_plan(kf: KerasFile, spec: str, input_shape: tuple[int, int, int], num_classes: int,
                 keras_input: str = "0-1") -> Plan:
    """A Keras 3 .weights.h5 matched to a convlens spec: its conv, dense and batch-norm layers in order."""
    model = build_model(spec, input_shape, num_classes)
    block = next((info for info in model.infos if info.spec.kind == "res"), None)
    if block is not None:        # Keras has no one layer for it: a Sequential model cannot hold a skip
        raise DataError(f"{kf.path}: {spec!r} has a residual block ({block.spec.token}); a Keras weights file of "
                        "a Sequential model has nothing to fill it with")
    wanted = [i for i, info in enumerate(model.infos) if info.spec.kind in ("conv", "dense", "bn")]
    found = weights_only_layers(kf.handle)
    kinds = {"conv": "conv2d", "dense": "dense", "bn": "batch_normalization"}
    queues = {k: [w for n, w in found if n.rpartition("_")[0] in (k, "") and n.startswith(k)] for k in kinds.values()}
    sources = []
    for i in wanted:
        queue = queues[kinds[model.infos[i].spec.kind]]
        if not queue:
            raise DataError(f"{kf.path}: the weights file has no {kinds[model.infos[i].spec.kind]} layer for "
                            f"{model.infos[i].name} of {model.spec!r}")
        sources.append((i, queue.pop(0)))
    left = sum(map(len, queues.values()))
    if left:
        raise DataError(f"{kf.path}: {left} layer(s) of weights are left over for {model.spec!r}")
    return Plan(model.spec, input_shape, sources, {}, scale={"0-1": 1.0, "0-255": 255.0}[keras_input])


# ---------------------------------------------------------------------------
# The weights, converted

def _read(ds, shape: tuple, where: str) -> np.ndarray:
    """A weight array, its shape checked against what the layers say before a byte of it is read."""
    if tuple(ds.shape) != tuple(shape):
        raise DataError(f"{where} is {tuple(ds.shape)}, the layers say {tuple(shape)}: "
                        "weights and config do not match")
    return np.asarray(ds[()], dtype=np.float32)


def _named(datasets: list, order: list[str], where: str) -> dict:
    """Weight datasets by role: a legacy .h5 names them (…/kernel:0), a Keras 3 file numbers them in `order`."""
    names = [ds.name.rsplit("/", 1)[-1].split(":")[0] for ds in datasets]
    if all(n.isdigit() for n in names):
        if len(datasets) != len(order):
            raise DataError(f"{where}: {len(datasets)} weight arrays, the layer has {len(order)} ({', '.join(order)})")
        return dict(zip(order, datasets))
    named = dict(zip(names, datasets))
    missing = [r for r in order if r not in named]
    if missing:
        raise DataError(f"{where}: no {missing[0]} among its weights ({', '.join(names) or 'none'})")
    return named


def _flattened_from(model: ConvNet, i: int) -> tuple[int, int, int] | None:
    """The (C, H, W) a Flatten before layer i flattened (through dropout, batch norm, activations), or None."""
    for info in reversed(model.infos[:i]):
        if info.spec.kind == "flatten":
            return info.in_shape if len(info.in_shape) == 3 else None
        if info.spec.kind not in ("dropout", "bn", "act"):
            return None
    return None


def _hwc_to_chw(v: np.ndarray, chw: tuple[int, int, int] | None) -> np.ndarray:
    """Rows in Keras's flatten order (height, width, channel) put in convlens's (channel, height, width)."""
    if chw is None:
        return v
    c, h, w = chw
    return v.reshape(h, w, c, *v.shape[1:]).transpose(2, 0, 1, *range(3, v.ndim + 2)).reshape(v.shape)


def _layer_state(model: ConvNet, i: int, datasets: list, layer: KerasLayer | None) -> dict[str, np.ndarray]:
    info, module, where = model.infos[i], model.layers[i], f"weights of {layer.name if layer else model.infos[i].name}"
    kind, has_bias = info.spec.kind, getattr(module, "bias", None) is not None
    if kind == "conv":
        cout, cin, k, _ = module.weight.shape
        named = _named(datasets, ["kernel"] + ["bias"] * has_bias, where)
        state = {"weight": _read(named["kernel"], (k, k, cin, cout), where).transpose(3, 2, 0, 1)}
    elif kind == "dense":
        out, nin = module.weight.shape
        named = _named(datasets, ["kernel"] + ["bias"] * has_bias, where)
        state = {"weight": _hwc_to_chw(_read(named["kernel"], (nin, out), where), _flattened_from(model, i)).T}
    else:
        return _bn_state(model, i, datasets, layer, where)
    if has_bias:
        state["bias"] = _read(named["bias"], (state["weight"].shape[0],), where)
    return state


def _bn_state(model: ConvNet, i: int, datasets: list, layer: KerasLayer | None, where: str) -> dict[str, np.ndarray]:
    c = model.layers[i].num_features
    cfg = layer.config if layer else {"scale": len(datasets) == 4, "center": len(datasets) == 4}
    order = ["gamma"] * cfg.get("scale", True) + ["beta"] * cfg.get("center", True) + ["moving_mean", "moving_variance"]
    named, chw = _named(datasets, order, where), _flattened_from(model, i) if len(model.infos[i].in_shape) == 1 else None
    v = {r: _hwc_to_chw(_read(named[r], (c,), where), chw) if r in named else None for r in order}
    return {"weight": v.get("gamma") if v.get("gamma") is not None else np.ones(c, np.float32),
            "bias": v.get("beta") if v.get("beta") is not None else np.zeros(c, np.float32),
            "running_mean": v["moving_mean"], "running_var": v["moving_variance"],
            "num_batches_tracked": np.zeros((), np.int64)}


def _fold_input_scale(model: ConvNet, plan: Plan, state: dict[str, np.ndarray]) -> None:
    """convlens feeds pixels / 255; the Keras model computed on pixels / 255 × scale + offset (a Rescaling
    layer, or raw pixels): fold that affine map into the first layer with weights, exactly."""
    a, b = plan.scale, plan.offset
    if (a, b) == (1.0, 0.0):
        return
    i = plan.sources[0][0]
    info, prefix = model.infos[i], f"layers.{i}."
    if a <= 0 or info.spec.kind not in ("conv", "dense") or (b and (any(info.pads) or prefix + "bias" not in state)):
        raise DataError(f"the input scaling (× {a:g} + {b:g}) cannot be folded exactly into {info.name} "
                        "(it needs a first conv without padding, or a dense layer, with a bias)")
    w = state[prefix + "weight"]
    if b:
        state[prefix + "bias"] = state[prefix + "bias"] + b * w.reshape(w.shape[0], -1).sum(axis=1)
    state[prefix + "weight"] = w * a


def load_keras_weights(model: ConvNet, plan: Plan) -> ConvNet:
    """Fill `model` with the plan's Keras weights, converted (every shape checked before it is read)."""
    state = {}
    for i, datasets in plan.sources:
        for key, value in _layer_state(model, i, datasets, plan.keras_layers.get(i)).items():
            state[f"layers.{i}.{key}"] = value
    _fold_input_scale(model, plan, state)
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}
    for k, v in tensors.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise DataError(f"weights {k}: NaN or infinite values")
    missing = set(model.state_dict()) - set(tensors)
    if missing:
        raise DataError(f"no weights for {', '.join(sorted(missing)[:3])}")
    model.load_state_dict(tensors)
    return model.eval()


# ---------------------------------------------------------------------------
# The run

def _plan_for(kf: KerasFile, spec: str | None, data, keras_input: str) -> Plan:
    if kf.format == "weights.h5":
        if spec is None:
            raise DataError(f"{kf.path}: a weights file holds no layers: give them with --model SPEC (e.g. seed)")
        return weights_plan(kf, spec, data.input_shape, data.num_classes, keras_input)
    if spec is not None:
        raise DataError(f"{kf.path} carries its own layers; --model is for a .weights.h5 file")
    return keras_plan(kf, keras_input)


def import_keras(source, spec: str | None = None, dataset: str = "fashion-mnist", data_dir: str | None = None,
                 runs_dir: str = "runs", name: str | None = None, keras_input: str = "0-1") -> Run:
    """A Keras model file as a convlens run: its spec, converted weights, the test result on `dataset`
    (whose images must be the model's input shape, and whose classes its outputs), where it came from."""
    config = TrainConfig(model="seed" if spec is None else spec, dataset=dataset, data_dir=data_dir,
                         runs_dir=runs_dir, name=name)
    if keras_input not in ("0-1", "0-255"):
        raise DataError(f"--keras-input must be 0-1 (pixels / 255, as the seed notebook) or 0-255, "
                        f"got {keras_input!r}")
    kf = read_keras(source)
    try:
        data = load_dataset(dataset, data_dir, val_split=0.0) if kf.format == "weights.h5" else None
        plan = _plan_for(kf, spec, data, keras_input)
        data = data or model_data(dataset, plan.input_shape, data_dir)
        units = int(plan.spec.rsplit("dense", 1)[1].split("_")[0].removesuffix("nb"))
        if data.input_shape != plan.input_shape or data.num_classes != units:
            raise DataError(f"{dataset}: {data.num_classes} classes of {data.input_shape} images; the model takes "
                            f"{plan.input_shape} and has {units} outputs")
        model = load_keras_weights(build_model(plan.spec, plan.input_shape, units), plan)
    finally:
        kf.close()
    return _write_run(kf, plan, model, data, replace(config, model=model.spec), keras_input)


def _write_run(kf: KerasFile, plan: Plan, model: ConvNet, data, config: TrainConfig, keras_input: str) -> Run:
    logits = predict_logits(model.to(memory_format=torch.channels_last), data.test_x, precision=torch.float32)
    test_loss, test_acc = loss_and_accuracy(logits, data.test_y)
    path = new_run_dir(config.runs_dir, config.name, f"{kf.path.name.split('.')[0]}-keras")
    folded = (plan.scale, plan.offset) != (1.0, 0.0)
    keras_saw = f"pixels / 255 × {plan.scale:g} + {plan.offset:g}"
    imported = {"from": str(kf.path.resolve()), "sha256": kf.sha256, "format": kf.format,
                "keras_version": kf.keras_version, "softmax_dropped": plan.softmax_dropped,
                "input": f"{keras_saw}, folded into the first layer" if folded else "pixels / 255, as convlens feeds them"}
    rescaled = "a Rescaling layer" if plan.rescaled else "its raw-pixel input"
    preprocessing = PREPROCESSING + (f"; the Keras model's {rescaled} ({keras_saw}) is folded into "
                                     f"{model.infos[plan.sources[0][0]].name}" if folded else "")
    try:
        with RunLock(path):
            write_json(path / "config.json", {**config.to_json(), "name": path.name, "spec": model.spec,
                                              "imported": imported, "versions": versions(), "command": sys.argv,
                                              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
            write_json(path / "model.json", ModelInfo(model.spec, model.input_shape, tuple(data.classes), data.name,
                                                      config.dataset_ref.image_rule, preprocessing).to_json())
            save_weights(path / "model.safetensors", model, data.classes)
            write_atomic(path / "metrics.jsonl", b"")
            write_json(path / "results.json", {"test_loss": test_loss, "test_accuracy": test_acc,
                                               "test_precision": "fp32", "epochs_run": 0, "best_epoch": None, "stopped_early": False, "interrupted": False,
                                               "imported": True})
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    return open_run(path)
