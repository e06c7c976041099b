"""Residual blocks in the spec grammar: parameter counts by hand, the forward pass against a hand-written
reference, shapes, receptive fields, and a residual run through every verb."""

import pytest
import torch
import torch.nn.functional as F
from test_train import synthetic

from convlens import TrainConfig, build_model, summarize, train
from convlens.attribution import grad_cam, saliency
from convlens.errors import ConvlensError, SpecError
from convlens.inspect import activations, conv_arithmetic_at, filter_across_images, kernels
from convlens.models import PRESETS, count_params, input_box, receptive_field, seen_pixels

SMALL = "conv8same-bn-res8-res16s2-gap-dense10"


def bn_numbers(c: int) -> int:
    return 4 * c                   # γ, β trained; mean, variance tracked


def test_parameter_counts_by_hand():
    s = summarize("conv32same-res32-res64s2-res64-gap-dense10")
    same_width, projected, again = s.layers[1], s.layers[2], s.layers[3]
    # res32 after 32 channels: two 3×3×32×32 convs without bias, two batch norms, the skip is x itself
    assert same_width.params == 2 * (3 * 3 * 32 * 32) + 2 * bn_numbers(32) == 18_688
    assert same_width.trainable == 18_688 - 2 * 2 * 32
    # res64s2 after 32: 3×3×32×64 + 3×3×64×64, two batch norms, and the 1×1×32×64 projection with its own
    assert projected.params == 3 * 3 * 32 * 64 + 3 * 3 * 64 * 64 + 32 * 64 + 3 * bn_numbers(64) == 58_112
    assert again.params == 2 * (3 * 3 * 64 * 64) + 2 * bn_numbers(64) == 74_240
    assert projected.arithmetic == ("3×3×32×64 + BN 4×64 + 3×3×64×64 + BN 4×64 + skip 1×1×32×64 + BN 4×64 = "
                                    "18,432 + 256 + 36,864 + 256 + 2,048 + 256 = 58,112")
    assert same_width.arithmetic.endswith("= 18,688 (skip: x itself)")
    assert [l.type for l in s.layers[1:4]] == ["Residual"] * 3 and s.layers[2].name == "residual_2"
    assert [l.out_shape for l in s.layers[1:4]] == [(32, 28, 28), (64, 14, 14), (64, 14, 14)]
    # multiply-adds: each output pixel of each filter, its convolutions (and the projection)
    assert projected.mult_adds == 14 * 14 * 64 * (3 * 3 * 32 + 3 * 3 * 64 + 32)


@pytest.mark.parametrize("name", [n for n, (spec, _) in PRESETS.items() if "res" in spec or "bn" in spec])
def test_torch_holds_what_the_summary_counts(name):
    model, s = build_model(name), summarize(name)
    buffers = sum(b.numel() for n, b in model.named_buffers() if not n.endswith("num_batches_tracked"))
    assert count_params(model) == s.trainable_params
    assert count_params(model) + buffers == s.total_params


def reference_block(x, block):
    """The basic block written out with torch's functions: conv, batch norm (eval), relu, conv, batch norm,
    + skip, relu."""
    def bn(t, m):
        return F.batch_norm(t, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)
    y = F.relu(bn(F.conv2d(x, block.conv1.weight, stride=block.conv1.stride, padding=1), block.bn1))
    y = bn(F.conv2d(y, block.conv2.weight, padding=1), block.bn2)
    skip = x if block.skip_conv is None else bn(F.conv2d(x, block.skip_conv.weight, stride=block.skip_conv.stride),
                                                block.skip_bn)
    return F.relu(y + skip)


def test_forward_equals_a_hand_written_reference():
    torch.manual_seed(0)
    model = build_model("conv8same-res8-res16s2-res16-gap-dense3", (1, 13, 13), 3).eval()
    for m in model.modules():       # batch norm with statistics other than 0 and 1
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2), m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    x = torch.rand(4, 1, 13, 13)
    with torch.no_grad():
        h = F.relu(model.layers[0](x))
        for i in (1, 2, 3):
            h = reference_block(h, model.layers[i])
        expected = model.layers[5](h.mean(dim=(2, 3)))
        outs = model.layer_outputs(x)
        assert torch.allclose(model(x), expected, atol=1e-5)
    assert [tuple(o.shape[1:]) for o in outs[1:4]] == [(8, 13, 13), (16, 7, 7), (16, 7, 7)]   # ⌈13 / 2⌉ = 7


def test_strided_same_convs_and_blocks_agree_on_sizes():
    for size in (7, 8, 28, 29):
        conv = summarize("conv4s2same-flatten-dense2", (1, size, size), 2).layers[0].out_shape
        block = summarize("res4s2-flatten-dense2", (1, size, size), 2).layers[0].out_shape
        assert conv == block == (4, -(-size // 2), -(-size // 2))
    x = torch.rand(2, 1, 28, 28)
    assert build_model("conv4s2same-flatten-dense2", (1, 28, 28), 2)(x).shape == (2, 2)


def test_receptive_field_of_blocks_by_hand_and_by_gradient():
    model = build_model(SMALL).eval()
    # conv 3×3 (1 px each way), res8: two 3×3 (2 more), res16s2: output (r, c) → conv2 r−1..r+1 →
    # conv1 with stride 2: 2(r−1)−1 .. 2(r+1)+1, then 3 px more each way from the layers before
    assert receptive_field(model, "residual_1", 10, 10) == (7, 7, 13, 13)
    assert input_box(model.infos[:4], 5, 5, 5, 5) == (2 * 4 - 1 - 3, 2 * 4 - 1 - 3, 2 * 6 + 1 + 3, 2 * 6 + 1 + 3)
    assert receptive_field(model, "residual_2", 5, 5) == (4, 4, 16, 16)
    x = torch.rand(1, 1, 28, 28, requires_grad=True)
    out = model.layer_outputs(x, upto=3)[3]
    out[0, :, 5, 5].sum().backward()
    rows, cols = torch.nonzero(x.grad[0, 0], as_tuple=True)
    top, left, bottom, right = receptive_field(model, "residual_2", 5, 5)
    assert top <= rows.min() and rows.max() <= bottom and left <= cols.min() and cols.max() <= right
    assert seen_pixels(model).all()


def test_spec_errors_for_blocks():
    with pytest.raises(SpecError, match="res needs a filter count"):
        summarize("res-gap-dense10")
    with pytest.raises(SpecError, match="move it before 'flatten'"):
        summarize("flatten-res8-dense10")
    assert summarize("res8s3-gap-dense10").layers[0].out_shape == (8, 10, 10)


@pytest.fixture(scope="module")
def residual_run(tmp_path_factory, small_data_dir):
    """A small residual network trained 1 epoch on 1,000 images of the real data, recipe strong."""
    runs = tmp_path_factory.mktemp("res-runs")
    return train(TrainConfig(model=SMALL, recipe="strong", epochs=1, runs_dir=str(runs), name="res", limit=1000,
                             data_dir=str(small_data_dir)))


def test_a_residual_run_through_the_inspection_verbs(residual_run):
    model, image = residual_run.load_model(), synthetic(8).test_x[0]     # bars: any 28×28 image will do
    layers = activations(model, image)
    assert [l.kind for l in layers][:4] == ["conv", "bn", "res", "res"] and layers[3].output.shape == (16, 14, 14)
    cam = grad_cam(model, image)
    assert cam.layer == "residual_2" and cam.cam.shape == (28, 28)      # the last block: a feature map like a conv's
    assert grad_cam(model, image, layer="residual_1").layer == "residual_1"
    assert saliency(model, image).shape == (28, 28)
    assert len(filter_across_images(model, synthetic(8).test_x[:2], 3).col_labels) == 3     # conv, res, res
    assert kernels(model).layer == "conv2d_1"                              # the stem's kernels: a single conv
    for ask in (lambda: conv_arithmetic_at(model, image, "residual_1", 0, 3, 3), lambda: kernels(model, "residual_2")):
        with pytest.raises(ConvlensError, match="residual block, not a single convolution"):
            ask()
    a = conv_arithmetic_at(model, image, "conv2d_1", 0, 0, 0)         # the stem's arithmetic, `same` padding
    assert a.padding == (1, 1, 1, 1) and a.top_left == (-1, -1)


def test_a_residual_run_exports_and_resets_for_the_sanity_check(residual_run, tmp_path):
    from convlens.export import export_run
    from convlens.sanity import randomised
    path = export_run(residual_run, "torchscript", tmp_path)
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(torch.jit.load(str(path))(x), residual_run.load_model().float()(x), atol=1e-4)
    model = residual_run.load_model()
    copied = randomised(model, [2])
    assert not torch.equal(copied.layers[2].conv1.weight, model.layers[2].conv1.weight)
    assert torch.equal(copied.layers[3].conv1.weight, model.layers[3].conv1.weight)


def test_the_explorer_inspects_a_residual_run(residual_run, small_data_dir, tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from convlens.server import create_app
    with TestClient(create_app(residual_run.path.parent, data_dir=str(small_data_dir)),
                    base_url="http://127.0.0.1:8000") as client:
        got = client.get("/api/runs/res/inspect", params={"index": 0}).json()
        assert [l["kind"] for l in got["layers"]][2:4] == ["res", "res"] and got["cam"]["layer"] == "residual_2"
        r = client.get("/api/runs/res/arithmetic", params={"layer": "residual_1", "channel": 0, "row": 1, "col": 1,
                                                           "index": 0})
        assert r.status_code == 400 and "not a single convolution" in r.json()["detail"]
        assert client.get("/api/runs/res/arithmetic", params={"layer": "conv2d_1", "channel": 0, "row": 1, "col": 1,
                                                              "index": 0}).status_code == 200
        assert [k["layer"] for k in client.get("/api/runs/res/kernels").json()] == ["conv2d_1"]
        f = client.get("/api/runs/res/features/residual_2/3").json()       # what a block's filter looks for
        assert len(f["crops"]) == 9 and "activation" in f["optimised"]
        assert client.get("/api/runs/res").json()["summary"]["layers"][2]["type"] == "Residual"


@pytest.mark.slow
def test_summary_and_report_of_a_residual_run(residual_run, small_data_dir):
    from conftest import run_cli
    code, out, err = run_cli("summary", residual_run.path)
    assert code == 0 and "residual_2 (Residual)" in out and "skip 1×1×8×16" in out, err
    code, out, err = run_cli("report", residual_run.path, "--data-dir", small_data_dir, timeout=600)
    assert code == 0 and (residual_run.path / "report.html").is_file(), err
