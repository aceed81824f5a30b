"""The admittance figure's experiment, shared by its test and benchmark: the mirror's Panda in
its position-controlled mode (sim/mujoco_position.py) presses its closed fingers into the table
under the admittance law (controllers/admittance.py), the target 10 cm below the table top.

`press` descends from `start_height` above the table at the law's own pace (its max_velocity,
which near a surface is the approach speed) and holds the deep target for `seconds`; it returns
the peak and the steady (last second's mean) contact force as MuJoCo's contact solution gives
them, the law's own wrench estimate at the end, and the tcp height.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from controllers.admittance import AdmittanceController, AdmittanceGains
from controllers.rotations import matrix_to_quat
from sim.mujoco_backend import MujocoBackend
from sim.mujoco_position import MujocoPositionMirror


@dataclass
class PressResult:
    peak_force: float  # N, the largest table contact force seen (1 ms resolution)
    steady_force: float  # N, the mean over the last second
    estimated_force: float  # N, |force| of the mirror's wrench estimate at the end (what the law saw)
    tcp_height: float  # m above the table top at the end


def closed_gripper_mirror(model) -> MujocoPositionMirror:
    backend = MujocoBackend(model)
    backend.set_gripper(0.0)
    for _ in range(300):  # let the fingers close
        backend.sense()
        backend.actuate(np.zeros(7))
    return MujocoPositionMirror(backend)


def move_to_height(mirror, table_z: float, height: float, seconds: float = 6.0) -> None:
    """Bring the tcp to `height` above the table with the default law (free space)."""
    s = mirror.backend.latest_state()
    law = AdmittanceController(mirror.control_period)
    law.reset(s.tcp_position, matrix_to_quat(s.tcp_rotation))
    target = s.tcp_position.copy()
    target[2] = table_z + height
    law.set_reference(target, matrix_to_quat(s.tcp_rotation))
    for _ in range(int(seconds / mirror.control_period)):
        mirror.command_tcp_target(*law.tick(mirror.external_wrench()))


def press(mirror, table_z: float, gains: AdmittanceGains, start_height: float = 0.01,
          depth: float = 0.10, seconds: float = 6.0) -> PressResult:
    move_to_height(mirror, table_z, start_height)
    mirror.hold_here()
    s = mirror.backend.latest_state()
    law = AdmittanceController(mirror.control_period, gains)
    quaternion = matrix_to_quat(s.tcp_rotation)
    law.reset(s.tcp_position, quaternion)
    target = s.tcp_position.copy()
    target[2] = table_z - depth
    law.set_reference(target, quaternion)
    forces = []
    for _ in range(int(seconds / mirror.control_period)):
        wrench = mirror.external_wrench()
        mirror.command_tcp_target(*law.tick(wrench))
        forces.append(mirror.table_contact_force())
    last_second = int(1.0 / mirror.control_period)
    return PressResult(float(max(forces)), float(np.mean(forces[-last_second:])),
                       float(np.linalg.norm(wrench[:3])), float(mirror.state.tcp_position[2] - table_z))


def approach_gains(bound: float, approach_speed: float | None) -> AdmittanceGains:
    """The default law with this force bound, its speed capped at `approach_speed` (None: the
    free-space speed the damper allows, (bound - dead band) / damping)."""
    gains = AdmittanceGains(force_bound=bound)
    return gains if approach_speed is None else replace(gains, max_velocity=approach_speed)
