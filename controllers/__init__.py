"""Control laws and safety filters for torque-controlled robot arms (Franka Panda): pure
computation, no I/O, nothing of ours imported; only numpy, numba (optional) and the stdlib.

Conventions, everywhere in this package:
- SI units: m, rad, N, Nm, s.
- Quaternions are (w, x, y, z), MuJoCo's order.
- Cartesian quantities are in the robot `base` frame; the controlled point is the `tcp` frame.
- The Jacobian J is 6x7, rows [linear velocity (3); angular velocity (3)] of the tcp in base,
  so twist = J @ dq.
- Torques exclude gravity: a Franka compensates it in firmware and the sim backend does the
  same, so the laws never add g(q); they add the Coriolis torques a backend supplies.

Modules:
- cartesian_impedance: the 1 kHz Cartesian impedance law and its stateful controller.
- joint_impedance: joint-space impedance for resets.
- admittance: Cartesian admittance for position-controlled arms (a UR): the commanded pose
  yields to the measured wrench; steady contact force bounded by design.
- safety: validation and filtering of incoming Cartesian commands, joint-limit guard.
- franka: the Panda's joint, torque and torque-rate limits.
- rotations: every quaternion / matrix / rotation-vector conversion (the one copy).

The laws are compiled with numba when it is installed and run uncompiled (same results, ~100x
slower) when it is not.
"""

from controllers._kernels import NUMBA_AVAILABLE
from controllers.cartesian_impedance import (
    CARTESIAN_FLAGS,
    CartesianImpedanceController,
    CartesianImpedanceGains,
    impedance_torque,
    orientation_error,
)
from controllers.joint_impedance import (
    JOINT_FLAGS,
    JointImpedanceController,
    JointImpedanceGains,
    joint_impedance_torque,
)
from controllers.rotations import matrix_to_quaternion
from controllers.safety import (
    CommandRejected,
    SafeCommand,
    SafetyLimits,
    filter_command,
    joint_limit_guard,
    validate_command,
)

__all__ = [
    "NUMBA_AVAILABLE",
    "CARTESIAN_FLAGS",
    "CartesianImpedanceController",
    "CartesianImpedanceGains",
    "impedance_torque",
    "matrix_to_quaternion",
    "orientation_error",
    "JOINT_FLAGS",
    "JointImpedanceController",
    "JointImpedanceGains",
    "joint_impedance_torque",
    "CommandRejected",
    "SafeCommand",
    "SafetyLimits",
    "filter_command",
    "joint_limit_guard",
    "validate_command",
]
