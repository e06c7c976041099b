"""The moving average of the weights (ema.py) against hand-computed averages, and the training techniques
in a run: recorded, checkpointed with the average, resumed exactly."""

import json
import os
import signal

import pytest
import torch
from test_checkpoint import metrics_without_times, same_weights
from test_train import synthetic

from convlens import TrainConfig, build_model, train
from convlens.checkpoint import load_checkpoint
from convlens.ema import WeightAverage, ema_decay
from convlens.errors import ConvlensError
from convlens.loop import fit
from convlens.train import resume

TINY = "conv4-pool-flatten-dense8-dense2"


def test_the_decay_warms_up_as_tensorflow_does():
    assert ema_decay(0.999, 0) == pytest.approx(0.1)           # (1 + 0) / (10 + 0)
    assert ema_decay(0.999, 90) == pytest.approx(91 / 100)
    assert ema_decay(0.9, 10_000) == 0.9


def test_the_average_equals_one_computed_by_hand():
    model = build_model("flatten-bn-dense2", (1, 2, 2), 2)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    ema = WeightAverage(model, decay=0.5)
    expected = {k: v.clone() for k, v in start.items()}
    for step in range(4):
        with torch.no_grad():                                     # a step: new weights and statistics
            for name, t in model.state_dict().items():
                t.copy_(torch.full_like(t, step + 1) if t.is_floating_point() else t + 1)
        ema.update(model, step)
        d = min(0.5, (1 + step) / (10 + step))                    # 0.1, 0.18…, 0.25, 0.30…
        expected = {k: d * v + (1 - d) * (step + 1) if v.is_floating_point() else v + 1 for k, v in expected.items()}
    got = ema.state_dict()
    for k, v in expected.items():
        assert torch.allclose(got[k].float(), v.float()), k
    assert got["layers.1.num_batches_tracked"].item() == start["layers.1.num_batches_tracked"].item() + 4
    assert all(not p.requires_grad for p in ema.average.parameters())


def test_fit_validates_and_keeps_the_average_of_every_steps_weights():
    torch.manual_seed(0)
    data = synthetic(256)
    model = build_model(TINY, (1, 28, 28), 2)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []

    def on_step(*_):                                              # the weights after each optimizer step
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
    config = TrainConfig(model=TINY, recipe="keras", epochs=2, batch_size=32, ema=0.9, crop=1.0, flip=0.5, threads=1)
    p = fit(model, data, config, on_step=on_step)
    expected = start
    for step, weights in enumerate(seen):
        d = min(0.9, (1 + step) / (10 + step))
        expected = {k: d * expected[k] + (1 - d) * weights[k] for k in expected}
    for k, v in model.state_dict().items():     # what fit leaves is the average (keras: no normalisation to fold)
        assert torch.allclose(v, expected[k], atol=1e-6), k
    assert len(seen) == p.step == 2 * 4 and "val_accuracy" in p.epochs[-1]


def test_techniques_are_recorded_and_checked(tmp_path):
    run = train(TrainConfig(model=TINY, recipe="fast", epochs=1, runs_dir=str(tmp_path), name="r", crop=0.5,
                            crop_pad=3, flip=0.5, erase=0.25, optimizer="sgd", weight_decay=5e-4, ema=0.99),
                data=synthetic(256))
    saved = json.loads((run.path / "config.json").read_text())
    assert {k: saved["settings"][k] for k in ("crop", "crop_pad", "flip", "erase", "optimizer", "weight_decay",
                                             "ema")} == {"crop": 0.5, "crop_pad": 3, "flip": 0.5, "erase": 0.25,
                                                         "optimizer": "sgd", "weight_decay": 5e-4, "ema": 0.99}
    assert saved["erase"] == 0.25 and saved["settings"]["erase_area"] == [0.02, 0.4]
    res = run.results                      # flips in training: the mirror-averaged figures beside the plain ones
    assert {"test_accuracy", "test_accuracy_tta", "val_accuracy_tta"} <= set(res)
    for bad, match in [(dict(flip=1.5), "probability"), (dict(crop_pad=40), "crop-pad"), (dict(ema=1.0), "ema"),
                       (dict(optimizer="lion"), "optimizer"), (dict(weight_decay=-1.0), "weight-decay"),
                       (dict(limit=-3), "limit")]:
        with pytest.raises(ConvlensError, match=match):
            TrainConfig(**bad)


def test_limit_trains_on_the_first_images_and_keeps_validation(small_data_dir):
    from convlens.datasets import training_data
    full = training_data(TrainConfig(data_dir=str(small_data_dir)))
    few = training_data(TrainConfig(data_dir=str(small_data_dir), limit=100))
    assert len(few.train_y) == 100 and torch.equal(few.train_x, full.train_x[:100])
    assert torch.equal(few.val_y, full.val_y) and torch.equal(few.test_y, full.test_y)


def test_ctrl_c_then_resume_is_exact_with_augmentation_and_the_average(tmp_path):
    """Augmentation draws from the checkpointed generator and the average travels in the checkpoint: a run
    stopped mid-epoch and resumed ends with the weights of one that never stopped."""
    data = synthetic(256)                          # 128 training images: 4 steps of 32 an epoch
    kw = dict(model=TINY, recipe="strong", epochs=3, batch_size=32, runs_dir=str(tmp_path), deterministic=True,
              checkpoint_every=3, ema=0.9, erase=0.5, crop=0.8)
    whole = train(TrainConfig(name="whole", **kw), data=data)
    steps = []

    def on_step(*_):
        steps.append(1)
        if len(steps) == 6:                        # inside epoch 2
            os.kill(os.getpid(), signal.SIGINT)
    cut = train(TrainConfig(name="cut", **kw), data=data, on_step=on_step)
    assert cut.results["interrupted"]
    ckpt = load_checkpoint(cut.path, build_model(TINY, (1, 28, 28), 2))
    assert ckpt.ema is not None and ckpt.progress.step == 6
    done = resume(cut.path, data=data)
    assert same_weights(whole.path, done.path)
    assert metrics_without_times(whole.path) == metrics_without_times(done.path)
    assert not torch.equal(ckpt.ema["layers.0.weight"], ckpt.model["layers.0.weight"])
