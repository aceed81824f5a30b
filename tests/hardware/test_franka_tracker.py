"""`robostack robot-server --backend franka --franka-law tracker` against franky-sim: franky's
CartesianImpedanceTrackingMotion runs the law in C++ and the server streams it targets
(hardware/franka_tracker.py). The same figures as the torque route (test_franka_end_to_end.py),
printed: a target tracked, command deadline -> hold <= 2 control periods, heartbeat loss ->
stopped <= 1 s, and a `record-demos --device autopilot` episode on the arm.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("franky", reason="franky (franky-control) is not installed: "
                    "pip install 'robostack[franka-sim]'")
pytest.importorskip("franky_sim", reason="franky-sim is not installed: pip install 'robostack[franka-sim]'")

from robostack import transport  # noqa: E402
from robostack.robot.client import ZmqConnection  # noqa: E402
import arm_checks  # noqa: E402
import real_time_server  # noqa: E402

PERIOD = 0.001  # s, libfranka's control period
ENV = dict(os.environ, OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def arm():
    with real_time_server.on_franky_sim(["--franka-law", "tracker"], ENV) as (command, state, hello, _, sim):
        assert hello["backend"] == "franka" and hello["control_mode"] == "cartesian_position", hello
        yield SimpleNamespace(command=command, state=state, sim=sim)


def test_homes_tracks_a_target_and_refuses_impedance_gains_by_name(arm):
    command = arm.command
    with ZmqConnection(command) as connection:
        started = time.monotonic()
        reply = connection.request("reset", {"seed": 3}, timeout=30.0)
        assert reply.meta["mode"] == "armed", reply.meta["supervisor"]
        homed = time.monotonic() - started
        assert ("homing", "armed") in [(t[2], t[3]) for t in arm_checks.transitions(connection)]
        stats = connection.request("stats").meta
        assert stats["law"] == "the arm's own Cartesian impedance"
        assert stats["gains"]["translational_stiffness"] == 2000.0
        with pytest.raises(transport.RemoteError, match="its own Cartesian impedance law.*--franka-law torque"):
            connection.request("gains", {"translational_stiffness": 1000.0})
        block, listing = (subprocess.run([sys.executable, "-m", "robostack.cli", "robot", action, "--server", command],
                                         env=ENV, capture_output=True, text=True, timeout=60) for action in ("state", "gains"))
        assert "gains         stiffness 2000.0 N/m" in block.stdout, block.stdout + block.stderr
        assert "--franka-law tracker" in listing.stdout and "posture_stiffness" in listing.stdout, listing.stdout
        s = connection.request("state").arrays
        target = s["tcp_position"] + [0.0, 0.03, -0.02]  # 36 mm away, the gripper kept pointing down
        started, errors = time.monotonic(), {}
        while time.monotonic() - started < 3.0:
            connection.request("command", {"deadline": 0.3},
                               {"target_position": target, "target_quaternion": s["tcp_quaternion"]})
            time.sleep(0.05)
            error = float(np.linalg.norm(connection.request("state").arrays["tcp_position"] - target))
            errors.setdefault(round(time.monotonic() - started), error)
        print(f"tracker: homed in {homed:.1f} s; a target 36 mm away: error by second "
              f"{ {k: round(v * 1e3, 1) for k, v in errors.items()} } mm, final {error * 1e3:.2f} mm")
        assert error < 0.003, errors


def test_a_missed_command_deadline_holds_within_two_control_periods(arm):
    command = arm.command
    with ZmqConnection(command) as connection:
        connection.request("arm")
        late = arm_checks.deadline_hold_latencies(connection)
        # Held at the measured pose: the arm stays where the hold found it.
        before = connection.request("state").arrays["tcp_position"]
        time.sleep(0.5)
        drift = float(np.linalg.norm(connection.request("state").arrays["tcp_position"] - before))
        print(f"tracker: command deadline -> hold {', '.join(f'{x * 1e3:.2f}' for x in late)} ms; "
              f"drift while holding 0.5 s {drift * 1e3:.2f} mm")
        assert np.median(late) <= 2 * PERIOD, late
        assert drift < 0.002


def test_heartbeat_loss_stops_the_arm_within_1_s(arm):
    loss = arm_checks.heartbeat_loss(arm.command, arm.state)
    silent, stop, disarmed, message = loss.silent, loss.stop, loss.disarmed, loss.message
    assert stop and disarmed, message.meta["supervisor"]["transitions"]
    print(f"tracker: heartbeat loss: last request -> damped stop {stop[1] - silent:.3f} s, -> stopped "
          f"and disarmed {disarmed[1] - silent:.3f} s; joint speed then "
          f"{np.abs(message.arrays['dq']).max():.4f} rad/s")
    assert "silent for" in stop[4], stop
    assert disarmed[1] - silent <= 1.0
    assert np.abs(message.arrays["dq"]).max() < 0.05


def test_record_demos_with_the_autopilot_then_replay_on_the_arm(arm, tmp_path):
    command = arm.command
    log = tmp_path / "demos"
    result, episode, events = arm_checks.record_autopilot_episode(command, log, ENV)
    assert result.returncode == 0, result.stdout[-1500:] + result.stderr[-1500:]
    assert len(episode["intervention"]) >= 5 and episode["intervention"].all()
    replayed, error = arm_checks.replay_on(command, log, ENV)
    retargeted, target_error = arm_checks.replay_on(command, log, ENV, follow="targets")
    print(f"tracker: record-demos on the arm: {len(episode['intervention'])} frames, "
          f"success {bool(episode['next.success'][-1])}; replayed there: tcp error mean "
          f"{error and error[0]} mm, max {error and error[1]} mm (the logged actions), mean "
          f"{target_error and target_error[0]} mm, max {target_error and target_error[1]} mm "
          f"(--follow targets)")
    # Replay on this route is its weak spot (docs/hardware/franka.md): the tracker falls behind
    # each step's target. Quiet machine, 4 runs: the logged actions 21-43 mm mean (max up to
    # 52 mm, over replay's --tolerance 50 mm: exit code 1), the recorded targets (--follow
    # targets) 14-18 mm mean; the torque route 1-4 and 2 mm. Beside a CI run: up to 88 and
    # 32 mm. Exit code 1 is the tolerance speaking; what is asserted is that each replay ran
    # through and that following the targets stays within a few centimetres.
    for result, found in ((replayed, error), (retargeted, target_error)):
        assert result.returncode in (0, 1) and found, result.stdout[-1500:] + result.stderr[-1500:]
    assert target_error[0] < 40.0, retargeted.stdout


def test_a_whitelisted_fault_recovers_with_a_fresh_tracker_and_another_latches(arm):
    command, sim = arm.command, arm.sim
    with ZmqConnection(command) as connection:
        connection.request("arm")
        sim.send("fault communication_constraints_violation")  # in the default transient_faults
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and ("recovering", "disarmed") not in \
                [(t[2], t[3]) for t in arm_checks.transitions(connection)]:
            time.sleep(0.05)
        path = [(t[2], t[3]) for t in arm_checks.transitions(connection)]
        assert ("armed", "fault") in path and ("fault", "recovering") in path \
            and ("recovering", "disarmed") in path, path
        # The fresh tracker tracks again.
        connection.request("arm")
        s = connection.request("state").arrays
        target = s["tcp_position"] + [0.0, 0.0, -0.02]
        for _ in range(40):
            connection.request("command", {"deadline": 0.3},
                               {"target_position": target, "target_quaternion": s["tcp_quaternion"]})
            time.sleep(0.05)
        error = float(np.linalg.norm(connection.request("state").arrays["tcp_position"] - target))
        sim.send("fault joint_reflex")  # a collision: not whitelisted
        time.sleep(1.0)  # longer than the recovery delay: nothing recovers it by itself
        latched = connection.request("state").meta
        print(f"tracker: whitelisted fault -> {path[-3:]}; tracking after it {error * 1e3:.1f} mm; "
              f"joint_reflex -> {latched['mode']}")
        assert error < 0.005
        assert latched["mode"] == "fault" and latched["supervisor"]["latched"], latched["supervisor"]
        reply = connection.request("arm")  # explicit: recover, then hold
        deadline = time.monotonic() + 5.0
        while reply.meta["mode"] != "armed" and time.monotonic() < deadline:
            time.sleep(0.1)
            reply = connection.request("state")
        assert reply.meta["mode"] == "armed", reply.meta["supervisor"]


def test_tracker_gains_and_law_option_are_checked_before_anything_connects():
    from hardware.franka_tracker import TrackerGains
    from robostack.robot.server_config import RobotServerConfig

    with pytest.raises(ValueError, match="translational_clip must be a finite number > 0"):
        TrackerGains(translational_clip=float("inf"))
    with pytest.raises(ValueError, match="franka_law must be 'torque'.*or 'tracker'"):
        RobotServerConfig(backend="franka", clock="realtime", franka_law="cartesian")
