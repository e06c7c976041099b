"""The web explorer (`convlens serve`): a JSON API over run folders and one static page (web/).

Everything the page shows comes from the modules the CLI and the report use: summaries from
summary.py, metrics from evaluate.py, feature maps, kernels, Grad-CAM and the convolution
arithmetic from inspect.py, the lab from convolution.py, kernel pictures from figures.py.
The server only reads run folders; training runs in its own process (jobs.py).

Safety: runs are looked up by name inside the runs folder only (no paths from a request),
uploads are capped and decoded by images.read_image (allow-listed formats, bomb guard), and
the page loads nothing from the network.
"""

from __future__ import annotations

import base64
import io
import threading
import time
import uuid
from collections import OrderedDict
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import torch
from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from .convolution import KERNEL_DESCRIPTIONS, NAMED_KERNELS, convolution_lab, lab_image
from .data import Dataset, load_dataset
from .errors import ConvlensError, ImageError, RunError, SpecError
from .evaluate import Evaluation, evaluate
from .images import MAX_FILE_BYTES, prepare_image, read_image
from .inspect import (activations, conv_arithmetic_at, conv_layers, grad_cam, kernels, misclassified,
                      receptive_field, saliency, top_k)
from .jobs import JobError, Jobs
from .models import PRESETS, ConvNet
from .runs import Run, check_name, open_run
from .summary import summarize
from .train import pick_device

WEB = Path(__file__).parent / "web"
UPLOADS_KEPT = 32          # uploaded/drawn images kept for follow-up requests (hover arithmetic, the lab)
RUN_FILES = ("model.json", "config.json", "metrics.jsonl", "results.json", "model.safetensors")


def _u8(a: np.ndarray) -> dict:
    """A float array as per-channel min/max and base64 uint8 (C, H, W) — a tenth of the JSON of floats."""
    a = np.asarray(a, dtype=np.float32)
    flat = a.reshape(a.shape[0], -1)
    lo, hi = flat.min(1), flat.max(1)
    scaled = (flat - lo[:, None]) / np.where(hi > lo, hi - lo, 1)[:, None]
    data = np.round(scaled * 255).astype(np.uint8)
    return {"shape": list(a.shape), "min": lo.tolist(), "max": hi.tolist(),
            "data": base64.b64encode(data.tobytes()).decode()}


def _png(a: np.ndarray) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.asarray(a, dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


class Explorer:
    """What the server keeps between requests: models, datasets, evaluations, uploads (all bounded)."""

    def __init__(self, runs_dir: Path, data_dir: str | None, device: torch.device = torch.device("cpu")):
        self.runs_dir, self.data_dir, self.device = Path(runs_dir), data_dir, device
        self.lock = threading.Lock()
        self.models: OrderedDict[tuple, ConvNet] = OrderedDict()
        self.datasets: dict[tuple, Dataset] = {}
        self.evaluations: OrderedDict[tuple, Evaluation] = OrderedDict()
        self.uploads: OrderedDict[str, tuple[bytes, str]] = OrderedDict()
        self.runs: dict[str, tuple[tuple, Run]] = {}
        # One inspection at a time: each is ~25 ms of forward and backward passes on a core; two at
        # once would take both cores of a small machine and make every quick prediction wait.
        self.heavy = threading.Semaphore(1)

    # runs ---------------------------------------------------------------
    def run(self, name: str) -> Run:
        """A run by name inside the runs folder; 404 for anything else (no '..', no paths)."""
        try:
            check_name(name)
        except RunError as e:
            raise HTTPException(404, str(e)) from None
        path = self.runs_dir / name
        try:   # the run is read again only when one of its files changed (a run still training changes)
            stamp = tuple((path / f).stat().st_mtime_ns if (path / f).exists() else 0 for f in RUN_FILES)
        except OSError:
            stamp = None
        if not stamp or not stamp[0]:
            raise HTTPException(404, f"no run {name!r}")
        with self.lock:
            if name in self.runs and self.runs[name][0] == stamp:
                return self.runs[name][1]
        run = open_run(path)
        with self.lock:
            self.runs[name] = (stamp, run)
        return run

    def finished(self, name: str) -> Run:
        run = self.run(name)
        if not (run.path / "model.safetensors").exists():
            raise HTTPException(409, f"run {name} has no trained weights yet (still training, or stopped in epoch 1)")
        return run

    def _key(self, run: Run) -> tuple:
        return (run.name, (run.path / "model.safetensors").stat().st_mtime_ns)

    def model(self, run: Run) -> ConvNet:
        key = self._key(run)
        with self.lock:
            if key in self.models:
                self.models.move_to_end(key)
                return self.models[key]
        model = run.load_model(self.device)
        with self.lock:
            self.models[key] = model
            while len(self.models) > 8:
                self.models.popitem(last=False)
        return model

    def _dataset(self, name: str, data_dir: str | None, options: dict | None = None) -> Dataset:
        """A dataset loaded once (all training images, the test split) and kept."""
        key = (name, data_dir, tuple(sorted((options or {}).items())))
        with self.lock:
            if key not in self.datasets:
                self.datasets[key] = load_dataset(name, data_dir, val_split=0.0, **(options or {}))
            return self.datasets[key]

    def dataset(self, run: Run) -> Dataset:
        name = run.config.get("dataset", "fashion-mnist")
        if name.startswith("folder:"):       # the files the run read (its files.json), kept per run
            key = ("files of", str(run.path))
            with self.lock:
                if key not in self.datasets:
                    self.datasets[key] = run.dataset()
                return self.datasets[key]
        return self._dataset(name, self.data_dir or run.config.get("data_dir"), run.data_options())

    def fashion_mnist(self) -> Dataset:
        """The embedded default, for the convolution lab's sample images."""
        return self._dataset("fashion-mnist", self.data_dir)

    def evaluation(self, run: Run) -> Evaluation:
        key = self._key(run)
        with self.lock:
            if key in self.evaluations:
                return self.evaluations[key]
        data = self.dataset(run)
        ev = evaluate(self.model(run), data.test_x, data.test_y, run.classes, precision=torch.float32)
        with self.lock:
            self.evaluations[key] = ev
            while len(self.evaluations) > 8:
                self.evaluations.popitem(last=False)
        return ev

    # images -------------------------------------------------------------
    def keep_upload(self, data: bytes, name: str) -> str:
        image_id = uuid.uuid4().hex[:16]
        with self.lock:
            self.uploads[image_id] = (data, name)
            while len(self.uploads) > UPLOADS_KEPT:
                self.uploads.popitem(last=False)
        return image_id

    def upload(self, image_id: str) -> tuple[bytes, str]:
        with self.lock:
            if image_id not in self.uploads:
                raise HTTPException(404, f"no uploaded image {image_id!r} (uploads are kept for the last "
                                         f"{UPLOADS_KEPT}; upload it again)")
            return self.uploads[image_id]

    def image(self, run: Run, index: int | None, image_id: str | None, invert: str = "auto"
              ) -> tuple[torch.Tensor, str, int | None]:
        """The model input for a test image or an upload: (uint8 (C, H, W), label, true class or None)."""
        if (index is None) == (image_id is None):
            raise HTTPException(400, "give either index (a test image) or image_id (an upload)")
        if image_id is not None:
            data, name = self.upload(image_id)
            c, h, w = run.model_info["input_shape"]
            inv = {"auto": None, "yes": True, "no": False}[invert]
            return (torch.from_numpy(prepare_image(read_image(data, name), (h, w), c, inv, run.image_rule)),
                    name, None)
        test = self.dataset(run)
        if not 0 <= index < len(test.test_y):
            raise HTTPException(400, f"index {index}: the test set has {len(test.test_y):,} images (0 to "
                                     f"{len(test.test_y) - 1})")
        label = int(test.test_y[index])
        return test.test_x[index], f"test image {index} ({run.classes[label]})", label


def inspection(run: Run, model: ConvNet, image: torch.Tensor, label: str, true: int | None, k: int = 5,
               cam: str = "layercam") -> dict:
    """Everything the Inspect view shows about one image, as JSON: top-k, every layer's output (maps as
    base64 uint8), the class activation map and the gradient saliency."""
    t0 = time.perf_counter()
    layers = []
    for layer in activations(model, image):
        entry = {"index": layer.index, "name": layer.name, "type": layer.type, "kind": layer.kind,
                 "shape": layer.shape}
        if layer.output.ndim == 3:
            entry["maps"] = _u8(layer.output)
        else:
            entry["values"] = layer.output[:256].round(5).tolist()
        layers.append(entry)
    heat = grad_cam(model, image, method=cam) if conv_layers(model) else None
    return {"label": label, "true": true, "true_class": run.classes[true] if true is not None else None,
            "input": image.numpy().tolist(),
            "top": [{"class": c, "probability": p} for c, p in top_k(model, image, run.classes, k)],
            "layers": layers,
            "cam": {"method": {"layercam": "LayerCAM", "gradcam": "Grad-CAM"}[cam], "layer": heat.layer,
                    "target": run.classes[heat.target], "map": heat.cam.round(4).tolist()} if heat else None,
            "saliency": saliency(model, image).round(4).tolist(),
            "time_ms": round((time.perf_counter() - t0) * 1000, 1)}


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes is refused with 413 as it arrives, before
    the multipart parser spools it to disk (a declared Content-Length is checked up front)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(send)
        seen, started, refused = 0, False, False

        async def counted():
            # Past the limit: answer 413 now and tell the app the client went away, so it stops reading.
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                refused = True
                if not started:
                    await self._refuse(send)
                return {"type": "http.disconnect"}
            return message

        async def tracked(message):
            nonlocal started
            if refused:
                return                    # the app's own answer to the "disconnect": already answered
            started = started or message["type"] == "http.response.start"
            await send(message)
        await self.app(scope, counted, tracked)

    async def _refuse(self, send):
        body = ('{"detail": "request body over the %d MiB limit"}' % (self.limit >> 20)).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------------------
# Request bodies

class TrainRequest(BaseModel):
    model: str = Field("seed", max_length=500, description="preset name or spec")
    epochs: int = Field(5, ge=1, le=200)
    batch_size: int | None = Field(None, ge=1, le=8192)
    lr: float | None = Field(None, gt=0, lt=10)
    name: str | None = Field(None, max_length=128)


class ConvolveRequest(BaseModel):
    kernel: str = Field("vertical", max_length=2000)
    stride: int = Field(1, ge=1, le=16)
    padding: int = Field(0, ge=0, le=16)
    pool: int = Field(2, ge=0, le=16)
    index: int | None = Field(None, ge=0, description="Fashion-MNIST test image (default 0)")
    image_id: str | None = Field(None, max_length=64, description="an uploaded image instead")
    row: int | None = None
    col: int | None = None


def create_app(runs_dir: str | Path = "runs", data_dir: str | None = None, device: str = "cpu") -> FastAPI:
    """The explorer's app over `runs_dir`; `data_dir` for datasets that are not in the default places;
    `device` where its models run and its training jobs train (auto | cpu | cuda)."""
    ex = Explorer(Path(runs_dir), data_dir, pick_device(device))
    jobs = Jobs(Path(runs_dir), data_dir, device)

    @asynccontextmanager
    async def lifespan(app):
        yield
        jobs.stop_all()              # a running training stops after its step and keeps a checkpoint

    # No /docs: Swagger UI loads from a CDN, and the page must work offline. The schema is served.
    app = FastAPI(title="convlens explorer", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url="/api/openapi.json")
    app.state.explorer, app.state.jobs = ex, jobs
    app.add_middleware(BodyLimit, limit=MAX_FILE_BYTES + (64 << 10))   # an image and its form fields

    @app.exception_handler(ConvlensError)
    async def convlens_error(request: Request, e: ConvlensError):
        status = 404 if isinstance(e, RunError) and "no run" in str(e) else 400
        if isinstance(e, JobError):
            status = 404 if str(e).startswith("no job") else 409
        body = {"detail": str(e)}
        if isinstance(e, SpecError) and e.token_index:
            body["token"] = e.token_index
        return JSONResponse(body, status_code=status)

    # -- models and runs ----------------------------------------------------
    @app.get("/api/presets")
    def presets():
        return [{"name": n, "spec": spec, "description": d} for n, (spec, d) in PRESETS.items()]

    @app.get("/api/summary")
    def summary(model: str = Query("seed", max_length=500), channels: int = Query(1, ge=1, le=64),
                size: int = Query(28, ge=1, le=4096), classes: int = Query(10, ge=1, le=10000)):
        """The layer table of any spec, as the page types it; 400 with the bad token's position."""
        return summarize(model, (channels, size, size), classes).to_dict()

    @app.get("/api/runs")
    def runs():
        out = []
        for path in sorted(ex.runs_dir.glob("*/model.json"), key=lambda p: p.stat().st_mtime, reverse=True):
            try:
                run = ex.run(path.parent.name)
            except (RunError, HTTPException):
                continue                     # a folder being written or damaged: not listed
            out.append({"name": run.name, "model": run.config.get("model"), "spec": run.model_info["spec"],
                        "dataset": run.model_info.get("dataset"), "epochs": len(run.metrics),
                        "epochs_planned": run.config.get("epochs"),
                        "test_accuracy": run.results.get("test_accuracy"),
                        "state": "finished" if run.results and not run.results.get("interrupted")
                        else "stopped" if run.results else "training or stopped",
                        "created": run.config.get("created")})
        return out

    @app.get("/api/runs/{name}")
    def run_detail(name: str):
        run = ex.run(name)
        s = summarize(run.model_info["spec"], tuple(run.model_info["input_shape"]), len(run.classes))
        return {"name": run.name, "config": run.config, "model": run.model_info, "metrics": run.metrics,
                "results": run.results, "summary": s.to_dict()}

    @app.get("/api/runs/{name}/evaluation")
    def evaluation(name: str):
        ev = ex.evaluation(ex.finished(name))
        return ev.to_dict()

    @app.get("/api/runs/{name}/cell")
    def cell(name: str, true: int = Query(ge=0), predicted: int = Query(ge=0), limit: int = Query(60, ge=1, le=500)):
        """The test images of one confusion-matrix cell, surest first."""
        ev = ex.evaluation(ex.finished(name))
        k = len(ev.classes)
        if true >= k or predicted >= k:
            raise HTTPException(400, f"classes are 0 to {k - 1}")
        idx = misclassified(ev.probabilities, ev.labels, true, predicted)
        return {"true": ev.classes[true], "predicted": ev.classes[predicted], "count": int(len(idx)),
                "images": [{"index": int(i), "probability": float(ev.probabilities[i, predicted])}
                           for i in idx[:limit]]}

    @app.get("/api/runs/{name}/test/{index}.png")
    def test_image(name: str, index: int):
        run = ex.run(name)
        image, _, _ = ex.image(run, index, None)
        arr = image.numpy()
        return Response(_png(arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)), media_type="image/png",
                        headers={"Cache-Control": "max-age=3600"})

    @app.get("/api/runs/{name}/kernels")
    def run_kernels(name: str):
        model = ex.model(ex.finished(name))
        out = []
        for n in range(len(conv_layers(model))):
            ks = kernels(model, n)
            o, i, kh, kw = ks.weights.shape
            shown = ks.weights[:, :min(i, 8)]                       # deeper layers: the first 8 input channels
            out.append({"layer": ks.layer, "shape": [o, i, kh, kw], "shown_inputs": int(shown.shape[1]),
                        "weights": shown.round(5).tolist(), "bias": ks.bias.round(5).tolist()})
        return out

    # -- images and inspection --------------------------------------------------
    @app.post("/api/upload")
    async def upload(file: UploadFile = File(...)):
        """An image file (or a canvas drawing as PNG): checked and kept for inspection and the lab."""
        data = await file.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise HTTPException(413, f"{file.filename}: over the {MAX_FILE_BYTES >> 20} MiB limit")
        img = read_image(data, file.filename or "upload")        # ImageError → 400 with its message
        image_id = ex.keep_upload(data, file.filename or "upload")
        return {"image_id": image_id, "name": file.filename, "format": img.format,
                "width": img.width, "height": img.height}

    @app.get("/api/runs/{name}/inspect")
    def inspect(name: str, index: int | None = Query(None, ge=0), image_id: str | None = Query(None, max_length=64),
                invert: str = Query("auto", pattern="^(auto|yes|no)$"), k: int = Query(5, ge=1, le=100),
                cam: str = Query("layercam", pattern="^(layercam|gradcam)$")):
        """Everything about one image: top-k, every layer's output, LayerCAM (or Grad-CAM) and saliency."""
        run = ex.finished(name)
        model = ex.model(run)
        image, label, true = ex.image(run, index, image_id, invert)
        with ex.heavy:
            return inspection(run, model, image, label, true, k, cam)

    @app.get("/api/runs/{name}/predict")
    def predict(name: str, index: int | None = Query(None, ge=0), image_id: str | None = Query(None, max_length=64),
                invert: str = Query("auto", pattern="^(auto|yes|no)$"), k: int = Query(3, ge=1, le=100)):
        run = ex.finished(name)
        image, label, _ = ex.image(run, index, image_id, invert)
        return {"label": label, "top": [{"class": c, "probability": p}
                                        for c, p in top_k(ex.model(run), image, run.classes, k)]}

    @app.get("/api/runs/{name}/arithmetic")
    def arithmetic(name: str, layer: str = Query(max_length=64), channel: int = Query(ge=0),
                   row: int = Query(ge=0), col: int = Query(ge=0), index: int | None = Query(None, ge=0),
                   image_id: str | None = Query(None, max_length=64),
                   invert: str = Query("auto", pattern="^(auto|yes|no)$")):
        """One output pixel of a conv layer: the patch it sees, the kernel, their products, sum, bias, activation."""
        run = ex.finished(name)
        image, _, _ = ex.image(run, index, image_id, invert)
        a = conv_arithmetic_at(ex.model(run), image, layer, channel, row, col)
        return {"layer": a.layer, "input_from": a.input_from, "channel": a.channel, "row": a.row, "col": a.col,
                "top_left": list(a.top_left), "stride": a.stride, "padding": a.padding,
                "patch": a.patch.tolist(), "kernel": a.kernel.tolist(), "products": a.products.tolist(),
                "channel_sums": a.products.sum(axis=(1, 2)).tolist(), "total": a.total, "bias": a.bias,
                "pre_activation": a.pre_activation, "activation": a.activation, "value": a.value,
                "receptive_field": list(receptive_field(ex.model(run), layer, row, col))}

    @app.get("/api/kernels")
    def named_kernels():
        return [{"name": n, "kernel": np.asarray(k).tolist(), "about": KERNEL_DESCRIPTIONS.get(n, "")}
                for n, k in NAMED_KERNELS.items()]

    @app.post("/api/convolve")
    def convolve(req: ConvolveRequest):
        """The convolution lab on a test image or an upload: result, pooled result, one pixel's arithmetic."""
        if req.image_id is not None:
            data, label = ex.upload(req.image_id)
            image = lab_image(data, label)
        else:
            test = ex.fashion_mnist()
            index = req.index or 0
            if index >= len(test.test_y):
                raise HTTPException(400, f"index {index}: the test set has {len(test.test_y):,} images")
            image = test.test_x[index, 0].numpy()
            label = f"test image {index} ({test.classes[int(test.test_y[index])]})"
        pixel = (req.row, req.col) if req.row is not None and req.col is not None else None
        lab = convolution_lab(image, req.kernel, req.stride, req.padding, req.pool, pixel)
        px = lab.pixel
        return {"label": label, "kernel_name": lab.kernel_name, "kernel": np.asarray(lab.kernel).tolist(),
                "image": _u8(lab.image[None]), "result": _u8(lab.result[None]),
                "pooled": _u8(lab.pooled[None]) if lab.pooled is not None else None, "shapes": lab.shapes,
                "torch_max_diff": lab.torch_max_diff,
                "pixel": {"row": px.row, "col": px.col, "top": px.top, "left": px.left, "text": px.text(),
                          "value": float(lab.result[px.row, px.col])}}

    # -- training jobs ----------------------------------------------------------
    @app.post("/api/train", status_code=202)
    def start_training(req: TrainRequest):
        return jobs.start(req.model, req.epochs, req.batch_size, req.lr, req.name).to_dict()

    @app.get("/api/jobs")
    def list_jobs():
        return [j.to_dict() for j in jobs.jobs.values()]

    @app.get("/api/jobs/{job_id}")
    def job(job_id: str):
        return jobs.get(job_id).to_dict()

    @app.post("/api/jobs/{job_id}/stop")
    def stop_job(job_id: str):
        return jobs.stop(job_id).to_dict()

    # -- the page ---------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(WEB / "index.html")

    app.mount("/static", StaticFiles(directory=WEB), name="static")
    return app


def serve(runs_dir: str = "runs", host: str = "127.0.0.1", port: int = 8000, data_dir: str | None = None,
          device: str = "auto") -> None:
    """Run the explorer with uvicorn until Ctrl-C."""
    import uvicorn
    torch.set_num_threads(1)     # many small requests at once: one thread each beats two fighting over 2 cores
    uvicorn.run(create_app(runs_dir, data_dir, device), host=host, port=port, log_level="warning")
