"""What each filter looks for: the top crops are the true top 9 (against a brute-force scan), every
optimised input excites its filter at least as much as the filter's best crop, on one-channel and RGB
models, seeded; `convlens features` and the report's section."""

import numpy as np
import pytest
import torch
from conftest import run_cli
from test_figures import decode
from test_inspect import images_for, model_for

from convlens import explain_figures
from convlens.feature_views import as_pixels, class_view, layer_features
from convlens.features import Ascent, class_views, crop, maximise_filters, top_crops
from convlens.models import conv_layers, receptive_field

SMALL = ["conv4-pool-conv6-pool-flatten-dense10", "conv4p1-conv5k5s2-flatten-dense10"]


def brute_force_top(model, images, i, k):
    """Every image's activation map of layer i at once; per filter the k images with the largest value
    anywhere, largest first, ties to the lower image index."""
    with torch.no_grad():
        acts = model.layer_outputs(images.float() / 255)[i].flatten(2)            # (N, K, h·w)
    best = acts.max(2).values.T.numpy()                                             # (K, N)
    order = np.array([sorted(range(len(row)), key=lambda n: (-row[n], n))[:k] for row in best])
    return order, np.take_along_axis(best, order, 1), acts.numpy()


@pytest.mark.parametrize("spec", SMALL)
def test_the_top_crops_are_the_true_top_9(spec):
    model = model_for(spec)
    images = images_for((1, 28, 28), 300, seed=1)
    images[::7] = 0                                        # ties: some black images
    for i, info in conv_layers(model):
        tc = top_crops(model, images, info.name, batch=64)   # several batches: the running top is merged
        order, values, acts = brute_force_top(model, images, i, 9)
        np.testing.assert_array_equal(tc.indices, order)
        np.testing.assert_allclose(tc.values, values, rtol=1e-5, atol=1e-6)
        w = info.out_shape[2]
        for f in range(len(order)):
            for j, n in enumerate(order[f]):
                r, c = tc.positions[f, j]
                assert acts[n, f, r * w + c] == pytest.approx(values[f, j], rel=1e-5, abs=1e-6)
                box = receptive_field(model, info.name, int(r), int(c), clip=False)
                assert tuple(tc.boxes[f, j]) == box
                np.testing.assert_array_equal(tc.crops[f, j], crop(images[n], box))


def test_a_crop_past_the_edge_is_black_there():
    image = torch.arange(16, dtype=torch.uint8).reshape(1, 4, 4) + 1
    out = crop(image, (-1, 2, 1, 4))
    assert out.shape == (1, 3, 3)
    assert out[0].tolist() == [[0, 0, 0], [3, 4, 0], [7, 8, 0]]


def best_crop_check(model, images):
    for _, info in conv_layers(model):
        tc = top_crops(model, images, info.name)
        opt = maximise_filters(model, info.name, ascent=Ascent(steps=96))
        assert opt.crops.shape[0] == info.out_shape[0] and opt.crops.min() >= 0 and opt.crops.max() <= 1
        alive = tc.values[:, 0] > 0
        assert (opt.values[alive] >= tc.values[alive, 0] - 1e-5).all(), (info.name, opt.values, tc.values[:, 0])
        yield info, tc, opt


@pytest.mark.slow
def test_each_optimised_input_excites_its_filter_at_least_as_much_as_its_best_crop(small_run, real_data):
    """The seed trained on the small real set, all 128 filters, against the best of 2,000 test images."""
    model = small_run.load_model()
    for info, tc, opt in best_crop_check(model, real_data.test_x[:2000]):
        side = opt.box[2] - opt.box[0] + 1
        assert opt.crops.shape == (64, 1, side, side) and tc.crops.shape == (64, 9, 1, side, side)
    again = maximise_filters(model, "conv2d_2", filters=[3, 7], ascent=Ascent(steps=96))
    np.testing.assert_array_equal(again.crops, maximise_filters(model, "conv2d_2", [3, 7], Ascent(steps=96)).crops)


def test_features_work_on_an_rgb_model_and_a_padded_one():
    """Nothing assumes one channel or three (Lucid's #146, #175; Lucent's #29), nor unpadded convs."""
    model = model_for("conv8-pool-conv8p1-flatten-dense32-dense10", (3, 32, 32))
    images = images_for((3, 32, 32), 200)
    for info, tc, opt in best_crop_check(model, images):
        assert tc.crops.shape[2] == 3 and opt.crops.shape[1] == 3
    x, probs = class_views(model, Ascent(steps=48))
    assert x.shape == (10, 3, 32, 32) and 0 <= x.min() and x.max() <= 1 and probs.shape == (10,)
    pixels = as_pixels(tc.crops)
    assert pixels.shape == (*tc.crops.shape[:2], *tc.crops.shape[3:], 3) and pixels.max() <= 1


def test_the_feature_grid_and_class_view_are_pictures(small_run):
    model = small_run.load_model()

    class Data:
        test_x = images_for((1, 28, 28), 64)
    lf = layer_features(model, Data, "conv2d_1", Ascent(steps=16))
    h, w = decode(lf.png()).shape
    assert w > 800 and h > 400
    captions, png = class_view(model, small_run.classes, Ascent(steps=8))
    assert len(captions) == 10 and captions[0].startswith("T-shirt/top\np = ")
    colour = explain_figures.feature_grid(np.random.rand(2, 9, 3, 3, 3), np.random.rand(2, 3, 3, 3), ["a", "b"], "t")
    assert decode(colour).shape[1] > 100


@pytest.mark.slow
def test_convlens_features_writes_the_grid_and_says_what_it_found(small_run, small_data_dir):
    rc, out, err = run_cli("features", small_run.path, "--layer", "conv2d_1", "--data-dir", small_data_dir, "--list")
    assert rc == 0, err
    assert "conv2d_1: 64 filters, each with its top 9 of 1,000 test images (cropped to its 3×3 receptive field)" in out
    assert "at least as much as its best test crop for 64 of 64 filters" in out
    assert out.count("  filter ") == 64 and "Class views" in out
    assert (small_run.path / "figures" / "features-conv2d_1.png").stat().st_size > 20_000
    assert (small_run.path / "figures" / "class-views.png").stat().st_size > 10_000
    rc, _, err = run_cli("features", small_run.path, "--layer", "dense_1", "--data-dir", small_data_dir)
    assert rc == 2 and "no conv layer 'dense_1'" in err


def test_an_ascent_takes_every_thread_only_when_its_steps_are_big(monkeypatch):
    """The seed's filters (a 12×12 canvas at most) and class views stay on 1 thread; resnet-cpu's first
    residual block (the whole image, 1.9 G multiply-adds a step) and class views use all of them."""
    from convlens import features
    from convlens.models import build_model
    seen = []

    def stub(objective, shape, a, device):      # the threads an ascent runs with, not the ascent itself
        seen.append(torch.get_num_threads())
        return torch.full(shape, 0.5)

    monkeypatch.setattr(features, "_ascend", stub)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for spec, layer, want in [("seed", "conv2d_2", 1), ("resnet-cpu", "residual_1", 2)]:
            model = build_model(spec)
            maximise_filters(model, layer)          # every filter: the work of a real call
            class_views(model)
            assert seen == [want, want], (spec, seen)
            assert torch.get_num_threads() == 2                  # restored after each
            seen.clear()
    finally:
        torch.set_num_threads(before)
