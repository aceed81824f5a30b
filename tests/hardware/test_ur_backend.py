"""The UR backend (hardware/ur.py) against the fake of ur_rtde (tests/hardware/fake_ur_rtde.py),
which records and checks the calls, rates and units; and the fake against the real ur-rtde
wheel's method signatures, so that it cannot drift from the SDK. No UR simulator here (URSim
needs Docker): every figure is the fake's."""

from __future__ import annotations

import inspect
import re
import sys
import time

import numpy as np
import pytest

import fake_ur_rtde
from controllers.rotations import matrix_to_quat
from hardware import ur


@pytest.fixture
def arm(monkeypatch):
    monkeypatch.setenv(ur.SDK_ENV, "fake_ur_rtde")
    return fake_ur_rtde.reset_arm()


# Tests of anything but the watchdog arm it at 2 Hz: at the default 20 Hz a 50 ms stall of this
# process on a loaded 2-core CI machine stops the fake's script and turns the test into a
# watchdog test (it did once: close() then saw control_script_stopped and sent no speedStop).
PATIENT = dict(watchdog_hz=2.0)


def tick(b, seconds, position=None, quaternion=None):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        s = b.sense()
        if position is None:
            b.halt()
        else:
            b.command_tcp_target(position, quaternion if quaternion is not None else matrix_to_quat(s.tcp_rotation),
                                 np.zeros(6))


def _params(doc: str) -> list[str]:
    first = doc.strip().splitlines()[0]
    inside = first[first.index("(") + 1:first.rindex(")")]
    return [p.split(":")[0].strip() for p in re.split(r",\s*(?![^\[]*\])", inside) if p.strip()][1:]


def test_the_fake_has_the_real_wheels_methods_and_parameter_names():
    control = pytest.importorskip("rtde_control", reason="ur-rtde is not installed: pip install 'robostack[ur]'")
    import dashboard_client
    import rtde_receive

    pairs = [(fake_ur_rtde.RTDEControlInterface, control.RTDEControlInterface),
             (fake_ur_rtde.RTDEReceiveInterface, rtde_receive.RTDEReceiveInterface),
             (fake_ur_rtde.DashboardClient, dashboard_client.DashboardClient)]
    checked = 0
    for fake, real in pairs:
        for name, member in vars(fake).items():
            if name.startswith("_") and name != "__init__":
                continue
            assert hasattr(real, name), f"{real.__name__} has no {name}"
            ours = list(inspect.signature(member).parameters)[1:]
            docs = [re.sub(r"^\d+\. ", "", line) for line in getattr(real, name).__doc__.splitlines()
                    if re.match(rf"^(\d+\. )?{name}\(", line)]
            overloads = [_params(d) for d in docs]
            assert ours in overloads, f"{real.__name__}.{name}{ours} vs the wheel's {overloads}"
            checked += 1
    assert checked >= 30


def test_streaming_targets_at_the_declared_rate_inside_init_and_wait_period(arm):
    # PATIENT: at the default 20 Hz, one 50 ms stall of this process in its 1 s of ticks stops
    # the fake's script, and the arm halts short of the target (ci24: 3.7 mm short, bound 2 mm).
    assert inspect.signature(ur.UrBackend).parameters["watchdog_hz"].default == 20.0
    b = ur.UrBackend(pacing="rtde", max_linear_speed=0.2, **PATIENT)
    assert arm.count("setWatchdog") == 0  # not at connect: a server's start-up would outlast it
    b.sense()
    assert [c[1] for c in arm.calls[-2:]] == ["setWatchdog", "kickWatchdog"] and arm.watchdog_hz == 2.0
    assert b.state.q.shape == (6,) and b.control_period == 0.002
    start = b.state.tcp_position.copy()
    target = start + np.array([0.03, -0.02, -0.02])
    tick(b, 1.0, target)
    assert np.linalg.norm(b.state.tcp_position - target) < 2e-3, b.state.tcp_position - target
    speeds = [c for c in arm.calls if c[1] == "speedL"]
    waits = np.array([c[0] for c in arm.calls if c[1] == "waitPeriod"])
    period = np.median(np.diff(waits))
    print(f"{len(speeds)} speedL in 1.0 s, period median {period * 1e3:.3f} ms, "
          f"max tool speed {max(np.linalg.norm(c[2][0][:3]) for c in speeds):.3f} m/s")
    assert 0.0019 < period < 0.0025
    assert all(np.linalg.norm(c[2][0][:3]) <= 0.2 + 1e-9 and c[2][1] == 1.5 for c in speeds)
    names = [c[1] for c in arm.calls if c[1] in ("waitPeriod", "kickWatchdog", "speedL")]
    ticks = "".join({"waitPeriod": "|", "kickWatchdog": "k", "speedL": "s"}[n] for n in names)
    assert set(ticks.split("|")[1:-1]) == {"ks"}, ticks[:80]  # one kick and one speedL per period
    assert arm.violations == []


def test_halt_stops_once_and_close_stops_the_script(arm):
    b = ur.UrBackend(**PATIENT)
    tick(b, 0.1, b.state.tcp_position + [0.0, 0.0, 0.05])
    tick(b, 0.3)
    assert arm.count("speedStop") == 1 and np.abs(b.state.dq).max() == 0.0
    assert np.linalg.norm(arm.speed) < 1e-9
    tick(b, 0.05, b.state.tcp_position + [0.0, 0.0, 0.05])
    b.close()
    assert "watchdog_fired" not in [c[1] for c in arm.calls], "the process stalled > 0.5 s"
    assert arm.count("speedStop") == 2 and arm.count("stopScript") == 1
    assert arm.violations == []


def test_a_stalled_loop_trips_the_watchdog_and_recovery_reuploads_the_script(arm):
    b = ur.UrBackend(watchdog_hz=20.0)
    tick(b, 0.05, b.state.tcp_position + [0.05, 0.0, 0.0])
    time.sleep(0.08)  # > 1 / 20 Hz without a kick
    b.sense()
    assert b.read_faults() == ("control_script_stopped",)
    assert np.linalg.norm(arm.speed) == 0.0  # the controller stopped the arm
    before = arm.count("speedL")
    tick(b, 0.02, b.state.tcp_position + [0.05, 0.0, 0.0])
    assert arm.count("speedL") == before  # nothing sent while faulted
    b.recover_faults()
    assert b.read_faults() == () and arm.count("reuploadScript") == 1
    assert [c[1] for c in arm.calls if c[1] in ("reuploadScript", "setWatchdog")][-2:] == ["reuploadScript", "setWatchdog"]
    assert arm.violations == []


def test_a_protective_stop_blocks_commands_until_the_dashboard_unlocks_it(arm):
    b = ur.UrBackend(**PATIENT)
    arm.unlock_delay = 0.2
    tick(b, 0.05, b.state.tcp_position + [0.05, 0.0, 0.0])
    b.control.triggerProtectiveStop()
    b.sense()
    assert "protective_stop" in b.read_faults() and "control_script_stopped" in b.read_faults()
    count = len(arm.calls)
    tick(b, 0.05, b.state.tcp_position + [0.05, 0.0, 0.0])
    b.move_joints(b.home_q, 1.0)
    assert {c[1] for c in arm.calls[count:]} <= {"kickWatchdog"}
    b.recover_faults()  # too early: UR refuses for a while after the stop
    assert "protective_stop" in b.read_faults()
    time.sleep(0.2)
    b.recover_faults()
    assert b.read_faults() == ()
    tick(b, 0.02, b.state.tcp_position + [0.05, 0.0, 0.0])
    assert arm.violations == [] and arm.count("speedL") > 0


def test_move_joints_is_an_asynchronous_limited_movej(arm):
    b = ur.UrBackend(**PATIENT)
    goal = b.home_q + np.array([0.2, -0.1, 0.1, 0.0, 0.0, 0.3])
    b.move_joints(goal, speed=9.0)
    assert arm.calls[-1][1] == "moveJ" and arm.calls[-1][2][1] == ur.MAX_JOINT_SPEED and arm.calls[-1][2][3] is True
    end = time.perf_counter() + 1.0
    while time.perf_counter() < end and np.abs(b.sense().q - goal).max() > 0.01:
        pass
    assert np.abs(b.state.q - goal).max() < 0.01
    with pytest.raises(ValueError, match="within the joint limits"):
        b.move_joints(np.full(6, 7.0), 1.0)
    assert arm.violations == []


def test_frames_wrench_and_options(arm):
    b = ur.UrBackend(base_yaw=np.pi / 2)
    p = arm.position
    assert np.allclose(b.state.tcp_position, [-p[1], p[0], p[2]])  # base = Rz(90 deg) ur_base
    arm.force[:] = [1.0, 0.0, -5.0, 0.0, 0.0, 0.0]
    b.sense()
    assert np.allclose(b.external_wrench(), [0.0, 1.0, -5.0, 0, 0, 0])
    arm.speed[:] = arm.speed_target[:] = [0.1, 0.0, 0.0, 0.0, 0.0, 0.2]  # measured, not from a Jacobian
    b.sense()
    assert np.allclose(b.state.extras["tcp_velocity"], [0.0, 0.1, 0.0, 0.0, 0.0, 0.2])
    arm.speed[:] = arm.speed_target[:] = 0.0
    with pytest.raises(ValueError, match="only 'none'.*RobotiqGripper"):
        ur.UrBackend(gripper="robotiq")
    with pytest.raises(ValueError, match="max_linear_speed"):
        ur.UrBackend(max_linear_speed=2.0)
    with pytest.raises(ValueError, match="500.*125"):
        ur.UrBackend(frequency=1000.0)


def test_a_missing_ur_rtde_names_the_extra(monkeypatch):
    monkeypatch.delenv(ur.SDK_ENV, raising=False)
    monkeypatch.setitem(sys.modules, "rtde_control", None)
    with pytest.raises(ImportError, match=r"robostack\[ur\]"):
        ur.import_ur_rtde()
