"""The joint-limit guard acts in the robot server (issue 10: controllers/safety.py had it, tested,
and nothing called it).

Per tick, in the compiled lock-step loop and in the Python loop that real arms run alike: a joint
within the guard's margin (0.05 rad) of a limit and moving toward it holds the arm at the measured
pose, reported as the flag "joint_limit" with its reason; while it is held off, commands that move
it further toward the limit are refused (flagged), commands away from it are obeyed.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from controllers import safety
from controllers.rotations import quat_multiply, rotvec_to_quat
from robostack.robot.server import RobotServer, RobotServerConfig
from tasks import make_task

WRIST = 6  # joint 7, the flange rotation: a tcp rotation about the tool axis drives it alone
MARGIN = 0.05  # rad, the guard's default


def wrist_near_its_limit(fast_loop: bool) -> tuple[RobotServer, dict]:
    """A reach server whose home has joint 7 at 2.6 rad, 0.3 rad short of its upper limit."""
    task = make_task("reach")
    home = list(task.config.home_q)
    home[WRIST] = 2.6
    task = make_task("reach", dataclasses.replace(task.config, home_q=tuple(home), home_tcp_noise=0.0))
    server = RobotServer(RobotServerConfig(task="reach", fast_loop=fast_loop), task=task)
    assert (server._fast_loop is not None) == fast_loop
    kind, meta, state = server.handle("reset", {"seed": 0}, {})
    assert kind == "state", meta
    return server, state


def twist_wrist(server, state, toward_limit: bool, steps: int):
    """Command a tcp rotation of 0.3 rad per step about the tool axis, turning joint 7 up (or
    down); returns the (meta, state) of each step."""
    jacobian = server.backend.state.jacobian  # of the last tick: enough for a sign
    up = np.sign(jacobian[5, WRIST])  # base z rotation that turns joint 7 positive
    position = state["tcp_position"].copy()
    replies = []
    for _ in range(steps):
        turn = rotvec_to_quat([0.0, 0.0, (up if toward_limit else -up) * 0.3])
        kind, meta, state = server.handle("step", {"gripper": 0.08}, {
            "target_position": position, "target_quaternion": quat_multiply(turn, state["tcp_quaternion"])})
        assert kind == "state", meta
        replies.append((meta, state))
    return replies


@pytest.mark.parametrize("fast_loop", [True, False], ids=["compiled", "python"])
def test_driving_a_joint_toward_its_limit_trips_the_guard_and_holds_it_off(fast_loop):
    server, state = wrist_near_its_limit(fast_loop)
    upper = server.backend.joint_upper[WRIST]
    replies = twist_wrist(server, state, toward_limit=True, steps=40)  # 12 rad asked: far past it
    wrist = np.array([s["q"][WRIST] for _, s in replies])
    tripped = next((i for i, (meta, _) in enumerate(replies) if "joint_limit" in dict(meta["flags"])), None)
    assert tripped is not None, f"the guard never tripped; joint 7 went to {wrist.max():.4f} rad (limit {upper})"
    meta, _ = replies[tripped]
    reason = dict(meta["flags"])["joint_limit"]
    assert meta["mode"] == "armed" and "joint 7" in meta["supervisor"]["reason"], meta  # holding
    assert "joint 7" in reason and "upper limit" in reason and "holding" in reason, reason
    assert wrist[tripped] > upper - MARGIN - 0.005  # it tripped at the margin, not before
    # Pushed on for the rest of the 40 steps, the wrist stays off its limit: each further push
    # is refused and says so.
    assert wrist.max() < upper - MARGIN + 0.01, f"joint 7 reached {wrist.max():.4f} rad (limit {upper})"
    later = [dict(meta["flags"]).get("joint_limit", "") for meta, _ in replies[tripped + 1:]]
    assert sum("command refused" in text for text in later) > 10, later
    # A command turning the wrist back is obeyed: the arm moves again.
    back = twist_wrist(server, replies[-1][1], toward_limit=False, steps=5)
    assert back[-1][0]["mode"] == "tracking"
    assert back[-1][1]["q"][WRIST] < wrist[-1] - 0.08


def test_the_compiled_and_the_python_loop_guard_alike():
    runs = []
    for fast_loop in (True, False):
        server, state = wrist_near_its_limit(fast_loop)
        replies = twist_wrist(server, state, toward_limit=True, steps=20)
        runs.append(([m["mode"] for m, _ in replies], np.array([s["q"] for _, s in replies])))
    assert runs[0][0] == runs[1][0] and "armed" in runs[0][0]  # tracking, then holding
    np.testing.assert_allclose(runs[0][1], runs[1][1], atol=1e-9)


def test_the_guard_leaves_ordinary_motion_alone():
    server, state = wrist_near_its_limit(fast_loop=True)
    replies = twist_wrist(server, state, toward_limit=False, steps=10)  # away from the limit
    assert all(meta["mode"] == "tracking" and "joint_limit" not in dict(meta["flags"]) for meta, _ in replies)


def test_guard_check_trips_only_within_the_margin_and_moving_toward_the_limit():
    guard = safety.JointLimitGuard(lower=-np.ones(7), upper=np.ones(7), margin=0.1, min_speed=0.02)
    inside, near = np.zeros(7), np.zeros(7)
    near[2] = 0.95
    toward, away, slow = np.zeros(7), np.zeros(7), np.zeros(7)
    toward[2], away[2], slow[2] = 0.5, -0.5, 0.01
    assert not guard.check(inside, toward)  # far from the limit
    assert not guard.check(near, away)  # near, but leaving
    assert not guard.check(near, slow)  # near, but slower than sensor noise
    assert guard.check(near, toward)
    np.testing.assert_array_equal(guard.tick_counts, [3, 1])  # 3 ticks near, 1 tripped
    reason = guard.trip(near, toward)
    assert "joint 3" in reason and guard.latched == {2: 1}
    assert guard.take_report(near)[0][0] == "joint_near_limit"
