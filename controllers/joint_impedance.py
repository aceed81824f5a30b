"""Joint impedance control of a 7-joint torque-controlled arm, used to drive it to a reset posture.

Conventions: SI units (rad, rad/s, Nm, s). Torques exclude gravity (the Franka and the sim backend
compensate it); the Coriolis torques a backend supplies are added.

One tick of the law (`joint_impedance_torque`):

    τ  = Kp clip(q_ref - q, ±clip) - Kd dq + coriolis
    τ <- |τ - τ_prev| <= max_torque_rate dt, then |τ| <= torque_limits

The error clip is what makes a far-away reset posture safe: the spring torque never exceeds
Kp * clip (60 Nm on the shoulder at the defaults), so the arm moves there at roughly
Kp * clip / Kd rad/s and stops gently against anything in the way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from controllers._kernels import all_finite, jit, lerp_toward, limit_torque, per_axis
from controllers.franka import MAX_TORQUE_RATE, TORQUE_LIMITS

JOINT_FLAGS = (
    "error_clipped",  # joint error exceeded its clip on some joint
    "rate_limited",  # torque change capped on some joint
    "torque_clamped",  # torque capped at a joint limit
    "invalid_input",  # non-finite state: torque ramps to zero instead
)
_CLIP, _RATE, _CLAMP, _INVALID = range(4)

Vector = float | Sequence[float]


@dataclass(frozen=True)
class JointImpedanceGains:
    """Gains and limits of the joint impedance law, per joint 1..7.

    Stiff shoulder, soft wrist: the wrist joints carry little inertia and only 12 Nm, so the same
    stiffness there would ring and saturate.
    """

    stiffness: Vector = (600.0, 600.0, 600.0, 600.0, 250.0, 150.0, 50.0)  # Nm/rad
    # Joint 4 as damped as 1-3: its homing speed, about stiffness * clip / damping, was 3 rad/s at
    # 20 Nms/rad, past the Franka's 2.175 rad/s joint-4 limit (a real arm's velocity reflex); on
    # franky-sim's FR3 the fold from its start pose then swung joint 2 at the 87 Nm limit and
    # never arrived. At 50 it is 1.2 rad/s and arrives in ~1.5 s.
    damping: Vector = (50.0, 50.0, 50.0, 50.0, 20.0, 20.0, 10.0)  # Nms/rad
    error_clip: Vector = 0.1  # rad per joint (inf: no clip)
    max_torque_rate: float = MAX_TORQUE_RATE  # Nm/s
    torque_limits: Vector = TORQUE_LIMITS  # Nm

    def __post_init__(self):
        self.packed()

    def packed(self):
        """(gain_vector (14,) = [Kp (7), Kd (7)], error_clip (7,), torque_limits (7,),
        max_torque_rate): the arrays the compiled law takes; only gain_vector is smoothed."""
        kp = per_axis(self.stiffness, 7, "stiffness", "Nm/rad")
        kd = per_axis(self.damping, 7, "damping", "Nms/rad")
        clip = per_axis(self.error_clip, 7, "error_clip", "rad", allow_inf=True)
        torque_limits = per_axis(self.torque_limits, 7, "torque_limits", "Nm")
        rate = float(self.max_torque_rate)
        if not (math.isfinite(rate) and rate > 0.0):
            raise ValueError(f"max_torque_rate: must be a finite number > 0 Nm/s, got {rate}")
        return np.concatenate([kp, kd]), clip, torque_limits, rate


@jit
def joint_impedance_torque(q, dq, coriolis, q_ref, stiffness, damping, error_clip,
                           torque_limit, max_torque_step, tau_prev, tau_out, flags_out):
    """One tick of the joint impedance law (see the module docstring); allocates nothing.

    All arrays (7,): q, dq, coriolis, q_ref (rad, rad/s, Nm, rad); stiffness, damping, error_clip,
    torque_limit; tau_prev is read only. max_torque_step = max torque rate * dt (Nm per tick).
    Outputs: tau_out (7,) joint torque; flags_out (4,) bool, see JOINT_FLAGS.
    """
    for i in range(4):
        flags_out[i] = False
    if not (all_finite(q) and all_finite(dq) and all_finite(coriolis)):
        for j in range(7):
            tau_out[j] = 0.0
        limit_torque(tau_out, tau_prev, max_torque_step, torque_limit)
        flags_out[_INVALID] = True
        return
    for j in range(7):
        e = q_ref[j] - q[j]
        if e > error_clip[j] or e < -error_clip[j]:
            e = error_clip[j] if e > 0.0 else -error_clip[j]
            flags_out[_CLIP] = True
        tau_out[j] = stiffness[j] * e - damping[j] * dq[j] + coriolis[j]
    rate_limited, clamped = limit_torque(tau_out, tau_prev, max_torque_step, torque_limit)
    flags_out[_RATE] = rate_limited
    flags_out[_CLAMP] = clamped


@jit
def _tick(q, dq, coriolis, q_target, target_gains, filter_coefficient, q_ref, gains,
          error_clip, torque_limit, max_torque_step, tau_prev, tau_out, flags_out):
    """The controller's one compiled call per tick: smooth reference and gains, run the law,
    remember the torque for the next tick's rate limit."""
    lerp_toward(q_ref, q_target, filter_coefficient)
    lerp_toward(gains, target_gains, filter_coefficient)
    joint_impedance_torque(q, dq, coriolis, q_ref, gains[0:7], gains[7:14], error_clip,
                           torque_limit, max_torque_step, tau_prev, tau_out, flags_out)
    for j in range(7):
        tau_prev[j] = tau_out[j]


class JointImpedanceController:
    """Joint impedance controller with smoothed reference and gains (stateful, one per arm).

    `reset(q)` with the measured joints, `set_reference(q_target)`, then `compute()` every tick.
    The filtered reference and gains move `filter_coefficient` of the way to their targets per
    tick (0.005: a 0.2 s time constant at 1 kHz). Arguments must be float64 numpy arrays.
    """

    FLAG_NAMES = JOINT_FLAGS

    def __init__(self, gains: JointImpedanceGains | None = None, dt: float = 0.001,
                 filter_coefficient: float = 0.005):
        if not dt > 0.0:
            raise ValueError(f"dt: must be > 0 s, got {dt}")
        if not 0.0 < filter_coefficient <= 1.0:
            raise ValueError(f"filter_coefficient: must be in (0, 1] per tick (1 = no smoothing), got {filter_coefficient}")
        self.dt = float(dt)
        self.filter_coefficient = float(filter_coefficient)
        self._q_target = np.zeros(7)
        self._q_ref = np.zeros(7)
        self._zeros7 = np.zeros(7)
        self._tau_prev = np.zeros(7)
        self._tau = np.zeros(7)
        self._flags = np.zeros(len(JOINT_FLAGS), dtype=np.bool_)
        self._target_gains = np.zeros(14)  # these arrays are written in place from here on
        self._gains = np.zeros(14)
        self._error_clip = np.zeros(7)
        self._torque_limit = np.zeros(7)
        self._is_reset = False
        self.set_gains(gains or JointImpedanceGains())
        self._gains[:] = self._target_gains
        # Compile (or load from numba's cache) now rather than on the first tick of a 1 kHz loop.
        self.reset(np.zeros(7))
        self.compute(np.zeros(7), np.zeros(7))
        _at_rest_near(self._q_ref, self._q_ref, self._q_ref, 1.0, 1.0)  # HomingMove's check
        self._is_reset = False

    def set_gains(self, gains: JointImpedanceGains) -> None:
        """New gains: Kp and Kd are smoothed toward them; clip and limits apply from the next tick."""
        vec, clip, torque_limits, rate = gains.packed()
        self.gains = gains
        self._target_gains[:] = vec
        self._error_clip[:] = clip
        self._torque_limit[:] = torque_limits
        self._max_torque_step = rate * self.dt

    def set_reference(self, q_target) -> None:
        """New target joint posture (7,) rad."""
        q_target = np.asarray(q_target, dtype=np.float64)
        if q_target.shape != (7,) or not np.isfinite(q_target).all():
            raise ValueError(f"set_reference: need 7 finite joint angles in rad, got {q_target!r}")
        self._q_target[:] = q_target

    def reset(self, q, torque=None) -> None:
        """Start from the measured joints: reference = target = q, gains snapped to their
        targets, previous torque = `torque` (the torque the arm is commanded now, so the rate
        limit ramps from it) or 0."""
        self.set_reference(q)
        self._q_ref[:] = self._q_target
        self._gains[:] = self._target_gains
        self._tau_prev[:] = 0.0 if torque is None else torque
        self._tau[:] = 0.0
        self._flags[:] = False
        self._is_reset = True

    def compute(self, q, dq, coriolis=None):
        """Joint torques (7,) in Nm, gravity excluded, for this tick. The returned array belongs to
        the controller and is overwritten by the next call."""
        if not self._is_reset:
            raise RuntimeError("call reset(q) with the measured joints before compute()")
        _tick(q, dq, self._zeros7 if coriolis is None else coriolis, self._q_target, self._target_gains,
              self.filter_coefficient, self._q_ref, self._gains, self._error_clip, self._torque_limit,
              self._max_torque_step, self._tau_prev, self._tau, self._flags)
        return self._tau

    @property
    def flags(self) -> np.ndarray:
        """(4,) bool, last tick's limits that acted, in the order of FLAG_NAMES."""
        return self._flags

    @property
    def reference(self) -> np.ndarray:
        """Filtered joint reference (7,) rad the last tick used (copy)."""
        return self._q_ref.copy()

    def active_flags(self) -> list[tuple[str, str]]:
        """(flag, reason) for every limit that acted on the last tick, for the state message."""
        f = self._flags
        out = []
        if f[_CLIP]:
            out.append((JOINT_FLAGS[_CLIP], f"joint error clipped to ±{self._error_clip.max():.3g} rad "
                                            f"(reference still far from the measured joints)"))
        if f[_RATE]:
            out.append((JOINT_FLAGS[_RATE], f"torque change capped at {self._max_torque_step:.3g} Nm per "
                                            f"{self.dt * 1e3:.3g} ms tick"))
        if f[_CLAMP]:
            joints = [j + 1 for j in range(7) if abs(self._tau[j]) >= self._torque_limit[j]]
            out.append((JOINT_FLAGS[_CLAMP], f"torque clamped at its limit on joint(s) {joints}"))
        if f[_INVALID]:
            out.append((JOINT_FLAGS[_INVALID], "non-finite joint state or coriolis; torque ramping to zero"))
        return out


@jit
def _at_rest_near(q, dq, target, position_tolerance, speed_tolerance):
    for j in range(q.shape[0]):
        if abs(q[j] - target[j]) >= position_tolerance or abs(dq[j]) >= speed_tolerance:
            return False
    return True


class HomingMove:
    """A move to a joint posture (a real arm's reset), one control tick per `tick()` call, so the
    loop that owns the arm keeps ticking, publishing and answering while it runs.

    `status` goes from "moving" to "arrived" (every joint within `position_tolerance` of the
    target and slower than `speed_tolerance`) or "timed_out" (not arrived within timeout_ticks
    ticks: something is in the way, or the target is out of reach). The caller decides what
    happens after either."""

    def __init__(self, controller: JointImpedanceController, target, q, torque, timeout_ticks: int,
                 position_tolerance: float = 0.01, speed_tolerance: float = 0.02):
        self.controller = controller
        self.target = np.array(target, dtype=np.float64)
        self.timeout_ticks = int(timeout_ticks)
        self.position_tolerance = float(position_tolerance)  # rad
        self.speed_tolerance = float(speed_tolerance)  # rad/s
        self.ticks = 0
        self.status = "moving"
        controller.reset(q, torque)  # the ramp goes on from the torque the arm has now
        controller.set_reference(self.target)

    def tick(self, q, dq, coriolis=None) -> np.ndarray:
        """This tick's joint torque (7,) Nm (the controller's array); updates `status`."""
        if _at_rest_near(q, dq, self.target, self.position_tolerance, self.speed_tolerance):
            self.status = "arrived"
        elif self.ticks >= self.timeout_ticks:
            self.status = "timed_out"
        self.ticks += 1
        return self.controller.compute(q, dq, coriolis)

    def remaining_error(self, q) -> str:
        """Where the move stands, for an error message."""
        error = np.asarray(q) - self.target
        j = int(np.argmax(np.abs(error)))
        return (f"joint {j + 1} is {abs(error[j]):.3f} rad from its home value {self.target[j]:.3f} rad "
                f"(tolerance {self.position_tolerance} rad)")
