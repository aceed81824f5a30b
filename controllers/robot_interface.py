"""The contract between control code and a robot: what a backend measures and what it accepts.

Real arms (hardware/) and the simulated mirrors (sim/) implement `RobotBackend`; the robot server
and the control laws only ever see this interface, so the same code drives both.

Conventions: SI units. Cartesian quantities are in the robot `base` frame. The `tcp` frame sits
between the fingertips, z pointing out of the gripper. The Jacobian maps joint velocities to the
tcp twist [linear (3); angular (3)] in the base frame. Torques exclude gravity: a Franka
compensates gravity in firmware and the mirrors do the same, so controllers never add it.
Quaternions, wherever they appear, are (w, x, y, z).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass
class RobotState:
    """One control tick's measurements. Backends may update these arrays in place every tick."""

    q: np.ndarray  # (7,) joint positions, rad
    dq: np.ndarray  # (7,) joint velocities, rad/s
    tcp_position: np.ndarray  # (3,) m, base frame
    tcp_rotation: np.ndarray  # (3, 3) rotation of tcp in base frame (columns = tcp axes)
    jacobian: np.ndarray  # (6, 7) tcp Jacobian, base frame, rows [linear; angular]
    coriolis: np.ndarray  # (7,) Coriolis/centrifugal torques, Nm (zero if unavailable)
    tau_external: np.ndarray  # (7,) estimated external joint torques, Nm (zero if unavailable)
    gripper_width: float = 0.0  # m, distance between the fingertips
    time: float = 0.0  # s, backend clock (simulated time in the mirror)
    extras: dict = field(default_factory=dict)


class RobotBackend(Protocol):
    """A torque-controlled 7-DoF arm with a parallel gripper, ticked by its owner at 1 kHz."""

    control_period: float  # s between ticks (0.001 for a Panda)
    torque_limits: np.ndarray  # (7,) Nm
    joint_lower: np.ndarray  # (7,) rad
    joint_upper: np.ndarray  # (7,) rad
    home_q: np.ndarray  # (7,) rad, default reset / nullspace posture
    gripper_max_width: float  # m

    def sense(self) -> RobotState:
        """Measurements for the current tick (on hardware: blocks until the tick arrives)."""

    def actuate(self, torque: np.ndarray) -> None:
        """Apply joint torques (gravity excluded) for this tick; the mirror advances one step."""

    def set_gripper(self, width: float) -> None:
        """Command the fingertip distance in metres (0 closes, gripper_max_width opens)."""

    def close(self) -> None:
        """Release the arm and any connection."""
