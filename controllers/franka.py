"""Franka Panda constants: datasheet limits, shared by the controllers and the safety filter, and
the home posture every backend and task starts from.

SI units: rad, Nm, Nm/s, m.
"""

import math

# Joint position limits (rad).
JOINT_LOWER = (-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973)
JOINT_UPPER = (2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973)

# Franka Research 3 joint position limits (rad, its datasheet): narrower than the Panda's in
# joints 1, 2, 4, 5 and 6. A backend that cannot tell which arm it drives uses the intersection
# (`common_joint_limits`), inside both.
FR3_JOINT_LOWER = (-2.7437, -1.7837, -2.9007, -3.0421, -2.8065, 0.5445, -3.0159)
FR3_JOINT_UPPER = (2.7437, 1.7837, 2.9007, -0.1518, 2.8065, 4.5169, 3.0159)

# Joint torque limits (Nm): shoulder/elbow joints 1-4, wrist joints 5-7.
TORQUE_LIMITS = (87.0, 87.0, 87.0, 87.0, 12.0, 12.0, 12.0)

# Commanded torque may change by at most this much per second (1 Nm per 1 ms tick); libfranka
# aborts the motion with a discontinuity error above it.
MAX_TORQUE_RATE = 1000.0

# Distance between the fingertips of the Franka Hand (m).
GRIPPER_MAX_WIDTH = 0.08

# The tcp in the flange frame (libfranka's F): between the fingertips of the Franka Hand, 0.105 m
# beyond the flange along its z axis, turned -45 deg about z as the hand is mounted (the mirrors'
# `panda_grasptarget`). libfranka's own default end effector frame (F_T_EE of the Hand) sits
# 1.6 mm closer; a backend on a real arm maps its measured pose onto this one.
TCP_IN_FLANGE_XYZ = (0.0, 0.0, 0.105)
TCP_IN_FLANGE_YAW = -math.pi / 4

# A comfortable "ready" configuration (rad, joints 1-7): tcp 0.43 m in front of the base and
# 0.32 m above it, gripper pointing down. The nullspace posture and the default reset target.
HOME_Q = (0.0, -0.35, 0.0, -2.45, 0.0, 2.1, math.pi / 4)


def common_joint_limits() -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(lower, upper) joint limits (rad) inside both the Panda's and the FR3's."""
    return (tuple(max(a, b) for a, b in zip(JOINT_LOWER, FR3_JOINT_LOWER)),
            tuple(min(a, b) for a, b in zip(JOINT_UPPER, FR3_JOINT_UPPER)))
