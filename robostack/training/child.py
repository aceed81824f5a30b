"""One supervised child process of `robostack train` (robostack/training/launcher.py): started
through the launcher's `--child` entry, so that it dies with the launcher; its output appended
to its own log file and read back incrementally for echoing; its restarts counted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from robostack import cpu_affinity


class Child:
    """One supervised process; output appended to its log file."""

    def __init__(self, name: str, module: str, args: list[str], log_dir: Path,
                 cpus: list[int] | None = None):
        self.name, self.module, self.args = name, module, args
        self.cpus = cpus  # cores it may run on (None: any); see robostack/cpu_affinity.py
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen | None = None
        self.restarts = 0
        self.exits: list[float] = []  # monotonic times of the exits that led to a restart
        self.finished = False  # exited on purpose (0), not to be restarted
        self._offset = 0

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self._offset = log.tell()
            # `-m robostack.training.launcher --child MODULE ...`: die with the launcher, then run MODULE.
            self.process = subprocess.Popen(
                [sys.executable, "-m", "robostack.training.launcher", "--child", self.module, *self.args],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches the launcher only; it stops us in order
                env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
                         ROBOSTACK_PARENT=str(os.getpid())))
        if self.cpus:
            cpu_affinity.pin(self.process.pid, self.cpus)

    def poll(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def new_output(self) -> list[str]:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except OSError:
            return []
        end = data.rfind(b"\n") + 1
        self._offset += end
        return data[:end].decode(errors="replace").splitlines()

    def signal(self, signum: int) -> None:
        if self.poll() is None:
            try:
                self.process.send_signal(signum)
            except ProcessLookupError:
                pass

    def wait(self, timeout: float) -> bool:
        try:
            self.process.wait(timeout=max(0.0, timeout))
            return True
        except subprocess.TimeoutExpired:
            return False
