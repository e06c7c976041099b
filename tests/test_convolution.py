"""The convolution lab against torch as the reference, on random inputs and on the real Fashion-MNIST."""

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from convlens.convolution import (
    KERNEL_DESCRIPTIONS,
    NAMED_KERNELS,
    conv2d_reference,
    convolution_lab,
    lab_image,
    max_pool_reference,
    parse_kernel,
    pixel_arithmetic,
)
from convlens.engine import unit_pixels
from convlens.errors import ConvlensError, ImageError
from convlens.views import lab_sample


def _t(a) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a, dtype=np.float64))


def _png(width: int, height: int) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (height, width), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


# ---------------------------------------------------------------------------
# S2: the sum of pixel × weight equals the framework's convolution

@pytest.mark.parametrize("k", [1, 2, 3, 5])
@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("padding", [0, 1, 2])
def test_single_channel_equals_torch(k, stride, padding):
    rng = np.random.default_rng(k * 100 + stride * 10 + padding)
    image, kernel = rng.random((11, 9)), rng.normal(size=(k, k))       # H ≠ W catches a transposition
    ours = conv2d_reference(image, kernel, stride, padding)
    theirs = F.conv2d(_t(image)[None, None], _t(kernel)[None, None], stride=stride, padding=padding)[0, 0]
    assert ours.shape == tuple(theirs.shape) and ours.dtype == np.float64
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-12, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(c=st.integers(1, 3), o=st.integers(1, 4), kh=st.integers(1, 5), kw=st.integers(1, 5),
       stride=st.integers(1, 3), padding=st.integers(0, 2), extra_h=st.integers(0, 7), extra_w=st.integers(0, 7),
       seed=st.integers(0, 2**32 - 1))
def test_multi_channel_with_bias_equals_torch(c, o, kh, kw, stride, padding, extra_h, extra_w, seed):
    rng = np.random.default_rng(seed)
    h, w = max(1, kh - 2 * padding) + extra_h, max(1, kw - 2 * padding) + extra_w   # the kernel always fits
    image, kernel, bias = rng.normal(size=(c, h, w)), rng.normal(size=(o, c, kh, kw)), rng.normal(size=o)
    ours = conv2d_reference(image, kernel, stride, padding, bias)
    theirs = F.conv2d(_t(image)[None], _t(kernel), _t(bias), stride=stride, padding=padding)[0]
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-10, atol=1e-10)


def test_a_real_torch_layer_can_be_checked_directly():
    torch.manual_seed(0)
    layer = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1)
    x = torch.rand(3, 15, 15)
    ours = conv2d_reference(x, layer.weight, 2, 1, layer.bias)      # tensors with grad are accepted
    np.testing.assert_allclose(ours, layer(x[None])[0].detach().numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("padding", [0, 1, 2])
def test_output_shapes_match_torch(stride, padding):
    image, kernel = np.zeros((28, 28)), np.ones((3, 3))
    expected = F.conv2d(_t(image)[None, None], _t(kernel)[None, None], stride=stride, padding=padding).shape[2:]
    assert conv2d_reference(image, kernel, stride, padding).shape == tuple(expected)
    lab = convolution_lab(image, "vertical", stride, padding, pool=0)
    assert lab.shapes == f"28×28 → {expected[0]}×{expected[1]}"


def test_the_seed_networks_shapes_26_13_11_5():
    # S9: 28×28×1 → conv 26×26×64 → pool 13×13×64 → conv 11×11×64 → pool 5×5×64.
    rng = np.random.default_rng(0)
    x = conv2d_reference(rng.random((1, 28, 28)), rng.normal(size=(64, 1, 3, 3)))
    assert x.shape == (64, 26, 26)
    x = max_pool_reference(x)
    assert x.shape == (64, 13, 13)
    x = conv2d_reference(x, rng.normal(size=(64, 64, 3, 3)))
    assert x.shape == (64, 11, 11)
    assert max_pool_reference(x).shape == (64, 5, 5)


def test_convolution_errors_are_one_line():
    for call, match in [
        (lambda: conv2d_reference(np.zeros((3, 3)), np.ones((5, 5))), "a 5×5 kernel does not fit a 3×3 input"),
        (lambda: conv2d_reference(np.zeros((2, 8, 8)), np.ones((4, 3, 3, 3))), "3 input channels, the image has 2"),
        (lambda: conv2d_reference(np.zeros((8, 8)), np.ones((1, 1, 3, 3))), "expected an"),
        (lambda: conv2d_reference(np.zeros((8, 8)), np.ones((3, 3)), stride=0), "stride"),
        (lambda: conv2d_reference(np.zeros((1, 8, 8)), np.ones((2, 1, 3, 3)), bias=[1.0]), "bias"),
        (lambda: max_pool_reference(np.zeros((1, 1))), "does not fit"),
    ]:
        with pytest.raises(ConvlensError, match=match) as e:
            call()
        assert "\n" not in str(e.value)


# ---------------------------------------------------------------------------
# S5: max pooling keeps the largest value and halves the size

@pytest.mark.parametrize("size", [2, 3])
@pytest.mark.parametrize("stride", [None, 1, 2])
@pytest.mark.parametrize("shape", [(7, 9), (5, 5), (3, 11, 7), (28, 28)])
def test_max_pool_equals_torch(size, stride, shape):
    x = np.random.default_rng(size).normal(size=shape)
    ours = max_pool_reference(x, size, stride)
    batched = _t(x)[(None,) * (4 - x.ndim)]
    theirs = F.max_pool2d(batched, size, stride).reshape(ours.shape)
    np.testing.assert_array_equal(ours, theirs.numpy())


def test_two_by_two_pooling_keeps_the_largest_and_halves():
    x = np.array([[1, 2, 0, 5], [3, 4, 1, 1], [0, 0, 7, 0], [9, 0, 0, 8]])
    np.testing.assert_array_equal(max_pool_reference(x), [[4, 5], [9, 8]])
    assert max_pool_reference(np.zeros((26, 26))).shape == (13, 13)


# ---------------------------------------------------------------------------
# One output pixel, worked out

def test_pixel_arithmetic_sum_is_the_result_pixel():
    rng = np.random.default_rng(1)
    image, kernel = rng.random((10, 12)), rng.normal(size=(3, 3))
    result = conv2d_reference(image, kernel, stride=2, padding=1)       # (5, 6)
    for row, col in [(0, 0), (2, 3), (4, 5)]:
        p = pixel_arithmetic(image, kernel, row, col, stride=2, padding=1)
        assert p.total == pytest.approx(result[row, col], abs=1e-12)
        assert (p.top, p.left) == (2 * row - 1, 2 * col - 1)
        np.testing.assert_allclose(p.products, p.patch * kernel)
    corner = pixel_arithmetic(image, kernel, 0, 0, stride=2, padding=1)
    assert (corner.patch[0] == 0).all() and (corner.patch[:, 0] == 0).all()   # the zero padding


def test_pixel_arithmetic_text_reads_as_the_sum():
    image = np.zeros((5, 5))
    image[1:4, 1] = [0.12, 0.5, 1.0]
    p = pixel_arithmetic(image, NAMED_KERNELS["vertical"], 1, 1)
    lines = p.text().splitlines()
    assert len(lines) == 1 + 3 + 1 and "top-left is input (1, 1)" in lines[0]
    assert lines[1] == "  0.12×1 + 0.00×0 + 0.00×(-1)"
    assert lines[2].startswith("+ 0.50×1") and lines[-1] == "= 1.62"


def test_pixel_outside_the_result_is_one_line():
    with pytest.raises(ConvlensError) as e:
        pixel_arithmetic(np.zeros((28, 28)), np.ones((3, 3)), 30, 2)
    assert str(e.value) == "output pixel (30, 2) is outside the 26×26 result"


# ---------------------------------------------------------------------------
# S3: filters detect features, on the real data

def test_vertical_edges_dominate_on_trousers(real_data):
    trousers = np.nonzero(real_data.test_y.numpy() == 1)[0]
    image, name = lab_sample(real_data, int(trousers[0]))
    assert name.endswith("(Trouser)") and image.shape == (28, 28) and image.dtype == np.float32
    vertical = np.abs(conv2d_reference(image, NAMED_KERNELS["vertical"])).mean()
    horizontal = np.abs(conv2d_reference(image, NAMED_KERNELS["horizontal"])).mean()
    assert vertical > 1.5 * horizontal
    # Not a lucky image: it holds for nearly all 1,000 test trousers.
    images = real_data.test_x[trousers, 0].numpy() / 255.0
    wins = [np.abs(conv2d_reference(x, NAMED_KERNELS["vertical"])).mean()
            > np.abs(conv2d_reference(x, NAMED_KERNELS["horizontal"])).mean() for x in images]
    assert np.mean(wins) >= 0.95


def test_lab_on_a_real_image(real_data):
    image, _ = lab_sample(real_data, 0)
    lab = convolution_lab(image, "Vertical")
    assert lab.kernel_name == "vertical" and lab.shapes == "28×28 → 26×26 → 13×13"
    assert lab.result.shape == (26, 26) and lab.pooled.shape == (13, 13)
    assert lab.torch_max_diff < 1e-12
    np.testing.assert_array_equal(lab.pooled, max_pool_reference(lab.result))
    biggest = np.unravel_index(np.argmax(np.abs(lab.result)), lab.result.shape)
    assert (lab.pixel.row, lab.pixel.col) == biggest and lab.pixel.total == pytest.approx(lab.result[biggest])
    padded = convolution_lab(image, np.ones((3, 3)) / 9, padding=1, pixel=(0, 0))
    assert padded.kernel_name == "custom 3×3" and padded.shapes == "28×28 → 28×28 → 14×14"
    np.testing.assert_allclose(padded.image, image, atol=1e-6)
    assert (padded.pixel.row, padded.pixel.col, padded.pixel.top) == (0, 0, -1)
    with pytest.raises(ConvlensError, match="pool 0 for none"):
        convolution_lab(np.zeros((3, 3)), "vertical")


def test_sample_image_out_of_range(real_data):
    for index in (10_000, -1):
        with pytest.raises(ConvlensError, match="no test image") as e:
            lab_sample(real_data, index)
        assert "\n" not in str(e.value)


# ---------------------------------------------------------------------------
# Kernels from text

def test_named_kernels_are_described_float32_and_not_shared():
    assert set(NAMED_KERNELS) == set(KERNEL_DESCRIPTIONS)
    for kernel in NAMED_KERNELS.values():
        assert kernel.dtype == np.float32 and kernel.shape == (3, 3)
    np.testing.assert_allclose(NAMED_KERNELS["gaussian"].sum(), 1.0, rtol=1e-6)
    name, k = parse_kernel("blur")
    k[0, 0] = 99
    assert NAMED_KERNELS["blur"][0, 0] == pytest.approx(1 / 9)


@pytest.mark.parametrize("text, name, expected", [
    ("VERTICAL", "vertical", NAMED_KERNELS["vertical"]),
    ("  Sobel-X ", "sobel_x", NAMED_KERNELS["sobel_x"]),
    ("1,0,-1;2,0,-2;1,0,-1", "custom 3×3", NAMED_KERNELS["sobel_x"]),
    ("1/9 1/9 1/9; 1/9 1/9 1/9; 1/9 1/9 1/9", "custom 3×3", NAMED_KERNELS["blur"]),
    ("1 0 / 0 1", "custom 2×2", np.eye(2)),
    ("0.5, -1e-1\n+2 .25\n", "custom 2×2", [[0.5, -0.1], [2, 0.25]]),
    ("7", "custom 1×1", [[7]]),
])
def test_parse_kernel_accepts(text, name, expected):
    got_name, kernel = parse_kernel(text)
    assert got_name == name and kernel.dtype == np.float32
    np.testing.assert_allclose(kernel, expected, rtol=1e-6)


@pytest.mark.parametrize("text, match", [
    ("1,2;3", "kernel row 2 has 1 value, row 1 has 2"),
    ("abc", "not a kernel name or a matrix: 'abc' \\(names: vertical, horizontal"),
    ("vertcal", "did you mean vertical"),
    ("", "empty kernel"),
    ("   ", "empty kernel"),
    (";".join([",".join(["1"] * 17)] * 17), "17 rows; the largest kernel is 15×15"),
    ("1,2,3", "must be square"),
    ("1,2;3,4;5,6", "must be square"),
    ("nan,0,0;0,1,0;0,0,0", "row 1, value 1: 'nan' is not finite"),
    ("1,1e999;0,1", "not finite"),
    ("1,1e100;0,1", "beyond float32's range"),
    ("1,x;0,1", "'x' is not a number"),
    ("1/0,0;0,1", "divides by zero"),
])
def test_parse_kernel_rejects_with_one_line(text, match):
    with pytest.raises(ConvlensError, match=match) as e:
        parse_kernel(text)
    assert "\n" not in str(e.value)


@given(st.text(alphabet="0123456789.,;/ -+e\nnaxv", max_size=80) | st.text(max_size=40))
def test_parse_kernel_returns_a_kernel_or_a_one_line_error(text):
    try:
        name, kernel = parse_kernel(text)
    except ConvlensError as e:
        assert "\n" not in str(e)
        return
    k = kernel.shape[0]
    assert kernel.shape == (k, k) and 1 <= k <= 15 and kernel.dtype == np.float32
    assert np.isfinite(kernel).all() and name


@given(st.integers(1, 15).flatmap(lambda k: st.lists(st.lists(st.integers(-99, 99), min_size=k, max_size=k),
                                                      min_size=k, max_size=k)))
def test_parse_kernel_round_trips_any_integer_matrix(rows):
    text = ";".join(",".join(map(str, row)) for row in rows)
    np.testing.assert_array_equal(parse_kernel(text)[1], np.array(rows, dtype=np.float32))


# ---------------------------------------------------------------------------
# The user's own photo

def test_lab_image_rejects_a_1x1_png():
    with pytest.raises(ImageError, match="1×1 pixels is too small to convolve") as e:
        lab_image(_png(1, 1))
    assert "\n" not in str(e.value)


def test_lab_image_shrinks_a_large_photo_keeping_its_aspect():
    image = lab_image(_png(2000, 1000))
    assert image.shape == (256, 512) and image.dtype == np.uint8
    scaled = unit_pixels(image)                                          # what the lab convolves
    assert scaled.dtype == np.float32 and 0.0 <= scaled.min() and scaled.max() <= 1.0


def test_lab_image_keeps_a_small_photo_as_it_is(tmp_path):
    path = tmp_path / "small.png"
    path.write_bytes(_png(30, 20))
    pixels = np.asarray(Image.open(path).convert("L"), dtype=np.uint8)
    np.testing.assert_array_equal(lab_image(path), pixels)               # no inversion, no resizing
