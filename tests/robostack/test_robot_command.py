"""`robostack robot state|arm|disarm|home|gains|stop|fault-reset` (issue 16, item 4), run as the
operator runs it: the real CLI as subprocesses against real `robostack robot-server` subprocesses
(the MuJoCo mirror, real time on unix sockets, lock-step on loopback tcp), and against a robot
server whose arm reports faults the test injects.

The faulty server is this file run as a script (the mirror behind a stand-in that declares the
`faults` and `fault_recovery` capabilities a real arm has, as in tests/robot/test_fault_recovery.py
and docs/fault_injection.md); SIGUSR1 injects a latching fault that recovery clears
(joint_velocity_violation), SIGUSR2 presses / releases an emergency stop that no recovery clears
while pressed:

    python tests/robostack/test_robot_command.py COMMAND_ENDPOINT STATE_ENDPOINT
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from robostack import processes, transport

LATCHING = "joint_velocity_violation"
ESTOP = "user_stop_engaged"
HERE = Path(__file__).resolve()


# --- the servers --------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, argv, command, state):
        self.command, self.state = command, state
        self.process = subprocess.Popen(argv, env=processes.child_environment(OMP_NUM_THREADS="1"),
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def wait(self, timeout=90.0) -> "Server":
        deadline = time.monotonic() + timeout
        with transport.RequestClient(self.command, "test", timeout=1.0) as client:
            while True:
                try:
                    client.request("hello")
                    return self
                except transport.PeerTimeout:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"server did not come up: {self.process.stderr.read()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def robot_server(clock: str, tcp: bool) -> Server:
    if tcp:
        command, state = (f"tcp://127.0.0.1:{free_port()}" for _ in range(2))
    else:
        name = uuid.uuid4().hex[:8]
        command, state = (transport.ipc_endpoint(f"robotcmd-{name}-{k}") for k in ("c", "s"))
    argv = [sys.executable, "-m", "robostack.cli", "robot-server", "--task", "reach", "--clock", clock,
            "--command-endpoint", command, "--state-endpoint", state, "--log-level", "WARNING"]
    if clock == "realtime":
        # These tests are about the lease rules, not heartbeat timing (tests/robot/test_leases.py
        # has that): at the default 0.5 s a 2-core CI machine, busy starting two CLI processes,
        # once stalled `robot arm`'s heartbeat past it and the lease lapsed mid-test.
        argv += ["--peer-timeout", "2.0"]
    return Server(argv, command, state)


@pytest.fixture(scope="module")
def servers():
    """All three started at once (each spends seconds importing), stopped at the end."""
    name = uuid.uuid4().hex[:8]
    faulty_command, faulty_state = (transport.ipc_endpoint(f"robotcmd-{name}-f{k}") for k in ("c", "s"))
    started = {"realtime": robot_server("realtime", tcp=False),
               "lockstep": robot_server("lockstep", tcp=True),
               "faulty": Server([sys.executable, str(HERE), faulty_command, faulty_state],
                                faulty_command, faulty_state)}
    try:
        yield {k: s.wait() for k, s in started.items()}
    finally:
        for s in started.values():
            s.stop()


def start_robot(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "robostack.cli", "robot", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=processes.child_environment(OMP_NUM_THREADS="1"))


def robots(*commands, timeout=30.0) -> list[subprocess.CompletedProcess]:
    """`robostack robot ARGS` for each ARGS, as subprocesses running at once (each spends most
    of its second starting Python)."""
    running = [start_robot(*args) for args in commands]
    done = []
    try:
        for process, args in zip(running, commands):
            out, err = process.communicate(timeout=timeout)
            done.append(subprocess.CompletedProcess(args, process.returncode, out, err))
    finally:
        for process in running:
            if process.poll() is None:
                process.kill()
                process.wait()
    return done


def robot(*args, timeout=30.0) -> subprocess.CompletedProcess:
    """`robostack robot ARGS` as a subprocess."""
    return robots(args, timeout=timeout)[0]


def state_json(server: Server) -> dict:
    done = robot("state", "--server", server.command, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def wait_for(predicate, timeout=10.0, what=""):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.1)
    return value


# --- the tests ------------------------------------------------------------------------------------

def test_state_shows_every_named_field_with_plausible_values(servers):
    rt = servers["realtime"]
    done, as_json, watch = robots(("state", "--server", rt.command), ("state", "--server", rt.command, "--json"),
                                  ("state", "--server", rt.command, "--watch", "--json", "--count", 2, "--rate", 5))
    assert done.returncode == 0 and as_json.returncode == 0, done.stderr + as_json.stderr
    text = done.stdout
    for words in ("mode          disarmed", "law damped", "supervisor    disarmed", "started disarmed",
                  "lease         free", "frame base = panda_link0", "quaternion", "(w, x, y, z)", "rpy", "deg",
                  "joints q", "to limit", "wrench        force", " N ", "Nm", "gripper       width",
                  " mm", "loop ", " Hz", "overrun     p50", "p99", "max", "cpu ", "gains         stiffness",
                  "clamps/holds"):
        assert words in text, f"{words!r} missing from:\n{text}"
    s = json.loads(as_json.stdout)
    assert s["mode"] == "disarmed" and s["control"] == "damped" and not s["energized"]
    assert s["clock"] == "realtime" and s["tcp"]["frame"] == "base"
    x, y, z = s["tcp"]["position_m"]
    assert 0.2 < x < 0.8 and abs(y) < 0.3 and 0.05 < z < 0.8, s["tcp"]
    assert abs(math.hypot(*s["tcp"]["quaternion_wxyz"]) - 1.0) < 1e-3
    assert abs(abs(s["tcp"]["rpy_deg"][0]) - 180.0) < 5.0  # the gripper points down: roll ~180 deg
    assert len(s["joints"]["q_deg"]) == 7 and all(0.0 < d < 360.0 for d in s["joints"]["to_limit_deg"])
    assert 0.0 <= s["gripper"]["width_mm"] <= 81.0
    assert all(abs(f) < 5.0 for f in s["external_wrench"]["force_n"])  # in free space
    loop = s["loop"]
    # Plausible, not fast: CI's 2 cores are shared with other tests' processes (seen there:
    # 435 ticks at 460 Hz with one 512 ms stall); the loop's timing has its own benchmark.
    assert loop["ticks"] > 100 and 100 < loop["rate_hz"] < 1100, loop
    assert 0.0 <= loop["overrun_p50_ms"] <= loop["overrun_p99_ms"] <= loop["overrun_max_ms"]
    assert s["lease"] == {"held": False, "holder": "", "seconds_left": 0.0, "timeout_s": 2.0}
    # --watch refreshes: --count readings, one JSON object each
    readings = [json.loads(line) for line in watch.stdout.splitlines()]
    assert watch.returncode == 0 and len(readings) == 2 and readings[1]["time_s"] > readings[0]["time_s"]


def test_arm_holds_while_it_runs_and_state_shows_it_armed_by_its_holder(servers):
    rt = servers["realtime"]
    arm = start_robot("arm", "--server", rt.command, "--hold", 30, "--rate", 4)
    try:
        s = wait_for(lambda: (lambda s: s if s["mode"] == "armed" else None)(state_json(rt)), 20.0, "armed")
        assert s["energized"] and s["control"] == "hold" and "armed from disarmed" in s["supervisor"]["reason"]
        assert s["lease"]["held"] and s["lease"]["holder"].startswith("robostack robot arm")
        # Another client's changes are refused while it holds the lease, naming it and the way out.
        gains, disarm = robots(("gains", "translational_stiffness=900", "--server", rt.command, "--lease-wait", 0),
                               ("disarm", "--server", rt.command, "--lease-wait", 0))
        assert gains.returncode == 1 and "the lease is held by 'robostack robot arm" in gains.stderr
        assert "stop --break-lease" in gains.stderr
        assert disarm.returncode == 1 and "robostack robot stop" in disarm.stderr
        # stop works whoever holds the lease (the admin socket); the arm session sees it and ends.
        start = time.monotonic()
        done = robot("stop", "--server", rt.command)
        assert done.returncode == 0, done.stderr
        assert "stopped on the admin socket" in done.stdout and "disarmed" in done.stdout
        # stop leaves the lease alone (the training-actor test below pins that); the arm session
        # may already have seen the disarm and released it by the time stop reads the state.
        assert ("lease still held by 'robostack robot arm" in done.stdout
                or "lease free" in done.stdout), done.stdout
        out, err = arm.communicate(timeout=15)
        assert arm.returncode == 1 and "no longer holding: the arm is" in err, (out, err)
        assert time.monotonic() - start < 15
        assert out.startswith("armed: armed from disarmed") and "lease released" in out
    finally:
        if arm.poll() is None:
            arm.kill()
            arm.wait()
    s = state_json(rt)
    assert s["mode"] == "disarmed" and not s["lease"]["held"]


def test_stop_while_another_client_commands_the_arm_and_break_its_lease(servers):
    from robostack.robot.client import ZmqConnection

    rt = servers["realtime"]
    with ZmqConnection(rt.command, holder="a training actor", timeout=2.0) as actor:
        actor.request("reset")
        s = wait_for(lambda: (lambda s: s if s["mode"] == "armed" else None)(state_json(rt)), 10.0, "armed")
        target = [s["tcp"]["position_m"][0], s["tcp"]["position_m"][1], s["tcp"]["position_m"][2] - 0.02]
        import numpy as np
        command = {"target_position": np.array(target), "target_quaternion": np.array(s["tcp"]["quaternion_wxyz"])}
        actor.request("command", {"deadline": 1.0}, command)
        done = robot("stop", "--server", rt.command)
        assert done.returncode == 0, done.stderr
        assert "lease still held by 'a training actor'" in done.stdout
        with pytest.raises(transport.RemoteError, match="disarmed|stopping"):
            actor.request("command", {"deadline": 1.0}, command)  # stopped: motion needs an arm
        done = robot("stop", "--server", rt.command, "--break-lease", "--json")
        record = json.loads(done.stdout)
        assert done.returncode == 0 and record["broken"] == "a training actor", record
        assert record["mode"] == "disarmed", record
    assert not state_json(rt)["lease"]["held"]


def test_gains_change_is_visible_in_state_and_gains_alone_lists_them(servers):
    rt = servers["realtime"]
    done = robot("gains", "translational_stiffness=800", "rotational_clip=0.04,0.04,0.03", "--server", rt.command)
    assert done.returncode == 0, done.stderr
    s = state_json(rt)
    assert s["gains"]["translational_stiffness"] == 800.0  # as set: one number for every axis
    assert s["gains"]["rotational_clip"] == [0.04, 0.04, 0.03]
    assert s["damping_in_force"]["translational_damping"][0] == pytest.approx(2 * math.sqrt(800))
    block, listing, above, usage = robots(
        ("state", "--server", rt.command), ("gains", "--server", rt.command),
        ("gains", "translational_stiffness=5000", "--server", rt.command),  # above the ceiling
        ("gains", "stiffness=1", "--server", rt.command))  # a usage error, before any request
    assert "stiffness 800.0 N/m" in block.stdout
    assert "translational_stiffness" in listing.stdout and "800" in listing.stdout and "3000" in listing.stdout
    assert above.returncode == 1 and "3000" in above.stderr
    assert usage.returncode == 2 and "valid: translational_stiffness" in usage.stderr
    assert robot("gains", "translational_stiffness=2000", "rotational_clip=0.05", "--server",
                 rt.command).returncode == 0


def test_lockstep_home_teleports_or_drives_and_fault_reset_without_a_fault(servers):
    ls = servers["lockstep"]
    as_json, block = robots(("state", "--server", ls.command, "--json"), ("state", "--server", ls.command))
    s = json.loads(as_json.stdout)
    assert s["clock"] == "lockstep" and s["mode"] == "disarmed" and s["loop"].get("ticks", 0) == 0
    assert "no real-time loop statistics" in block.stdout
    done = robot("home", "--server", ls.command)
    assert done.returncode == 0 and "teleported home (mirror)" in done.stdout, done.stderr
    home = state_json(ls)
    assert home["mode"] == "stopping"  # the lease released, the damped stop waits for physics
    done = robot("home", "--drive", "--server", ls.command)
    assert done.returncode == 0 and "driven home by the joint impedance law" in done.stdout, done.stderr
    driven = state_json(ls)
    # Both at home: each reset draws its own home_joint_noise, and homing stops within 0.01 rad.
    assert max(abs(a - b) for a, b in zip(driven["joints"]["q_deg"], home["joints"]["q_deg"])) < 3.0
    assert [t["to"] for t in driven["supervisor"]["transitions"][-3:]] == ["homing", "armed", "stopping"]
    done = robot("fault-reset", "--server", ls.command)
    assert done.returncode == 0 and "no fault to reset" in done.stdout


def test_fault_reset_clears_a_latched_fault_and_fails_while_its_cause_stays(servers):
    # The real-time mirror's tests are done: its 1 kHz loop would only take CPU time from the
    # CLI processes here (two spinning loops and the CLI on 2 cores doubled this test's time).
    servers["realtime"].stop()
    fs = servers["faulty"]
    pid = fs.process.pid
    arm = start_robot("arm", "--server", fs.command, "--hold", 30)
    try:
        wait_for(lambda: state_json(fs)["mode"] == "armed", 20.0, "armed")
        os.kill(pid, signal.SIGUSR1)  # the arm reports a latching fault
        out, err = arm.communicate(timeout=15)
        assert arm.returncode == 1 and "the arm is fault" in err, (out, err)
    finally:
        if arm.poll() is None:
            arm.kill()
            arm.wait()
    as_json, block = robots(("state", "--server", fs.command, "--json"), ("state", "--server", fs.command))
    s = json.loads(as_json.stdout)
    assert s["mode"] == "fault" and s["supervisor"]["latched"] and s["supervisor"]["faults"] == [LATCHING]
    assert "not a transient fault: latched" in s["supervisor"]["reason"]
    assert "faults joint_velocity_violation; latched yes" in block.stdout
    done = robot("fault-reset", "--server", fs.command)
    assert done.returncode == 0 and "fault cleared: disarmed" in done.stdout, (done.stdout, done.stderr)
    s = state_json(fs)
    assert s["mode"] == "disarmed" and not s["supervisor"]["faults"]
    assert f"recovered from fault '{LATCHING}'" in s["supervisor"]["reason"]
    # An emergency stop pressed: the recovery cannot clear it, the fault latches again.
    os.kill(pid, signal.SIGUSR2)
    wait_for(lambda: state_json(fs)["mode"] == "fault", 5.0, "fault")
    done = robot("fault-reset", "--server", fs.command, "--json")
    record = json.loads(done.stdout)
    assert done.returncode == 1 and not record["ok"] and record["mode"] == "fault", record
    assert "still reports ['user_stop_engaged']" in record["reason"]
    os.kill(pid, signal.SIGUSR2)  # released: now the reset succeeds
    done = robot("fault-reset", "--server", fs.command)
    assert done.returncode == 0 and "fault cleared" in done.stdout, (done.stdout, done.stderr)


def test_a_lockstep_fault_reset_runs_the_recovery_inside_its_request():
    """Lock-step physics (and the supervisor's clock) advance only inside requests: the recovery
    must finish in the fault_reset request itself, or it would wait forever."""
    from robostack.robot.backends import make_backend
    from robostack.robot.server import RobotServer, RobotServerConfig
    from tasks import make_task

    task = make_task("reach")
    arm = FaultyMirror(make_backend("mujoco", task))
    robot_server = RobotServer(RobotServerConfig(task="reach"), task=task, backend=arm)
    try:
        assert robot_server.handle("reset", {}, {})[1]["mode"] == "armed"
        arm.active.add(LATCHING)
        robot_server.run_ticks(1)  # what a step does first: the supervisor reads the faults
        assert robot_server.mode == "fault" and robot_server.supervisor.latched
        kind, meta, _ = robot_server.handle("fault_reset", {}, {})
        assert (kind, meta["fault_reset"], meta["mode"]) == ("state", "started", "disarmed"), meta
        assert f"recovered from fault '{LATCHING}'" in meta["supervisor"]["reason"]
        arm.estop = True
        robot_server.run_ticks(1)
        kind, meta, _ = robot_server.handle("fault_reset", {}, {})
        assert meta["mode"] == "fault" and "still reports ['user_stop_engaged']" in meta["supervisor"]["reason"]
        assert robot_server.handle("fault_reset", {}, {})[1]["mode"] == "fault"  # still pressed
        arm.estop = False
        assert robot_server.handle("fault_reset", {}, {})[1]["mode"] == "disarmed"
    finally:
        robot_server.backend.close()


def test_an_unreachable_server_is_a_clear_error_within_seconds():
    cases = (("state", f"tcp://127.0.0.1:{free_port()}"),
             ("stop", transport.ipc_endpoint(f"nobody-{uuid.uuid4().hex[:8]}")),
             ("arm", f"tcp://127.0.0.1:{free_port()}"))
    start = time.monotonic()
    results = robots(*[(action, "--server", server, "--timeout", 1.0) for action, server in cases])
    elapsed = time.monotonic() - start
    for (action, server), done in zip(cases, results):
        assert done.returncode == 1, (action, done.stdout, done.stderr)
        assert f"no robot server answered at {server} within 1 s" in done.stderr
        assert "`robostack robot-server` running" in done.stderr and "--command-endpoint" in done.stderr
    assert elapsed < 8.0, f"{elapsed:.1f} s"  # 1 s of waiting, the rest is Python starting


# --- the faulty server (this file run as a script) --------------------------------------------------

class FaultyMirror:
    """The mirror with the fault capabilities of a real arm; faults come from signals."""

    def __init__(self, inner):
        self._inner = inner
        self.capabilities = dataclasses.replace(inner.capabilities, faults=True, fault_recovery=True)
        self.active: set[str] = set()
        self.estop = False

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def read_faults(self) -> tuple[str, ...]:
        return tuple(sorted(self.active)) + ((ESTOP,) if self.estop else ()) + tuple(self._inner.read_faults())

    def recover_faults(self) -> None:
        self.active.clear()  # a pressed emergency stop stays: libfranka's recovery fails then


def serve_faulty(command_endpoint: str, state_endpoint: str) -> int:
    from robostack.robot.backends import make_backend
    from robostack.robot.server import RobotServer, RobotServerConfig
    from tasks import make_task

    task = make_task("reach")
    arm = FaultyMirror(make_backend("mujoco", task))
    server = RobotServer(RobotServerConfig(task="reach", clock="realtime", command_endpoint=command_endpoint,
                                           state_endpoint=state_endpoint), task=task, backend=arm)

    def stop(signum, frame):
        server.running = False

    def estop(signum, frame):
        arm.estop = not arm.estop

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGUSR1, lambda signum, frame: arm.active.add(LATCHING))
    signal.signal(signal.SIGUSR2, estop)
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(serve_faulty(*sys.argv[1:]))
