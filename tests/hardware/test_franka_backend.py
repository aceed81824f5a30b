"""The Franka backend (hardware/franka.py) against franky-sim: libfranka's own protocol (franky
2.0.0, libfranka 0.21) served by a MuJoCo FR3 on loopback, in a process of its own
(tests/hardware/franky_sim_process.py), not a fake of franky.

Covered: connect and the backend contract (the tcp and Jacobian equal the MuJoCo mirror's at the
same joints), streaming targets through the robot server's own law, the torque watchdog, a fault
injected in the simulator and recovered by the supervisor's whitelist (another latched until an
explicit arm). The end-to-end run (robot-server subprocess, deadline, heartbeat loss,
record-demos) is tests/hardware/test_franka_end_to_end.py.

franky-sim is a Python 1 kHz loop: on this 2-core machine it keeps 0.8-0.9 kHz of simulated
time per wall second (measured, printed by the fixture), so robot time runs slower than wall
time; bounds below are in wall time with that in mind.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

franky = pytest.importorskip("franky", reason="franky (franky-control) is not installed: "
                             "pip install 'robostack[franka-sim]'")
pytest.importorskip("franky_sim", reason="franky-sim is not installed: pip install 'robostack[franka-sim]'")

from controllers.robot_interface import contract_problems  # noqa: E402
from controllers.rotations import matrix_to_quat  # noqa: E402
from robostack.robot.backends import check_drivable, make_backend  # noqa: E402
from robostack.robot.loop import wait_until  # noqa: E402
from robostack.robot.server import RobotServer, RobotServerConfig  # noqa: E402
from tasks import make_task  # noqa: E402
from franky_sim_process import FrankySim  # noqa: E402

PERIOD = 0.001


@pytest.fixture(scope="module")
def sim():
    s = FrankySim()
    yield s
    print(f"franky-sim kept {s.rate():.0f} simulated ticks per wall second (1000 = real time)")
    s.close()


@pytest.fixture(scope="module")
def server(sim):
    """A real-time robot server on the Franka backend, ticked by the test (`run`)."""
    config = RobotServerConfig(task="reach", backend="franka", clock="realtime",
                               franka_host=sim.host, peer_timeout=30.0)
    s = RobotServer(config)
    yield s
    s.backend.close()


def run(server, seconds: float, until=None) -> bool:
    """Tick the server at 1 kHz of wall time for `seconds`, or until `until()` is true."""
    t = time.perf_counter()
    end = t + seconds
    while t < end:
        server.run_ticks(1)
        if until is not None and until():
            return True
        t += PERIOD
        wait_until(t)
    return False


def resume(server) -> None:
    """pytest's pause between two tests stops the ticks, and franky's watchdog may end the torque
    motion meanwhile (as it should): recover it explicitly, as an operator would."""
    run(server, 0.03)
    if server.mode == "fault":
        assert server.backend.read_faults() == ("torque_signal_timeout",), server.supervisor.report()
        server.handle("arm", {}, {})
        assert run(server, 2.0, until=lambda: server.mode == "armed"), server.supervisor.report()


def reset(server) -> None:
    """A real arm's reset: homing by the joint impedance law, answered when home."""
    resume(server)
    kind, _, _ = server.handle("reset", {"seed": 1}, {})
    assert kind == "deferred"
    assert run(server, 15.0, until=lambda: server._homing is None), "homing did not end"
    reply = server.reset_reply.result
    assert reply[0] == "state", reply
    assert server.mode == "armed"


def test_connects_and_keeps_the_contract_with_the_mirrors_tcp(server):
    b = server.backend
    assert contract_problems(b) == []
    check_drivable(b)
    assert b.capabilities.faults and b.capabilities.fault_recovery and b.capabilities.world
    # The same joints in the MuJoCo mirror (a Panda; the FR3's kinematics are the same): the tcp
    # and its Jacobian are robostack's, not libfranka's end effector frame 1.6 mm off.
    s = b.latest_state()
    mirror = make_backend("mujoco", make_task("reach"))
    try:
        mirror.reset(s.q.copy(), gripper_width=0.08)
        m = mirror.latest_state()
        print(f"tcp vs mirror {np.abs(s.tcp_position - m.tcp_position).max() * 1e3:.3f} mm, "
              f"rotation {np.abs(s.tcp_rotation - m.tcp_rotation).max():.2e}, Jacobian "
              f"{np.abs(s.jacobian - m.jacobian).max():.2e}")
        assert np.allclose(s.tcp_position, m.tcp_position, atol=2e-4)
        assert np.allclose(s.tcp_rotation, m.tcp_rotation, atol=1e-3)
        assert np.allclose(s.jacobian, m.jacobian, atol=2e-3)
    finally:
        mirror.close()
    assert b.mass_matrix().shape == (7, 7) and np.all(np.linalg.eigvalsh(b.mass_matrix()) > 0)
    assert b.external_wrench().shape == (6,)
    assert b.read_faults() == ()


def test_streaming_targets_moves_the_tcp_and_the_gripper(server):
    reset(server)
    b = server.backend
    start = b.state.tcp_position.copy()
    target = start + np.array([0.05, -0.04, -0.05])
    quaternion = matrix_to_quat(b.state.tcp_rotation)
    for _ in range(20):  # streamed at 10 Hz, as an env does
        kind, meta, _ = server.handle("command", {"deadline": 0.3, "gripper": 0.02},
                                      {"target_position": target, "target_quaternion": quaternion})
        assert kind == "ack", meta
        run(server, 0.1)
    assert server.mode == "tracking"
    error = np.linalg.norm(b.state.tcp_position - target)
    print(f"tcp moved {np.linalg.norm(b.state.tcp_position - start) * 1e3:.1f} mm of "
          f"{np.linalg.norm(target - start) * 1e3:.1f}; {error * 1e3:.1f} mm from the target after 2 s")
    assert error < 0.01
    assert abs(b.latest_state().gripper_width - 0.02) < 0.004  # the Hand thread followed


def test_torque_watchdog_ends_the_motion_when_the_loop_stops(server):
    b = server.backend
    resume(server)
    run(server, 0.05)
    assert b.robot.is_in_control
    stalled, robot_time = time.perf_counter(), b.robot.state.time.to_sec()  # no more set_torque
    while b.robot.is_in_control and time.perf_counter() < stalled + 2.0:
        time.sleep(0.001)
    ended = time.perf_counter() - stalled
    # franky counts the timeout in robot time, which franky-sim runs slower than wall time.
    robot_ended = b.robot.state.time.to_sec() - robot_time
    print(f"torque watchdog (signal_timeout {b.signal_timeout} s): motion ended {robot_ended * 1e3:.0f} "
          f"ms of robot time, {ended * 1e3:.0f} ms of wall time after the last torque")
    assert not b.robot.is_in_control
    assert robot_ended <= b.signal_timeout + 0.015 and ended < 0.5
    b.sense()
    assert b.read_faults() == ("torque_signal_timeout",)
    # The supervisor sees the fault (not whitelisted: latched) and an explicit arm recovers it.
    run(server, 0.2)
    assert server.mode == "fault" and server.supervisor.latched
    server.handle("arm", {}, {})
    assert run(server, 2.0, until=lambda: server.mode == "armed")
    assert b.robot.is_in_control and b.read_faults() == ()


def test_a_whitelisted_fault_recovers_by_itself_and_another_latches(server, sim):
    reset(server)
    b = server.backend
    server.supervisor.take_transitions()
    sim.send("fault communication_constraints_violation")  # in the default transient_faults
    assert run(server, 3.0, until=lambda: server.mode == "disarmed"), server.supervisor.report()
    path = [(t.source, t.target) for t in server.supervisor.take_transitions()]
    print("whitelisted:", path)
    assert ("armed", "fault") in path and ("fault", "recovering") in path \
        and ("recovering", "disarmed") in path
    assert b.robot.is_in_control and b.read_faults() == ()  # a fresh torque motion runs

    server.handle("arm", {}, {})
    run(server, 0.1)
    sim.send("fault joint_reflex")  # a collision: not whitelisted
    assert run(server, 2.0, until=lambda: server.mode == "fault")
    run(server, 0.5)  # longer than the recovery delay: nothing recovers it by itself
    assert server.mode == "fault" and server.supervisor.latched
    assert "joint_reflex" in server.supervisor.reason
    assert not b.robot.is_in_control
    server.handle("arm", {}, {})  # explicit: recover, then hold
    assert run(server, 2.0, until=lambda: server.mode == "armed")
    assert b.robot.is_in_control and b.read_faults() == ()


def test_releasing_the_server_stops_the_arm_with_franky_s_torque_stop(server):
    resume(server)
    run(server, 0.1)
    b = server.backend
    started = time.perf_counter()
    server.release()  # what the loop does as soon as it stops ticking (Ctrl-C, shutdown)
    took = time.perf_counter() - started
    print(f"release: TorqueStopMotion ended in {took * 1e3:.0f} ms")
    assert not b.robot.is_in_control and took < 2.5
    b.robot.join_motion(timeout=0.5)  # it finished: the watchdog's exception would raise here
    server.release()  # once only
