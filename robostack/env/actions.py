"""Action <-> target mapping and base/tool frame conversions: the one copy the env, teleop and replay use."""

from __future__ import annotations

import numpy as np

from controllers.rotations import quat_multiply, rotvec_to_quat
from hardware.teleop.base import TeleopReading
from tasks import TaskConfig

FRAMES = ("base", "tool")


# --- frames -------------------------------------------------------------------------------------
def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z), as everywhere in controllers/rotations.py -> rotation matrix.
    For the tcp quaternion this maps tool-frame vectors to base-frame vectors."""
    w, x, y, z = np.asarray(q, dtype=float) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def _fit_unit_box(vector: np.ndarray) -> np.ndarray:
    """Rotating a vector of [-1, 1]^3 can push a component past 1 (up to sqrt 3). Shrink the whole
    vector instead of clipping components, so the direction the human asked for is kept."""
    largest = float(np.abs(vector).max(initial=0.0))
    return vector / largest if largest > 1.0 else vector


def base_to_policy_action(reading: TeleopReading, config: TaskConfig,
                          tcp_quaternion: np.ndarray | None = None, frame: str = "base") -> np.ndarray:
    """A device reading (base frame) -> the env's action (float32, config.action_dim()).

    frame="base": the env applies xyz and rotation about the base axes (robostack.env.RobotEnv).
    frame="tool": the env applies them about the tcp's own axes (position += R @ xyz,
    orientation = q * exp(rotvec)); the base command is rotated into the tcp frame by R^T, R the
    rotation of the CURRENT measured `tcp_quaternion` (w, x, y, z). Storing the base command
    unconverted in a tool-frame env is the classic bug: the learner then sees actions that
    moved the arm somewhere else.
    """
    if frame not in FRAMES:
        raise ValueError(f"frame must be one of {FRAMES}, got {frame!r}")
    translation = np.asarray(reading.translation, dtype=float)
    rotation = np.asarray(reading.rotation, dtype=float)
    if frame == "tool":
        if tcp_quaternion is None:
            raise ValueError("a tool-frame action needs the current tcp_quaternion (w, x, y, z)")
        to_tool = quat_to_matrix(tcp_quaternion).T
        translation, rotation = to_tool @ translation, to_tool @ rotation
    action = list(_fit_unit_box(translation))
    if config.control_rotation:
        action += list(_fit_unit_box(rotation))
    if config.control_gripper:
        action.append(float(np.clip(reading.gripper, -1.0, 1.0)))
    return np.asarray(action, dtype=np.float32)


def policy_to_base(action: np.ndarray, config: TaskConfig, tcp_quaternion: np.ndarray | None = None,
                   frame: str = "base") -> TeleopReading:
    """The inverse of base_to_policy_action: an env action as a base-frame command."""
    action = np.asarray(action, dtype=float)
    translation = action[:3]
    rotation = action[3:6] if config.control_rotation else np.zeros(3)
    if frame == "tool":
        to_base = quat_to_matrix(tcp_quaternion)
        translation, rotation = to_base @ translation, to_base @ rotation
    gripper = float(action[-1]) if config.control_gripper else 0.0
    return TeleopReading(translation=translation, rotation=rotation, gripper=gripper)


def action_to_target(action: np.ndarray, tcp_position: np.ndarray, tcp_quaternion: np.ndarray,
                     config: TaskConfig, frame: str = "base") -> tuple[np.ndarray, np.ndarray]:
    """Where an env acting in `frame` sends the tcp for `action` (position m, quaternion w x y z).
    frame="base" is exactly RobotEnv._target's pose (tested against it); "tool" is the tool-
    relative variant. Used to check what a stored action would make the arm do."""
    action = np.asarray(action, dtype=float)
    R = quat_to_matrix(tcp_quaternion) if frame == "tool" else np.eye(3)
    position = np.asarray(tcp_position, dtype=float) + R @ action[:3] * config.max_translation_step
    quaternion = np.asarray(tcp_quaternion, dtype=float)
    if config.control_rotation:
        delta = rotvec_to_quat(action[3:6] * config.max_rotation_step)
        quaternion = quat_multiply(quaternion, delta) if frame == "tool" else quat_multiply(delta, quaternion)
    return position, quaternion
