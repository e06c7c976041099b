import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from convlens import build_model, feature_maps, parse_spec, summarize
from convlens.errors import SpecError
from convlens.models import PRESETS, count_params

# The seed's model.summary() (SEED.md), layer by layer: (output shape as Keras prints it, params).
SEED_TABLE = [("26×26×64", 640), ("13×13×64", 0), ("11×11×64", 36928), ("5×5×64", 0),
              ("1600", 0), ("128", 204928), ("10", 1290)]


def test_seed_summary_matches_the_notebook_number_for_number():
    s = summarize("seed")
    from convlens.models import shape_text
    assert [(shape_text(l.out_shape), l.params) for l in s.layers] == SEED_TABLE
    assert [l.type for l in s.layers] == ["Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D", "Flatten",
                                          "Dense", "Dense"]
    assert s.total_params == s.trainable_params == 243786
    assert s.layers[0].arithmetic == "64 × (3×3×1 + 1) = 640"
    assert s.layers[2].arithmetic == "64 × (3×3×64 + 1) = 36,928"
    assert s.layers[5].arithmetic == "128 × (1,600 + 1) = 204,928"
    assert [l.mult_adds for l in s.layers] == [26 * 26 * 64 * 9, 0, 11 * 11 * 64 * 9 * 64, 0, 0, 1600 * 128, 1280]
    text = s.text()
    for needle in ("Total params: 243,786", "Trainable params: 243,786", "Non-trainable params: 0", "26×26×64"):
        assert needle in text


def test_torch_model_has_the_summary_parameter_count():
    for name in PRESETS:       # torch's parameters are what trains; batch norm's statistics are buffers
        assert count_params(build_model(name)) == summarize(name).trainable_params
    assert count_params(build_model("seed")) == 243786
    assert count_params(build_model("dense")) == 101770


def test_dense_preset_is_the_fully_connected_baseline():
    s = summarize("dense")
    assert [l.type for l in s.layers] == ["Flatten", "Dense", "Dense"]
    assert [l.params for l in s.layers] == [0, 100480, 1290]


@pytest.mark.parametrize("spec, token, fragment", [
    ("conv64-pool-dense", 3, "dense needs a width"),
    ("conv64-pool-cnv64-flatten-dense10", 3, "unknown layer"),
    ("conv64-dense10", 2, "add 'flatten'"),
    ("flatten-conv64-dense10", 2, "move it before 'flatten'"),
    ("conv64k29-flatten-dense10", 1, "does not fit"),
    ("flatten-dense128", 2, "needs 10 units"),
    ("conv64-pool", 2, "must end with a dense layer"),
    ("flatten-dense128_swish-dense10", 2, "unknown activation"),
    ("dropout1.5-flatten-dense10", 1, "dropout needs a rate"),
])
def test_spec_errors_point_at_the_bad_token(spec, token, fragment):
    with pytest.raises(SpecError) as e:
        summarize(spec)
    msg = str(e.value)
    assert f"token {token} " in msg and fragment in msg and "\n" not in msg


def test_grammar_options():
    layers = parse_spec("conv32k5s2p2_tanh-bn-avgpool3-dropout0.25-gap-dense10_linear")
    conv = layers[0]
    assert (conv.units, conv.kernel, conv.stride, conv.padding, conv.act) == (32, 5, 2, 2, "tanh")
    assert layers[2].kind == "avgpool" and layers[2].units == 3 and layers[3].rate == 0.25
    s = summarize("conv32k5s2p2-pool-flatten-dense10")
    assert s.layers[0].out_shape == (32, 14, 14) and s.layers[1].out_shape == (32, 7, 7)


def test_output_layer_defaults_to_logits_and_hidden_to_relu():
    layers = parse_spec("seed")
    assert [l.act for l in layers if l.kind in ("conv", "dense")] == ["relu", "relu", "relu", "linear"]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="conv0123456789kspdenflatbgrxu_-.", max_size=40))
def test_fuzzed_specs_raise_only_spec_error(text):
    try:
        build_model(text)
    except SpecError:
        pass


@pytest.mark.parametrize("spec", ["seed", "dense", "conv32k5p2-bn-pool-conv64-gap-dropout0.3-dense10",
                                  "conv16_gelu-pool-conv16s2-flatten-dense32_tanh-dense10",
                                  "conv8-avgpool-flatten-bn-dense10"])
def test_any_spec_builds_and_runs(spec):
    m = build_model(spec)
    x = torch.rand(4, 1, 28, 28)
    assert m(x).shape == (4, 10)
    outs = feature_maps(m, x)
    assert [name for name, _ in outs] == [l.name for l in m.infos]
    assert [tuple(o.shape[1:]) for _, o in outs] == [l.out_shape for l in m.infos]


def test_fused_forward_equals_layer_by_layer():
    """The engine pools before relu (they commute); outputs and gradients must not change."""
    torch.manual_seed(0)
    m = build_model("seed").double()
    x = torch.rand(8, 1, 28, 28, dtype=torch.float64)
    fused = m(x)
    plain = m.layer_outputs(x)[-1]
    assert torch.allclose(fused, plain, atol=1e-12)
    g1 = torch.autograd.grad(fused.sum(), m.layers[0].weight)[0]
    g2 = torch.autograd.grad(m.layer_outputs(x)[-1].sum(), m.layers[0].weight)[0]
    assert torch.allclose(g1, g2, atol=1e-10)


def test_feature_maps_accepts_uint8_and_single_images():
    m = build_model("seed")
    img = torch.randint(0, 256, (28, 28), dtype=torch.uint8)
    outs = feature_maps(m, img)
    assert outs[0][1].shape == (1, 64, 26, 26) and outs[-1][1].shape == (1, 10)
    assert torch.allclose(outs[-1][1], m.eval()(img.float().div(255)[None, None]), atol=1e-6)


def test_other_input_shapes_and_class_counts():
    s = summarize("conv32-pool-flatten-dense5", (3, 32, 32), 5)
    assert s.layers[0].params == 32 * (3 * 3 * 3 + 1) and s.layers[-1].out_shape == (5,)
    assert build_model("conv32-pool-flatten-dense5", (3, 32, 32), 5)(torch.rand(2, 3, 32, 32)).shape == (2, 5)


# ---------------------------------------------------------------------------
# The grammar Keras models need: `same` padding, pool strides, no bias, batch-norm epsilon, activations

@pytest.mark.parametrize("size, kernel, stride", [(28, 3, 1), (28, 4, 1), (28, 3, 2), (13, 5, 2), (7, 2, 3)])
def test_same_conv_equals_tf_padding(size, kernel, stride):
    """`same`: output ⌈size / stride⌉, the odd padding pixel at the bottom and right (TensorFlow's rule)."""
    torch.manual_seed(0)
    m = build_model(f"conv6k{kernel}s{stride}same_linear-flatten-dense3", (2, size, size), 3).double()
    out = -(-size // stride)
    assert m.infos[0].out_shape == (6, out, out)
    total = max((out - 1) * stride + kernel - size, 0)
    x = torch.rand(2, 2, size, size, dtype=torch.float64)
    padded = torch.nn.functional.pad(x, (total // 2, total - total // 2) * 2)
    conv = m.layers[0]
    expected = torch.nn.functional.conv2d(padded, conv.weight, conv.bias, stride=stride)
    assert torch.allclose(m.layer_outputs(x)[0], expected, atol=1e-12)


def test_same_pools_ignore_their_padding():
    """Max pooling pads with −∞ (never the max); average pooling divides by the real pixels only."""
    x = -torch.rand(1, 1, 5, 5, dtype=torch.float64) - 1          # all negative: a zero pad would win a max
    mx = build_model("pool2same-flatten-dense2", (1, 5, 5), 2).double()
    av = build_model("avgpool2same-flatten-dense2", (1, 5, 5), 2).double()
    assert mx.infos[0].out_shape == (1, 3, 3)
    assert mx.layer_outputs(x)[0][0, 0, 2, 2] == x[0, 0, 4, 4]                  # a window with one real pixel
    assert torch.isclose(av.layer_outputs(x)[0][0, 0, 2, 0], x[0, 0, 4, 0:2].mean())
    assert torch.isclose(av.layer_outputs(x)[0][0, 0, 0, 0], x[0, 0, 0:2, 0:2].mean())


def test_pool_strides_and_window_sizes():
    s = summarize("conv8-pool3s2-avgpool3s1-flatten-dense10")
    assert [l.out_shape for l in s.layers[:3]] == [(8, 26, 26), (8, 12, 12), (8, 10, 10)]
    assert parse_spec("pool3s2same-flatten-dense10")[0].stride == 2


def test_no_bias_and_batch_norm_epsilon():
    m = build_model("conv8nb-bne0.001-relu-pool-flatten-dense10nb")
    assert m.layers[0].bias is None and m.layers[-1].bias is None
    assert m.layers[1].eps == 1e-3 and build_model("conv8-bn-flatten-dense10").layers[1].eps == 1e-5
    assert summarize("conv8nb-flatten-dense10").layers[0].params == 8 * 9
    assert [i.spec.kind for i in m.infos[:3]] == ["conv", "bn", "act"]


def test_standalone_activations_apply_their_function():
    torch.manual_seed(0)
    m = build_model("conv4_linear-tanh-flatten-dense10").double()
    x = torch.rand(2, 1, 28, 28, dtype=torch.float64)
    outs = m.layer_outputs(x)
    assert torch.allclose(outs[1], torch.tanh(outs[0]))


def test_a_spec_being_typed_is_summarised_up_to_its_first_wrong_or_unfinished_token():
    from convlens.summary import summarize_so_far
    for typed, names, token in (("conv16-pool", ["conv2d_1", "max_pooling2d_1"], 2),
                                ("conv16-pool-conv", ["conv2d_1", "max_pooling2d_1"], 3),
                                ("conv16-po", ["conv2d_1"], 2), ("x", None, 1),
                                ("conv16-pool-flatten-dense12", ["conv2d_1", "max_pooling2d_1", "flatten_1", "dense_1"], 4),
                                ("seed", [info.name for info in build_model("seed").infos], None)):
        s, error = summarize_so_far(typed)
        assert (s and [l.name for l in s.layers]) == (names or None), typed
        assert (error.token_index if error else None) == token, typed
    s, _ = summarize_so_far("conv16-pool")
    assert s.total_params == 16 * (9 + 1)
