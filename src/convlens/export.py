"""Portable models: a run's network as ONNX or TorchScript, with its preprocessing beside it.

    RUN/export/model.onnx            (or model.torchscript)
    RUN/export/preprocessing.json    what another program must do to an image before the model

The exported network takes float32 pixels in [0, 1], shape (N, C, H, W), a light object on a
dark background as in training (any normalisation used in training is folded into the first
layer), and returns logits; softmax gives the probabilities. `check_onnx` runs the ONNX file
in onnxruntime over a test set and compares it with PyTorch, image by image.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from .engine import unit_pixels
from .errors import ConvlensError
from .files import write_atomic, write_json
from .runs import Run
from .versions import convlens_version

FORMATS = {"onnx": "model.onnx", "torchscript": "model.torchscript"}
ONNX_OPSET = 18


def _portable(run: Run) -> torch.nn.Module:
    """The run's model in fp32, eval mode, plain (not channels_last) memory: what exporters trace best."""
    return run.load_model("cpu").float().eval().to(memory_format=torch.contiguous_format)


# What images.prepare_image does, by the run's rule, in words another program can follow.
_RESIZE_RULES = {
    "object": "crop to the object's bounding box, fit its longer side into height×width keeping the aspect "
              "ratio (Lanczos), centre it on black",
    "folder": "EXIF orientation applied, transparency composited onto white, then resized to exactly "
              "height×width with an anti-aliased bilinear filter (Pillow), aspect ratio not kept"}
_CONVENTIONS = {
    "object": "a light object on a dark background, as the training images ({dataset}); invert a dark-on-light photo",
    "folder": "photos as they are, like the training images of {dataset}; grayscale is ITU-R 601 luma"}


def preprocessing(run: Run, fmt: str, model_file: Path, model_bytes: bytes) -> dict:
    c, h, w = run.input_shape
    return {
        "format": fmt, "file": model_file.name, "sha256": hashlib.sha256(model_bytes).hexdigest(),
        "input": {"name": "pixels", "dtype": "float32", "shape": ["batch", c, h, w], "layout": "NCHW",
                  "channels": c, "height": h, "width": w,
                  "scale": "uint8 pixel / 255, so values lie in [0, 1]; no mean or std to subtract "
                           "(the training normalisation is folded into the first layer)",
                  "colours": "grayscale" if c == 1 else "RGB",
                  "resize": _RESIZE_RULES[run.image_rule],
                  "convention": _CONVENTIONS[run.image_rule].format(dataset=run.model_info.dataset or "?")},
        "output": {"name": "logits", "shape": ["batch", len(run.classes)],
                   "meaning": "unnormalised scores; softmax over the last axis gives class probabilities"},
        "classes": run.classes, "spec": run.model_info.spec, "run": run.name,
        "exported_by": f"convlens {convlens_version()}, torch {torch.__version__}"}


def export_run(run: Run, fmt: str = "onnx", out_dir: str | os.PathLike | None = None,
               replace: bool = False) -> Path:
    """Export a run's model as ONNX or TorchScript, with preprocessing.json beside it; returns the model path.
    An earlier export's files in the folder are replaced only when `replace` says so."""
    if fmt not in FORMATS:
        raise ConvlensError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")
    out = Path(out_dir) if out_dir else run.path / "export"
    there = [p for p in (out / FORMATS[fmt], out / "preprocessing.json") if p.exists()]
    if there and not replace:
        raise ConvlensError(f"{there[0]} already exists: pass --force to replace it, or choose another --out")
    model = _portable(run)
    c, h, w = run.input_shape
    example = torch.rand(2, c, h, w)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConvlensError(f"cannot create {out}: {e.strerror or e}") from None
    path = out / FORMATS[fmt]
    if fmt == "onnx":
        try:
            import onnxscript  # noqa: F401  (torch's ONNX exporter needs it)
        except ImportError:
            raise ConvlensError("ONNX export needs the onnx and onnxscript packages: "
                                "pip install 'convlens[export]'") from None

        def write(f):
            # The exporter narrates every pass on stdout and warns about torchvision ops this model
            # does not use; the command says what matters itself.
            onnx_log = logging.getLogger("torch.onnx")
            level = onnx_log.level
            onnx_log.setLevel(logging.ERROR)
            try:
                with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)
                    torch.onnx.export(model, (example,), f, input_names=["pixels"], output_names=["logits"],
                                      dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
                                      opset_version=ONNX_OPSET, dynamo=True, external_data=False, verbose=False)
            finally:
                onnx_log.setLevel(level)
    else:
        def write(f):
            # PyTorch 2.13 marks TorchScript deprecated in favour of torch.export; it still runs
            # everywhere libtorch does (C++, mobile), which is why people ask for it.
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                torch.jit.save(torch.jit.trace(model, example), f)
    buf = io.BytesIO()         # both exporters write to a buffer; the file then lands whole (write_atomic)
    write(buf)
    write_atomic(path, buf.getvalue())
    write_json(out / "preprocessing.json", preprocessing(run, fmt, path, buf.getvalue()))
    return path


@dataclass
class Parity:
    images: int
    same_top1: int
    max_prob_diff: float       # largest |p_onnx − p_torch| over every image and class

    @property
    def agreement(self) -> float:
        return self.same_top1 / max(1, self.images)

    def text(self) -> str:
        return (f"top-1 identical for {self.same_top1:,}/{self.images:,} test images ({self.agreement:.2%}), "
                f"largest probability difference {self.max_prob_diff:.1e}")


def check_onnx(run: Run, onnx_path: Path, images_u8: torch.Tensor, batch: int = 500) -> Parity:
    """Run the ONNX file in onnxruntime on uint8 images (N, C, H, W) and compare with PyTorch's fp32 output."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ConvlensError("checking an ONNX export needs onnxruntime: pip install 'convlens[export]'") from None
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    model = _portable(run)
    same, worst = 0, 0.0
    for x_u8 in images_u8.split(batch):
        x = unit_pixels(x_u8)                                                       # (B, C, H, W)
        p_onnx = torch.from_numpy(session.run(None, {"pixels": x.numpy()})[0]).softmax(1)
        with torch.no_grad():
            p_torch = model(x).softmax(1)
        same += int((p_onnx.argmax(1) == p_torch.argmax(1)).sum())
        worst = max(worst, float((p_onnx - p_torch).abs().max()))
    return Parity(len(images_u8), same, worst)
