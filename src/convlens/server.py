"""The web explorer (`convlens serve`): a JSON API over run folders and one static page (web/).

The routers (api.py) serve what the CLI and the report show, from the same functions
(views.py); the page (web/, ES modules served as they are, no build step) draws interactive
canvases for the feature maps and the lab, with figures.py's colour maps, and shows
figures.py's own PNGs for curves, kernels and explanations. The server only reads run
folders; training runs in its own process (jobs.py).

Safety: runs are looked up by name inside the runs folder only (no paths from a request),
uploads are capped and decoded by images.read_image (allow-listed formats, bomb guard), and
the page loads nothing from the network. Every request passes, in order: the Host and Origin
check (HostCheck: a DNS-rebinding page or another site cannot drive the server through the
user's browser), the body's size and pace (BodyGuard), and a net for anything unexpected
(InternalErrors: a JSON 500, never a bare one). Every answer is valid JSON (FiniteJSON: a NaN
in a run's files is null), and a client must send its headers in time (TimedH11): guards.py.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from .api import evaluate_api, inspect_api, lab_api, runs_api, train_api
from .engine import pick_device
from .errors import ConvlensError, RunError, SpecError
from .explain_api import check_api, features_api
from .watch_api import watch_api
from .explorer import Explorer
from .guards import KEEP_ALIVE_S, BodyGuard, FiniteJSON, HostCheck, InternalErrors, TimedH11
from .images import MAX_FILE_BYTES
from .jobs import JobError, Jobs

WEB = Path(__file__).parent / "web"


# ---------------------------------------------------------------------------
# Error answers and the app

async def convlens_error(request: Request, e: ConvlensError) -> JSONResponse:
    """convlens's own errors as answers: 404 for an unknown run or job, 409 for a busy job, else 400
    (a damaged run folder included: RunError naming the file)."""
    status = 404 if isinstance(e, RunError) and "no run" in str(e) else 400
    if isinstance(e, JobError):
        status = 404 if str(e).startswith("no job") else 409
    body = {"detail": " ".join(str(e).split())}                  # one line, whatever the message held
    if isinstance(e, SpecError) and e.token_index:
        body["token"] = e.token_index
    return FiniteJSON(body, status_code=status)


# What a rule broken says, as a sentence about the field (pydantic's error types, ctx its limits).
RULES = {"greater_than_equal": "must be at least {ge}", "less_than_equal": "must be at most {le}",
         "greater_than": "must be more than {gt}", "less_than": "must be less than {lt}",
         "int_parsing": "must be a whole number", "int_type": "must be a whole number",
         "int_from_float": "must be a whole number", "float_parsing": "must be a number",
         "float_type": "must be a number", "finite_number": "must be a finite number", "missing": "is required",
         "string_too_long": "must be at most {max_length} characters", "string_type": "must be text",
         "too_short": "needs at least {min_length}", "too_long": "takes at most {max_length}"}


def plain_error(err: dict) -> str:
    """One pydantic error as a sentence: "epochs must be at most 200", "baseline must be one of mean, blur, black"."""
    where = ".".join(map(str, err["loc"][1:])) or str(err["loc"][0])
    ctx = {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in (err.get("ctx") or {}).items()}
    if err["type"] == "json_invalid":
        return f"the request body is not JSON ({ctx.get('error', 'invalid')} at character {where})"
    if err["type"] == "string_pattern_mismatch" and str(ctx.get("pattern", "")).startswith("^("):
        return f"{where} must be one of {', '.join(ctx['pattern'][2:-2].split('|'))}"
    rule = RULES.get(err["type"])
    return f"{where} {rule.format(**ctx)}" if rule else f"{where}: {err['msg']}"


async def invalid_request(request: Request, e: RequestValidationError) -> JSONResponse:
    """422 with one readable sentence ("epochs must be at most 200"); FastAPI's own answer echoes the
    input, and an input of 1e999 (infinity) made that answer itself fail (500)."""
    return FiniteJSON({"detail": "; ".join(map(plain_error, e.errors())) or "invalid request"}, status_code=422)


def create_app(runs_dir: str | Path = "runs", data_dir: str | None = None, device: str = "cpu",
               host: str = "127.0.0.1") -> FastAPI:
    """The explorer's app over `runs_dir`; `data_dir` for datasets that are not in the default places;
    `device` where its models run and its training jobs train (auto | cpu | cuda); `host` the address
    it is served on, whose names (and the loopback names) are the only Host headers it answers."""
    jobs = Jobs(data_dir, device)

    @asynccontextmanager
    async def lifespan(app):
        yield
        jobs.stop_all()              # a running training stops after its step and keeps a checkpoint

    # No /docs: Swagger UI loads from a CDN, and the page must work offline. The schema is served.
    app = FastAPI(title="convlens explorer", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url="/api/openapi.json", default_response_class=FiniteJSON)
    app.state.explorer, app.state.jobs = Explorer(Path(runs_dir), data_dir, pick_device(device)), jobs
    # Added innermost first: a request meets HostCheck, then BodyGuard, then InternalErrors.
    app.add_middleware(InternalErrors)
    app.add_middleware(BodyGuard, limit=MAX_FILE_BYTES + (64 << 10))   # an image and its form fields
    app.add_middleware(HostCheck, host=host)
    app.add_exception_handler(ConvlensError, convlens_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    for router in (runs_api, evaluate_api, inspect_api, lab_api, train_api, check_api, features_api, watch_api):
        app.include_router(router)
    app.add_api_route("/", lambda: FileResponse(WEB / "index.html"), include_in_schema=False)
    app.mount("/static", StaticFiles(directory=WEB), name="static")
    return app


def serve(runs_dir: str = "runs", host: str = "127.0.0.1", port: int = 8000, data_dir: str | None = None,
          device: str = "auto") -> None:
    """Run the explorer with uvicorn until Ctrl-C."""
    import uvicorn
    # python-multipart logs every malformed upload it meets ("Expected boundary character 45…") on
    # the server's terminal; the client already gets a 400 saying so.
    logging.getLogger("python_multipart").setLevel(logging.CRITICAL)
    torch.set_num_threads(1)     # many small requests at once: one thread each beats two fighting over 2 cores
    uvicorn.run(create_app(runs_dir, data_dir, device, host), host=host, port=port, log_level="warning",
                http=TimedH11, timeout_keep_alive=KEEP_ALIVE_S)
