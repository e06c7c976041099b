"""Checked explanations: our saliency, Grad-CAM and LayerCAM against Captum's numbers; Integrated
Gradients' completeness; the cascading randomisation check (it passes the learned maps and fails a
weight-independent one); deletion curves; the views the CLI, the report and the explorer share."""

import numpy as np
import pytest
import torch
from captum.attr import (
    LayerAttribution,
    LayerGradCam,
    LayerGradientXActivation,
    Saliency,
)
from conftest import run_cli
from test_inspect import images_for, model_for
from torch import nn

from convlens.attribution import (
    attribution_map,
    grad_cam,
    integrated_gradients,
    methods_for,
    saliency,
    smoothgrad,
)
from convlens.baselines import BASELINES, baseline_image
from convlens.engine import channel_stats, model_input
from convlens.errors import ConvlensError
from convlens.explanations import randomisation_check
from convlens.faithfulness import deletion_curves, deletion_order
from convlens.models import _apply, build_model, conv_layers, seen_pixels
from convlens.sanity import (
    CONTROL,
    VERDICTS,
    cascading_randomisation,
    edge_map,
    parameter_layers,
    randomised,
    spearman,
    verdict,
)

SPECS = [("seed", (1, 28, 28)), ("conv8-pool-conv8p1-flatten-dense32-dense10", (3, 32, 32)),
         ("conv32k5p2-bn-avgpool-conv16s2_tanh-dropout0.25-gap-dense10", (1, 28, 28))]


# ---------------------------------------------------------------------------
# Ours against Captum's numbers

class Tapped(nn.Module):
    """The model with an identity module after layer i's (activated) output, for Captum's layer methods."""

    def __init__(self, model, i):
        super().__init__()
        self.model, self.i, self.tap = model, i, nn.Identity()

    def forward(self, x):
        for j, (info, module) in enumerate(zip(self.model.infos, self.model.layers)):
            x = _apply(info, module, x)
            if j == self.i:
                x = self.tap(x)
        return x


def _unit(m: torch.Tensor) -> np.ndarray:
    m = m.detach().float()
    return (m / m.max() if m.max() > 0 else torch.zeros_like(m)).numpy()


@pytest.mark.parametrize("spec,shape", SPECS)
def test_our_saliency_grad_cam_and_layer_cam_equal_captums(spec, shape):
    model = model_for(spec, shape)
    for image in images_for(shape, 3):
        x = model_input(model, image)
        target = int(model(x).argmax())
        ours = saliency(model, image, target)
        theirs = Saliency(model).attribute(x.clone().requires_grad_(True), target=target, abs=True)[0].amax(0)
        np.testing.assert_allclose(ours, _unit(theirs), rtol=1e-5, atol=1e-6)
        i, _ = conv_layers(model)[-1]
        tapped = Tapped(model, i)
        gc = LayerGradCam(tapped, tapped.tap).attribute(x, target=target, relu_attributions=True)
        gc = LayerAttribution.interpolate(gc, shape[1:], "bilinear")[0, 0]
        np.testing.assert_allclose(grad_cam(model, image, target).cam, _unit(gc), rtol=1e-4, atol=1e-5)
        # LayerCAM = Σ_k relu(∂y/∂A_k) A_k = Σ_k relu(∂y/∂A_k · A_k) for A ≥ 0: Captum's gradient × activation
        gxa = LayerGradientXActivation(tapped, tapped.tap).attribute(x, target=target).clamp_min(0).sum(1, keepdim=True)
        lc = LayerAttribution.interpolate(gxa, shape[1:], "bilinear")[0, 0]
        if spec != "conv32k5p2-bn-avgpool-conv16s2_tanh-dropout0.25-gap-dense10":   # tanh: A can be negative
            np.testing.assert_allclose(grad_cam(model, image, target, method="layercam").cam, _unit(lc),
                                       rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("spec,shape", SPECS)
def test_every_method_gives_a_map_in_0_1_the_size_of_the_image(spec, shape):
    model = model_for(spec, shape)
    image = images_for(shape)[0]
    for m in methods_for(model):
        a = attribution_map(model, image, m, mean=[0.3] * shape[0])
        assert a.shape == shape[1:] and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1, m
    assert methods_for(build_model("dense")) == ["saliency", "ig", "smoothgrad", "occlusion"]
    assert methods_for(model, "occlusion,saliency") == ["saliency", "occlusion"]
    with pytest.raises(ConvlensError, match="unknown attribution method 'lime'; known: all, saliency"):
        methods_for(model, "lime")


def test_smoothgrad_is_seeded_and_the_baselines_are_what_they_say():
    model = model_for("seed")
    image = images_for((1, 28, 28))[0]
    assert np.array_equal(smoothgrad(model, image, seed=3), smoothgrad(model, image, seed=3))
    assert not np.array_equal(smoothgrad(model, image, seed=3), smoothgrad(model, image, seed=4))
    x = model_input(model, image)
    assert torch.equal(baseline_image(x, "black"), torch.zeros_like(x))
    assert torch.allclose(baseline_image(x, "mean", [0.25]), torch.full_like(x, 0.25))
    blurred = baseline_image(x, "blur")
    assert blurred.shape == x.shape and blurred.std() < x.std() and abs(blurred.mean() - x.mean()) < 0.02
    with pytest.raises(ConvlensError, match="unknown baseline 'white'; known: mean, blur, black"):
        baseline_image(x, "white")
    with pytest.raises(ConvlensError, match="mean baseline needs"):
        baseline_image(x, "mean")


@pytest.mark.slow
def test_integrated_gradients_is_complete_within_1_percent_on_the_trained_seed(real_seed_run, real_data):
    """Σ attributions = f(x) − f(baseline) within 1 %, for every baseline, on test image 9 and two more."""
    model = real_seed_run.load_model()
    mean = channel_stats(real_data.train_x[:10000])[0].tolist()
    for index in (9, 0, 2):
        for baseline in BASELINES:
            ig = integrated_gradients(model, real_data.test_x[index], baseline=baseline, mean=mean)
            gap = ig.output - ig.baseline_output
            assert abs(ig.attributions.sum() - gap) <= 0.01 * abs(gap), (index, baseline, ig.steps)
            assert ig.completeness_error <= 0.01
    black = integrated_gradients(model, real_data.test_x[9], baseline="black")
    background = real_data.test_x[9][0].numpy() == 0
    assert np.all(black.attributions[0][background] == 0)       # black pixels: zero by construction
    assert np.abs(integrated_gradients(model, real_data.test_x[9], baseline="mean", mean=mean)
                  .attributions[0][background]).sum() > 0


# ---------------------------------------------------------------------------
# The sanity check

def test_spearman_is_the_rank_correlation_with_ties_averaged():
    a = np.array([1.0, 2.0, 2.0, 5.0])
    b = np.array([10.0, 30.0, 20.0, 40.0])
    ra, rb = np.array([0, 1.5, 1.5, 3]), np.array([0, 2, 1, 3])
    expected = np.corrcoef(ra, rb)[0, 1]
    assert spearman(a, b) == pytest.approx(expected)
    assert spearman(a, a ** 3) == pytest.approx(1.0) and spearman(a, -a) == pytest.approx(-1.0)
    assert spearman(a, np.zeros(4)) == 0.0
    with pytest.raises(ConvlensError, match="cannot be compared"):
        spearman(a, b[:3])
    assert [verdict(r) for r in (0.1, 0.6, 0.95)] == list(VERDICTS)


def test_the_seed_never_sees_its_last_two_rows_and_columns():
    model = model_for("seed")
    seen = seen_pixels(model)
    assert seen[:26, :26].all() and not seen[26:].any() and not seen[:, 26:].any()
    s = saliency(model, images_for((1, 28, 28))[0])
    assert np.all(s[~seen] == 0)                       # whatever the weights
    assert seen_pixels(build_model("dense")).all()
    assert seen_pixels(model_for(*SPECS[2])).all()     # padded convs and global pooling see everything


def test_randomised_copies_redraw_the_top_layers_only_and_leave_the_model_alone():
    model = model_for("seed")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    layers = parameter_layers(model)
    assert [model.infos[i].name for i in layers] == ["dense_2", "dense_1", "conv2d_2", "conv2d_1"]
    two = randomised(model, layers[:2], seed=0)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    changed = {k.split(".")[1] for k, v in two.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {str(i) for i in layers[:2]}
    again = randomised(model, layers[:3], seed=0)                 # a cascade: earlier draws stay
    assert torch.equal(again.layers[layers[0]].weight, two.layers[layers[0]].weight)


@pytest.mark.slow
def test_the_check_passes_learned_maps_and_fails_a_weight_independent_one(real_seed_run, real_data):
    """Test image 9 and 20 more, on the trained seed: fully random weights drop saliency's and Grad-CAM's
    Spearman ρ below 0.5; the edge detector, which ignores the weights, stays above 0.9 and is not trusted."""
    model = real_seed_run.load_model()
    final = []
    for index in [9] + list(range(100, 120)):
        check = randomisation_check(model, real_data.test_x[index], ["saliency", "gradcam"])
        assert check.steps == ["learned weights", "dense_2", "dense_1", "conv2d_2", "conv2d_1"]
        final.append([check.method(m).final for m in ("saliency", "gradcam", CONTROL)])
        assert check.method(CONTROL).verdict == VERDICTS[2]
    final = np.array(final)
    assert (final[:, 0] < 0.5).all() and (final[:, 1] < 0.5).all(), final.round(2)
    assert (final[:, 2] > 0.9).all()


def test_the_edge_control_ignores_the_weights():
    model, image = model_for("seed"), images_for((1, 28, 28))[0]
    check = randomisation_check(model, image, ["saliency"], draws=1)
    control = check.method(CONTROL)
    assert control.rho == [1.0] * 5 and control.verdict == VERDICTS[2] and not control.passed
    assert np.array_equal(control.maps[0], edge_map(image)) and control.maps[0].max() == 1.0
    assert [m.name for m in check.methods] == ["gradient saliency", "edge detector (control)"]


def test_the_check_takes_any_map_maker_and_sees_what_it_looks_at():
    """A user's own map function is checked the same way: one that reads the first conv layer's weights
    changes as they are re-drawn, one that ignores the model does not; each is given the model of the step."""
    model, image = model_for("seed"), images_for((1, 28, 28))[0]
    seen = []

    def first_kernel(m, target):                         # the first filter's 3×3 weights, tiled over the image
        seen.append((m, target))
        return m.layers[0].weight[0, 0].detach().abs().repeat(10, 10)[:28, :28].numpy()

    check = cascading_randomisation(model, image, {"kernel": first_kernel}, target=3, draws=2, control=False,
                                    names={"kernel": "the first kernel"})
    assert [m.method for m in check.methods] == ["kernel"] and check.methods[0].name == "the first kernel"
    assert check.target == 3 and {t for _, t in seen} == {3} and len(seen) == 1 + 4 * 2
    assert seen[0][0] is model and all(m is not model for m, _ in seen[1:])
    rho = check.methods[0].rho
    assert rho[:4] == pytest.approx([1.0] * 4) and rho[4] < 0.9     # unchanged until conv2d_1 is re-drawn, last


def test_the_check_takes_every_thread_only_for_a_big_network():
    """The seed's maps (~0.16 G multiply-adds a step) are drawn on 1 thread, resnet-cpu's (2.1 G) on all."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for spec, want in [("seed", 1), ("resnet-cpu", 2)]:
            model, image, seen = build_model(spec), images_for((1, 28, 28))[0], []

            def threads_seen(m, target):
                seen.append(torch.get_num_threads())
                return np.zeros((28, 28), np.float32)

            cascading_randomisation(model, image, {"t": threads_seen}, target=0, draws=1, control=False)
            assert set(seen) == {want} and torch.get_num_threads() == 2, spec
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------
# Deletion curves

def test_deletion_curves_start_at_the_image_and_end_at_the_fill():
    model, image = model_for("seed"), images_for((1, 28, 28))[0]
    maps = {"saliency": saliency(model, image)}
    d = deletion_curves(model, image, maps, target=3, fill="black", steps=10, random_orders=2)
    with torch.no_grad():
        probs = model(torch.cat([model_input(model, image), torch.zeros(1, 1, 28, 28)])).softmax(1)[:, 3]
    assert d.fractions.tolist() == pytest.approx(np.linspace(0, 1, 11).tolist())
    for curve in (d.curves["saliency"], d.random):
        assert curve[0] == pytest.approx(float(probs[0]), abs=1e-5)
        assert curve[-1] == pytest.approx(float(probs[1]), abs=1e-5)
    order = deletion_order(np.array([[0.0, 0.5], [0.5, 1.0]]), np.random.default_rng(0))
    assert order[0] == 3 and set(order[1:3]) == {1, 2} and order[3] == 0
    assert d.scores["saliency"] == pytest.approx(d.area(d.random) - d.area(d.curves["saliency"]))


@pytest.mark.slow
def test_removing_what_saliency_ranks_first_lowers_the_probability_faster_than_chance(real_seed_run, real_data):
    """Averaged over 100 test images of the trained seed."""
    model = real_seed_run.load_model()
    scores, method, random = [], [], []
    for index in range(100):
        image = real_data.test_x[index]
        d = deletion_curves(model, image, {"saliency": saliency(model, image)})
        scores.append(d.scores["saliency"])
        method.append(d.curves["saliency"])
        random.append(d.random)
    assert np.mean(scores) > 0.05 and np.mean(np.array(scores) > 0) > 0.8
    assert (np.mean(method, 0)[1:-1] < np.mean(random, 0)[1:-1]).all()


# ---------------------------------------------------------------------------
# The command line

@pytest.mark.slow
def test_explain_check_and_deletion_from_the_command_line(small_run, small_data_dir):
    rc, out, err = run_cli("explain", small_run.path, "--index", "9", "--check", "--deletion", "--data-dir",
                           small_data_dir)
    assert rc == 0, err
    assert "Sanity check of test image 9" in out and "edge detector (control)" in out
    assert "barely changes when the weights are random: do not trust" in out
    assert "within" in out and "Σ attributions" in out
    assert "Deletion curves of test image 9" in out
    for name in ("explain", "explain-methods", "explain-check", "explain-deletion"):
        assert (small_run.path / "figures" / f"{name}.png").stat().st_size > 10_000, name
    rc, _, err = run_cli("explain", small_run.path, "--index", "9", "--methods", "lime")
    assert rc == 2 and "unknown attribution method 'lime'" in err


# ---------------------------------------------------------------------------
# The explorer's API

@pytest.fixture(scope="module")
def served(tmp_path_factory, small_run, small_data_dir):
    import shutil

    from fastapi.testclient import TestClient

    from convlens.server import create_app
    runs = tmp_path_factory.mktemp("explained") / "runs"
    shutil.copytree(small_run.path, runs / "small")
    with TestClient(create_app(runs, data_dir=str(small_data_dir)), base_url="http://127.0.0.1:8000") as client:
        yield client


@pytest.mark.slow
def test_the_explorer_serves_the_check_and_what_a_filter_looks_for(served):
    r = served.get("/api/runs/small/check", params={"index": 9, "methods": "saliency,gradcam"})
    assert r.status_code == 200, r.text
    c = r.json()
    assert c["label"] == "test image 9 (Sneaker)" and c["methods"] == ["saliency", "gradcam"]
    names = [m["name"] for m in c["check"]["methods"]]
    assert names == ["gradient saliency", "Grad-CAM", "edge detector (control)"]
    control = c["check"]["methods"][-1]
    assert control["control"] and control["rho"] == [1.0] * 5 and control["verdict"] == VERDICTS[2]
    assert c["check"]["steps"] == ["learned weights", "dense_2", "dense_1", "conv2d_2", "conv2d_1"]
    assert [m["method"] for m in c["deletion"]["methods"]] == ["saliency", "gradcam"]
    for key in ("methods_png", "strip_png", "deletion_png"):
        assert c[key].startswith("data:image/png;base64,") and len(c[key]) > 10_000
    f = served.get("/api/runs/small/features/conv2d_2/6").json()
    assert f["box_size"] == "8×8" and len(f["crops"]) == 9
    acts = [x["activation"] for x in f["crops"]]
    assert acts == sorted(acts, reverse=True) and f["optimised"]["activation"] >= acts[0] - 1e-5
    assert np.array(f["crops"][0]["pixels"]).shape == (1, 8, 8) and np.array(f["optimised"]["pixels"]).shape == (1, 8, 8)
    assert {x["class"] for x in f["crops"]} <= set(served.get("/api/runs/small").json()["model"]["classes"])
    for path, status, words in (("/api/runs/small/features/conv2d_2/64", 400, "filter 64 is out of range"),
                                ("/api/runs/small/features/dense_1/0", 400, "no conv layer 'dense_1'"),
                                ("/api/runs/small/check?index=9&methods=lime", 400, "unknown attribution method"),
                                ("/api/runs/small/check?index=9&baseline=white", 422, "baseline must be one of mean, blur, black"),
                                ("/api/runs/none/check?index=9", 404, "no run")):
        r = served.get(path)
        assert r.status_code == status and words in r.json()["detail"], (path, r.text)
