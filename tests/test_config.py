"""One config path: `convlens train`'s flags are TrainConfig's fields, a config travels to a command
line and back unchanged, and a run's config.json is read back strictly into the same config."""

import json
from dataclasses import fields, replace

import pytest
from test_train import synthetic

from convlens import TrainConfig, open_run, train
from convlens.cli import build_parser
from convlens.config import RECIPES
from convlens.errors import ConvlensError, RunError
from convlens.models import PRESETS

CLI_ONLY = {"no_report", "resume", "progress", "debug", "help", "func"}


def _train_parser():
    sub = next(a for a in build_parser()._actions if a.dest == "verb")
    return sub.choices["train"]


def test_every_train_flag_is_a_field_and_every_field_a_flag():
    actions = {a.dest: a for a in _train_parser()._actions}
    assert set(actions) - CLI_ONLY == {f.name for f in fields(TrainConfig)}
    for f in fields(TrainConfig):
        a = actions[f.name]
        assert a.option_strings == ["--" + f.name.replace("_", "-")]
        written = f.metadata["help"].replace("{presets}", ", ".join(PRESETS)).replace("%(default)s", str(f.default))
        assert a.help.replace("%%", "%") == written                  # the help text is the field's own
        assert a.choices == f.metadata.get("choices")
    assert tuple(actions["recipe"].choices) == tuple(RECIPES)


CONFIGS = [TrainConfig(), TrainConfig(model="conv32k5-pool-flatten-dense10", epochs=12, lr=0.002, label_smoothing=0.0,
                                      val_split=0.2, recipe="keras", seed=7, deterministic=True, name="x", flip=0.5,
                                      flip_order="alternate"),
           TrainConfig(dataset="folder:/tmp/some where", image_size="48x64", channels=3, stream=True, early_stopping=3,
                       checkpoint_every=50, tensorboard=True, compile=True, device="cpu", precision="fp32", threads=2,
                       runs_dir="elsewhere", data_dir="/data", batch_size=16, warmup=0.05)]


@pytest.mark.parametrize("config", CONFIGS)
def test_a_config_to_the_command_line_and_back_is_the_same_config(config):
    args = build_parser().parse_args(["train", *config.to_argv()])
    assert TrainConfig.from_args(args) == config
    assert TrainConfig.from_json(json.loads(json.dumps(config.to_json()))) == config


def test_config_json_is_read_strictly():
    good = TrainConfig(epochs=3).to_json()
    with pytest.raises(RunError, match="unknown setting 'epoch'"):
        TrainConfig.from_json({**good, "epoch": 3})
    with pytest.raises(RunError, match="--epochs must be a whole number"):
        TrainConfig.from_json({**good, "epochs": "3"})
    with pytest.raises(RunError, match="--lr must be in"):
        TrainConfig.from_json({**good, "lr": -1})
    older = {k: v for k, v in good.items() if k not in ("tensorboard", "stream")}    # an older convlens's run
    assert TrainConfig.from_json({**older, "spec": "seed", "versions": {}}) == TrainConfig(epochs=3)


def test_values_are_checked_once_as_the_config_is_made():
    for bad, fragment in (({"epochs": 0}, "--epochs must be at least 1"), ({"recipe": "slow"}, "unknown recipe"),
                          ({"device": "gpu"}, "--device must be auto, cpu, cuda"), ({"model": "conv-x"}, "token 1"),
                          ({"dataset": "zip:x"}, "idx:FOLDER, csv:PATH or folder:PATH"),
                          ({"seed": 1.5}, "whole number")):
        with pytest.raises(ConvlensError, match=fragment):
            TrainConfig(**bad)
    c = TrainConfig(recipe="keras", batch_size=8)
    assert c.settings.batch_size == 8 and c.settings.lr == RECIPES["keras"].lr and c.dataset_ref.kind == "registered"


def test_a_run_retrained_from_its_own_config_json_gives_the_same_config(tmp_path):
    first = train(TrainConfig(model="conv8-pool-flatten-dense2", epochs=2, lr=0.003, seed=3, runs_dir=str(tmp_path),
                              name="first"), data=synthetic())
    saved = json.loads((first.path / "config.json").read_text())
    again = TrainConfig.from_json(saved)
    assert again == first.config
    second = train(replace(again, name="second"), data=synthetic())
    assert open_run(second.path).config == replace(first.config, name="second")
    args = build_parser().parse_args(["train", *again.to_argv()])          # the explorer's jobs go this way
    assert TrainConfig.from_args(args) == first.config
