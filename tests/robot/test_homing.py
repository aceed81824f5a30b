"""A real arm's reset is driven home tick by tick (issue 10: the move home ran as a blocking loop
inside the request, stalling the 1 kHz loop for up to 10 s, and a failed one raised out of it).

The arm is the MuJoCo mirror presented as a real arm (tests/robot/stand_in.py: no simulated
reset, so the server must drive it), served in real time in its own process. While it drives
home the server keeps ticking at its rate, publishing, and answering other clients; the reset is
answered when the arm is home, or with an error naming the problem when it cannot get there.

The test's client holds the lease (robostack/robot/lease.py); the reset goes out on a socket of
its own in a thread, carrying the same lease token: the token, not the socket, is the controller.
"""

from __future__ import annotations

import contextlib
import json
import math
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from controllers.franka import HOME_Q  # where the stand-in starts
from robostack import transport
from robostack.robot.client import ZmqConnection

REACHABLE_HOME = tuple(np.add(HOME_Q, [0.3, 0.15, -0.2, 0.25, 0.2, -0.2, 0.3]))
UNREACHABLE_HOME = (0.0, 0.75, 0.0, -2.05, 0.0, 2.1, math.pi / 4)  # tcp 4.5 cm inside the table
STARTUP_TIMEOUT = 60.0  # s
REPLY_TIMEOUT = 5.0  # s for the requests answered at once; replies take < 50 ms
# Ticks per second while homing, against while idle afterwards, on the same (loaded) machine.
RATE_KEPT = 0.8


@contextlib.contextmanager
def stand_in_server(home_q, home_timeout: float):
    command, state = transport.free_tcp_endpoint(), transport.free_tcp_endpoint()
    script = Path(__file__).with_name("stand_in.py")
    process = subprocess.Popen([sys.executable, str(script), command, state, json.dumps(list(home_q)),
                                str(home_timeout)])
    client = ZmqConnection(command, timeout=REPLY_TIMEOUT, holder="test")
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            try:
                client.request("hello", timeout=1.0)
                break
            except transport.PeerTimeout:
                assert process.poll() is None, f"server exited: {process.returncode}"
                assert time.monotonic() < deadline, f"server not up in {STARTUP_TIMEOUT} s"
        yield command, state, client
    finally:
        client.close()
        process.terminate()
        try:
            process.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5.0)


def reset_in_background(endpoint: str, owner: ZmqConnection) -> tuple[threading.Thread, dict]:
    """Send `reset` with `owner`'s lease from a client of its own, in a thread; the outcome lands
    in the dict."""
    outcome: dict = {}
    token = owner.lease or owner.acquire()

    def run():
        client = transport.RequestClient(endpoint, source="resetter", timeout=30.0)
        try:
            outcome["reply"] = client.request("reset", {"seed": 0, "lease": token})
        except transport.TransportError as error:
            outcome["error"] = error
        finally:
            client.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def watch_while(thread, client, home) -> list[tuple[str, float]]:
    """(mode, largest joint distance from home) from `state` requests while the thread runs."""
    seen = []
    limit = time.monotonic() + 30.0
    while thread.is_alive() and time.monotonic() < limit:
        state = client.request("state")  # answered at once, homing or not
        seen.append((state.meta["mode"], float(np.abs(state.arrays["q"] - home).max())))
        time.sleep(0.05)
    thread.join(timeout=5.0)
    return seen


def test_reset_drives_home_through_the_ticks_and_the_server_keeps_serving():
    with stand_in_server(REACHABLE_HOME, home_timeout=10.0) as (command, state_endpoint, client):
        subscriber = transport.Subscriber(state_endpoint, "state")
        try:
            subscriber.latest(2.0)
            client.request("stats", {"reset": True})
            started = time.monotonic()
            thread, outcome = reset_in_background(command, client)
            seen = watch_while(thread, client, np.array(REACHABLE_HOME))
            homing_seconds = time.monotonic() - started
            during = client.request("stats", {"reset": True}).meta["loop"]
            streamed = subscriber.latest(2.0)
        finally:
            subscriber.close()
        assert "reply" in outcome, outcome
        reply = outcome["reply"]
        assert reply.kind == "state" and reply.meta["mode"] == "armed", reply.meta
        assert np.abs(reply.arrays["q"] - np.array(REACHABLE_HOME)).max() < 0.01
        homing = [distance for mode, distance in seen if mode == "homing"]
        assert len(homing) >= 3, seen  # state requests were answered while it moved
        assert homing[0] > 0.1 and homing[-1] < homing[0], seen  # ... and it moved home
        assert streamed.meta["mode"] in ("homing", "armed")  # the stream went on
        time.sleep(1.0)
        idle = client.request("stats").meta["loop"]
        assert during["ticks"] > 0.5 * homing_seconds * 1000, during
        assert during["rate_hz"] > RATE_KEPT * idle["rate_hz"], (during, idle)


def test_an_unreachable_home_gets_an_error_reply_and_the_server_keeps_serving():
    with stand_in_server(UNREACHABLE_HOME, home_timeout=1.5) as (command, _, client):
        client.request("stats", {"reset": True})
        thread, outcome = reset_in_background(command, client)
        seen = watch_while(thread, client, np.array(UNREACHABLE_HOME))
        during = client.request("stats", {"reset": True}).meta["loop"]
        assert "error" in outcome, outcome
        text = str(outcome["error"])
        assert "home posture not reached within 1.5 s" in text and "joint" in text, text
        assert [mode for mode, _ in seen].count("homing") >= 3, seen
        # Afterwards: damped, still, saying why, and serving.
        time.sleep(0.5)
        state = client.request("state")
        # The supervisor: homing -> stopping (damped, saying why) -> disarmed once still.
        assert state.meta["mode"] == "disarmed", state.meta
        steps = [(t[2], t[3], t[4]) for t in state.meta["supervisor"]["transitions"]]
        assert any(s == "homing" and t == "stopping" and "homing failed" in r and
                   "home posture not reached" in r for s, t, r in steps), steps
        assert steps[-1][:2] == ("stopping", "disarmed"), steps
        assert np.linalg.norm(state.arrays["tcp_velocity"][:3]) < 0.01
        time.sleep(0.5)
        idle = client.request("stats").meta["loop"]
        assert during["rate_hz"] > RATE_KEPT * idle["rate_hz"], (during, idle)
        assert client.request("arm").meta["mode"] == "armed"


@pytest.mark.parametrize("request_kind", ["disarm", "reset"])
def test_a_request_that_changes_the_mode_ends_homing_and_answers_the_waiting_reset(request_kind):
    with stand_in_server(REACHABLE_HOME, home_timeout=10.0) as (command, _, client):
        thread, outcome = reset_in_background(command, client)
        deadline = time.monotonic() + 10.0
        while client.request("state").meta["mode"] != "homing":
            assert time.monotonic() < deadline, "never saw the arm homing"
        client.request(request_kind, timeout=30.0)
        thread.join(timeout=10.0)
        assert "error" in outcome and "homing aborted" in str(outcome["error"]), outcome
