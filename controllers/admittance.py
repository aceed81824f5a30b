"""Cartesian admittance control for position-controlled arms (a UR through ur-rtde's speedL or
servoL): the arm's own stiff servo follows a commanded tcp pose, and this law moves that pose
in response to the wrench the arm measures, as if the tcp were a mass on a spring and damper.

Per control tick of length dt (position; orientation likewise with an axis-angle error):

    e  = clip(target - commanded, error_clip)     the spring's stretch, bounded
    F  = K e + dead_band(F_ext) - D v             spring toward the target, measured external
                                                  wrench, virtual damping
    v += clip(F / M, max_acceleration) dt, clipped to max_velocity
    commanded += v dt

Why the force stays bounded: at rest in contact, v = 0 and F = 0, so the environment pushes
back with F_ext = -K e (outside the dead band). The stretch is clipped to `error_clip`, which
is derived from the force bound (error_clip = (force_bound - dead_band) / K), so however far
into a surface a target lies, the steady contact force is at most `force_bound`. This is the
same reference-limiting idea as the impedance law's error clip (controllers/cartesian_impedance.py):
the bound is a property of the law, not of a monitor that reacts after the fact.

What the bound does not cover is the impact: a mass moving at v into a surface of stiffness k
overshoots by about v * sqrt(M k). The damping sets the free-space speed the spring can reach
(K * error_clip / D = force_bound / D), so the defaults trade speed for a soft landing; see
AdmittanceGains and tests/controllers/test_admittance.py for the figures against a stiff wall.

Frames and units: everything in the robot `base` frame, SI units; quaternions (w, x, y, z);
F_ext is the wrench the environment applies to the tcp, [force N (3); torque Nm (3)], about the
tcp. Pure numpy: nothing of ours is imported but the rotation helpers beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from controllers.cartesian_impedance import orientation_error
from controllers.rotations import quat_multiply, rotvec_to_quat

ADMITTANCE_FLAGS = ("error_clipped", "velocity_limited", "acceleration_limited")


@dataclass(frozen=True)
class AdmittanceGains:
    """The virtual dynamics. Defaults: a 2 kg tcp, critically damped against the defaults'
    spring, that presses with at most 15 N and 2 Nm and reaches 0.1 m/s in free space."""

    mass: float = 2.0  # kg, virtual translational mass
    inertia: float = 0.05  # kg m^2, virtual rotational inertia (one value, all axes)
    stiffness: float = 300.0  # N/m, the spring toward the target
    rotational_stiffness: float = 10.0  # Nm/rad
    damping: float = 150.0  # N s/m
    rotational_damping: float = 2.0  # Nm s/rad
    force_bound: float = 15.0  # N, the most the spring presses with in steady contact
    torque_bound: float = 2.0  # Nm
    dead_band: float = 1.0  # N: measured forces below it are sensor noise and bias, ignored
    torque_dead_band: float = 0.1  # Nm
    max_velocity: float = 0.25  # m/s of the commanded tcp
    max_angular_velocity: float = 1.0  # rad/s
    max_acceleration: float = 2.0  # m/s^2
    max_angular_acceleration: float = 8.0  # rad/s^2

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0.0):
                raise ValueError(f"AdmittanceGains.{f.name} must be a finite number >= 0, got {value!r}")
        for name in ("mass", "inertia", "stiffness", "rotational_stiffness", "max_velocity",
                     "max_angular_velocity", "max_acceleration", "max_angular_acceleration"):
            if getattr(self, name) <= 0.0:
                raise ValueError(f"AdmittanceGains.{name} must be > 0, got {getattr(self, name)!r}")
        if self.force_bound <= self.dead_band or self.torque_bound <= self.torque_dead_band:
            raise ValueError(
                f"the force bound ({self.force_bound} N, {self.torque_bound} Nm) must exceed the dead "
                f"band ({self.dead_band} N, {self.torque_dead_band} Nm): the bound is what the "
                "spring may press with on top of what the dead band hides")

    @property
    def error_clip(self) -> float:
        """m: the spring's stretch at which it presses with force_bound (the dead band included)."""
        return (self.force_bound - self.dead_band) / self.stiffness

    @property
    def rotation_error_clip(self) -> float:
        """rad: likewise for the torque bound."""
        return (self.torque_bound - self.torque_dead_band) / self.rotational_stiffness


def dead_band(vector: np.ndarray, width: float) -> np.ndarray:
    """The vector shortened by `width` along its direction (zero inside): continuous, so a force
    crossing the band gives no step in the law's output."""
    norm = float(np.linalg.norm(vector))
    if norm <= width:
        return np.zeros_like(vector)
    return vector * (1.0 - width / norm)


def clip_norm(vector: np.ndarray, limit: float) -> tuple[np.ndarray, bool]:
    """The vector scaled down to length `limit` if it is longer, and whether it was."""
    norm = float(np.linalg.norm(vector))
    if norm <= limit:
        return vector, False
    return vector * (limit / norm), True


class AdmittanceController:
    """The law's state (commanded pose and twist) and its tick; what the robot server keeps for
    a position-controlled arm where it keeps a CartesianImpedanceController for a torque one.

    reset() starts at a measured pose at rest; set_reference() moves the target (the server's
    safety-filtered command); snap_reference() holds where the commanded pose is; tick() returns
    the commanded pose and twist for the arm's servo (ControlMode.CARTESIAN_POSITION's
    command_tcp_target)."""

    FLAG_NAMES = ADMITTANCE_FLAGS

    def __init__(self, dt: float, gains: AdmittanceGains | None = None):
        if not (math.isfinite(dt) and dt > 0.0):
            raise ValueError(f"dt must be a positive number of seconds, got {dt!r}")
        self.dt = float(dt)
        self.gains = gains or AdmittanceGains()
        self.position = np.zeros(3)  # commanded tcp position, base frame
        self.quaternion = np.array([1.0, 0.0, 0.0, 0.0])  # commanded tcp orientation (w, x, y, z)
        self.velocity = np.zeros(3)  # commanded linear velocity, m/s
        self.angular_velocity = np.zeros(3)  # rad/s, base frame
        self.target_position = np.zeros(3)
        self.target_quaternion = self.quaternion.copy()
        self.flags = np.zeros(len(ADMITTANCE_FLAGS), dtype=np.int64)  # 1 where a limit acted this tick

    # --- the reference ------------------------------------------------------------------------
    def reset(self, position, quaternion) -> None:
        """Start at this (measured) pose, at rest, holding it."""
        self.position[:] = _finite(position, (3,), "position")
        self.quaternion[:] = _unit(quaternion)
        self.velocity[:] = 0.0
        self.angular_velocity[:] = 0.0
        self.snap_reference()

    def set_reference(self, position, quaternion) -> None:
        self.target_position[:] = _finite(position, (3,), "target position")
        self.target_quaternion[:] = _unit(quaternion)

    def snap_reference(self) -> None:
        """Hold: the target becomes the commanded pose (the virtual mass still brakes to rest)."""
        self.target_position[:] = self.position
        self.target_quaternion[:] = self.quaternion

    @property
    def reference(self) -> tuple[np.ndarray, np.ndarray]:
        return self.target_position.copy(), self.target_quaternion.copy()

    def set_gains(self, gains: AdmittanceGains) -> None:
        if not isinstance(gains, AdmittanceGains):
            raise TypeError(f"set_gains wants AdmittanceGains, got {type(gains).__name__}")
        self.gains = gains

    def active_flags(self) -> list[tuple[str, str]]:
        g = self.gains
        reasons = {"error_clipped": f"spring stretch clipped to {g.error_clip * 1e3:.1f} mm "
                                    f"({g.force_bound:g} N bound)",
                   "velocity_limited": f"commanded speed at {g.max_velocity:g} m/s",
                   "acceleration_limited": f"commanded acceleration at {g.max_acceleration:g} m/s^2"}
        return [(name, reasons[name]) for name, on in zip(ADMITTANCE_FLAGS, self.flags) if on]

    # --- the tick -----------------------------------------------------------------------------
    def tick(self, external_wrench) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One control period: integrate the virtual dynamics under the measured wrench (6,)
        [N; Nm] the environment applies at the tcp, base frame. Returns (position, quaternion,
        twist [v; w]) to command, arrays owned by the controller."""
        wrench = np.asarray(external_wrench, dtype=float)
        if wrench.shape != (6,):
            raise ValueError(f"external_wrench must be 6 numbers [force N; torque Nm], got shape {wrench.shape}")
        if not np.isfinite(wrench).all():
            # A NaN from a sensor must not reach the integrator: hold, braking with the damper.
            raise ValueError(f"external_wrench is not finite ({wrench.tolist()}): the force/torque "
                             "reading is broken; stop the arm and check the sensor")
        g, dt, flags = self.gains, self.dt, self.flags
        flags[:] = 0
        error, clipped = clip_norm(self.target_position - self.position, g.error_clip)
        rotation_error = np.empty(3)  # the rotation taking the commanded orientation to the target
        orientation_error(self.target_quaternion, self.quaternion, rotation_error)
        rotation_error, rotation_clipped = clip_norm(rotation_error, g.rotation_error_clip)
        flags[0] = clipped or rotation_clipped
        force = g.stiffness * error + dead_band(wrench[:3], g.dead_band) - g.damping * self.velocity
        torque = (g.rotational_stiffness * rotation_error + dead_band(wrench[3:], g.torque_dead_band)
                  - g.rotational_damping * self.angular_velocity)
        acceleration, a_limited = clip_norm(force / g.mass, g.max_acceleration)
        angular_acceleration, w_limited = clip_norm(torque / g.inertia, g.max_angular_acceleration)
        flags[2] = a_limited or w_limited
        self.velocity, v_limited = clip_norm(self.velocity + acceleration * dt, g.max_velocity)
        self.angular_velocity, w_limited = clip_norm(self.angular_velocity + angular_acceleration * dt,
                                                      g.max_angular_velocity)
        flags[1] = v_limited or w_limited
        self.position += self.velocity * dt
        q = quat_multiply(rotvec_to_quat(self.angular_velocity * dt), self.quaternion)
        self.quaternion[:] = q / np.linalg.norm(q)
        return self.position, self.quaternion, np.concatenate([self.velocity, self.angular_velocity])


def _finite(value, shape, name) -> np.ndarray:
    array = np.asarray(value, dtype=float)
    if array.shape != shape or not np.isfinite(array).all():
        raise ValueError(f"{name} must be {shape[0]} finite numbers, got {np.asarray(value).tolist()!r}")
    return array


def _unit(quaternion) -> np.ndarray:
    q = _finite(quaternion, (4,), "quaternion (w, x, y, z)")
    norm = float(np.linalg.norm(q))
    if not 0.5 < norm < 1.5:
        raise ValueError(f"quaternion (w, x, y, z) {q.tolist()} is not a rotation (norm {norm:.3g}, want 1)")
    return q / norm
