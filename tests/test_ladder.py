"""`convlens ladder`: the rungs, the table, and a short ladder end to end through the command line."""

import json
from dataclasses import asdict, replace

import pytest
from conftest import run_cli

from convlens import TrainConfig
from convlens.errors import ConvlensError
from convlens.ladder import RUNGS, chosen_rungs, rung_config, table_markdown, table_text, with_gains
from convlens.models import PRESETS


def test_every_rung_adds_one_thing_to_the_one_before():
    names = [r.name for r in RUNGS]
    assert names == ["seed", "bn", "augment", "resnet", "ema", "tta", "longer"]
    trained = [r for r in RUNGS if not r.tta_of]

    def what_trains(rung):   # the model, the epochs and the recipe with the rung's overrides resolved
        config = TrainConfig(**rung.settings)
        return {"model": config.model, "epochs": config.epochs, **asdict(replace(config.settings, name=""))}
    for before, after in zip(trained, trained[1:]):
        b, a = what_trains(before), what_trains(after)
        changed = {k for k in b if b[k] != a[k]}
        assert len(changed) == 1 or changed <= {"crop", "crop_pad", "flip", "erase"}, (after.name, changed)
    assert trained[0].settings == {"model": "seed", "recipe": "fast", "epochs": 10}
    for r in trained:
        TrainConfig(**r.settings)                                   # each a valid training config
        assert r.settings["model"] in PRESETS
    top = TrainConfig(**RUNGS[4].settings).settings                 # the ema rung is a preset and a recipe
    assert replace(top, name="strong") == TrainConfig(model="resnet-cpu", recipe="strong").settings


def test_only_names_rungs_and_a_tta_rung_brings_its_runs():
    assert [r.name for r in chosen_rungs("bn,seed")] == ["seed", "bn"]
    assert [r.name for r in chosen_rungs("tta")] == ["ema", "tta"]
    with pytest.raises(ConvlensError, match="unknown rung 'dropout'"):
        chosen_rungs("seed,dropout")


def test_rung_configs_scale_epochs_and_are_named_for_the_rung_and_seed():
    c = rung_config(RUNGS[6], 2, 0.1, runs_dir="r", limit=100)
    assert c.name == "ladder-longer-s2" and c.seed == 2 and c.epochs == 2 and c.limit == 100   # 18 × 0.1
    assert rung_config(RUNGS[1], 0, 0.25).epochs == 2                 # 10 × 0.25 = 2.5, rounded to even
    assert rung_config(RUNGS[0], 0, 0.01).epochs == 1


def test_the_table_says_gains_in_points():
    same = {"params": 243786, "mult_adds": 5_000_000, "epochs": 5, "train_time_s": 50.0, "val_std": 0.001, "seeds": 3}
    rows = with_gains([
        {**same, "rung": "seed", "adds": "x", "trained": True, "val_accuracy": 0.92, "test_accuracy": 0.9128,
         "test_std": 0.002},
        {**same, "rung": "tta", "adds": "y", "trained": False, "val_accuracy": 0.93, "test_accuracy": 0.9203,
         "test_std": 0.001, "reads": "seed"},
        {**same, "rung": "longer", "adds": "z", "trained": True, "val_accuracy": 0.94, "test_accuracy": 0.9178,
         "test_std": 0.001}])
    assert rows[0]["gain"] is None and rows[1]["gain"] == pytest.approx(0.0075)
    assert rows[2]["gain"] == pytest.approx(0.005)            # over the seed rung's plain figure, not the TTA one
    text = table_text(rows)
    assert "+0.75 pt" in text and "91.28% ± 0.20% (n=3)" in text and "(none)" in text
    assert table_markdown(rows).count("\n") == 4


def test_a_short_ladder_end_to_end_and_again(small_data_dir, tmp_path):
    """Two rungs, one seed, one epoch, 300 training images: the runs, the table, the files; run again, the
    finished runs are found, not trained again; other settings for the same runs are refused."""
    runs, out = tmp_path / "runs", tmp_path / "out"
    args = ("ladder", "--only", "seed,bn", "--seeds", "1", "--epochs-scale", "0.1", "--limit", "300", "--threads", "1",
            "--runs-dir", runs, "--data-dir", small_data_dir, "--out-dir", out)
    code, stdout, err = run_cli(*args)
    assert code == 0, err
    assert "Rung seed" in stdout and "Rung bn" in stdout and "test accuracy (mean ± std)" in stdout
    result = json.loads((out / "ladder.json").read_text())
    rows = result["rows"]
    assert [r["rung"] for r in rows] == ["seed", "bn"] and rows[0]["params"] == 243_786
    assert rows[1]["params"] == 243_786 + 2 * 4 * 64 and rows[0]["epochs"] == 1 and rows[1]["gain"] is not None
    assert result["machine"]["threads"] == 1 and "cpu" in result["machine"]
    assert (out / "ladder.png").read_bytes()[:4] == b"\x89PNG" and "| seed |" in (out / "ladder.md").read_text()
    config = json.loads((runs / "ladder-bn-s0" / "config.json").read_text())
    assert config["model"] == "seed-bn" and config["limit"] == 300 and config["epochs"] == 1
    written = (runs / "ladder-seed-s0" / "model.safetensors").stat().st_mtime_ns
    code, again, err = run_cli(*args)
    assert code == 0 and (runs / "ladder-seed-s0" / "model.safetensors").stat().st_mtime_ns == written, err
    assert "epoch 1" not in again                                    # nothing trained again
    code, _, err = run_cli(*args[:6], "0.3", *args[7:])
    assert code == 2 and "trained with other settings" in err and "epochs" in err
