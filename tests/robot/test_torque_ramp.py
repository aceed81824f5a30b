"""Every torque change reaches the arm through one rate-limited ramp (issue 10: the damped stop and
disarm bypassed the torque-rate limit, and a Franka trips its reflex on such a jump).

The arm presses the table hard (the error clip raised to 5 cm: 100 N), so the torque is large
when the control law changes; from there every tick's torque may differ from the last by at most
controllers/franka.py's MAX_TORQUE_RATE * dt, whatever the change: disarm, peer lost (damped
stop), deadline hold, arm again, a real arm's reset (homing and back to Cartesian impedance).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from controllers.franka import MAX_TORQUE_RATE
from robostack.robot.server import RobotServer, RobotServerConfig
from stand_in import real_arm_server
from tasks import make_task

INTO_THE_TABLE = {"workspace_min": (0.25, -0.35, -0.2)}  # the box reaches 20 cm into the table
SUBSTANTIAL = 20.0  # Nm, some joint's torque while pressing


def pressing(server) -> list[np.ndarray]:
    """Press the tcp into the table; returns the list every later commanded torque is added to."""
    torques: list[np.ndarray] = []
    actuate = server.backend.actuate

    def recording(tau):
        torques.append(np.array(tau, dtype=float))
        actuate(tau)

    server.backend.actuate = recording  # the Python tick loops look it up on every call
    kind, meta, start = server.handle("reset", {"seed": 0}, {})
    assert kind == "state", meta
    server.handle("gains", {"translational_clip": 0.05}, {})
    target = {"target_position": np.array([0.45, 0.15, 0.05]), "target_quaternion": start["tcp_quaternion"]}
    for z in [0.05] * 15 + [-0.10] * 15:
        target["target_position"] = np.array([0.45, 0.15, z])
        kind, meta, _ = server.handle("step", {"gripper": 0.08}, target)
        assert kind == "state", meta
    pressed = server.backend.data.ctrl[:7]  # the mirror's actuators: the torque of the last tick
    assert np.abs(pressed).max() > SUBSTANTIAL, f"not pressing hard: {pressed}"
    return torques


def mirror(fast_loop: bool = False) -> RobotServer:
    task = make_task("reach")
    task = make_task("reach", dataclasses.replace(task.config, **INTO_THE_TABLE))
    return RobotServer(RobotServerConfig(task="reach", fast_loop=fast_loop), task=task)


def assert_ramped(torques: list[np.ndarray], since: int, change: float = 10.0) -> None:
    """From torques[since - 1] on, no tick changed any joint's torque by more than the rate
    limit, and the torque did change by `change` Nm (so there was a switch to ramp through)."""
    step = MAX_TORQUE_RATE * 0.001
    window = np.array(torques[since - 1:])
    jumps = np.abs(np.diff(window, axis=0)).max(axis=1)
    worst = int(np.argmax(jumps))
    assert jumps[worst] <= step + 1e-9, (f"torque jumped {jumps[worst]:.2f} Nm in one tick ({worst} ticks "
                                         f"after the switch): {window[worst]} -> {window[worst + 1]}")
    assert np.abs(window[-1] - window[0]).max() > change, "no torque change happened"


@pytest.mark.parametrize("event", ["disarm", "peer_lost", "deadline_hold", "arm_while_stopping"])
def test_a_change_of_control_law_ramps_the_torque(event):
    server = mirror()
    torques = pressing(server)
    since = len(torques)
    if event == "disarm":
        server.handle("disarm", {}, {})
    elif event == "peer_lost":
        # Lock-step never loses a peer or misses a deadline by itself: give its supervisor the
        # real-time rule (a 1 ms peer timeout), or an expired deadline, and tick.
        sup = server.supervisor
        sup.config = dataclasses.replace(sup.config, peer_timeout=0.001)
        server.run_ticks(5)
        assert server.mode == "stopping" and "silent" in sup.reason, sup.reason
    elif event == "deadline_hold":
        server.supervisor.command_expires = server._now() - 0.001  # expired a tick ago
        server.run_ticks(5)
        assert server.mode == "armed" and "deadline missed" in server.supervisor.reason
    else:  # disarm, and arm again while the torque is still ramping down
        server.handle("disarm", {}, {})
        server.run_ticks(5)
        assert server.handle("arm", {}, {})[1]["mode"] == "armed"
    server.run_ticks(300)
    assert_ramped(torques, since)


def test_a_real_arms_reset_ramps_into_homing_and_back():
    server = real_arm_server(home_q=make_task("reach").config.home_q, home_timeout=10.0,
                             task_overrides=INTO_THE_TABLE)
    torques = pressing(server)
    since = len(torques)
    kind, meta, _ = server.handle("reset", {"seed": 0}, {})  # lock-step: homing runs in the request
    assert kind == "state" and meta["mode"] == "armed", meta
    server.run_ticks(300)
    assert_ramped(torques, since)


def test_the_compiled_loop_leaves_the_ramp_at_the_torque_it_commanded():
    server = mirror(fast_loop=True)
    assert server._fast_loop is not None
    torques = pressing(server)  # pressed by the compiled loop: nothing recorded per tick there
    commanded = server.backend.data.ctrl[:7].copy()
    np.testing.assert_array_equal(server.ramp.commanded, commanded)
    assert np.abs(commanded).max() > SUBSTANTIAL
    since = len(torques)
    torques.append(commanded)  # the last tick of the compiled loop, then the damped stop's
    server.handle("disarm", {}, {})
    server.run_ticks(300)
    assert_ramped(torques, since + 1)
