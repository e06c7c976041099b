"""Your own data: idx:DIR and csv:PATH (Kaggle layout), presets that fit any class count, clear errors."""

import json

import numpy as np
import pytest
import torch
from conftest import run_cli, write_idx_dir

from convlens import TrainConfig, load_dataset, summarize, train
from convlens.errors import DataError


def kaggle_csv(path, x, y, header=True):
    """The Kaggle Fashion-MNIST/MNIST CSV layout: label,pixel1,…,pixel784."""
    rows = np.concatenate([np.asarray(y).reshape(-1, 1), np.asarray(x).reshape(len(y), -1)], axis=1)
    head = "label," + ",".join(f"pixel{i}" for i in range(1, rows.shape[1])) + "\n" if header else ""
    path.write_text(head + "\n".join(",".join(map(str, r)) for r in rows.tolist()) + "\n")
    return path


def test_idx_folder_with_its_own_classes_trains_a_preset_sized_to_them(tmp_path, real_data):
    keep = real_data.train_y < 3                             # three classes of the real images
    tx, ty = real_data.train_x[keep][:1500, 0].numpy(), real_data.train_y[keep][:1500].numpy()
    tkeep = real_data.test_y < 3
    folder = write_idx_dir(tmp_path / "three", tx, ty, real_data.test_x[tkeep][:300, 0].numpy(),
                           real_data.test_y[tkeep][:300].numpy())
    (folder / "classes.txt").write_text("top\ntrouser\npullover\n")
    data = load_dataset(f"idx:{folder}", val_split=0.1)
    assert data.classes == ("top", "trouser", "pullover") and data.input_shape == (1, 28, 28)
    assert len(data.train_y) == 1350 and len(data.val_y) == 150 and len(data.test_y) == 300
    assert summarize("seed", data.input_shape, 3).layers[-1].params == 3 * 129          # dense10 → dense3
    run = train(TrainConfig(model="seed", dataset=f"idx:{folder}", epochs=1, runs_dir=str(tmp_path / "runs"),
                            name="three"), data=data)
    assert run.model_info.spec.endswith("dense3") and run.classes == ["top", "trouser", "pullover"]
    assert run.results["test_accuracy"] > 0.8
    rc, out, err = run_cli("evaluate", "three", "--runs-dir", tmp_path / "runs", "--no-figures")
    assert rc == 0 and "Test images: 300" in out and "trouser" in out, err


def test_kaggle_csv_of_the_real_test_set_gives_the_idx_accuracy_exactly(tmp_path, real_seed_run, real_data):
    folder = tmp_path / "kaggle"
    folder.mkdir()
    kaggle_csv(folder / "fashion-mnist_train.csv", real_data.train_x[:500, 0].numpy(), real_data.train_y[:500])
    kaggle_csv(folder / "fashion-mnist_test.csv", real_data.test_x[:, 0].numpy(), real_data.test_y, header=True)
    runs = real_seed_run.path.parent
    rc, out_csv, err = run_cli("evaluate", real_seed_run.name, "--runs-dir", runs, "--dataset", f"csv:{folder}",
                               "--json", timeout=600)
    assert rc == 0, err
    rc, out_idx, err = run_cli("evaluate", real_seed_run.name, "--runs-dir", runs, "--json")
    assert rc == 0, err
    a, b = json.loads(out_csv), json.loads(out_idx)
    assert a["images"] == b["images"] == 10000
    assert a["accuracy"] == b["accuracy"] and a["confusion"] == b["confusion"]


def test_one_csv_handed_to_evaluate_is_all_test_data(tmp_path, real_seed_run, real_data):
    """The user hands over a file to score: every row is scored, not a seeded fifth of them (issue 15)."""
    path = kaggle_csv(tmp_path / "test.csv", real_data.test_x[:, 0].numpy(), real_data.test_y, header=True)
    runs = real_seed_run.path.parent
    rc, out, err = run_cli("evaluate", real_seed_run.name, "--runs-dir", runs, "--dataset", f"csv:{path}", "--json",
                           timeout=600)
    assert rc == 0, err
    assert json.loads(out)["images"] == 10000


def test_one_csv_without_a_header_has_one_test_split_for_every_seed(tmp_path, real_data):
    path = kaggle_csv(tmp_path / "all.csv", real_data.test_x[:1000, 0].numpy(), real_data.test_y[:1000], header=False)
    a = load_dataset(f"csv:{path}", val_split=0.1, seed=3)
    b = load_dataset(f"csv:{path}", val_split=0.1, seed=4)
    assert len(a.test_y) == 200 and len(a.train_y) + len(a.val_y) == 800
    assert torch.equal(a.test_x, b.test_x) and a.classes == tuple(str(i) for i in range(10))
    assert not torch.equal(a.val_x, b.val_x)          # --seed moves the validation split only
    assert (a.test_x[0] == a.test_x[0]).all() and a.train_x.dtype.is_floating_point is False


@pytest.mark.parametrize("text, fragment", [
    ("label,p1,p2,p3,p4\n1,0,0,0,0\n2,0,0,0\n", "line 3 has 4 values, the lines before it 5"),
    ("1,0,0,0,0\n2,0,300,0,0\n", "line 2, pixel 2 is 300; pixels are 0 to 255"),
    ("1,0,0,0,0\n-1,0,0,0,0\n", "line 2 has label -1"),
    ("1,0,0,0\n", "3 pixel columns is not a square image"),
    ("1,0,0,a,0\n", "not a table of whole numbers"),
    ("label,p1\n", "no rows"),
])
def test_bad_csv_files_get_one_clear_line(tmp_path, text, fragment):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DataError) as e:
        load_dataset(f"csv:{path}")
    assert fragment in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)


def test_bad_own_dataset_names(tmp_path):
    for name, fragment in ((f"idx:{tmp_path / 'nope'}", "no such folder"), ("zip:x", "idx:FOLDER, csv:PATH or folder:PATH"),
                           (f"csv:{tmp_path / 'none.csv'}", "no such file"), (f"idx:{tmp_path}", "exactly one train")):
        with pytest.raises(DataError, match=fragment):
            load_dataset(name)
