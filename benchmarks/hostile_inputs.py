"""Issue 15's attacks, run again as a user runs them: each a `convlens` command in its own process,
its exit status, its last stderr line, its wall time and its peak memory (the process's own:
benchmarks/measured.py). Every hostile input must be one line `convlens: error: …` (or a clean skip), in
under 10 s and under 1.5 GB.

    python benchmarks/hostile_inputs.py [OUT.json]      (needs the real Fashion-MNIST, as `make test`)
"""

import gzip
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

import measured  # benchmarks/measured.py: a command's own peak RSS
from convlens.bench import machine

LIMIT_S, LIMIT_MB = 10.0, 1536


def convlens(*args, cwd: Path) -> dict:
    """Run `convlens ARGS`; exit status, last stderr line, seconds, peak RSS in MB of that process alone."""
    t0 = time.monotonic()
    with tempfile.TemporaryFile("w+") as stderr:
        proc, peak = measured.start([sys.executable, "-m", "convlens", *args], cwd=cwd,
                                    stdout=subprocess.DEVNULL, stderr=stderr, text=True)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            measured.stop(proc)
            proc.wait()
        stderr.seek(0)
        err = stderr.read().strip().splitlines()
    return {"status": proc.returncode, "seconds": round(time.monotonic() - t0, 2),
            "peak_mb": round(measured.peak_mb(peak)), "said": err[-1] if err else "", "lines": len(err)}


def idx_dir(root: Path, name: str, label: int = 1, dims=None, n: int = 10, test_side: int = 28) -> Path:
    def idx(arr, code, shape):
        return bytes([0, 0, code, len(shape)]) + b"".join(struct.pack(">I", s) for s in shape) + arr.tobytes()
    folder = root / name
    folder.mkdir()
    labels = np.full(n, label, ">i4")
    (folder / "train-images-idx3-ubyte").write_bytes(idx(np.zeros((n, 28, 28), np.uint8), 8, dims or (n, 28, 28)))
    (folder / "train-labels-idx1-ubyte").write_bytes(idx(labels, 0x0C, (n,)))
    (folder / "t10k-images-idx3-ubyte").write_bytes(idx(np.zeros((n, test_side, test_side), np.uint8), 8,
                                                        (n, test_side, test_side)))
    (folder / "t10k-labels-idx1-ubyte").write_bytes(idx(labels, 0x0C, (n,)))
    return folder


def small_data(root: Path) -> Path:
    """3,000 training and 1,000 test images of the real Fashion-MNIST, as IDX files."""
    src, out = Path("/usr/share/datasets/fashion-mnist"), root / "small"
    out.mkdir()
    for name, n in (("train-images-idx3-ubyte.gz", 3000), ("train-labels-idx1-ubyte.gz", 3000),
                    ("t10k-images-idx3-ubyte.gz", 1000), ("t10k-labels-idx1-ubyte.gz", 1000)):
        raw = gzip.decompress((src / name).read_bytes())
        header = 16 if "images" in name else 8
        body = raw[header:header + n * (784 if "images" in name else 1)]
        head = bytearray(raw[:header])
        head[4:8] = struct.pack(">I", n)
        (out / name).write_bytes(gzip.compress(bytes(head) + body))
    return out


def damaged(run: Path, root: Path, name: str, how) -> Path:
    copy = root / name
    shutil.copytree(run, copy)
    how(copy)
    return copy


def zero_block(run: Path) -> None:
    f = run / "model.safetensors"
    data = bytearray(f.read_bytes())
    start = 8 + int.from_bytes(data[:8], "little") + 1000
    data[start:start + 4096] = bytes(4096)
    f.write_bytes(bytes(data))


def flip_bits(run: Path) -> None:
    f = run / "model.safetensors"
    data = bytearray(f.read_bytes())
    rng = np.random.default_rng(0)
    for i in rng.integers((8 + int.from_bytes(data[:8], "little")) * 8, len(data) * 8, 50):
        data[i // 8] ^= 1 << (i % 8)
    f.write_bytes(bytes(data))


def edit_json(name: str, change):
    def edit(run: Path) -> None:
        (run / name).write_text(json.dumps(change(json.loads((run / name).read_text()))))
    return edit


def raw_json(name: str, text: str):
    return lambda run: (run / name).write_text(text)


def attacks(root: Path, data: Path, run: Path) -> list[tuple[str, list, int, str]]:
    """(what, argv, expected exit status, fragment of the last stderr line)."""
    png = root / "shoe.png"
    Image.new("L", (60, 40), 250).save(png)
    (root / "zero.png").symlink_to("/dev/zero")
    os.mkfifo(root / "fifo.png")
    pets = root / "pets"
    for cls in ("cats", "dogs"):
        (pets / cls).mkdir(parents=True)
        for i in range(4):
            Image.new("L", (8, 8), 40 * i + (cls == "dogs")).save(pets / cls / f"{i}.png")
    (pets / "everything").symlink_to("/")
    (pets / "cats" / "z.png").symlink_to("/dev/zero")
    os.mkfifo(pets / "dogs" / "p.png")
    csv = root / "label.csv"
    csv.write_text(f"{10**12}," + ",".join(["0"] * 784) + "\n" + ("1," + ",".join(["0"] * 784) + "\n") * 9)
    (root / "afile").write_text("x")
    (root / "pets-empty" / "a").mkdir(parents=True)
    (root / "pets-empty" / "b").mkdir()
    Image.new("L", (8, 8)).save(root / "pets-empty" / "a" / "0.png")
    runs = ["--runs-dir", root / "runs"]
    r = lambda name, how: damaged(run, root, name, how)     # noqa: E731
    return [
        ("predict with the reproduction's model (conv8-conv8-pool-flatten-dense128-bn-dense10)",
         ["predict", run, png], 0, ""),
        ("predict /dev/zero", ["predict", run, "/dev/zero"], 2, "is a character device"),
        ("predict /dev/urandom", ["predict", run, "/dev/urandom"], 2, "is a character device"),
        ("predict a link to /dev/zero", ["predict", run, root / "zero.png"], 2, "is a character device"),
        ("predict a FIFO", ["predict", run, root / "fifo.png"], 2, "is a FIFO"),
        ("a folder with a class linked to /, a link to /dev/zero, a FIFO", ["data", "--dataset", f"folder:{pets}"],
         0, ""),
        ("IDX label 2^31 - 1", ["train", "--dataset", f"idx:{idx_dir(root, 'big', label=2**31 - 1)}", *runs], 2,
         "at most 10,000 classes"),
        ("CSV label 10^12", ["train", "--dataset", f"csv:{csv}", *runs], 2, "at most 10,000 classes"),
        ("IDX dimensions wrapping to 0", ["train", "--dataset", f"idx:{idx_dir(root, 'wrap', dims=(2**32 - 1,) * 3)}",
                                          *runs], 2, "header says"),
        ("IDX with 0 images", ["train", "--dataset", f"idx:{idx_dir(root, 'none', n=0)}", *runs], 2, "no images"),
        ("20×20 test beside 28×28 training", ["train", "--dataset", f"idx:{idx_dir(root, 'mixed', test_side=20)}",
                                              *runs], 2, "20×20×1"),
        ("model.json spec of 2 million tokens",
         ["predict", r("long-spec", edit_json("model.json", lambda m: {**m, "spec": "conv8-" * 2_000_000 + "dense10"})),
          png], 2, "at most 4,000"),
        ("spec dense2000000", ["summary", "flatten-dense2000000-dense10"], 2, "at most 65,536"),
        ("spec conv99999999999999999999", ["train", "--model", "conv99999999999999999999", *runs], 2, "at most"),
        ("model.json nested 200,000 deep", ["predict", r("deep", raw_json("model.json", "[" * 200_000 + "]" * 200_000)),
                                            png], 2, "nested too deeply"),
        ("config.json with a 5,000-digit integer", ["evaluate", r("digits", raw_json("config.json", '{"seed": '
                                                                                   + "9" * 5000 + "}"))], 2, "JSON"),
        ("--val-split 0.999999", ["train", "--data-dir", data, "--val-split", "0.999999", *runs], 2, "no training"),
        ("--seed -1", ["train", "--seed", "-1", *runs], 2, "--seed must be"),
        ("23-digit --seed", ["train", "--seed", "1" * 23, *runs], 2, "--seed must be"),
        ("--threads 100000", ["train", "--threads", "100000", *runs], 2, "--threads must be"),
        ("serve --port 70000", ["serve", "--port", "70000", *runs], 2, "port"),
        ("serve --runs-dir a file", ["serve", "--runs-dir", root / "afile"], 2, "file"),
        ("train --runs-dir a file", ["train", "--data-dir", data, "--runs-dir", root / "afile"], 2, "is a file"),
        ("train --name ../x", ["train", "--name", "../x", *runs], 2, "bad run name"),
        ("model.safetensors with a zeroed 4 KiB block", ["evaluate", r("zeroed", zero_block), "--data-dir", data], 2,
         "damaged"),
        ("model.safetensors with 50 flipped bits", ["evaluate", r("flipped", flip_bits), "--data-dir", data], 2,
         "damaged"),
        ("model.json with its classes reversed",
         ["predict", r("reversed", edit_json("model.json", lambda m: {**m, "classes": m["classes"][::-1]})), png], 2,
         "does not match"),
        ("an image folder with an empty class", ["train", "--dataset", f"folder:{root / 'pets-empty'}", *runs], 2,
         "has no image files"),
    ]


def main(out: str | None = None) -> None:
    root = Path(tempfile.mkdtemp(prefix="hostile-"))
    data = small_data(root)
    subprocess.run([sys.executable, "-m", "convlens", "train", "--data-dir", data, "--runs-dir", root / "good",
                    "--model", "conv8-conv8-pool-flatten-dense128-bn-dense10", "--epochs", "1", "--name", "magic80",
                    "--no-report"], check=True, capture_output=True)
    run = root / "good" / "magic80"
    rows = []
    for what, argv, status, fragment in attacks(root, data, run):
        r = convlens(*argv, cwd=root)
        r["ok"] = (r["status"] == status and fragment in r["said"] and r["lines"] <= (1 if status else 9)
                   and r["seconds"] < LIMIT_S and r["peak_mb"] < LIMIT_MB)
        rows.append({"attack": what, **r})
        print(f"{'ok ' if r['ok'] else 'BAD'} {r['seconds']:5.2f} s {r['peak_mb']:5d} MB  {what}: {r['said'][:110]}")
    result = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"), "limits": {"s": LIMIT_S, "mb": LIMIT_MB},
              "ok": sum(r["ok"] for r in rows), "of": len(rows), "rows": rows}
    print(f"{result['ok']} of {result['of']} as documented")
    if out:
        Path(out).write_text(json.dumps(result, indent=2) + "\n")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
