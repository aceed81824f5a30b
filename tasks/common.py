"""What every task definition shares: its configuration and the shape of an outcome.

A task reads as scene, observations, reward, success, reset (see tasks/pick_cube.py). The same
definition runs against the MuJoCo mirror or a real arm: only `build_scene`, `reset_scene` and
`observe` touch the simulator, and on hardware their job is done by a person or a camera.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sim import panda_model


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
    # Safety box for the tcp target, enforced by the robot server below the policy.
    workspace_min: tuple[float, float, float] = (0.25, -0.35, 0.0)
    workspace_max: tuple[float, float, float] = (0.75, 0.35, 0.45)
    home_q: tuple[float, ...] = tuple(panda_model.HOME_Q)
    home_joint_noise: float = 0.0  # rad, uniform +- noise on every joint at reset
    home_tcp_noise: float = 0.02  # m, uniform +- noise of the start tcp position (xy)
    dense_reward: bool = False
    seed: int | None = None

    def action_dim(self) -> int:
        return 3 + (3 if self.control_rotation else 0) + (1 if self.control_gripper else 0)


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
