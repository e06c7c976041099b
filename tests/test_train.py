import base64
import json
import math

import numpy as np
import pytest
import torch

from convlens import TrainConfig, build_model, fit, open_run, train
from convlens.compare import overfitting_note
from convlens.config import RECIPES
from convlens.datasets import Dataset
from convlens.errors import ConvlensError, DataError
from convlens.inspect import activations
from convlens.schedule import lr_at
from convlens.probe import probe_epochs, read_snapshot
from convlens.progress import technique_text


def synthetic(n=512, seed=0) -> Dataset:
    """Two easy classes: a bright vertical bar vs a bright horizontal bar, with noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 60, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 2, (n,), generator=g)
    x[y == 0, 0, :, 12:16] = 250
    x[y == 1, 0, 12:16, :] = 250
    k = n // 4
    return Dataset("bars", ("vertical", "horizontal"), x[2 * k:], y[2 * k:], x[k:2 * k], y[k:2 * k], x[:k], y[:k])


def test_training_learns_on_synthetic_data():
    torch.manual_seed(0)
    data = synthetic()
    model = build_model("conv8-pool-flatten-dense16-dense2", (1, 28, 28), 2)
    hist = fit(model, data, TrainConfig(model="conv8-pool-flatten-dense16-dense2", recipe="fast", epochs=3))
    assert hist.epochs[-1]["val_accuracy"] >= 0.95
    assert hist.epochs[-1]["loss"] < hist.epochs[0]["loss"]


def test_train_writes_a_complete_run(tmp_path):
    run = train(TrainConfig(model="conv8-pool-flatten-dense2", epochs=2, runs_dir=str(tmp_path), name="bars"),
                data=synthetic())
    files = sorted(p.name for p in run.path.iterdir())
    assert files == [".lock", "checkpoint.prev.safetensors", "checkpoint.safetensors", "config.json", "metrics.jsonl",
                     "model.json", "model.safetensors", "probe", "results.json"]
    cfg = json.loads((run.path / "config.json").read_text())
    assert cfg["spec"] == "conv8-pool-flatten-dense2" and cfg["versions"]["torch"].startswith("2.13")
    assert cfg["settings"]["batch_size"] == RECIPES["fast"].batch_size
    lines = (run.path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["epoch"] for l in lines] == [1, 2]
    assert run.results["test_accuracy"] >= 0.9 and run.results["epochs_run"] == 2
    again = open_run("bars", tmp_path)
    model = again.load_model()
    assert torch.equal(model.layers[0].weight, run.load_model().layers[0].weight)
    assert not any(p.suffix in (".pt", ".pth", ".pkl") for p in run.path.iterdir())


def test_bad_config_leaves_no_run_directory(tmp_path):
    for bad in ({"epochs": 0}, {"batch_size": -1}, {"model": "conv64-pool-dense"},
                {"val_split": 0, "early_stopping": 2}, {"epochs": "5"}, {"dataset": "zip:x"}, {"precision": "fp8"}):
        with pytest.raises(ConvlensError):         # refused as the config is made, before any data or folder
            train(TrainConfig(runs_dir=str(tmp_path), **bad), data=synthetic())
    with pytest.raises(ConvlensError, match="output layer needs 2 units"):   # a spec is taken as written
        train(TrainConfig(model="conv8-pool-flatten-dense10", runs_dir=str(tmp_path)), data=synthetic())
    assert list(tmp_path.iterdir()) == []


def test_early_stopping_restores_the_best_weights():
    torch.manual_seed(0)
    data = synthetic(256)
    # Memorise noisy labels with a large constant lr: validation loss soon rises.
    data.train_y = torch.randint(0, 2, data.train_y.shape, generator=torch.Generator().manual_seed(1))
    model = build_model("flatten-dense256-dense2", (1, 28, 28), 2)
    snapshots = {}
    config = TrainConfig(model="flatten-dense256-dense2", recipe="keras", epochs=30, early_stopping=2, val_split=0.25)
    hist = fit(model, data, config,
               on_epoch=lambda rec, _: snapshots.__setitem__(rec["epoch"], model.layers[1].weight.detach().clone()))
    assert hist.stopped_early and len(hist.epochs) == hist.best_epoch + 2
    assert torch.equal(model.layers[1].weight, snapshots[hist.best_epoch])


def test_interrupt_keeps_what_was_trained(tmp_path):
    calls = []

    def on_step(done, total, logs):
        calls.append(done)
        if len(calls) == total + 3:     # a few steps into epoch 2
            raise KeyboardInterrupt
    run = train(TrainConfig(model="conv8-pool-flatten-dense2", epochs=5, runs_dir=str(tmp_path), name="cut"),
                data=synthetic(), on_step=on_step)
    assert run.results["interrupted"] and run.results["epochs_run"] == 1
    assert run.results["stopped_at"] == [2, 3]            # epoch 2, three steps into it
    assert (run.path / "model.safetensors").exists()


def test_step_logs_are_the_epochs_running_means(tmp_path):
    """on_step's logs, read at the last step of an epoch, are the epoch's loss and accuracy that the
    epoch's record then reports; the lr is the schedule's."""
    seen = []
    run = train(TrainConfig(model="conv8-pool-flatten-dense2", epochs=2, runs_dir=str(tmp_path), name="logs"),
                data=synthetic(), on_step=lambda done, total, logs: seen.append((done, total, dict(logs))))
    total = seen[0][1]
    ends = [logs for done, _, logs in seen if done == total]
    for rec, logs in zip(run.metrics, ends):
        assert logs["loss"] == pytest.approx(rec["loss"], rel=1e-6)
        assert logs["accuracy"] == pytest.approx(rec["accuracy"], rel=1e-6)
    assert all(0 < logs["lr"] < 1 for _, _, logs in seen) and len({round(l["lr"], 9) for *_, l in seen}) > 3
    assert set(seen[0][2]) == {"loss", "accuracy", "lr"}


@pytest.mark.parametrize("ema", [None, 0.9])
def test_probe_keeps_the_maps_of_every_epoch_as_the_finished_model_computes_them(tmp_path, ema):
    """probe/epoch-NNNN.json for the untrained network and each epoch; the last one's maps, taken while
    the model still trained on normalised pixels, equal the finished (normalisation-folded) model's:
    with a moving average of the weights, the average's, which is what is validated and saved."""
    data = synthetic()
    run = train(TrainConfig(model="conv8-pool-conv4-flatten-dense2", epochs=2, runs_dir=str(tmp_path), name="p",
                            probe=3, ema=ema), data=data)
    assert probe_epochs(run.path) == [0, 1, 2]
    snap = read_snapshot(run.path, 2)
    assert snap["index"] == 3 and [l["name"] for l in snap["layers"]] == ["conv2d_1", "conv2d_2"]
    final = {l.name: l.output for l in activations(run.load_model(), data.test_x[3])}
    for layer in snap["layers"]:
        m = layer["maps"]
        lo, hi = np.array(m["min"])[:, None], np.array(m["max"])[:, None]
        got = lo + np.frombuffer(base64.b64decode(m["data"]), np.uint8).reshape(len(lo), -1) / 255 * (hi - lo)
        want = final[layer["name"]].reshape(len(lo), -1)
        assert np.abs(got - want).max() <= (hi - lo).max() / 255 / 2 + 1e-4
    assert sum(snap["probabilities"]) == pytest.approx(1, abs=1e-4) and snap["classes"] == list(data.classes)
    assert read_snapshot(run.path, 0)["probabilities"] != snap["probabilities"]


def test_probe_index_is_checked_before_anything_is_written(tmp_path):
    with pytest.raises(DataError, match="no test image 512"):
        train(TrainConfig(model="conv8-pool-flatten-dense2", epochs=1, runs_dir=str(tmp_path), probe=512),
              data=synthetic())
    assert not any(tmp_path.iterdir())
    run = train(TrainConfig(model="conv8-pool-flatten-dense2", epochs=1, runs_dir=str(tmp_path), probe=-1),
                data=synthetic())
    assert probe_epochs(run.path) == [] and not (run.path / "probe").exists()


def test_overfitting_note_names_the_epoch():
    epochs = [{"loss": l, "val_loss": v} for l, v in
              [(0.45, 0.35), (0.30, 0.29), (0.25, 0.26), (0.21, 0.25), (0.18, 0.27), (0.15, 0.30), (0.12, 0.33)]]
    note = overfitting_note(epochs)
    assert "rising since epoch 5" in note and "lowest 0.2500 at epoch 4" in note
    assert overfitting_note(epochs[:4]) is None


def test_onecycle_schedule_shape():
    r = RECIPES["fast"]
    total = 1000
    lrs = [lr_at(s, total, r) for s in range(total + 1)]
    peak = max(lrs)
    assert math.isclose(peak, r.lr) and lrs.index(peak) == round(total * r.warmup)
    assert math.isclose(lrs[0], r.lr / 25) and lrs[-1] < 1e-5 * r.lr
    w = round(total * r.warmup)
    assert all(a <= b for a, b in zip(lrs[:w], lrs[1:w + 1])) and all(a >= b for a, b in zip(lrs[w:], lrs[w + 1:]))
    assert all(lr_at(s, total, RECIPES["keras"]) == 1e-3 for s in (0, 500, 1000))
    short = TrainConfig(recipe="strong", warmup=0.05).settings                # --warmup moves the peak
    lrs = [lr_at(s, total, short) for s in range(total + 1)]
    assert short.warmup == 0.05 and lrs.index(max(lrs)) == 50 and math.isclose(max(lrs), short.lr)
    for bad, fragment in (({"warmup": 0.0}, "--warmup is a share of the steps in \\(0, 1\\), got 0.0"),
                          ({"warmup": 0.1, "recipe": "keras"}, "recipe keras trains at a constant learning rate")):
        with pytest.raises(ConvlensError, match=fragment):
            TrainConfig(**bad)


@pytest.mark.parametrize("spec", ["seed", "dense", "conv8k5s2-flatten-dense10"])
def test_folded_normalisation_computes_the_same_function(spec):
    """Training on (x - mean) / std and folding it into the first layer changes nothing downstream."""
    from convlens.loop import can_fold_normalization, fold_normalization
    torch.manual_seed(0)
    model = build_model(spec).double()
    assert can_fold_normalization(model)
    x = torch.rand(5, 1, 28, 28, dtype=torch.float64)
    mean, std = torch.tensor([0.286]), torch.tensor([0.353])
    expected = model((x - mean.double()) / std.double())
    fold_normalization(model, mean.double(), std.double())
    assert torch.allclose(model(x), expected, atol=1e-9)
    assert not can_fold_normalization(build_model("conv8p1-flatten-dense10"))


def test_alternating_flip_mirrors_each_training_image_the_other_way_each_epoch(tmp_path, monkeypatch):
    """--flip-order alternate in a real run: epoch 1 mirrors about half the images, each later epoch every image
    the other way from the one before, and the run's resume picks up the same order (test_checkpoint)."""
    import convlens.loop as loop
    mirrored, batch = {}, {}                         # image index -> mirrored in epoch 1, 2, 3; the step's indices
    real_inputs, real_augment = loop._Loop.inputs, loop.augment

    def inputs(self, idx, x_u8):
        batch.update(idx=idx.tolist(), epoch=self.p.epoch)
        return real_inputs(self, idx, x_u8)

    def augment(x, *args, **kw):
        out = real_augment(x, *args, **kw)
        for i, before, after in zip(batch["idx"], x, out):
            assert torch.equal(after, before.flip(2)) or torch.equal(after, before)
            mirrored.setdefault(i, []).append(not torch.equal(after, before))
        return out
    monkeypatch.setattr(loop._Loop, "inputs", inputs)
    monkeypatch.setattr(loop, "augment", augment)
    config = TrainConfig(model="conv8-pool-flatten-dense16-dense2", recipe="fast", flip=0.5, flip_order="alternate",
                         epochs=3, batch_size=32, val_split=0.0, runs_dir=str(tmp_path), name="alt")
    run = train(config, data=synthetic())
    assert run.config.settings.flip_order == "alternate" and "flip 0.5 alternating" in technique_text(config.settings)
    assert len(mirrored) == 256 and all(len(m) == 3 for m in mirrored.values())
    assert all(m[1] == (not m[0]) and m[2] == m[0] for m in mirrored.values())
    assert 0.35 < sum(m[0] for m in mirrored.values()) / 256 < 0.65
    with pytest.raises(ConvlensError, match="--flip-order alternate orders the flips: it needs --flip > 0"):
        TrainConfig(flip_order="alternate")
    with pytest.raises(ConvlensError, match="--flip-order must be one of random, alternate"):
        TrainConfig(flip=0.5, flip_order="sometimes")
