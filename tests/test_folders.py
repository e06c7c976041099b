"""Image folders (--dataset folder:PATH): the listing, the split, the resize rule, skipped files,
streaming from disk equal to memory, and the whole CLI path on real Fashion-MNIST images."""

import io
import json

import numpy as np
import pytest
import torch
from conftest import run_cli
from PIL import Image
from safetensors.torch import load_file

from convlens import TrainConfig, load_dataset, train
from convlens.dataref import parse_image_size
from convlens.datasets import batches
from convlens.errors import DataError
from convlens.folders import StreamedImages
from convlens.images import stretch_image
from convlens.runs import open_run
from convlens.views import data_of

FMNIST = {"tshirt": 0, "trouser": 1, "bag": 8}       # folder name -> Fashion-MNIST label


def save_mixed(img: Image.Image, path_stem, j: int) -> None:
    """Save one image in one of several sizes, modes and formats, chosen by j."""
    kind = j % 6
    if kind == 1:
        img.resize((40, 40)).convert("RGB").save(f"{path_stem}.jpg", quality=95)
    elif kind == 2:
        img.convert("LA").save(f"{path_stem}.png")
    elif kind == 3:
        img.convert("P").save(f"{path_stem}.gif")
    elif kind == 4:
        img.resize((56, 28)).save(f"{path_stem}.bmp")
    elif kind == 5:
        img.convert("RGB").save(f"{path_stem}.webp", lossless=True)
    else:
        img.save(f"{path_stem}.png")


def class_folders(root, images, labels, per_class: int):
    """The first `per_class` images of each FMNIST class, saved by save_mixed into root/CLASS/."""
    for name, label in FMNIST.items():
        (root / name).mkdir()
        for j, i in enumerate((labels == label).nonzero()[:per_class, 0].tolist()):
            save_mixed(Image.fromarray(images[i, 0].numpy()), root / name / f"{j:03d}", j)
    return root


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory, real_data):
    """240 real test images of 3 classes as files of mixed sizes, modes and formats, plus a truncated
    PNG, a PNG of garbage, a text file and a hidden file."""
    root = class_folders(tmp_path_factory.mktemp("folder"), real_data.test_x, real_data.test_y, 80)
    whole = (root / "bag" / "000.png").read_bytes()
    (root / "bag" / "broken.png").write_bytes(whole[:len(whole) // 2])      # a truncated real PNG
    (root / "bag" / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (root / "bag" / "notes.txt").write_text("not an image")
    (root / "bag" / ".DS_Store").write_bytes(b"\x00\x01")
    return root


@pytest.fixture(scope="module")
def train_folder(tmp_path_factory, real_data):
    """600 real training images of 3 classes, enough to learn them, as files of mixed sizes, modes and
    formats, and one corrupt file."""
    root = class_folders(tmp_path_factory.mktemp("trainfolder"), real_data.train_x, real_data.train_y, 200)
    (root / "trouser" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    return root


def test_classes_split_defaults_and_skipped_files_are_reported(mixed_folder, capsys):
    data = load_dataset(f"folder:{mixed_folder}", val_split=0.0)
    assert data.classes == ("bag", "trouser", "tshirt")                   # sorted folder names
    assert data.input_shape == (3, 28, 28)     # most common size 28×28; colour files present -> RGB
    # A stratified fifth of each class is the test set: 16 of 80 per class.
    assert len(data.test_y) == 48 and torch.bincount(data.test_y).tolist() == [16, 16, 16]
    assert len(data.train_y) == 192
    skipped = {p.split("/")[-1]: why for p, why in data.skipped}
    assert set(skipped) == {"broken.png", "garbage.png", "notes.txt"}       # the hidden file is passed over
    assert "damaged or unreadable" in skipped["broken.png"] and "not an image" in skipped["garbage.png"]
    assert "not an image file by its name" in skipped["notes.txt"]
    err = capsys.readouterr().err
    assert "skipped 3 of 243 files" in err and "bag/broken.png" in err and "bag/notes.txt" in err


def test_the_test_split_is_seeded_and_the_same_for_every_run_seed(mixed_folder):
    a = load_dataset(f"folder:{mixed_folder}", val_split=0.1, seed=1)
    b = load_dataset(f"folder:{mixed_folder}", val_split=0.1, seed=2)
    assert torch.equal(a.test_x, b.test_x) and torch.equal(a.test_y, b.test_y)
    assert not torch.equal(a.val_x, b.val_x)                                 # --seed moves validation only


def test_one_class_growing_leaves_the_other_classes_split_alone(tmp_path, real_data):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for j in range(20):
            Image.fromarray(real_data.test_x[j + (100 if name == "b" else 0), 0].numpy()).save(tmp_path / name / f"{j}.png")
    before = load_dataset(f"folder:{tmp_path}", val_split=0.0)
    Image.fromarray(real_data.test_x[999, 0].numpy()).save(tmp_path / "a" / "new.png")
    after = load_dataset(f"folder:{tmp_path}", val_split=0.0)
    b_before, b_after = before.test_x[before.test_y == 1], after.test_x[after.test_y == 1]
    assert len(b_before) == 4 and torch.equal(b_before, b_after)


def test_image_size_and_channels_follow_the_documented_rule(mixed_folder):
    data = load_dataset(f"folder:{mixed_folder}", val_split=0.0, image_size=(32, 48), channels=1)
    assert data.input_shape == (1, 32, 48)
    # Every image went through stretch_image: one of the 56×28 BMPs, by hand.
    bmp = sorted((mixed_folder / "bag").glob("*.bmp"))[0]
    expected = np.asarray(Image.open(bmp).convert("L").resize((48, 32), Image.Resampling.BILINEAR))
    assert np.array_equal(stretch_image(Image.open(bmp), (32, 48), 1)[0], expected)
    rgba = Image.new("RGBA", (10, 10), (255, 0, 0, 0))                      # fully transparent -> white
    assert stretch_image(rgba, (4, 4), 3).min() == 255
    assert parse_image_size("64") == (64, 64) and parse_image_size("48x64") == (48, 64)
    for bad in ("0", "abc", "64x", "2x2", "9999"):
        with pytest.raises(DataError):
            parse_image_size(bad)


def test_own_train_and_test_subfolders_are_used_as_they_are(tmp_path, real_data):
    for part, offset in (("train", 0), ("test", 500)):
        for name in ("a", "b"):
            (tmp_path / part / name).mkdir(parents=True)
            for j in range(5 if part == "train" else 3):
                Image.fromarray(real_data.test_x[offset + j, 0].numpy()).save(tmp_path / part / name / f"{j}.png")
    data = load_dataset(f"folder:{tmp_path}", val_split=0.0)
    assert (len(data.train_y), len(data.test_y), data.input_shape) == (10, 6, (1, 28, 28))
    assert torch.equal(data.test_x[0, 0], real_data.test_x[500, 0])
    (tmp_path / "test" / "c").mkdir()
    with pytest.raises(DataError, match="test/c is not a class of train/"):
        load_dataset(f"folder:{tmp_path}")


@pytest.mark.parametrize("layout, fragment", [
    ({}, "no such folder"),
    ({"only/x.png": True}, "found 1 class folder; an image folder needs one sub-folder per class"),
    ({"a/x.png": False, "b/y.png": False}, "none of the 2 image files could be read"),
    ({"a/x.txt": None, "b/y.txt": None}, "no image files"),
])
def test_bad_folders_get_one_clear_error(tmp_path, layout, fragment):
    root = tmp_path / "data"
    for rel, good in layout.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if good:
            Image.new("L", (8, 8)).save(path)
        else:
            path.write_bytes(b"garbage")
    with pytest.raises(DataError, match=fragment):
        load_dataset(f"folder:{root}")


def test_folder_options_are_refused_for_other_datasets():
    with pytest.raises(DataError, match="apply to image folders"):
        load_dataset("fashion-mnist", image_size=(32, 32))


def test_streamed_images_decode_to_what_memory_holds(train_folder):
    held = load_dataset(f"folder:{train_folder}", val_split=0.1, seed=0)
    streamed = load_dataset(f"folder:{train_folder}", val_split=0.1, seed=0, stream=True)
    assert isinstance(streamed.train_x, StreamedImages) and not isinstance(held.train_x, StreamedImages)
    assert streamed.train_x.shape == held.train_x.shape and streamed.input_shape == held.input_shape
    assert torch.equal(streamed.train_y, held.train_y)
    assert torch.equal(streamed.test_x[3], held.test_x[3]) and torch.equal(streamed.val_x[2:9], held.val_x[2:9])
    assert torch.equal(streamed.test_x[[5, 1], 0], held.test_x[[5, 1], 0])
    order = [torch.randperm(len(held.train_y))[:64] for _ in range(12)]      # > one worker task: workers decode
    for a, b in zip(batches(streamed.train_x, order), batches(held.train_x, order)):
        assert torch.equal(a, b)


def test_training_from_disk_equals_training_from_memory(tmp_path, train_folder):
    """Same seed, same order, same pixels: a streamed run's weights equal the in-memory run's, bit for bit."""
    weights = []
    for stream in (False, True):
        run = train(TrainConfig(dataset=f"folder:{train_folder}", stream=stream, epochs=1, deterministic=True,
                                runs_dir=str(tmp_path), name=f"stream-{stream}"))
        assert run.record["resolved"]["streamed"] is stream
        weights.append(load_file(run.path / "model.safetensors"))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_a_file_gone_after_listing_is_named(tmp_path, real_data):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for j in range(10):
            Image.fromarray(real_data.test_x[j, 0].numpy()).save(tmp_path / name / f"{j}.png")
    data = load_dataset(f"folder:{tmp_path}", val_split=0.0, stream=True)
    gone = data.train_x.paths[0]
    (tmp_path / gone).unlink()
    with pytest.raises(DataError, match=r"0\.png: no such file \(it was readable when the folder was listed\)"):
        data.train_x[0]
    with pytest.raises(DataError, match="it was readable when the folder was listed"):
        list(data.train_x.split(4))


def test_cli_trains_evaluates_predicts_and_reports_on_an_image_folder(tmp_path, train_folder, mixed_folder):
    runs = tmp_path / "runs"
    rc, out, err = run_cli("train", "--dataset", f"folder:{train_folder}", "--epochs", "3", "--runs-dir", runs,
                           "--name", "clothes")
    assert rc == 0, err
    assert "Input: 28×28×3" in out and "dense_2 (Dense)                 3" in out     # sized to the data
    assert "skipped 1 of 601 files" in err and "trouser/corrupt.jpg" in err
    run = open_run(runs / "clothes")
    assert run.classes == ["bag", "trouser", "tshirt"] and run.image_rule == "folder"
    assert run.results["test_accuracy"] >= 0.90, run.results                 # 3 easy classes, 120 test images
    html = (runs / "clothes" / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 10 and "Feature maps" in html and "Kernels" in html

    rc, out, err = run_cli("evaluate", "clothes", "--runs-dir", runs, "--json")
    assert rc == 0, err
    assert json.loads(out)["accuracy"] == pytest.approx(run.results["test_accuracy"])

    # Test images of other sizes, modes and formats are prepared by the folder rule: most are right.
    files = sorted(p for p in (mixed_folder / "trouser").iterdir() if p.suffix in (".jpg", ".bmp", ".webp"))[:6]
    rc, out, err = run_cli("predict", "clothes", *map(str, files), "--runs-dir", runs)
    assert rc == 0, err
    assert sum(line.split(": ", 1)[1].startswith("trouser") for line in out.splitlines()) >= 5, out

    # The same model on another folder of the same classes (RGB files, other sizes): converted to its input.
    rc, out, err = run_cli("evaluate", "clothes", "--runs-dir", runs, "--dataset", f"folder:{mixed_folder}", "--json")
    assert rc == 0, err
    assert json.loads(out)["accuracy"] >= 0.85 and "skipped 3 of 243 files" in err


def test_the_explorer_shows_a_colour_folder_run(tmp_path, train_folder):
    from fastapi.testclient import TestClient

    from convlens.server import create_app
    run = train(TrainConfig(dataset=f"folder:{train_folder}", epochs=1, runs_dir=str(tmp_path), name="rgb"))
    client = TestClient(create_app(tmp_path), base_url="http://127.0.0.1:8000")
    png = client.get("/api/runs/rgb/test/3.png")
    assert png.status_code == 200
    assert Image.open(io.BytesIO(png.content)).mode == "RGB"                  # drawn in colour, not channel 0
    inspect = client.get("/api/runs/rgb/inspect", params={"index": 3}).json()
    assert inspect["input"]["shape"] == [3, 28, 28]
    evaluation = client.get("/api/runs/rgb/evaluation").json()
    assert evaluation["accuracy"] == pytest.approx(run.results["test_accuracy"])
    # An upload of another size is prepared by the folder rule, as `predict` does it.
    buf = io.BytesIO()
    Image.open(sorted((train_folder / "bag").glob("*.jpg"))[0]).save(buf, "PNG")
    upload = client.post("/api/upload", files={"file": ("bag.png", buf.getvalue(), "image/png")}).json()
    top = client.get("/api/runs/rgb/predict", params={"image_id": upload["image_id"]}).json()["top"]
    assert {t["class"] for t in top} == {"bag", "trouser", "tshirt"}


def test_a_folder_run_reads_back_the_files_it_recorded(tmp_path, train_folder):
    """files.json lists what was read; evaluate & co. stream those files instead of listing the folder again."""
    from convlens.errors import RunError
    run = train(TrainConfig(dataset=f"folder:{train_folder}", epochs=1, runs_dir=str(tmp_path), name="listed"))
    listed = json.loads((run.path / "files.json").read_text())
    assert len(listed["train"]) + len(listed["test"]) == 600                   # all but the corrupt file
    assert all(not p.startswith("/") for p, _ in listed["train"] + listed["test"])
    again = data_of(open_run(run.path))
    fresh = load_dataset(f"folder:{train_folder}", val_split=0.0)
    assert isinstance(again.test_x, StreamedImages) and again.input_shape == fresh.input_shape
    assert torch.equal(again.test_x[0:len(fresh.test_y)], fresh.test_x) and torch.equal(again.test_y, fresh.test_y)

    listed["test"][0][0] = "../../etc/passwd.png"                               # a run handed over, tampered
    (run.path / "files.json").write_text(json.dumps(listed))
    with pytest.raises(RunError, match="is not a file inside"):
        data_of(open_run(run.path))
    listed["test"][0] = ["bag/000.png", 7]
    (run.path / "files.json").write_text(json.dumps(listed))
    with pytest.raises(RunError, match="label 7 is not one of the 3 classes"):
        data_of(open_run(run.path))


def test_cli_data_shows_a_folder_class_by_class(mixed_folder):
    rc, out, err = run_cli("data", "--dataset", f"folder:{mixed_folder}")
    assert rc == 0, err
    lines = out.splitlines()
    assert "3 classes, images 28×28×3" in lines[0] and "held in memory" in lines[0]
    assert "192 training and 48 test images; 3 files skipped" in lines[1]
    assert [line.split() for line in lines[3:]] == [["bag", "64", "16"], ["trouser", "64", "16"], ["tshirt", "64", "16"]]
    assert "bag/broken.png" in err
    rc, out, err = run_cli("data", "verify", "--dataset", f"folder:{mixed_folder}")
    assert rc == 2 and err.strip().splitlines() == [
        "convlens: error: data verify: your own data has no recorded checksums to verify; `convlens data` shows it"]
