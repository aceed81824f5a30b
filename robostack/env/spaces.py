"""The env's observation and action spaces, defined once: the env builds its spaces here, and
the learner (which has no env) builds the same ones from the task alone.

Observation (a gymnasium Dict):
  "state"             float32 vector, the robot fields then the task's fields, in this order:
                      tcp_position (3, m, base frame), tcp_quaternion (4, w x y z, base frame),
                      tcp_velocity (6, [m/s; rad/s], base frame), gripper_width (1, m), then
                      `task.state_fields` (pick_cube: cube_position, cube_to_tcp); only those
                      in `TaskConfig.observed_state` when it names some (same order)
  "images/<camera>"   uint8 (height, width, 3) RGB, top row first, one per camera named in
                      `TaskConfig.cameras`, at the size the task's scene declares for it
                      (`build_scene().cameras`, tasks/common.py: 128 x 128)
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


def observed_fields(task) -> dict[str, int]:
    """{field: size} of the state vector: every robot and task field, or those the task config's
    `observed_state` names (in this canonical order, whatever order they were named in)."""
    every = {**ROBOT_FIELDS, **task.state_fields}
    chosen = tuple(task.config.observed_state)
    if not chosen:
        return every
    unknown = [name for name in chosen if name not in every]
    if unknown or len(set(chosen)) != len(chosen):
        problem = f"unknown {unknown}" if unknown else "a field named twice"
        raise ValueError(f"observed_state {list(chosen)}: {problem}; task {task.name} has the "
                         f"state fields {list(every)}")
    return {name: size for name, size in every.items() if name in chosen}


def state_layout(task) -> dict[str, slice]:
    """Field name -> its slice of the state vector (see `observed_fields`)."""
    layout, offset = {}, 0
    for name, size in observed_fields(task).items():
        layout[name] = slice(offset, offset + size)
        offset += size
    return layout


def camera_sizes(task) -> dict[str, tuple[int, int]]:
    """{camera: (height, width) px} of the cameras the task config observes, as the task's scene
    declares them; a name the scene lacks is refused, naming the ones it has."""
    chosen = tuple(task.config.cameras)
    if not chosen:
        return {}
    declared = {c.name: (c.height, c.width) for c in task.build_scene().cameras}
    unknown = [name for name in chosen if name not in declared]
    if unknown or len(set(chosen)) != len(chosen):
        problem = f"no camera {unknown} in" if unknown else "a camera named twice for"
        raise ValueError(f"cameras {list(chosen)}: {problem} task {task.name}'s scene; its "
                         f"cameras: {list(declared) or 'none'}")
    return {name: declared[name] for name in chosen}


def state_bounds(task) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of the state vector: KNOWN_BOUNDS where a field has them, else infinite."""
    size = sum(observed_fields(task).values())
    low, high = np.full(size, -np.inf, np.float32), np.full(size, np.inf, np.float32)
    for name, where in state_layout(task).items():
        if name in KNOWN_BOUNDS:
            low[where], high[where] = KNOWN_BOUNDS[name]
    return low, high


def observation_space(task) -> gym.spaces.Dict:
    """The observation space of an env running `task` (a task object, `tasks.make_task`)."""
    low, high = state_bounds(task)
    spaces = {"state": gym.spaces.Box(low, high, low.shape, np.float32)}
    for camera, (height, width) in camera_sizes(task).items():
        spaces[f"images/{camera}"] = gym.spaces.Box(0, 255, (height, width, 3), np.uint8)
    return gym.spaces.Dict(spaces)


def action_space(task_config) -> gym.spaces.Box:
    """The action space of an env with this `TaskConfig`."""
    return gym.spaces.Box(-1.0, 1.0, (task_config.action_dim(),), np.float32)
