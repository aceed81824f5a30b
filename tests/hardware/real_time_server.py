"""A real-time robot server subprocess for the end-to-end tests of a real arm's backend
(test_franka_end_to_end.py against franky-sim, test_ur_server.py against the fake of ur_rtde):
started, waited for until it answers `hello`, and stopped, killed if it will not stop."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path

from robostack import transport


def start(options: list[str], command: str, env: dict, log_path: Path | None = None, cwd=None,
          timeout: float = 60.0):
    """`robostack robot-server --clock realtime OPTIONS --command-endpoint COMMAND` in its own
    process; returns (process, a RequestClient on COMMAND, the hello reply's meta). Output goes
    to log_path (quoted when it does not come up) or, without one, to this process's."""
    log = open(log_path, "wb") if log_path else None
    server = subprocess.Popen([sys.executable, "-m", "robostack.cli", "robot-server", "--clock", "realtime",
                               "--command-endpoint", command, *options], env=env, cwd=cwd,
                              stdout=log, stderr=subprocess.STDOUT if log else None)
    if log:
        log.close()  # the child has its own handle
    probe = transport.RequestClient(command, source="test", timeout=1.0)
    deadline = time.monotonic() + timeout
    while True:
        try:
            return server, probe, probe.request("hello").meta
        except transport.PeerTimeout:
            if server.poll() is not None or time.monotonic() > deadline:
                probe.close()
                stop(server)
                output = Path(log_path).read_text(errors="replace")[-2000:] if log_path else ""
                raise AssertionError(f"robot server not up (exit {server.returncode}): {output}")


def stop(server: subprocess.Popen) -> None:
    """SIGTERM (the server's graceful stop), SIGKILL after 15 s."""
    if server.poll() is None:
        server.terminate()
    try:
        server.wait(15)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(10)


@contextlib.contextmanager
def on_franky_sim(options: list[str], env: dict):
    """franky-sim (tests/hardware/franky_sim_process.py) and `robot-server --backend franka
    OPTIONS` on it; yields (command endpoint, state endpoint, hello, probe client, the sim)."""
    from franky_sim_process import FrankySim

    sim = FrankySim()
    command, state = transport.free_tcp_endpoint(), transport.free_tcp_endpoint()
    try:
        server, probe, hello = start(["--backend", "franka", "--franka-host", sim.host, "--task", "reach",
                                      "--state-endpoint", state, "--log-level", "WARNING", *options],
                                     command, env)
    except BaseException:
        sim.close()
        raise
    try:
        yield command, state, hello, probe, sim
    finally:
        probe.close()
        stop(server)
        sim.close()
