"""The command line as a new user drives it: through a subprocess, on real-format files."""

import gzip
import json

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli


def test_summary_seed_prints_the_seed_table():
    rc, out, err = run_cli("summary", "seed")
    assert rc == 0 and err == ""
    for needle in ("26×26×64", "13×13×64", "11×11×64", "5×5×64", "1600", "640", "36,928", "204,928", "1,290",
                   "Total params: 243,786", "64 × (3×3×1 + 1) = 640"):
        assert needle in out
    rc, out, _ = run_cli("summary", "conv32k5-pool-flatten-dense10", "--json")
    assert rc == 0 and json.loads(out)["total_params"] == 32 * 26 + 32 * 12 * 12 * 10 + 10


@pytest.mark.parametrize("args, fragment", [
    (["train", "--epochs", "0"], "--epochs must be at least 1"),
    (["train", "--batch-size", "-1"], "--batch-size must be at least 1"),
    (["train", "--model", "conv64-pool-dense"], "token 3 'dense'"),
    (["train", "--lr", "fast"], "expected a number"),
    (["summary", "conv64-pool-dense"], "dense needs a width"),
    (["evaluate", "no-such-run"], "no run 'no-such-run'"),
    (["predict", "no-such-run", "x.png"], "no run"),
    (["train", "--dataset", "cifar"], "unknown dataset"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_gets_one_line_and_no_run(tmp_path, args, fragment):
    extra = ["--runs-dir", tmp_path / "runs"] if args[0] in ("train", "evaluate", "predict") else []
    rc, out, err = run_cli(*args, *extra, cwd=tmp_path)
    assert rc != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("convlens: error:") and fragment in lines[0], err
    assert "Traceback" not in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_truncated_gz_and_wrong_magic_are_one_line_errors(tmp_path, small_data_dir):
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in small_data_dir.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    data = (bad / "train-images-idx3-ubyte.gz").read_bytes()
    (bad / "train-images-idx3-ubyte.gz").write_bytes(data[: len(data) // 2])
    rc, _, err = run_cli("train", "--data-dir", bad, "--runs-dir", tmp_path / "runs", cwd=tmp_path)
    assert rc == 2 and "train-images-idx3-ubyte.gz: damaged gzip" in err and len(err.strip().splitlines()) == 1
    raw = gzip.decompress(data)
    (bad / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x09" + raw[4:]))
    rc, _, err = run_cli("train", "--data-dir", bad, "--runs-dir", tmp_path / "runs", cwd=tmp_path)
    assert rc == 2 and "9 dimensions" in err and len(err.strip().splitlines()) == 1
    (bad / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x08\x03\x08\x03" + raw[4:]))
    rc, _, err = run_cli("train", "--data-dir", bad, "--runs-dir", tmp_path / "runs", cwd=tmp_path)
    assert rc == 2 and "magic number" in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_train_evaluate_predict_end_to_end(tmp_path, small_data_dir, real_data):
    runs = tmp_path / "runs"
    rc, out, err = run_cli("train", "--data-dir", small_data_dir, "--runs-dir", runs, "--epochs", "2",
                           "--name", "small", cwd=tmp_path)
    assert rc == 0, err
    assert out.index("Total params: 243,786") < out.index("epoch 1/2") < out.index("epoch 2/2") < out.index("Test:")
    assert "val_acc" in out and f"Run: {runs / 'small'}" in out
    results = json.loads((runs / "small" / "results.json").read_text())
    assert results["test_accuracy"] > 0.7        # 2,700 training images, 2 epochs

    rc, out, err = run_cli("evaluate", "small", "--runs-dir", runs, "--data-dir", small_data_dir)
    assert rc == 0, err
    assert "Test images: 1,000" in out and "Confusion matrix" in out and "Most confused" in out
    assert f"accuracy {results['test_accuracy']:.2%}" in out
    figs = sorted(p.name for p in (runs / "small" / "figures").iterdir())
    assert figs == ["confusion-normalized.png", "confusion.png", "misclassified.png", "per-class-accuracy.png"]

    # A test image saved the way a user's photo would be: dark trouser on white, 4× larger.
    idx = int((real_data.test_y == 1).nonzero()[0])
    photo = 255 - np.kron(real_data.test_x[idx, 0].numpy(), np.ones((4, 4), np.uint8))
    Image.fromarray(photo).convert("RGB").save(tmp_path / "trouser.jpg")
    (tmp_path / "notes.png").write_text("not an image")
    rc, out, err = run_cli("predict", "small", tmp_path / "trouser.jpg", "--runs-dir", runs)
    assert rc == 0, err
    first = out.split(": ", 1)[1].split(",")[0]
    assert first.startswith("Trouser") and out.count("%") == 3
    rc, out, err = run_cli("predict", "small", tmp_path / "notes.png", "--runs-dir", runs)
    assert rc == 2 and "not an image" in err and len(err.strip().splitlines()) == 1


def test_data_verb_shows_sources_and_verifies():
    rc, out, _ = run_cli("data")
    assert rc == 0 and "T-shirt/top" in out and "/usr/share/datasets/fashion-mnist" in out
    rc, out, _ = run_cli("data", "verify")
    assert rc == 0 and out.count("ok ") == 4


def test_python_m_and_help():
    rc, out, _ = run_cli("--help")
    assert rc == 0 and "train" in out and "summary" in out
