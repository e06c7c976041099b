"""One function behind each thing the CLI, the report and the explorer all show: each face is
driven once, as a user would, and each must have called the shared builder in views.py."""

import shutil

import pytest
from fastapi.testclient import TestClient

from convlens import compare, explanations, feature_views, views
from convlens.cli import main
from convlens.report import build_run_report
from convlens.runs import open_run
from convlens.server import create_app


@pytest.fixture
def calls(monkeypatch):
    """Every call of the shared view builders, by name, while they still do their work."""
    seen = []
    for module, names in ((views, ("explain", "kernel_figure", "mistakes_gallery", "evaluation_figures", "lab_figure",
                                   "test_image", "layer_figures", "curves_figure")),
                          (explanations, ("method_maps", "sanity_check", "deletion")),
                          (feature_views, ("layer_features",))):
        for name in names:
            real = getattr(module, name)

            def spy(*args, _real=real, _name=name, **kw):
                seen.append(_name)
                return _real(*args, **kw)
            monkeypatch.setattr(module, name, spy)
    return seen


@pytest.fixture(scope="module")
def served(tmp_path_factory, small_run, small_data_dir):
    runs = tmp_path_factory.mktemp("views") / "runs"
    shutil.copytree(small_run.path, runs / "small")
    with TestClient(create_app(runs, data_dir=str(small_data_dir)), base_url="http://127.0.0.1:8000") as client:
        client.runs = runs
        yield client


def test_the_cli_report_and_explorer_build_what_they_show_with_the_same_functions(calls, served, small_run,
                                                                                 small_data_dir, tmp_path):
    runs, d = served.runs, str(small_data_dir)
    where = ["--runs-dir", str(runs), "--data-dir", d]
    for argv in (["explain", "small", "--index", "3", "--check", "--deletion", "--methods", "saliency,gradcam",
                  *where],
                 ["features", "small", "--layer", "conv2d_1", "--no-class-view", *where],
                 ["filters", "small", "--runs-dir", str(runs)],
                 ["evaluate", "small", *where], ["activations", "small", *where],
                 ["convolve", "--out", str(tmp_path / "lab.png"), "--data-dir", d]):
        assert main(argv) == 0, argv
    cli = set(calls)
    calls.clear()
    build_run_report(small_run, views.data_of(small_run, d))
    report = set(calls)
    calls.clear()
    for path in ("/api/runs/small/inspect?index=3", "/api/runs/small/explain.png?index=3",
                 "/api/runs/small/check?index=3",
                 "/api/runs/small/kernels/0.png", "/api/runs/small/curves.png"):
        assert served.get(path).status_code == 200, path
    explorer = set(calls)
    shared = {"explain", "kernel_figure", "test_image"}
    assert shared <= cli and shared <= report and shared <= explorer, (cli, report, explorer)
    assert {"mistakes_gallery", "evaluation_figures", "lab_figure", "layer_figures"} <= cli & report
    assert "curves_figure" in report & explorer
    assert {"method_maps", "sanity_check", "deletion"} <= cli & report & explorer
    assert "layer_features" in cli & report


def test_the_comparison_table_is_the_same_everywhere(served, capsys):
    runs = served.runs
    shutil.copytree(runs / "small", runs / "again")
    answer = served.get("/api/compare", params={"runs": ["small", "again"]}).json()
    expected = compare.comparison_rows([open_run("small", runs), open_run("again", runs)])
    assert [answer["head"], answer["rows"]] == [*map(list, expected)]
    assert main(["compare", "small", "again", "--runs-dir", str(runs), "--out", str(runs / "c.png")]) == 0
    lines = capsys.readouterr().out.splitlines()
    for row in answer["rows"]:                       # the CLI's table: the same cells, in the same order
        line, at = next(l for l in lines if l.startswith(row[0] + " ")), 0
        for cell in row:
            at = line.index(cell, at) + len(cell)
    shutil.rmtree(runs / "again")


def test_a_colour_run_shows_its_mistakes_in_colour():
    """The gallery drift (the CLI used to drop colour for RGB runs) is fixed by construction: one gallery."""
    import numpy as np
    import torch
    from PIL import Image

    from convlens.evaluate import Evaluation
    probs = np.eye(3, dtype=np.float32)[[1, 2, 0, 0]]          # three wrong, one right
    ev = Evaluation(["r", "g", "b"], 1.0, 0.25, np.ones((3, 3), int), probs, np.array([0, 1, 2, 0]))
    images = torch.zeros((4, 3, 8, 8), dtype=torch.uint8)
    images[:, 0] = 255                                           # pure red
    import io
    png = Image.open(io.BytesIO(views.mistakes_gallery(ev, images))).convert("RGB")
    pixels = np.asarray(png).reshape(-1, 3)
    assert ((pixels[:, 0] > 200) & (pixels[:, 1] < 60) & (pixels[:, 2] < 60)).sum() > 100
