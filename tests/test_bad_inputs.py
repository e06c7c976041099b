"""Every bad input the issues name, in one table: each gets one line `convlens: error: …`, a non-zero
exit status, no traceback, and leaves no half-written run or figure behind.

The table drives `convlens.cli.main` in this process (a subprocess per row would spend most of its
time importing torch); tests/test_cli.py drives the same CLI through real subprocesses.
"""

import gzip
import pickle
import shutil
import time
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
    # issue 15: hostile and careless inputs, second pass
    (15, "a model.json spec of 2 million tokens",
     lambda r, run, d: ["predict", _edited_model_json(_copy_run(run, r), spec="conv8-" * 2_000_000 + "dense10"),
                        _png_file(r)], "convlens reads specs of at most 4,000"),
    (15, "a spec asking for dense2000000", lambda r, run, d: ["summary", "flatten-dense2000000-dense10"],
     "2,000,000 units; at most 65,536"),
    (15, "a spec asking for 10^20 filters", lambda r, run, d: ["train", "--model", "conv99999999999999999999"],
     "filters; at most 65,536"),
    (15, "model.json nested 200,000 deep", lambda r, run, d: ["predict", _raw_file(_copy_run(run, r), "model.json",
                                                                 "[" * 200_000 + "]" * 200_000), _png_file(r)],
     "nested too deeply"),
    (15, "a 5,000-digit integer in config.json",
     lambda r, run, d: ["evaluate", _raw_file(_copy_run(run, r), "config.json", '{"seed": ' + "9" * 5000 + "}")],
     "not readable JSON"),
    (15, "an IDX label of 2^31 - 1", lambda r, run, d: ["train", "--dataset", f"idx:{_idx_dir(r, label=2**31 - 1)}"],
     "at most 10,000 classes"),
    (15, "a CSV label of 10^12", lambda r, run, d: ["train", "--dataset", f"csv:{_csv_with_label(r, 10**12)}"],
     "at most 10,000 classes"),
    (15, "IDX dimensions whose product wraps to 0",
     lambda r, run, d: ["train", "--dataset", f"idx:{_idx_dir(r, dims=(2**32 - 1, 2**32 - 1, 2**32 - 1))}"],
     "header says"),
    (15, "an IDX file of 0 images", lambda r, run, d: ["train", "--dataset", f"idx:{_idx_dir(r, n=0)}"],
     "no images"),
    (15, "float IDX labels", lambda r, run, d: ["train", "--dataset", f"idx:{_idx_dir(r, float_labels=True)}"],
     "labels are float32 numbers"),
    (15, "20×20 test images beside 28×28 training images",
     lambda r, run, d: ["train", "--dataset", f"idx:{_idx_dir(r, test_side=20)}"],
     "training images are 28×28×1 but the test images 20×20×1"),
    (15, "--val-split 0.999999", lambda r, run, d: ["train", "--data-dir", d, "--val-split", "0.999999"],
     "leaves no training images"),
    (15, "--seed -1", lambda r, run, d: ["train", "--seed", "-1"], "--seed must be 0 to 4,294,967,295"),
    (15, "a 23-digit --seed", lambda r, run, d: ["train", "--seed", "1" * 23], "--seed must be 0 to"),
    (15, "--threads 100000", lambda r, run, d: ["train", "--threads", "100000"], "--threads must be 0"),
    (15, "a bad run name, refused before any data is read", lambda r, run, d: ["train", "--name", "../x"],
     "bad run name"),
    (15, "--runs-dir that is a file", lambda r, run, d: ["train", "--data-dir", _raw_file(r, "runs", "x") and d],
     "is a file, not a folder"),                              # the table adds --runs-dir ROOT/runs: a file here
    (15, "--resume of a run killed in its first checkpoint write",
     lambda r, run, d: ["train", "--resume", _never_checkpointed(_copy_run(run, r))],
     "nothing was trained; delete"),
    (15, "a new run named like one killed in its first checkpoint write",
     lambda r, run, d: ["train", "--name", _never_checkpointed(_copy_run(run, r)).name, "--runs-dir", r / "runs"],
     "stopped before its first checkpoint, so nothing was trained: delete"),
    (15, "export into a folder that holds an earlier export",
     lambda r, run, d: ["export", _exported(_copy_run(run, r)), "--format", "torchscript", "--no-check"],
     "already exists: pass --force"),
    (15, "an image folder with an empty class folder",
     lambda r, run, d: ["train", "--dataset", f"folder:{_folder_with_empty_class(r)}"], "has no image files"),
]


def _png_file(root: Path) -> Path:
    Image.new("L", (28, 28), 255).save(root / "shoe.png")
    return root / "shoe.png"


def _raw_file(folder: Path, name: str, text: str) -> Path:
    (folder / name).write_text(text)
    return folder


def _edited_model_json(run: Path, **changes) -> Path:
    import json
    info = json.loads((run / "model.json").read_text())
    (run / "model.json").write_text(json.dumps({**info, **changes}))
    return run


def _idx_dir(root: Path, n: int = 10, label: int = 1, dims=None, float_labels=False, test_side=28) -> Path:
    """Four IDX files of n images (IDX headers written by hand: dims may lie, labels may be floats)."""
    import struct

    import numpy as np

    def idx(arr, code, shape):
        return bytes([0, 0, code, len(shape)]) + b"".join(struct.pack(">I", s) for s in shape) + arr.tobytes()
    folder = root / "own-idx"
    folder.mkdir()
    images = np.zeros((n, 28, 28), np.uint8)
    labels = np.full(n, label, ">f4" if float_labels else ">i4")
    code = 0x0D if float_labels else 0x0C
    (folder / "train-images-idx3-ubyte").write_bytes(idx(images, 0x08, dims or images.shape))
    (folder / "train-labels-idx1-ubyte").write_bytes(idx(labels, code, labels.shape))
    test = np.zeros((n, test_side, test_side), np.uint8)
    (folder / "t10k-images-idx3-ubyte").write_bytes(idx(test, 0x08, test.shape))
    (folder / "t10k-labels-idx1-ubyte").write_bytes(idx(labels, code, labels.shape))
    return folder


def _csv_with_label(root: Path, label: int) -> Path:
    rows = [f"{label}," + ",".join(["0"] * 784)] + [",".join(["1"] + ["0"] * 784)] * 9
    (root / "big-label.csv").write_text("\n".join(rows) + "\n")
    return root / "big-label.csv"


def _exported(run: Path) -> Path:
    (run / "export").mkdir()
    (run / "export" / "model.torchscript").write_bytes(b"an earlier export")
    return run


def _never_checkpointed(run: Path) -> Path:
    """A run as a SIGKILL in its very first checkpoint write leaves it: config and model, the empty metrics
    and the untrained network's probe snapshot, nothing else."""
    for p in run.iterdir():
        if p.is_dir() and p.name != "probe":
            shutil.rmtree(p)
        elif p.name not in ("config.json", "model.json", "metrics.jsonl", "probe"):
            p.unlink()
    (run / "metrics.jsonl").write_text("")
    for p in (run / "probe").glob("*"):
        if p.name != "epoch-0000.json":
            p.unlink()
    return run


def _folder_with_empty_class(root: Path) -> Path:
    for name, n in (("cats", 3), ("dogs", 3), ("empty", 0)):
        (root / "pets" / name).mkdir(parents=True)
        for i in range(n):
            Image.new("L", (8, 8), 40 * i).save(root / "pets" / name / f"{i}.png")
    return root / "pets"


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
    t0 = time.monotonic()
    rc = main(args)
    assert time.monotonic() - t0 < 10, f"{what}: answered only after {time.monotonic() - t0:.1f} s"
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert rc == 2, (what, rc, err)
    assert len(lines) == 1 and lines[0].startswith("convlens: error:") and fragment in lines[0], (what, err)
    assert "Traceback" not in err
    new = {p for p in tmp_path.rglob("*")} - before
    assert new == set(), f"{what}: left {sorted(map(str, new))}"
    assert not (tmp_path / "pwned").exists()
