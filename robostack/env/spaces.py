"""The env's observation and action spaces, defined once: the env builds its spaces here, and
the learner (which has no env) builds the same ones from the task alone.

Observation (a gymnasium Dict):
  "state"             float32 vector, the robot fields then the task's fields, in this order:
                      tcp_position (3, m, base frame), tcp_quaternion (4, w x y z, base frame),
                      tcp_velocity (6, [m/s; rad/s], base frame), gripper_width (1, m), then
                      `task.state_fields` (pick_cube: cube_position, cube_to_tcp)
  "images/<camera>"   uint8 (height, width, 3), one per camera the task declares in
                      `task.cameras` ({name: (height, width)}); none for today's tasks
Action: float32 in [-1, 1], xyz (+ rotation vector) (+ gripper): `TaskConfig.action_dim()`.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from controllers.franka import GRIPPER_MAX_WIDTH

ROBOT_FIELDS = {"tcp_position": 3, "tcp_quaternion": 4, "tcp_velocity": 6, "gripper_width": 1}
# The state fields whose range is known whatever the task: a unit quaternion's components, and
# the fingertip distance between closed and fully open. The rest (positions, velocities, the
# task's fields) are unbounded: an object can fall off the table, an arm can be pushed.
KNOWN_BOUNDS = {"tcp_quaternion": (-1.0, 1.0), "gripper_width": (0.0, GRIPPER_MAX_WIDTH)}


def state_layout(task) -> dict[str, slice]:
    """Field name -> its slice of the state vector: the robot's fields, then the task's."""
    layout, offset = {}, 0
    for name, size in {**ROBOT_FIELDS, **task.state_fields}.items():
        layout[name] = slice(offset, offset + size)
        offset += size
    return layout


def state_bounds(task) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of the state vector: KNOWN_BOUNDS where a field has them, else infinite."""
    size = sum(ROBOT_FIELDS.values()) + sum(task.state_fields.values())
    low, high = np.full(size, -np.inf, np.float32), np.full(size, np.inf, np.float32)
    for name, where in state_layout(task).items():
        if name in KNOWN_BOUNDS:
            low[where], high[where] = KNOWN_BOUNDS[name]
    return low, high


def observation_space(task) -> gym.spaces.Dict:
    """The observation space of an env running `task` (a task object, `tasks.make_task`)."""
    low, high = state_bounds(task)
    spaces = {"state": gym.spaces.Box(low, high, low.shape, np.float32)}
    for camera, (height, width) in getattr(task, "cameras", {}).items():
        spaces[f"images/{camera}"] = gym.spaces.Box(0, 255, (height, width, 3), np.uint8)
    return gym.spaces.Dict(spaces)


def action_space(task_config) -> gym.spaces.Box:
    """The action space of an env with this `TaskConfig`."""
    return gym.spaces.Box(-1.0, 1.0, (task_config.action_dim(),), np.float32)
