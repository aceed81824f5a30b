"""The robot server driving a position-controlled arm (the MuJoCo mirror's position mode,
--backend mujoco-position, what a UR is): the admittance law through the server's whole path
(safety filter, supervisor, soft start, ticks), the figure of issue 16 through it, and the
requests that differ from a torque arm's. The UR itself: tests/hardware/test_ur_server.py."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest

from controllers.rotations import matrix_to_quat
from robostack.robot.server import RobotServer, RobotServerConfig
from tasks import make_task

ENV = dict(os.environ, OMP_NUM_THREADS="1", MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))


def deep_box_task(depth: float = 0.12):
    """reach with its workspace floor `depth` below the table, so that a target 10 cm under the
    table top gets through the safety filter (the task's own box stands on the table)."""
    task = make_task("reach")
    lo = task.config.workspace_min
    task.config = dataclasses.replace(task.config, workspace_min=(lo[0], lo[1], lo[2] - depth))
    return task


def server(gains: str = "", **options) -> RobotServer:
    config = RobotServerConfig(task="reach", backend="mujoco-position", admittance_gains=gains, **options)
    return RobotServer(config, task=deep_box_task())


def test_pressing_10_cm_into_the_table_through_the_server_stays_within_the_bound():
    robot = server("force_bound=10,max_velocity=0.01", max_position_step=0.15)
    table_z = robot.task.params.table_height
    forces = []
    command = robot.backend.command_tcp_target

    def command_and_measure(*args):  # MuJoCo's own contact force, every 2 ms command period
        command(*args)
        forces.append(robot.backend.table_contact_force())

    robot.backend.command_tcp_target = command_and_measure
    kind, meta, state = robot.handle("reset", {"seed": 0}, {})
    assert kind == "state" and meta["mode"] == "armed", meta
    quaternion = state["tcp_quaternion"]
    target = state["tcp_position"].copy()
    for _ in range(5):  # close the fingers where the arm is
        kind, meta, state = robot.handle("step", {"gripper": 0.0}, {"target_position": target,
                                                                     "target_quaternion": quaternion})
    target[2] = table_z - 0.10
    contact_step = None
    for step in range(400):  # ~0.31 m down at 0.01 m/s, then held for >= 5 s
        kind, meta, state = robot.handle("step", {}, {"target_position": target, "target_quaternion": quaternion})
        assert kind == "state", meta
        if contact_step is None and forces[-1] > 1.0:
            contact_step = step
    assert contact_step is not None and contact_step < 350, "never reached the table"
    last_second = np.array(forces[-500:])
    print(f"through the server: contact at step {contact_step}, peak {max(forces):.2f} N, "
          f"steady {last_second.mean():.2f} N (bound 10 N), estimated {np.linalg.norm(state['external_wrench'][:3]):.2f} N")
    assert max(forces) <= 10.0 + 3.0
    assert last_second.mean() == pytest.approx(10.0, abs=0.3)
    assert state["tcp_position"][2] - table_z > -0.005  # on the table, not 10 cm through it
    assert np.linalg.norm(state["external_wrench"][:3]) == pytest.approx(last_second.mean(), abs=1.0)
    assert meta["mode"] == "tracking" and any(name == "error_clipped" for name, _ in meta["flags"])
    np.testing.assert_allclose(state["reference_position"], target, atol=1e-9)  # not clipped by the box


def test_the_scripted_expert_reaches_over_zeromq_on_the_position_controlled_mirror():
    done = subprocess.run([sys.executable, "-m", "robostack.cli", "expert", "--task", "reach",
                           "--backend", "mujoco-position", "--episodes", "3"],
                          capture_output=True, text=True, env=ENV, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "mujoco-position mirror: scripted expert success rate 100.0% (3/3)" in done.stdout, done.stdout[-2000:]


def test_the_soft_start_softens_the_spring_but_never_the_force_bound():
    robot = server("force_bound=12")
    robot.handle("reset", {"seed": 0}, {})
    robot.handle("disarm", {}, {})
    robot.run_ticks(50)
    robot.handle("arm", {}, {})
    robot.run_ticks(5)
    law = robot.law.controller.gains
    assert robot._scale < 1.0 and law.stiffness < robot.gains.stiffness
    assert law.stiffness * law.error_clip == pytest.approx(12.0 - law.dead_band)
    robot.run_ticks(round(robot.config.soft_start_time / robot.period) + 10)
    assert robot._scale == 1.0 and robot.law.controller.gains == robot.gains


def test_a_broken_force_sensor_halts_and_faults_and_a_fault_reset_disarms():
    robot = server()
    kind, meta, state = robot.handle("reset", {"seed": 0}, {})
    healthy = robot.backend.external_wrench
    robot.backend.external_wrench = lambda: np.full(6, np.nan)
    target = {"target_position": state["tcp_position"] + [0.05, 0, 0], "target_quaternion": state["tcp_quaternion"]}
    kind, meta, state = robot.handle("step", {}, target)
    assert meta["mode"] == "fault", meta
    assert "wrench_not_finite" in str(meta["supervisor"]) and "force/torque sensor" in str(meta["supervisor"])
    kind, meta, _ = robot.handle("step", {}, target)
    assert kind == "error" and "fault" in meta["error"], meta
    robot.backend.external_wrench = healthy
    kind, meta, _ = robot.handle("fault_reset", {}, {})
    assert meta["mode"] == "disarmed", meta


def test_requests_a_position_controlled_arm_answers_differently():
    robot = server()
    kind, meta, _ = robot.handle("gains", {"translational_stiffness": 100.0}, {})
    assert kind == "error" and "position-controlled" in meta["error"] and "translational_stiffness" in meta["error"]
    kind, meta, _ = robot.handle("reset", {"drive": True}, {})
    assert kind == "error" and "move_joints" in meta["error"] and "without drive" in meta["error"], meta
    stats = robot.handle("stats", {}, {})[1]
    assert stats["law"] == "admittance" and stats["gains"]["force_bound"] == 15.0
    hello = robot.handle("hello", {}, {})[1]
    assert hello["control_mode"] == "cartesian_position" and hello["control_period"] == pytest.approx(0.002)
    with pytest.raises(ValueError, match="unknown gain 'force'.*force_bound"):
        RobotServerConfig(backend="mujoco-position", admittance_gains="force=3")
    with pytest.raises(ValueError, match="must exceed the dead band"):
        RobotServerConfig(backend="mujoco-position", admittance_gains="force_bound=0.5")
