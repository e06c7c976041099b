"""The explorer's HTTP guards: who may talk to it, how much and how fast, and what every answer is.

    HostCheck       only the host names the server was started for (DNS rebinding), and state-changing
                    requests from its own page only (another site's page in the user's browser: 403)
    BodyGuard       a request body over the limit refused as it arrives (413); one sent too slowly cut
                    off (408)
    InternalErrors  an exception nothing handled: logged, and a JSON 500 rather than a bare page
    FiniteJSON      answers that are valid JSON: a NaN in a run's files is null
    TimedH11        uvicorn's HTTP/1.1 protocol with a deadline for a request's headers (slowloris)
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import math
import re
import socket

import h11
from fastapi.responses import JSONResponse
from uvicorn.protocols.http.h11_impl import H11Protocol

LOOPBACK = ("127.0.0.1", "localhost", "::1")
WILDCARD = ("0.0.0.0", "::")               # every address of this machine
# Slow clients (slowloris): a request's line and headers are a few hundred bytes, sent at once by any
# real client; 10 s leaves room for a congested link. The body may take longer (a 10 MiB upload), but
# never a 10 s silence while the app waits for it, nor over 120 s in all (10 MiB at 0.7 Mbit/s), so
# that a byte every 9 s cannot hold a connection either. An idle keep-alive connection: 5 s.
HEADER_TIMEOUT_S, BODY_TIMEOUT_S, BODY_DEADLINE_S, KEEP_ALIVE_S = 10.0, 10.0, 120.0, 5
log = logging.getLogger("convlens.server")


def finite(obj):
    """`obj` with every NaN and infinity as None: JSON has no such numbers (Python's json writes them anyway)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


class FiniteJSON(JSONResponse):
    """JSON that a browser's JSON.parse accepts: non-finite floats (a diverged loss, an empty split's
    NaN test loss) become null. The walk runs only when plain encoding refuses them."""

    def render(self, content) -> bytes:
        try:
            return super().render(content)           # allow_nan=False: ValueError on NaN or infinity
        except ValueError:
            return super().render(finite(content))


async def answer(send, status: int, detail: str, close: bool = False) -> None:
    """Answer {"detail": …} straight from a middleware, before (or instead of) the app; close: and
    end the connection, whatever the client sends next."""
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------------------
# Hosts and origins: who may talk to the server

_HOST = re.compile(r"(\[[0-9a-f:.]+\]|[a-z0-9._-]+)(?::([0-9]{1,5}))?")        # name or [v6], then :port


def host_names(host: str) -> frozenset[str]:
    """The names a Host header may carry for a server listening on `host`: the loopback names, and
    `host` itself when it is another address (--public)."""
    names = {"127.0.0.1", "localhost", "[::1]"}
    if host not in LOOPBACK:
        names.add(f"[{host.lower()}]" if ":" in host else host.lower())
    if host in WILDCARD:             # reachable at any address of this machine, and by its name
        names.add(socket.gethostname().lower())     # (not getfqdn: a DNS lookup, slow offline)
    return frozenset(names)


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
        return True
    except ValueError:
        return False


class HostCheck:
    """ASGI middleware against DNS rebinding and cross-site requests, before any endpoint runs.

    A page on evil.example.com that rebinds its name to 127.0.0.1 reaches this server from the
    user's own browser, but its requests still say `Host: evil.example.com`: only the names the
    server was started for are served (400 otherwise). A wildcard --host (0.0.0.0, ::) also
    accepts any IP address, which no rebinding can put in a Host header. A state-changing
    request (POST, …) that carries an Origin must come from the server's own page (403 otherwise);
    one without Origin (curl, scripts) is not from a browser page and passes.
    """

    SAFE = ("GET", "HEAD", "OPTIONS")

    def __init__(self, app, host: str = "127.0.0.1"):
        self.app, self.names, self.any_ip = app, host_names(host), host in WILDCARD

    def allowed(self, name: str) -> bool:
        return name in self.names or (self.any_ip and is_ip(name))

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        host = headers.get(b"host", b"").decode("latin-1").lower()
        m = _HOST.fullmatch(host)
        if not m or not self.allowed(m[1]):
            return await answer(send, 400, f"this server does not answer for host {host[:100]!r} "
                                           f"(allowed: {', '.join(sorted(self.names))})")
        origin = headers.get(b"origin")
        if origin is not None and scope["method"] not in self.SAFE and not self.own(origin.decode("latin-1"), m[2]):
            return await answer(send, 403, f"{scope['method']} from another site's page "
                                           f"(Origin {origin.decode('latin-1')[:100]!r}) refused")
        await self.app(scope, receive, send)

    def own(self, origin: str, port: str | None) -> bool:
        """Whether an Origin is this server's page: http, an allowed name, the port the request came to."""
        origin = origin.lower()
        o = _HOST.fullmatch(origin.removeprefix("http://")) if origin.startswith("http://") else None
        return bool(o) and self.allowed(o[1]) and (o[2] or "80") == (port or "80")


# ---------------------------------------------------------------------------
# The request body: its size and its pace

class BodyGuard:
    """ASGI middleware over a request body. Over `limit` bytes: 413 as it arrives, before the
    multipart parser spools it to disk (a declared Content-Length is checked up front). No bytes
    for `timeout_s` while the app waits for more, or not all of it `deadline_s` after the app began
    reading: 408 and the connection closed, so a client that sends its body slowly (or not at all)
    holds no connection and no worker thread for long."""

    def __init__(self, app, limit: int, timeout_s: float = BODY_TIMEOUT_S, deadline_s: float = BODY_DEADLINE_S):
        self.app, self.limit, self.timeout_s, self.deadline_s = app, limit, timeout_s, deadline_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await answer(send, 413, self.too_large)
        seen, started, refused, complete, deadline = 0, False, False, False, None
        clock = asyncio.get_running_loop().time

        async def refuse(status: int, detail: str):
            nonlocal refused
            refused = True
            if not started:
                await answer(send, status, detail, close=status == 408)
            return {"type": "http.disconnect"}        # the app stops reading; its own answer is dropped

        async def guarded():
            nonlocal seen, complete, deadline
            if refused:
                return {"type": "http.disconnect"}
            if complete:                # the whole body is in: what follows is a wait for the client to leave
                return await receive()
            deadline = deadline or clock() + self.deadline_s
            try:
                message = await asyncio.wait_for(receive(), min(self.timeout_s, deadline - clock()))
            except asyncio.TimeoutError:
                return await refuse(408, f"request body too slow: nothing for {self.timeout_s:g} s, or not "
                                         f"all of it in {self.deadline_s:g} s")
            seen += len(message.get("body", b""))
            complete = not message.get("more_body", False)
            return await refuse(413, self.too_large) if seen > self.limit else message

        async def tracked(message):
            nonlocal started
            if refused:
                return                    # the app's own answer to the "disconnect": already answered
            started = started or message["type"] == "http.response.start"
            await send(message)
        await self.app(scope, guarded, tracked)

    @property
    def too_large(self) -> str:
        return "request body over the %d MiB limit" % (self.limit >> 20)


class InternalErrors:
    """ASGI middleware: an exception no handler took (a bug, or damage no reader checks for yet) is
    logged with its traceback and answered 500 with a one-line JSON detail, not a bare text page."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracked(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)
        try:
            await self.app(scope, receive, tracked)
        except Exception as e:
            log.exception("internal error in %s %s", scope["method"], scope["path"])
            if started:
                raise                    # half an answer is out: the server closes the connection
            first_line = (str(e).splitlines() or [""])[0][:200]
            await answer(send, 500, f"internal error: {type(e).__name__}: {first_line}")


# ---------------------------------------------------------------------------
# Serving

_LATE = json.dumps({"detail": f"request headers not received within {HEADER_TIMEOUT_S:g} s"}).encode()
REQUEST_TIMEOUT = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
                   b"content-length: %d\r\n\r\n%s" % (len(_LATE), _LATE))


class TimedH11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a deadline for a request's headers. uvicorn waits forever for
    a client that opens a connection and sends half a request line (its keep-alive timer starts only
    after a first answer, and any byte stops it). Here, from the moment the connection is ready for a
    request (opened, or the last answer sent), the whole request line and headers must arrive within
    HEADER_TIMEOUT_S: a connection that sent nothing is closed quietly, a half-sent request gets 408."""

    deadline: asyncio.TimerHandle | None = None
    waiting_after = None                  # the request cycle the deadline was set after (None: a new connection)

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm()

    def handle_events(self) -> None:
        super().handle_events()
        if self.deadline is not None and self.cycle is not self.waiting_after:
            self._disarm()                # a new request's headers are in: the app has it now

    def on_response_complete(self) -> None:
        if not self.transport.is_closing():
            self._arm()                   # before uvicorn handles a pipelined request (which disarms)
        super().on_response_complete()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self.waiting_after = self.cycle
        self.deadline = self.loop.call_later(HEADER_TIMEOUT_S, self._too_slow)

    def _disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _too_slow(self) -> None:
        self.deadline = None
        if not self.transport.is_closing():
            if self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]:     # part of a request came
                self.transport.write(REQUEST_TIMEOUT)
            self.transport.close()
