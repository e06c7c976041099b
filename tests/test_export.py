"""Portable models: ONNX matches PyTorch on the 10,000 real test images; TorchScript computes the same;
the preprocessing another program needs is written beside the model."""

import json

import pytest
import torch
from conftest import run_cli

from convlens.errors import ConvlensError
from convlens.export import check_onnx, export_run

pytestmark = pytest.mark.slow


def test_onnx_matches_pytorch_on_the_real_test_set(real_seed_run, real_data, tmp_path):
    path = export_run(real_seed_run, "onnx", tmp_path)
    assert path.name == "model.onnx" and sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx",
                                                                                      "preprocessing.json"]
    parity = check_onnx(real_seed_run, path, real_data.test_x)
    assert parity.images == 10000
    assert parity.agreement >= 0.999, parity.text()
    assert parity.max_prob_diff < 1e-4, parity.text()
    pre = json.loads((tmp_path / "preprocessing.json").read_text())
    assert pre["input"]["shape"] == ["batch", 1, 28, 28] and pre["input"]["name"] == "pixels"
    assert pre["classes"][0] == "T-shirt/top" and len(pre["classes"]) == 10 and "[0, 1]" in pre["input"]["scale"]
    import hashlib
    assert pre["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_torchscript_computes_what_the_run_computes(real_seed_run, real_data, tmp_path):
    path = export_run(real_seed_run, "torchscript", tmp_path)
    scripted = torch.jit.load(str(path))          # our own file, just written: loading it is the check
    x = real_data.test_x[:256].float() / 255
    with torch.no_grad():
        expected = real_seed_run.load_model().float()(x)
        torch.testing.assert_close(scripted(x), expected, rtol=1e-5, atol=1e-5)
    assert json.loads((tmp_path / "preprocessing.json").read_text())["format"] == "torchscript"


def test_export_errors(real_seed_run, tmp_path):
    with pytest.raises(ConvlensError, match="unknown export format"):
        export_run(real_seed_run, "pickle", tmp_path)
    rc, out, err = run_cli("export", "nope", "--runs-dir", tmp_path)
    assert rc == 2 and "no run 'nope'" in err and len(err.strip().splitlines()) == 1


def test_export_from_the_command_line_reports_parity(small_run, small_data_dir, tmp_path):
    rc, out, err = run_cli("export", small_run.path, "--out", tmp_path / "x", "--data-dir", small_data_dir)
    assert rc == 0, err
    assert "top-1 identical for 1,000/1,000 test images (100.00%)" in out and err == ""
