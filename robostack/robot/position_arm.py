"""What the robot server keeps for a position-controlled arm (ControlMode.CARTESIAN_POSITION:
a UR through ur-rtde, the MuJoCo mirror's position mode) where it keeps the Cartesian impedance
law and the joint impedance homing for a torque-controlled one.

* `AdmittanceLaw`: controllers/admittance.py behind the few calls the server makes of its law
  (reset, snap_reference, set_reference, reference, active_flags, FLAG_NAMES), so that the
  supervisor, the safety filter, the lease and every request run unchanged. Its soft start
  scales the spring's stiffness, never the force bound (the stretch clip grows as the stiffness
  falls: stiffness x clip stays the bound).
* `ImpedanceTargets`: for an arm that runs a Cartesian impedance law of its own on tcp targets
  (a Franka through franky's CartesianImpedanceTracker, hardware/franka_tracker.py): the
  server's law passes the safety-filtered reference through; the arm's stiffness times its error
  clip bounds the force, as the server's own impedance law does on a torque-controlled arm.
* `JointMoveHome`: a reset on such an arm is the arm's own joint move (`move_joints`: a UR's
  asynchronous moveJ), watched tick by tick until it is there or times out.
* `parse_admittance_gains`: the server's --admittance-gains option.

The ticks themselves are in robostack/robot/loop.py (admittance_ticks, halted_ticks,
joint_move_ticks), beside the impedance ones.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from controllers.admittance import ADMITTANCE_FLAGS, AdmittanceController, AdmittanceGains

LOWEST_SCALE = 0.01  # AdmittanceGains needs a stiffness > 0: the soft start begins here


def parse_admittance_gains(text: str) -> AdmittanceGains:
    """'force_bound=10,max_velocity=0.05' -> AdmittanceGains (the rest at their defaults); a
    ValueError naming the bad entry and the valid names."""
    names = [f.name for f in dataclasses.fields(AdmittanceGains)]
    values = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        name = name.strip()
        if name not in names:
            raise ValueError(f"admittance_gains: unknown gain {name!r}; valid ones: {', '.join(names)} "
                             "(controllers/admittance.py AdmittanceGains, SI units)")
        try:
            values[name] = float(value)
        except ValueError:
            raise ValueError(f"admittance_gains: {name}={value!r} is not a number") from None
    return AdmittanceGains(**values)  # its own checks name a negative or inconsistent gain


class AdmittanceLaw:
    """The admittance law as the robot server drives it, one `controller.tick` per control tick."""

    FLAG_NAMES = ADMITTANCE_FLAGS

    def __init__(self, dt: float, gains: AdmittanceGains):
        self.controller = AdmittanceController(dt, gains)
        self.gains = gains  # as configured; the soft start may run a softer spring
        self.scale = 1.0
        self.sensor_fault = ""  # set by loop.admittance_ticks on a non-finite wrench, cleared by the server

    def reset(self, q, position, quaternion) -> None:
        """Start at the measured pose, at rest, holding it (q: the impedance law's signature)."""
        self.controller.reset(position, quaternion)

    def snap_reference(self, position=None, quaternion=None) -> None:
        """Hold: the target becomes the commanded pose, not the measured one passed in. The two
        differ by the arm's servo error, and in contact by what presses: snapping to the
        commanded pose ends the spring's push with no jump."""
        self.controller.snap_reference()

    def set_reference(self, position, quaternion) -> None:
        self.controller.set_reference(position, quaternion)

    @property
    def reference(self) -> tuple[np.ndarray, np.ndarray]:
        return self.controller.reference

    def set_nullspace_posture(self, q) -> None:
        """A position-controlled arm's own servo resolves its redundancy: nothing to set."""

    def active_flags(self) -> list[tuple[str, str]]:
        return self.controller.active_flags()

    @property
    def tick(self):
        return self.controller.tick

    @property
    def flags(self) -> np.ndarray:
        return self.controller.flags

    def set_stiffness_scale(self, scale: float) -> None:
        """The soft start: springs scaled by `scale` (0..1); bounds, damping and limits kept."""
        scale = min(1.0, max(LOWEST_SCALE, float(scale))) if math.isfinite(scale) else LOWEST_SCALE
        self.scale = scale
        g = self.gains
        self.controller.set_gains(g if scale == 1.0 else dataclasses.replace(
            g, stiffness=g.stiffness * scale, rotational_stiffness=g.rotational_stiffness * scale))


class ImpedanceTargets:
    """The law of an arm whose own Cartesian impedance law tracks tcp targets: each tick sends
    the reference (the safety-filtered target) as it is. A hold is at the measured pose (the
    arm's spring then pulls nowhere); the soft start scales the arm's own stiffness."""

    FLAG_NAMES: tuple[str, ...] = ()

    def __init__(self, backend):
        self.backend = backend
        self.flags = np.zeros(0, dtype=np.int64)
        self.sensor_fault = ""
        self._position, self._quaternion = np.zeros(3), np.array([1.0, 0.0, 0.0, 0.0])
        self._twist = np.zeros(6)  # a target at rest: the arm's law damps toward it

    def reset(self, q, position, quaternion) -> None:
        self.set_reference(position, quaternion)

    def snap_reference(self, position, quaternion) -> None:
        self.set_reference(position, quaternion)

    def set_reference(self, position, quaternion) -> None:
        self._position = np.array(position, dtype=np.float64)
        self._quaternion = np.array(quaternion, dtype=np.float64)

    @property
    def reference(self) -> tuple[np.ndarray, np.ndarray]:
        return self._position, self._quaternion

    def tick(self, external_wrench) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self._position, self._quaternion, self._twist

    def set_nullspace_posture(self, q) -> None:
        """The arm's law has its own posture task (set by the backend)."""

    def active_flags(self) -> list[tuple[str, str]]:
        return []

    def set_stiffness_scale(self, scale: float) -> None:
        scale = min(1.0, max(LOWEST_SCALE, float(scale))) if math.isfinite(scale) else LOWEST_SCALE
        self.backend.set_stiffness_scale(scale)


class JointMoveHome:
    """A reset on a position-controlled arm: its own joint move to `home`, started now, watched
    once per tick. `status`: "moving", then "arrived" (every joint within `position_tolerance`
    and slower than `speed_tolerance`) or "timed_out" (after timeout_ticks ticks)."""

    def __init__(self, backend, home, speed: float, timeout_ticks: int,
                 position_tolerance: float = 0.01, speed_tolerance: float = 0.02):
        self.target = np.array(home, dtype=np.float64)
        self.timeout_ticks = int(timeout_ticks)
        self.position_tolerance, self.speed_tolerance = float(position_tolerance), float(speed_tolerance)
        self.ticks = 0
        self.status = "moving"
        backend.move_joints(self.target, speed)

    def tick(self, q, dq) -> None:
        if (np.abs(np.asarray(q) - self.target).max() <= self.position_tolerance
                and np.abs(np.asarray(dq)).max() <= self.speed_tolerance):
            self.status = "arrived"
        elif self.ticks >= self.timeout_ticks:
            self.status = "timed_out"
        self.ticks += 1

    def remaining_error(self, q) -> str:
        error = np.asarray(q) - self.target
        j = int(np.argmax(np.abs(error)))
        return (f"joint {j + 1} is {abs(error[j]):.3f} rad from its home value {self.target[j]:.3f} rad "
                f"(tolerance {self.position_tolerance} rad)")
