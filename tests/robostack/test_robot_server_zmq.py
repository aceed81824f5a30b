"""The robot server as the product runs it: its own process (`python -m robostack.robot.server`),
real ZeroMQ sockets on loopback, the 1 kHz real-time clock.

Every wait here is bounded, and every server process is killed in fixture teardown, whatever
the test did. Control behaviour driven in-process lives in test_robot_server_control.py.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import subprocess
import sys
import time

import msgpack
import numpy as np
import pytest
import zmq

from robostack import transport
from robostack.env import RobotEnv
from robostack.robot.client import ZmqConnection

STARTUP_TIMEOUT = 60.0  # s; ~3 s on an idle machine (imports, numba cache, scene compile)
REPLY_TIMEOUT = 5.0  # s, per request; replies take < 50 ms, the margin is for a loaded machine
STREAM_TIMEOUT = 2.0  # s; the state stream publishes at 100 Hz


class ServerProcess:
    """`python -m robostack.robot.server` on free loopback ports, plus a client for it."""

    def __init__(self, *args: str):
        self.command_endpoint = transport.free_tcp_endpoint()
        self.state_endpoint = transport.free_tcp_endpoint()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "robostack.robot.server", "--task", "pick_cube",
             "--command-endpoint", self.command_endpoint, "--state-endpoint", self.state_endpoint,
             "--log-level", "ERROR", *args],
            env=dict(os.environ, OMP_NUM_THREADS="1"),
        )
        self.client = self.connect()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        try:
            while True:
                try:
                    self.client.request("hello", timeout=1.0)
                    break
                except transport.PeerTimeout:
                    assert self.process.poll() is None, f"server exited: {self.process.returncode}"
                    assert time.monotonic() < deadline, f"server not up in {STARTUP_TIMEOUT} s"
        except BaseException:
            self.kill()  # the caller never gets this object, so it cannot clean up
            raise

    def connect(self, **lease_options) -> ZmqConnection:
        """A controlling client: it takes the lease on its first request that needs it."""
        return ZmqConnection(self.command_endpoint, timeout=REPLY_TIMEOUT, holder="test",
                             **lease_options)

    def reader(self) -> transport.RequestClient:
        """A client without the lease (a dashboard): it may read hello, state and stats only."""
        return transport.RequestClient(self.command_endpoint, source="test", timeout=REPLY_TIMEOUT)

    def subscribe(self) -> transport.Subscriber:
        subscriber = transport.Subscriber(self.state_endpoint, "state")
        subscriber.latest(STREAM_TIMEOUT)  # connected and publishing (PUB drops before that)
        return subscriber

    def kill(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.terminate()  # SIGTERM: the server closes its sockets and exits
            try:
                self.process.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5.0)


@contextlib.contextmanager
def robot_server(*args: str):
    server = None
    try:
        server = ServerProcess(*args)
        yield server
    finally:
        if server is not None:
            server.kill()


@pytest.fixture(scope="module")
def realtime_server():
    # peer_timeout well above any gap between requests in the tests that share this server.
    with robot_server("--clock", "realtime", "--peer-timeout", "30") as server:
        yield server


@pytest.fixture
def armed(realtime_server):
    """The shared server, freshly reset (armed at home); the reset reply."""
    return realtime_server.client.request("reset", {"seed": 0}, timeout=30.0)


def command(client, reply, offset=(0.0, 0.0, 0.0), deadline=None, **arrays):
    """A Cartesian command `offset` (m) away from the pose in `reply` (a state message)."""
    meta = {"gripper": 0.08}
    if deadline is not None:
        meta["deadline"] = deadline
    body = {"target_position": np.asarray(reply.arrays["tcp_position"]) + offset,
            "target_quaternion": np.asarray(reply.arrays["tcp_quaternion"])}
    body.update(arrays)
    return client.request("command", meta, body)


# --- bad input ----------------------------------------------------------------------------

def raw_exchange(endpoint: str, frames: list) -> transport.Message:
    """Send `frames` as-is from a bare DEALER socket and decode the one reply (bounded wait)."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(endpoint)
        sock.send_multipart(frames)
        assert sock.poll(int(REPLY_TIMEOUT * 1000)), "no reply to a malformed request"
        return transport.decode(sock.recv_multipart())
    finally:
        sock.close()


@pytest.mark.parametrize("frames, expected", [
    ([b"\xc1\xc1 not msgpack", b"junk"], "not msgpack"),
    ([msgpack.packb([1, 2, 3])], "not a map"),
    ([msgpack.packb({"kind": "state"})], "no schema version"),
])
def test_malformed_frames_get_an_error_reply_and_server_keeps_serving(realtime_server, frames,
                                                                       expected):
    reply = raw_exchange(realtime_server.command_endpoint, frames)
    assert reply.kind == "error" and expected in reply.meta["error"], reply.meta
    assert reply.seq == -1  # unreadable request: answered, addressed to us alone
    assert realtime_server.client.request("state").kind == "state"


def test_wrong_schema_version_is_refused_naming_both_versions(realtime_server):
    frames = transport.encode(transport.Message("state", seq=7, source="test"))
    header = msgpack.unpackb(frames[0])
    header["v"] = transport.SCHEMA_VERSION + 41
    frames[0] = msgpack.packb(header)
    reply = raw_exchange(realtime_server.command_endpoint, [bytes(f) for f in frames])
    assert reply.kind == "error" and reply.seq == 7  # still paired with the request
    text = reply.meta["error"]
    assert f"v{transport.SCHEMA_VERSION + 41}" in text and f"v{transport.SCHEMA_VERSION}" in text
    # The same kind of request, well formed, from a bare socket too, is answered normally.
    good = transport.encode(transport.Message("state", seq=8, source="test"))
    reply = raw_exchange(realtime_server.command_endpoint, [bytes(f) for f in good])
    assert reply.kind == "state" and reply.seq == 8


@pytest.mark.parametrize("target, expected", [
    (np.array([0.45, np.nan, 0.3]), "non-finite value at index [1]"),
    (np.array([0.45, 0.0, 0.3, 1.0]), "expected shape (3,), got shape (4,)"),
])
def test_bad_action_is_refused_naming_the_problem_and_server_keeps_serving(realtime_server, armed,
                                                                           target, expected):
    client = realtime_server.client
    with pytest.raises(transport.RemoteError) as refused:
        command(client, armed, target_position=target)
    assert "position" in refused.value.text and expected in refused.value.text
    # The same client's next, valid command is accepted, and a second client is served too.
    assert command(client, armed, offset=(0.0, 0.0, 0.01)).kind == "ack"
    other = realtime_server.connect()
    try:
        assert other.request("state").meta["mode"] in ("armed", "tracking")
    finally:
        other.close()


def test_hello_for_another_task_is_refused_naming_both(realtime_server):
    with pytest.raises(transport.RemoteError) as refused:
        realtime_server.client.request("hello", {"task": "reach"})
    assert "'pick_cube'" in refused.value.text and "'reach'" in refused.value.text
    # The env client refuses to start against it the same way.
    with pytest.raises(transport.RemoteError, match="reach"):
        RobotEnv(ZmqConnection(realtime_server.command_endpoint, timeout=REPLY_TIMEOUT),
                 task="reach")


def test_unreachable_server_raises_within_the_timeout():
    endpoint = transport.free_tcp_endpoint()  # nothing listens here
    timeout = 0.5
    start = time.monotonic()
    with pytest.raises(transport.PeerTimeout) as error:
        RobotEnv(ZmqConnection(endpoint, timeout=timeout))
    elapsed = time.monotonic() - start
    assert elapsed < timeout + 1.0, f"took {elapsed:.2f} s, timeout {timeout} s"
    text = str(error.value)
    assert endpoint in text and "robot server" in text and "running" in text, text


# --- deadline: hold ---------------------------------------------------------------------------

# Measured on a loaded 2-core machine (load average 2.6): the arm, moving at ~0.12 m/s when the
# hold starts, brakes under the default 2000 N/m impedance with a peak excursion of 6.1-6.3 mm
# from the hold pose (the arm's momentum, not drift), then settles: 1 s after the hold began it
# is 0.11 mm from the hold pose and moved 0.5 mm peak-to-peak over the last 0.3 s.
HOLD_EXCURSION_BOUND = 0.012  # m, peak distance from the hold pose while braking
HOLD_DRIFT_BOUND = 0.002  # m, distance from the hold pose 1 s after the hold started
HOLD_SETTLED_BOUND = 0.002  # m, peak-to-peak motion over 0.7..1.0 s after the hold started
DEADLINE_TO_HOLD_TICKS = 2  # issue 11: a missed deadline holds within 2 control ticks


def missed_by(reason: str) -> float:
    """The lateness (s) a supervisor's "command deadline missed by X s" reason states."""
    match = re.search(r"deadline missed by ([0-9.]+) s", reason)
    assert match, reason
    return float(match.group(1))


def transitions(message) -> list[tuple]:
    """(seq, time, from, to, reason) of the supervisor's latest transitions in a state message."""
    return [tuple(t) for t in message.meta["supervisor"]["transitions"]]


def test_missed_deadline_holds_at_the_measured_pose(realtime_server):
    subscriber = realtime_server.subscribe()
    try:
        start = realtime_server.client.request("reset", {"seed": 0}, timeout=30.0)
        target_offset = np.array([0.04, 0.0, 0.0])
        deadline = 0.1  # s: the arm is still on its way (about 1 cm of 4) when it expires
        sent = time.monotonic()
        ack = command(realtime_server.client, start, target_offset, deadline=deadline)
        assert ack.meta["mode"] == "tracking"
        target = np.asarray(start.arrays["tcp_position"]) + target_offset
        hold = None
        positions = []  # (s since hold start, tcp position) from the passive stream
        wall_limit = time.monotonic() + 10.0  # 1.1 s of robot time; margin for a loaded machine
        while time.monotonic() < wall_limit:
            message = subscriber.latest(STREAM_TIMEOUT)
            mode, reason = message.meta["mode"], message.meta["supervisor"]["reason"]
            if hold is None:
                if mode == "tracking" or message.meta["command_seq"] != ack.meta["command_seq"]:
                    continue  # before the deadline, or published before our command
                assert mode == "armed" and message.meta["control"] == "hold", message.meta
                # The supervisor ticks with every control tick: the hold came on the first tick
                # past the deadline (wall clock; a tick is 1 ms).
                assert missed_by(reason) <= DEADLINE_TO_HOLD_TICKS * 0.001, reason
                last = [t for t in transitions(message) if t[3] == "armed"][-1]
                assert last[2] == "tracking" and last[4] == reason, last
                assert deadline <= time.monotonic() - sent < deadline + 1.0
                hold = message.meta["time"]
                hold_pose = np.array(message.arrays["reference_position"])
                # Held where the arm was at the hold tick. The first state message after it may
                # come a state period (10 ms) later, more on a loaded machine, and the arm, moving
                # ~0.1 m/s, covers ~1 mm in 10 ms (a CI run measured 1.1 mm); a hold at the start
                # or the target pose would be 10-30 mm off.
                assert np.linalg.norm(message.arrays["tcp_position"] - hold_pose) < 0.002
                assert np.linalg.norm(target - hold_pose) > 0.02  # the target was abandoned
            # The hold lasts, keeps reporting why, and its reference does not move.
            assert mode == "armed" and "deadline missed" in reason, message.meta
            np.testing.assert_allclose(message.arrays["reference_position"], hold_pose, atol=1e-9)
            positions.append((message.meta["time"] - hold, np.array(message.arrays["tcp_position"])))
            if positions[-1][0] >= 1.0:
                break
        assert hold is not None and positions[-1][0] >= 1.0, "did not observe 1 s of hold"
        times = np.array([t for t, _ in positions])
        xyz = np.array([p for _, p in positions])
        excursion = np.linalg.norm(xyz - hold_pose, axis=1)
        late = xyz[times >= 0.7]
        assert excursion.max() < HOLD_EXCURSION_BOUND, f"{excursion.max() * 1e3:.1f} mm"
        assert excursion[-1] < HOLD_DRIFT_BOUND, f"{excursion[-1] * 1e3:.2f} mm after 1 s"
        assert np.ptp(late, axis=0).max() < HOLD_SETTLED_BOUND, f"{np.ptp(late, axis=0)} m"
        # A `state` reply reports the hold and its reason as well.
        state = realtime_server.client.request("state")
        assert state.meta["mode"] == "armed" and "deadline missed" in state.meta["supervisor"]["reason"]
        # The next command ends the hold.
        assert command(realtime_server.client, state).meta["mode"] == "tracking"
    finally:
        subscriber.close()


@pytest.mark.parametrize("deadline", [1.5, 0.0, -1.0])
def test_a_deadline_outside_what_the_server_allows_is_refused(realtime_server, armed, deadline):
    with pytest.raises(transport.RemoteError) as refused:
        command(realtime_server.client, armed, deadline=deadline)
    assert "deadline" in refused.value.text, refused.value.text


# --- peer lost: damped stop, no resumption by itself ----------------------------------------------

PEER_TIMEOUT = 0.5  # s
STOP_BOUND = 1.0  # s from the peer's timeout to every joint still (issue 11: <= 1 s)


def test_lost_peer_stops_the_arm_until_it_is_explicitly_armed():
    with robot_server("--clock", "realtime", "--peer-timeout", str(PEER_TIMEOUT)) as server:
        subscriber = server.subscribe()
        controller = server.connect(heartbeat=False)  # the lease lives only on its requests
        try:
            start = controller.request("reset", {"seed": 0}, timeout=30.0)
            command(controller, start, offset=(0.03, 0.0, 0.0), deadline=1.0)  # moving, then silent
            start_lease = controller.lease
            silent_since = time.monotonic()  # from here on the controller sends nothing
            disarmed, seen = None, {}
            while disarmed is None and time.monotonic() < silent_since + 10.0:
                message = subscriber.latest(STREAM_TIMEOUT)
                # Each message repeats the latest 8 transitions: keep all seen, by number.
                seen.update((t[0], t) for t in transitions(message))
                if message.meta["mode"] == "disarmed":
                    disarmed = message
            assert disarmed is not None, "the arm never stopped"
            # The transitions, each with its reason: tracking/armed -> stopping -> disarmed.
            steps = [seen[k] for k in sorted(seen)]
            assert any(t[3] == "stopping" for t in steps), steps
            stop = next(t for t in steps if t[3] == "stopping")
            end = next(t for t in steps if t[2] == "stopping" and t[3] == "disarmed")
            assert "silent" in stop[4] and "damped stop" in stop[4], stop
            assert "stopped" in end[4] and "send 'arm' or 'reset'" in end[4], end
            waited = stop[1] - silent_since  # the supervisor's clock is the server's monotonic one
            assert PEER_TIMEOUT - 0.01 < waited < PEER_TIMEOUT + 0.5, f"{waited:.3f} s"
            assert end[1] - stop[1] < STOP_BOUND, f"damped stop took {end[1] - stop[1]:.3f} s"
            print(f"peer_timeout {PEER_TIMEOUT} s: silent -> stopping {waited:.3f} s, "
                  f"stopping -> disarmed (still) {end[1] - stop[1]:.3f} s")

            # A client (re)connecting takes the expired lease, and is refused motion all the
            # same: it has to arm explicitly.
            client = server.connect()
            try:
                with pytest.raises(transport.RemoteError) as refused:
                    command(client, disarmed, offset=(0.0, 0.0, 0.02))
                assert "disarmed" in refused.value.text
                assert "'arm' or 'reset'" in refused.value.text
                # ... and the arm stays disarmed (0.2 s of stream later), still saying why.
                t_end = time.monotonic() + 0.2
                while time.monotonic() < t_end:
                    message = subscriber.latest(STREAM_TIMEOUT)
                    assert message.meta["mode"] == "disarmed" and message.meta["control"] == "damped"
                    assert message.meta["supervisor"]["reason"] == end[4]
                speed = np.linalg.norm(message.arrays["tcp_velocity"][:3])
                assert speed < 0.01, f"stopped arm moves at {speed:.3f} m/s"

                assert client.request("arm").meta["mode"] == "armed"
                reply = command(client, message, offset=(0.0, 0.0, 0.02))
                assert reply.kind == "ack" and reply.meta["mode"] == "tracking"
                # The silent controller's lease is gone: it may not move the arm either.
                with pytest.raises(transport.RemoteError, match="the lease is held by 'test'"):
                    controller.client.request("command", {"lease": start_lease}, {})
            finally:
                client.close()
        finally:
            controller.close()
            subscriber.close()


def test_a_state_poller_does_not_keep_a_silent_controllers_arm_armed():
    with robot_server("--clock", "realtime", "--peer-timeout", str(PEER_TIMEOUT)) as server:
        controller, poller = server.connect(heartbeat=False), server.reader()
        try:
            controller.request("reset", {"seed": 0}, timeout=30.0)  # the controller: the one that armed
            # Its heartbeats keep the arm armed for well past peer_timeout ...
            until = time.monotonic() + 3 * PEER_TIMEOUT
            while time.monotonic() < until:
                assert controller.request("heartbeat").meta == {"counted": True, "mode": "armed"}
                assert poller.request("state").meta["mode"] == "armed"
                time.sleep(0.05)
            # ... while another peer's requests count for nothing: without the lease its
            # heartbeat is refused, it polls, the controller is silent, and the arm stops after
            # peer_timeout all the same.
            with pytest.raises(transport.RemoteError, match="held by 'test'.*send 'acquire' first"):
                poller.request("heartbeat")
            silent_since, mode = time.monotonic(), "armed"
            while mode == "armed" and time.monotonic() < silent_since + 10.0:
                mode = poller.request("state").meta["mode"]
                time.sleep(0.01)
            assert mode in ("stopping", "disarmed"), mode
            assert time.monotonic() - silent_since < PEER_TIMEOUT + 1.0
            # Nor may the poller move the arm, or arm it: it has to take the lease first.
            state = poller.request("state")
            for kind in ("command", "arm", "step", "reset", "gains", "disarm", "shutdown"):
                with pytest.raises(transport.RemoteError, match="send 'acquire' first"):
                    poller.request(kind)
            with pytest.raises(transport.RemoteError, match="send 'acquire' first"):
                command(poller, state)
        finally:
            controller.close()
            poller.close()


def test_arming_soft_starts_the_stiffness_and_motion_needs_arming():
    with robot_server("--clock", "realtime", "--peer-timeout", "30") as server:
        client = server.client
        state = client.request("state")
        assert state.meta["mode"] == "disarmed"  # a server starts disarmed: no motion
        with pytest.raises(transport.RemoteError) as refused:
            command(client, state)
        assert "disarmed" in refused.value.text and "send 'arm' or 'reset'" in refused.value.text
        subscriber = server.subscribe()
        try:
            armed = client.request("arm")
            assert armed.meta["mode"] == "armed" and armed.meta["stiffness_scale"] < 0.1
            assert "stiffness ramping up over 0.5 s" in armed.meta["supervisor"]["reason"]
            ramp = []  # (time, scale) from the stream
            while len(ramp) < 2 or ramp[-1][1] < 1.0:
                message = subscriber.latest(STREAM_TIMEOUT)
                ramp.append((message.meta["time"], message.meta["stiffness_scale"]))
                assert len(ramp) < 500, ramp
            scales = np.array([v for _, v in ramp])
            assert (np.diff(scales) >= 0).all(), scales  # rises, never jumps back
            assert ((scales > 0.2) & (scales < 0.8)).sum() >= 5, scales  # visibly ramps, ~0.5 s
            assert ramp[-1][0] - ramp[0][0] >= 0.3, ramp
        finally:
            subscriber.close()


# --- loop statistics ------------------------------------------------------------------------------

def test_stats_report_the_loop_and_restart_their_window_on_request(realtime_server):
    client = realtime_server.client
    first = client.request("stats", {"reset": True}).meta["loop"]
    assert first["ticks"] > 0
    time.sleep(0.5)
    loop = client.request("stats").meta["loop"]
    # A fresh window: ~500 ticks, not everything since start-up. Loose: a starved loop skips
    # ticks when it falls 50 ms behind.
    # The percentiles may come from the loop's once-a-second summary, computed up to 1 s
    # before the (fresh) counters: then they cover fewer ticks, and say how old they are.
    assert 100 < loop["ticks"] < 5000 and 0 < loop["window_ticks"] <= loop["ticks"], loop
    assert loop.get("age_s", 0.0) <= 3.0, loop  # once a second, late on a loaded machine
    assert 0.0 <= loop["overrun_p50_ms"] <= loop["overrun_p99_ms"] <= loop["overrun_max_ms"]
    assert 0.0 < loop["cpu_p50_ms"] <= loop["cpu_p99_ms"] <= loop["cpu_max_ms"]
    # The stream carries the loop summary once a second, on one state message.
    subscriber = realtime_server.subscribe()
    try:
        limit = time.monotonic() + 5.0
        while time.monotonic() < limit:
            summary = subscriber.latest(STREAM_TIMEOUT).meta.get("loop")
            if summary is not None:
                break
        assert summary is not None and summary["ticks"] > 0, "no loop summary on the stream"
    finally:
        subscriber.close()


# --- gains: only within the ceilings the server was started with (issue 11 item 3) ------------------

BOX_TOLERANCE = 0.005  # m, how far the tcp may sit outside the workspace box while pressing its edge


REFUSED_GAINS = [
    ({"translational_stiffness": 3000.0}, "translational_stiffness = 3000 N/m is above its ceiling 2500"),
    ({"translational_clip": math.inf}, "translational_clip"),  # no clip: an unbounded spring
    ({"translational_clip": 0.2}, "translational_clip = 0.2 m is above its ceiling 0.05"),
    ({"torque_limits": [1e6] * 7}, "torque_limits = 1e+06 Nm is above its ceiling"),
    ({"max_torque_rate": 1e9}, "max_torque_rate = 1e+09 Nm/s is above its ceiling 1000"),
    ({"translational_stiffness": 2500.0, "translational_clip": 0.05},  # each fits, the product not
     "max_clip_force"),
    ({"rotational_stiffness": -1.0}, "negative"),
    ({"no_such_gain": 1.0}, "unknown gain"),
]


def test_gains_beyond_the_ceilings_are_refused_naming_the_gain_and_the_arm_stays_in_the_box():
    # One server for every refusal (each was its own server and 2 s of pressing: 25 s of CI).
    with robot_server("--clock", "realtime", "--peer-timeout", "30",
                      "--gain-ceilings", "translational_stiffness=2500") as server:
        client = server.client
        tc = client.request("hello").meta["task_config"]
        lo, hi = np.array(tc["workspace_min"]), np.array(tc["workspace_max"])
        start = client.request("reset", {"seed": 0}, timeout=30.0)
        before = client.request("stats").meta["gains"]
        for gains, named in REFUSED_GAINS:
            with pytest.raises(transport.RemoteError) as refused:
                client.request("gains", gains)
            assert named in str(refused.value), (gains, str(refused.value))
        assert client.request("stats").meta["gains"] == before  # a refusal changes nothing
        # Within the ceiling it is accepted: the refusal is the ceiling's, not a broken handler.
        assert client.request("gains", {"translational_stiffness": 2500.0}).kind == "state"
        # Press toward a point far outside the box (+x and down): the target is clipped to the box
        # edge, the gains stayed bounded, so the tcp stays within the box up to the tolerance.
        subscriber = server.subscribe()
        try:
            reply, worst, pressed = start, 0.0, None
            wall_limit = time.monotonic() + 20.0  # 2 s of pressing; margin for a loaded machine
            while time.monotonic() < wall_limit:
                far = np.asarray(reply.arrays["tcp_position"]) + [1.0, 0.0, -1.0]
                command(client, reply, far - np.asarray(reply.arrays["tcp_position"]))
                reply = subscriber.latest(STREAM_TIMEOUT)
                tcp = np.asarray(reply.arrays["tcp_position"])
                worst = max(worst, float(np.max(np.maximum(lo - tcp, tcp - hi))))
                pressed = pressed if pressed is not None else reply.meta["time"]
                if reply.meta["time"] - pressed >= 2.0:
                    break
            assert reply.meta["time"] - pressed >= 2.0, "did not observe 2 s of pressing"
            assert np.asarray(reply.arrays["tcp_position"])[0] > hi[0] - 0.05  # it did press the edge
            assert worst < BOX_TOLERANCE, f"tcp {worst * 1e3:.1f} mm outside the workspace box"
        finally:
            subscriber.close()


def test_a_gain_ceiling_above_the_arms_rating_is_a_usage_error_at_start():
    result = subprocess.run(
        [sys.executable, "-m", "robostack.robot.server", "--gain-ceilings", "translational_clip=1"],
        env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "--gain-ceilings: translational_clip=1 m is above the arm's rated 0.05 m" in result.stderr
