"""The explorer's API for checked explanations and for what filters look for: the same views
(explanations.py, feature_views.py) that `convlens explain --check`, `convlens features` and the
report use, as JSON with their PNGs inline.
"""

from __future__ import annotations

import base64

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from . import explanations, feature_views, views
from .attribution import methods_for
from .baselines import BASELINES, DEFAULT_BASELINE
from .models import conv_layer

# Not imported from api.py, which would put this module a level above it (tests/test_structure.py's 8 levels).
check_api, features_api = APIRouter(), APIRouter()
Name = str                     # a run's name; Explorer.run refuses anything that is not one
Index = Query(None, ge=0, description="a test image")
ImageId = Query(None, max_length=64, description="an uploaded image instead")
Invert = Query("auto", pattern=f"^({'|'.join(views.INVERT)})$")
Baseline = Query(DEFAULT_BASELINE, pattern=f"^({'|'.join(BASELINES)})$")


def explorer(request: Request):
    return request.app.state.explorer


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


@check_api.get("/api/runs/{name}/check")
def check(name: Name, index: int | None = Index, image_id: str | None = ImageId, invert: str = Invert,
          methods: str = Query("all", max_length=200), baseline: str = Baseline,
          ex=Depends(explorer)):
    """Every attribution method's map of one image, the sanity check of each (cascading randomisation,
    with the edge-detector control) and the deletion curves, as `convlens explain --check --deletion`."""
    run = ex.finished(name)
    model, looked = ex.model(run), ex.looked(run, index, image_id, invert)
    chosen = methods_for(model, methods)
    mean = ex.mean_pixel(run) if baseline == "mean" else None
    with ex.heavy:
        c = explanations.checked(model, looked, run.classes, chosen, baseline, mean)
        pictures = {"methods_png": data_url(c.maps.png(looked, run.classes)),
                    "strip_png": data_url(c.check.png(looked.image)),
                    "deletion_png": data_url(c.deletion.png(run.classes))}
    return {"label": looked.label, "target": run.classes[c.maps.target], "methods": chosen,
            "ig": c.maps.ig_line() if c.maps.ig is not None else None, "about": explanations.SANITY_ABOUT,
            "check": c.check.to_dict(), "deletion": c.deletion.to_dict(), **pictures}


@features_api.get("/api/runs/{name}/features/{layer}/{f}")
def filter_features(name: Name, layer: str, f: int, ex=Depends(explorer)):
    """What filter f of a conv layer looks for: its top 9 test crops (each with its test image, class and
    activation) and the input optimised to excite it, as `convlens features` draws them."""
    run = ex.finished(name)
    model = ex.model(run)
    _, info = conv_layer(model, layer, blocks=True)
    if not 0 <= f < info.out_shape[0]:
        raise HTTPException(400, f"filter {f} is out of range: {info.name} has {info.out_shape[0]} filters "
                                 f"(0–{info.out_shape[0] - 1})")
    with ex.heavy:
        top, optimised = ex.top_crops(run, info.name), ex.optimised(run, info.name, f)
    return feature_views.filter_dict(top, f, optimised, run.classes, ex.dataset(run).test_y)
