"""The explorer's JSON API, one router per area: runs, evaluate, inspect, lab, train.

Every number and picture comes from the modules the CLI and the report use (views.py and
below): summaries, metrics, feature maps, kernels, explanations, the lab, the comparison
table; curves, kernels and explanations are served as the very PNGs figures.py and charts.py
draw for the CLI and the report. The server's state (explorer.Explorer) and training jobs
(jobs.Jobs) are reached through the app (request.app.state).
"""

from __future__ import annotations

import base64
import io
import logging
import time

import numpy as np
import torch
from fastapi import APIRouter, Depends, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import Response
from PIL import Image
from pydantic import BaseModel, Field

from . import views
from .attribution import CAM_METHODS, grad_cam, top_k
from .compare import comparison_rows
from .config import TrainConfig
from .convolution import KERNEL_DESCRIPTIONS, NAMED_KERNELS, convolution_lab
from .errors import ConvlensError
from .images import MAX_FILE_BYTES
from .inspect import activations, conv_arithmetic_at, encode_maps, kernels, misclassified
from .models import conv_layers, receptive_field
from .plotting import COLORMAPS, colormap_table
from .runs import delete_run, rename_run
from .spec import PRESETS
from .summary import summarize, summarize_so_far

runs_api, evaluate_api, inspect_api, lab_api, train_api = (APIRouter() for _ in range(5))
Name = str                     # a run's name; Explorer.run refuses anything that is not one
Index = Query(None, ge=0, description="a test image")
ImageId = Query(None, max_length=64, description="an uploaded image instead")
Invert = Query("auto", pattern=f"^({'|'.join(views.INVERT)})$")
Cam = Query("layercam", pattern=f"^({'|'.join(CAM_METHODS)})$")
log = logging.getLogger("convlens.server")
MAX_VALUES = 4096              # a flat layer's values sent (flatten of the seed: 1,600)


def explorer(request: Request):
    return request.app.state.explorer


def jobs(request: Request):
    return request.app.state.jobs


def encode_image(image: torch.Tensor) -> dict:
    """A uint8 image (C, H, W) as base64 bytes, as it is."""
    return {"shape": list(image.shape), "data": base64.b64encode(image.contiguous().numpy().tobytes()).decode()}


def png(data: bytes, cache: bool = False) -> Response:
    return Response(data, media_type="image/png", headers={"Cache-Control": "max-age=3600"} if cache else None)


# ---------------------------------------------------------------------------
# runs: presets, specs, the runs folder, comparisons

@runs_api.get("/api/presets")
def presets():
    return [{"name": n, "spec": spec, "description": d} for n, (spec, d) in PRESETS.items()]


@runs_api.get("/api/summary")
def summary(model: str = Query("seed", max_length=500), channels: int = Query(1, ge=1, le=64),
            size: int = Query(28, ge=1, le=4096), classes: int = Query(10, ge=1, le=10000)):
    """The layer table of any spec; 400 with the bad token's position."""
    return summarize(model, (channels, size, size), classes).to_dict()


@runs_api.get("/api/summary/so-far")
def summary_so_far(model: str = Query("seed", max_length=500), channels: int = Query(1, ge=1, le=64),
                   size: int = Query(28, ge=1, le=4096), classes: int = Query(10, ge=1, le=10000)):
    """A spec as the page types it: the table of the layers before the first wrong or unfinished token
    (all of them when none is), and that token's error."""
    s, error = summarize_so_far(model, (channels, size, size), classes)
    return {"summary": s.to_dict() if s else None, "error": " ".join(str(error).split()) if error else None,
            "token": error.token_index if error else None}


@runs_api.get("/api/colormaps")
def colormaps():
    """The colour maps figures.py draws with, as 256 RGB bytes each: the page colours its canvases alike."""
    return {role: base64.b64encode(colormap_table(name).tobytes()).decode() for role, name in COLORMAPS.items()}


def run_state(run) -> str:
    """What the runs list says of a run: finished only with the weights its results came from (a copy
    that lost model.safetensors, say, answers every view with 409)."""
    if run.record.get("imported"):
        return "imported from Keras"
    if run.completed:
        return "finished" if (run.path / "model.safetensors").is_file() else "weights missing"
    return "stopped" if run.results else "training or stopped"


def run_entry(run) -> dict:
    """One row of the runs list."""
    res, imported = run.results, run.record.get("imported")
    return {"name": run.name, "model": run.config.model, "spec": run.model_info.spec,
            "dataset": run.model_info.dataset, "epochs": len(run.metrics),
            "epochs_planned": 0 if imported else run.config.epochs, "test_accuracy": res.get("test_accuracy"),
            "state": run_state(run), "created": run.record.get("created"),
            "resumable": run.resumable, "params": views.summary_of(run).total_params,
            "train_time_s": res.get("train_time_s"), "report": (run.path / "report.html").is_file()}


@runs_api.get("/api/runs")
def list_runs(ex=Depends(explorer)):
    """Every readable run, newest first. A folder being written or damaged is left out, and whatever
    one folder holds, the others are listed (an unexpected error is logged, not answered)."""
    out = []
    for path in sorted(ex.runs_dir.glob("*/model.json"), key=mtime, reverse=True):
        try:
            out.append(run_entry(ex.run(path.parent.name)))
        except (ConvlensError, HTTPException):
            continue
        except Exception:
            log.exception("run %s left out of the list", path.parent.name)
    return out


def mtime(path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0                       # deleted while listing


@runs_api.get("/api/runs/{name}")
def run_detail(name: Name, ex=Depends(explorer)):
    run = ex.run(name)
    s = views.summary_of(run)
    return {"name": run.name, "config": {**run.config.to_json(), **run.record}, "model": run.model_info.to_json(),
            "metrics": run.metrics, "results": run.results, "summary": s.to_dict()}


@runs_api.get("/api/runs/{name}/curves.png")
def run_curves(name: Name, ex=Depends(explorer)):
    return png(views.curves_figure([ex.run(name)]))


@runs_api.get("/api/compare")
def compare(runs: list[str] = Query(min_length=1, max_length=16), ex=Depends(explorer)):
    """The comparison table of `convlens compare`, for the same runs."""
    head, rows = comparison_rows([ex.run(name) for name in runs])
    return {"head": head, "rows": rows}


@runs_api.get("/api/compare/curves.png")
def compare_curves(runs: list[str] = Query(min_length=1, max_length=16), ex=Depends(explorer)):
    return png(views.curves_figure([ex.run(name) for name in runs]))


# ---------------------------------------------------------------------------
# evaluate: metrics, confusion-matrix cells, test images

@evaluate_api.get("/api/runs/{name}/evaluation")
def evaluation(name: Name, ex=Depends(explorer)):
    return ex.evaluation(ex.finished(name)).to_dict()


@evaluate_api.get("/api/runs/{name}/cell")
def cell(name: Name, true: int = Query(ge=0), predicted: int = Query(ge=0), limit: int = Query(60, ge=1, le=500),
         ex=Depends(explorer)):
    """The test images of one confusion-matrix cell, surest first."""
    ev = ex.evaluation(ex.finished(name))
    k = len(ev.classes)
    if true >= k or predicted >= k:
        raise HTTPException(400, f"classes are 0 to {k - 1}")
    idx = misclassified(ev.probabilities, ev.labels, true, predicted)
    return {"true": ev.classes[true], "predicted": ev.classes[predicted], "count": len(idx),
            "images": [{"index": int(i), "probability": float(ev.probabilities[i, predicted])} for i in idx[:limit]]}


@evaluate_api.get("/api/runs/{name}/test/{index}.png")
def test_image(name: Name, index: int, ex=Depends(explorer)):
    run = ex.run(name)
    arr = ex.looked(run, index, None).image.numpy()
    buf = io.BytesIO()
    Image.fromarray(arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)).save(buf, "PNG")
    return png(buf.getvalue(), cache=True)


@evaluate_api.get("/api/runs/{name}/test/{index}/reasons.png")
def test_reasons(name: Name, index: int, target: int = Query(ge=0, le=9999), ex=Depends(explorer)):
    """A mistake with its reasons (views.reasons): the image, its saliency and LayerCAM for the class
    it was taken for, enlarged 3×."""
    run = ex.run(name)
    if target >= len(run.classes):
        raise HTTPException(400, f"classes are 0 to {len(run.classes) - 1}")
    rgb = views.reasons(ex.model(run), ex.looked(run, index, None).image, target)
    tile = Image.fromarray((rgb * 255).round().astype(np.uint8))
    buf = io.BytesIO()
    tile.resize((tile.width * 3, tile.height * 3), Image.NEAREST).save(buf, "PNG")
    return png(buf.getvalue())                   # not cached: a resumed run's weights, and so its maps, change


# ---------------------------------------------------------------------------
# inspect: uploads, every layer of one image, the explanation, one pixel's arithmetic, kernels

@inspect_api.post("/api/upload")
async def upload(file: UploadFile = File(...), ex=Depends(explorer)):
    """An image file (or a canvas drawing as PNG): decoded once, kept for inspection and the lab."""
    data = await file.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise HTTPException(413, f"{file.filename}: over the {MAX_FILE_BYTES >> 20} MiB limit")
    image_id, img = ex.keep_upload(data, file.filename or "upload")          # ImageError → 400 with its message
    return {"image_id": image_id, "name": file.filename, "format": img.format, "width": img.width,
            "height": img.height}


def inspection(run, model, looked: views.Looked, k: int, cam: str, explain: bool = True) -> dict:
    """Everything the Inspect view shows about one image: top-k, every layer's output (maps as base64
    uint8), the class activation map and the gradient saliency (views.explain, as the CLI and report).
    explain=False: the forward pass alone (the Network view shows no map), cam and saliency None."""
    t0 = time.perf_counter()
    layers = []
    for layer in activations(model, looked.image):
        entry = {"index": layer.index, "name": layer.name, "type": layer.type, "kind": layer.kind, "shape": layer.shape}
        if layer.output.ndim == 3:
            entry["maps"] = encode_maps(layer.output)
        else:
            entry["values"], entry["values_total"] = layer.output[:MAX_VALUES].round(5).tolist(), int(layer.output.size)
        layers.append(entry)
    answer = {"label": looked.label, "true": looked.true,
              "true_class": run.classes[looked.true] if looked.true is not None else None,
              "input": encode_image(looked.image), "layers": layers, "cam": None, "saliency": None}
    if not explain:
        top = top_k(model, looked.image, run.classes, k)
        return {**answer, "top": [{"class": c, "probability": p} for c, p in top],
                "time_ms": round((time.perf_counter() - t0) * 1000, 1)}
    ex = views.explain(model, looked.image, run.classes, cam, k, need_cam=False)
    # Grad-CAM's sum before its ReLU (LayerCAM's weights are never negative): where the class is argued against too.
    gradcam = ex.cam if ex.cam and ex.cam.method == "gradcam" else (
        grad_cam(model, looked.image, ex.cam.target, method="gradcam") if ex.cam else None)
    signs = gradcam.signed.round(4).tolist() if gradcam else None
    return {**answer, "top": [{"class": c, "probability": p} for c, p in ex.top],
            "cam": {"method": ex.cam_name, "layer": ex.cam.layer, "target": run.classes[ex.cam.target],
                    "map": ex.cam.cam.round(4).tolist(), "signs": signs} if ex.cam else None,
            "saliency": ex.saliency.round(4).tolist(), "time_ms": round((time.perf_counter() - t0) * 1000, 1)}


@inspect_api.get("/api/runs/{name}/inspect")
def inspect(name: Name, index: int | None = Index, image_id: str | None = ImageId, invert: str = Invert,
            k: int = Query(5, ge=1, le=100), cam: str = Cam, explain: bool = True,
            ex=Depends(explorer)):
    """Everything about one image: top-k, every layer's output, LayerCAM (or Grad-CAM) and saliency
    (explain=false: not the last two)."""
    run = ex.finished(name)
    model, looked = ex.model(run), ex.looked(run, index, image_id, invert)
    with ex.heavy:
        return inspection(run, model, looked, k, cam, explain)


@inspect_api.get("/api/runs/{name}/explain.png")
def explain_png(name: Name, index: int | None = Index, image_id: str | None = ImageId, invert: str = Invert,
                cam: str = Cam, ex=Depends(explorer)):
    """The explanation picture of `convlens explain` and the report, for this image."""
    run = ex.finished(name)
    model, looked = ex.model(run), ex.looked(run, index, image_id, invert)
    with ex.heavy:
        return png(views.explain(model, looked.image, run.classes, cam, need_cam=False).png(looked, run.classes))


@inspect_api.get("/api/runs/{name}/predict")
def predict(name: Name, index: int | None = Index, image_id: str | None = ImageId, invert: str = Invert,
            k: int = Query(3, ge=1, le=100), ex=Depends(explorer)):
    run = ex.finished(name)
    looked = ex.looked(run, index, image_id, invert)
    return {"label": looked.label, "top": [{"class": c, "probability": p}
                                           for c, p in top_k(ex.model(run), looked.image, run.classes, k)]}


@inspect_api.get("/api/runs/{name}/arithmetic")
def arithmetic(name: Name, layer: str = Query(max_length=64), channel: int = Query(ge=0), row: int = Query(ge=0),
               col: int = Query(ge=0), index: int | None = Index, image_id: str | None = ImageId,
               invert: str = Invert, ex=Depends(explorer)):
    """One output pixel of a conv layer: the patch it sees, the kernel, their products, sum, bias, activation."""
    run = ex.finished(name)
    model, looked = ex.model(run), ex.looked(run, index, image_id, invert)
    a = conv_arithmetic_at(model, looked.image, layer, channel, row, col)
    return {"layer": a.layer, "input_from": a.input_from, "channel": a.channel, "row": a.row, "col": a.col,
            "top_left": list(a.top_left), "stride": a.stride, "padding": a.padding,
            "patch": a.patch.tolist(), "kernel": a.kernel.tolist(), "products": a.products.tolist(),
            "channel_sums": a.products.sum(axis=(1, 2)).tolist(), "total": a.total, "bias": a.bias,
            "pre_activation": a.pre_activation, "activation": a.activation, "value": a.value,
            "receptive_field": list(receptive_field(model, layer, row, col))}


@inspect_api.get("/api/runs/{name}/kernels")
def run_kernels(name: Name, ex=Depends(explorer)):
    """Every conv layer's kernels: its shape and weights (the first 8 input channels of deeper layers)."""
    model, out = ex.model(ex.finished(name)), []
    for n in range(len(conv_layers(model))):
        ks = kernels(model, n)
        o, i, kh, kw = ks.weights.shape
        shown = ks.weights[:, :min(i, 8)]
        out.append({"layer": ks.layer, "shape": [o, i, kh, kw], "shown_inputs": int(shown.shape[1]),
                    "weights": shown.round(5).tolist(), "bias": ks.bias.round(5).tolist()})
    return out


@inspect_api.get("/api/runs/{name}/kernels/{layer}.png")
def kernel_png(name: Name, layer: int, ex=Depends(explorer)):
    """A conv layer's kernels as the picture `convlens filters` and the report draw."""
    return png(views.kernel_figure(ex.model(ex.finished(name)), layer)[2])


# ---------------------------------------------------------------------------
# lab: a kernel on an image, as sum(pixel × kernel)

class ConvolveRequest(BaseModel):
    kernel: str = Field("vertical", max_length=2000)
    stride: int = Field(1, ge=1, le=16)
    padding: int = Field(0, ge=0, le=16)
    pool: int = Field(2, ge=0, le=16)
    index: int | None = Field(None, ge=0, description="Fashion-MNIST test image (default 0)")
    image_id: str | None = Field(None, max_length=64, description="an uploaded image instead")
    row: int | None = None
    col: int | None = None


@lab_api.get("/api/kernels")
def named_kernels():
    return [{"name": n, "kernel": np.asarray(k).tolist(), "about": KERNEL_DESCRIPTIONS.get(n, "")}
            for n, k in NAMED_KERNELS.items()]


@lab_api.post("/api/convolve")
def convolve(req: ConvolveRequest, ex=Depends(explorer)):
    """The convolution lab on a test image or an upload: result, pooled result, one pixel's arithmetic."""
    image, label = ex.lab_input(req.index, req.image_id)
    pixel = (req.row, req.col) if req.row is not None and req.col is not None else None
    lab = convolution_lab(image, req.kernel, req.stride, req.padding, req.pool, pixel)
    px = lab.pixel
    return {"label": label, "kernel_name": lab.kernel_name, "kernel": np.asarray(lab.kernel).tolist(),
            "image": encode_maps(lab.image[None]), "result": encode_maps(lab.result[None]),
            "pooled": encode_maps(lab.pooled[None]) if lab.pooled is not None else None, "shapes": lab.shapes,
            "torch_max_diff": lab.torch_max_diff,
            "pixel": {"row": px.row, "col": px.col, "top": px.top, "left": px.left, "text": px.text(),
                      "value": float(lab.result[px.row, px.col])}}


# ---------------------------------------------------------------------------
# train: jobs that run `convlens train` in a process of their own

class TrainRequest(BaseModel):
    model: str = Field("seed", max_length=500, description="preset name or spec")
    epochs: int = Field(5, ge=1, le=200)
    batch_size: int | None = Field(None, ge=1, le=8192)
    lr: float | None = Field(None, gt=0, lt=10, allow_inf_nan=False)
    name: str | None = Field(None, max_length=128)
    probe: int = Field(0, ge=-1, le=1_000_000, description="test image followed after every epoch (-1: none)")


@train_api.post("/api/train", status_code=202)
def start_training(req: TrainRequest, ex=Depends(explorer), js=Depends(jobs)):
    config = TrainConfig(model=req.model, epochs=req.epochs, batch_size=req.batch_size, lr=req.lr, probe=req.probe,
                         runs_dir=str(ex.runs_dir), name=req.name, data_dir=js.data_dir, device=js.device)
    return js.start(config).to_dict()


@train_api.post("/api/runs/{name}/resume", status_code=202)
def resume_training(name: Name, ex=Depends(explorer), js=Depends(jobs)):
    """Go on with a stopped or killed run from its checkpoint, as `convlens train --resume` (409 if there
    is nothing to resume or another run is training)."""
    return js.resume(ex.run(name)).to_dict()


class RenameRequest(BaseModel):
    to: str = Field(max_length=128, description="the run's new name")


@train_api.post("/api/runs/{name}/rename")
def rename(name: Name, req: RenameRequest, ex=Depends(explorer), js=Depends(jobs)):
    """A new name for a run (409 while it trains; never a path, never an existing run's name)."""
    run = ex.run(name)
    js.refuse_if_training(run.name)
    return run_entry(ex.run(rename_run(run.path, req.to).name))


@train_api.delete("/api/runs/{name}")
def delete(name: Name, ex=Depends(explorer), js=Depends(jobs)):
    """Delete a run and its files (409 while it trains; only folders inside the runs folder)."""
    run = ex.run(name)
    js.refuse_if_training(run.name)
    delete_run(run.path)
    return {"deleted": run.name}


@train_api.get("/api/jobs")
def list_jobs(js=Depends(jobs)):
    return [j.to_dict() for j in js.jobs.values()]


@train_api.get("/api/jobs/{job_id}")
def job(job_id: str, since: int | None = Query(None, ge=0), gen: int | None = Query(None, ge=0),
        js=Depends(jobs)):
    """A job; with since and gen, only the curve's points after the `since` a poll holds (Job.to_dict)."""
    return js.get(job_id).to_dict(since, gen)


@train_api.post("/api/jobs/{job_id}/stop")
def stop_job(job_id: str, js=Depends(jobs)):
    return js.stop(job_id).to_dict()
