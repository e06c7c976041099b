"""The registered datasets beyond Fashion-MNIST: MNIST, KMNIST and EMNIST-Balanced.

The real files cannot be fetched here, so each download test serves small files made in the test from a
local HTTP server ($CONVLENS_MIRROR) and swaps the registry entry's checksums for theirs; everything else
(names, classes, archive layout, transposition) is the real entry's. The recorded real values are checked
for form separately.
"""

import dataclasses
import gzip
import hashlib
import http.server
import inspect
import io
import re
import socket
import string
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import idx_bytes, run_cli

from convlens import datasets, idx, registry, sources
from convlens.errors import DataError

NEW = ("mnist", "kmnist", "emnist-balanced")
ROLES = ("train_images", "train_labels", "test_images", "test_labels")
HEX64 = re.compile(r"[0-9a-f]{64}")


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


# --- the recorded values ------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(registry.DATASETS))
def test_registry_values_are_well_formed(name):
    info = registry.DATASETS[name]
    assert info.name == name and tuple(info.files) == ROLES
    assert len(set(info.classes)) == len(info.classes) and all(info.classes)
    assert info.mirrors and all(m.startswith("https://") and m.endswith("/") for m in info.mirrors)
    for f in info.files.values():
        assert HEX64.fullmatch(f.sha256_gz), f.name
        assert f.sha256_raw is None or HEX64.fullmatch(f.sha256_raw), f.name
        assert "/" not in f.name and f.name.endswith("-ubyte.gz")
        # A size caps each download; only members of a (size-capped, verified) archive may lack one.
        assert (f.size_gz is None and info.archive) or (isinstance(f.size_gz, int) and f.size_gz > 0), f.name
    if info.archive:
        assert HEX64.fullmatch(info.archive.sha256) and info.archive.size > 0


def test_the_new_datasets_and_their_classes():
    assert set(NEW) <= set(registry.DATASETS)
    assert registry.MNIST.classes == tuple(str(d) for d in range(10))
    # kmnist_classmap.csv: index,codepoint,char rows 0,U+304A,お … 9,U+3092,を
    assert registry.KMNIST.classes == ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")   # their romaji
    assert [f"U+{ord(c):04X}" for c in registry.KMNIST_KANA] == [
        "U+304A", "U+304D", "U+3059", "U+3064", "U+306A", "U+306F", "U+307E", "U+3084", "U+308C", "U+3092"]
    # EMNIST Balanced merges the 15 lower-case letters written like their capitals (Cohen et al. 2017, fig. 2).
    merged = set("cijklmopsuvwxyz")
    expected = string.digits + string.ascii_uppercase + "".join(c for c in string.ascii_lowercase if c not in merged)
    assert "".join(registry.EMNIST_BALANCED.classes) == expected and len(expected) == 47
    assert registry.EMNIST_BALANCED.transposed and not registry.MNIST.transposed and not registry.KMNIST.transposed


def test_fashion_mnist_stays_the_default_from_the_debian_package():
    assert inspect.signature(datasets.load_dataset).parameters["name"].default == "fashion-mnist"
    assert registry.FASHION_MNIST.system_dirs == ("/usr/share/datasets/fashion-mnist",)
    assert registry.FASHION_MNIST.archive is None and not registry.FASHION_MNIST.transposed
    assert all(f.sha256_raw for f in registry.FASHION_MNIST.files.values())   # Debian's re-compressed copies verify


# --- a local mirror -----------------------------------------------------------------------------

class _Mirror(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}      # path -> body
    truncated: set[str] = set()      # paths whose body stops halfway, after promising all of it
    requests: list[str] = []

    def log_message(self, *a):
        pass

    def do_GET(self):
        self.requests.append(self.path)
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if self.path in self.truncated else body)


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Mirror)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


@pytest.fixture
def mirror(server, tmp_path, monkeypatch):
    """A fresh cache, no $CONVLENS_DATA, and the local server as the only mirror: (files, truncated, requests)."""
    _Mirror.files, _Mirror.truncated, _Mirror.requests = {}, set(), []
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("CONVLENS_DATA", raising=False)
    monkeypatch.setenv("CONVLENS_MIRROR", server)
    return _Mirror


def cached_files(name):
    folder = sources.cache_dir(name)
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def make_arrays(n_classes, n_train=6, n_test=3, seed=0):
    """Random upright images with a bar across row 2 (so a transposition shows), and labels of every class."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 128, size=(n, 28, 28), dtype=np.uint8)
        x[:, 2, 3:25] = 255
        arrays[f"{split}_images"] = x
        arrays[f"{split}_labels"] = (np.arange(n) * 7 % n_classes).astype(np.uint8)
    return arrays


def substitute(monkeypatch, name, bodies, archive=None):
    """Put the test files' checksums (and sizes) into the registry entry; all else stays the real entry's."""
    info = registry.DATASETS[name]
    files = {role: dataclasses.replace(f, sha256_gz=sha(bodies[role]),
                                       size_gz=None if info.archive else len(bodies[role]))
             for role, f in info.files.items()}
    new = dataclasses.replace(info, files=files)
    if archive is not None:
        new = dataclasses.replace(new, archive=dataclasses.replace(info.archive, sha256=sha(archive),
                                                                   size=len(archive)))
    monkeypatch.setitem(registry.DATASETS, name, new)
    return new


# --- MNIST and KMNIST: four files each ----------------------------------------------------------

@pytest.mark.parametrize("name", ["mnist", "kmnist"])
def test_downloads_verifies_and_loads(mirror, monkeypatch, name):
    real = registry.DATASETS[name]
    arrays = make_arrays(len(real.classes))
    bodies = {role: gzip.compress(idx_bytes(arrays[role])) for role in ROLES}
    info = substitute(monkeypatch, name, bodies)
    mirror.files = {"/" + info.files[role].name: bodies[role] for role in ROLES}

    d = datasets.load_dataset(name, val_split=0.5, seed=1)
    assert sorted(mirror.requests) == sorted(mirror.files)
    assert d.classes == real.classes and d.num_classes == 10 and d.input_shape == (1, 28, 28)
    assert d.train_x.shape == (3, 1, 28, 28) and d.val_x.shape == (3, 1, 28, 28) and d.test_x.shape == (3, 1, 28, 28)
    assert np.array_equal(d.test_x[:, 0].numpy(), arrays["test_images"])   # not transposed
    assert d.test_y.tolist() == arrays["test_labels"].tolist()
    assert cached_files(name) == sorted(f.name for f in info.files.values())
    assert {loc.source for loc in sources.locate(info)} == {"cache"}
    assert [(ok, detail) for _, ok, detail in sources.verify(info)] == [(True, "official .gz SHA-256 matches")] * 4

    datasets.load_dataset(name)                  # from the cache now: nothing more is fetched
    assert len(mirror.requests) == 4


def serve_small_copy(mirror, monkeypatch, name):
    """Serve 10-image copies of the dataset's four files, registered with their checksums:
    (registry entry, file bodies by role, the training images' URL path)."""
    arrays = make_arrays(10)
    bodies = {role: gzip.compress(idx_bytes(arrays[role])) for role in ROLES}
    info = substitute(monkeypatch, name, bodies)
    mirror.files = {"/" + info.files[role].name: bodies[role] for role in ROLES}
    return info, bodies, "/" + info.files["train_images"].name


@pytest.mark.parametrize("name", ["mnist", "kmnist"])
def test_a_wrong_file_is_refused_and_nothing_is_cached(mirror, monkeypatch, name):
    info, bodies, first = serve_small_copy(mirror, monkeypatch, name)
    mirror.files[first] = bodies["train_images"][:-1] + b"x"        # same size, other bytes
    with pytest.raises(DataError, match="SHA-256 mismatch") as e:
        datasets.load_dataset(name)
    assert "\n" not in str(e.value) and info.files["train_images"].name in str(e.value)
    assert cached_files(name) == []                                   # no file, no .part


@pytest.mark.parametrize("name", ["mnist", "kmnist"])
def test_a_truncated_or_oversized_download_is_refused(mirror, monkeypatch, name):
    info, bodies, first = serve_small_copy(mirror, monkeypatch, name)
    mirror.truncated = {first}
    with pytest.raises(DataError, match="download failed|SHA-256 mismatch"):
        datasets.load_dataset(name)
    assert cached_files(name) == []
    mirror.truncated = set()
    mirror.files[first] = bodies["train_images"] + b"\0" * 100        # more than the recorded size
    with pytest.raises(DataError, match="larger than the expected"):
        datasets.load_dataset(name)
    assert cached_files(name) == []


def test_verify_without_a_content_checksum_says_what_it_checked(tmp_path):
    """MNIST publishes no SHA-256 of the decompressed files: a re-compressed copy cannot be vouched for."""
    arrays = make_arrays(10)
    for role, f in registry.MNIST.files.items():
        (tmp_path / f.name).write_bytes(gzip.compress(idx_bytes(arrays[role])))
    rows = sources.verify(registry.MNIST, tmp_path)
    assert len(rows) == 4 and not any(ok for _, ok, _ in rows)
    assert all("expected the official .gz's" in detail and "no content checksum" in detail for _, _, detail in rows)


# --- EMNIST: four members of one zip ------------------------------------------------------------

def emnist_archive(arrays, mapping=None, extra=()):
    """A zip laid out like NIST's gzip.zip: gzip/emnist-balanced-… members (images stored transposed)."""
    info = registry.EMNIST_BALANCED
    members = {}
    for role in ROLES:
        arr = arrays[role].transpose(0, 2, 1) if role.endswith("images") else arrays[role]
        members[role] = gzip.compress(idx_bytes(np.ascontiguousarray(arr)))
    if mapping is None:
        mapping = "".join(f"{i} {ord(c)}\n" for i, c in enumerate(info.classes))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for role in ROLES:
            zf.writestr("gzip/" + info.files[role].name, members[role])
        zf.writestr("gzip/emnist-balanced-mapping.txt", mapping)
        zf.writestr("gzip/emnist-letters-train-images-idx3-ubyte.gz", b"not read")
        for name, body in extra:
            zf.writestr(name, body)
    return buf.getvalue(), members


def test_emnist_comes_out_of_the_verified_zip_upright(mirror, monkeypatch, tmp_path):
    arrays = make_arrays(47, n_train=8, n_test=4)
    hostile = [("../../escape.gz", b"x"), ("/tmp/escape-abs.gz", b"x"), ("gzip/../../escape2.gz", b"x")]
    archive, members = emnist_archive(arrays, extra=hostile)
    info = substitute(monkeypatch, "emnist-balanced", members, archive=archive)
    mirror.files = {"/gzip.zip": archive}

    d = datasets.load_dataset("emnist-balanced", val_split=0.25)
    assert mirror.requests == ["/gzip.zip"]
    assert d.num_classes == 47 and d.classes[36:] == tuple("abdefghnqrt")
    assert d.train_x.shape == (6, 1, 28, 28) and d.val_x.shape == (2, 1, 28, 28) and d.test_x.shape == (4, 1, 28, 28)
    # Stored transposed (the bar runs down column 2), loaded upright (the bar runs across row 2, as made).
    stored = idx.read_idx(sources.cache_dir("emnist-balanced") / info.files["test_images"].name)
    assert (stored[:, 3:25, 2] == 255).all() and np.array_equal(stored.transpose(0, 2, 1), arrays["test_images"])
    assert np.array_equal(d.test_x[:, 0].numpy(), arrays["test_images"])
    assert d.test_y.tolist() == arrays["test_labels"].tolist()
    # Only the four members, under the registry's names; the zip is gone; nothing escaped.
    assert cached_files("emnist-balanced") == sorted(f.name for f in info.files.values())
    assert not list(tmp_path.parent.rglob("escape*")) and not Path("/tmp/escape-abs.gz").exists()
    assert [ok for _, ok, _ in sources.verify(info)] == [True] * 4

    datasets.load_dataset("emnist-balanced")     # from the cache now
    assert mirror.requests == ["/gzip.zip"]


def test_emnist_wrong_or_truncated_zip_is_refused_and_nothing_is_cached(mirror, monkeypatch):
    archive, members = emnist_archive(make_arrays(47))
    substitute(monkeypatch, "emnist-balanced", members, archive=archive)
    mirror.files = {"/gzip.zip": archive[:100] + bytes([archive[100] ^ 1]) + archive[101:]}
    with pytest.raises(DataError, match="gzip.zip: SHA-256 mismatch"):
        datasets.load_dataset("emnist-balanced")
    assert cached_files("emnist-balanced") == []
    mirror.files, mirror.truncated = {"/gzip.zip": archive}, {"/gzip.zip"}
    with pytest.raises(DataError, match="download failed|SHA-256 mismatch") as e:
        datasets.load_dataset("emnist-balanced")
    assert cached_files("emnist-balanced") == []
    assert "save gzip.zip from a browser into" in str(e.value) and "\n" not in str(e.value)


def test_emnist_member_that_does_not_match_is_refused_all_or_none(mirror, monkeypatch):
    archive, members = emnist_archive(make_arrays(47))
    info = substitute(monkeypatch, "emnist-balanced", members, archive=archive)
    files = dict(info.files, test_labels=dataclasses.replace(info.files["test_labels"], sha256_gz="0" * 64))
    monkeypatch.setitem(registry.DATASETS, "emnist-balanced", dataclasses.replace(info, files=files))
    mirror.files = {"/gzip.zip": archive}
    with pytest.raises(DataError, match="emnist-balanced-test-labels-idx1-ubyte.gz: SHA-256 mismatch"):
        datasets.load_dataset("emnist-balanced")
    # The verified zip stays (562 MB is not fetched twice); no member was kept.
    assert cached_files("emnist-balanced") == ["gzip.zip"]


@pytest.mark.parametrize("mapping, fault", [
    ("".join(f"{i} {ord(c)}\n" for i, c in enumerate("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcefghnqrt")),
     "lists the classes"),                                        # 'c' where NIST has 'd'
    ("0 48\n1 49 50\n", "not a list of 'label ASCII-code' lines"),
])
def test_emnist_mapping_must_match_the_class_names(mirror, monkeypatch, mapping, fault):
    archive, members = emnist_archive(make_arrays(47), mapping=mapping)
    substitute(monkeypatch, "emnist-balanced", members, archive=archive)
    mirror.files = {"/gzip.zip": archive}
    with pytest.raises(DataError, match=fault):
        datasets.load_dataset("emnist-balanced")
    assert cached_files("emnist-balanced") == ["gzip.zip"]


def test_emnist_member_over_the_size_cap_is_refused(mirror, monkeypatch):
    archive, members = emnist_archive(make_arrays(47))
    substitute(monkeypatch, "emnist-balanced", members, archive=archive)
    mirror.files = {"/gzip.zip": archive}
    monkeypatch.setattr(sources, "MAX_IDX_BYTES", 100)
    with pytest.raises(DataError, match="more than the 100 allowed"):
        datasets.load_dataset("emnist-balanced")
    assert cached_files("emnist-balanced") == ["gzip.zip"]


def test_emnist_zip_saved_by_hand_into_the_cache_is_used(mirror, monkeypatch):
    """For a host that refuses scripts: the zip saved from a browser is verified and used, nothing fetched."""
    arrays = make_arrays(47)
    archive, members = emnist_archive(arrays)
    substitute(monkeypatch, "emnist-balanced", members, archive=archive)
    folder = sources.cache_dir("emnist-balanced")
    folder.mkdir(parents=True)
    (folder / "gzip.zip").write_bytes(archive[:-1] + b"x")
    with pytest.raises(DataError, match="SHA-256 mismatch.*delete it to download it again"):
        datasets.load_dataset("emnist-balanced")
    (folder / "gzip.zip").write_bytes(archive)
    d = datasets.load_dataset("emnist-balanced")
    assert mirror.requests == [] and np.array_equal(d.test_x[:, 0].numpy(), arrays["test_images"])
    assert "gzip.zip" not in cached_files("emnist-balanced")


# --- the CLI without a network ------------------------------------------------------------------

def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def offline_env(tmp_path):
    return {"XDG_CACHE_HOME": str(tmp_path / "cache"), "CONVLENS_DATA": "",
            "CONVLENS_MIRROR": f"http://127.0.0.1:{closed_port()}/"}


def test_cli_data_shows_the_missing_mnist_files(offline_env):
    rc, out, err = run_cli("data", "--dataset", "mnist", env=offline_env)
    assert rc == 0 and err == ""
    assert out.startswith("mnist: 10 classes (0, 1, 2, 3, 4, 5, 6, 7, 8, 9)")
    assert out.count("(not found: `convlens data fetch` downloads it)") == 4
    rc, out, _ = run_cli("data", "--dataset", "emnist-balanced", env=offline_env)
    assert rc == 0 and "47 classes" in out and "come out of gzip.zip, 561,753,746 bytes" in out


@pytest.mark.parametrize("name, file", [("mnist", "train-images-idx3-ubyte.gz"), ("emnist-balanced", "gzip.zip")])
def test_cli_data_fetch_without_network_is_one_line(offline_env, name, file):
    rc, out, err = run_cli("data", "fetch", "--dataset", name, env=offline_env)
    assert rc == 2 and out == "" and "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("convlens: error: ")
    assert f"{file} not found locally and not downloadable" in err and "download failed" in err


def test_cli_unknown_dataset_lists_the_registry(offline_env):
    rc, _, err = run_cli("data", "--dataset", "emnist", env=offline_env)
    assert rc == 2 and "known: fashion-mnist, mnist, kmnist, emnist-balanced" in err
