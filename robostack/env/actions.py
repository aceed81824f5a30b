"""Action <-> target mapping and base/tool frame conversions: the one copy the env, teleop and
replay use.

An env action (float32, TaskConfig.action_dim()) is an end-effector delta per policy step:
xyz in [-1, 1]^3 scaled by max_translation_step (m); with control_rotation, a rotation vector in
[-1, 1]^3 scaled by max_rotation_step (rad); with control_gripper, a last component with
tasks.common.gripper_command's meaning (> 0.5 close, < -0.5 open, else keep). Components
outside [-1, 1] are clipped. In the `base` frame (what RobotEnv does) the delta is along and
about the base axes; in the `tool` frame along and about the tcp's own axes.
"""

from __future__ import annotations

import numpy as np

from controllers.rotations import quat_multiply, quat_to_matrix, rotvec_to_quat
from hardware.teleop.base import TeleopReading
from tasks import TaskConfig
from tasks.common import gripper_command

FRAMES = ("base", "tool")


def action_frame_to_base(frame: str, tcp_quaternion: np.ndarray | None) -> np.ndarray:
    """The rotation (3, 3) taking an action's xyz and rotation-vector parts into the base frame:
    the identity for a base-frame env, the rotation of the measured `tcp_quaternion` (w, x, y,
    z; tcp in base) for a tool-frame env. Its transpose goes the other way."""
    if frame not in FRAMES:
        raise ValueError(f"frame must be one of {FRAMES}, got {frame!r}")
    if frame == "base":
        return np.eye(3)
    if tcp_quaternion is None:
        raise ValueError("a tool-frame action needs the current tcp_quaternion (w, x, y, z)")
    return quat_to_matrix(tcp_quaternion)


# --- the action -> target mapping ---------------------------------------------------------------
def action_to_target(action: np.ndarray, tcp_position: np.ndarray, tcp_quaternion: np.ndarray,
                     config: TaskConfig, frame: str = "base",
                     held_quaternion: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Where `action` sends the tcp from its measured pose: (position m, quaternion w x y z),
    both in the base frame. RobotEnv steps with exactly this (frame="base").

    position = tcp_position + R @ xyz * max_translation_step, R = I in the base frame, the tcp's
    rotation in the tool frame. With control_rotation, delta = exp(rotvec * max_rotation_step)
    turns the measured orientation about the base axes (delta ⊗ q) or the tool axes (q ⊗ delta).
    Without it the orientation is not the policy's to change: the target keeps
    `held_quaternion` (the env passes the orientation its reset left, so tracking errors never
    accumulate into a drift), or the measured orientation when None.
    """
    action = np.clip(np.asarray(action, dtype=float), -1.0, 1.0)
    tcp_quaternion = np.asarray(tcp_quaternion, dtype=float)
    to_base = action_frame_to_base(frame, tcp_quaternion)
    position = np.asarray(tcp_position, dtype=float) + to_base @ action[:3] * config.max_translation_step
    if config.control_rotation:
        delta = rotvec_to_quat(action[3:6] * config.max_rotation_step)
        quaternion = (quat_multiply(tcp_quaternion, delta) if frame == "tool"
                      else quat_multiply(delta, tcp_quaternion))
    else:
        quaternion = tcp_quaternion if held_quaternion is None else np.asarray(held_quaternion, dtype=float)
    return position, quaternion


def gripper_target(action: np.ndarray, config: TaskConfig, last_width: float, max_width: float) -> float:
    """The gripper width command (m) after `action`: with control_gripper its last component
    closes (> 0.5), opens (< -0.5) or keeps `last_width`; without, `last_width` is kept."""
    if not config.control_gripper:
        return float(last_width)
    return gripper_command(float(action[-1]), last_width, max_width)


# --- base <-> tool frame conversion of teleop commands ------------------------------------------
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
    to_action_frame = action_frame_to_base(frame, tcp_quaternion).T
    translation = to_action_frame @ np.asarray(reading.translation, dtype=float)
    rotation = to_action_frame @ np.asarray(reading.rotation, dtype=float)
    action = list(_fit_unit_box(translation))
    if config.control_rotation:
        action += list(_fit_unit_box(rotation))
    if config.control_gripper:
        action.append(float(np.clip(reading.gripper, -1.0, 1.0)))
    return np.asarray(action, dtype=np.float32)


def policy_to_base(action: np.ndarray, config: TaskConfig, tcp_quaternion: np.ndarray | None = None,
                   frame: str = "base") -> TeleopReading:
    """The inverse of base_to_policy_action: an env action as a base-frame command."""
    to_base = action_frame_to_base(frame, tcp_quaternion)
    action = np.asarray(action, dtype=float)
    translation = to_base @ action[:3]
    rotation = to_base @ action[3:6] if config.control_rotation else np.zeros(3)
    gripper = float(action[-1]) if config.control_gripper else 0.0
    return TeleopReading(translation=translation, rotation=rotation, gripper=gripper)

