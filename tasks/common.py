"""What every task definition shares: its configuration and the shape of an outcome.

A task reads as scene, observations, reward, success, reset (see tasks/pick_cube.py). The same
definition runs on any simulated backend or a real arm: `build_scene` returns engine-neutral data
(sim/scene.py), `reset_scene` and `observe` act through the backend's world interface
(`sim.scene.World`), and on hardware their job is done by a person or a camera.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from controllers import franka
from sim.scene import Camera
from tasks.params import TaskParams

# The cameras tasks declare in their scenes (sim/scene.py Camera; frames and quaternion order
# there). Image size: 128 x 128 px, what the pixel policies are sized for.
CAMERA_SIZE = 128  # px, width and height


def front_camera(table_height: float, size: int = CAMERA_SIZE) -> Camera:
    """A world-fixed camera facing the robot across the table, looking at the workspace centre.
    Pose in the base frame; it rises with the table top (z = `table_height`)."""
    return Camera("front", position=(1.25, 0.0, table_height + 0.6),
                  look_at=(0.45, 0.0, table_height + 0.15), fovy=50.0, width=size, height=size)


def wrist_camera(size: int = CAMERA_SIZE) -> Camera:
    """A camera on the Franka Hand (body `panda_hand`, frame: origin at the flange, z toward the
    fingertips, fingers opening along +-y), beside the hand along its +x, looking past the
    fingertips (the tcp is 0.105 m down the hand's z axis). Pose in the hand frame."""
    return Camera("wrist", position=(0.07, 0.0, 0.03), look_at=(0.0, 0.0, 0.16), fovy=70.0,
                  width=size, height=size, attached_to="panda_hand")


@dataclass
class TaskConfig:
    """Knobs shared by all tasks. Units: SI; positions in the robot `base` frame."""

    policy_hz: float = 10.0  # env steps per second of robot time
    max_episode_steps: int = 100  # time limit -> `truncated`, never `terminated`
    # Action scaling: an action component of +-1 asks for this much motion in one env step.
    max_translation_step: float = 0.03  # m
    max_rotation_step: float = 0.2  # rad
    control_rotation: bool = False  # False: the gripper keeps pointing down, action = xyz+grip
    control_gripper: bool = True
    # Safety box for the tcp target, enforced by the robot server below the policy. These are the
    # bounds for a table top at z = 0; the box stands on the table and rises with table_height.
    workspace_min: tuple[float, float, float] = (0.25, -0.35, 0.0)
    workspace_max: tuple[float, float, float] = (0.75, 0.35, 0.45)
    home_q: tuple[float, ...] = franka.HOME_Q
    home_joint_noise: float = 0.0  # rad, uniform +- noise on every joint at reset
    home_tcp_noise: float = 0.02  # m, uniform +- noise of the start tcp position (xy)
    dense_reward: bool = False
    seed: int | None = None
    # The task's physical parameters (tasks/params.py): its own dataclass, filled in by the task;
    # a dict of some of them (as parse_task_params returns) or None (defaults) before that.
    params: TaskParams | dict | None = None
    # What the policy sees (robostack/env/spaces.py). cameras: names of the scene's cameras whose
    # images are observations ("images/<name>"); () none. observed_state: the state fields in the
    # "state" vector (robot fields and the task's, kept in their canonical order); () all of
    # them. Pixels plus proprioception without object state: cameras=("front", "wrist"),
    # observed_state=("tcp_position", "tcp_quaternion", "tcp_velocity", "gripper_width").
    cameras: tuple[str, ...] = ()
    observed_state: tuple[str, ...] = ()

    def action_dim(self) -> int:
        return 3 + (3 if self.control_rotation else 0) + (1 if self.control_gripper else 0)


def configure(config: TaskConfig, params_class: type[TaskParams], params=None) -> TaskConfig:
    """`config` with its `params` made a `params_class` instance, `params` (an instance, or a dict
    of some parameters) applied over them. The workspace box stands on the table: when the table
    height changes, the box moves up or down with it, so configuring twice moves it once."""
    current = params_class.from_value(config.params)
    if params is None:
        new = current
    elif isinstance(params, params_class):
        new = params
    else:
        new = current.updated(dict(params))
    rise = new.table_height - current.table_height
    lo, hi = config.workspace_min, config.workspace_max
    return dataclasses.replace(
        config, params=new,
        workspace_min=(lo[0], lo[1], lo[2] + rise) if rise else lo,
        workspace_max=(hi[0], hi[1], hi[2] + rise) if rise else hi,
    )


@dataclass
class Outcome:
    reward: float
    success: bool = False
    failure: bool = False
    info: dict = field(default_factory=dict)


def gripper_command(action_value: float, last_command: float, max_width: float) -> float:
    """The gripper action's meaning, shared by env, experts and the discrete gripper critic:
    > +0.5 close, < -0.5 open, otherwise keep the last width command (m)."""
    if action_value > 0.5:
        return 0.0
    if action_value < -0.5:
        return max_width
    return float(np.clip(last_command, 0.0, max_width))
