"""A probe image followed through training: after every epoch, the feature maps and the
prediction of one fixed image, so that the explorer can show the filters forming as the run goes.

train.py writes probe/epoch-NNNN.json into the run (epoch 0: the untrained network) when
--probe names a test image (default 0; -1: none); the explorer reads them back. The maps are
8-bit with each channel's range (inspect.encode_maps), as the Inspect view gets them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from .engine import PIXEL_MAX
from .errors import RunError
from .files import write_atomic
from .inspect import activations, encode_maps
from .models import ConvNet

FOLDER = "probe"
MAX_CHANNELS = 64        # maps kept per layer: a 256-wide stage would add ~200 kB an epoch
PASSIVE = ("maxpool", "avgpool", "bn", "dropout", "act")   # maps not kept: what they show the layer before shows
_NAME = re.compile(r"epoch-(\d{4})\.json")


def model_view(image_u8: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """The image (C, H, W) as the model in training takes it: pixel / 255, normalised with the
    run's (mean, std) until they are folded into the first layer when training ends."""
    x = image_u8.float() / PIXEL_MAX
    if stats is not None:
        mean, std = stats
        x = (x - mean.view(-1, 1, 1).to(x)) / std.view(-1, 1, 1).to(x)
    return x


def snapshot(model: ConvNet, image_u8: torch.Tensor, stats, classes) -> dict:
    """The probe's conv maps (the first MAX_CHANNELS of each layer) and class probabilities now."""
    outputs = activations(model, model_view(image_u8, stats))          # the last one: the logits
    layers = [{"name": l.name, "kind": l.kind, "shape": l.shape, "maps": encode_maps(l.output[:MAX_CHANNELS]),
               "channels": int(l.output.shape[0])}
              for l in outputs if l.kind not in PASSIVE and l.output.ndim == 3]
    probs = torch.softmax(torch.from_numpy(outputs[-1].output).float(), 0).tolist()
    return {"layers": layers, "probabilities": [round(p, 6) for p in probs], "classes": list(classes)}


def write_snapshot(run_dir: Path, epoch: int, snap: dict, index: int) -> None:
    (run_dir / FOLDER).mkdir(exist_ok=True)
    write_atomic(run_dir / FOLDER / f"epoch-{epoch:04d}.json",
                 json.dumps({"epoch": epoch, "index": index, **snap}, separators=(",", ":")).encode())


def probe_epochs(run_dir: Path) -> list[int]:
    """The epochs a run has probe snapshots of, in order (none: an empty list)."""
    folder = run_dir / FOLDER
    found = [_NAME.fullmatch(p.name) for p in folder.iterdir()] if folder.is_dir() else []
    return sorted(int(m.group(1)) for m in found if m)


def read_snapshot(run_dir: Path, epoch: int) -> dict:
    path = run_dir / FOLDER / f"epoch-{epoch:04d}.json"
    if epoch not in probe_epochs(run_dir):
        raise RunError(f"{run_dir.name}: no probe snapshot of epoch {epoch}; it has {probe_epochs(run_dir) or 'none'}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RunError(f"{path}: unreadable probe snapshot ({e})") from None
