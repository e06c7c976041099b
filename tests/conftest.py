"""Shared fixtures: small IDX datasets written in the test, and the real Fashion-MNIST."""

import gzip
import os
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

REAL_DIR = Path("/usr/share/datasets/fashion-mnist")
NAMES = {"train_images": "train-images-idx3-ubyte.gz", "train_labels": "train-labels-idx1-ubyte.gz",
         "test_images": "t10k-images-idx3-ubyte.gz", "test_labels": "t10k-labels-idx1-ubyte.gz"}


def idx_bytes(arr: np.ndarray, type_code: int = 0x08) -> bytes:
    """IDX encoding of a uint8 array: magic 0 0 TYPE NDIM, big-endian dims, data."""
    header = bytes([0, 0, type_code, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return header + arr.tobytes()


def write_idx_dir(folder: Path, train_x, train_y, test_x, test_y) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for role, arr in (("train_images", train_x), ("train_labels", train_y),
                      ("test_images", test_x), ("test_labels", test_y)):
        (folder / NAMES[role]).write_bytes(gzip.compress(idx_bytes(np.ascontiguousarray(arr, dtype=np.uint8))))
    return folder


@pytest.fixture(scope="session")
def real_data():
    """The real Fashion-MNIST (Debian's dataset-fashion-mnist), loaded once."""
    from convlens.datasets import load_fashion_mnist
    if not REAL_DIR.is_dir():
        pytest.fail("the real Fashion-MNIST is missing: apt-get install dataset-fashion-mnist (.ci/run does)")
    return load_fashion_mnist(val_split=0.1, seed=0)


@pytest.fixture(scope="session")
def small_data_dir(tmp_path_factory, real_data):
    """A folder of real-format IDX files with 3,000 training and 1,000 test images of the real data."""
    folder = tmp_path_factory.mktemp("small-fmnist")
    tx = real_data.train_x[:3000, 0].numpy()
    ty = real_data.train_y[:3000].numpy()
    return write_idx_dir(folder, tx, ty, real_data.test_x[:1000, 0].numpy(), real_data.test_y[:1000].numpy())


@contextmanager
def serving(runs: Path, *args, log: Path | None = None):
    """A real `convlens serve` over `runs` on a free port (extra ARGS given to it): yields its port, and
    stops it afterwards (killed if a connection keeps it from stopping in 30 s). log: a file that gets
    what it prints."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = open(log, "wb") if log else subprocess.PIPE
    proc = subprocess.Popen([sys.executable, "-m", "convlens", "serve", "--runs-dir", str(runs), "--port", str(port),
                             *map(str, args)], stdout=out, stderr=subprocess.STDOUT)
    if log:
        out.close()                                 # the server holds its own copy
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/presets", timeout=2)
            break
        except OSError:
            assert proc.poll() is None, log.read_text() if log else proc.stdout.read().decode()
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
    try:
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def run_cli(*args, cwd=None, env=None, timeout=300):
    """`python -m convlens ARGS` in a subprocess: (returncode, stdout, stderr)."""
    full_env = {**os.environ, **(env or {})}
    p = subprocess.run([sys.executable, "-m", "convlens", *map(str, args)], capture_output=True, text=True,
                       cwd=cwd, env=full_env, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def train_is_refused(tmp_path: Path, data_dir, flags: list[str], fragment: str) -> None:
    """`convlens train FLAGS` (2 epochs on data_dir) fails with one line that says `fragment`, before any run
    folder is made."""
    runs = tmp_path / "runs"
    rc, _, err = run_cli("train", "--data-dir", data_dir, "--runs-dir", runs, "--epochs", "2", *flags, cwd=tmp_path)
    assert rc != 0 and fragment in err and len(err.strip().splitlines()) == 1, err
    assert not runs.exists() or not any(runs.iterdir())


@pytest.fixture(scope="session")
def small_run(tmp_path_factory, small_data_dir):
    """A seed-model run trained for 2 epochs on the 3,000-image real subset (a few seconds)."""
    from convlens import TrainConfig, load_dataset, train
    runs = tmp_path_factory.mktemp("runs")
    data = load_dataset("fashion-mnist", small_data_dir, val_split=0.1)
    return train(TrainConfig(model="seed", epochs=2, runs_dir=str(runs), name="small",
                             data_dir=str(small_data_dir)), data=data)


@pytest.fixture(scope="session")
def real_seed_run(tmp_path_factory, real_data):
    """The seed model trained 2 epochs on the real Fashion-MNIST (shared: it is the suite's longest training)."""
    from convlens import TrainConfig, train
    runs = tmp_path_factory.mktemp("real-runs")
    return train(TrainConfig(model="seed", epochs=2, runs_dir=str(runs), name="seed2"), data=real_data)


def damaged_safetensors(data, original: bytes) -> bytes:
    """A hypothesis-drawn damage of a safetensors file's bytes: random bytes, flipped bytes anywhere,
    a cut file, or a mutation inside the JSON header (the part a parser trusts most)."""
    from hypothesis import strategies as st
    buf = bytearray(original)
    header_len = int.from_bytes(buf[:8], "little")
    how = data.draw(st.sampled_from(["random", "flip", "cut", "header"]))
    if how == "random":
        return data.draw(st.binary(max_size=256))
    if how == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            buf[data.draw(st.integers(0, len(buf) - 1))] ^= data.draw(st.integers(1, 255))
    elif how == "cut":
        buf = buf[: data.draw(st.integers(0, len(buf) - 1))]
    else:
        for _ in range(data.draw(st.integers(1, 6))):
            pos = data.draw(st.integers(8, 8 + header_len - 1))
            buf[pos] = data.draw(st.sampled_from(b'{}[]":,0123456789-e.tfn ')) if data.draw(st.booleans()) else 0xFF
    return bytes(buf)
