import gzip
import hashlib
import http.server
import threading
import time

import numpy as np
import pytest
import torch
from conftest import REAL_DIR, idx_bytes, write_idx_dir
from hypothesis import given, settings
from hypothesis import strategies as st

from convlens import datasets, idx, registry, sources
from convlens.errors import DataError


def test_reads_raw_and_gzip_identically(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(idx_bytes(arr))
    (tmp_path / "a.gz").write_bytes(gzip.compress(idx_bytes(arr)))
    assert np.array_equal(idx.read_idx(tmp_path / "a"), arr)
    assert np.array_equal(idx.read_idx(tmp_path / "a.gz"), arr)


def test_reads_big_endian_int32():
    arr = np.array([1, -2, 70000], dtype=">i4")
    buf = bytes([0, 0, 0x0C, 1]) + (3).to_bytes(4, "big") + arr.tobytes()
    assert idx.parse_idx(buf, "x").tolist() == [1, -2, 70000]


@pytest.mark.parametrize("buf, fault", [
    (b"", "shorter than the 4-byte header"),
    (b"\x12\x34\x08\x01" + b"\0\0\0\x01" + b"x", "magic number"),
    (b"\0\0\x07\x01" + b"\0\0\0\x01" + b"x", "unknown IDX type code 0x07"),
    (b"\0\0\x08\x00", "0 dimensions"),
    (b"\0\0\x08\x03\0\0\0\x02", "truncated IDX header"),
    (b"\0\0\x08\x01\0\0\0\x05abc", "truncated"),
    (b"\0\0\x08\x01\0\0\0\x02abc", "trailing bytes"),
])
def test_malformed_idx_gives_one_clear_error(buf, fault):
    with pytest.raises(DataError) as e:
        idx.parse_idx(buf, "some/file.idx")
    assert fault in str(e.value) and str(e.value).startswith("some/file.idx")
    assert "\n" not in str(e.value)


def test_truncated_gzip_and_missing_file(tmp_path):
    good = gzip.compress(idx_bytes(np.zeros((10, 28, 28), np.uint8)))
    (tmp_path / "cut.gz").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="damaged gzip"):
        idx.read_idx(tmp_path / "cut.gz")
    with pytest.raises(DataError, match="no such file"):
        idx.read_idx(tmp_path / "nothing.gz")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_fuzzed_idx_bytes_raise_only_data_error(buf):
    try:
        idx.parse_idx(buf, "fuzz")
    except DataError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 40), st.integers(0, 255))
def test_mutated_real_header_raises_only_data_error(pos, value):
    buf = bytearray(idx_bytes(np.zeros((3, 4, 4), np.uint8)))
    buf[pos % len(buf)] = value
    try:
        out = idx.parse_idx(bytes(buf), "mutated")
        assert out.size * out.itemsize == len(buf) - 4 - 4 * out.ndim
    except DataError:
        pass


def test_real_fashion_mnist_shapes_and_split(real_data):
    d = real_data
    assert d.classes[0] == "T-shirt/top" and d.classes[9] == "Ankle boot"
    assert d.train_x.shape == (54000, 1, 28, 28) and d.val_x.shape == (6000, 1, 28, 28)
    assert d.test_x.shape == (10000, 1, 28, 28) and d.train_x.dtype == torch.uint8
    assert d.input_shape == (1, 28, 28) and d.num_classes == 10
    # The validation images are held out: no training index is also a validation index.
    train_idx, val_idx = datasets.split_train_val(60000, 0.1, 0)
    assert len(set(train_idx.tolist()) & set(val_idx.tolist())) == 0
    assert len(train_idx) + len(val_idx) == 60000
    assert torch.bincount(d.test_y).tolist() == [1000] * 10


def test_val_split_zero_trains_on_all_60000():
    d = datasets.load_fashion_mnist(val_split=0.0)
    assert len(d.train_y) == 60000 and len(d.val_y) == 0


def test_split_is_seeded():
    a, _ = datasets.split_train_val(1000, 0.2, seed=3)
    b, _ = datasets.split_train_val(1000, 0.2, seed=3)
    c, _ = datasets.split_train_val(1000, 0.2, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_verify_recognises_debians_recompressed_files():
    rows = sources.verify(registry.FASHION_MNIST, REAL_DIR)
    assert len(rows) == 4 and all(ok for _, ok, _ in rows)


def test_lookup_order_data_dir_then_env_then_cache_then_system(tmp_path, monkeypatch):
    a = write_idx_dir(tmp_path / "a", np.zeros((2, 28, 28)), np.zeros(2), np.zeros((1, 28, 28)), np.zeros(1))
    b = write_idx_dir(tmp_path / "b", np.zeros((2, 28, 28)), np.zeros(2), np.zeros((1, 28, 28)), np.zeros(1))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("CONVLENS_DATA", str(b))
    assert {loc.source for loc in sources.locate(registry.FASHION_MNIST, a)} == {"--data-dir"}
    assert {loc.path.parent for loc in sources.locate(registry.FASHION_MNIST)} == {b}
    monkeypatch.delenv("CONVLENS_DATA")
    assert {loc.source for loc in sources.locate(registry.FASHION_MNIST)} == {"system"}
    cached = write_idx_dir(tmp_path / "cache" / "convlens" / "fashion-mnist", np.zeros((2, 28, 28)), np.zeros(2),
                           np.zeros((1, 28, 28)), np.zeros(1))
    assert {loc.path.parent for loc in sources.locate(registry.FASHION_MNIST)} == {cached}


def test_explicit_data_dir_missing_files_is_an_error(tmp_path):
    with pytest.raises(DataError, match="missing train-images"):
        datasets.load_fashion_mnist(data_dir=tmp_path)


def test_corrupt_dataset_file_is_named(tmp_path):
    folder = write_idx_dir(tmp_path, np.zeros((2, 28, 28)), np.zeros(2), np.zeros((1, 28, 28)), np.zeros(1))
    raw = gzip.decompress((folder / "t10k-images-idx3-ubyte.gz").read_bytes())
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x01" + raw[1:]))
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: not an IDX file: magic"):
        datasets.load_fashion_mnist(data_dir=folder)


# --- downloads, against a local HTTP server made in the test ---------------------------------

PAYLOAD = gzip.compress(idx_bytes(np.arange(100, dtype=np.uint8)))
GOOD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_GET(self):
        body = {"/good": PAYLOAD, "/truncated": PAYLOAD[:-10], "/wrong": PAYLOAD[:-1] + b"x",
                "/slow": PAYLOAD}.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))   # truncated: promises more than it sends
        self.end_headers()
        if self.path == "/slow":
            self.wfile.write(body[:10])
            self.wfile.flush()
            time.sleep(3)
        self.wfile.write(body if self.path != "/slow" else body[10:])


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_download_accepts_only_the_correct_file(server, tmp_path):
    dest = tmp_path / "f.gz"
    assert sources.download(f"{server}/good", dest, GOOD_SHA, max_bytes=len(PAYLOAD)) == dest
    assert dest.read_bytes() == PAYLOAD
    for path, msg in (("truncated", "download failed|SHA-256 mismatch"), ("wrong", "SHA-256 mismatch"),
                      ("slow", "timed out|download failed"), ("missing", "404")):
        out = tmp_path / f"{path}.gz"
        with pytest.raises(DataError, match=msg):
            sources.download(f"{server}/{path}", out, GOOD_SHA, max_bytes=len(PAYLOAD), timeout_s=1)
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.gz"]   # no partial file left behind


def test_download_refuses_plain_http_to_other_hosts(tmp_path):
    with pytest.raises(DataError, match="only https"):
        sources.download("http://example.com/x.gz", tmp_path / "x.gz", GOOD_SHA, max_bytes=100)


def test_fetch_downloads_missing_files_into_the_cache(server, tmp_path, monkeypatch):
    """The whole fetch path against a local mirror holding the four files of a tiny dataset."""
    files = {name: gzip.compress(idx_bytes(arr)) for name, arr in (
        ("train-images-idx3-ubyte.gz", np.zeros((4, 28, 28), np.uint8)), ("train-labels-idx1-ubyte.gz", np.arange(4, dtype=np.uint8)),
        ("t10k-images-idx3-ubyte.gz", np.zeros((2, 28, 28), np.uint8)), ("t10k-labels-idx1-ubyte.gz", np.arange(2, dtype=np.uint8)))}
    root = tmp_path / "mirror"
    root.mkdir()
    for n, b in files.items():
        (root / n).write_bytes(b)
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(root), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    info = registry.DatasetInfo("tiny", tuple("abcd"), {
        role: registry.IdxFile(f.name, hashlib.sha256(files[f.name]).hexdigest(), "", len(files[f.name]))
        for role, f in registry.FASHION_MNIST.files.items()}, mirrors=(), system_dirs=())
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("CONVLENS_MIRROR", f"http://127.0.0.1:{httpd.server_address[1]}/")
    try:
        found = sources.fetch(info)
    finally:
        httpd.shutdown()
    assert {loc.source for loc in found} == {"download"}
    assert all(loc.path.read_bytes() == files[loc.path.name] for loc in found)
    assert {loc.source for loc in sources.locate(info)} == {"cache"}
