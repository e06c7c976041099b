"""inspect.py: feature maps, kernels, saliency, Grad-CAM and conv arithmetic, on any spec.

Reference checks: feature maps against the LayerInfo shapes, the arithmetic of one pixel
against the real feature map, saliency of a linear model against its weights, and
Grad-CAM of a conv-GAP-dense model against CAM (Zhou et al. 2016), which it equals there.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from convlens import build_model
from convlens.attribution import grad_cam, saliency, top_k
from convlens.engine import predict_logits
from convlens.errors import ConvlensError
from convlens.inspect import (
    activations,
    conv_arithmetic_at,
    filter_across_images,
    kernels,
    misclassified,
    most_confident_mistakes,
    spatial_layers,
)
from convlens.models import conv_layers, shape_text

OTHER_SPECS = [
    ("conv32k5p2-bn-avgpool-conv16s2_tanh-dropout0.25-gap-dense10", (1, 28, 28)),
    ("conv8-pool-conv8p1-flatten-dense32-dense10", (3, 32, 32)),
]


def model_for(spec, input_shape=(1, 28, 28), seed=0):
    torch.manual_seed(seed)
    model = build_model(spec, input_shape)
    for m in model.modules():       # non-trivial batch-norm statistics, so eval mode matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def images_for(input_shape, n=1, seed=0):
    """uint8 (n, C, H, W): noise with a bright square, so maps have structure."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 80, (n, *input_shape), generator=g, dtype=torch.uint8)
    h, w = input_shape[1:]
    x[:, :, h // 4:3 * h // 4, w // 3:2 * w // 3] = 220
    return x


def one_line(excinfo):
    return "\n" not in str(excinfo.value)


# ---------------------------------------------------------------------------
# activations

@pytest.mark.parametrize("spec,input_shape", [("seed", (1, 28, 28))] + OTHER_SPECS)
def test_activations_have_the_layer_info_shapes(spec, input_shape):
    model = model_for(spec, input_shape)
    image = images_for(input_shape)[0]
    maps = activations(model, image)
    assert [m.name for m in maps] == [info.name for info in model.infos]
    for m, info in zip(maps, model.infos):
        assert m.output.dtype == np.float32
        assert m.output.shape == info.out_shape
        assert m.shape == shape_text(info.out_shape)
        assert (m.type, m.kind) == (info.type, info.spec.kind)
    # the last layer's output is what the (fused) forward gives
    logits = predict_logits(model, image[None])[0].numpy()
    np.testing.assert_allclose(maps[-1].output, logits, rtol=1e-4, atol=1e-5)


def test_seed_activations_read_like_the_keras_summary():
    maps = activations(model_for("seed"), images_for((1, 28, 28))[0])
    assert [m.shape for m in maps] == ["26×26×64", "13×13×64", "11×11×64", "5×5×64", "1600", "128", "10"]
    assert maps[0].output.min() >= 0          # conv output after its relu, as Keras shows it
    np.testing.assert_array_equal(maps[4].output, maps[3].output.reshape(-1))


def test_a_wrong_image_shape_is_one_line():
    with pytest.raises(ConvlensError, match="the image is 32×32×3 but the model takes 28×28×1") as e:
        activations(model_for("seed"), images_for((3, 32, 32))[0])
    assert one_line(e)


# ---------------------------------------------------------------------------
# one filter across images and layers

def test_filter_grid_is_images_by_conv_and_pool_layers():
    model = model_for("seed")
    images = images_for((1, 28, 28), n=3)
    grid = filter_across_images(model, images, 6)
    assert len(grid.maps) == len(grid.row_labels) == 3
    assert grid.col_labels == ["conv2d_1 26×26×64", "max_pooling2d_1 13×13×64",
                               "conv2d_2 11×11×64", "max_pooling2d_2 5×5×64"]
    assert [m.shape for m in grid.maps[0]] == [(26, 26), (13, 13), (11, 11), (5, 5)]
    for row, image in enumerate(images):       # the batch gives what one image alone gives
        maps = activations(model, image)
        for col, (i, _) in enumerate(spatial_layers(model, ("conv", "maxpool"))):
            np.testing.assert_allclose(grid.maps[row][col], maps[i].output[6], rtol=1e-5, atol=1e-6)


def test_filter_out_of_range_names_the_layer():
    with pytest.raises(ConvlensError) as e:
        filter_across_images(model_for("seed"), images_for((1, 28, 28), n=2), 70)
    assert str(e.value) == "filter 70 is out of range: conv2d_1 has 64 filters (0–63)"
    with pytest.raises(ConvlensError, match="conv2d_2 has 32 filters \\(0–31\\)"):
        filter_across_images(model_for("conv64-pool-conv32-pool-flatten-dense10"), images_for((1, 28, 28)), 40)
    with pytest.raises(ConvlensError, match="no conv or maxpool layer"):
        filter_across_images(model_for("dense"), images_for((1, 28, 28)), 0)


# ---------------------------------------------------------------------------
# kernels

def test_kernels_of_the_seed():
    model = model_for("seed")
    first = kernels(model)
    assert (first.layer, first.index) == ("conv2d_1", 0)
    assert first.weights.shape == (64, 1, 3, 3) and first.bias.shape == (64,)
    assert first.weights.dtype == np.float32
    np.testing.assert_array_equal(first.weights, model.layers[0].weight.detach().numpy())
    for layer in (1, "conv2d_2", "1"):
        second = kernels(model, layer)
        assert (second.layer, second.index, second.weights.shape) == ("conv2d_2", 2, (64, 64, 3, 3))
    assert [info.name for _, info in conv_layers(model)] == ["conv2d_1", "conv2d_2"]


@pytest.mark.parametrize("layer", [2, -1, "dense_1", "conv2d_3", "max_pooling2d_1"])
def test_a_bad_kernel_layer_lists_the_valid_ones(layer):
    with pytest.raises(ConvlensError, match="0 or conv2d_1, 1 or conv2d_2") as e:
        kernels(model_for("seed"), layer)
    assert one_line(e)


# ---------------------------------------------------------------------------
# saliency, Grad-CAM, top-k

@pytest.mark.parametrize("spec,input_shape", [("seed", (1, 28, 28))] + OTHER_SPECS)
def test_saliency_and_grad_cam_are_maps_in_0_1(spec, input_shape):
    model = model_for(spec, input_shape).train()      # they switch to eval mode and back
    image = images_for(input_shape)[0]
    for target in (None, 3):
        s = saliency(model, image, target)
        cam = grad_cam(model, image, target)
        layer_cam = grad_cam(model, image, target, method="layercam")
        for m in (s, cam.cam, layer_cam.cam):
            assert m.shape == input_shape[1:] and m.dtype == np.float32
            assert np.isfinite(m).all() and m.min() >= 0 and m.max() <= 1
        assert s.max() == pytest.approx(1.0)
        assert cam.layer == conv_layers(model)[-1][1].name
        assert 0 <= cam.probability <= 1
    assert model.training
    assert all(p.grad is None for p in model.parameters())   # explaining leaves no gradients behind


def test_grad_cam_reports_the_predicted_class_and_its_probability():
    model = model_for("seed")
    image = images_for((1, 28, 28))[0]
    probs = predict_logits(model, image[None]).softmax(1)[0]
    cam = grad_cam(model, image, layer="conv2d_1")
    assert cam.target == int(probs.argmax()) and cam.layer == "conv2d_1"
    assert cam.probability == pytest.approx(float(probs.max()), rel=1e-4)


def test_saliency_of_a_linear_model_is_its_weights():
    model = model_for("flatten-dense10")          # logit_t = W[t] · x + b, so d logit_t / d x = W[t]
    w = model.layers[1].weight.detach()[4].abs().reshape(28, 28)
    np.testing.assert_allclose(saliency(model, images_for((1, 28, 28))[0], 4), (w / w.max()).numpy(), rtol=1e-5)


def reference_cams(model, image, target, i):
    """Grad-CAM and LayerCAM the textbook way: retain_grad on the layer's output, backward, then weigh."""
    outs = model.layer_outputs(image[None].float() / 255)
    a = outs[i]
    a.retain_grad()
    outs[-1][0, target].backward()
    model.zero_grad(set_to_none=True)
    cams = []
    for weights in (a.grad.mean(dim=(2, 3), keepdim=True), F.relu(a.grad)):
        cam = F.relu((weights * a).sum(1, keepdim=True)).detach()
        cam = F.interpolate(cam, size=image.shape[1:], mode="bilinear", align_corners=False)[0, 0]
        cams.append((cam / cam.max()).numpy() if cam.max() > 0 else np.zeros(image.shape[1:], np.float32))
    return cams


@pytest.mark.parametrize("layer", ["conv2d_1", "conv2d_2"])
def test_grad_cam_and_layer_cam_equal_the_textbook_computation(layer):
    model = model_for("seed")
    image = images_for((1, 28, 28), seed=1)[0]
    i = {"conv2d_1": 0, "conv2d_2": 2}[layer]
    expected_grad_cam, expected_layer_cam = reference_cams(model, image, 5, i)
    np.testing.assert_allclose(grad_cam(model, image, 5, layer).cam, expected_grad_cam, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grad_cam(model, image, 5, layer, "layercam").cam, expected_layer_cam,
                               rtol=1e-4, atol=1e-6)


def test_grad_cam_equals_cam_after_global_average_pooling():
    # logit_t = Σ_k W[t, k] · mean(A_k) + b, so w_k = W[t, k] / (h·w): Grad-CAM is CAM (Zhou et al. 2016).
    model = model_for("conv8-gap-dense10")
    image = images_for((1, 28, 28))[0]
    with torch.no_grad():
        a = F.relu(model.layers[0](image[None].float() / 255))                # (1, 8, 26, 26)
        cam = F.relu((model.layers[2].weight[2][None, :, None, None] * a).sum(1, keepdim=True))
        cam = F.interpolate(cam, size=(28, 28), mode="bilinear", align_corners=False)[0, 0]
    expected = (cam / cam.max()).numpy() if cam.max() > 0 else np.zeros((28, 28), np.float32)
    np.testing.assert_allclose(grad_cam(model, image, target=2).cam, expected, rtol=1e-4, atol=1e-6)


def test_grad_cams_signs_are_its_sum_before_the_relu():
    """signed is Σ w_k A_k before the ReLU over its largest |value|: where it is positive the CAM is too
    (bilinear weights are never negative, so upsample(relu(s)) ≥ upsample(s)); LayerCAM never argues against."""
    torch.manual_seed(1)
    model = build_model("conv8-pool-conv8-flatten-dense10")
    image = torch.randint(0, 256, (1, 28, 28), dtype=torch.uint8)
    for target in range(10):
        g = grad_cam(model, image, target)
        assert g.signed.shape == g.cam.shape and np.abs(g.signed).max() == pytest.approx(1, abs=1e-6)
        assert (g.cam[g.signed > 1e-6] > 0).all() and (g.signed[g.cam == 0] <= 1e-6).all()
    signs = {bool((grad_cam(model, image, t).signed < -0.05).any()) for t in range(10)}
    assert True in signs                                   # some class is argued against somewhere
    assert (grad_cam(model, image, 3, method="layercam").signed >= 0).all()


def test_an_all_zero_cam_is_zeros_not_nan():
    model = model_for("conv8-gap-dense10")
    with torch.no_grad():
        model.layers[0].weight.zero_()
        model.layers[0].bias.fill_(-1.0)         # every activation relu'd to zero
    cam = grad_cam(model, images_for((1, 28, 28))[0])
    assert np.array_equal(cam.cam, np.zeros((28, 28), np.float32))


def test_grad_cam_needs_a_conv_layer():
    with pytest.raises(ConvlensError, match="Grad-CAM needs a conv layer; 'flatten-dense128-dense10' has none"):
        grad_cam(model_for("dense"), images_for((1, 28, 28))[0])
    with pytest.raises(ConvlensError, match="class 10 is out of range"):
        grad_cam(model_for("seed"), images_for((1, 28, 28))[0], target=10)
    with pytest.raises(ConvlensError, match="unknown CAM method 'cam'; known: gradcam, layercam"):
        grad_cam(model_for("seed"), images_for((1, 28, 28))[0], method="cam")


def test_top_k_is_sorted_and_matches_the_softmax():
    model = model_for("seed")
    image = images_for((1, 28, 28))[0]
    classes = [f"class {n}" for n in range(10)]
    top = top_k(model, image, classes, k=3)
    probs = predict_logits(model, image[None]).softmax(1)[0]
    assert [c for c, _ in top] == [classes[j] for j in probs.argsort(descending=True)[:3].tolist()]
    assert [p for _, p in top] == pytest.approx(sorted(probs.tolist(), reverse=True)[:3], rel=1e-5)
    assert len(top_k(model, image, classes, k=50)) == 10
    with pytest.raises(ConvlensError, match="3 class names for a model with 10 outputs"):
        top_k(model, image, classes[:3])


# ---------------------------------------------------------------------------
# the arithmetic of one output pixel

@pytest.mark.parametrize("spec,input_shape", [
    ("seed", (1, 28, 28)),
    ("conv6k5s2p2-bn-conv4p1_tanh-pool-conv3_linear-flatten-dense10", (2, 20, 20)),
])
def test_conv_arithmetic_equals_the_feature_map(spec, input_shape):
    model = model_for(spec, input_shape)
    image = images_for(input_shape)[0]
    maps = activations(model, image)
    rng = np.random.default_rng(0)
    for n, (i, info) in enumerate(conv_layers(model)):
        c_out, h, w = info.out_shape
        pixels = [(0, 0), (h - 1, w - 1)] + [tuple(rng.integers(0, (h, w))) for _ in range(4)]
        for row, col in pixels:
            channel = int(rng.integers(c_out))
            a = conv_arithmetic_at(model, image, n, channel, int(row), int(col))
            k = info.spec.kernel
            assert a.patch.shape == a.kernel.shape == a.products.shape == (info.in_shape[0], k, k)
            assert a.total == pytest.approx(float(a.products.sum()), rel=1e-5, abs=1e-5)
            assert a.pre_activation == pytest.approx(a.total + a.bias)
            assert a.value == pytest.approx(float(maps[i].output[channel, row, col]), rel=1e-4, abs=1e-5)
            assert a.layer == info.name and a.input_from == ("input" if i == 0 else model.infos[i - 1].name)


def test_conv_arithmetic_shows_the_zero_padding():
    model = model_for("conv4k3p1-flatten-dense10")
    image = torch.full((1, 28, 28), 255, dtype=torch.uint8)
    a = conv_arithmetic_at(model, image, "conv2d_1", 0, 0, 0)
    assert a.top_left == (-1, -1)
    assert a.patch[0].tolist() == [[0, 0, 0], [0, 1, 1], [0, 1, 1]]


@pytest.mark.parametrize("args,message", [
    ((0, 64, 0, 0), "filter 64 is out of range: conv2d_1 has 64 filters (0–63)"),
    ((0, 0, 26, 0), "row 26 is out of range: conv2d_1's output is 26×26 (rows 0–25)"),
    ((1, 0, 0, -1), "column -1 is out of range: conv2d_2's output is 11×11 (columns 0–10)"),
])
def test_conv_arithmetic_bad_indices(args, message):
    with pytest.raises(ConvlensError) as e:
        conv_arithmetic_at(model_for("seed"), images_for((1, 28, 28))[0], *args)
    assert str(e.value) == message


# ---------------------------------------------------------------------------
# mistakes

def test_most_confident_mistakes_and_confusion_cells():
    probs = np.array([[0.9, 0.1, 0.0],    # 0: right
                      [0.2, 0.7, 0.1],    # 1: wrong (0 as 1), 0.7
                      [0.05, 0.05, 0.9],  # 2: wrong (0 as 2), 0.9
                      [0.4, 0.6, 0.0],    # 3: wrong (2 as 1), 0.6
                      [0.1, 0.8, 0.1],    # 4: right
                      [0.3, 0.0, 0.7]])   # 5: wrong (1 as 2), 0.7
    labels = np.array([0, 0, 0, 2, 1, 1])
    assert most_confident_mistakes(probs, labels).tolist() == [2, 1, 5, 3]
    assert most_confident_mistakes(torch.tensor(probs), torch.tensor(labels), k=2).tolist() == [2, 1]
    assert misclassified(probs, labels, 0, 2).tolist() == [2]
    assert misclassified(probs, labels, 1, 1).tolist() == [4]
    assert misclassified(probs, labels, 2, 0).tolist() == []
    with pytest.raises(ConvlensError, match="expected probabilities"):
        most_confident_mistakes(probs, labels[:3])


# ---------------------------------------------------------------------------
# real data: where a trained seed model looks at a sneaker
#
# Measured on a seed trained 1 epoch (fast recipe, 88.99 % test; the tests use the suite's 2-epoch run), first 10 correctly classified
# test images per class, "object" = pixels > 0.1·max: plain Grad-CAM is larger on the object than
# on the background for 0/10 sneakers (also 0/10 with the keras recipe): its one mean weight per
# filter lands on the empty space around the shoe. LayerCAM is on the shoe for 10/10. Painting the
# background grey drops the sneaker probability by 0.77 on average, painting the shoe grey by 0.01:
# the network reads the silhouette, so "the background matters" is not wrong, just hard to read.

SNEAKER = 7


@pytest.fixture(scope="module")
def sneakers(real_seed_run, real_data):
    """The seed model trained on the real data, and its first 5 correctly classified test sneakers."""
    model = real_seed_run.load_model()
    images = real_data.test_x[real_data.test_y == SNEAKER][:50]
    correct = images[predict_logits(model, images).argmax(1) == SNEAKER][:5]
    assert len(correct) == 5
    return model, correct


def object_mask(image):
    pixels = image[0].numpy().astype(np.float32)
    return pixels > 0.1 * pixels.max()


@pytest.mark.slow
def test_layer_cam_of_a_trained_seed_lies_on_the_sneaker(sneakers):
    model, images = sneakers
    on_object = 0
    for image in images:
        cam = grad_cam(model, image, method="layercam")
        assert (cam.target, cam.layer) == (SNEAKER, "conv2d_2")
        shoe = object_mask(image)
        on_object += cam.cam[shoe].mean() > cam.cam[~shoe].mean()
    assert on_object >= 4


@pytest.mark.slow
def test_grad_cam_of_a_trained_seed_is_the_textbook_one_and_class_specific(sneakers):
    model, images = sneakers
    for image in images:
        cam = grad_cam(model, image)
        assert cam.target == SNEAKER and 0 < cam.probability <= 1
        np.testing.assert_allclose(cam.cam, reference_cams(model, image, SNEAKER, 2)[0], rtol=1e-4, atol=1e-5)
        assert np.abs(cam.cam - grad_cam(model, image, target=9).cam).mean() > 0.05   # ankle boot looks elsewhere


@pytest.mark.slow
def test_a_trained_seed_reads_the_sneaker_silhouette(sneakers):
    model, images = sneakers
    p_sneaker = lambda x: predict_logits(model, x).softmax(1)[:, SNEAKER]            # noqa: E731
    grey_background, grey_shoe = images.clone(), images.clone()
    for n, image in enumerate(images):
        shoe = torch.from_numpy(object_mask(image))
        grey_background[n, 0][~shoe] = 128
        grey_shoe[n, 0][shoe] = 128
    p = p_sneaker(images)
    assert (p - p_sneaker(grey_background)).mean() > 0.3 > (p - p_sneaker(grey_shoe)).mean()
