"""Franka Panda constants: datasheet limits, shared by the controllers and the safety filter, and
the home posture every backend and task starts from.

SI units: rad, Nm, Nm/s, m.
"""

import math

# Joint position limits (rad).
JOINT_LOWER = (-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973)
JOINT_UPPER = (2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973)

# Joint torque limits (Nm): shoulder/elbow joints 1-4, wrist joints 5-7.
TORQUE_LIMITS = (87.0, 87.0, 87.0, 87.0, 12.0, 12.0, 12.0)

# Commanded torque may change by at most this much per second (1 Nm per 1 ms tick); libfranka
# aborts the motion with a discontinuity error above it.
MAX_TORQUE_RATE = 1000.0

# Distance between the fingertips of the Franka Hand (m).
GRIPPER_MAX_WIDTH = 0.08

# A comfortable "ready" configuration (rad, joints 1-7): tcp 0.43 m in front of the base and
# 0.32 m above it, gripper pointing down. The nullspace posture and the default reset target.
HOME_Q = (0.0, -0.35, 0.0, -2.45, 0.0, 2.1, math.pi / 4)
