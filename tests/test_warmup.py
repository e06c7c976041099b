"""A GPU's start-up off the training clock (warmup.py): the warm-up trains a throwaway copy, so the run's
weights, optimizer and random draws are what they would have been without it, and results.json keeps its
seconds apart from the training time. CI has no GPU, so the loop is told to warm up on the CPU here."""

import json

import torch
from test_checkpoint import same_weights
from test_train import synthetic

from convlens import TrainConfig, build_model, train
from convlens import loop as loop_module
from convlens.schedule import optimizer_for
from convlens.warmup import warm_up

SPEC = "conv4-pool-bn-dropout0.5-flatten-dense8-dense2"     # batch norm statistics and a random dropout mask


def test_warm_up_leaves_the_model_its_average_and_the_random_state_alone():
    torch.manual_seed(0)
    model = build_model(SPEC, (1, 28, 28), 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    recipe = TrainConfig(model=SPEC, recipe="strong").settings
    blank = lambda shape: torch.zeros((shape[0], 1, *shape[1])).contiguous(memory_format=torch.channels_last)  # noqa
    seconds = warm_up(model, lambda twin: optimizer_for(twin, recipe, torch.device("cpu")), blank,
                      [(32, (28, 28)), (7, (28, 28))],
                      torch.float32, label_smoothing=0.1, ema=0.999)
    assert seconds > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())
    assert model.training


def run(tmp_path, name: str) -> dict:
    config = TrainConfig(model=SPEC, recipe="strong", epochs=2, batch_size=32, seed=3, threads=1,
                         deterministic=True, runs_dir=str(tmp_path), name=name, device="cpu")
    return train(config, data=synthetic(300)).results


def test_a_warmed_up_run_trains_to_the_same_weights_and_records_the_warm_up_apart(tmp_path, monkeypatch):
    plain = run(tmp_path, "plain")
    monkeypatch.setattr(loop_module, "WARM_UP_DEVICES", ("cpu",))
    warmed = run(tmp_path, "warmed")
    assert "device_warmup_s" not in plain
    assert warmed["device_warmup_s"] > 0
    assert same_weights(tmp_path / "plain", tmp_path / "warmed")
    assert warmed["test_accuracy"] == plain["test_accuracy"]
    on_disk = json.loads((tmp_path / "warmed" / "results.json").read_text())
    assert on_disk["device_warmup_s"] == warmed["device_warmup_s"]
