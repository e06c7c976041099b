"""The command line as a new user drives it: through a subprocess, on real-format files."""

import json

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image


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
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_gets_one_line_and_no_run(tmp_path, args, fragment):
    """Through a real process: exit status 2, one line on stderr (tests/test_bad_inputs.py has the full table)."""
    extra = ["--runs-dir", tmp_path / "runs"] if args[0] == "train" else []
    rc, out, err = run_cli(*args, *extra, cwd=tmp_path)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("convlens: error:") and fragment in lines[0], err
    assert "Traceback" not in err
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
    rc, out, err = run_cli("predict", "small", tmp_path / "trouser.jpg", "--runs-dir", runs)
    assert rc == 0, err
    first = out.split(": ", 1)[1].split(",")[0]
    assert first.startswith("Trouser") and out.count("%") == 3


def test_data_verb_shows_sources_and_verifies():
    rc, out, _ = run_cli("data")
    assert rc == 0 and "T-shirt/top" in out and "/usr/share/datasets/fashion-mnist" in out
    rc, out, _ = run_cli("data", "verify")
    assert rc == 0 and out.count("ok ") == 4


def test_python_m_and_help():
    rc, out, _ = run_cli("--help")
    assert rc == 0 and "train" in out and "summary" in out
