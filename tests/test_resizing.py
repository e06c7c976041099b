"""Progressive resizing (resizing.py): the schedule of sizes, the resize itself, and a run that trains on
small images first, validates on full-size ones, records the setting, resumes at the same sizes and is
refused cleanly for a network that cannot take other sizes."""


import numpy as np
import pytest
import torch
from PIL import Image
from conftest import train_is_refused
from test_checkpoint import resumes_exactly
from test_train import synthetic

from convlens import TrainConfig, train
from convlens import loop as loop_module
from convlens.errors import ConvlensError
from convlens.progress import technique_text
from convlens.resizing import resized, side_at, training_size

GAP = "conv8same-bn-conv16s2-bn-conv16s2-bn-gap-dense2"          # takes any size
FLAT = "conv8-pool-flatten-dense16-dense2"          # does not


def test_the_sides_grow_linearly_in_multiples_of_4_and_are_full_from_until_on():
    sides = [side_at(e, 24, 28, 16 / 28, 0.7) for e in range(1, 25)]
    assert sides == [16] * 3 + [20] * 6 + [24] * 6 + [28] * 9
    assert [side_at(e, 10, 28, 0.5, 0.5) for e in range(1, 11)] == [16, 16, 20, 24, 24] + [28] * 5
    assert all(side_at(e, 5, 28, 1.0, 0.7) == 28 for e in range(1, 6))         # 1: off
    assert [side_at(e, 4, 28, 0.5, 1.0) for e in range(1, 5)] == [16, 20, 24, 28]   # the last epoch is full size
    assert side_at(1, 1, 28, 0.5, 0.7) == 28                                   # … even in a 1-epoch run
    assert side_at(1, 5, 28, 0.25, 0.7) == 8 and side_at(1, 5, 6, 0.25, 0.7) == 6   # never below 8, nor above full
    assert training_size(1, 10, (48, 64), 0.5, 0.5) == (24, 32)              # each side by itself


def test_resizing_keeps_the_memory_format_and_averages_pixels():
    x = torch.rand(3, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    small = resized(x, (14, 14))
    assert small.shape == (3, 1, 14, 14) and small.is_contiguous(memory_format=torch.channels_last)
    for size in ((14, 14), (20, 24)):           # as PIL shrinks an image (bilinear, its filter widened to the scale)
        pil = Image.fromarray(x[1, 0].numpy(), mode="F").resize(size[::-1], Image.BILINEAR)
        assert torch.allclose(resized(x, size)[1, 0], torch.from_numpy(np.array(pil)), atol=1e-5)
    assert resized(x, (28, 28)) is x
    flat = torch.ones(2, 3, 28, 28) * 0.25
    assert torch.allclose(resized(flat, (20, 24)), torch.full((2, 3, 20, 24), 0.25))


def config(tmp_path, name, **kw) -> TrainConfig:
    return TrainConfig(**{"model": GAP, "epochs": 8, "batch_size": 32, "resize_from": 0.5, "resize_until": 0.5,
                          "runs_dir": str(tmp_path), "name": name, "deterministic": True, "threads": 1, **kw})


def test_a_run_trains_small_first_then_full_size_and_is_validated_and_tested_at_full_size(tmp_path, monkeypatch):
    sizes = []
    original = loop_module._Loop.model_input

    def spy(self, x_u8, gen, size=None, **share):
        x = original(self, x_u8, gen, size, **share)
        sizes.append((self.p.epoch, tuple(x.shape[-2:])))
        return x
    monkeypatch.setattr(loop_module._Loop, "model_input", spy)
    run = train(config(tmp_path, "grown"), data=synthetic(512))       # 256 training images: 8 steps an epoch
    assert dict(sizes) == {1: (16, 16), 2: (16, 16), 3: (20, 20), 4: (24, 24), **{e: (28, 28) for e in range(5, 9)}}
    assert len(sizes) == 8 * 8
    assert run.config.settings.resize_from == 0.5
    # Batch norm's running statistics, gathered on small images, take some full-size steps to settle (on the real
    # data that is thousands of steps): the last epochs validate on 28×28 images as well as the net trains.
    assert len(run.metrics) == 8 and run.metrics[-1]["val_accuracy"] > 0.9
    assert run.results["test_accuracy"] > 0.9                                    # … and tested on them


def test_the_setting_is_recorded_said_and_given_back_as_flags(tmp_path):
    c = config(tmp_path, "x")
    assert c.to_argv()[c.to_argv().index("--resize-from") + 1] == "0.5"
    assert TrainConfig.from_json(c.to_json()).settings.resize_until == 0.5
    assert technique_text(c.settings) == ", resized from 0.5 of the side, full by 50% of the epochs"
    assert technique_text(TrainConfig().settings) == ""


@pytest.mark.parametrize("flags, fragment", [
    (["--resize-from", "0.1"], "share of the image's side in [0.25, 1]"),
    (["--resize-from", "0.5", "--resize-until", "0"], "share of the epochs in (0, 1]"),
    (["--resize-from", "0.5"], "flattens its feature maps"),
    (["--resize-from", "0.3", "--model", "conv8-conv8-conv8-conv8-gap-dense10"], "too small"),
])
def test_impossible_resizing_is_refused_in_one_line_before_a_run_is_made(tmp_path, small_data_dir, flags, fragment):
    train_is_refused(tmp_path, small_data_dir, flags, fragment)


def test_a_network_that_flattens_is_refused_in_process(tmp_path):
    with pytest.raises(ConvlensError, match="flattens"):
        train(config(tmp_path, "flat", model=FLAT), data=synthetic(64))
    assert not (tmp_path / "flat").exists()


def test_a_resumed_run_trains_at_the_sizes_an_uninterrupted_one_did(tmp_path):
    # 8 steps an epoch: stopped in epoch 2, at 20×20
    resumes_exactly(lambda name: config(tmp_path, name, checkpoint_every=3), synthetic(512), stop_at=11)


def test_the_warm_up_covers_every_size_the_run_will_train_at(tmp_path, monkeypatch):
    shapes = []
    real = loop_module.warm_up

    def record(model, make_optimizer, make_input, wanted, *args, **kw):
        shapes.extend(tuple(make_input(s).shape) for s in wanted)
        return real(model, make_optimizer, make_input, wanted, *args, **kw)
    monkeypatch.setattr(loop_module, "WARM_UP_DEVICES", ("cpu",))
    monkeypatch.setattr(loop_module, "warm_up", record)
    warmed = train(config(tmp_path, "warmed"), data=synthetic(500))        # 250 images: a short last batch of 26
    assert sorted(set(shapes)) == sorted({(n, 1, s, s) for n in (32, 26) for s in (16, 20, 24, 28)})
    assert warmed.results["device_warmup_s"] > 0
