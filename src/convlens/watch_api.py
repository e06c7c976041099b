"""The explorer's API for watching a network: every run's curves as numbers (the chart is drawn
in the page, with values under the pointer), the probe image's maps after each epoch of a run
in training (probe.py), which pixel won each max-pooling window, and a run's HTML report.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse

from . import views
from .compare import curve_series
from .inspect import pool_winners
from .probe import probe_epochs, read_snapshot

# Not imported from api.py, which would put this module a level above it (tests/test_structure.py's 8 levels).
watch_api = APIRouter()
Name = str                     # a run's name; Explorer.run refuses anything that is not one
Index = Query(None, ge=0, description="a test image")
ImageId = Query(None, max_length=64, description="an uploaded image instead")
Invert = Query("auto", pattern=f"^({'|'.join(views.INVERT)})$")


def explorer(request: Request):
    return request.app.state.explorer


@watch_api.get("/api/curves")
def curves(runs: list[str] = Query(min_length=1, max_length=16), ex=Depends(explorer)):
    """Each run's per-epoch curves with its best epoch and overfitting onset (compare.curve_series,
    as the report's chart), for the page to draw any number of runs overlaid."""
    return [curve_series(ex.run(name)) for name in runs]


@watch_api.get("/api/runs/{name}/probe")
def probe_list(name: Name, ex=Depends(explorer)):
    run = ex.run(name)
    return {"index": run.config.probe, "epochs": probe_epochs(run.path)}


@watch_api.get("/api/runs/{name}/probe/{epoch}")
def probe(name: Name, epoch: int, ex=Depends(explorer)):
    """The probe image's conv maps and prediction after `epoch` (0: before training)."""
    return read_snapshot(ex.run(name).path, epoch)


@watch_api.get("/api/runs/{name}/pool")
def pool(name: Name, layer: str = Query(max_length=64), channel: int = Query(ge=0), index: int | None = Index,
         image_id: str | None = ImageId, invert: str = Invert, ex=Depends(explorer)):
    """One max-pooling map of an image: the map it pooled, its own, and each window's winning pixel."""
    run = ex.finished(name)
    p = pool_winners(ex.model(run), ex.looked(run, index, image_id, invert).image, layer, channel)
    return {"layer": p.layer, "input_from": p.input_from, "channel": p.channel, "size": p.size, "stride": p.stride,
            "before": p.before.round(5).tolist(), "after": p.after.round(5).tolist(), "winners": p.winners.tolist()}


@watch_api.get("/runs/{name}/report.html", include_in_schema=False)
def report(name: Name, ex=Depends(explorer)):
    """The run's report, as `convlens train` (and a training started here) or `convlens report` wrote it."""
    run = ex.run(name)
    path = run.path / "report.html"
    if not path.is_file():
        raise HTTPException(404, f"run {name} has no report yet: `convlens report {name}` writes it")
    return FileResponse(path, media_type="text/html")
