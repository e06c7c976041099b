"""convlens in Jupyter: its types draw themselves in a real IPython shell, and examples/seed.ipynb runs
clean top to bottom in a real kernel, its pictures inline."""

import base64
import io
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from IPython.core.interactiveshell import InteractiveShell
from nbclient import NotebookClient
from PIL import Image

import convlens as cl
from convlens import notebook as nb

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "seed.ipynb"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def shell():
    sh = InteractiveShell.instance()
    assert nb.register(sh)
    return sh


def shown(shell, obj) -> dict:
    """What IPython would put in the cell's output for `obj`: mime type -> data."""
    return shell.display_formatter.format(obj)[0]


def picture(data: bytes) -> Image.Image:
    assert data.startswith(PNG)
    return Image.open(io.BytesIO(data))


def test_summary_is_a_table_with_the_seeds_counts(shell):
    html = shown(shell, cl.summarize("seed"))["text/html"]
    assert html.count("<tr>") == 1 + 7 and "243,786" in html and "36,928" in html and "204,928" in html


def test_run_and_evaluation_show_results_curves_and_confusion(shell, small_run, small_data_dir):
    html = shown(shell, small_run)["text/html"]
    assert small_run.name in html and "test accuracy" in html and html.count("data:image/png;base64,") == 1
    data = cl.load_dataset(f"idx:{small_data_dir}", val_split=0.0)
    ev = cl.evaluate_run(small_run, data=data)
    html = shown(shell, ev)["text/html"]
    assert f"{ev.accuracy:.2%}" in html and "data:image/png;base64," in html
    for name in ev.classes:
        assert name in html.replace("&#x27;", "'")


def test_pictures_of_kernels_maps_filters_and_the_lab(shell, small_run):
    model = small_run.load_model()
    kernels = nb.kernels(small_run)
    assert picture(shown(shell, kernels)["image/png"]).width > 200
    layers = nb.activations(small_run, 3)
    assert len(layers) == len(model.infos)
    assert picture(shown(shell, layers[0])["image/png"]).height > 100
    assert "image/png" not in shown(shell, layers[-1])                 # a dense layer's 10 numbers: as text
    html = shown(shell, layers)["text/html"]
    assert html.count("<img") == sum(layer.output.ndim == 3 for layer in layers)
    assert picture(shown(shell, nb.filter_across(small_run, 2, images=[0, 1]))["image/png"]).width > 200
    explained = shown(shell, nb.explain(small_run, 3))
    assert picture(explained["image/png"]).width > 200 and "%" in explained["text/plain"]
    lab = cl.convolution_lab(nb.data_of(small_run).test_x[2, 0].numpy() / 255, "vertical")
    assert picture(shown(shell, lab)["image/png"]).width > 200
    assert picture(shown(shell, nb.curves(small_run))["image/png"]).width > 200


def test_outside_ipython_nothing_is_registered():
    code = "import convlens, sys; print(convlens.notebook.register(), 'IPython' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]          # and importing convlens does not pull IPython in


def test_the_seed_notebook_runs_clean_with_its_pictures(tmp_path):
    """examples/seed.ipynb in a real kernel, top to bottom, in a fresh folder: no error, and the cells
    that end in a convlens value show it as a picture or a table."""
    book = nbformat.read(NOTEBOOK, as_version=4)
    start = time.monotonic()
    NotebookClient(book, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    took = time.monotonic() - start
    outputs = {cell.source.splitlines()[-1]: cell.outputs for cell in book.cells if cell.cell_type == "code"}
    assert not [o for outs in outputs.values() for o in outs if o.output_type == "error"]
    for last, kind in [('cl.summarize("seed")', "text/html"), ("run", "text/html"), ("ev", "text/html"),
                       ("lab", "image/png"), ("nb.activations(run, 0)", "text/html"), ("nb.kernels(run)", "image/png"),
                       ("nb.filter_across(run, 6, images=[0, 23, 28])", "image/png"), ("nb.explain(run, 0)", "image/png"),
                       ("nb.curves(long_run)", "image/png"), ("imported", "text/html")]:
        data = [o.data for o in outputs[last] if o.output_type == "execute_result"]
        assert data and kind in data[0], last
        if kind == "image/png":
            assert picture(base64.b64decode(data[0][kind])).width > 200
        else:
            assert "<table" in data[0][kind] or "<img" in data[0][kind], last
    texts = "".join(o.get("text", "") for outs in outputs.values() for o in outs)
    assert "overfitting: validation loss has been rising" in texts
    difference = float(texts.split("largest difference from Keras's predictions on 1,000 test images: ")[1].split()[0])
    assert difference < 1e-4
    assert (tmp_path / "seed.keras").is_file() and (tmp_path / "runs" / "notebook-keras" / "model.safetensors").is_file()
    print(f"examples/seed.ipynb ran in {took:.0f} s")
