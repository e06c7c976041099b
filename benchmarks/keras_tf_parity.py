"""convlens import against TensorFlow's Keras, the Keras the seed note's readers have.

tests/test_keras_import.py checks the import against Keras on its PyTorch backend, so that the
suite needs no TensorFlow. This script does the same against TensorFlow (2.21 in .venv-keras,
which `make bench-keras` builds), including what the PyTorch backend computes differently:
`same` average pooling with uneven padding (TensorFlow leaves the padding out of each mean; the
PyTorch backend pads by repeating the edge), and uneven `same` max pooling and convolution.

    .venv-keras/bin/python benchmarks/keras_tf_parity.py      # → benchmarks/results/keras-tf-parity.json

Each model is trained one epoch on 3,000 real Fashion-MNIST images, saved as .keras and .h5,
imported by `convlens import` (the CLI, in .venv), and its 1,000 first test predictions compared.
"""

import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ["KERAS_BACKEND"] = "tensorflow"
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402
from keras_models import MODELS, fit_briefly  # noqa: E402

DATA = Path("/usr/share/datasets/fashion-mnist")
CONVLENS_PYTHON = ROOT / ".venv" / "bin" / "python"


def uneven_same():
    """Uneven `same` padding everywhere: 28 → 14 → 7 → 4 with windows of 3 and 4 and stride 2."""
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(16, 4, strides=2, padding="same", activation="relu"),
        layers.AveragePooling2D(3, strides=2, padding="same"),
        layers.MaxPooling2D(3, strides=2, padding="same"),
        layers.Flatten(),
        layers.Dense(10, activation="softmax"),
    ]), "0-1"


def read(name: str, offset: int) -> np.ndarray:
    with gzip.open(DATA / name) as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


def compare(path: Path, runs: Path, fed: str, expected: np.ndarray, test_x: np.ndarray, softmax: bool) -> dict:
    """convlens import PATH, then the run's outputs on the test images against TensorFlow's."""
    t = time.perf_counter()
    subprocess.run([str(CONVLENS_PYTHON), "-m", "convlens", "import", str(path), "--runs-dir", str(runs),
                    "--name", path.name.replace(".", "-"), "--keras-input", fed], check=True, capture_output=True)
    took = time.perf_counter() - t
    code = ("import sys, numpy as np, torch; from convlens.runs import open_run; from convlens.engine import "
            "predict_logits; x = torch.from_numpy(np.load(sys.argv[2])); "
            "out = predict_logits(open_run(sys.argv[1]).load_model(), x); "
            "np.save(sys.argv[3], (torch.softmax(out, 1) if sys.argv[4] == '1' else out).numpy())")
    npy_in, npy_out = runs / "x.npy", runs / "out.npy"
    np.save(npy_in, np.ascontiguousarray(test_x.transpose(0, 3, 1, 2)))
    subprocess.run([str(CONVLENS_PYTHON), "-c", code, str(runs / path.name.replace(".", "-")), str(npy_in),
                    str(npy_out), "1" if softmax else "0"], check=True)
    diff = float(np.abs(np.load(npy_out) - expected).max())
    return {"file": path.name, "max_abs_difference": diff, "within_1e-4": diff <= 1e-4,
            "import_command_seconds": round(took, 2)}


def main() -> None:
    train_x = read("train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28, 1)[:3000]
    train_y = read("train-labels-idx1-ubyte.gz", 8)[:3000]
    test_x = read("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28, 1)[:1000]
    builders = {**{k: v for k, v in MODELS.items() if k != "rgb32"}, "uneven_same": uneven_same}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, build in builders.items():
            model, fed = build()
            fit_briefly(model, train_x[..., 0][..., None], train_y, fed)
            softmax = getattr(model.layers[-1].activation, "__name__", "") == "softmax"
            expected = model.predict(test_x.astype("float32") / (1.0 if fed == "0-255" else 255.0), verbose=0)
            for ext in ("keras", "h5"):
                path = tmp / f"{name}.{ext}"
                model.save(path)
                rows.append({"model": name, **compare(path, tmp, fed, expected, test_x, softmax)})
                print(json.dumps(rows[-1]))
    out = ROOT / "benchmarks" / "results" / "keras-tf-parity.json"
    out.write_text(json.dumps({"tensorflow": __import__("tensorflow").__version__, "keras": keras.__version__,
                               "test_images": 1000, "rows": rows}, indent=2) + "\n")
    print(f"{sum(r['within_1e-4'] for r in rows)} of {len(rows)} within 1e-4 → {out}")


if __name__ == "__main__":
    main()
