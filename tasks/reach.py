"""reach: bring the tcp to a goal point above the table (the fast smoke-test task).

Scene:        the Panda on its table and a visual-only goal marker; a front camera (128 x 128,
              tasks/common.py) that the mirror renders (sim/mujoco_cameras.py).
Reset:        the goal appears uniformly in goal_x x goal_y x goal_height (base frame; the height
              above the table top).
Observations: goal position and goal-minus-tcp offset (m, base frame).
Success:      the tcp within success_radius of the goal; the episode terminates.
Reward:       sparse 1 on success; `dense_reward=True` gives -distance (m) instead.
Parameters:   `ReachParams` (units and defaults there; set them with --task-params).
The gripper is not part of the action.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.scene import Marker, Scene, Table, World
from tasks.common import Outcome, TaskConfig, configure, front_camera
from tasks.params import TaskParams, parameter

GOAL_COLOUR = (0.2, 0.8, 0.2, 0.6)


@dataclass(frozen=True)
class ReachParams(TaskParams):
    task_name = "reach"

    goal_x: float | tuple[float, float] = parameter(
        (0.35, 0.60), "m", "x of the goal, base frame", per_episode=True)
    goal_y: float | tuple[float, float] = parameter(
        (-0.15, 0.15), "m", "y of the goal, base frame", per_episode=True)
    goal_height: float | tuple[float, float] = parameter(
        (0.10, 0.30), "m", "height of the goal above the table top", per_episode=True)
    success_radius: float = parameter(
        0.03, "m", "success: tcp at most this far from the goal", positive=True)


def default_config() -> TaskConfig:
    return TaskConfig(control_gripper=False, max_episode_steps=50)


class Reach:
    name = "reach"
    Params = ReachParams
    state_fields = {"goal_position": 3, "goal_to_tcp": 3}

    def __init__(self, config: TaskConfig | None = None, params=None):
        self.config = configure(config or default_config(), ReachParams, params)
        self.params: ReachParams = self.config.params
        p = self.params
        # Until the first reset the goal sits at the centre of its region.
        self.goal = np.array([p.value("goal_x"), p.value("goal_y"),
                              p.table_height + p.value("goal_height")])

    def build_scene(self) -> Scene:
        p = self.params
        goal = Marker("goal", tuple(self.goal), radius=p.success_radius, colour=GOAL_COLOUR)
        return Scene(table=Table(height=p.table_height), markers=(goal,),
                     cameras=(front_camera(p.table_height),))

    def reset_scene(self, world: World, rng: np.random.Generator) -> None:
        p = self.params
        episode = p.sample(rng)  # goal_x, goal_y, goal_height: one draw per range
        self.goal = np.array([episode["goal_x"], episode["goal_y"],
                              p.table_height + episode["goal_height"]])
        world.set_marker_position("goal", self.goal)

    def observe(self, world: World, robot_state) -> dict[str, np.ndarray]:
        """Task fields of the observation; `robot_state`: the arm's `RobotState` (base frame)."""
        goal = world.marker_position("goal")
        return {"goal_position": goal, "goal_to_tcp": goal - robot_state.tcp_position}

    def evaluate(self, fields: dict[str, np.ndarray]) -> Outcome:
        distance = float(np.linalg.norm(fields["goal_to_tcp"]))
        success = distance <= self.params.success_radius
        reward = 1.0 if success else (-distance if self.config.dense_reward else 0.0)
        return Outcome(reward=reward, success=success, info={"distance": distance})

    def expert(self, seed: int | None = None, noise: float = 0.0) -> "ReachExpert":
        return ReachExpert(self.config, seed=seed, noise=noise)


class ReachExpert:
    """Proportional move toward the goal, in normalised action units."""

    def __init__(self, config: TaskConfig, seed: int | None = None, noise: float = 0.0):
        self.config = config
        self.noise = noise
        self.rng = np.random.default_rng(seed)

    def reset(self) -> None:
        pass

    def __call__(self, fields: dict[str, np.ndarray]) -> np.ndarray:
        move = np.clip(fields["goal_to_tcp"] / self.config.max_translation_step, -1.0, 1.0)
        action = list(move) + ([0.0, 0.0, 0.0] if self.config.control_rotation else [])
        if self.config.control_gripper:
            action.append(-1.0)
        action = np.asarray(action, dtype=np.float32)
        if self.noise > 0:
            action += self.rng.normal(0.0, self.noise, action.shape).astype(np.float32)
        return np.clip(action, -1.0, 1.0)
