"""A Franka through franky's CartesianImpedanceTrackingMotion (`--franka-law tracker`): the
Cartesian impedance law runs in franky's C++ thread, in step with libfranka's 1 kHz loop, and
the robot server streams it tcp targets, as it streams a UR's (a CARTESIAN_POSITION backend).

The other route, and the default, is hardware/franka.py: robostack's own law in the server's
Python loop, torques through SimpleTorqueMotion. docs/hardware/franka.md compares the two. In
short: the tracker does not depend on the Python loop's timing, but the torque ramp and the
joint-limit guard after the law are franky's (`max_delta_tau`, its joint-limit repulsion), not
the code the mirrors run.

What the robot server's rules become here (robostack/robot/position_arm.py ImpedanceTargets):
* track: the safety-filtered target, moved from robostack's tcp to libfranka's EE frame, is the
  tracker's reference. Stiffness x error clip bounds the force, as in robostack's own law (the
  defaults are the same: 2000 N/m, 0.01 m clip, 20 N);
* hold (a missed deadline, a tripped guard): the measured pose becomes the reference;
* damped (disarmed, the damped stop after heartbeat loss): each tick the reference is the
  measured pose: no spring force, only the tracker's damping, so the arm comes to rest where it is;
* homing: franky cannot change the motion type while one runs (InvalidMotionTypeException), so
  the tracker stops, a JointMotion drives home, and the next tick starts a fresh tracker;
* the soft start scales the tracker's stiffness (`set_gains`, which franky smooths).
Faults, recovery, the gripper and the state are FrankaBackend's: only the motion differs.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np

from controllers.robot_interface import ControlMode
from controllers.rotations import quat_to_matrix
from hardware.franka import FrankaBackend

log = logging.getLogger("robostack.hardware.franka_tracker")


@dataclasses.dataclass(frozen=True)
class TrackerGains:
    """The tracker's law, fixed for the server's life (SI units; robostack's defaults)."""

    translational_stiffness: float = 2000.0  # N/m
    rotational_stiffness: float = 150.0  # Nm/rad
    translational_clip: float = 0.01  # m per axis: stiffness x clip = 20 N at most
    rotational_clip: float = 0.05  # rad per axis
    max_delta_tau: float = 1.0  # Nm per 1 ms cycle (robostack's 1000 Nm/s torque rate)
    posture_stiffness: float = 10.0  # Nm/rad per joint, toward the home posture (nullspace)

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not (isinstance(value, (int, float)) and np.isfinite(value) and value > 0):
                raise ValueError(f"franka tracker gain {f.name} must be a finite number > 0, got {value!r}")


class FrankaTrackerBackend(FrankaBackend):
    control_mode = ControlMode.CARTESIAN_POSITION

    def __init__(self, host: str = "127.0.0.1", *, gains: TrackerGains = TrackerGains(), **kwargs):
        self.own_impedance_law = gains  # the server reads it: its law passes targets through
        self._scale = 1.0
        self._target = np.eye(4)
        self._joint_move = False  # a JointMotion (homing) runs
        super().__init__(host, **kwargs)

    # --- the motion -----------------------------------------------------------------------------
    def _start_motion(self) -> None:
        """A fresh tracker whose reference is the measured EE pose (it starts without a pull)."""
        franky, g = self._franky, self.own_impedance_law
        motion = franky.CartesianImpedanceTrackingMotion(
            translational_stiffness=g.translational_stiffness * self._scale,
            rotational_stiffness=g.rotational_stiffness * self._scale,
            translational_error_clip=np.full(3, g.translational_clip),
            rotational_error_clip=np.full(3, g.rotational_clip), max_delta_tau=g.max_delta_tau,
            posture_task=franky.PostureTask(np.array(self.home_q), g.posture_stiffness),
            lower_joint_limits=self.joint_lower, upper_joint_limits=self.joint_upper)
        motion.set_reference(franky.CartesianReference(franky.Affine(self._raw.O_T_EE.matrix)))
        self.robot.move(motion, asynchronous=True)
        self.motion = motion

    def _ensure_motion(self) -> bool:
        """A tracker running, started if none is; False while a joint move still runs (franky
        refuses another motion type until it ends) or when starting failed (then a fault)."""
        if self.motion is None and not self._faults:
            franky = self._franky
            try:
                if self.robot.is_in_control:
                    return False  # the joint move home is settling: it holds the arm meanwhile
                self._raw = self.robot.state
                self._start_motion()
            except (franky.Exception, franky.InvalidMotionTypeException) as error:
                self.motion = None
                self._faults = ("tracker_start_failed",)
                log.warning("starting the Cartesian impedance tracker: %s: %s", type(error).__name__, error)
                return False
        return self.motion is not None and not self._faults

    def sense(self):
        """FrankaBackend's, and: once a joint move has ended, a tracker holds the arm at once (with
        no motion running franky-sim let the arm creep at >= 0.02 rad/s, and homing, which waits
        for rest, timed out)."""
        state = super().sense()
        if self._joint_move and not self.robot.is_in_control:
            self._joint_move = False
            self.halt()
        return state

    def command_tcp_target(self, position, quaternion, twist) -> None:
        """The tracker's reference: the tcp target, as libfranka's EE frame (base frame O)."""
        if not self._ensure_motion():
            return
        tcp = self._target
        tcp[:3, :3] = quat_to_matrix(quaternion)
        tcp[:3, 3] = position
        ee = tcp @ self._tcp_T_ee
        self.motion.set_reference(self._franky.CartesianReference(self._franky.Affine(ee)))

    def halt(self) -> None:
        """The measured pose as the reference: no spring force, the tracker's damping stops the arm."""
        if self._ensure_motion():
            self.motion.set_reference(self._franky.CartesianReference(self._franky.Affine(self._raw.O_T_EE.matrix)))

    def move_joints(self, q, speed: float) -> None:
        """franky's JointMotion to q (7,) rad, asynchronous; the tracker stops first (a running
        motion's type cannot change) and restarts on the next command after the move."""
        q = np.asarray(q, dtype=float)
        if q.shape != (7,) or not np.all((q >= self.joint_lower) & (q <= self.joint_upper)):
            raise ValueError(f"move_joints: q must be 7 angles within the joint limits, got {q.tolist()}")
        if self._faults:
            return
        franky = self._franky
        try:
            if self.robot.is_in_control:
                self.robot.stop()
                try:
                    self.robot.join_motion(timeout=1.0)
                except franky.Exception:
                    pass  # "Move command preempted": the tracker ended, as asked
            self.motion = None
            factor = min(1.0, max(0.05, float(speed) / 2.0))  # of franky's joint limits (~2 rad/s)
            self.robot.move(franky.JointMotion(q, relative_dynamics_factor=factor), asynchronous=True)
            self._joint_move = True
        except (franky.Exception, franky.InvalidMotionTypeException) as error:
            self.motion = None
            self._faults = ("joint_move_failed",)
            log.warning("the joint move home: %s: %s", type(error).__name__, error)

    def set_stiffness_scale(self, scale: float) -> None:
        """The supervisor's soft start: the tracker's springs scaled (franky smooths the change)."""
        self._scale = float(scale)
        if self.motion is not None and not self._faults:
            g = self.own_impedance_law
            self.motion.set_gains(self._franky.CartesianImpedanceGains(
                g.translational_stiffness * self._scale, g.rotational_stiffness * self._scale))

    def close(self) -> None:
        """A graceful stop: the measured pose as the reference until the arm rests (2 s at
        most), then the motion ends and libfranka's idle controller holds the arm."""
        if self._closed:
            return
        self._closed = True
        franky = self._franky
        try:
            if self.motion is not None and self.robot.is_in_control:
                deadline = self._raw.time.to_sec() + 2.0
                while self.robot.is_in_control:
                    self._raw = self.robot.state
                    self.motion.set_reference(franky.CartesianReference(franky.Affine(self._raw.O_T_EE.matrix)))
                    if np.abs(self._raw.dq).max() < 0.01 or self._raw.time.to_sec() > deadline:
                        break
                    time.sleep(0.005)
            if self.robot.is_in_control:
                self.robot.stop()
                try:
                    self.robot.join_motion(timeout=3.0)
                except franky.Exception:
                    pass  # "Move command preempted": ended, as asked
        except (franky.Exception, franky.InvalidMotionTypeException) as error:
            log.warning("stopping the arm: %s: %s", type(error).__name__, error)
        if self.gripper is not None:
            self.gripper.close()

    def actuate(self, torque) -> None:
        raise RuntimeError("the tracker backend takes tcp targets (command_tcp_target), not torques")

    @property
    def _tcp_T_ee(self) -> np.ndarray:
        if not hasattr(self, "_tcp_T_ee_cached"):
            self._tcp_T_ee_cached = np.linalg.inv(self._ee_T_tcp)
        return self._tcp_T_ee_cached
