"""`convlens import`: real Keras models (the keras package on its PyTorch backend), saved as .keras and
.h5, come back as convlens runs whose predictions equal Keras's on 1,000 real Fashion-MNIST test images."""

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from keras_models import MODELS, as_rgb32, fit_briefly, keras  # sets KERAS_BACKEND=torch first

from convlens import cli
from convlens.engine import predict_logits
from convlens.errors import ConvlensError, DataError
from convlens.kerasfile import read_keras
from convlens.kerasimport import import_keras
from convlens.runs import open_run
from convlens.summary import summarize

N_TEST = 1000


@pytest.fixture(scope="module")
def images(real_data):
    """3,000 real training images and 1,000 real test images, as (N, 28, 28) uint8 and labels."""
    return (real_data.train_x[:3000, 0].numpy(), real_data.train_y[:3000].numpy(),
            real_data.test_x[:N_TEST, 0].numpy(), real_data.test_y[:N_TEST].numpy())


@pytest.fixture(scope="module")
def rgb_folder(tmp_path_factory, images):
    """The same images as 32×32 colour PNGs in an image folder (train/ and test/, classes c0 … c9)."""
    from PIL import Image
    root = tmp_path_factory.mktemp("rgb32")
    tx, ty, vx, vy = images
    for split, x, y in (("train", tx[:200], ty[:200]), ("test", vx, vy)):
        for i, (img, label) in enumerate(zip(as_rgb32(x), y)):
            folder = root / split / f"c{label}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(folder / f"{i:04d}.png")
    return root


@pytest.fixture(scope="module")
def saved(tmp_path_factory, images):
    """Each model trained briefly on real images and saved both ways: name -> (paths, model, fed)."""
    out = tmp_path_factory.mktemp("keras")
    tx, ty, _, _ = images
    models = {}
    for name, build in MODELS.items():
        model, fed = build()
        x = as_rgb32(tx) if name == "rgb32" else tx[..., None]
        fit_briefly(model, x, ty, fed)
        paths = {ext: out / f"{name}.{ext}" for ext in ("keras", "h5")}
        for path in paths.values():
            model.save(path)
        models[name] = (paths, model, fed)
    return models


def keras_outputs(model, fed: str, x_u8: np.ndarray) -> np.ndarray:
    x = x_u8.astype("float32") / (1.0 if fed == "0-255" else 255.0)
    return np.asarray(model.predict(x, batch_size=500, verbose=0))


def ends_in_softmax(model) -> bool:
    return getattr(getattr(model.layers[-1], "activation", None), "__name__", "") == "softmax"


@pytest.mark.parametrize("ext", ["keras", "h5"])
@pytest.mark.parametrize("name", list(MODELS))
def test_import_equals_keras(name, ext, saved, images, rgb_folder, tmp_path, capsys):
    paths, model, fed = saved[name]
    _, _, vx, vy = images
    dataset = ["--dataset", f"folder:{rgb_folder}"] if name == "rgb32" else []
    assert cli.main(["import", str(paths[ext]), "--runs-dir", str(tmp_path), "--keras-input", fed, *dataset]) == 0
    out = capsys.readouterr().out
    run = open_run(next(tmp_path.iterdir()))
    assert run.record["imported"]["sha256"] == __import__("hashlib").sha256(paths[ext].read_bytes()).hexdigest()

    # the test images as the run sees them (the folder's test split, sorted by class) against Keras's output
    x_u8 = as_rgb32(vx) if name == "rgb32" else vx[..., None]
    if name == "rgb32":
        order = np.argsort(vy, kind="stable")
        x_u8 = x_u8[order]
    ours = predict_logits(run.load_model(), torch.from_numpy(np.ascontiguousarray(x_u8.transpose(0, 3, 1, 2))))
    theirs = keras_outputs(model, fed, x_u8)
    if ends_in_softmax(model):
        ours = torch.softmax(ours, dim=1)
        assert "softmax dropped" in out
    np.testing.assert_allclose(ours.numpy(), theirs, atol=1e-4, rtol=0)

    # convlens's summary counts every parameter Keras counts, layer by layer totals included
    s = summarize(run.model_info.spec, run.input_shape, len(run.classes))
    assert s.total_params == model.count_params()
    assert f"{model.count_params():,}" in out


def test_seed_import_matches_the_note(saved, tmp_path, capsys):
    """The seed's own network: 243,786 parameters in `convlens summary RUN`, and every verb takes the run."""
    paths, _, _ = saved["seed"]
    run = import_keras(paths["keras"], runs_dir=str(tmp_path), name="seed-keras")
    assert run.model_info.spec == "conv64-pool-conv64-pool-flatten-dense128-dense10"
    assert cli.main(["summary", "seed-keras", "--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "243,786" in out and "softmax" in out
    info = json.loads((run.path / "model.json").read_text())
    assert info["preprocessing"].startswith("uint8 pixels / 255")
    assert cli.main(["evaluate", "seed-keras", "--precision", "fp32", "--no-figures", "--runs-dir", str(tmp_path)]) == 0
    assert f"accuracy {run.results['test_accuracy']:.2%}" in capsys.readouterr().out     # fp32: the import's own figure
    from fastapi.testclient import TestClient

    from convlens.server import create_app
    client = TestClient(create_app(str(tmp_path)), base_url="http://127.0.0.1:8000")
    entry = client.get("/api/runs").json()[0]
    assert (entry["state"], entry["epochs"], entry["epochs_planned"]) == ("imported from Keras", 0, 0)
    assert client.get("/api/runs/seed-keras/kernels/0.png").content.startswith(b"\x89PNG")
    assert client.get("/api/runs/seed-keras/evaluation").json()["accuracy"] > 0.5
    for verb in (["evaluate", "seed-keras"], ["report", "seed-keras"], ["filters", "seed-keras", "--layer", "conv2d_1"],
                 ["export", "seed-keras", "--out", str(tmp_path / "exported")]):
        assert cli.main([*verb, "--runs-dir", str(tmp_path)]) == 0, verb


def test_rescaling_is_folded(saved, images, tmp_path):
    """The strided model rescales raw pixels itself (× 1/127.5 − 1): folded into its first convolution,
    so convlens feeds it pixels / 255 like every other model, and model.json says so."""
    paths = saved["strided_gap"][0]
    run = import_keras(paths["keras"], runs_dir=str(tmp_path), keras_input="0-255")
    assert "folded" in run.record["imported"]["input"]
    assert "Rescaling" in json.loads((run.path / "model.json").read_text())["preprocessing"]


def test_weights_only_file_with_a_spec(saved, images, tmp_path):
    model = saved["seed"][1]
    weights = tmp_path / "seed.weights.h5"
    model.save_weights(weights)
    _, _, vx, _ = images
    run = import_keras(weights, spec="seed", runs_dir=str(tmp_path / "runs"))
    ours = torch.softmax(predict_logits(run.load_model(), torch.from_numpy(vx[:, None].copy())), dim=1)
    np.testing.assert_allclose(ours.numpy(), keras_outputs(model, "0-1", vx[..., None]), atol=1e-4, rtol=0)
    with pytest.raises(DataError, match="--model SPEC"):
        import_keras(weights, runs_dir=str(tmp_path / "runs"))
    with pytest.raises(DataError, match="no conv2d layer|left over"):
        import_keras(weights, spec="conv32-conv32-conv32-pool-flatten-dense10", runs_dir=str(tmp_path / "runs"))


# ---------------------------------------------------------------------------
# Refusals: one line, no run written

def refused(path: Path, runs: Path, capsys, *extra) -> str:
    assert cli.main(["import", str(path), "--runs-dir", str(runs), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("convlens: error: ") and "\n" not in err, err
    assert not runs.exists() or not any(runs.iterdir()), "a refused import wrote a run"
    return err


def test_lambda_layer_refused(tmp_path, capsys):
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Lambda(lambda t: t * 2),
                              keras.layers.Flatten(), keras.layers.Dense(10)])
    model.save(tmp_path / "lambda.keras")
    err = refused(tmp_path / "lambda.keras", tmp_path / "runs", capsys)
    assert "Lambda" in err and "Conv2D" in err


def test_lstm_refused(tmp_path, capsys):
    model = keras.Sequential([keras.Input((28, 28)), keras.layers.LSTM(8), keras.layers.Dense(10)])
    model.save(tmp_path / "lstm.h5")
    err = refused(tmp_path / "lstm.h5", tmp_path / "runs", capsys)
    assert "'lstm" in err and "(LSTM)" in err


def test_custom_layer_refused(tmp_path, capsys):
    @keras.saving.register_keras_serializable(package="mine")
    class Doubler(keras.layers.Layer):
        def call(self, x):
            return x * 2

    model = keras.Sequential([keras.Input((28, 28, 1)), Doubler(), keras.layers.Flatten(), keras.layers.Dense(10)])
    model.save(tmp_path / "custom.keras")
    assert "Doubler" in refused(tmp_path / "custom.keras", tmp_path / "runs", capsys)


def test_branching_model_refused(tmp_path, capsys):
    inputs = keras.Input((28, 28, 1))
    a, b = keras.layers.Conv2D(4, 3)(inputs), keras.layers.Conv2D(4, 3)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(keras.layers.Add()([a, b]))))
    model.save(tmp_path / "branch.keras")
    assert "one chain" in refused(tmp_path / "branch.keras", tmp_path / "runs", capsys)


def test_truncated_and_foreign_files_refused(saved, tmp_path, capsys):
    import h5py
    paths, _, _ = saved["seed"]
    for ext in ("keras", "h5"):
        data = paths[ext].read_bytes()
        cut = tmp_path / f"cut.{ext}"
        cut.write_bytes(data[: len(data) // 2])
        refused(cut, tmp_path / "runs", capsys)
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["numbers"] = np.arange(10.0)
    assert "not a Keras model" in refused(tmp_path / "plain.h5", tmp_path / "runs", capsys)
    (tmp_path / "text.keras").write_text("hello")
    refused(tmp_path / "text.keras", tmp_path / "runs", capsys)


def rezip(src: Path, dst: Path, change) -> Path:
    """A copy of a .keras archive with one member changed by change(name, bytes) -> bytes."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            zout.writestr(item.filename, change(item.filename, zin.read(item.filename)))
    return dst


def test_hostile_archives_refused(saved, tmp_path, capsys):
    paths, _, _ = saved["seed"]
    src = paths["keras"]

    def config(edit):
        def change(name, data):
            if name != "config.json":
                return data
            cfg = json.loads(data)
            edit(cfg)
            return json.dumps(cfg).encode()
        return change

    def huge_units(cfg):
        cfg["config"]["layers"][-1]["config"]["units"] = 10**9

    def wrong_units(cfg):
        cfg["config"]["layers"][-2]["config"]["units"] = 64

    cases = {"bomb": lambda n, d: b"{" + b" " * (20 << 20) + b"}" if n == "config.json" else d,
             "huge": config(huge_units), "mismatch": config(wrong_units),
             "nested": lambda n, d: b"[" * 100000 + b"]" * 100000 if n == "config.json" else d,
             "noweights": lambda n, d: b"" if n == "model.weights.h5" else d}
    messages = {name: refused(rezip(src, tmp_path / f"{name}.keras", change), tmp_path / "runs", capsys)
                for name, change in cases.items()}
    assert "at most" in messages["bomb"]
    assert "do not match" in messages["mismatch"]


def test_fuzzed_archives_give_only_convlens_errors(saved, tmp_path):
    """Random byte flips and cuts of a real .keras and .h5: read_keras and the import plan either work
    or raise a ConvlensError, never anything else."""
    from convlens.kerasimport import keras_plan
    rng = np.random.default_rng(0)
    for ext in ("keras", "h5"):
        data = bytearray(saved["seed"][0][ext].read_bytes())
        for trial in range(60):
            damaged = bytearray(data)
            for pos in rng.integers(0, len(data), size=int(rng.integers(1, 20))):
                damaged[pos] = int(rng.integers(0, 256))
            if trial % 4 == 0:
                damaged = damaged[: int(rng.integers(1, len(data)))]
            path = tmp_path / f"fuzz.{ext}"
            path.write_bytes(bytes(damaged))
            try:
                kf = read_keras(path)
                try:
                    keras_plan(kf)
                finally:
                    kf.close()
            except ConvlensError:
                pass


def test_config_over_its_cap_refused_before_inflating(tmp_path):
    """A 64 MB config.json (deflated to a few KB) is refused by its stated size, never inflated."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("config.json", b" " * (64 << 20))
    (tmp_path / "bomb.keras").write_bytes(buf.getvalue())
    with pytest.raises(DataError, match="at most"):
        read_keras(tmp_path / "bomb.keras")
