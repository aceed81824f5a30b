"""The Franka Hand for hardware/franka.py, in a process of its own.

franky's gripper calls hold the GIL while they wait for the Hand's packets: read from a thread of
the robot server, a width read took the 1 kHz loop with it whenever the Hand (or franky-sim)
answered late, and a 300 ms stall ended the torque motion through franky's 50 ms watchdog
(measured: 229 missed ticks in one second with the thread, none in 20 s without it). So the Hand
lives in a child process (`python -m hardware.franka_gripper`, not multiprocessing: its spawn
re-imports the parent's main script); the robot server's tick only writes the target width to
shared memory and reads the measured one from it.

The child commands the newest target once the previous command ended (closing is a grasp with
wide tolerances, so it ends wherever an object stops the fingers), reads the width every
`period` seconds, and ends with its parent.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from multiprocessing import shared_memory

import numpy as np

log = logging.getLogger("robostack.hardware.franka")

TARGET, WIDTH, STOP = range(3)  # the shared float64 slots


class GripperProcess:
    """A Franka Hand at `host`: `target` (m) to command, `width` (m) as last measured."""

    def __init__(self, host: str, speed: float = 0.1, force: float = 20.0, period: float = 0.02,
                 timeout: float = 30.0):
        self._memory = shared_memory.SharedMemory(create=True, size=3 * 8)
        self._slots = np.ndarray((3,), dtype=np.float64, buffer=self._memory.buf)
        self._slots[:] = (-1.0, 0.0, 0.0)
        self._process = subprocess.Popen(
            [sys.executable, "-m", "hardware.franka_gripper", host, str(speed), str(force), str(period),
             self._memory.name, str(os.getpid())],
            stdout=subprocess.PIPE, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
        line = _read_line(self._process, timeout)
        if not line.startswith("OK "):
            self.close()
            raise ConnectionError(f"no Franka Hand at {host}: {line.strip() or 'no answer within %g s' % timeout}; "
                                  "a robot without one: start with --franka-gripper false")
        self.max_width = float(line.split()[1])

    @property
    def width(self) -> float:
        return float(self._slots[WIDTH])

    @property
    def target(self) -> float:
        return float(self._slots[TARGET])

    @target.setter
    def target(self, width: float) -> None:
        self._slots[TARGET] = width

    def close(self) -> None:
        if self._memory is None:
            return
        self._slots[STOP] = 1.0
        try:
            self._process.wait(timeout=3.0)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=3.0)
        del self._slots
        self._memory.close()
        try:
            self._memory.unlink()
        except FileNotFoundError:
            pass
        self._memory = None


def _read_line(process, timeout: float) -> str:
    import selectors

    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if selector.select(timeout):
            return process.stdout.readline()
    return ""


def main(host: str, speed: str, force: str, period: str, memory: str, parent: str) -> int:
    import franky

    attached = shared_memory.SharedMemory(name=memory)
    # Python < 3.13 registers an attached block with this process's resource tracker, which would
    # unlink it when this process ends: the parent owns it.
    from multiprocessing import resource_tracker

    resource_tracker.unregister(attached._name, "shared_memory")
    slots = np.ndarray((3,), dtype=np.float64, buffer=attached.buf)
    speed, force, period, parent = float(speed), float(force), float(period), int(parent)
    try:
        hand = franky.Gripper(host)
        slots[WIDTH] = sent = float(hand.width)
        slots[TARGET] = sent
        print(f"OK {float(hand.max_width) or 0.08}", flush=True)
    except Exception as error:  # franky's exceptions and any other: the parent names them
        print(f"ERROR {type(error).__name__}: {error}", flush=True)
        return 1
    pending = None
    while slots[STOP] == 0.0 and os.getppid() == parent:
        try:
            slots[WIDTH] = float(hand.width)
            if pending is not None and pending.wait(0.0):
                pending = None
            wanted = float(slots[TARGET])
            if pending is None and abs(wanted - sent) > 1e-3:
                if wanted < slots[WIDTH] - 1e-3:
                    pending = hand.grasp_async(wanted, speed, force, epsilon_inner=0.08, epsilon_outer=0.08)
                else:
                    pending = hand.move_async(wanted, speed)
                sent = wanted
        except Exception as error:
            log.warning("gripper: %s: %s", type(error).__name__, error)
            pending = None
        time.sleep(period)
    del slots
    attached.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
