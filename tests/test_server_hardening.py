"""The explorer against hostile inputs: damaged run folders and NaN in their files, numbers that overflow
to infinity, foreign Host and Origin headers (DNS rebinding, cross-site requests), clients that send
slowly (slowloris) and bad `serve` arguments."""

import asyncio
import json
import shutil
import socket
import threading
import time
import urllib.request

import pytest
from conftest import run_cli, serving

pytest.importorskip("fastapi", reason="the explorer's dependencies are in requirements.txt")
from fastapi.testclient import TestClient  # noqa: E402

from convlens.server import create_app  # noqa: E402

BASE = "http://127.0.0.1:8000"
RUN_PATHS = ["", "/curves.png", "/evaluation", "/cell?true=0&predicted=1", "/test/0.png", "/inspect?index=0",
             "/explain.png?index=0", "/predict?index=0", "/kernels", "/kernels/0.png",
             "/arithmetic?layer=0&channel=0&row=0&col=0&index=0"]


def strict_json(text: str):
    """JSON as a browser's JSON.parse reads it: NaN and Infinity are not JSON."""
    def refuse(name):
        raise ValueError(f"{name} is not JSON")
    return json.loads(text, parse_constant=refuse)


def half(data: bytes) -> bytes:
    return data[: len(data) // 2]


# What a damaged run folder may hold: (file, new bytes from the old, the file the answer must name).
DAMAGES = {
    "config-cut": ("config.json", half, "config.json"),
    "config-garbage": ("config.json", lambda b: b"\xff\xfe\x00garbage", "config.json"),
    "model-json-cut": ("model.json", half, "model.json"),
    "model-json-list": ("model.json", lambda b: b"[1, 2]", "model.json"),
    "metrics-cut": ("metrics.jsonl", lambda b: b[: b.index(b"\n") + 20], "metrics.jsonl"),
    "metrics-garbage": ("metrics.jsonl", lambda b: b"\x00\xff\xfe", "metrics.jsonl"),
    "metrics-strings": ("metrics.jsonl", lambda b: b'{"epoch": 1, "loss": "low", "accuracy": null}\n', "metrics.jsonl"),
    "metrics-no-loss": ("metrics.jsonl", lambda b: b'{"epoch": 1}\n', "metrics.jsonl"),
    "results-cut": ("results.json", half, "results.json"),
    "results-strings": ("results.json", lambda b: b'{"test_accuracy": "high", "test_loss": [1]}', "results.json"),
    "weights-cut": ("model.safetensors", half, "model.safetensors"),
    "weights-garbage": ("model.safetensors", lambda b: b"garbage" * 50, "model.safetensors"),
    "weights-empty": ("model.safetensors", lambda b: b"", "model.safetensors"),
}
NAN_RESULTS = b'{"test_loss": NaN, "test_accuracy": NaN, "epochs_run": 2, "interrupted": false}'
NAN_METRICS = (b'{"epoch": 1, "loss": NaN, "accuracy": 0.1, "val_loss": NaN, "val_accuracy": 0.1}\n'
               b'{"epoch": 2, "loss": Infinity, "accuracy": 0.2, "val_loss": 2.0, "val_accuracy": 0.2}\n')


@pytest.fixture(scope="module")
def damaged(tmp_path_factory, small_run, small_data_dir):
    """A runs folder with the real run, a NaN-holding copy and a damaged copy per DAMAGES entry."""
    runs = tmp_path_factory.mktemp("hostile") / "runs"
    for name in ["good", "nan", *DAMAGES]:
        shutil.copytree(small_run.path, runs / name)
    (runs / "nan" / "results.json").write_bytes(NAN_RESULTS)
    (runs / "nan" / "metrics.jsonl").write_bytes(NAN_METRICS)
    for name, (file, damage, _) in DAMAGES.items():
        (runs / name / file).write_bytes(damage((small_run.path / file).read_bytes()))
    app = create_app(runs, data_dir=str(small_data_dir))
    with TestClient(app, base_url=BASE, raise_server_exceptions=False) as client:
        yield client


# ---------------------------------------------------------------------------
# 1. damaged runs and NaN

def test_runs_list_survives_nan_and_damaged_runs(damaged):
    r = damaged.get("/api/runs")
    assert r.status_code == 200
    listed = {run["name"]: run for run in strict_json(r.text)}
    assert {"good", "nan"} <= set(listed)
    assert listed["nan"]["test_accuracy"] is None and listed["good"]["test_accuracy"] > 0.5
    assert not set(listed) & {"config-cut", "model-json-cut", "metrics-strings", "results-strings"}


def test_nan_in_a_run_is_null_in_every_answer(damaged):
    r = damaged.get("/api/runs/nan")
    assert r.status_code == 200
    detail = strict_json(r.text)
    assert detail["results"]["test_loss"] is None and detail["metrics"][0]["loss"] is None
    assert detail["metrics"][1]["loss"] is None and detail["metrics"][1]["val_loss"] == 2.0
    assert damaged.get("/api/runs/nan/curves.png").status_code == 200
    r = damaged.get("/api/compare", params={"runs": ["good", "nan"]})
    assert r.status_code == 200 and len(strict_json(r.text)["rows"]) == 2


@pytest.mark.parametrize("name", list(DAMAGES))
def test_a_damaged_run_is_a_json_400_naming_the_file(damaged, name):
    file = DAMAGES[name][2]
    for path in RUN_PATHS + [f"/api/compare?runs=good&runs={name}"]:
        url = path if path.startswith("/api/") else f"/api/runs/{name}{path}"
        r = damaged.get(url)
        assert r.status_code < 500, (url, r.status_code, r.text[:300])
        if r.status_code >= 400:
            assert r.headers["content-type"] == "application/json", (url, r.text[:200])
            message = strict_json(r.text)["detail"]
            assert r.status_code == 400 and file in message and "\n" not in message, (url, r.status_code, message)
    # the weights are read only when a model runs; every other file when the run is opened
    r = damaged.get(f"/api/runs/{name}/kernels" if file == "model.safetensors" else f"/api/runs/{name}")
    assert r.status_code == 400 and file in r.json()["detail"]


def test_an_unexpected_error_is_a_logged_json_500(damaged, monkeypatch, caplog):
    import convlens.views

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug\nsecond line")
    monkeypatch.setattr(convlens.views, "summary_of", broken)
    r = damaged.get("/api/runs/good")
    assert r.status_code == 500 and r.headers["content-type"] == "application/json"
    assert r.json() == {"detail": "internal error: ZeroDivisionError: a bug"}
    assert any("GET /api/runs/good" in rec.getMessage() and rec.exc_info for rec in caplog.records)


# ---------------------------------------------------------------------------
# 2. numbers that overflow to infinity

@pytest.mark.parametrize("body, field", [(b'{"epochs": 1e999}', "epochs"), (b'{"epochs": -1e999}', "epochs"),
                                         (b'{"lr": 1e999}', "lr"), (b'{"lr": NaN}', "lr"),
                                         (b'{"batch_size": 1e999}', "batch_size")])
def test_train_with_infinite_numbers_is_a_readable_422(damaged, body, field):
    r = damaged.post("/api/train", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    detail = strict_json(r.text)["detail"]
    assert isinstance(detail, str) and detail.startswith(f"{field} ") and "\n" not in detail
    r = damaged.post("/api/convolve", content=b'{"stride": 1e999}', headers={"content-type": "application/json"})
    assert r.status_code == 422 and strict_json(r.text)["detail"].startswith("stride ")


@pytest.mark.parametrize("body, said", [({"epochs": 500}, "epochs must be at most 200"),
                                        ({"epochs": 0}, "epochs must be at least 1"),
                                        ({"epochs": "many"}, "epochs must be a whole number"),
                                        ({"lr": 0}, "lr must be more than 0"),
                                        ({"name": "x" * 200}, "name must be at most 128 characters")])
def test_a_broken_rule_is_a_sentence_about_the_field(damaged, body, said):
    """What the page shows under the form: pydantic's 422 as a sentence, not its JSON."""
    r = damaged.post("/api/train", json=body)
    assert r.status_code == 422 and r.json() == {"detail": said}


# ---------------------------------------------------------------------------
# 3. Host and Origin

@pytest.fixture(scope="module")
def empty_runs(tmp_path_factory):
    return tmp_path_factory.mktemp("no-runs")


def statuses(app, hosts) -> dict:
    with TestClient(app, base_url=BASE) as client:
        return {h: client.get("/api/presets", headers={"host": h}).status_code for h in hosts}


GOOD_LOOPBACK = ["127.0.0.1", "127.0.0.1:8000", "localhost", "localhost:8000", "LocalHost:8000", "[::1]", "[::1]:8000"]
BAD = ["evil.example.com", "evil.example.com:8000", "127.0.0.1.evil.example.com", "localhost.evil.example.com:8000",
       "127.0.0.1:80x", "[::1", "::1", "", "localhost:8000@evil.example.com", "10.0.0.5:8000"]


def test_only_the_servers_own_host_names_are_answered(empty_runs):
    got = statuses(create_app(empty_runs), GOOD_LOOPBACK + BAD)
    assert got == {**{h: 200 for h in GOOD_LOOPBACK}, **{h: 400 for h in BAD}}
    with TestClient(create_app(empty_runs), base_url=BASE) as client:
        r = client.get("/api/runs", headers={"host": "evil.example.com"})
        assert r.status_code == 400 and "evil.example.com" in r.json()["detail"] and "\n" not in r.json()["detail"]
        assert client.get("/", headers={"host": "evil.example.com"}).status_code == 400


def test_a_public_host_adds_its_own_name(empty_runs):
    got = statuses(create_app(empty_runs, host="192.168.1.5"), ["192.168.1.5:8000", "localhost:8000", "10.0.0.5:8000",
                                                                 "evil.example.com:8000"])
    assert got == {"192.168.1.5:8000": 200, "localhost:8000": 200, "10.0.0.5:8000": 400, "evil.example.com:8000": 400}
    got = statuses(create_app(empty_runs, host="0.0.0.0"), ["10.0.0.5:8000", "[fe80::1]:8000", "evil.example.com"])
    assert got == {"10.0.0.5:8000": 200, "[fe80::1]:8000": 200, "evil.example.com": 400}


def test_state_changing_requests_from_another_origin_are_refused(empty_runs):
    with TestClient(create_app(empty_runs), base_url=BASE) as client:
        def stop(origin=None, host="127.0.0.1:8000"):    # no such job: 404 once past the check
            return client.post("/api/jobs/nope/stop", headers={"host": host, **({"origin": origin} if origin else {})})
        assert stop().status_code == 404                                   # curl, scripts: no Origin
        for own in ("http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000"):
            assert stop(own).status_code == 404, own
        assert stop("http://localhost", host="localhost").status_code == 404
        for foreign in ("http://evil.example.com", "http://127.0.0.1:9999", "https://127.0.0.1:8000", "null",
                        "http://127.0.0.1:8000.evil.example.com", "http://localhost:80"):
            r = stop(foreign)
            assert r.status_code == 403 and "Origin" in r.json()["detail"], foreign
        r = client.post("/api/train", json={"epochs": 1}, headers={"origin": "http://evil.example.com"})
        assert r.status_code == 403 and client.get("/api/jobs").json() == []
        assert client.get("/api/runs", headers={"origin": "http://evil.example.com"}).status_code == 200


# ---------------------------------------------------------------------------
# 4. slow clients, against a real server

@pytest.fixture(scope="module")
def live(empty_runs):
    with serving(empty_runs, "--device", "cpu") as port:
        yield port


def until_closed(sock: socket.socket, limit_s: float) -> tuple[float, bytes]:
    """Read until the server closes the connection: (seconds it took, what it said)."""
    t0, said = time.monotonic(), b""
    sock.settimeout(max(limit_s, 0.1))
    try:
        while chunk := sock.recv(4096):
            said += chunk
    except socket.timeout:
        return float("inf"), said
    except ConnectionResetError:
        pass
    return time.monotonic() - t0, said


def test_slow_clients_are_disconnected_and_others_served(live):
    address, host = ("127.0.0.1", live), f"Host: 127.0.0.1:{live}\r\n".encode()
    silent, half_line, trickle, slow_body, idle = (socket.create_connection(address) for _ in range(5))
    half_line.sendall(b"GET /api/pre")
    slow_body.sendall(b"POST /api/convolve HTTP/1.1\r\n" + host +
                      b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"kernel\":")
    idle.sendall(b"GET /api/presets HTTP/1.1\r\n" + host + b"\r\n")

    def drip():                      # the classic slowloris: a byte every 2 s, never a whole header
        for byte in b"GET /api/presets HTTP/1.1\r\nX-a: b":
            try:
                trickle.sendall(bytes([byte]))
            except OSError:
                return
            time.sleep(2)
    threading.Thread(target=drip, daemon=True).start()
    t0 = time.monotonic()
    with urllib.request.urlopen(f"http://127.0.0.1:{live}/api/presets", timeout=5) as r:   # served meanwhile
        assert r.status == 200 and json.load(r)
    assert time.monotonic() - t0 < 2

    seconds, said = until_closed(idle, 20)               # answered, then idle on keep-alive: closed in ~5 s
    assert said.startswith(b"HTTP/1.1 200") and seconds < 9
    results = {name: until_closed(sock, 20 - (time.monotonic() - t0))
               for name, sock in (("silent", silent), ("half_line", half_line), ("trickle", trickle),
                                  ("slow_body", slow_body))}
    for name, (seconds, said) in results.items():
        assert time.monotonic() - t0 < 16, (name, results)
        assert seconds != float("inf"), (name, results)
    assert results["silent"][1] == b""
    assert results["half_line"][1].startswith(b"HTTP/1.1 408") and results["trickle"][1].startswith(b"HTTP/1.1 408")
    assert results["slow_body"][1].startswith(b"HTTP/1.1 408") and b"request body" in results["slow_body"][1]
    for sock in (silent, half_line, trickle, slow_body, idle):
        sock.close()


@pytest.mark.parametrize("pace_s, cut_at_s", [(None, 0.5), (0.1, 1.0)])
def test_a_body_that_stalls_or_trickles_is_cut_off(pace_s, cut_at_s):
    """BodyGuard alone, on a short clock: a body that stops (no byte for timeout_s) or that drips a byte
    every pace_s for ever (never silent that long; cut at deadline_s) is answered 408, and the app's
    own answer to the disconnect it is told of is dropped."""
    from convlens.guards import BodyGuard

    async def app(scope, receive, send):              # reads the whole body, then answers
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"read it all"})

    async def client():
        await asyncio.sleep(pace_s if pace_s else 3600)
        return {"type": "http.request", "body": b"x", "more_body": True}
    sent = []

    async def send(message):
        sent.append(message)
    t0 = time.monotonic()
    asyncio.run(BodyGuard(app, limit=1 << 20, timeout_s=0.5, deadline_s=1.0)({"type": "http", "headers": []},
                                                                            client, send))
    assert cut_at_s - 0.05 < time.monotonic() - t0 < cut_at_s + 0.5
    assert [m.get("status") for m in sent] == [408, None] and (b"connection", b"close") in sent[0]["headers"]
    assert "too slow" in json.loads(sent[1]["body"])["detail"]


# ---------------------------------------------------------------------------
# 5. bad `serve` arguments

@pytest.mark.parametrize("args, fragment", [(["--port", "70000"], "1 to 65535"), (["--port", "0"], "at least 1"),
                                            (["--port", "-5"], "at least 1")])
def test_serve_refuses_a_bad_port_in_one_line(tmp_path, args, fragment):
    code, out, err = run_cli("serve", "--runs-dir", tmp_path, *args, timeout=60)
    assert code == 2 and err.count("\n") == 1 and err.startswith("convlens: error: argument --port") and fragment in err


def test_serve_refuses_a_runs_dir_that_is_a_file_in_one_line(tmp_path):
    (tmp_path / "runs").write_text("not a folder")
    code, out, err = run_cli("serve", "--runs-dir", tmp_path / "runs", "--device", "cpu", timeout=60)
    assert code == 2 and err.count("\n") == 1 and err.startswith("convlens: error: ") and "is a file" in err
    code, out, err = run_cli("serve", "--runs-dir", tmp_path / "runs" / "inside", "--device", "cpu", timeout=60)
    assert code == 2 and err.count("\n") == 1 and err.startswith("convlens: error: ") and "--runs-dir" in err
