"""Checkpoints and resume: killed runs lose nothing, resumed runs equal uninterrupted ones bit for bit."""

import json
import math
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import damaged_safetensors, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_train import synthetic

from convlens import TrainConfig, build_model, train
from convlens.checkpoint import LATEST, PREVIOUS, Progress, load_checkpoint, read_checkpoint, save_checkpoint
from convlens.errors import ConvlensError, RunError
from convlens.files import read_safetensors
from convlens.train import resume

TINY = "conv8-pool-flatten-dense16-dense2"


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return read_safetensors(run_dir / "model.safetensors")[0]


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def metrics_without_times(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "time_s"}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def stop_at_step(n: int):
    """An on_step callback that sends this process a Ctrl-C at its n-th step (counted across epochs)."""
    steps = []

    def on_step(done, total, logs):
        steps.append(done)
        if len(steps) == n:
            os.kill(os.getpid(), signal.SIGINT)
    return on_step


def resumes_exactly(make_config, data, stop_at: int) -> None:
    """A run stopped by Ctrl-C at step `stop_at`, then resumed, ends with the weights and the epoch records of one
    that never stopped. make_config(name) -> the TrainConfig of a run called name."""
    whole = train(make_config("whole"), data=data)
    cut = train(make_config("cut"), data=data, on_step=stop_at_step(stop_at))
    assert cut.results["interrupted"]
    done = resume(cut.path, data=data)
    assert same_weights(whole.path, done.path)
    assert metrics_without_times(whole.path) == metrics_without_times(done.path)


def config(tmp_path, name, **kw) -> TrainConfig:
    return TrainConfig(**{"model": TINY, "epochs": 3, "runs_dir": str(tmp_path), "name": name,
                          "deterministic": True, "checkpoint_every": 5, **kw})


# ---------------------------------------------------------------------------
# In process: stop, resume, compare

def test_deterministic_runs_are_identical_and_say_so(tmp_path):
    a = train(config(tmp_path, "a"), data=synthetic())
    b = train(config(tmp_path, "b"), data=synthetic())
    assert same_weights(a.path, b.path)
    assert metrics_without_times(a.path) == metrics_without_times(b.path)
    assert a.config.deterministic is True and a.results["deterministic"] is True


@pytest.mark.parametrize("stop_at", [7, 8 * 2, 8 * 2 + 3])   # mid-epoch 1, end of epoch 2, mid-epoch 3
def test_ctrl_c_then_resume_equals_an_uninterrupted_run(tmp_path, stop_at):
    """Ctrl-C (a real SIGINT) stops after the current step with a checkpoint; --resume finishes the
    run; weights and metrics equal those of a run that was never stopped."""
    data = synthetic()   # 256 training images: 8 steps of 32 an epoch
    whole = train(config(tmp_path, "whole", batch_size=32), data=data)
    steps = []

    def on_step(done, total, logs):
        steps.append(done)
        if len(steps) == stop_at:
            os.kill(os.getpid(), signal.SIGINT)
    if stop_at < 8:      # inside epoch 1: no epoch to report on, the run is kept for --resume
        with pytest.raises(KeyboardInterrupt):
            train(config(tmp_path, "cut", batch_size=32), data=data, on_step=on_step)
    else:
        cut = train(config(tmp_path, "cut", batch_size=32), data=data, on_step=on_step)
        assert cut.results["interrupted"] and cut.results["epochs_run"] == stop_at // 8
    assert len(steps) == stop_at                                       # stopped right after that step
    ckpt = load_checkpoint(tmp_path / "cut", build_model(TINY, (1, 28, 28), 2))
    assert ckpt.progress.step == stop_at
    done = resume(tmp_path / "cut", data=data)
    assert done.results["interrupted"] is False and done.results["resumes"] == 1
    assert done.results["epochs_run"] == 3
    assert same_weights(whole.path, done.path)
    assert metrics_without_times(whole.path) == metrics_without_times(done.path)
    assert whole.results["test_loss"] == done.results["test_loss"]


def test_resume_keeps_early_stopping_state(tmp_path):
    """The best epoch's weights travel in the checkpoint: a resumed early-stopping run restores them."""
    data = synthetic(256)
    data.train_y = torch.randint(0, 2, data.train_y.shape, generator=torch.Generator().manual_seed(1))
    kw = dict(model="flatten-dense256-dense2", recipe="keras", epochs=30, early_stopping=2, val_split=0.25)
    whole = train(config(tmp_path, "whole", **kw), data=data)
    assert whole.results["stopped_early"]
    count = []

    def on_step(done, total, logs):
        count.append(done)
        if len(count) == 9:
            os.kill(os.getpid(), signal.SIGINT)
    cut = train(config(tmp_path, "cut", **kw), data=data, on_step=on_step)
    assert cut.results["interrupted"]
    done = resume(cut.path, data=data)
    assert done.results["stopped_early"] and done.results["best_epoch"] == whole.results["best_epoch"]
    assert same_weights(whole.path, done.path)


def test_finished_and_unknown_runs_cannot_be_resumed(tmp_path):
    run = train(config(tmp_path, "done", epochs=1), data=synthetic())
    with pytest.raises(RunError, match="has finished; nothing to resume"):
        resume(run.path, data=synthetic())
    with pytest.raises(RunError, match="no run"):
        resume("nope", tmp_path)


# ---------------------------------------------------------------------------
# Damaged, foreign and malicious checkpoints

def _two_checkpoints(tmp_path) -> tuple[Path, torch.nn.Module]:
    run = train(config(tmp_path, "r", epochs=2), data=synthetic())
    return run.path, build_model(TINY, (1, 28, 28), 2)


def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys):
    path, model = _two_checkpoints(tmp_path)
    prev_step = read_checkpoint(path / PREVIOUS, model).progress.step
    data = bytearray((path / LATEST).read_bytes())
    (path / LATEST).write_bytes(bytes(data[: len(data) // 2]))          # torn, as by a failing disk
    ckpt = load_checkpoint(path, model)
    assert ckpt.path.name == PREVIOUS and ckpt.progress.step == prev_step
    warning = capsys.readouterr().err
    assert warning.startswith("convlens: warning:") and "previous checkpoint" in warning
    (path / PREVIOUS).write_bytes(b"\x00" * 100)
    with pytest.raises(RunError, match="no usable checkpoint"):
        load_checkpoint(path, model)


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    path, _ = _two_checkpoints(tmp_path)
    with pytest.raises(RunError, match="do not match the run's model"):
        read_checkpoint(path / LATEST, build_model("conv4-pool-flatten-dense2", (1, 28, 28), 2))


def _tensor_bytes(path: Path, name: str) -> tuple[int, int]:
    """Where tensor `name`'s bytes lie in a safetensors file: (start, end)."""
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    begin, end = json.loads(data[8:8 + n])[name]["data_offsets"]
    return 8 + n + begin, 8 + n + end


@pytest.mark.parametrize("damage", ["a zeroed 4 KiB block", "one flipped bit in the data order"])
def test_a_quietly_damaged_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys, damage):
    """Damage that leaves the file parseable (issue 15): the checksum catches it, --resume takes the previous one."""
    model = build_model(TINY, (1, 28, 28), 2)
    opt = torch.optim.Adam(model.parameters())
    save_checkpoint(tmp_path, Progress(step=3), model, opt, torch.Generator())
    save_checkpoint(tmp_path, Progress(epoch=2, step=5, step_in_epoch=2), model, opt, torch.Generator(),
                    perm=torch.randperm(256), sums=(torch.zeros(()), torch.zeros((), dtype=torch.long)))
    data = bytearray((tmp_path / LATEST).read_bytes())
    if damage == "a zeroed 4 KiB block":
        start, _ = _tensor_bytes(tmp_path / LATEST, "model.layers.3.weight")
        data[start:start + 4096] = bytes(4096)
    else:
        start, _ = _tensor_bytes(tmp_path / LATEST, "perm")
        data[start + 9] ^= 0x04
    (tmp_path / LATEST).write_bytes(bytes(data))
    ckpt = load_checkpoint(tmp_path, model)
    assert ckpt.path.name == PREVIOUS and ckpt.progress.step == 3
    assert "no longer match the checksum" in capsys.readouterr().err


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_pickle_posing_as_a_checkpoint_is_refused_unopened(tmp_path):
    path, model = _two_checkpoints(tmp_path)
    victim = tmp_path / "pwned"
    for name in (LATEST, PREVIOUS):
        (path / name).write_bytes(pickle.dumps(_Evil(str(victim)), protocol=4))
    with pytest.raises(RunError, match="pickle"):
        load_checkpoint(path, model)
    (path / "results.json").unlink()             # as if it had been killed
    with pytest.raises(RunError, match="pickle"):
        resume(path, data=synthetic())
    assert not victim.exists()


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory) -> bytes:
    path, _ = _two_checkpoints(tmp_path_factory.mktemp("ck"))
    return (path / LATEST).read_bytes()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzzed_checkpoints_raise_only_run_error(tmp_path, checkpoint_bytes, data):
    """Random bytes, flipped bytes, cut files, edited headers: RunError or a valid checkpoint, nothing else."""
    f = tmp_path / "fuzz.safetensors"
    f.write_bytes(damaged_safetensors(data, checkpoint_bytes))
    try:
        read_checkpoint(f, build_model(TINY, (1, 28, 28), 2))
    except RunError:
        pass


# ---------------------------------------------------------------------------
# Disk full and read-only folders, on a real file system when we may mount one

def _save(folder: Path, step: int) -> None:
    model = build_model(TINY, (1, 28, 28), 2)
    opt = torch.optim.Adam(model.parameters())
    save_checkpoint(folder, Progress(step=step), model, opt, torch.Generator())


def _mount_tmpfs(target: Path, size: str) -> bool:
    target.mkdir()
    return os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)], capture_output=True).returncode == 0


def test_disk_full_and_read_only_keep_the_previous_checkpoint(tmp_path):
    """CI runs as root and mounts a 1 MiB tmpfs: the disk really fills, the folder really turns read-only."""
    mnt = tmp_path / "small-disk"
    if not _mount_tmpfs(mnt, "1m"):
        pytest.skip("needs root to mount a tmpfs (CI runs as root; "
                    "test_write_failures_keep_the_previous_checkpoint covers this without)")
    try:
        _save(mnt, 1)
        _save(mnt, 2)
        filler = mnt / "filler"
        with open(filler, "wb", buffering=0) as f:           # fill the disk to the last byte
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass
        with pytest.raises(RunError, match=f"cannot write {mnt / LATEST}: No space left on device"):
            _save(mnt, 3)
        model = build_model(TINY, (1, 28, 28), 2)
        assert load_checkpoint(mnt, model).progress.step == 2
        assert read_checkpoint(mnt / PREVIOUS, model).progress.step == 1
        filler.unlink()
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        with pytest.raises(RunError, match="Read-only file system"):
            _save(mnt, 4)
        assert load_checkpoint(mnt, model).progress.step == 2
        assert sorted(p.name for p in mnt.iterdir()) == [PREVIOUS, LATEST]    # no temporary file left
    finally:
        subprocess.run(["umount", str(mnt)])


@pytest.mark.parametrize("fail_at", ["create", "fsync", "rename"])
def test_write_failures_keep_the_previous_checkpoint(tmp_path, monkeypatch, fail_at):
    import errno
    _save(tmp_path, 1)
    _save(tmp_path, 2)

    def fail(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    target = {"create": "tempfile.mkstemp", "fsync": "os.fsync", "rename": "os.replace"}[fail_at]
    monkeypatch.setattr(target, fail)
    with pytest.raises(RunError, match="No space left on device"):
        _save(tmp_path, 3)
    monkeypatch.undo()
    model = build_model(TINY, (1, 28, 28), 2)
    assert load_checkpoint(tmp_path, model).progress.step == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [PREVIOUS, LATEST]


# ---------------------------------------------------------------------------
# The kill test: SIGKILL at random moments, 20 times, then resume to the end
#
# Driven by what the run has done, never by the clock: each process is killed a few checkpoint writes
# after its first one, so a kill costs the run a handful of steps on any CPU. 2,700 training images
# in batches of 8 are 338 steps an epoch, 1,352 in all, with a checkpoint every 2 steps: 20 kills spend
# ~10 steps each, far from the end however fast the machine (on a 2-core AVX-512 EPYC the earlier
# version, killed after up to 0.25 s, ran out of its 172 steps before the 20th kill).

KILLS = 20
KILL_MODEL = "conv16-pool-conv16-pool-flatten-dense32-dense10"
KILL_EPOCHS, KILL_BATCH, KILL_EVERY = 4, 8, 2


def _train_cmd(data_dir: Path, runs: Path, name: str, resume_run: bool) -> list[str]:
    base = [sys.executable, "-m", "convlens", "train", "--runs-dir", str(runs), "--data-dir", str(data_dir),
            "--no-report"]
    if resume_run:
        return base + ["--resume", name]
    return base + ["--model", KILL_MODEL, "--epochs", str(KILL_EPOCHS), "--batch-size", str(KILL_BATCH),
                   "--checkpoint-every", str(KILL_EVERY), "--deterministic", "--name", name]


def _tmp_files(run_dir: Path) -> list[str]:
    return [n for n in os.listdir(run_dir) if n.startswith(".checkpoint")]


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return 0


def _wait_for_writes(proc: subprocess.Popen, latest: Path, since: int, writes: int) -> int:
    """Wait until `proc` has renamed `writes` new checkpoints into place after mtime `since`; the last mtime."""
    deadline = time.monotonic() + 120
    for _ in range(writes):
        while _mtime(latest) in (0, since):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint written in 120 s"
            time.sleep(0.0002)
        since = _mtime(latest)
    return since


@pytest.mark.slow
def test_sigkill_twenty_times_then_resume_equals_an_uninterrupted_run(tmp_path, small_data_dir):
    runs = tmp_path / "runs"
    rc, _, err = run_cli(*_train_cmd(small_data_dir, runs, "whole", False)[3:])
    assert rc == 0, err
    total_steps = KILL_EPOCHS * math.ceil(2700 / KILL_BATCH)
    run_dir = runs / "killed"
    model = build_model(KILL_MODEL)
    rng = random.Random(0)
    steps, during_write = [], 0
    for k in range(KILLS):
        proc = subprocess.Popen(_train_cmd(small_data_dir, runs, "killed", k > 0),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # Under way once it has written a checkpoint of its own; then a few more steps.
        since = _wait_for_writes(proc, run_dir / LATEST, _mtime(run_dir / LATEST), 1 + rng.randrange(3))
        if k % 2:        # the next checkpoint write: kill it while its temporary file is being written
            while not _tmp_files(run_dir) and proc.poll() is None and _mtime(run_dir / LATEST) == since:
                time.sleep(0.0002)
        else:            # anywhere in the steps that follow
            time.sleep(rng.uniform(0, 0.003))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
        during_write += bool(_tmp_files(run_dir))
        ckpt = load_checkpoint(run_dir, model)                   # always a loadable checkpoint
        assert ckpt.path.name == LATEST and ckpt.progress.step >= (steps[-1] if steps else 0)
        steps.append(ckpt.progress.step)
    # Half the kills aim at a write; on a busy machine some land just after it: at least 2 must hit.
    assert during_write >= 2, f"only {during_write} kills landed inside a checkpoint write"
    assert steps[-1] < total_steps // 2, f"the kills used {steps[-1]} of the run's {total_steps} steps"
    assert not (run_dir / "results.json").exists()

    rc, out, err = run_cli(*_train_cmd(small_data_dir, runs, "killed", True)[3:])
    assert rc == 0, err
    assert "Resuming" in out and "Test:" in out
    assert not _tmp_files(run_dir)
    assert same_weights(runs / "whole", run_dir)
    assert metrics_without_times(runs / "whole") == metrics_without_times(run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["resumes"] == KILLS and results["deterministic"] is True


def test_resume_from_the_command_line_checks_its_input(tmp_path):
    runs = tmp_path / "runs"
    train(config(runs, "done", epochs=1), data=synthetic())
    for args, fragment in ((["--resume", "done", "--lr", "0.1"], "drop --lr"),
                           (["--resume", "nope"], "no run 'nope'")):
        rc, _, err = run_cli("train", *args, "--runs-dir", runs, cwd=tmp_path)
        assert rc == 2 and fragment in err and len(err.strip().splitlines()) == 1, err
    with pytest.raises(ConvlensError):
        resume("done", runs)


def test_an_alternating_flip_run_resumes_exactly(tmp_path):
    """The images' first-epoch flips come from the run's seed, not its checkpoint: a run stopped mid-epoch 3
    resumes mirroring each image the way the uninterrupted run did."""
    resumes_exactly(lambda name: config(tmp_path, name, batch_size=32, flip=0.5, flip_order="alternate"),
                    synthetic(), stop_at=8 * 2 + 3)
