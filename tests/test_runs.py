import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from convlens import build_model
from convlens.errors import RunError
from convlens.runs import check_name, load_weights, open_run, save_weights, write_atomic


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("name", ["model.pt", "model.pth", "weights.safetensors", "model.safetensors"])
def test_pickle_is_refused_and_never_executed(tmp_path, name):
    victim = tmp_path / "pwned"
    evil = tmp_path / name
    evil.write_bytes(pickle.dumps(_Evil(str(victim)), protocol=2))
    with pytest.raises(RunError, match="pickle"):
        load_weights(evil, build_model("seed"))
    torch.save({"w": torch.zeros(1)}, tmp_path / "zip.pt")
    with pytest.raises(RunError, match="pickle"):
        load_weights(tmp_path / "zip.pt", build_model("seed"))
    assert not victim.exists()


def test_round_trip_and_mismatch(tmp_path):
    m = build_model("seed")
    save_weights(tmp_path / "model.safetensors", m)
    m2 = load_weights(tmp_path / "model.safetensors", build_model("seed"))
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), m2.state_dict().values()))
    with pytest.raises(RunError, match="do not match"):
        load_weights(tmp_path / "model.safetensors", build_model("dense"))
    bad = {k: v for k, v in m.state_dict().items()}
    bad["layers.0.weight"] = torch.zeros(32, 1, 3, 3)
    save_file(bad, tmp_path / "bad.safetensors")
    with pytest.raises(RunError, match=r"layers.0.weight is torch.float32 \(32, 1, 3, 3\)"):
        load_weights(tmp_path / "bad.safetensors", build_model("seed"))


def test_truncated_and_byte_flipped_files(tmp_path):
    m = build_model("seed")
    save_weights(tmp_path / "model.safetensors", m)
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(RunError, match="not a valid safetensors"):
        load_weights(tmp_path / "cut.safetensors", build_model("seed"))
    flipped = bytearray(data)
    flipped[3] ^= 0xFF            # header length
    (tmp_path / "flip.safetensors").write_bytes(bytes(flipped))
    with pytest.raises(RunError):
        load_weights(tmp_path / "flip.safetensors", build_model("seed"))


@pytest.mark.parametrize("name", ["../x", "/abs", "a/b", "..", ".", "", "x" * 200, "sp ace"])
def test_bad_run_names(name):
    with pytest.raises(RunError):
        check_name(name)


def test_write_atomic_leaves_old_file_on_failure(tmp_path, monkeypatch):
    p = tmp_path / "f.json"
    write_atomic(p, b"old")

    def boom(*a):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        write_atomic(p, b"new")
    assert p.read_bytes() == b"old" and os.listdir(tmp_path) == ["f.json"]


def test_open_run_errors(tmp_path):
    with pytest.raises(RunError, match="no run"):
        open_run("missing", tmp_path)
    (tmp_path / "r").mkdir()
    with pytest.raises(RunError, match="config.json: no such file"):
        open_run("r", tmp_path)
    (tmp_path / "r" / "config.json").write_text("{not json")
    with pytest.raises(RunError, match="not readable JSON"):
        open_run(tmp_path / "r")
