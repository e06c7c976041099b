"""The explorer's JSON API: every endpoint with valid and invalid input, upload limits, path safety, jobs."""

import base64
import io
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

from convlens.attribution import grad_cam
from convlens.images import MAX_FILE_BYTES
from convlens.inspect import activations
from convlens.jobs import Job

fastapi = pytest.importorskip("fastapi", reason="the explorer's dependencies are in requirements.txt")
from fastapi.testclient import TestClient  # noqa: E402

from convlens.server import create_app  # noqa: E402


@pytest.fixture(scope="module")
def client(tmp_path_factory, small_run, small_data_dir):
    runs = tmp_path_factory.mktemp("served") / "runs"
    shutil.copytree(small_run.path, runs / "small")
    app = create_app(runs, data_dir=str(small_data_dir))
    with TestClient(app, base_url="http://127.0.0.1:8000") as c:
        c.runs = runs
        yield c


def png_bytes(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def test_presets_summary_and_spec_errors(client):
    assert {"seed", "dense"} <= {p["name"] for p in client.get("/api/presets").json()}
    s = client.get("/api/summary", params={"model": "seed"}).json()
    assert s["total_params"] == 243786 and [l["params"] for l in s["layers"]] == [640, 0, 36928, 0, 0, 204928, 1290]
    assert s["layers"][0]["arithmetic"] == "64 × (3×3×1 + 1) = 640"
    r = client.get("/api/summary", params={"model": "conv64-pool-dense"})
    assert r.status_code == 400 and r.json()["token"] == 3 and "dense needs a width" in r.json()["detail"]
    r = client.get("/api/summary", params={"model": "conv8k9-pool-flatten-dense10", "size": 8})
    assert r.status_code == 400 and r.json()["token"] == 1
    assert client.get("/api/summary", params={"size": 0}).status_code == 422


def test_runs_list_detail_and_unknown_or_hostile_names(client):
    runs = client.get("/api/runs").json()
    assert [r["name"] for r in runs] == ["small"] and runs[0]["state"] == "finished"
    d = client.get("/api/runs/small").json()
    assert len(d["metrics"]) == 2 and d["summary"]["total_params"] == 243786 and "test_accuracy" in d["results"]
    for name in ("nope", "..%2F..%2Fetc", "%2Fetc%2Fpasswd", "..", "small%2F..%2F..", "a b"):
        r = client.get(f"/api/runs/{name}")
        assert r.status_code == 404, (name, r.status_code)
        assert client.get(f"/api/runs/{name}/test/0.png").status_code == 404
    assert client.get("/static/../runs/small/config.json").status_code == 404


def test_a_finished_run_without_its_weights_is_listed_as_such(client):
    """results.json says finished, model.safetensors is gone (a partial copy): the list says so, and the
    views answer 409, not 'finished' and then an error on every tab."""
    shutil.copytree(client.runs / "small", client.runs / "copied")
    (client.runs / "copied" / "model.safetensors").unlink()
    try:
        states = {r["name"]: r["state"] for r in client.get("/api/runs").json()}
        assert states == {"small": "finished", "copied": "weights missing"}
        assert client.get("/api/runs/copied/evaluation").status_code == 409
    finally:
        shutil.rmtree(client.runs / "copied")


def test_evaluation_cells_and_test_images(client):
    ev = client.get("/api/runs/small/evaluation").json()
    confusion = np.array(ev["confusion"])
    assert confusion.sum() == ev["images"] == 1000
    assert ev["accuracy"] == pytest.approx(np.trace(confusion) / 1000)
    t, p = np.unravel_index(np.argmax(confusion - np.diag(np.diag(confusion))), confusion.shape)
    cell = client.get("/api/runs/small/cell", params={"true": int(t), "predicted": int(p)}).json()
    assert cell["count"] == confusion[t, p] and len(cell["images"]) == min(60, cell["count"])
    probs = [im["probability"] for im in cell["images"]]
    assert probs == sorted(probs, reverse=True)
    assert client.get("/api/runs/small/cell", params={"true": 10, "predicted": 0}).status_code == 400
    r = client.get(f"/api/runs/small/test/{cell['images'][0]['index']}.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size == (28, 28)
    assert client.get("/api/runs/small/test/1000.png").status_code == 400


def test_kernels(client):
    ks = client.get("/api/runs/small/kernels").json()
    assert [k["layer"] for k in ks] == ["conv2d_1", "conv2d_2"]
    assert ks[0]["shape"] == [64, 1, 3, 3] and ks[1]["shape"] == [64, 64, 3, 3] and ks[1]["shown_inputs"] == 8


def test_upload_accepts_images_and_refuses_the_rest(client):
    trouser = Image.new("L", (90, 120), 255)
    trouser.paste(20, (30, 10, 60, 110))
    r = client.post("/api/upload", files={"file": ("t.jpg", png_bytes(trouser.convert("RGB"), "JPEG"), "image/jpeg")})
    assert r.status_code == 200 and r.json()["format"] == "JPEG"
    for name, data, status, fragment in (
            ("notes.png", b"this is text", 400, "not an image"),
            ("bomb.png", png_bytes(Image.new("1", (20000, 20000))), 400, "bomb"),
            ("x.tif", png_bytes(Image.new("L", (8, 8)), "TIFF"), 400, "TIFF images are not accepted"),
            ("huge.png", b"\x89PNG" + b"\0" * MAX_FILE_BYTES, 413, "20 MiB limit")):
        r = client.post("/api/upload", files={"file": (name, data, "image/png")})
        assert r.status_code == status and fragment in r.json()["detail"], (name, r.json())
    assert client.post("/api/upload").status_code == 422
    # Refused as it arrives, whatever the client declares: no Content-Length (chunked), or a false one.
    def chunks():
        yield b'--x\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n\r\n'
        for _ in range(25):
            yield b"\0" * (1 << 20)
        yield b"\r\n--x--\r\n"
    r = client.post("/api/upload", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    r = client.post("/api/upload", content=b"x", headers={"Content-Length": str(1 << 30),
                                                          "Content-Type": "multipart/form-data; boundary=x"})
    assert r.status_code == 413


def test_inspect_and_arithmetic_agree_with_the_model(client, small_run):
    r = client.get("/api/runs/small/inspect", params={"index": 0}).json()
    assert r["true_class"] == "Ankle boot" and len(r["layers"]) == 7
    assert r["layers"][0]["maps"]["shape"] == [64, 26, 26] and sum(t["probability"] for t in r["top"]) <= 1.0001
    assert np.array(r["saliency"]).shape == (28, 28)
    # The Network view's call: the same layers and top-k from the forward pass alone, no maps computed.
    bare = client.get("/api/runs/small/inspect", params={"index": 0, "explain": "false"}).json()
    assert bare["layers"] == r["layers"] and bare["cam"] is None and bare["saliency"] is None
    assert [t["class"] for t in bare["top"]] == [t["class"] for t in r["top"]]
    np.testing.assert_allclose([t["probability"] for t in bare["top"]], [t["probability"] for t in r["top"]],
                               atol=1e-6)
    model = small_run.load_model()
    data = client.app.state.explorer.dataset(small_run)
    for method, name in (("layercam", "LayerCAM"), ("gradcam", "Grad-CAM")):
        cam = client.get("/api/runs/small/inspect", params={"index": 0, "cam": method}).json()["cam"]
        assert cam["method"] == name and cam["layer"] == "conv2d_2"
        np.testing.assert_allclose(cam["map"], grad_cam(model, data.test_x[0], method=method).cam, atol=1e-4)
    truth = activations(model, data.test_x[0])
    for layer, channel, row, col in (("conv2d_1", 6, 12, 14), ("conv2d_2", 3, 5, 5), ("conv2d_2", 63, 0, 10)):
        a = client.get("/api/runs/small/arithmetic", params={"index": 0, "layer": layer, "channel": channel,
                                                              "row": row, "col": col}).json()
        i = 0 if layer == "conv2d_1" else 2
        assert a["value"] == pytest.approx(float(truth[i].output[channel, row, col]), abs=1e-5)
        assert a["total"] == pytest.approx(np.sum(np.array(a["products"])), abs=1e-5)
        assert a["pre_activation"] == pytest.approx(a["total"] + a["bias"])
    assert a["receptive_field"] == [0, 20, 7, 27]
    bad = [({"layer": "conv2d_9", "channel": 0, "row": 0, "col": 0, "index": 0}, 400),
           ({"layer": "conv2d_1", "channel": 64, "row": 0, "col": 0, "index": 0}, 400),
           ({"layer": "conv2d_1", "channel": 0, "row": 26, "col": 0, "index": 0}, 400),
           ({"layer": "conv2d_1", "channel": 0, "row": 0, "col": 0}, 400),
           ({"layer": "conv2d_1", "channel": 0, "row": 0, "col": 0, "index": 0, "image_id": "x"}, 400),
           ({"layer": "conv2d_1", "channel": 0, "row": 0, "col": 0, "image_id": "nope"}, 404)]
    for params, status in bad:
        assert client.get("/api/runs/small/arithmetic", params=params).status_code == status, params
    assert client.get("/api/runs/small/inspect", params={"index": 10**6}).status_code == 400
    assert client.get("/api/runs/nope/inspect", params={"index": 0}).status_code == 404


def test_inspect_an_upload_and_predict(client):
    shoe = Image.new("L", (200, 100), 240)
    shoe.paste(30, (20, 40, 180, 90))
    image_id = client.post("/api/upload", files={"file": ("shoe.png", png_bytes(shoe), "image/png")}).json()["image_id"]
    r = client.get("/api/runs/small/inspect", params={"image_id": image_id}).json()
    assert r["label"] == "shoe.png" and r["true"] is None
    inp = np.frombuffer(base64.b64decode(r["input"]["data"]), np.uint8).reshape(r["input"]["shape"])
    assert inp.shape == (1, 28, 28) and inp[0, 0, 0] == 0 and inp.max() > 200          # inverted, object on black
    p = client.get("/api/runs/small/predict", params={"image_id": image_id, "k": 3}).json()
    assert [t["class"] for t in p["top"]] == [t["class"] for t in r["top"][:3]]


def test_convolution_lab(client):
    r = client.post("/api/convolve", json={"kernel": "vertical", "index": 2}).json()
    assert r["shapes"] == "28×28 → 26×26 → 13×13" and "Trouser" in r["label"] and r["torch_max_diff"] < 1e-9
    assert r["result"]["shape"] == [1, 26, 26] and "sum of pixel × weight" in r["pixel"]["text"]
    r = client.post("/api/convolve", json={"kernel": "1,0,-1;2,0,-2;1,0,-1", "index": 2, "stride": 2, "padding": 1,
                                           "row": 3, "col": 4}).json()
    assert r["pixel"]["row"] == 3 and r["pixel"]["col"] == 4 and r["kernel_name"].startswith("custom")
    for body, status in (({"kernel": "1,2;3"}, 400), ({"kernel": "sobel"}, 400), ({"stride": 0}, 422),
                         ({"image_id": "nope"}, 404), ({"index": 5000}, 400), ({"row": 40, "col": 40}, 400)):
        assert client.post("/api/convolve", json=body).status_code == status, body
    assert {"vertical", "horizontal", "sobel_x", "laplacian"} <= {k["name"] for k in client.get("/api/kernels").json()}


def _wait(client, job_id, states=("finished", "failed", "stopped"), timeout=180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["state"] in states:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {job['state']}: {job['log']}")


def test_a_thinned_job_curve_is_sent_whole_to_a_poll_that_counted_the_old_one():
    job = Job("j", "r", "seed", 200, process=None)
    for i in range(Job.MAX_POINTS + 1):
        job.add_point({"epoch": 1 + i // 100, "step": i % 100, "steps": 100, "loss": 1.0, "accuracy": 0.5, "lr": 1e-3})
    assert job.curve_gen == 1 and len(job.curve) == Job.MAX_POINTS // 2 + 1
    stale = job.to_dict(since=Job.MAX_POINTS, gen=0)
    assert stale["curve_from"] == 0 and stale["curve"] == job.curve and stale["curve_gen"] == 1
    assert job.to_dict(since=3, gen=1)["curve"] == job.curve[3:]


def test_training_jobs_start_report_refuse_and_stop(client):
    for body, status in (({"model": "conv64-pool-dense"}, 400), ({"epochs": 0}, 422), ({"lr": -1}, 422),
                         ({"name": "../evil"}, 400), ({"name": "small"}, 409)):
        r = client.post("/api/train", json=body)
        assert r.status_code == status, (body, r.json())
    job = client.post("/api/train", json={"model": "conv8-pool-flatten-dense10", "epochs": 2, "name": "web1"}).json()
    assert job["state"] == "running"
    r = client.post("/api/train", json={"model": "dense", "epochs": 1})
    assert r.status_code == 409 and "still training" in r.json()["detail"]
    done = _wait(client, job["id"])
    assert done["state"] == "finished", done
    assert [m["epoch"] for m in done["metrics"]] == [1, 2] and done["results"]["test_accuracy"] > 0.5
    assert done["step"] == 0 and done["steps"] == 43                     # 2,700 images in batches of 64
    whole, url = done["curve"], f"/api/jobs/{job['id']}"
    assert len(whole) > 10 and done["curve_from"] == 0
    later = client.get(url, params={"since": 10, "gen": done["curve_gen"]}).json()      # a poll holding 10 points
    assert later["curve_from"] == 10 and later["curve"] == whole[10:]
    for since, gen in ((10, done["curve_gen"] + 1), (len(whole) + 1, done["curve_gen"])):  # thinned, or beyond it
        again = client.get(url, params={"since": since, "gen": gen}).json()
        assert again["curve_from"] == 0 and again["curve"] == whole
    assert client.get(url, params={"since": -1}).status_code == 422
    assert "web1" in [r["name"] for r in client.get("/api/runs").json()]

    long = client.post("/api/train", json={"model": "conv8-pool-flatten-dense10", "epochs": 50, "name": "web2"}).json()
    deadline = time.monotonic() + 120
    while not client.get(f"/api/jobs/{long['id']}").json()["metrics"]:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    client.post(f"/api/jobs/{long['id']}/stop")
    stopped = _wait(client, long["id"])
    assert stopped["state"] == "stopped" and stopped["results"]["interrupted"] is True
    assert (client.runs / "web2" / "checkpoint.safetensors").exists()                # resumable
    assert client.get("/api/jobs/nope").status_code == 404
    assert client.post("/api/jobs/nope/stop").status_code == 404


WEB_MODULES = sorted(p.name for p in (Path(__file__).parent.parent / "src" / "convlens" / "web").glob("*.js"))


def test_openapi_is_served_and_nothing_from_a_cdn(client):
    schema = client.get("/api/openapi.json").json()
    assert {"/api/runs", "/api/upload", "/api/train", "/api/runs/{name}/arithmetic"} <= set(schema["paths"])
    assert client.get("/docs").status_code == 404
    assert len(WEB_MODULES) >= 8 and all(client.get(f"/static/{m}").status_code == 200 for m in WEB_MODULES)
    page = client.get("/").text + "".join(client.get(f"/static/{m}").text for m in WEB_MODULES)
    page = page.replace('"http://www.w3.org/2000/svg"', "")      # SVG's namespace: a name, never fetched
    assert "http://" not in page and "https://" not in page


def test_serve_refuses_a_public_address_without_the_flag(tmp_path):
    rc, _, err = run_cli("serve", "--host", "0.0.0.0", "--runs-dir", tmp_path)
    assert rc == 2 and "add --public" in err and len(err.strip().splitlines()) == 1
