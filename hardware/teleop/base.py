"""The teleop device interface: every device (keyboard, gamepad, SpaceMouse, the autopilot) is
read the same way, `device.read() -> TeleopReading`, and released with `device.close()`.

Frame: a reading is a command in the robot BASE frame (x forward from the base, y left, z up),
whatever the device's own axes are; each driver owns the rotation from its axes to the base
frame (`operator_yaw`: where the operator stands). Converting it into an env's action space
(which may be tool-relative) is robostack.env.actions.base_to_policy_action's job, not the driver's.

Units: normalised. translation and rotation in [-1, 1]^3 are fractions of the env's largest
step per policy period (TaskConfig.max_translation_step / max_rotation_step); rotation is a
rotation vector (axis * rate) about the base axes. gripper in [-1, 1] with the env's meaning
(tasks.common.gripper_command): > 0.5 close, < -0.5 open, otherwise keep.

Events: `intervene` is a level (true while the deadman is held: the human's action replaces the
policy's). `success`, `failure`, `rerecord` and `stop` are edges: true in exactly one reading
per press, so a caller polling at 10 Hz never sees one press twice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from controllers.rotations import rotvec_to_matrix


class DeviceUnavailable(RuntimeError):
    """The device cannot be used here; the message says why and what to do about it."""


@dataclass
class TeleopReading:
    translation: np.ndarray = field(default_factory=lambda: np.zeros(3))  # base frame, [-1, 1]
    rotation: np.ndarray = field(default_factory=lambda: np.zeros(3))  # base-frame rotvec rate, [-1, 1]
    gripper: float = 0.0  # > 0.5 close, < -0.5 open, else keep
    intervene: bool = False  # deadman held: this reading replaces the policy's action
    success: bool = False
    failure: bool = False
    rerecord: bool = False
    stop: bool = False
    timestamp: float = 0.0  # time.monotonic() of the newest raw input behind this reading

    def events(self) -> list[str]:
        return [name for name in ("intervene", "success", "failure", "rerecord", "stop")
                if getattr(self, name)]

    def describe(self) -> str:
        """One line for a live display."""
        t, r = self.translation, self.rotation
        return (f"xyz [{t[0]:+.2f} {t[1]:+.2f} {t[2]:+.2f}]  rot [{r[0]:+.2f} {r[1]:+.2f} {r[2]:+.2f}]  "
                f"grip {self.gripper:+.2f}  {' '.join(self.events()) or '-'}")


@runtime_checkable
class TeleopDevice(Protocol):
    name: str

    def read(self) -> TeleopReading:
        """The newest command; never blocks for input."""

    def close(self) -> None:
        """Release the device (restore the terminal, stop the reader thread)."""


# --- helpers shared by the drivers' pure mappings ------------------------------------------
def deadzone(value: np.ndarray, zone: float) -> np.ndarray:
    """Zero inside |v| < zone, then rescaled so the output still spans 0..1 (no jump at the edge:
    a stick just past the deadzone asks for a tiny motion, not `zone` of full speed)."""
    value = np.asarray(value, dtype=float)
    if zone <= 0:
        return np.clip(value, -1.0, 1.0)
    magnitude = np.clip((np.abs(value) - zone) / (1.0 - zone), 0.0, 1.0)
    return np.sign(value) * magnitude


def yaw_matrix(yaw: float) -> np.ndarray:
    """Rotation about base z by `yaw` (rad): device axes (operator frame) -> base frame.
    yaw=0: the operator stands behind the robot, facing the way base +x points."""
    return rotvec_to_matrix((0.0, 0.0, float(yaw)))


class EdgeDetector:
    """Button level -> press edge, so an event fires once per press."""

    def __init__(self):
        self.previous: dict = {}

    def pressed(self, name, level: bool) -> bool:
        was = self.previous.get(name, False)
        self.previous[name] = bool(level)
        return bool(level) and not was


def now() -> float:
    return time.monotonic()
