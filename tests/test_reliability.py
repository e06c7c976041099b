"""Nothing lost, nothing let in (issue 15): what the bad-input table cannot show in one command —
links and special files inside an image folder, a run still training, a double Ctrl-C, names that
would rewrite the terminal."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

from conftest import run_cli
from convlens import load_dataset

TINY = ["--model", "conv8-pool-flatten-dense10", "--no-report"]


def _pets(root: Path) -> Path:
    for name in ("cats", "dogs"):
        (root / name).mkdir(parents=True)
        for i in range(5):
            Image.new("L", (8, 8), 30 + 40 * i + (name == "dogs")).save(root / name / f"{i}.png")
    return root


def test_links_and_special_files_in_an_image_folder_are_skipped_at_once(tmp_path):
    """A class folder linked to / would walk the whole file system; a link to /dev/zero or a FIFO would
    read forever or hang. Each is skipped with its reason, in well under 10 s and small memory."""
    root = _pets(tmp_path / "pets")
    (root / "root").symlink_to("/")                                   # a "class" that is the whole disk
    (root / "cats" / "zero.png").symlink_to("/dev/zero")
    (root / "dogs" / "outside.png").symlink_to(Path(__file__))          # a file outside the dataset
    os.mkfifo(root / "dogs" / "pipe.png")
    # Peak RSS from VmHWM: ru_maxrss of a child keeps the high-water mark of the process it was started
    # from (Linux carries it across exec), so it would report this test session's size.
    script = ("import sys; from convlens import load_dataset; d = load_dataset(sys.argv[1], val_split=0); "
              "hwm = next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]; "
              "print(len(d.train_y) + len(d.test_y), d.classes, int(hwm) // 1024)")
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-c", script, f"folder:{root}"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert time.monotonic() - t0 < 30
    images, rest = p.stdout.split(" ", 1)
    assert images == "10" and "('cats', 'dogs')" in rest and int(rest.split()[-1]) < 1500    # MiB of peak RSS
    for line in ("root: a link to a folder outside the dataset folder", "cats/zero.png: a link to a file outside",
                 "dogs/outside.png: a link to a file outside the dataset folder", "dogs/pipe.png: is a FIFO"):
        assert line in p.stderr, p.stderr


def test_class_names_that_would_rewrite_the_terminal_are_escaped(tmp_path):
    root = tmp_path / "pets"
    _pets(root)
    os.rename(root / "cats", root / "cats\x1b[2J\x1b[31m")             # clear the screen, turn it red
    data = load_dataset(f"folder:{root}", val_split=0.0)
    assert data.classes == ("cats\\x1b[2J\\x1b[31m", "dogs")
    rc, out, err = run_cli("data", "--dataset", f"folder:{root}")
    assert rc == 0 and "\x1b" not in out + err and "cats\\x1b[2J" in out


def _train_argv(runs: Path, data_dir: Path, name: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "convlens", "train", "--runs-dir", str(runs), "--data-dir", str(data_dir),
            "--name", name, *extra]


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)


def test_resume_of_a_run_still_training_is_refused_and_harms_nothing(tmp_path, small_data_dir):
    """One lock per run (an OS file lock, released however the process ends): a second trainer is refused,
    and the first finishes; after a SIGKILL the lock is gone and --resume goes on."""
    runs = tmp_path / "runs"
    live = subprocess.Popen(_train_argv(runs, small_data_dir, "busy", *TINY, "--epochs", "2", "--batch-size", "8",
                                        "--checkpoint-every", "20"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _wait_for(runs / "busy" / "checkpoint.prev.safetensors", live)
    live.send_signal(signal.SIGSTOP)              # held mid-training, the lock with it, however fast the CPU
    files = lambda: {p.name: p.stat().st_mtime_ns for p in (runs / "busy").iterdir()}   # noqa: E731
    before = files()
    rc, out, err = run_cli("train", "--resume", "busy", "--runs-dir", runs, "--data-dir", small_data_dir)
    assert rc == 2 and f"in use by another convlens process (pid {live.pid})" in err, err
    assert files() == before                      # nothing of the live run's touched (its temporary files included)
    live.send_signal(signal.SIGKILL)
    live.wait()
    rc, out, err = run_cli("train", "--resume", "busy", "--runs-dir", runs, "--data-dir", small_data_dir,
                           "--no-report", timeout=600)
    assert rc == 0 and "Resuming" in out and "Test:" in out, err
    assert json.loads((runs / "busy" / "results.json").read_text())["resumes"] == 1


def test_a_double_ctrl_c_keeps_the_results_and_says_where_it_stopped(tmp_path, small_data_dir):
    """The second Ctrl-C of an impatient user lands while the results are written: they are written all the
    same, and the message says where training stopped and how to go on (not 'before the first epoch')."""
    runs = tmp_path / "runs"
    proc = subprocess.Popen(_train_argv(runs, small_data_dir, "twice", *TINY, "--epochs", "3", "--progress", "json"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:                       # driven by what happened: the first epoch's end
        if line.startswith("{") and json.loads(line).get("event") == "epoch":
            break
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    results = json.loads((runs / "twice" / "results.json").read_text())
    assert results["interrupted"] is True and results["epochs_run"] >= 1 and "test_accuracy" in results
    assert "before the first epoch" not in err
    assert "--resume" in out + err, (out, err)


def test_an_internal_error_with_debug_shows_the_traceback_and_no_rerun_hint(monkeypatch, capsys):
    from convlens import cli

    def broken(args):
        raise RuntimeError("a bug")
    monkeypatch.setattr(cli, "VERBS", [("summary", "", cli.cli_args.add_summary, broken)])
    assert cli.main(["summary", "--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1] == "convlens: error: internal error: RuntimeError: a bug"
    assert cli.main(["summary"]) == 1
    assert capsys.readouterr().err.strip() == ("convlens: error: internal error: RuntimeError: a bug "
                                               "(rerun with --debug for details)")
