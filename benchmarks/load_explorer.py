"""Load check of the web explorer: N concurrent clients classifying and inspecting images for T seconds.

    .venv/bin/python benchmarks/load_explorer.py --run RUN [--clients 8] [--seconds 30]

Starts `convlens serve` on a free loopback port over the run's folder, then each client loops:
three predictions of random test images, then one full inspection (every layer's maps, LayerCAM,
saliency) or, every other round, the Network tab's overview (the same with every class's
probability); every fifth round what opening a map there asks (one pixel's arithmetic over every
input channel of the last conv layer, one max-pooling map's winners), and every tenth round an
upload of a PNG and its prediction. Bounded in time and in
requests; only 127.0.0.1 is contacted. Prints p50/p90/p99 latency per endpoint and the errors,
and writes benchmarks/results/load-explorer.json. Targets (issues 6, 12): predict p99 ≤ 100 ms, overview and inspect p99 ≤ 300 ms, no errors.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import platform
import random
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
from PIL import Image


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    img = np.full((120, 90), 245, np.uint8)
    img[10:110, 25:65] = rng.integers(0, 60, (100, 40))
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    return buf.getvalue()


def multipart(data: bytes, name: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


KINDS = ("predict", "inspect", "overview", "arithmetic", "pool", "upload")


class Client(threading.Thread):
    def __init__(self, port: int, run: str, deadline: float, max_requests: int, seed: int, test_images: int,
                 layers: dict):
        super().__init__(daemon=True)
        self.port, self.run_name, self.deadline, self.max_requests = port, run, deadline, max_requests
        self.rng, self.test_images, self.layers = random.Random(seed), test_images, layers
        self.times: dict[str, list[float]] = {k: [] for k in KINDS}
        self.errors: list[str] = []

    def request(self, kind: str, method: str, path: str, body: bytes | None = None, ctype: str | None = None):
        t0 = time.perf_counter()
        try:
            self.conn.request(method, path, body=body, headers={"Content-Type": ctype} if ctype else {})
            resp = self.conn.getresponse()
            data = resp.read()
            ok = resp.status == 200
        except (OSError, http.client.HTTPException) as e:
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            self.errors.append(f"{kind}: {type(e).__name__}: {e}")
            return None
        self.times[kind].append(time.perf_counter() - t0)
        if not ok:
            self.errors.append(f"{kind}: HTTP {resp.status} {data[:120]!r}")
            return None
        return json.loads(data)

    def run(self) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        base, n, rounds = f"/api/runs/{self.run_name}", 0, 0
        while time.monotonic() < self.deadline and n < self.max_requests:
            for _ in range(3):
                self.request("predict", "GET", f"{base}/predict?index={self.rng.randrange(self.test_images)}")
            index = self.rng.randrange(self.test_images)
            if rounds % 2:
                self.request("overview", "GET", f"{base}/inspect?index={index}&k={self.layers['classes']}")
            else:
                self.request("inspect", "GET", f"{base}/inspect?index={index}")
            n += 4
            if rounds % 5 == 0:
                conv, (h, w) = self.layers["conv"]
                self.request("arithmetic", "GET", f"{base}/arithmetic?layer={conv}&channel={self.rng.randrange(8)}"
                             f"&row={self.rng.randrange(h)}&col={self.rng.randrange(w)}&index={index}")
                if self.layers["pool"]:
                    self.request("pool", "GET", f"{base}/pool?layer={self.layers['pool']}&channel=0&index={index}")
                n += 2
            if rounds % 10 == 0:
                body, ctype = multipart(png(self.rng.randrange(1000)), "load.png")
                up = self.request("upload", "POST", "/api/upload", body, ctype)
                if up:
                    self.request("predict", "GET", f"{base}/predict?image_id={up['image_id']}")
                n += 2
            rounds += 1
        self.conn.close()


def machine() -> str:
    """CPU model, core count and whether it has AVX-512 (it decides bf16 on the CPU)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
        model = next(l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith("model name"))
        simd = "AVX-512" if "avx512f" in info else "AVX2, no AVX-512" if "avx2" in info else "no AVX2"
    except (OSError, StopIteration):
        model, simd = platform.processor() or platform.machine(), "?"
    return f"{model}, {os.cpu_count()} CPUs ({simd}), Python {platform.python_version()}, {platform.system()}"


def percentiles(xs: list[float]) -> dict:
    if not xs:
        return {"n": 0}
    a = np.array(xs) * 1000
    return {"n": len(xs), "p50_ms": round(float(np.percentile(a, 50)), 2), "p90_ms": round(float(np.percentile(a, 90)), 2),
            "p99_ms": round(float(np.percentile(a, 99)), 2), "max_ms": round(float(a.max()), 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="run directory to serve (its parent is the runs folder)")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--max-requests", type=int, default=20000, help="per client, a bound besides the time")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default="benchmarks/results/load-explorer.json")
    args = ap.parse_args()
    run = Path(args.run).resolve()
    port = free_port()
    cmd = [sys.executable, "-m", "convlens", "serve", "--runs-dir", str(run.parent), "--port", str(port)]
    cmd += ["--data-dir", args.data_dir] if args.data_dir else []
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for _ in range(300):
            try:
                conn.request("GET", f"/api/runs/{run.name}/predict?index=0")      # loads model and data
                resp = conn.getresponse()
                info = resp.read()
                if resp.status != 200:
                    raise SystemExit(f"server answered {resp.status}: {info[:200]!r}")
                break
            except OSError:
                if server.poll() is not None:
                    raise SystemExit(server.stderr.read().decode())
                time.sleep(0.2)
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("GET", f"/api/runs/{run.name}/inspect?index=0")
        conn.getresponse().read()
        conn.request("GET", f"/api/runs/{run.name}")
        detail = json.loads(conn.getresponse().read())
        test_images, summary = detail["config"]["resolved"]["test_images"], detail["summary"]["layers"]
        conv = [l for l in summary if l["type"] == "Conv2D"][-1]
        layers = {"classes": summary[-1]["output_shape"][0], "conv": (conv["name"], conv["output_shape"][1:]),
                  "pool": next((l["name"] for l in summary if l["type"] == "MaxPooling2D"), None)}
        deadline = time.monotonic() + args.seconds
        clients = [Client(port, run.name, deadline, args.max_requests, seed, test_images, layers)
                   for seed in range(args.clients)]
        t0 = time.perf_counter()
        for c in clients:
            c.start()
        for c in clients:
            c.join(args.seconds + 120)
        wall = time.perf_counter() - t0
    finally:
        server.terminate()
        server.wait(timeout=30)
    result = {"machine": machine(), "date": time.strftime("%Y-%m-%d"),
              "clients": args.clients, "seconds": round(wall, 1), "run": run.name,
              "endpoints": {k: percentiles([t for c in clients for t in c.times[k]]) for k in KINDS},
              "errors": [e for c in clients for e in c.errors][:20],
              "error_count": sum(len(c.errors) for c in clients)}
    result["requests_per_s"] = round(sum(v["n"] for v in result["endpoints"].values()) / wall, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{args.clients} clients for {wall:.1f} s against {run.name}: {result['requests_per_s']} requests/s, "
          f"{result['error_count']} errors")
    print(f"{'endpoint':10} {'n':>6} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for k, v in result["endpoints"].items():
        if v["n"]:
            print(f"{k:10} {v['n']:>6} {v['p50_ms']:>8} {v['p90_ms']:>8} {v['p99_ms']:>8} {v['max_ms']:>8}")
    print(f"JSON: {args.out}")
    return 1 if result["error_count"] else 0


if __name__ == "__main__":
    sys.exit(main())
