"""A command's own peak memory, measured right: `start(cmd, …)` and, once it has ended, `peak_mb(start's file)`.

Linux keeps a process's peak resident size (ru_maxrss) across exec, and a child begins with its
parent's: a benchmark that has imported PyTorch before it starts `convlens …` would read its own
size as the child's (pytest's 1.7 GB, in one test). So the command is started by a bare Python
(`-S`, a few MB) that forks it and reads its rusage with wait4: the command's own peak.
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

LAUNCHER = """import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status) % 256)
"""


def start(cmd: list[str], **popen) -> tuple[subprocess.Popen, Path]:
    """Popen of `cmd` through the launcher, in a session of its own (kill with `stop`), and the file
    its peak RSS (KiB) will be in."""
    fd, peak = tempfile.mkstemp(prefix="peak-")
    os.close(fd)
    proc = subprocess.Popen([sys.executable, "-S", "-c", LAUNCHER, peak, *map(str, cmd)], start_new_session=True,
                            **popen)
    return proc, Path(peak)


def stop(proc: subprocess.Popen) -> None:
    """Kill the command and its launcher."""
    os.killpg(proc.pid, 9)


def peak_mb(peak: Path) -> float:
    """The ended command's own peak RSS in MB (MiB), and the file removed."""
    try:
        return int(peak.read_text() or 0) / 1024
    finally:
        peak.unlink(missing_ok=True)
