"""pick_cube: grasp a cube lying on the table and lift it.

Scene:        the Panda on its table and one cube (4 cm, 100 g by default); a front camera fixed
              across the table and a wrist camera on the hand (128 x 128 each, tasks/common.py),
              which the mirror renders (sim/mujoco_cameras.py).
Reset:        the cube appears uniformly in the spawn region (cube_x x cube_y, base frame), resting
              on the table, edges aligned with the base axes; the arm starts near its home pose.
Observations: cube position (m, base frame) and its offset from the tcp, on top of the robot
              fields the env always provides. In the mirror these come from the simulator; on a
              real arm a perception module or a camera-based policy takes their place.
Success:      the cube's centre is lift_height above the table top and within hold_radius of the
              tcp, i.e. lifted and held in the gripper, not tossed. The episode terminates.
Failure:      none (a dropped cube can be picked up again until the time limit).
Reward:       sparse, 1 on the success step, else 0. `dense_reward=True` adds shaping:
              0.3 * exp(-20 * distance tcp-cube) + 0.7 * lift progress, each in [0, 1].
Parameters:   `PickCubeParams` (units and defaults there; set them with --task-params).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from controllers import franka
from sim.scene import Box, Scene, Table, World
from tasks.common import Outcome, TaskConfig, configure, front_camera, wrist_camera
from tasks.params import TaskParams, parameter

CUBE_COLOUR = (0.85, 0.2, 0.2, 1.0)
REST_XY = (0.5, 0.0)  # m, where the cube rests in the compiled scene, until the first reset


@dataclass(frozen=True)
class PickCubeParams(TaskParams):
    task_name = "pick_cube"

    # The spawn region comes first: its draws are today's, whatever else is randomised.
    cube_x: float | tuple[float, float] = parameter(
        (0.40, 0.58), "m", "x of the cube centre at reset, base frame", per_episode=True)
    cube_y: float | tuple[float, float] = parameter(
        (-0.12, 0.12), "m", "y of the cube centre at reset, base frame", per_episode=True)
    cube_mass: float | tuple[float, float] = parameter(
        0.1, "kg", "mass of the cube", per_episode=True, positive=True)
    cube_half_size: float = parameter(0.02, "m", "half the cube's edge", positive=True)
    lift_height: float = parameter(
        0.10, "m", "success: cube centre at least this far above the table top", positive=True)
    hold_radius: float = parameter(
        0.03, "m", "success: cube centre at most this far from the tcp", positive=True)

    def __post_init__(self):
        super().__post_init__()
        if 2 * self.cube_half_size >= franka.GRIPPER_MAX_WIDTH:
            raise ValueError(f"pick_cube parameter cube_half_size (m): a {2 * self.cube_half_size:g} m "
                             f"cube does not fit the open gripper ({franka.GRIPPER_MAX_WIDTH:g} m)")


def default_config() -> TaskConfig:
    # The scripted expert needs ~25 steps (2.5 s); 50 leaves twice that. Longer episodes only add
    # steps spent far from the cube after a miss, and fewer resets mean fewer start states seen.
    return TaskConfig(max_episode_steps=50)


class PickCube:
    name = "pick_cube"
    Params = PickCubeParams
    # Task fields of the observation (name -> size), appended to the robot fields by the env.
    state_fields = {"cube_position": 3, "cube_to_tcp": 3}

    def __init__(self, config: TaskConfig | None = None, params=None):
        self.config = configure(config or default_config(), PickCubeParams, params)
        self.params: PickCubeParams = self.config.params

    # --- scene (mirror only) ----------------------------------------------------------------
    def build_scene(self) -> Scene:
        p = self.params
        half = p.cube_half_size
        cube = Box("cube", (half, half, half), p.value("cube_mass"), CUBE_COLOUR,
                   (REST_XY[0], REST_XY[1], p.table_height + half))
        # Cameras are part of the scene (the mirror renders them, sim/mujoco_cameras.py); the
        # env observes those its config's `cameras` names (robostack/env/spaces.py).
        return Scene(table=Table(height=p.table_height), objects=(cube,),
                     cameras=(front_camera(p.table_height), wrist_camera()))

    def reset_scene(self, world: World, rng: np.random.Generator) -> None:
        p = self.params
        episode = p.sample(rng)  # cube_x, cube_y, then cube_mass: one draw per range
        if p.is_range("cube_mass"):
            world.set_object_mass("cube", episode["cube_mass"])
        position = (episode["cube_x"], episode["cube_y"], p.table_height + p.cube_half_size)
        world.set_object_pose("cube", position, (1.0, 0.0, 0.0, 0.0))

    def observe(self, world: World, robot_state) -> dict[str, np.ndarray]:
        """Task fields of the observation; `robot_state`: the arm's `RobotState` (base frame)."""
        cube = world.object_pose("cube")[0]
        return {"cube_position": cube, "cube_to_tcp": robot_state.tcp_position - cube}

    # --- reward and success (pure functions of the observation fields) -------------------------
    def evaluate(self, fields: dict[str, np.ndarray]) -> Outcome:
        p = self.params
        cube = fields["cube_position"]
        lift = cube[2] - p.table_height - p.cube_half_size  # bottom face above the table top
        distance = float(np.linalg.norm(fields["cube_to_tcp"]))
        success = bool(lift >= p.lift_height - p.cube_half_size and distance <= p.hold_radius)
        reward = 1.0 if success else 0.0
        if self.config.dense_reward and not success:
            reward = 0.3 * np.exp(-20 * distance) + 0.7 * np.clip(lift / p.lift_height, 0, 1)
        return Outcome(reward=float(reward), success=success, info={"lift": float(lift)})

    def plausible_success(self, fields: dict[str, np.ndarray]) -> bool:
        """Proprioception only (what a real arm measures too): the gripper closed on something
        narrower than its opening and the tcp clear of the table. A learned success classifier's
        decision counts only where this holds (HIL-SERL's sanity check)."""
        p = self.params
        return bool(fields["gripper_width"][0] < 0.9 * franka.GRIPPER_MAX_WIDTH
                    and fields["tcp_position"][2] > p.table_height + p.lift_height / 2)

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
    LIFT_TO = 0.22  # m, tcp height above the table top to lift to (at least lift_height + 5 cm)

    def __init__(self, config: TaskConfig, seed: int | None = None, noise: float = 0.0):
        self.config = config
        params = PickCubeParams.from_value(config.params)
        self.lift_to = params.table_height + max(self.LIFT_TO, params.lift_height + 0.05)  # m, base z
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
            move = self._move(tcp, np.array([tcp[0], tcp[1], self.lift_to]))
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
