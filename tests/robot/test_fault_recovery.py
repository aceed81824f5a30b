"""Faults read from the backend, through the robot server (issue 11 item 2): a transient fault
is recovered automatically, at most `max_recoveries` times within the window, and the recovery
ends disarmed (it never moves the arm); any other fault latches until an explicit `arm`, which
recovers and then holds. Every transition is in the state message with its reason.

The arm is the MuJoCo mirror behind a stand-in that declares the `faults` and `fault_recovery`
capabilities a real arm has (libfranka's current errors and automaticErrorRecovery), with faults
injected by the test; the server runs its real-time tick code in this process (run_ticks on the
wall clock), so the supervisor's timings are the real ones.
"""

from __future__ import annotations

import dataclasses
import time

import pytest

from controllers.rotations import matrix_to_quat
from robostack.robot.backends import make_backend
from robostack.robot.server import RobotServer, RobotServerConfig
from stand_in import StandIn
from tasks import make_task

TRANSIENT = "communication_constraints_violation"
LATCHING = "joint_velocity_violation"


class FaultyArm(StandIn):
    """The mirror with injectable faults; recover_faults() clears them unless `stuck`."""

    def __init__(self, inner):
        super().__init__(inner, withhold=())
        self.capabilities = dataclasses.replace(self.capabilities, faults=True, fault_recovery=True)
        self.active: set[str] = set()
        self.stuck = False
        self.recover_calls = 0

    def read_faults(self) -> tuple[str, ...]:
        return tuple(sorted(self.active)) + tuple(self._inner.read_faults())

    def recover_faults(self) -> None:
        self.recover_calls += 1
        if not self.stuck:
            self.active.clear()


@pytest.fixture
def server():
    task = make_task("reach")
    arm = FaultyArm(make_backend("mujoco", task))
    robot = RobotServer(RobotServerConfig(task="reach", clock="realtime", peer_timeout=60.0,
                                          max_recoveries=2, recovery_window=60.0),
                        task=task, backend=arm)
    yield robot, arm
    robot.backend.close()


def run_until(robot, mode: str, timeout: float = 5.0) -> float:
    """Tick (one at a time, as the real-time loop does) until the supervisor is in `mode`."""
    start = time.monotonic()
    while robot.mode != mode:
        assert time.monotonic() - start < timeout, (
            f"not {mode!r} within {timeout} s: {robot.mode!r}, {robot.supervisor.report()}")
        robot.run_ticks(1)
    return time.monotonic() - start


def transitions(robot) -> list[tuple[str, str, str]]:
    return [(t[2], t[3], t[4]) for t in robot.state_message()[0]["supervisor"]["transitions"]]


def test_a_transient_fault_is_recovered_automatically_and_ends_disarmed(server):
    robot, arm = server
    assert robot.handle("arm", {}, {})[0] == "state"
    run_until(robot, "armed")
    arm.active.add(TRANSIENT)
    run_until(robot, "fault", 1.0)
    run_until(robot, "recovering", 2.0)  # after recovery_delay (0.1 s) damped in "fault"
    run_until(robot, "disarmed", 3.0)
    assert arm.recover_calls == 1
    steps = transitions(robot)
    assert [s[:2] for s in steps[-3:]] == [("armed", "fault"), ("fault", "recovering"),
                                           ("recovering", "disarmed")], steps
    assert TRANSIENT in steps[-3][2] and "transient" in steps[-3][2]
    # It never moves the arm by itself: a command is refused until an explicit arm.
    state = robot.backend.state
    kind, meta, _ = robot.handle("command", {"gripper": 0.04}, {
        "target_position": state.tcp_position + [0.0, 0.0, 0.05],
        "target_quaternion": matrix_to_quat(state.tcp_rotation)})
    assert kind == "error" and "disarmed" in meta["error"], meta


def test_a_fault_outside_the_whitelist_latches_until_an_explicit_arm(server):
    robot, arm = server
    robot.handle("arm", {}, {})
    run_until(robot, "armed")
    arm.active.add(LATCHING)
    run_until(robot, "fault", 1.0)
    for _ in range(500):  # 0.5 s of ticks and more: no automatic recovery starts
        robot.run_ticks(1)
    assert robot.mode == "fault" and robot.supervisor.latched and arm.recover_calls == 0
    assert "not a transient fault: latched" in transitions(robot)[-1][2]
    arm.stuck = True  # the cause is still there: the recovery cannot finish
    robot.handle("arm", {}, {})
    assert robot.mode == "recovering"
    run_until(robot, "fault", 3.0)  # recovery_timeout (1 s): failed, latched again
    arm.stuck = False
    robot.handle("arm", {}, {})
    run_until(robot, "armed", 3.0)  # recovered, then holding
    assert arm.recover_calls >= 2


def test_automatic_recoveries_are_bounded_within_the_window(server):
    robot, arm = server
    for attempt in range(3):  # max_recoveries=2: the third transient fault latches
        robot.handle("arm", {}, {})
        run_until(robot, "armed", 3.0)
        arm.active.add(TRANSIENT)
        run_until(robot, "fault", 1.0)
        if attempt < 2:
            run_until(robot, "disarmed", 3.0)
    for _ in range(500):
        robot.run_ticks(1)
    assert robot.mode == "fault" and robot.supervisor.latched, robot.supervisor.report()
    assert "2 automatic recoveries within 60 s already: latched" in transitions(robot)[-1][2]
    assert arm.recover_calls == 2
