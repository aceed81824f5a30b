"""A robot server started for a library user never outlives them: forgotten close(), a crash,
kill -9 of the user's process, or a `with` block."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCRIPT = """
import os, signal, sys
from robostack.env import make_env
env = make_env("reach")
print(env.connection.process.pid, flush=True)
env.reset(seed=0)
if sys.argv[1] == "kill-self":
    os.kill(os.getpid(), signal.SIGKILL)
if sys.argv[1] == "crash":
    raise RuntimeError("the user's script fails")
# "forget": exit without env.close()
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its init) counts as gone
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split()[2] != "Z"


def wait_gone(pid: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("how", ["forget", "crash", "kill-self"])
def test_the_robot_server_dies_with_its_user(how):
    user = subprocess.run([sys.executable, "-c", SCRIPT, how], capture_output=True, text=True,
                          timeout=120, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"))
    server = int(user.stdout.split()[0])
    assert user.returncode == {"forget": 0, "crash": 1, "kill-self": -signal.SIGKILL}[how], user.stderr
    try:
        assert wait_gone(server), f"robot server {server} outlived its user ({how})"
    finally:
        if alive(server):
            os.kill(server, signal.SIGKILL)


def test_env_as_a_context_manager_stops_its_server():
    from robostack.env import make_env

    with make_env("reach") as env:
        process = env.connection.process
        env.reset(seed=0)
    assert process.poll() is not None
