"""Who may move the arm (issue 11): the lease (robostack/robot/lease.py, docs/leases.md), over
the robot server's real sockets on loopback, the server in its own process in real time.

One client at a time holds the lease; without it a client reads (hello, state, stats) and asks
for it (acquire), nothing else; it expires `peer_timeout` s after its holder's last request,
which stops the arm; the admin socket stops the server without it. Every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pytest

from robostack import transport
from robostack.robot.client import ZmqConnection
from robostack.robot.lease import admin_endpoint_for

STARTUP_TIMEOUT = 60.0  # s
REPLY_TIMEOUT = 5.0  # s
LEASE = 0.5  # s, the server's peer_timeout here (the real-time default)
SLACK = 1.0  # s of margin for a loaded 2-core machine on waits that should take ~LEASE
ZERO_VELOCITY = 0.01  # rad/s, every joint slower than this counts as stopped
ZERO_VELOCITY_BOUND = 1.0  # s from the last heartbeat to zero velocity (issue 11: <= 1 s)
MOTION_KINDS = ("step", "command", "reset", "arm", "disarm", "gains", "heartbeat", "release",
                "shutdown")


class Server:
    """`python -m robostack.robot.server` in real time on free loopback ports."""

    def __init__(self, *args: str, clock: str = "realtime"):
        self.command = transport.free_tcp_endpoint()
        self.state = transport.free_tcp_endpoint()
        self.admin = admin_endpoint_for(self.command)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "robostack.robot.server", "--task", "reach", "--clock", clock,
             "--command-endpoint", self.command, "--state-endpoint", self.state,
             "--peer-timeout", str(LEASE), "--log-level", "ERROR", *args],
            env=dict(os.environ, OMP_NUM_THREADS="1"))
        probe = self.reader()
        try:
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while True:
                try:
                    probe.request("hello", timeout=1.0)
                    return
                except transport.PeerTimeout:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        self.stop()
                        raise AssertionError(f"server not up: exit code {self.process.poll()}")
        finally:
            probe.close()

    def reader(self) -> transport.RequestClient:
        return transport.RequestClient(self.command, source="test", timeout=REPLY_TIMEOUT)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


@pytest.fixture
def server():
    s = Server()
    yield s
    s.stop()


def refused(client, kind, meta=None, match=""):
    with pytest.raises(transport.RemoteError) as error:
        client.request(kind, meta or {})
    assert match in error.value.text, error.value.text
    return error.value.text


def test_acquire_renew_release_and_expiry(server):
    alice, bob = server.reader(), server.reader()
    try:
        granted = alice.request("acquire", {"holder": "alice"}).meta
        token = granted["lease"]
        assert isinstance(token, str) and len(token) == 32, granted
        assert granted["timeout"] == LEASE and granted["heartbeat_period"] == pytest.approx(LEASE / 5)
        # Held: another client is refused, naming the holder and the time left ...
        text = refused(bob, "acquire", {"holder": "bob"}, "the lease is held by 'alice' for ")
        assert 0.0 < float(text.split(" for ")[1].split(" s")[0]) <= LEASE, text
        # ... may read ...
        for kind in ("hello", "state", "stats"):
            assert bob.request(kind).kind == kind
        # ... and nothing else, told why and what to send.
        for kind in MOTION_KINDS:
            refused(bob, kind, {}, "held by 'alice'")
            refused(bob, kind, {"lease": "0" * 32}, "send 'acquire' first")
        refused(bob, "arm", {"lease": 7}, "meta 'lease' must be the token string")
        refused(alice, "break_lease", {"lease": token}, "admin socket only")
        # Renewed by its holder's requests, for well past the lease timeout.
        until = time.monotonic() + 3 * LEASE
        while time.monotonic() < until:
            assert alice.request("heartbeat", {"lease": token}).meta["counted"] is True
            time.sleep(LEASE / 5)
        refused(bob, "acquire", {"holder": "bob"}, "held by 'alice'")
        assert alice.request("acquire", {"holder": "alice", "lease": token}).meta["lease"] == token
        # Released: the next client gets it, with a token of its own; the old one is dead.
        assert alice.request("release", {"lease": token}).kind == "released"
        second = bob.request("acquire", {"holder": "bob"}).meta["lease"]
        assert second != token
        refused(alice, "arm", {"lease": token}, "held by 'bob'")
        # Expired: bob goes silent, and after the lease timeout alice may take it.
        silent = time.monotonic()
        while True:
            try:
                third = alice.request("acquire", {"holder": "alice"}).meta["lease"]
                break
            except transport.RemoteError as error:
                assert "held by 'bob'" in error.text, error.text
                assert time.monotonic() - silent < LEASE + SLACK, "bob's lease never expired"
                time.sleep(0.02)
        assert LEASE - 0.05 < time.monotonic() - silent, "expired before its timeout"
        refused(bob, "heartbeat", {"lease": second}, "held by 'alice'")
        assert third not in (token, second)
    finally:
        alice.close()
        bob.close()


CHILD = """
import sys, time
from robostack.robot.client import ZmqConnection
connection = ZmqConnection(sys.argv[1], holder="child")
connection.request("arm")
print("armed", flush=True)
time.sleep(600)
"""


def test_a_second_controller_is_refused_while_the_lease_is_held_and_served_after(server):
    first = ZmqConnection(server.command, timeout=REPLY_TIMEOUT, holder="first")
    second = ZmqConnection(server.command, timeout=REPLY_TIMEOUT, holder="second", lease_wait=0.0)
    try:
        assert first.request("arm").meta["mode"] == "armed"
        time.sleep(3 * LEASE)  # idle: the heartbeat thread keeps the lease (and the arm) alive
        with pytest.raises(transport.RemoteError, match="the lease is held by 'first'"):
            second.request("arm")
        assert second.request("state").meta["mode"] == "armed"  # reading needs no lease
        first.close()  # releases: a damped stop, and the lease is free
        assert second.request("state").meta["mode"] in ("stopping", "disarmed")
        assert second.request("arm").meta["mode"] == "armed"
    finally:
        first.close()
        second.close()
    # A holder that dies: its lease runs out, and a waiting client gets it then.
    child = subprocess.Popen([sys.executable, "-c", CHILD, server.command], stdout=subprocess.PIPE,
                             text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    third = ZmqConnection(server.command, timeout=REPLY_TIMEOUT, holder="third", lease_wait=0.0)
    try:
        assert child.stdout.readline().strip() == "armed"
        time.sleep(3 * LEASE)
        with pytest.raises(transport.RemoteError, match="held by 'child'"):
            third.request("arm")  # alive (heartbeating): refused
        child.kill()
        child.wait(10)
        died = time.monotonic()
        third.lease_wait = LEASE + SLACK + 1.0
        assert third.request("arm").meta["mode"] == "armed"
        assert time.monotonic() - died < LEASE + SLACK + 1.0
    finally:
        third.close()
        if child.poll() is None:
            child.kill()
            child.wait(10)


def test_the_admin_socket_disarms_breaks_the_lease_and_shuts_down_without_one(server):
    path = server.admin[len("ipc://"):]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, oct(os.stat(path).st_mode)
    holder = ZmqConnection(server.command, timeout=REPLY_TIMEOUT, holder="holder")
    admin = transport.RequestClient(server.admin, source="test", timeout=REPLY_TIMEOUT)
    try:
        assert holder.request("arm").meta["mode"] == "armed"
        assert admin.request("state").meta["mode"] == "armed"
        refused(admin, "command", {}, "not served on the admin socket")
        refused(admin, "arm", {}, "not served on the admin socket")
        assert admin.request("disarm").meta["mode"] in ("stopping", "disarmed")
        # Broken: the holder's next request takes a new lease (the old token is refused) and it
        # must arm again; the admin's breaking names whose lease it was.
        old = holder.lease
        assert admin.request("break_lease").meta["broken"] == "holder"
        assert holder.request("arm").meta["mode"] == "armed" and holder.lease != old
        assert admin.request("shutdown").kind == "bye"
        assert server.process.wait(10) == 0
        assert not os.path.exists(path)  # the server removed its socket file
    finally:
        admin.close()
        holder.close()


STOPPED_CHILD = """
import sys, time
import numpy as np
from robostack import transport
from robostack.robot.client import ZmqConnection
connection = ZmqConnection(sys.argv[1], holder="stopped-child")
state = connection.request("arm")
home = np.array(state.arrays["tcp_position"])
q = state.arrays["tcp_quaternion"]
print("armed", flush=True)
t0 = time.monotonic()
while True:  # back and forth along x, 6 cm at 0.5 Hz: the arm is moving when the child stops
    offset = 0.03 * np.sin(np.pi * (time.monotonic() - t0))
    try:
        connection.request("command", {"deadline": 1.0},
                           {"target_position": home + [offset, 0, 0], "target_quaternion": q})
    except transport.RemoteError as error:
        print("refused:", error.text, flush=True)
        break
    time.sleep(0.02)
state = connection.request("arm")
print("rearmed:", state.meta["mode"], flush=True)
reply = connection.request("command", {}, {"target_position": home, "target_quaternion": q})
print("moving:", reply.meta["mode"], flush=True)
connection.close()
"""


def test_a_sigstopped_clients_lease_expires_the_arm_stops_within_1_s_and_it_must_rearm(server):
    subscriber = transport.Subscriber(server.state, "state")
    child = subprocess.Popen([sys.executable, "-c", STOPPED_CHILD, server.command],
                             stdout=subprocess.PIPE, text=True,
                             env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        assert child.stdout.readline().strip() == "armed"
        time.sleep(1.0)  # commanding, moving
        moving = subscriber.latest(2.0)
        assert moving.meta["mode"] == "tracking", moving.meta
        child.send_signal(signal.SIGSTOP)  # no more commands, no more heartbeats
        stopped_at = time.monotonic()
        stream = []  # (stamp, largest joint speed, mode) from the state stream
        while time.monotonic() < stopped_at + 10.0:
            message = subscriber.latest(2.0)
            stream.append((message.stamp, float(np.abs(message.arrays["dq"]).max()), message.meta["mode"]))
            if message.meta["mode"] == "disarmed":
                break
        assert stream[-1][2] == "disarmed", stream[-5:]
        steps = [tuple(t) for t in message.meta["supervisor"]["transitions"]]
        stop = [t for t in steps if t[3] == "stopping"][-1]
        assert "silent for" in stop[4], stop
        # The supervisor's clock is the server's monotonic one, the same as ours (one host): the
        # last heartbeat (or command) it heard is the stop's time less the silence it states.
        last_heard = stop[1] - float(stop[4].split("silent for ")[1].split(" s")[0])
        assert last_heard <= stopped_at + 0.01
        still = next(t for t, speed, _ in stream if t > stop[1] and speed < ZERO_VELOCITY)
        disarmed = [t for t in steps if t[2] == "stopping" and t[3] == "disarmed"][-1]
        figure = still - last_heard
        print(f"lease {LEASE} s: last heartbeat -> stopping {stop[1] - last_heard:.3f} s, -> every "
              f"joint < {ZERO_VELOCITY} rad/s on the stream {figure:.3f} s, -> disarmed "
              f"{disarmed[1] - last_heard:.3f} s; speed at the stop "
              f"{max(s for t, s, _ in stream if t <= stop[1] + 0.02):.3f} rad/s")
        assert figure <= ZERO_VELOCITY_BOUND, f"{figure:.3f} s"
        assert disarmed[1] - last_heard <= ZERO_VELOCITY_BOUND, disarmed
        # Resumed: it cannot move the arm until it re-acquires (its connection does, by itself)
        # and re-arms.
        child.send_signal(signal.SIGCONT)
        line = child.stdout.readline()
        assert line.startswith("refused:") and "disarmed" in line and "'arm' or 'reset'" in line, line
        assert child.stdout.readline().strip() == "rearmed: armed"
        assert child.stdout.readline().strip() == "moving: tracking"
        assert child.wait(20) == 0
    finally:
        subscriber.close()
        if child.poll() is None:
            child.send_signal(signal.SIGCONT)
            child.kill()
            child.wait(10)


def test_in_lock_step_an_expired_lease_passes_to_the_next_client_which_finds_the_arm_disarmed():
    """Lock-step: physics waits for requests, so a silent holder moves nothing; its lease still
    expires (wall clock, --lockstep-lease-timeout) and the next holder starts disarmed."""
    server = Server("--lockstep-lease-timeout", "1.0", clock="lockstep")
    first = ZmqConnection(server.command, timeout=REPLY_TIMEOUT, holder="first", heartbeat=False,
                          lease_wait=0.0)
    second = ZmqConnection(server.command, timeout=REPLY_TIMEOUT, holder="second", lease_wait=0.0)
    try:
        start = first.request("reset", {"seed": 0}, timeout=30.0)
        assert start.meta["mode"] == "armed"
        step = {"target_position": start.arrays["tcp_position"],
                "target_quaternion": start.arrays["tcp_quaternion"]}
        assert first.request("step", {}, step).meta["mode"] in ("armed", "tracking")
        with pytest.raises(transport.RemoteError, match="held by 'first'"):
            second.request("arm")  # within the lease timeout
        time.sleep(1.0 + 0.3)  # first is silent past it
        assert second.request("disarm").kind == "state"  # takes the lease
        assert second.request("state").meta["mode"] in ("stopping", "disarmed")
        reasons = [t[4] for t in second.request("state").meta["supervisor"]["transitions"]]
        assert any("lease acquired by 'second'" in r for r in reasons), reasons
        with pytest.raises(transport.RemoteError, match="held by 'second'"):
            first.request("step", {}, step)  # its lease is gone, and the next holder has it
    finally:
        first.close()
        second.close()
        server.stop()
