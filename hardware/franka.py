"""A Franka Panda / FR3 through franky (`pip install 'robostack[franka]'`), as a JOINT_TORQUE
backend: the robot server's own Cartesian impedance law, safety filter, torque ramp and
supervisor drive it exactly as they drive the mirrors.

How a tick reaches the arm: the backend starts one franky `SimpleTorqueMotion` when it connects
and keeps it running. libfranka's 1 kHz control loop runs in franky's C++ thread and applies the
latest torque published with `set_torque`; the robot server's Python loop publishes one per tick
(`actuate`). `sense` reads franky's latest robot state (a copy kept by that thread, ~1 us), so it
does not wait for the next packet: the robot server's real-time loop paces the ticks
(robostack/robot/loop.py, `wait_until`). If the Python loop stalls for longer than
`signal_timeout` (50 ms) the motion ends with franky's TorqueSignalTimeoutException and the arm
holds where it is under libfranka's idle controller: the backstop below the supervisor's own
deadline and heartbeat rules. The other route, franky's CartesianImpedanceTracker (the law in
C++, targets streamed), is discussed in docs/hardware/franka.md.

Frames: `base` is libfranka's O. The tcp is robostack's (controllers/franka.py
TCP_IN_FLANGE_*), computed from O_T_EE and the arm's F_T_EE read at connect, so the tcp is the
mirrors' whatever end effector frame Desk has configured. The Jacobian is libfranka's zero
Jacobian of the EE frame moved to that point. Torques exclude gravity (the firmware adds it).

Faults (`read_faults`, codes as the supervisor's `transient_faults` names them): libfranka's
error names from `current_errors` while the arm is in Reflex, or from the exception that ended
the torque motion (`last_motion_errors`); "torque_signal_timeout" when the watchdog ended it,
"user_stopped" when the enabling / stop button was used, "connection_lost" for a network error.
`recover_faults` runs libfranka's automatic error recovery and restarts the torque motion.

The gripper (franky.Gripper, a Franka Hand) runs in a process of its own
(hardware/franka_gripper.py): franky's gripper calls hold the GIL while they wait for the Hand,
so the tick only writes the target to shared memory.
"""

from __future__ import annotations

import ipaddress
import logging
import numpy as np

from controllers import franka
from controllers.robot_interface import BackendCapabilities, ControlMode, RobotState

log = logging.getLogger("robostack.hardware.franka")

EXTRA = "pip install 'robostack[franka]'"


def import_franky():
    """franky, or an ImportError naming the extra that installs it."""
    try:
        import franky
    except ImportError as error:
        raise ImportError(f"the franka backend needs franky (the franky-control package), which is "
                          f"not installed: {EXTRA} (against the franky-sim simulator also "
                          f"pip install 'robostack[franka-sim]'); see docs/hardware/franka.md for the "
                          f"wheel that fits your robot's firmware ({error})") from error
    return franky


def _skew(v: np.ndarray) -> np.ndarray:
    return np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])


def tcp_in_flange() -> np.ndarray:
    """robostack's tcp in the flange frame (4, 4)."""
    c, s = np.cos(franka.TCP_IN_FLANGE_YAW), np.sin(franka.TCP_IN_FLANGE_YAW)
    pose = np.eye(4)
    pose[:2, :2] = [[c, -s], [s, c]]
    pose[:3, 3] = franka.TCP_IN_FLANGE_XYZ
    return pose


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class FrankaBackend:
    """A Franka arm at `host` (its FCI address; franky-sim serves on 127.x.y.z).

    realtime: "enforce" (libfranka refuses to run without a real-time kernel, as on a real arm),
    "ignore", or "auto": ignore on a loopback address (a simulator), enforce elsewhere.
    markers: the task's virtual markers (hardware/markers.py), offered as the backend's world.
    """

    control_mode = ControlMode.JOINT_TORQUE
    control_period = 0.001  # libfranka's 1 kHz
    torque_limits = np.array(franka.TORQUE_LIMITS)
    home_q = np.array(franka.HOME_Q)
    gripper_max_width = franka.GRIPPER_MAX_WIDTH

    def __init__(self, host: str = "127.0.0.1", *, realtime: str = "auto", gripper: bool = True,
                 markers=None, signal_timeout: float = 0.05, gripper_speed: float = 0.1,
                 grasp_force: float = 20.0):
        if realtime not in ("auto", "enforce", "ignore"):
            raise ValueError(f"realtime must be 'auto', 'enforce' or 'ignore', got {realtime!r}")
        if not 0.0 < signal_timeout <= 0.5:
            raise ValueError(f"signal_timeout must be in (0, 0.5] s, got {signal_timeout}")
        franky = self._franky = import_franky()
        self.host, self.signal_timeout = host, float(signal_timeout)
        lower, upper = franka.common_joint_limits()  # Panda or FR3: inside both
        self.joint_lower, self.joint_upper = np.array(lower), np.array(upper)
        self.capabilities = BackendCapabilities(
            kinematics=True, dynamics=True, external_wrench=True, faults=True, fault_recovery=True,
            world=markers is not None)
        if markers is not None:
            from hardware.markers import MarkerWorld

            self.world = MarkerWorld(markers)
        if realtime == "auto":
            realtime = "ignore" if is_loopback(host) else "enforce"
        config = franky.RealtimeConfig.Ignore if realtime == "ignore" else franky.RealtimeConfig.Enforce
        try:
            self.robot = franky.Robot(host, realtime_config=config)
        except franky.Exception as error:
            raise ConnectionError(f"cannot connect to the Franka at {host}: {type(error).__name__}: "
                                  f"{error}. Check the address (--franka-host), that FCI is "
                                  "activated in Desk and the brakes are open, and that the franky "
                                  "wheel matches the firmware (docs/hardware/franka.md)") from error
        self.model = self.robot.model
        self._frame = franky.Frame.EndEffector
        self._move_mode = franky.RobotMode.Move
        self._error_names = [n for n in dir(franky.Errors) if not n.startswith("_")
                             and isinstance(getattr(franky.Errors, n), property)]
        self._raw = self.robot.state  # franky's RobotState of the last read
        # O_T_EE @ ee_T_tcp = O_T_tcp. F_T_EE is Desk's end effector configuration (+ NE_T_EE).
        self._ee_T_tcp = np.linalg.solve(self._raw.F_T_EE.matrix, tcp_in_flange())
        z = np.zeros(7)
        self.state = RobotState(q=z.copy(), dq=z.copy(), tcp_position=np.zeros(3),
                                tcp_rotation=np.eye(3), jacobian=np.zeros((6, 7)),
                                coriolis=z.copy(), tau_external=z.copy(),
                                gripper_width=self.gripper_max_width)
        self._torque = np.zeros(7)
        self._faults: tuple[str, ...] = ()
        self._idle_ticks = 0
        self._closed = False
        self.motion = None
        self._update(self._raw)  # the torque motion starts with the first actuate(): the server
        # may take longer than the watchdog's 50 ms to get from here to its first tick
        self.gripper = None
        if gripper:
            from hardware.franka_gripper import GripperProcess

            self.gripper = GripperProcess(host, gripper_speed, grasp_force)
        if self.gripper is not None:
            self.gripper_max_width = self.gripper.max_width
            self.state.gripper_width = self.gripper.width

    # --- the tick -------------------------------------------------------------------------------
    def _start_motion(self) -> None:
        """A fresh torque motion (a motion that ended cannot be restarted)."""
        motion = self._franky.SimpleTorqueMotion(
            initial_torque=np.zeros(7), signal_timeout=self.signal_timeout,
            compensate_coriolis=False)  # the server's law adds the Coriolis torque itself
        self.robot.move(motion, asynchronous=True)
        self.motion = motion

    def sense(self) -> RobotState:
        """franky's latest measurement, without waiting (the server's loop is the clock). While
        no torque motion runs (after a fault) the state is read from the arm every 10th tick
        only: franky then reads it off the network, which blocks ~1 ms."""
        if self.motion is not None and self.robot.is_in_control:
            self._raw = self.robot.state
        elif self.motion is None:  # before the first actuate: read off the network
            self._raw = self.robot.state
        else:
            self._idle_ticks += 1
            if self._idle_ticks % 10 == 1:
                self._motion_ended()
        self._update(self._raw)
        return self.state

    def _update(self, raw) -> None:
        s = self.state
        s.q[:] = raw.q
        s.dq[:] = raw.dq
        tcp = raw.O_T_EE.matrix @ self._ee_T_tcp
        s.tcp_position[:] = tcp[:3, 3]
        s.tcp_rotation[:] = tcp[:3, :3]
        jacobian = self.model.zero_jacobian(self._frame, raw)
        offset = tcp[:3, 3] - raw.O_T_EE.translation  # EE -> tcp, base frame
        s.jacobian[:3] = jacobian[:3] - _skew(offset) @ jacobian[3:]  # v_tcp = v_ee + w x r
        s.jacobian[3:] = jacobian[3:]
        s.coriolis[:] = self.model.coriolis(raw)
        s.tau_external[:] = raw.tau_ext_hat_filtered
        s.time = raw.time.to_sec()
        if raw.robot_mode != self._move_mode and self.motion is not None and not self._faults:
            if self.robot.is_in_control:  # e.g. Reflex before the motion thread has ended
                self._faults = self._codes(raw)

    def actuate(self, torque: np.ndarray) -> None:
        if self.motion is None and not self._faults:
            self._start_motion()
        np.clip(torque, -self.torque_limits, self.torque_limits, out=self._torque)
        self.motion.set_torque(self._torque)

    # --- faults ---------------------------------------------------------------------------------
    def _codes(self, raw, errors=None) -> tuple[str, ...]:
        errors = raw.current_errors if errors is None else errors
        codes = tuple(n for n in self._error_names if getattr(errors, n))
        if codes:
            return codes
        mode = self._franky.RobotMode
        return {mode.UserStopped: ("user_stopped",), mode.Reflex: ("reflex",)}.get(raw.robot_mode, ())

    def _motion_ended(self) -> None:
        """The torque motion is not running: why (its exception) and what the arm reports now."""
        franky = self._franky
        code = "motion_ended"
        try:
            self.robot.poll_motion()  # re-raises what ended the motion, once
        except franky.TorqueSignalTimeoutException:
            code = "torque_signal_timeout"
        except franky.NetworkException:
            code = "connection_lost"
        except franky.Exception as error:
            code = type(error).__name__
            log.warning("the torque motion ended: %s", error)
        try:
            self._raw = self.robot.state
        except franky.Exception:
            self._faults = ("connection_lost",)
            return
        if self._closed:
            return
        found = self._codes(self._raw) or self._codes(self._raw, self._raw.last_motion_errors) or (code,)
        if code in ("torque_signal_timeout", "connection_lost") and code not in found:
            found += (code,)
        if found != ("motion_ended",) or not self._faults:  # poll_motion raises only once
            self._faults = tuple(dict.fromkeys(self._faults + found))

    def read_faults(self) -> tuple[str, ...]:
        return self._faults

    def recover_faults(self) -> None:
        """libfranka's automatic error recovery, then a fresh torque motion; the faults clear
        only if both work (the supervisor waits for that)."""
        franky = self._franky
        try:
            self.robot.recover_from_errors()
            self._raw = self.robot.state
            if self._codes(self._raw):
                log.warning("error recovery left %s", self._codes(self._raw))
                return
            self._start_motion()
        except (franky.Exception, franky.TorqueSignalTimeoutException) as error:
            log.warning("error recovery failed: %s: %s", type(error).__name__, error)
            return
        self._faults, self._idle_ticks = (), 0

    # --- the rest of the contract ---------------------------------------------------------------
    def latest_state(self) -> RobotState:
        if self.motion is None or self.robot.is_in_control:
            self._raw = self.robot.state
            self._update(self._raw)
        if self.gripper is not None:
            self.state.gripper_width = self.gripper.width
        return self.state

    def mass_matrix(self) -> np.ndarray:
        return np.asarray(self.model.mass(self._raw))

    def external_wrench(self) -> np.ndarray:
        """libfranka's estimate (O_F_ext_hat_K: on the K frame, base frame), moved to the tcp."""
        wrench = np.array(self._raw.O_F_ext_hat_K, dtype=float)
        k = self._raw.O_T_EE.matrix @ self._raw.EE_T_K.matrix
        wrench[3:] += np.cross(k[:3, 3] - self.state.tcp_position, wrench[:3])
        return wrench

    def set_gripper(self, width: float) -> None:
        if self.gripper is not None:
            self.gripper.target = min(max(float(width), 0.0), self.gripper_max_width)

    def close(self) -> None:
        """A graceful stop (franky's TorqueStopMotion: the last torque ramped into joint
        damping until the arm rests, 2 s at most), then the gripper thread ends."""
        if self._closed:
            return
        self._closed = True
        franky = self._franky
        try:
            if self.robot.is_in_control:
                self.robot.move(franky.TorqueStopMotion(damping=np.array([20.0] * 4 + [5.0] * 3)),
                                asynchronous=True)
                self.robot.join_motion(timeout=3.0)
        except (franky.Exception, franky.TorqueSignalTimeoutException) as error:  # not a franky.Exception
            log.warning("stopping the arm: %s: %s", type(error).__name__, error)
        if self.gripper is not None:
            self.gripper.close()
