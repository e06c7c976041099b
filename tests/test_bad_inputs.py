"""Every bad input the issues name, in one table: each gets one line `convlens: error: …`, a non-zero
exit status, no traceback, and leaves no half-written run or figure behind.

The table drives `convlens.cli.main` in this process (a subprocess per row would spend most of its
time importing torch); tests/test_cli.py drives the same CLI through real subprocesses.
"""

import gzip
import pickle
import shutil
from pathlib import Path

import pytest
from PIL import Image

from convlens.cli import main


class _Evil:
    def __reduce__(self):
        return (open, ("pwned", "w"))


def _copy_run(run_dir: Path, root: Path) -> Path:
    dst = root / "runs" / "r"
    shutil.copytree(run_dir, dst)
    return dst


def _damaged_data(data_dir: Path, root: Path, how: str) -> Path:
    bad = root / "bad-data"
    shutil.copytree(data_dir, bad)
    f = bad / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(f.read_bytes())
    if how == "truncated":
        f.write_bytes(f.read_bytes()[:5000])
    elif how == "magic":
        f.write_bytes(gzip.compress(b"\x08\x03\x08\x03" + raw[4:]))
    elif how == "ndim":
        f.write_bytes(gzip.compress(b"\x00\x00\x08\x09" + raw[4:]))
    return bad


def _image(root: Path, make) -> Path:
    path = root / "in.png"
    make(path)
    return path


# (issue, what a user did, setup(root, small_run, small_data_dir) -> argv, fragment of the error line)
CASES = [
    (2, "truncated .gz dataset file",
     lambda r, run, d: ["train", "--data-dir", _damaged_data(d, r, "truncated")], "damaged gzip"),
    (2, "dataset file with a wrong magic number",
     lambda r, run, d: ["train", "--data-dir", _damaged_data(d, r, "magic")], "magic number"),
    (2, "an IDX header that claims 9 dimensions",
     lambda r, run, d: ["train", "--data-dir", _damaged_data(d, r, "ndim")], "9 dimensions"),
    (2, "an image that is really a text file",
     lambda r, run, d: ["predict", run, _image(r, lambda p: p.write_text("hello"))], "not an image"),
    (2, "a spec whose dense has no width (train)", lambda r, run, d: ["train", "--model", "conv64-pool-dense"],
     "token 3 'dense'"),
    (2, "a spec whose dense has no width (summary)", lambda r, run, d: ["summary", "conv64-pool-dense"],
     "dense needs a width"),
    (2, "a run that does not exist", lambda r, run, d: ["evaluate", "no-such-run"], "no run 'no-such-run'"),
    (2, "--epochs 0", lambda r, run, d: ["train", "--epochs", "0"], "--epochs must be at least 1"),
    (2, "--batch-size -1", lambda r, run, d: ["train", "--batch-size", "-1"], "--batch-size must be at least 1"),
    (2, "--lr that is not a number", lambda r, run, d: ["train", "--lr", "fast"], "expected a number"),
    (2, "an unknown dataset", lambda r, run, d: ["train", "--dataset", "cifar"], "unknown dataset"),
    (2, "an unknown verb", lambda r, run, d: ["frobnicate"], "invalid choice"),
    (4, "convolve a non-image", lambda r, run, d: ["convolve", _image(r, lambda p: p.write_text("x"))],
     "not an image"),
    (4, "a 1×1 image", lambda r, run, d: ["convolve", _image(r, lambda p: Image.new("L", (1, 1)).save(p, "PNG"))],
     "too small"),
    (4, "a 20,000×20,000 PNG (decompression bomb)",
     lambda r, run, d: ["convolve", _image(r, lambda p: Image.new("1", (20000, 20000)).save(p, "PNG"))],
     "decompression bomb"),
    (4, "a kernel string that is not a matrix", lambda r, run, d: ["convolve", "--kernel", "1,2;3"], "kernel"),
    (4, "an unknown kernel name", lambda r, run, d: ["convolve", "--kernel", "sobel"], "did you mean"),
    (4, "an output pixel outside the result", lambda r, run, d: ["convolve", "--pixel", "40,40"], "outside"),
    (4, "a filter index out of range", lambda r, run, d: ["activations", run, "--filter", "70"],
     "filter 70 is out of range"),
    (4, "test images that are not numbers", lambda r, run, d: ["activations", run, "--images", "0,x"],
     "--images expects test image indices"),
    (4, "a layer index out of range", lambda r, run, d: ["filters", run, "--layer", "5"], "conv layer"),
    (4, "a test image index out of range", lambda r, run, d: ["explain", run, "--index", "10000"], "--index 10000"),
    (5, "a pickle posing as a run's model.safetensors",
     lambda r, run, d: ["evaluate", _pickled(_copy_run(run, r), "model.safetensors")], "is a pickle"),
    (5, "a truncated model.safetensors",
     lambda r, run, d: ["predict", _truncated(_copy_run(run, r), "model.safetensors"), "x.png"],
     "not a valid safetensors"),
    (5, "a TIFF image (not an allowed format)",
     lambda r, run, d: ["predict", run, _tiff(r)], "TIFF images are not accepted"),
    (5, "--resume with a setting of its own", lambda r, run, d: ["train", "--resume", run, "--lr", "0.1"],
     "drop --lr"),
    (5, "--resume of a finished run", lambda r, run, d: ["train", "--resume", run], "has finished"),
    (5, "--resume when both checkpoints are damaged",
     lambda r, run, d: ["train", "--resume", _unfinished_with_bad_checkpoints(_copy_run(run, r))],
     "no usable checkpoint"),
    (7, "a Kaggle CSV with a short row", lambda r, run, d: ["train", "--dataset", f"csv:{_ragged_csv(r)}"],
     "line 3 has 4 values"),
    (7, "an own dataset of an unknown kind", lambda r, run, d: ["train", "--dataset", "zip:x"],
     "idx:FOLDER, csv:PATH or folder:PATH"),
    (7, "an image folder that does not exist", lambda r, run, d: ["train", "--dataset", f"folder:{r / 'none'}"],
     "no such folder"),
    (7, "an image folder with one class", lambda r, run, d: ["train", "--dataset", f"folder:{_one_class_folder(r)}"],
     "found 1 class folder"),
    (7, "a malformed --image-size", lambda r, run, d: ["train", "--dataset", f"folder:{r}", "--image-size", "3x"],
     "use one number (64) or height×width"),
    (7, "explain on a device that does not exist", lambda r, run, d: ["explain", run, "--device", "gpu"],
     "--device must be auto, cpu, cuda or cuda:N"),
    (7, "serve on a device that does not exist", lambda r, run, d: ["serve", "--device", "tpu", "--runs-dir", r],
     "--device must be auto, cpu, cuda or cuda:N"),
    (7, "--image-size for a dataset that is not a folder", lambda r, run, d: ["train", "--image-size", "32"],
     "apply to image folders"),
    (7, "export of a run that does not exist", lambda r, run, d: ["export", "nope"], "no run 'nope'"),
    (7, "export to a format convlens does not write", lambda r, run, d: ["export", run, "--format", "pickle"],
     "invalid choice"),
    (5, "--checkpoint-every -1", lambda r, run, d: ["train", "--checkpoint-every", "-1"],
     "--checkpoint-every must be ≥ 0"),
]


def _one_class_folder(root: Path) -> Path:
    (root / "one" / "cats").mkdir(parents=True)
    Image.new("L", (8, 8)).save(root / "one" / "cats" / "a.png")
    return root / "one"


def _ragged_csv(root: Path) -> Path:
    (root / "short.csv").write_text("label,p1,p2,p3,p4\n1,0,0,0,0\n2,0,0,0\n")
    return root / "short.csv"


def _pickled(run: Path, name: str) -> Path:
    (run / name).write_bytes(pickle.dumps(_Evil(), protocol=2))
    return run


def _truncated(run: Path, name: str) -> Path:
    data = (run / name).read_bytes()
    (run / name).write_bytes(data[: len(data) // 2])
    return run


def _tiff(root: Path) -> Path:
    Image.new("L", (28, 28)).save(root / "in.tif", "TIFF")
    return root / "in.tif"


def _unfinished_with_bad_checkpoints(run: Path) -> Path:
    (run / "results.json").unlink()
    for name in ("checkpoint.safetensors", "checkpoint.prev.safetensors"):
        data = (run / name).read_bytes()
        (run / name).write_bytes(data[:100])
    return run


@pytest.mark.parametrize("issue, what, argv, fragment", CASES, ids=[c[1] for c in CASES])
def test_bad_input_is_one_clear_line(tmp_path, monkeypatch, capsys, small_run, small_data_dir,
                                     issue, what, argv, fragment):
    monkeypatch.chdir(tmp_path)
    args = [str(a) for a in argv(tmp_path, small_run.path, small_data_dir)]
    if args[0] in ("train", "convolve", "activations", "filters", "explain", "evaluate"):
        args += {"train": ["--runs-dir", str(tmp_path / "runs")], "convolve": ["--out", str(tmp_path / "c.png")],
                 "activations": ["--out-dir", str(tmp_path / "figs")], "filters": ["--out", str(tmp_path / "k.png")],
                 "explain": ["--out", str(tmp_path / "e.png")], "evaluate": ["--out-dir", str(tmp_path / "figs")]
                 }[args[0]]
    before = {p for p in tmp_path.rglob("*")}
    rc = main(args)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert rc == 2, (what, rc, err)
    assert len(lines) == 1 and lines[0].startswith("convlens: error:") and fragment in lines[0], (what, err)
    assert "Traceback" not in err
    new = {p for p in tmp_path.rglob("*")} - before
    assert new == set(), f"{what}: left {sorted(map(str, new))}"
    assert not (tmp_path / "pwned").exists()
