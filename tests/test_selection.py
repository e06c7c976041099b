"""Selective training (selection.py): which images each epoch takes and how the draw leans on their last
losses, a run that takes the share's steps and anneals over them, an exact resume, the checkpoint's
losses checked, the setting recorded and bad values refused in one line before a run is made."""


import pytest
import torch
from conftest import run_cli, train_is_refused
from test_checkpoint import resumes_exactly, stop_at_step
from test_train import synthetic

from convlens import TrainConfig, train
from convlens import loop as loop_module
from convlens.checkpoint import LATEST, read_checkpoint
from convlens.errors import RunError
from convlens.files import read_safetensors, save_safetensors
from convlens.schedule import lr_at
from convlens.models import build_model
from convlens.progress import technique_text
from convlens.selection import Selection
from convlens.train import resume

GAP = "conv8same-bn-conv16s2-bn-gap-dense2"
CPU = torch.device("cpu")


def drawn(losses: torch.Tensor, share: float, power: float, draws: int = 200) -> torch.Tensor:
    """How often each image is drawn for a second epoch, over `draws` seeds."""
    sel = Selection(len(losses), share, power, CPU)
    sel.record(torch.arange(len(losses)), losses)
    counts = torch.zeros(len(losses))
    for seed in range(draws):
        counts[sel.order(2, torch.Generator().manual_seed(seed))] += 1
    return counts / draws


def test_the_first_epoch_takes_every_image_and_the_later_ones_the_share_without_repeats():
    sel = Selection(100, 0.3, 1.0, CPU)
    assert (sel.size(1), sel.size(2), sel.size(9)) == (100, 30, 30)
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(sel.order(1, gen).sort().values, torch.arange(100))
    sel.record(torch.arange(100), torch.rand(100))
    second = sel.order(2, gen)
    assert len(second) == 30 and len(second.unique()) == 30 and 0 <= second.min() and second.max() < 100
    assert Selection(7, 0.01, 1.0, CPU).size(2) == 1          # never an empty epoch


def test_off_it_draws_the_plain_shuffle_of_every_epoch():
    sel = Selection(50, 1.0, 1.0, CPU)
    a, b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for epoch in (1, 2, 3):
        assert torch.equal(sel.order(epoch, a), torch.randperm(50, generator=b))


def test_the_draw_leans_on_high_losses_by_the_power():
    losses = torch.arange(1000, dtype=torch.float).flip(0)      # image 0 the hardest, 999 the easiest
    uniform, linear, square = (drawn(losses, 0.1, p) for p in (0.0, 1.0, 2.0))
    hard, easy = slice(0, 100), slice(900, 1000)
    assert 0.8 < uniform[hard].mean() / uniform[easy].mean() < 1.25
    # Linear weights, a tenth drawn: image i is taken ~ in proportion to its rank (the hardest decile ~0.19, the
    # easiest ~0.01).
    assert linear[hard].mean() / linear[easy].mean() > 10
    assert square[hard].mean() / square[easy].mean() > linear[hard].mean() / linear[easy].mean()
    assert linear[easy].mean() > 0.002                       # the easiest images keep a chance
    assert torch.allclose(linear.sum(), torch.tensor(100.0))


def test_images_not_trained_on_yet_rank_hardest():
    sel = Selection(100, 0.05, 2.0, CPU)
    sel.record(torch.arange(95), torch.rand(95) + 100)        # 95 … 99 never seen
    w = sel.weights()
    assert w[95:].min() > w[:95].max() and w.max() == 1.0
    assert w.min() == pytest.approx(1 / 100 ** 2)              # the easiest keeps a chance


def test_several_processes_merge_what_each_recorded():
    ranks = [Selection(8, 0.5, 1.0, CPU, ranks=2) for _ in range(2)]
    ranks[0].record(torch.tensor([0, 2]), torch.tensor([0.5, 0.7]))      # each rank its share of the steps
    ranks[1].record(torch.tensor([1, 3]), torch.tensor([0.6, 0.8]))
    before = [tuple(t.clone() for t in r.fresh) for r in ranks]

    def all_sum(*tensors):                  # what all_reduce leaves on every rank: the sum over both
        for t, mine, theirs in zip(tensors, *before):
            t.copy_(mine + theirs)
    for r in ranks:
        r.merge(all_sum)
    expected = torch.tensor([0.5, 0.6, 0.7, 0.8] + [float("inf")] * 4)
    assert torch.equal(ranks[0].losses, expected) and torch.equal(ranks[1].losses, expected)
    assert not ranks[0].fresh[1].any()       # the next merge starts afresh


def config(tmp_path, name, **kw) -> TrainConfig:
    return TrainConfig(**{"model": GAP, "epochs": 4, "batch_size": 32, "select": 0.5, "runs_dir": str(tmp_path),
                          "name": name, "deterministic": True, "threads": 1, **kw})


def test_a_run_takes_the_share_of_steps_and_anneals_over_them(tmp_path, monkeypatch):
    taken = []
    original = loop_module._Loop.inputs

    def spy(self, idx, x_u8):
        taken.append((self.p.epoch, len(idx)))
        return original(self, idx, x_u8)
    monkeypatch.setattr(loop_module._Loop, "inputs", spy)
    run = train(config(tmp_path, "selective"), data=synthetic(512))       # 256 training images
    per_epoch = {e: sum(n for ep, n in taken if ep == e) for e in range(1, 5)}
    assert per_epoch == {1: 256, 2: 128, 3: 128, 4: 128}
    assert len(taken) == 8 + 3 * 4
    assert [m["images"] for m in run.metrics] == [256, 128, 128, 128]     # what each epoch's training figures are of
    r = run.config.settings
    assert run.metrics[-1]["lr"] == pytest.approx(lr_at(19, 20, r))          # the schedule spans the 20 steps
    assert run.results["test_accuracy"] > 0.9
    assert technique_text(r) == ", selective: 50% of the images an epoch after the first (power 1)"
    assert read_checkpoint(run.path / LATEST, build_model(GAP, (1, 28, 28), 2)).losses.shape == (256,)


def test_a_resumed_run_draws_what_an_uninterrupted_one_did(tmp_path):
    # 8 full steps, then 4 an epoch: stopped in epoch 2, the first selective one
    resumes_exactly(lambda name: config(tmp_path, name, checkpoint_every=3), synthetic(512), stop_at=11)


@pytest.mark.parametrize("damage, fragment", [
    (lambda t: t.pop("losses"), "has no image losses"),
    (lambda t: t.update(losses=torch.zeros(10)), "image losses are for 10 training images"),
    (lambda t: t.update(losses=torch.zeros(256, dtype=torch.int64)), "not one float32 vector"),
])
def test_a_checkpoint_without_fitting_losses_is_refused(tmp_path, damage, fragment):
    data = synthetic(512)

    assert train(config(tmp_path, "cut", epochs=3), data=data, on_step=stop_at_step(10)).results["interrupted"]
    for name in ("checkpoint.safetensors", "checkpoint.prev.safetensors"):
        path = tmp_path / "cut" / name
        tensors, meta = read_safetensors(path)
        damage(tensors)
        save_safetensors(path, tensors, meta)
    with pytest.raises(RunError, match=fragment):
        resume(tmp_path / "cut", data=data)


def test_the_setting_is_recorded_and_given_back_as_flags(tmp_path):
    c = config(tmp_path, "x", select_power=2.0)
    argv = c.to_argv()
    assert argv[argv.index("--select") + 1] == "0.5" and argv[argv.index("--select-power") + 1] == "2.0"
    assert TrainConfig.from_json(c.to_json()).settings.select_power == 2.0
    assert TrainConfig().settings.select == 1.0 and technique_text(TrainConfig().settings) == ""


def test_the_command_line_says_how_many_images_each_epoch_trained_on(tmp_path, small_data_dir):
    rc, out, err = run_cli("train", "--data-dir", small_data_dir, "--runs-dir", tmp_path, "--model", "seed-bn",
                           "--epochs", "2", "--select", "0.25", "--progress", "lines", "--no-report", cwd=tmp_path)
    assert rc == 0, err
    assert "selective: 25% of the images an epoch after the first (power 1)" in out      # 2,700 of 3,000 train
    assert " on 2,700 images  val_loss" in out and " on 675 images  val_loss" in out, out


@pytest.mark.parametrize("flags, fragment", [
    (["--select", "0"], "--select is a share of the training images in (0, 1]"),
    (["--select", "1.5"], "--select is a share of the training images in (0, 1]"),
    (["--select", "0.5", "--select-power", "-1"], "--select-power is a power in [0, 10]"),
])
def test_bad_values_are_refused_in_one_line_before_a_run_is_made(tmp_path, small_data_dir, flags, fragment):
    train_is_refused(tmp_path, small_data_dir, flags, fragment)


def test_the_warm_up_covers_the_short_last_batch_of_every_epoch(tmp_path, monkeypatch):
    shapes = []
    real = loop_module.warm_up

    def record(model, make_optimizer, make_input, wanted, *args, **kw):
        shapes.extend(n for n, size in wanted)
        return real(model, make_optimizer, make_input, wanted, *args, **kw)
    monkeypatch.setattr(loop_module, "WARM_UP_DEVICES", ("cpu",))
    monkeypatch.setattr(loop_module, "warm_up", record)
    train(config(tmp_path, "warmed"), data=synthetic(500))     # 250 images: last batches of 26, then 125: 29
    assert sorted(shapes) == [26, 29, 32]
