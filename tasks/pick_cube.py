"""pick_cube: grasp a 4 cm cube lying on the table and lift it.

Scene:        the Panda on its table and one 4 cm, 100 g cube.
Reset:        the cube appears uniformly in SPAWN_MIN..SPAWN_MAX (base frame, on the table,
              edges aligned with the base axes); the arm starts near its home pose.
Observations: cube position (m, base frame) and its offset from the tcp, on top of the robot
              fields the env always provides. In the mirror these come from the simulator; on a
              real arm a perception module or a camera-based policy takes their place.
Success:      the cube's centre is LIFT_HEIGHT above the table and within HOLD_RADIUS of the tcp,
              i.e. lifted and held in the gripper, not tossed. The episode terminates.
Failure:      none (a dropped cube can be picked up again until the time limit).
Reward:       sparse, 1 on the success step, else 0. `dense_reward=True` adds shaping:
              0.3 * exp(-20 * distance tcp-cube) + 0.7 * lift progress, each in [0, 1].
"""

from __future__ import annotations

import mujoco
import numpy as np

from sim import scene
from tasks.common import Outcome, TaskConfig

CUBE_HALF_SIZE = 0.02  # m
CUBE_MASS = 0.1  # kg
SPAWN_MIN = np.array([0.40, -0.12])  # m, x y of the cube centre
SPAWN_MAX = np.array([0.58, 0.12])
LIFT_HEIGHT = 0.10  # m, cube centre above the table top for success
HOLD_RADIUS = 0.03  # m, cube centre to tcp


def default_config() -> TaskConfig:
    # The scripted expert needs ~25 steps (2.5 s); 50 leaves twice that. Longer episodes only add
    # steps spent far from the cube after a miss, and fewer resets mean fewer start states seen.
    return TaskConfig(max_episode_steps=50)


class PickCube:
    name = "pick_cube"
    # Task fields of the observation (name -> size), appended to the robot fields by the env.
    state_fields = {"cube_position": 3, "cube_to_tcp": 3}

    def __init__(self, config: TaskConfig | None = None):
        self.config = config or default_config()

    # --- scene (mirror only) ----------------------------------------------------------------
    def build_scene(self) -> mujoco.MjSpec:
        spec = scene.panda_on_table()
        scene.add_box(spec, "cube", CUBE_HALF_SIZE, CUBE_MASS, (0.85, 0.2, 0.2, 1.0),
                      (0.5, 0.0, CUBE_HALF_SIZE))
        return spec

    def reset_scene(self, backend, rng: np.random.Generator) -> None:
        xy = rng.uniform(SPAWN_MIN, SPAWN_MAX)
        joint = backend.model.joint("cube")
        qpos, dof = int(joint.qposadr[0]), int(joint.dofadr[0])
        backend.data.qpos[qpos:qpos + 7] = [xy[0], xy[1], CUBE_HALF_SIZE, 1.0, 0.0, 0.0, 0.0]
        backend.data.qvel[dof:dof + 6] = 0.0

    def observe(self, backend) -> dict[str, np.ndarray]:
        cube = backend.data.body("cube").xpos.copy()
        return {"cube_position": cube, "cube_to_tcp": backend.state.tcp_position - cube}

    # --- reward and success (pure functions of the observation fields) -------------------------
    def evaluate(self, fields: dict[str, np.ndarray]) -> Outcome:
        cube = fields["cube_position"]
        lift = cube[2] - CUBE_HALF_SIZE
        distance = float(np.linalg.norm(fields["cube_to_tcp"]))
        success = bool(lift >= LIFT_HEIGHT - CUBE_HALF_SIZE and distance <= HOLD_RADIUS)
        reward = 1.0 if success else 0.0
        if self.config.dense_reward and not success:
            reward = 0.3 * np.exp(-20 * distance) + 0.7 * np.clip(lift / LIFT_HEIGHT, 0, 1)
        return Outcome(reward=float(reward), success=success, info={"lift": float(lift)})

    def expert(self, seed: int | None = None, noise: float = 0.0) -> "PickCubeExpert":
        return PickCubeExpert(self.config, seed=seed, noise=noise)


class PickCubeExpert:
    """A scripted demonstrator: hover above the cube, descend, close, lift.

    Acts on the same observation fields and emits the same normalised actions as a policy, so
    its episodes are valid demonstrations and it can later stand in for a human intervener.
    `noise` adds Gaussian action noise (in action units) for more varied demonstrations.
    """

    HOVER = 0.08  # m above the cube before descending
    GRASP_OFFSET = 0.0  # m, tcp height relative to the cube centre when closing
    CLOSE_STEPS = 4  # env steps to let the fingers close before lifting
    LIFT_TO = 0.22  # m, tcp height to lift to

    def __init__(self, config: TaskConfig, seed: int | None = None, noise: float = 0.0):
        self.config = config
        self.noise = noise
        self.rng = np.random.default_rng(seed)
        self.reset()

    def reset(self) -> None:
        self.phase = "approach"
        self.closed_for = 0

    def _move(self, tcp: np.ndarray, target: np.ndarray, gain: float = 1.0) -> np.ndarray:
        return np.clip(gain * (target - tcp) / self.config.max_translation_step, -1.0, 1.0)

    def __call__(self, fields: dict[str, np.ndarray]) -> np.ndarray:
        tcp, cube = fields["tcp_position"], fields["cube_position"]
        above = cube + [0.0, 0.0, self.HOVER]
        grasp = cube + [0.0, 0.0, self.GRASP_OFFSET]
        gripper = -1.0
        if self.phase == "approach":
            move = self._move(tcp, above)
            if np.linalg.norm((tcp - above)[:2]) < 0.01 and abs(tcp[2] - above[2]) < 0.03:
                self.phase = "descend"
        if self.phase == "descend":
            move = self._move(tcp, grasp)
            if np.linalg.norm(tcp - grasp) < 0.008:
                self.phase = "close"
        if self.phase == "close":
            move, gripper = self._move(tcp, grasp), 1.0
            self.closed_for += 1
            if self.closed_for >= self.CLOSE_STEPS:
                self.phase = "lift"
        if self.phase == "lift":
            gripper = 1.0
            move = self._move(tcp, np.array([tcp[0], tcp[1], self.LIFT_TO]))
            if np.linalg.norm(fields["cube_to_tcp"]) > 0.05:  # dropped or missed: start over
                self.reset()
                move, gripper = self._move(tcp, tcp + [0, 0, 0.05]), -1.0
        action = list(move)
        if self.config.control_rotation:
            action += [0.0, 0.0, 0.0]
        if self.config.control_gripper:
            action.append(gripper)
        action = np.asarray(action, dtype=np.float32)
        if self.noise > 0:
            action += self.rng.normal(0.0, self.noise, action.shape).astype(np.float32)
        return np.clip(action, -1.0, 1.0)
