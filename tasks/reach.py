"""reach: bring the tcp to a goal point above the table (the fast smoke-test task).

Scene:        the Panda on its table and a visual-only goal marker.
Reset:        the goal appears uniformly in GOAL_MIN..GOAL_MAX (base frame).
Observations: goal position and goal-minus-tcp offset (m, base frame).
Success:      the tcp within SUCCESS_RADIUS of the goal; the episode terminates.
Reward:       sparse 1 on success; `dense_reward=True` gives -distance (m) instead.
The gripper is not part of the action.
"""

from __future__ import annotations

import mujoco
import numpy as np

from sim import scene
from tasks.common import Outcome, TaskConfig

GOAL_MIN = np.array([0.35, -0.15, 0.10])
GOAL_MAX = np.array([0.60, 0.15, 0.30])
SUCCESS_RADIUS = 0.03  # m


def default_config() -> TaskConfig:
    return TaskConfig(control_gripper=False, max_episode_steps=50)


class Reach:
    name = "reach"
    state_fields = {"goal_position": 3, "goal_to_tcp": 3}

    def __init__(self, config: TaskConfig | None = None):
        self.config = config or default_config()
        self.goal = (GOAL_MIN + GOAL_MAX) / 2

    def build_scene(self) -> mujoco.MjSpec:
        spec = scene.panda_on_table()
        scene.add_marker(spec, "goal", (0.2, 0.8, 0.2, 0.6), self.goal, radius=SUCCESS_RADIUS)
        return spec

    def reset_scene(self, backend, rng: np.random.Generator) -> None:
        self.goal = rng.uniform(GOAL_MIN, GOAL_MAX)
        backend.model.site("goal").pos[:] = self.goal

    def observe(self, backend) -> dict[str, np.ndarray]:
        goal = backend.model.site("goal").pos.copy()
        return {"goal_position": goal, "goal_to_tcp": goal - backend.state.tcp_position}

    def evaluate(self, fields: dict[str, np.ndarray]) -> Outcome:
        distance = float(np.linalg.norm(fields["goal_to_tcp"]))
        success = distance <= SUCCESS_RADIUS
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
