"""Franka Panda limits from the Franka datasheet, shared by the controllers and the safety filter.

SI units: rad, Nm, Nm/s, m.
"""

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
