"""The seeing-inside verbs through a subprocess: convolve, activations, filters, explain, report, compare."""


import numpy as np
from conftest import run_cli
from PIL import Image


def _png_ok(path):
    img = np.asarray(Image.open(path).convert("L"), dtype=np.float64)
    return img.shape[0] > 100 and img.std() > 5


def test_convolve_on_a_sample_and_a_photo(tmp_path):
    rc, out, err = run_cli("convolve", "--sample", "2", "--out", tmp_path / "lab.png")
    assert rc == 0, err
    assert "28×28 → 26×26 → 13×13" in out and "Trouser" in out and "sum of pixel × weight" in out
    diff = float(out.split("max difference ")[1].split()[0])
    assert diff < 1e-9 and _png_ok(tmp_path / "lab.png")
    photo = np.full((300, 400, 3), 240, np.uint8)
    photo[50:250, 150:250] = 30
    Image.fromarray(photo).save(tmp_path / "photo.jpg")
    rc, out, err = run_cli("convolve", tmp_path / "photo.jpg", "--kernel", "1,0,-1;2,0,-2;1,0,-1", "--stride", "2",
                           "--padding", "1", "--pixel", "10,20", "--out", tmp_path / "p.png")
    assert rc == 0, err
    assert "300×400 → 150×200 → 75×100" in out and "output (10, 20)" in out and _png_ok(tmp_path / "p.png")


def test_activations_filters_explain(tmp_path, small_run):
    runs = small_run.path.parent
    out_dir = tmp_path / "figs"
    rc, out, err = run_cli("activations", "small", "--runs-dir", runs, "--out-dir", out_dir)
    assert rc == 0, err
    for shape in ("26×26×64", "13×13×64", "11×11×64", "5×5×64", "1600", "128", "10"):
        assert shape in out
    pngs = sorted(p.name for p in out_dir.iterdir())
    assert len(pngs) == 5 and "filter-6.png" in pngs and all(_png_ok(out_dir / p) for p in pngs)

    rc, out, err = run_cli("filters", "small", "--runs-dir", runs, "--layer", "1", "--out", tmp_path / "k.png")
    assert rc == 0 and "conv2d_2: 64 kernels of 3×3×64" in out and _png_ok(tmp_path / "k.png"), err

    rc, out, err = run_cli("explain", "small", "--runs-dir", runs, "--index", "0", "--out", tmp_path / "e.png")
    assert rc == 0 and "Ankle boot" in out and "LayerCAM on conv2d_2" in out and _png_ok(tmp_path / "e.png"), err
    Image.new("L", (60, 90), 255).save(tmp_path / "white.png")
    rc, out, err = run_cli("explain", "small", tmp_path / "white.png", "--runs-dir", runs, "--cam", "gradcam",
                           "--out", tmp_path / "e2.png")
    assert rc == 0 and out.count("%") == 3 and "Grad-CAM" in out, err


def test_report_and_compare(tmp_path, small_run, small_data_dir):
    runs = small_run.path.parent
    rc, out, err = run_cli("report", "small", "--runs-dir", runs, "--data-dir", small_data_dir,
                           "--out", tmp_path / "r.html")
    assert rc == 0, err
    html = (tmp_path / "r.html").read_text()
    for needle in ("64 × (3×3×1 + 1) = 640", "Confusion matrix", "Misclassified", "Kernels", "Feature maps",
                   "filter 6", "Convolution lab", "LayerCAM"):
        assert needle in html, needle
    rc, out, err = run_cli("compare", "small", small_run.path, "--runs-dir", runs, "--out", tmp_path / "c.png")
    assert rc == 0 and out.count("small") >= 2 and "243,786" in out and _png_ok(tmp_path / "c.png"), err
