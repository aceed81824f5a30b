"""Cartesian impedance control of a 7-joint torque-controlled arm (Franka Panda) at 1 kHz, in the
style of franka_ros' cartesian_impedance_example_controller and SERL's serl_franka_controllers.

Conventions: SI units (m, rad, N, Nm, s). Quaternions are (w, x, y, z). Every Cartesian quantity
is in the robot `base` frame; the controlled point is the origin of the `tcp` frame. The Jacobian
J (6x7) maps joint velocities to the tcp twist [linear (3); angular (3)] in base, twist = J dq.
Torques exclude gravity (the Franka and the sim backend compensate it), so nothing here adds
g(q); the Coriolis torques a backend supplies are added.

One tick of the law (`impedance_torque`):

    e     = [p - p_ref ; rotvec(q ⊗ q_ref*)]              pose error, base frame
    ē     = clip(e, ±clip) per axis                        reference limiting
    ∫ē   += ē dt, held so that |Ki ∫ē| <= integral_limit   anti-windup
    F     = -K ē - D (J dq) - Ki ∫ē                        task wrench
    τ_ns  = (I - Jᵀ J#) (Kn (q_ns - q) - Dn dq)            nullspace posture, J# = (J Jᵀ + λ²I)⁻¹ J
    τ     = Jᵀ F + τ_ns + coriolis
    τ    <- |τ - τ_prev| <= max_torque_rate dt, then |τ| <= torque_limits

Reference limiting is the safety property that matters in contact: however far the reference is
pushed into a table, the spring force never exceeds K * clip per axis (20 N at the defaults).

One difference from franka_ros, on purpose: the rotational error is the rotation vector θ·axis,
not the quaternion's vector part sin(θ/2)·axis, so rotational stiffness really is Nm/rad and the
rotational clip really is rad. franka_ros' rotational gains are worth about half as much here at
small angles; halve them when porting.

Tracking tolerance (default gains: 2000 N/m, damping 2 sqrt(K), clip 1 cm per axis, reference
smoothing 0.02 s; the robot server's step caps 0.1 m and 0.5 rad per command at 10 Hz), per axis
of the base frame, for the tcp position against its clipped target:
* overshoot: the tcp may pass a target on the workspace box's face by up to 10 mm, the tracking
  tolerance (TRACKING_TOLERANCE in tests/robot/test_fault_injection.py): the arm's momentum at
  up to ~0.35 m/s against a spring the clip bounds at 20 N. Measured on the MuJoCo Panda, every
  reference inside the box: worst 7.5 mm over 432 pushes toward points 1-5 m outside the box and
  to its corners; braking from 0.12 m/s into a hold, 6.1-6.3 mm (tests/robostack/
  test_robot_server_zmq.py). The safety filter keeps the reference inside the box (a tcp that
  overshot a face gets its target clipped back in: docs/fault_injection.md). Stiffer gains
  overshoot more, so the tolerance at the most a 'gains' request may set (3000 N/m with a 3.3 cm
  clip, the 100 N spring-force ceiling of controllers/gain_limits.py) is 15 mm
  (TRACKING_TOLERANCE_AT_CEILINGS; up to 12.4 mm measured).
* lag: while moving, the tcp trails the newest target by up to one step cap (0.1 m); a reachable
  target is reached within 5 mm once it settles (tests/robostack/test_robot_server_control.py).

`CartesianImpedanceController` wraps the law with smoothed reference and gain changes and the
state it needs between ticks; its `compute()` is one call into compiled code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from controllers._kernels import all_finite, jit, lerp_toward, limit_torque, per_axis
from controllers.franka import MAX_TORQUE_RATE, TORQUE_LIMITS
from controllers.rotations import matrix_to_quaternion, nlerp_toward, quaternion_to_rotvec

# What `flags` reports, one bool each, in this order. Indices are compile-time constants in numba.
CARTESIAN_FLAGS = (
    "error_clipped_translation",  # position error exceeded its clip on some axis
    "error_clipped_rotation",  # orientation error exceeded its clip on some axis
    "integral_saturated",  # anti-windup bound reached on some axis
    "rate_limited",  # torque change capped on some joint
    "torque_clamped",  # torque capped at a joint limit
    "invalid_input",  # non-finite state or zero quaternion: torque ramps to zero instead
)
_CLIP_T, _CLIP_R, _INTEGRAL, _RATE, _CLAMP, _INVALID = range(6)

Vector = float | Sequence[float]


@dataclass(frozen=True)
class CartesianImpedanceGains:
    """Gains and limits of the Cartesian impedance law. Per-axis values are along base x, y, z.

    The defaults are franka_ros' / SERL's: stiff enough to track 1 cm within a few newtons of
    friction, soft enough that the clip bounds steady contact to 20 N and 7.5 Nm.
    """

    translational_stiffness: Vector = 2000.0  # N/m
    rotational_stiffness: Vector = 150.0  # Nm/rad
    translational_damping: Vector | None = None  # Ns/m; None: 2 sqrt(K), critical for 1 kg
    rotational_damping: Vector | None = None  # Nms/rad; None: 2 sqrt(K), critical for 1 kg m²
    nullspace_stiffness: Vector = 10.0  # Nm/rad per joint, toward the nullspace posture
    nullspace_damping: Vector | None = None  # Nms/rad; None: 2 sqrt(Kn)
    translational_integral_gain: Vector = 0.0  # N/(m s); 0 turns the integral term off
    rotational_integral_gain: Vector = 0.0  # Nm/(rad s)
    translational_integral_limit: Vector = 10.0  # N, bound on |Ki ∫ē| (anti-windup)
    rotational_integral_limit: Vector = 1.0  # Nm
    translational_clip: Vector = 0.01  # m per axis (inf: no clip)
    rotational_clip: Vector = 0.05  # rad per axis
    max_torque_rate: float = MAX_TORQUE_RATE  # Nm/s
    torque_limits: Vector = TORQUE_LIMITS  # Nm per joint

    def __post_init__(self):
        # Packed once, when the gains are made: bad numbers are refused then, not at the first
        # tick, and a gains request inside a real-time tick reads them instead of repacking.
        packed = self._pack()
        for a in packed[:4]:
            a.setflags(write=False)
        object.__setattr__(self, "_packed", packed)

    def packed(self):
        """The arrays the compiled law takes (read-only): (gain_vector (32,), error_clip (6,),
        integral_limit (6,), torque_limits (7,), max_torque_rate).

        gain_vector = [K (6), D (6), Ki (6), Kn (7), Dn (7)] is what gets smoothed on a change;
        clips and limits take effect at once, since tightening a limit gradually is no use.
        """
        return self._packed

    def _pack(self):
        k = np.concatenate([per_axis(self.translational_stiffness, 3, "translational_stiffness", "N/m"),
                            per_axis(self.rotational_stiffness, 3, "rotational_stiffness", "Nm/rad")])
        d_t = self.translational_damping
        d_r = self.rotational_damping
        d = np.concatenate([
            np.sqrt(4.0 * k[:3]) if d_t is None else per_axis(d_t, 3, "translational_damping", "Ns/m"),
            np.sqrt(4.0 * k[3:]) if d_r is None else per_axis(d_r, 3, "rotational_damping", "Nms/rad"),
        ])
        ki = np.concatenate([
            per_axis(self.translational_integral_gain, 3, "translational_integral_gain", "N/(m s)"),
            per_axis(self.rotational_integral_gain, 3, "rotational_integral_gain", "Nm/(rad s)"),
        ])
        kn = per_axis(self.nullspace_stiffness, 7, "nullspace_stiffness", "Nm/rad")
        dn = (np.sqrt(4.0 * kn) if self.nullspace_damping is None
              else per_axis(self.nullspace_damping, 7, "nullspace_damping", "Nms/rad"))
        clip = np.concatenate([
            per_axis(self.translational_clip, 3, "translational_clip", "m", allow_inf=True),
            per_axis(self.rotational_clip, 3, "rotational_clip", "rad", allow_inf=True),
        ])
        integral_limit = np.concatenate([
            per_axis(self.translational_integral_limit, 3, "translational_integral_limit", "N", allow_inf=True),
            per_axis(self.rotational_integral_limit, 3, "rotational_integral_limit", "Nm", allow_inf=True),
        ])
        torque_limits = per_axis(self.torque_limits, 7, "torque_limits", "Nm")
        rate = float(self.max_torque_rate)
        if not (math.isfinite(rate) and rate > 0.0):
            raise ValueError(f"max_torque_rate: must be a finite number > 0 Nm/s, got {rate}")
        return np.concatenate([k, d, ki, kn, dn]), clip, integral_limit, torque_limits, rate


@jit
def orientation_error(quaternion, ref_quaternion, out):
    """out <- rotation vector (rad, base frame) of the rotation taking the reference orientation
    to the current one, i.e. θ·axis of q ⊗ q_ref*, the shorter way round (|θ| <= π).

    Turning the tcp by +θ about base z away from its reference gives out = (0, 0, θ), and the law
    answers with torque -K θ about z. Returns False (out untouched) if a quaternion is zero.
    """
    w1, x1, y1, z1 = quaternion[0], quaternion[1], quaternion[2], quaternion[3]
    w2, x2, y2, z2 = ref_quaternion[0], ref_quaternion[1], ref_quaternion[2], ref_quaternion[3]
    norm = math.sqrt((w1 * w1 + x1 * x1 + y1 * y1 + z1 * z1) * (w2 * w2 + x2 * x2 + y2 * y2 + z2 * z2))
    if not norm > 1e-12:
        return False
    w = (w1 * w2 + x1 * x2 + y1 * y2 + z1 * z2) / norm
    x = (-w1 * x2 + x1 * w2 - y1 * z2 + z1 * y2) / norm
    y = (-w1 * y2 + x1 * z2 + y1 * w2 - z1 * x2) / norm
    z = (-w1 * z2 - x1 * y2 + y1 * x2 + z1 * w2) / norm
    quaternion_to_rotvec(w, x, y, z, out)
    return True


@jit
def project_nullspace(jacobian, pinv_damping, work, tau):
    """tau <- (I - Jᵀ J#) tau, with J# = (J Jᵀ + λ²I)⁻¹ J the damped pseudo-inverse of Jᵀ.

    Without damping, J# tau_ns = 0: the projected torque produces no static tcp wrench. With
    damping the projector still never amplifies (its eigenvalues are λ²/(σ²+λ²) in (0, 1]) and
    the 6x6 solve stays well conditioned at a singularity; the price is a leak of order λ²/σ²
    into task space along directions whose singular value σ is that small. The default λ = 1e-3
    (m, like J's entries) leaks < 1% down to σ = 0.01, which about 95% of random Panda postures exceed.
    work is (7, 6) scratch: J Jᵀ + λ²I in rows 0-5, the right-hand side in row 6.
    """
    s = work[:6]
    y = work[6]
    lam2 = pinv_damping * pinv_damping
    for a in range(6):
        acc = 0.0
        for j in range(7):
            acc += jacobian[a, j] * tau[j]
        y[a] = acc
        for b in range(a + 1):
            acc = 0.0
            for j in range(7):
                acc += jacobian[a, j] * jacobian[b, j]
            s[a, b] = acc
        s[a, a] += lam2
    # Solve s z = y in place by Cholesky (s is symmetric positive definite for λ > 0; only its
    # lower triangle is filled and used). The factor overwrites s, z overwrites y.
    for j in range(6):
        d = s[j, j]
        for k in range(j):
            d -= s[j, k] * s[j, k]
        d = math.sqrt(d) if d > 1e-300 else 1e-150  # only reachable with λ = 0 at a singularity
        s[j, j] = d
        for i in range(j + 1, 6):
            acc = s[i, j]
            for k in range(j):
                acc -= s[i, k] * s[j, k]
            s[i, j] = acc / d
    for i in range(6):
        acc = y[i]
        for k in range(i):
            acc -= s[i, k] * y[k]
        y[i] = acc / s[i, i]
    for i in range(5, -1, -1):
        acc = y[i]
        for k in range(i + 1, 6):
            acc -= s[k, i] * y[k]
        y[i] = acc / s[i, i]
    for j in range(7):
        acc = 0.0
        for a in range(6):
            acc += jacobian[a, j] * y[a]
        tau[j] -= acc


@jit
def impedance_torque(q, dq, position, quaternion, jacobian, coriolis, q_nullspace,
                     ref_position, ref_quaternion,
                     stiffness, damping, integral_gain, nullspace_stiffness, nullspace_damping,
                     error_clip, integral_limit, torque_limit, max_torque_step, pinv_damping, dt,
                     integral, tau_prev, work, tau_out, wrench_out, error_out, flags_out):
    """One tick of the Cartesian impedance law (see the module docstring); allocates nothing.

    Robot state: q, dq, coriolis, q_nullspace (7,); position (3,), quaternion (4,) of the tcp;
    jacobian (6, 7). Reference: ref_position (3,), ref_quaternion (4,).
    Gains (6,) per axis [x, y, z, rx, ry, rz]: stiffness, damping, integral_gain;
    (7,) per joint: nullspace_stiffness, nullspace_damping.
    Limits: error_clip, integral_limit (6,); torque_limit (7,); max_torque_step = max torque
    rate * dt (Nm per tick); pinv_damping λ; dt (s).
    State, updated in place: integral (6,) = ∫ē dt (m s, rad s). tau_prev (7,) is read only.
    Outputs: tau_out (7,) joint torque; wrench_out (6,) task wrench F; error_out (6,) unclipped
    pose error e; flags_out (6,) bool, see CARTESIAN_FLAGS. work: (7, 6) scratch.
    """
    for i in range(6):
        flags_out[i] = False
    valid = (all_finite(q) and all_finite(dq) and all_finite(position) and all_finite(quaternion)
             and all_finite(jacobian) and all_finite(coriolis) and all_finite(q_nullspace))
    if valid:
        for i in range(3):
            error_out[i] = position[i] - ref_position[i]
        valid = orientation_error(quaternion, ref_quaternion, error_out[3:])
    if not valid:
        # A state we cannot trust gets no new torque: ramp to zero at the rate limit (a jump
        # would trip the Franka's discontinuity check) and let the server stop the arm.
        for i in range(6):
            error_out[i] = 0.0
            wrench_out[i] = 0.0
        for j in range(7):
            tau_out[j] = 0.0
        limit_torque(tau_out, tau_prev, max_torque_step, torque_limit)
        flags_out[_INVALID] = True
        return

    for i in range(6):
        e = error_out[i]
        if e > error_clip[i] or e < -error_clip[i]:
            e = error_clip[i] if e > 0.0 else -error_clip[i]
            flags_out[_CLIP_T if i < 3 else _CLIP_R] = True
        if integral_gain[i] > 0.0:
            # Bound the integral's wrench, not its state, so that the bound holds in newtons
            # while Ki itself is being smoothed toward a new value.
            bound = integral_limit[i] / integral_gain[i]
            acc = integral[i] + e * dt
            if acc > bound or acc < -bound:
                acc = bound if acc > 0.0 else -bound
                flags_out[_INTEGRAL] = True
            integral[i] = acc
        else:
            integral[i] = 0.0  # off means off: switching it on later starts from zero
        v = 0.0
        for j in range(7):
            v += jacobian[i, j] * dq[j]
        wrench_out[i] = -stiffness[i] * e - damping[i] * v - integral_gain[i] * integral[i]

    for j in range(7):
        tau_out[j] = nullspace_stiffness[j] * (q_nullspace[j] - q[j]) - nullspace_damping[j] * dq[j]
    project_nullspace(jacobian, pinv_damping, work, tau_out)

    for j in range(7):
        acc = coriolis[j]
        for i in range(6):
            acc += jacobian[i, j] * wrench_out[i]
        tau_out[j] += acc

    rate_limited, clamped = limit_torque(tau_out, tau_prev, max_torque_step, torque_limit)
    flags_out[_RATE] = rate_limited
    flags_out[_CLAMP] = clamped


@jit
def _tick(q, dq, position, quaternion, jacobian, coriolis, q_nullspace,
          target_position, target_quaternion, target_gains, filter_coefficient,
          ref_position, ref_quaternion, gains,
          error_clip, integral_limit, torque_limit, max_torque_step, pinv_damping, dt,
          integral, tau_prev, work, tau_out, wrench_out, error_out, flags_out):
    """The controller's one compiled call per tick: smooth reference and gains, run the law,
    remember the torque for the next tick's rate limit."""
    lerp_toward(ref_position, target_position, filter_coefficient)
    nlerp_toward(ref_quaternion, target_quaternion, filter_coefficient)
    lerp_toward(gains, target_gains, filter_coefficient)
    impedance_torque(q, dq, position, quaternion, jacobian, coriolis, q_nullspace,
                     ref_position, ref_quaternion,
                     gains[0:6], gains[6:12], gains[12:18], gains[18:25], gains[25:32],
                     error_clip, integral_limit, torque_limit, max_torque_step, pinv_damping, dt,
                     integral, tau_prev, work, tau_out, wrench_out, error_out, flags_out)
    for j in range(7):
        tau_prev[j] = tau_out[j]


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:+.4f}" for v in values) + ")"


# The per-tick kernel, public for compiled loops that own the robot state (see kernel_state).
tick_kernel = _tick


class CartesianImpedanceController:
    """Cartesian impedance controller with smoothed reference and gains (stateful, one per arm).

    Call `reset()` with the measured pose before the first `compute()`, and whenever the arm was
    driven by something else in between. Then, every tick, `compute()` with the backend's state;
    `set_reference()` and `set_gains()` may be called at any rate. Each tick the filtered
    reference and gains move a fraction `filter_coefficient` of the way to their targets
    (franka_ros: 0.005 per 1 ms tick, a 0.2 s time constant), so a jump in either reaches the
    robot as a smooth ramp.

    Arguments must be float64 numpy arrays (compute() does not convert them; that is the price
    of a ~3 µs tick). Other dtypes or memory layouts work but compile a new variant on first use.
    """

    FLAG_NAMES = CARTESIAN_FLAGS

    def __init__(self, gains: CartesianImpedanceGains | None = None, dt: float = 0.001,
                 filter_coefficient: float = 0.005, pinv_damping: float = 1e-3):
        if not dt > 0.0:
            raise ValueError(f"dt: must be > 0 s, got {dt}")
        if not 0.0 < filter_coefficient <= 1.0:
            raise ValueError(f"filter_coefficient: must be in (0, 1] per tick (1 = no smoothing), got {filter_coefficient}")
        if not pinv_damping > 0.0:
            raise ValueError(f"pinv_damping: must be > 0 (1e-3 is a good start), got {pinv_damping}")
        self.dt = float(dt)
        self.filter_coefficient = float(filter_coefficient)
        self.pinv_damping = float(pinv_damping)
        self._target_position = np.zeros(3)
        self._target_quaternion = np.array([1.0, 0.0, 0.0, 0.0])
        self._ref_position = np.zeros(3)
        self._ref_quaternion = np.array([1.0, 0.0, 0.0, 0.0])
        self._measured_quaternion = np.array([1.0, 0.0, 0.0, 0.0])
        self._posture = np.zeros(7)
        self._zeros7 = np.zeros(7)
        self._integral = np.zeros(6)
        self._tau_prev = np.zeros(7)
        self._work = np.zeros((7, 6))
        self._tau = np.zeros(7)
        self._wrench = np.zeros(6)
        self._error = np.zeros(6)
        self._flags = np.zeros(len(CARTESIAN_FLAGS), dtype=np.bool_)
        # Written in place from here on, so a compiled loop holding kernel_state() sees changes.
        self._target_gains = np.zeros(32)
        self._gains = np.zeros(32)
        self._error_clip = np.zeros(6)
        self._integral_limit = np.zeros(6)
        self._torque_limit = np.zeros(7)
        self._is_reset = False
        self.set_gains(gains or CartesianImpedanceGains())
        self._gains[:] = self._target_gains
        self._compile()

    def _compile(self) -> None:
        """Compile the tick (or load it from numba's cache) now, not on the first tick of a 1 kHz
        loop, where seconds of compilation would trip the robot's deadline."""
        q, p, unit = np.zeros(7), np.zeros(3), np.array([1.0, 0.0, 0.0, 0.0])
        self.reset(q, p, unit)
        self.compute(q, q, p, unit, np.zeros((6, 7)))
        self.compute(q, q, p, np.eye(3), np.zeros((6, 7)))
        self._is_reset = False  # the real reset() with the measured pose is still required

    def set_gains(self, gains: CartesianImpedanceGains) -> None:
        """New gains: stiffness, damping and integral gains are smoothed toward them; clips,
        torque limits and the rate limit apply from the next tick."""
        vec, clip, integral_limit, torque_limits, rate = gains.packed()
        self.gains = gains
        self._target_gains[:] = vec
        self._error_clip[:] = clip
        self._integral_limit[:] = integral_limit
        self._torque_limit[:] = torque_limits
        self._max_torque_step = rate * self.dt

    def set_reference(self, position, quaternion) -> None:
        """New target pose (m; (w, x, y, z), normalized here). Pass it through the safety filter
        first: the controller bounds force, not where the target is."""
        position = np.asarray(position, dtype=np.float64)
        quaternion = np.asarray(quaternion, dtype=np.float64)
        norm = float(np.linalg.norm(quaternion)) if quaternion.shape == (4,) else 0.0
        if position.shape != (3,) or not np.isfinite(position).all() or not (np.isfinite(norm) and norm > 1e-9):
            raise ValueError(f"set_reference: need a finite position (3,) and a non-zero finite quaternion (4,) "
                             f"(w, x, y, z); got {position!r}, {quaternion!r}")
        self._target_position[:] = position
        self._target_quaternion[:] = quaternion / norm

    def snap_reference(self, position, quaternion) -> None:
        """Target and filtered reference jump to this pose at once (no ramp), but the torque
        memory is kept, so the rate limiter still ramps the torque from what it was: the way to
        hold at the measured pose while moving, without the torque step a reset() would cause."""
        self.set_reference(position, quaternion)
        self._ref_position[:] = self._target_position
        self._ref_quaternion[:] = self._target_quaternion

    def set_nullspace_posture(self, q_nullspace) -> None:
        """Joint posture (rad) the nullspace term pulls toward when compute() is given none."""
        self._posture[:] = np.asarray(q_nullspace, dtype=np.float64)

    def reset(self, q, position, quaternion) -> None:
        """Start from the measured state: reference = target = current pose, nullspace posture =
        q, integral = 0, previous torque = 0, gains snapped to their targets (no ramp)."""
        self.set_reference(position, quaternion)
        self._ref_position[:] = self._target_position
        self._ref_quaternion[:] = self._target_quaternion
        self.set_nullspace_posture(q)
        self._gains[:] = self._target_gains
        self._integral[:] = 0.0
        self._tau_prev[:] = 0.0
        self._tau[:] = 0.0
        self._flags[:] = False
        self._is_reset = True

    def compute(self, q, dq, tcp_position, tcp_orientation, jacobian, coriolis=None, q_nullspace=None):
        """Joint torques (7,) in Nm, gravity excluded, for this tick.

        tcp_orientation: quaternion (4,) (w, x, y, z) or rotation matrix (3, 3), tcp in base.
        coriolis: (7,) Nm or None (zero). q_nullspace: (7,) rad or None (posture from reset()).
        The returned array belongs to the controller and is overwritten by the next call.
        """
        if not self._is_reset:
            raise RuntimeError("call reset(q, position, quaternion) with the measured state before compute()")
        if len(tcp_orientation) == 3:
            matrix_to_quaternion(tcp_orientation, self._measured_quaternion)
            tcp_orientation = self._measured_quaternion
        _tick(q, dq, tcp_position, tcp_orientation, jacobian,
              self._zeros7 if coriolis is None else coriolis,
              self._posture if q_nullspace is None else q_nullspace,
              self._target_position, self._target_quaternion, self._target_gains, self.filter_coefficient,
              self._ref_position, self._ref_quaternion, self._gains,
              self._error_clip, self._integral_limit, self._torque_limit, self._max_torque_step,
              self.pinv_damping, self.dt,
              self._integral, self._tau_prev, self._work, self._tau, self._wrench, self._error, self._flags)
        return self._tau

    @property
    def flags(self) -> np.ndarray:
        """(6,) bool, last tick's limits that acted, in the order of FLAG_NAMES."""
        return self._flags

    @property
    def reference(self) -> tuple[np.ndarray, np.ndarray]:
        """Filtered reference (position, quaternion) the last tick used (copies)."""
        return self._ref_position.copy(), self._ref_quaternion.copy()

    @property
    def wrench(self) -> np.ndarray:
        """Last task wrench F = [force (N); torque (Nm)] in base (copy)."""
        return self._wrench.copy()

    @property
    def pose_error(self) -> np.ndarray:
        """Last unclipped pose error [m; rad] in base (copy)."""
        return self._error.copy()

    @property
    def nullspace_posture(self) -> np.ndarray:
        """The posture (7,) rad the nullspace term pulls toward (the live array, not a copy)."""
        return self._posture

    def kernel_state(self) -> tuple:
        """Everything `tick_kernel` takes after the measured state and the nullspace posture, in
        order. A compiled loop that owns the robot state (the MuJoCo mirror's lock-step fast
        path) calls `tick_kernel(q, dq, position, quaternion, jacobian, coriolis, posture,
        *kernel_state())` per tick: the very law compute() runs, without Python in between.
        The last four entries are the outputs: torque (7,), wrench (6,), error (6,), flags.
        The arrays are the controller's own, updated in place; the scalars (max torque step,
        filter coefficient, ...) are copies, so fetch the tuple again after set_gains()."""
        if not self._is_reset:
            raise RuntimeError("call reset(q, position, quaternion) with the measured state first")
        return (self._target_position, self._target_quaternion, self._target_gains, self.filter_coefficient,
                self._ref_position, self._ref_quaternion, self._gains,
                self._error_clip, self._integral_limit, self._torque_limit, self._max_torque_step,
                self.pinv_damping, self.dt,
                self._integral, self._tau_prev, self._work, self._tau, self._wrench, self._error, self._flags)

    def active_flags(self) -> list[tuple[str, str]]:
        """(flag, reason) for every limit that acted on the last tick, for the state message."""
        f, e, clip = self._flags, self._error, self._error_clip
        out = []
        if f[_CLIP_T]:
            out.append((CARTESIAN_FLAGS[_CLIP_T], f"position error {_fmt(e[:3])} m clipped to ±{_fmt(clip[:3])} m per axis"))
        if f[_CLIP_R]:
            out.append((CARTESIAN_FLAGS[_CLIP_R], f"orientation error {_fmt(e[3:])} rad clipped to ±{_fmt(clip[3:])} rad per axis"))
        if f[_INTEGRAL]:
            out.append((CARTESIAN_FLAGS[_INTEGRAL], f"integral wrench held at its limit {_fmt(self._integral_limit)} N, Nm"))
        if f[_RATE]:
            out.append((CARTESIAN_FLAGS[_RATE], f"torque change capped at {self._max_torque_step:.3g} Nm per "
                                                f"{self.dt * 1e3:.3g} ms tick ({self.gains.max_torque_rate:g} Nm/s)"))
        if f[_CLAMP]:
            joints = [j + 1 for j in range(7) if abs(self._tau[j]) >= self._torque_limit[j]]
            out.append((CARTESIAN_FLAGS[_CLAMP], f"torque clamped at its limit on joint(s) {joints}: "
                                                 f"{_fmt(self._tau)} Nm, limits {_fmt(self._torque_limit)} Nm"))
        if f[_INVALID]:
            out.append((CARTESIAN_FLAGS[_INVALID], "non-finite robot state (q, dq, pose, Jacobian, coriolis or "
                                                   "nullspace posture) or zero quaternion; torque ramping to zero"))
        return out
