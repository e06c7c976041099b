"""The web explorer (`convlens serve`): a JSON API over run folders and one static page (web/).

The routers (api.py) serve what the CLI and the report show, from the same functions
(views.py); the page (web/, ES modules served as they are, no build step) draws interactive
canvases for the feature maps and the lab, with figures.py's colour maps, and shows
figures.py's own PNGs for curves, kernels and explanations. The server only reads run
folders; training runs in its own process (jobs.py).

Safety: runs are looked up by name inside the runs folder only (no paths from a request),
uploads are capped and decoded by images.read_image (allow-listed formats, bomb guard), and
the page loads nothing from the network.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

import torch
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from .api import evaluate_api, inspect_api, lab_api, runs_api, train_api
from .engine import pick_device
from .errors import ConvlensError, RunError, SpecError
from .explorer import Explorer
from .images import MAX_FILE_BYTES
from .jobs import JobError, Jobs

WEB = Path(__file__).parent / "web"


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


async def convlens_error(request: Request, e: ConvlensError) -> JSONResponse:
    """convlens's own errors as answers: 404 for an unknown run or job, 409 for a busy job, else 400."""
    status = 404 if isinstance(e, RunError) and "no run" in str(e) else 400
    if isinstance(e, JobError):
        status = 404 if str(e).startswith("no job") else 409
    body = {"detail": str(e)}
    if isinstance(e, SpecError) and e.token_index:
        body["token"] = e.token_index
    return JSONResponse(body, status_code=status)


def create_app(runs_dir: str | Path = "runs", data_dir: str | None = None, device: str = "cpu") -> FastAPI:
    """The explorer's app over `runs_dir`; `data_dir` for datasets that are not in the default places;
    `device` where its models run and its training jobs train (auto | cpu | cuda)."""
    jobs = Jobs(data_dir, device)

    @asynccontextmanager
    async def lifespan(app):
        yield
        jobs.stop_all()              # a running training stops after its step and keeps a checkpoint

    # No /docs: Swagger UI loads from a CDN, and the page must work offline. The schema is served.
    app = FastAPI(title="convlens explorer", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url="/api/openapi.json")
    app.state.explorer, app.state.jobs = Explorer(Path(runs_dir), data_dir, pick_device(device)), jobs
    app.add_middleware(BodyLimit, limit=MAX_FILE_BYTES + (64 << 10))   # an image and its form fields
    app.add_exception_handler(ConvlensError, convlens_error)
    for router in (runs_api, evaluate_api, inspect_api, lab_api, train_api):
        app.include_router(router)
    app.add_api_route("/", lambda: FileResponse(WEB / "index.html"), include_in_schema=False)
    app.mount("/static", StaticFiles(directory=WEB), name="static")
    return app


def serve(runs_dir: str = "runs", host: str = "127.0.0.1", port: int = 8000, data_dir: str | None = None,
          device: str = "auto") -> None:
    """Run the explorer with uvicorn until Ctrl-C."""
    import uvicorn
    torch.set_num_threads(1)     # many small requests at once: one thread each beats two fighting over 2 cores
    uvicorn.run(create_app(runs_dir, data_dir, device), host=host, port=port, log_level="warning")
