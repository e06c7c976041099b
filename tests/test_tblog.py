"""--tensorboard: scalars, weight histograms, confusion matrices and feature maps in TensorBoard's own
format, read back with TensorBoard's own reader; a resumed run's log has each epoch once."""

import os
import signal

import pytest
from test_train import synthetic

from convlens import TrainConfig, train
from convlens.train import resume

EventAccumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator", reason="tensorboard is in requirements.txt").EventAccumulator


def read(run_dir):
    ea = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "histograms": 0, "scalars": 0})
    ea.Reload()
    return ea


def test_a_run_logs_everything_tensorboard_shows(tmp_path):
    run = train(TrainConfig(model="conv8-pool-flatten-dense16-dense2", epochs=3, runs_dir=str(tmp_path), name="tb",
                            tensorboard=True), data=synthetic())
    ea = read(run.path)
    tags = ea.Tags()
    assert {"epoch/loss", "epoch/accuracy", "epoch/val_loss", "epoch/val_accuracy", "epoch/lr", "test/accuracy"} \
        <= set(tags["scalars"])
    assert [e.step for e in ea.Scalars("epoch/loss")] == [1, 2, 3]
    assert [round(e.value, 5) for e in ea.Scalars("epoch/loss")] == [round(m["loss"], 5) for m in run.metrics]
    assert ea.Scalars("test/accuracy")[0].value == pytest.approx(run.results["test_accuracy"], abs=1e-6)
    assert {"weights/layers.0.weight", "weights/layers.0.bias"} <= set(tags["histograms"])
    assert {"confusion_matrix/counts", "confusion_matrix/normalized", "feature_maps/conv2d_1"} <= set(tags["images"])
    img = ea.Images("feature_maps/conv2d_1")[0]
    assert img.width > 200 and img.height > 100 and len(img.encoded_image_string) > 2000


def test_a_resumed_run_logs_each_epoch_once(tmp_path):
    data = synthetic()
    steps = []

    def on_step(done, total, logs):
        steps.append(done)
        if len(steps) == 4 * 2 + 1:                     # into epoch 3 (4 steps of 64 an epoch)
            os.kill(os.getpid(), signal.SIGINT)
    cut = train(TrainConfig(model="conv8-pool-flatten-dense16-dense2", epochs=4, runs_dir=str(tmp_path), name="tb",
                            tensorboard=True), data=data, on_step=on_step)
    assert cut.results["interrupted"]
    done = resume(cut.path, data=data)
    losses = read(done.path).Scalars("epoch/loss")
    assert [e.step for e in losses] == [1, 2, 3, 4]
    assert [round(e.value, 5) for e in losses] == [round(m["loss"], 5) for m in done.metrics]
