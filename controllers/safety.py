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

Below the command filter, per control tick:
* `TorqueRamp`, the one path every torque takes to the arm, whatever law made it (Cartesian
  impedance, joint impedance homing, the damped stop): each joint's torque moves at most
  max_torque_rate * dt per tick and stays within the torque limits. A Franka aborts on a faster
  change, so switching laws (disarm, peer lost, hold, homing) must ramp too.
* `JointLimitGuard`, compiled like the laws: a joint within a margin of a limit and moving
  toward it trips the guard, and the robot server holds the arm at the measured pose.
  `joint_limit_guard` words what it sees as (flag, reason).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from controllers._kernels import jit, limit_torque
from controllers.franka import GRIPPER_MAX_WIDTH, JOINT_LOWER, JOINT_UPPER, MAX_TORQUE_RATE, TORQUE_LIMITS
from controllers.rotations import quat_conjugate, quat_multiply, quat_to_rotvec

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
    # Scaled first: the norm of a quaternion of huge (finite) components overflows to inf.
    largest = float(np.abs(quaternion).max())
    norm = largest * float(np.linalg.norm(quaternion / largest)) if largest > 0.0 else 0.0
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
    return position, quaternion / largest / (norm / largest), gripper, norm


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
    capped. So the step cap holds, and the result is inside the box whenever the reference is.
    A reference outside the box is flagged `outside_workspace`: when it is out by no more than one
    step (the tcp overshot a face, which the server passes as the reference), the capped target
    is clipped into the box again, so that the tcp never chases a reference outside it (without
    this, pushes along a face from an overshot tcp compounded: 24 mm out, measured); when it is
    further out (after a reset, or a box that shrank) it walks back in by one step per command.

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
        flags.append(("quaternion_normalized", f"quaternion norm {norm:.6g} normalized to 1"))
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
    outside = float(np.linalg.norm(ref_p - np.clip(ref_p, lo, hi)))
    if outside > 0.0 and outside <= limits.max_position_step:
        position = np.clip(position, lo, hi)  # at most the cap plus the overshot distance away
    if outside > 0.0 or ((position < lo - 1e-12) | (position > hi + 1e-12)).any():
        flags.append(("outside_workspace", f"reference {np.round(ref_p, 4).tolist()} m is outside the workspace "
                                           f"box {lo.tolist()}..{hi.tolist()} m by {outside:.4f} m; "
                                           + ("target clipped back into the box" if outside <= limits.max_position_step
                                              else f"moving back in at most {limits.max_position_step} m per command")))

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


# --- per tick: the torque ramp and the joint-limit guard -------------------------------------------

@jit
def ramp_torque(tau, target, commanded, max_step, torque_limit, limited_ticks):
    """commanded <- tau moved at most max_step (Nm) per joint from commanded (last tick's torque),
    then clamped to ±torque_limit; a non-finite tau counts as zero (ramp down, never jump).
    target (7,) is scratch; limited_ticks[0] counts the ticks on which the ramp, not the law,
    decided the torque. Allocates nothing."""
    for j in range(commanded.shape[0]):
        t = tau[j]
        target[j] = t if math.isfinite(t) else 0.0
    rate_limited, _ = limit_torque(target, commanded, max_step, torque_limit)
    for j in range(commanded.shape[0]):
        commanded[j] = target[j]
    if rate_limited:
        limited_ticks[0] += 1


class TorqueRamp:
    """The last stage before the arm: every tick's torque, whatever law made it, passes here.

    `ramp(tau)` returns the torque to command (the ramp's own array, overwritten next tick):
    within max_torque_rate * dt of the torque commanded last tick, within the torque limits.
    The laws rate-limit themselves too, but each against its own memory; a switch of law (a
    damped stop after the Cartesian law, homing after a hold) would otherwise jump."""

    def __init__(self, dt: float, torque_limits=TORQUE_LIMITS, max_torque_rate: float = MAX_TORQUE_RATE):
        if not (dt > 0.0 and math.isfinite(max_torque_rate) and max_torque_rate > 0.0):
            raise ValueError(f"TorqueRamp: need dt > 0 s and a finite max_torque_rate > 0 Nm/s, "
                             f"got {dt}, {max_torque_rate}")
        self.max_step = float(max_torque_rate) * float(dt)  # Nm per tick
        self.torque_limits = np.array(torque_limits, dtype=np.float64)
        self.commanded = np.zeros(len(self.torque_limits))  # Nm, the torque of the last tick
        self.limited_ticks = np.zeros(1, dtype=np.int64)
        self._target = np.zeros(len(self.torque_limits))
        self(self.commanded)  # compile now, not on the first tick of a 1 kHz loop

    def __call__(self, tau: np.ndarray) -> np.ndarray:
        ramp_torque(tau, self._target, self.commanded, self.max_step, self.torque_limits,
                    self.limited_ticks)
        return self.commanded

    def restart(self) -> None:
        """Forget the last torque: only after a simulated teleport, which puts the arm at rest
        with no torque. A real arm's torque never jumps, so nothing else calls this."""
        self.commanded[:] = 0.0

    def kernel_state(self) -> tuple:
        """The arguments of `ramp_torque` after tau, for compiled loops (live arrays)."""
        return (self._target, self.commanded, self.max_step, self.torque_limits, self.limited_ticks)

    def take_report(self) -> list[tuple[str, str]]:
        """(flag, reason) if the ramp shaped the torque since the last report; resets the count."""
        ticks = int(self.limited_ticks[0])
        self.limited_ticks[0] = 0
        if not ticks:
            return []
        return [("torque_ramped", f"{ticks} ticks: torque change capped at {self.max_step:.3g} Nm "
                                  f"per tick while the control law changed")]


@jit
def joint_limit_check(q, dq, inner_lower, inner_upper, min_speed, tick_counts):
    """True if some joint is beyond its inner bound (limit -+ margin) and moving further out
    faster than min_speed (rad/s): the guard trips. tick_counts[0] counts the ticks with some
    joint beyond its inner bound, tick_counts[1] the ticks it tripped. Non-finite q or dq never
    trips (the laws handle invalid input)."""
    near = False
    tripped = False
    for j in range(q.shape[0]):
        if q[j] < inner_lower[j]:
            near = True
            if dq[j] < -min_speed:
                tripped = True
        elif q[j] > inner_upper[j]:
            near = True
            if dq[j] > min_speed:
                tripped = True
    if near:
        tick_counts[0] += 1
    if tripped:
        tick_counts[1] += 1
    return tripped


# rad: a joint step the guard's least-squares estimate gives below this is rounding (~1e-16 for
# a command that moves only other joints), not a motion toward a limit: it is not refused.
ROUNDING_STEP = 1e-9


class JointLimitGuard:
    """Keeps the joints off their limits, the same on the mirror and on a real arm.

    Per tick, `check(q, dq)` (compiled; compiled loops call `joint_limit_check` with
    `kernel_state()`) trips when a joint is within `margin` of a limit and moving toward it
    faster than `min_speed`. The server then holds the arm at the measured pose and calls
    `trip(q, dq)`, which latches that joint: while latched, `refusal()` turns down commands that
    would move it further toward the limit, so a policy pushing on cannot creep the joint into
    it step by step. Commands away from the limit are obeyed; the latch drops once the joint is
    back inside its margin. min_speed keeps sensor noise at rest from tripping the guard (and
    from discarding a command that moves the arm away)."""

    def __init__(self, lower=JOINT_LOWER, upper=JOINT_UPPER, margin: float = 0.05,
                 min_speed: float = 0.02):
        self.lower = np.array(lower, dtype=np.float64)
        self.upper = np.array(upper, dtype=np.float64)
        if not (margin >= 0.0 and min_speed >= 0.0 and (self.lower + 2 * margin < self.upper).all()):
            raise ValueError(f"JointLimitGuard: need margin >= 0 rad, min_speed >= 0 rad/s and "
                             f"limits more than 2 margins apart, got {margin}, {min_speed}")
        self.margin = float(margin)
        self.min_speed = float(min_speed)
        self.inner_lower = self.lower + margin
        self.inner_upper = self.upper - margin
        # [ticks with a joint within its margin, ticks the guard tripped], since last read
        self.tick_counts = np.zeros(2, dtype=np.int64)
        self.latched: dict[int, int] = {}  # joint index -> +1 (upper limit) or -1 (lower limit)
        self.check(self.inner_lower, np.zeros_like(self.lower))  # compile now
        self.tick_counts[:] = 0

    def check(self, q, dq) -> bool:
        return joint_limit_check(q, dq, self.inner_lower, self.inner_upper, self.min_speed,
                                 self.tick_counts)

    def kernel_state(self) -> tuple:
        """The arguments of `joint_limit_check` after q, dq, for compiled loops (live arrays)."""
        return (self.inner_lower, self.inner_upper, self.min_speed, self.tick_counts)

    def trip(self, q, dq) -> str:
        """Latch the joints that tripped (the state of the tick after: any speed toward the
        limit counts); the reason for the state message."""
        self.tick_counts[1] = 0
        q, dq = np.asarray(q, dtype=np.float64), np.asarray(dq, dtype=np.float64)
        words = []
        for j in range(len(q)):
            if q[j] > self.inner_upper[j] and dq[j] > 0.0:
                self.latched[j] = 1
                words.append(f"joint {j + 1} q={q[j]:.4f} rad, {self.upper[j] - q[j]:.4f} rad from its upper "
                             f"limit {self.upper[j]:.4f} rad, moving toward it at {dq[j]:.3f} rad/s")
            elif q[j] < self.inner_lower[j] and dq[j] < 0.0:
                self.latched[j] = -1
                words.append(f"joint {j + 1} q={q[j]:.4f} rad, {q[j] - self.lower[j]:.4f} rad from its lower "
                             f"limit {self.lower[j]:.4f} rad, moving toward it at {-dq[j]:.3f} rad/s")
        return ("; ".join(words or ["a joint neared its limit"]) + f" (margin {self.margin} rad): holding at the measured pose; commands "
                "that move it further toward the limit are refused, commands away are obeyed")

    def refusal(self, q, jacobian, tcp_position, tcp_quaternion, target_position,
                target_quaternion) -> str | None:
        """Why a command to move the tcp (m, (w, x, y, z), base frame) to the target must not be
        applied, or None. Its joint motion is estimated as J⁺ times the pose step."""
        q = np.asarray(q, dtype=np.float64)
        for j in [j for j in self.latched if self.inner_lower[j] <= q[j] <= self.inner_upper[j]]:
            del self.latched[j]  # back inside its margin: free again
        if not self.latched:
            return None
        rotation = quat_to_rotvec(quat_multiply(target_quaternion, quat_conjugate(tcp_quaternion)))
        pose_step = np.concatenate([np.asarray(target_position) - tcp_position, rotation])
        joint_step = np.linalg.lstsq(jacobian, pose_step, rcond=1e-3)[0]
        toward = [j for j, side in self.latched.items() if side * joint_step[j] > ROUNDING_STEP]
        if not toward:
            return None
        return "; ".join(
            f"command refused: it would move joint {j + 1} (q={q[j]:.4f} rad) further toward its "
            f"{'upper' if self.latched[j] > 0 else 'lower'} limit "
            f"{(self.upper if self.latched[j] > 0 else self.lower)[j]:.4f} rad" for j in toward)

    def take_report(self, q) -> list[tuple[str, str]]:
        """(flag, reason) if some joint was within its margin since the last report; resets."""
        ticks = int(self.tick_counts[0])
        self.tick_counts[0] = 0
        if not ticks:
            return []
        now = joint_limit_guard(q, self.lower, self.upper, self.margin)
        detail = "; ".join(reason for _, reason in now) or "back inside the margins now"
        return [("joint_near_limit", f"{ticks} ticks within {self.margin} rad of a joint limit; {detail}")]
