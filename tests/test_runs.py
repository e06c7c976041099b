import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from conftest import damaged_safetensors
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from convlens import build_model
from convlens.errors import RunError
from convlens.files import write_atomic
from convlens.runs import check_name, load_weights, open_run, save_weights


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
    with pytest.raises(RunError, match="cannot write .*f.json: disk full"):
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


@pytest.fixture(scope="module")
def weights_bytes(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("w") / "model.safetensors"
    save_weights(path, build_model("conv4-pool-flatten-dense10"))
    return path.read_bytes()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzzed_weights_raise_only_run_error(tmp_path, weights_bytes, data):
    """Random bytes, flips anywhere or in the JSON header, cut files: loaded or RunError, nothing else."""
    f = tmp_path / "model.safetensors"
    f.write_bytes(damaged_safetensors(data, weights_bytes))
    try:
        load_weights(f, build_model("conv4-pool-flatten-dense10"))
    except RunError:
        pass


_JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                         st.sampled_from(["spec", "input_shape", "classes", "epoch", "x"]), inner, max_size=4),
                     max_leaves=12)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["config.json", "model.json", "results.json", "metrics.jsonl"]),
       st.binary(max_size=120) | _JSON.map(lambda v: json.dumps(v).encode()))
def test_fuzzed_run_files_raise_only_run_error(tmp_path, name, junk):
    """A run folder with one of its JSON files replaced by junk (bytes, or JSON of the wrong shape)
    opens, or fails with RunError."""
    run = tmp_path / "r"
    run.mkdir(exist_ok=True)
    for f, text in (("config.json", "{}"), ("model.json", '{"spec": "conv4-pool-flatten-dense10", '
                    '"input_shape": [1, 28, 28], "classes": ["a","b","c","d","e","f","g","h","i","j"]}'),
                    ("results.json", "{}"), ("metrics.jsonl", '{"epoch": 1}\n')):
        (run / f).write_text(text)
    (run / name).write_bytes(junk)
    save_weights(run / "model.safetensors", build_model("conv4-pool-flatten-dense10"))
    try:
        open_run(run).load_model()
    except RunError:
        pass


def test_a_run_name_wins_over_a_folder_of_the_same_name(tmp_path, monkeypatch):
    """`convlens predict three …` beside a data folder called three/ means the run 'three'."""
    from convlens.runs import resolve_run
    monkeypatch.chdir(tmp_path)
    (tmp_path / "three").mkdir()                       # the data
    (tmp_path / "runs" / "three").mkdir(parents=True)   # the run
    assert resolve_run("three", "runs") == Path("runs") / "three"
    assert resolve_run("./three", "runs") == Path("three")   # a path is a path


# ---------------------------------------------------------------------------
# A safetensors file is a pickle only when it is not safetensors; damage never loads quietly

def _safetensors_with_header_length(low: int) -> bytes:
    """A valid safetensors file whose 8-byte header length starts with the byte `low` (any value)."""
    import struct
    for extra in range(600):
        header = json.dumps({"__metadata__": {"p": "x" * extra},
                             "t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
        if len(header) % 256 == low:
            return struct.pack("<Q", len(header)) + header + torch.tensor([1.5, -2.0]).numpy().tobytes()
    raise AssertionError(low)


def test_safetensors_whose_header_length_starts_like_a_pickle_load(tmp_path):
    """One header length in 32 (of the 8-byte-aligned ones safetensors writes) starts with 0x80, pickle's
    first byte: such files used to be refused as pickles, losing the run (issue 15)."""
    from convlens.files import read_safetensors, save_safetensors
    for low in range(256):
        f = tmp_path / f"{low}.safetensors"
        f.write_bytes(_safetensors_with_header_length(low))
        tensors, _ = read_safetensors(f)
        assert tensors["t"].tolist() == [1.5, -2.0], low
    m = build_model("conv8-conv8-pool-flatten-dense128-bn-dense10")    # the reproduction's model
    seen = set()
    for k in range(256):
        save_safetensors(tmp_path / "m.safetensors", m.state_dict(), {"pad": "x" * k})
        first = (tmp_path / "m.safetensors").read_bytes()[0]
        seen.add(first)
        if first == 0x80:
            load_weights(tmp_path / "m.safetensors", build_model("conv8-conv8-pool-flatten-dense128-bn-dense10"))
    assert 0x80 in seen and len(seen) == 32                  # every 8-byte-aligned low byte, 0x80 among them


def _damage(path, how: str, rng) -> None:
    data = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(data[:8], "little")                      # the tensors' bytes
    if how == "zeroed 4 KiB":
        at = int(rng.integers(start, len(data) - 4096))
        data[at:at + 4096] = bytes(4096)
    else:                                                              # 50 flipped bits in the tensors
        for i in rng.integers(start * 8, len(data) * 8, 50):
            data[i // 8] ^= 1 << (i % 8)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["zeroed 4 KiB", "50 flipped bits"])
def test_damaged_weights_are_refused_not_loaded(tmp_path, small_run, how):
    import numpy as np
    shutil.copytree(small_run.path, tmp_path / "r")
    _damage(tmp_path / "r" / "model.safetensors", how, np.random.default_rng(0))
    with pytest.raises(RunError, match="damaged: its tensors no longer match the checksum"):
        open_run(tmp_path / "r").load_model()


def test_an_edited_model_json_is_refused(tmp_path, small_run):
    """Class names reversed, or the spec swapped for one with the same shapes: every prediction would change."""
    for edit, what in ((lambda m: {**m, "classes": m["classes"][::-1]}, "classes"),
                       (lambda m: {**m, "spec": m["spec"].replace("conv64-pool-conv64", "conv64_tanh-pool-conv64")},
                        "spec")):
        shutil.copytree(small_run.path, tmp_path / what)
        info = json.loads((tmp_path / what / "model.json").read_text())
        (tmp_path / what / "model.json").write_text(json.dumps(edit(info)))
        with pytest.raises(RunError, match=f"model.json does not match model.safetensors: its {what} differ"):
            open_run(tmp_path / what).load_model()


def test_a_renamed_run_is_named_so_in_its_config_and_still_opens(tmp_path, small_run):
    from convlens.runs import rename_run
    runs = tmp_path / "runs"
    shutil.copytree(small_run.path, runs / "before")
    command = json.loads((runs / "before" / "config.json").read_text())["command"]
    moved = rename_run(runs / "before", "after")
    config = json.loads((moved / "config.json").read_text())
    assert moved == runs / "after" and config["name"] == "after" and config["command"] == command
    run = open_run(moved)
    assert run.config.name == "after" and run.load_model() is not None
