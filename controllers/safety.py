"""The safety filter every Cartesian command passes before it reaches the controller, identical on
the simulated mirror and the real arm.

Conventions: SI units (m, rad). Positions and quaternions (w, x, y, z) are of the tcp, in the
robot `base` frame. The gripper command is the fingertip distance in m.

Two steps, both pure functions:
1. `validate_command` rejects what cannot be a command at all (wrong shape, NaN, zero
   quaternion, not a number) with `CommandRejected`, whose message names the field, the problem
   and the fix. A rejected command changes nothing: the arm keeps its current reference.
2. `filter_command` makes a valid command safe: clip the target into the workspace box, cap the
   step from the current reference, normalize the quaternion, clip the gripper width. It returns
   the safe target and a `(flag, reason)` for every change it made, which the robot server puts
   in its state message.

`joint_limit_guard` reports joints within a margin of their limits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from controllers.franka import GRIPPER_MAX_WIDTH, JOINT_LOWER, JOINT_UPPER

_AXES = "xyz"


class CommandRejected(ValueError):
    """A command that cannot be interpreted; the message says which field, what is wrong, and
    what to send instead."""


@dataclass(frozen=True)
class SafetyLimits:
    """Where and how fast a commanded target may move. Tasks override the box for their scene."""

    workspace_min: tuple[float, float, float] = (0.25, -0.45, 0.02)  # m, tcp position, base frame
    workspace_max: tuple[float, float, float] = (0.80, 0.45, 0.70)  # m
    # Largest move of the target per command, relative to the current reference. At a 10 Hz
    # policy rate 5 cm and 0.25 rad per command are 0.5 m/s and 2.5 rad/s: faster than any
    # learned policy should ask, slow enough to stop a runaway within one step.
    max_position_step: float = 0.05  # m (Euclidean norm)
    max_rotation_step: float = 0.25  # rad (rotation angle)
    gripper_min: float = 0.0  # m
    gripper_max: float = GRIPPER_MAX_WIDTH  # m

    def __post_init__(self):
        lo = np.asarray(self.workspace_min, dtype=float)
        hi = np.asarray(self.workspace_max, dtype=float)
        if lo.shape != (3,) or hi.shape != (3,) or not (np.isfinite(lo).all() and np.isfinite(hi).all()):
            raise ValueError(f"workspace_min/max: need 3 finite numbers each (x, y, z in m), got {self.workspace_min}, {self.workspace_max}")
        if (lo > hi).any():
            raise ValueError(f"workspace_min {lo.tolist()} must be <= workspace_max {hi.tolist()} on every axis")
        for name in ("max_position_step", "max_rotation_step"):
            value = getattr(self, name)
            if not value > 0.0:
                raise ValueError(f"{name}: must be > 0, got {value}")
        if not 0.0 <= self.gripper_min <= self.gripper_max:
            raise ValueError(f"gripper range: need 0 <= gripper_min <= gripper_max, got [{self.gripper_min}, {self.gripper_max}] m")


@dataclass
class SafeCommand:
    """A command after the safety filter, plus what the filter changed and why."""

    position: np.ndarray  # (3,) m, base frame
    quaternion: np.ndarray  # (4,) unit, (w, x, y, z)
    gripper: float | None  # m, or None when the command had no gripper part
    flags: list[tuple[str, str]] = field(default_factory=list)  # (flag, reason)


def _as_vector(value, n: int, name: str, meaning: str) -> np.ndarray:
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise CommandRejected(f"{name}: not numeric ({type(value).__name__} {value!r}); send {n} numbers, {meaning}") from None
    if a.shape != (n,):
        raise CommandRejected(f"{name}: expected shape ({n},), got shape {a.shape}; send {n} numbers, {meaning}")
    bad = np.flatnonzero(~np.isfinite(a))
    if bad.size:
        raise CommandRejected(f"{name}: non-finite value at index {bad.tolist()} ({a.tolist()}); send {n} finite numbers, {meaning}")
    return a


def validate_command(position, quaternion, gripper=None):
    """Check a command's fields; return (position (3,), unit quaternion (4,), gripper float | None).

    Raises CommandRejected naming the field, the problem and the fix. The quaternion may have any
    non-zero norm (it is normalized); the gripper may be None (no gripper command).
    """
    position, quaternion, gripper, _ = _validate(position, quaternion, gripper)
    return position, quaternion, gripper


def _validate(position, quaternion, gripper):
    position = _as_vector(position, 3, "position", "x, y, z of the tcp in m, base frame")
    quaternion = _as_vector(quaternion, 4, "quaternion", "(w, x, y, z) of the tcp orientation in base frame")
    norm = float(np.linalg.norm(quaternion))
    if not norm > 1e-6:
        raise CommandRejected(f"quaternion: norm {norm:.3g} is too small to normalize; send (w, x, y, z) with "
                              f"non-zero norm, e.g. (1, 0, 0, 0) for the base orientation")
    if gripper is not None:
        g = np.asarray(gripper)
        if g.shape != () or not (np.issubdtype(g.dtype, np.floating) or np.issubdtype(g.dtype, np.integer)) \
                or g.dtype == np.bool_:
            raise CommandRejected(f"gripper: expected one number (fingertip distance in m), got {gripper!r}; "
                                  f"send a width in m as a float, or None for no gripper command")
        gripper = float(g)
        if not math.isfinite(gripper):
            raise CommandRejected(f"gripper: {gripper} is not finite; send a finite width in m")
    return position, quaternion / norm, gripper, norm


def _slerp(q0: np.ndarray, q1: np.ndarray, t: float) -> np.ndarray:
    """Spherical interpolation from unit q0 (t=0) to unit q1 (t=1), the shorter way round."""
    dot = float(q0 @ q1)
    if dot < 0.0:
        q1, dot = -q1, -dot
    theta = math.acos(min(dot, 1.0))
    if theta < 1e-9:
        return q1.copy()
    s = math.sin(theta)
    q = (math.sin((1.0 - t) * theta) / s) * q0 + (math.sin(t * theta) / s) * q1
    return q / np.linalg.norm(q)


def rotation_angle(q0: np.ndarray, q1: np.ndarray) -> float:
    """Angle (rad, in [0, π]) of the rotation between two unit quaternions."""
    return 2.0 * math.acos(min(abs(float(q0 @ q1)), 1.0))


def filter_command(position, quaternion, gripper, reference_position, reference_quaternion,
                   limits: SafetyLimits = SafetyLimits()) -> SafeCommand:
    """Validate a command (see validate_command) and make it safe relative to the current
    reference pose of the controller.

    Order matters: the target is clipped into the box first, then the step from the reference is
    capped. So the step cap always holds, and the result is inside the box whenever the
    reference is; a reference outside the box (after a reset, or a box that shrank) walks back in
    by at most one step per command, flagged `outside_workspace`.

    Flags: quaternion_normalized, workspace_clipped, position_step_capped, rotation_step_capped,
    outside_workspace, gripper_clipped.
    """
    position, quaternion, gripper, norm = _validate(position, quaternion, gripper)
    ref_p = np.asarray(reference_position, dtype=np.float64)
    ref_q = np.asarray(reference_quaternion, dtype=np.float64)
    if ref_p.shape != (3,) or ref_q.shape != (4,) or not (np.isfinite(ref_p).all() and np.isfinite(ref_q).all()) \
            or not np.linalg.norm(ref_q) > 1e-6:
        # Not the sender's fault: the server passed a broken reference. Fail loudly.
        raise ValueError(f"reference pose must be a finite position (3,) and non-zero quaternion (4,), "
                         f"got {ref_p.tolist()}, {ref_q.tolist()}")
    ref_q = ref_q / np.linalg.norm(ref_q)
    flags: list[tuple[str, str]] = []

    if abs(norm - 1.0) > 1e-3:  # float32 round-off is not worth a flag; a wrong norm is
        flags.append(("quaternion_normalized", f"quaternion norm {norm:.4f} normalized to 1"))
    lo = np.asarray(limits.workspace_min, dtype=np.float64)
    hi = np.asarray(limits.workspace_max, dtype=np.float64)
    clipped = np.clip(position, lo, hi)
    if (clipped != position).any():
        reasons = []
        for i in range(3):
            if position[i] > hi[i]:
                reasons.append(f"{_AXES[i]}={position[i]:.3f} m above workspace max {hi[i]:.3f} m")
            elif position[i] < lo[i]:
                reasons.append(f"{_AXES[i]}={position[i]:.3f} m below workspace min {lo[i]:.3f} m")
        flags.append(("workspace_clipped", "; ".join(reasons)))
    position = clipped

    step = position - ref_p
    distance = float(np.linalg.norm(step))
    if distance > limits.max_position_step:
        position = ref_p + step * (limits.max_position_step / distance)
        flags.append(("position_step_capped", f"position step {distance:.4f} m capped at "
                                              f"{limits.max_position_step:.4f} m per command"))
    if ((position < lo - 1e-12) | (position > hi + 1e-12)).any():
        flags.append(("outside_workspace", f"reference {np.round(ref_p, 4).tolist()} m is outside the workspace "
                                           f"box {lo.tolist()}..{hi.tolist()} m; moving back in at most "
                                           f"{limits.max_position_step} m per command"))

    angle = rotation_angle(ref_q, quaternion)
    if angle > limits.max_rotation_step:
        quaternion = _slerp(ref_q, quaternion, limits.max_rotation_step / angle)
        flags.append(("rotation_step_capped", f"rotation step {angle:.4f} rad capped at "
                                              f"{limits.max_rotation_step:.4f} rad per command"))

    if gripper is not None and not limits.gripper_min <= gripper <= limits.gripper_max:
        clipped_g = min(max(gripper, limits.gripper_min), limits.gripper_max)
        flags.append(("gripper_clipped", f"gripper {gripper:.4f} m outside [{limits.gripper_min:.3f}, "
                                         f"{limits.gripper_max:.3f}] m, clipped to {clipped_g:.4f} m"))
        gripper = clipped_g
    return SafeCommand(position=position, quaternion=quaternion, gripper=gripper, flags=flags)


def joint_limit_guard(q, lower=JOINT_LOWER, upper=JOINT_UPPER, margin: float = 0.05) -> list[tuple[str, str]]:
    """(flag, reason) for every joint within `margin` rad of (or beyond) its limits; [] if none.

    Flags: joint_near_limit, joint_state_invalid (non-finite or wrong-shape q). Franka limits by
    default; the server decides what to do (typically: refuse motion that goes further, report).
    """
    q = np.asarray(q, dtype=np.float64)
    lower = np.asarray(lower, dtype=np.float64)
    upper = np.asarray(upper, dtype=np.float64)
    if q.shape != lower.shape or not np.isfinite(q).all():
        return [("joint_state_invalid", f"joint positions {q.tolist()} are not {lower.shape[0]} finite numbers")]
    flags = []
    for j in range(q.shape[0]):
        if q[j] < lower[j] + margin:
            where = "beyond" if q[j] < lower[j] else f"within {margin:.3f} rad of"
            flags.append(("joint_near_limit", f"joint {j + 1} q={q[j]:.4f} rad {where} lower limit {lower[j]:.4f} rad"))
        elif q[j] > upper[j] - margin:
            where = "beyond" if q[j] > upper[j] else f"within {margin:.3f} rad of"
            flags.append(("joint_near_limit", f"joint {j + 1} q={q[j]:.4f} rad {where} upper limit {upper[j]:.4f} rad"))
    return flags
