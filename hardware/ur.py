"""A Universal Robots arm (e-series or CB3) through ur_rtde (`pip install 'robostack[ur]'`), as a
CARTESIAN_POSITION backend: the robot server's admittance law (controllers/admittance.py) says
where the tcp should be each tick, and this backend makes the arm's own servo follow it with
`speedL` (the law's twist plus a proportional pose-error feedback), limited in speed and
acceleration before anything is sent.

Clock. ur_rtde's `initPeriod()`/`waitPeriod(t)` is a relative sleep ("until t + 1/frequency").
The robot server keeps an absolute schedule of its own (robostack/robot/loop.py wait_until,
TickStats). Both at once would stack: every tick would start later by waitPeriod's wake-up
latency, without bound. So under the robot server (pacing="server", the default) the server's
loop is the clock, ticking at control_period = 1 / frequency (500 Hz e-series, 125 Hz CB3), and
the backend never sleeps. pacing="rtde" brackets each tick as ur_rtde prescribes (sense() waits
out the previous period with waitPeriod, then starts the next with initPeriod), for a loop that
ticks the backend by itself (a bring-up script, the tests).

Frames. `ur_base` is the controller's Base frame (what getActualTCPPose reports, rotation as an
axis-angle vector). robostack's `base` is ur_base turned by `base_yaw` about z (same origin, z
up): p_base = Rz(base_yaw) p_ur_base; base_yaw=0 makes them equal. The tcp is the controller's
active TCP (set on the pendant, or `tcp_offset` sent with setTcp at connect): it must be
robostack's tcp, between the fingertips with z out of the tool. The Jacobian is computed, not
read (ur_rtde offers none): the nominal DH kinematics of `model` (hardware/ur_kinematics.py) at
the measured joints and tcp position, for the joint-limit guard's refusal; the admittance law
does not use it. At connect the model's forward kinematics are checked against the measured
pose, and a mismatch (a wrong --ur-model) is logged. The tcp's measured twist
(getActualTCPSpeed) is in state.extras["tcp_velocity"], which the robot server's state message
reports.

Wrench. getActualTCPForce: the external wrench at the tcp in ur_base axes [N; Nm] (the script
manual's get_tcp_force), rotated into base. Zeroed with zeroFtSensor at connect (arm at rest).

Watchdog. setWatchdog(watchdog_hz) on the first sense(), before any motion (a motion command
is only sent after a sense), and sense() kicks it every tick. Not at connect: the robot server
builds the rest of itself and binds its sockets between connecting and its first tick (~150 ms
measured, mostly the loop's gc.collect), which outlasts a 20 Hz watchdog, so the arm started in
fault. If the Python side stalls for 1 / watchdog_hz, the control script stops the arm.

Faults (read_faults, for the supervisor's transient_faults whitelist): "protective_stop",
"emergency_stop", "safeguard_stop", "safety_<mode>" for other non-normal safety modes,
"robot_mode_<mode>" when the arm is not running, "control_script_stopped" (the watchdog fired
or the program was stopped), "connection_lost". recover_faults: connection_lost -> reconnect;
protective_stop -> the dashboard's unlockProtectiveStop (UR refuses it for 5 s after the stop);
then reuploadScript and the watchdog again. The rest needs a person at the pendant. While any
fault is active no motion command is sent.
"""

from __future__ import annotations

import importlib
import logging
import os

import numpy as np

from controllers.robot_interface import BackendCapabilities, ControlMode, RobotState
from controllers.admittance import clip_norm
from controllers.cartesian_impedance import orientation_error
from controllers.rotations import matrix_to_quat, rotvec_to_matrix
from hardware import ur_kinematics

# How far (m) the model's forward kinematics may put the tcp from the measured one before the
# backend says so: nominal DH values against a calibrated arm differ by millimetres.
MODEL_TOLERANCE = 0.02
log = logging.getLogger("robostack.hardware.ur")

EXTRA = "pip install 'robostack[ur]'"
# TEST ONLY: a module offering RTDEControlInterface, RTDEReceiveInterface and DashboardClient
# instead of ur_rtde's (tests/hardware/fake_ur_rtde.py). Never set it for a real arm.
SDK_ENV = "ROBOSTACK_UR_SDK"

SAFETY_MODES = {1: "normal", 2: "reduced", 3: "protective_stop", 4: "recovery", 5: "safeguard_stop",
                6: "system_emergency_stop", 7: "robot_emergency_stop", 8: "violation", 9: "fault",
                10: "validate_joint_id", 11: "undefined", 12: "automatic_mode_safeguard_stop",
                13: "three_position_enabling_stop"}
ROBOT_MODES = {-1: "no_controller", 0: "disconnected", 1: "confirm_safety", 2: "booting", 3: "power_off",
               4: "power_on", 5: "idle", 6: "backdrive", 7: "running", 8: "updating_firmware"}
RECOVERABLE = ("connection_lost", "protective_stop", "control_script_stopped")

# What may be sent, at most (ur_rtde refuses beyond: tool speed 3 m/s, tool acceleration
# 150 m/s^2, joint speed 3.14 rad/s, joint acceleration 40 rad/s^2).
MAX_LINEAR_SPEED, MAX_ANGULAR_SPEED, MAX_ACCELERATION = 1.0, 3.0, 10.0
MAX_JOINT_SPEED, MAX_JOINT_ACCELERATION = 3.14, 10.0
HOME_Q = (0.0, -1.5708, 1.5708, -1.5708, -1.5708, 0.0)  # tool down, in front of the base


class UrSdk:
    """ur_rtde's three classes (or the test-only module named by ROBOSTACK_UR_SDK)."""

    def __init__(self, control, receive, dashboard):
        self.RTDEControlInterface, self.RTDEReceiveInterface, self.DashboardClient = control, receive, dashboard


def import_ur_rtde() -> UrSdk:
    """ur_rtde, or an ImportError naming the extra that installs it."""
    name = os.environ.get(SDK_ENV, "")
    if name:
        log.warning("%s=%s: a TEST-ONLY stand-in for ur_rtde, no arm is driven", SDK_ENV, name)
        m = importlib.import_module(name)
        return UrSdk(m.RTDEControlInterface, m.RTDEReceiveInterface, m.DashboardClient)
    try:
        import dashboard_client
        import rtde_control
        import rtde_receive
    except ImportError as error:
        raise ImportError(f"the ur backend needs ur_rtde (the ur-rtde package), which is not "
                          f"installed: {EXTRA}; see docs/hardware/ur.md ({error})") from error
    return UrSdk(rtde_control.RTDEControlInterface, rtde_receive.RTDEReceiveInterface,
                 dashboard_client.DashboardClient)


class UrBackend:
    """A UR arm at `host` (its controller's address; External Control / remote control on).

    frequency: the RTDE rate, 500 Hz (e-series) or 125 Hz (CB3). model: the arm's model, whose DH
    kinematics give the Jacobian (ur3e, ur5e, ur10e, ur16e; CB3: ur3, ur5, ur10). gripper: "none"
    (ur_rtde 1.6.5's Python wheel binds no Robotiq gripper). feedback_gain: 1/s, pose error ->
    added tool speed."""

    control_mode = ControlMode.CARTESIAN_POSITION
    torque_limits = np.array([150.0, 150.0, 150.0, 28.0, 28.0, 28.0])  # UR5e rated, Nm
    joint_lower = np.array([-2 * np.pi, -2 * np.pi, -np.pi, -2 * np.pi, -2 * np.pi, -2 * np.pi])
    joint_upper = -joint_lower
    gripper_max_width = 0.0

    def __init__(self, host: str = "127.0.0.1", *, frequency: float = 500.0, model: str = "ur5e",
                 gripper: str = "none",
                 markers=None, pacing: str = "server", base_yaw: float = 0.0, tcp_offset=None,
                 home_q=HOME_Q, max_linear_speed: float = 0.25, max_angular_speed: float = 1.0,
                 acceleration: float = 1.5, halt_deceleration: float = 2.0,
                 feedback_gain: float = 5.0, watchdog_hz: float = 20.0, zero_ft: bool = True):
        if frequency not in (125.0, 500.0):
            raise ValueError(f"frequency must be 500 (e-series) or 125 (CB3) Hz, got {frequency}")
        if pacing not in ("server", "rtde"):
            raise ValueError(f"pacing must be 'server' (the robot server's loop is the clock) or "
                             f"'rtde' (initPeriod/waitPeriod), got {pacing!r}")
        if model not in ur_kinematics.MODELS:
            raise ValueError(f"model {model!r}: one of {', '.join(ur_kinematics.MODELS)} (--ur-model)")
        self.model = model
        if gripper != "none":
            raise ValueError(f"gripper {gripper!r}: the ur backend offers only 'none' (ur_rtde 1.6.5's "
                             "Python wheel has no RobotiqGripper binding); see docs/hardware/ur.md")
        for name, value, top in (("max_linear_speed", max_linear_speed, MAX_LINEAR_SPEED),
                                 ("max_angular_speed", max_angular_speed, MAX_ANGULAR_SPEED),
                                 ("acceleration", acceleration, MAX_ACCELERATION),
                                 ("halt_deceleration", halt_deceleration, MAX_ACCELERATION),
                                 ("feedback_gain", feedback_gain, 50.0), ("watchdog_hz", watchdog_hz, 500.0)):
            if not 0.0 < value <= top:
                raise ValueError(f"{name} must be in (0, {top}], got {value}")
        self.host, self.frequency, self.pacing = host, float(frequency), pacing
        self.control_period = 1.0 / self.frequency
        self.max_linear_speed, self.max_angular_speed = float(max_linear_speed), float(max_angular_speed)
        self.acceleration, self.halt_deceleration = float(acceleration), float(halt_deceleration)
        self.feedback_gain, self.watchdog_hz = float(feedback_gain), float(watchdog_hz)
        self.home_q = np.array(home_q, dtype=float)
        if self.home_q.shape != (6,):
            raise ValueError(f"home_q must be 6 joint angles (rad), got {home_q!r}")
        self._R = rotvec_to_matrix(np.array([0.0, 0.0, float(base_yaw)]))  # ur_base -> base: Rz(base_yaw)
        self.capabilities = BackendCapabilities(kinematics=True, external_wrench=True, faults=True,
                                                fault_recovery=True, world=markers is not None)
        if markers is not None:
            from hardware.markers import MarkerWorld

            self.world = MarkerWorld(markers)
        sdk = self._sdk = import_ur_rtde()
        try:
            self.receive = sdk.RTDEReceiveInterface(host, self.frequency)
            self.control = sdk.RTDEControlInterface(host, self.frequency)
        except RuntimeError as error:
            raise ConnectionError(f"cannot connect to the UR controller at {host}: {error}. Check the "
                                  "address (--ur-host), that the pendant is in Remote Control mode, the "
                                  "arm is powered on with brakes released (docs/hardware/ur.md)") from error
        # The rotations are compiled on first use (~0.1 s): before the watchdog is armed, or the
        # first tick would outlast it.
        orientation_error(matrix_to_quat(rotvec_to_matrix(np.zeros(3))), np.array([1.0, 0, 0, 0]), np.empty(3))
        self._jacobian_ur = ur_kinematics.tcp_jacobian(np.zeros(6), np.zeros(3), model)
        self._watchdog_armed = False  # on the first sense(): see the module docstring
        if tcp_offset is not None:
            self.control.setTcp([float(x) for x in tcp_offset])
        self.tcp_offset = list(self.control.getTCPOffset())
        if zero_ft:
            self.control.zeroFtSensor()
        z = np.zeros(6)
        self.state = RobotState(q=z.copy(), dq=z.copy(), tcp_position=np.zeros(3), tcp_rotation=np.eye(3),
                                jacobian=np.zeros((6, 6)), coriolis=z.copy(), tau_external=z.copy(),
                                extras={"tcp_velocity": z.copy()})
        self._wrench = np.zeros(6)
        self._faults: tuple[str, ...] = ()
        self._motion = "idle"  # "speed" (speedL streaming), "joint" (moveJ running), "idle"
        self._period_start = None
        self._closed = False
        self.latest_state()
        self._check_model()

    def _check_model(self) -> None:
        """Log when `model`'s kinematics put the tcp far from where the controller measures it:
        the Jacobian (the joint-limit guard's) would then be another arm's."""
        s = self.state  # as latest_state() just read it; its tcp is in base, the kinematics' in ur_base
        position, _ = ur_kinematics.tcp_pose(s.q, self.tcp_offset, self.model)
        off = float(np.linalg.norm(self._R @ position - s.tcp_position))
        if off > MODEL_TOLERANCE:
            log.warning("the %s kinematics put the tcp %.3f m from the controller's measured pose: is "
                        "--ur-model the arm's model (%s), and the TCP offset the pendant's? The "
                        "joint-limit guard's Jacobian assumes %s (docs/hardware/ur.md)",
                        self.model, off, ", ".join(ur_kinematics.MODELS), self.model)
        else:
            log.info("the %s kinematics match the measured tcp within %.1f mm", self.model, 1e3 * off)

    # --- the tick -------------------------------------------------------------------------------
    def sense(self) -> RobotState:
        if self.pacing == "rtde":
            if self._period_start is not None:
                self.control.waitPeriod(self._period_start)
            self._period_start = self.control.initPeriod()
        self._arm_watchdog()
        self.control.kickWatchdog()
        self._read()
        return self.state

    def _arm_watchdog(self) -> None:
        """setWatchdog once, before the first motion or tick (see the module docstring)."""
        if not self._watchdog_armed:
            self.control.setWatchdog(self.watchdog_hz)
            self._watchdog_armed = True

    def _read(self) -> None:
        r, s = self.receive, self.state
        pose = np.asarray(r.getActualTCPPose(), dtype=float)
        s.tcp_position[:] = self._R @ pose[:3]
        s.tcp_rotation[:] = self._R @ rotvec_to_matrix(pose[3:])
        s.q[:] = r.getActualQ()
        s.dq[:] = r.getActualQd()
        ur_kinematics.tcp_jacobian(s.q, pose[:3], self.model, self._jacobian_ur)  # in ur_base
        s.jacobian[:3], s.jacobian[3:] = self._R @ self._jacobian_ur[:3], self._R @ self._jacobian_ur[3:]
        s.time = float(r.getTimestamp())
        speed = np.asarray(r.getActualTCPSpeed(), dtype=float)  # [m/s; rad/s], ur_base axes
        s.extras["tcp_velocity"][:3], s.extras["tcp_velocity"][3:] = self._R @ speed[:3], self._R @ speed[3:]
        force = np.asarray(r.getActualTCPForce(), dtype=float)
        self._wrench[:3], self._wrench[3:] = self._R @ force[:3], self._R @ force[3:]
        self._faults = self._codes()

    def _codes(self) -> tuple[str, ...]:
        r, c = self.receive, self.control
        if not (r.isConnected() and c.isConnected()):
            return ("connection_lost",)
        codes = []
        if r.isProtectiveStopped():
            codes.append("protective_stop")
        if r.isEmergencyStopped():
            codes.append("emergency_stop")
        safety = SAFETY_MODES.get(r.getSafetyMode(), "undefined")
        if safety not in ("normal", "reduced", "protective_stop") and "emergency" not in safety:
            codes.append("safeguard_stop" if safety == "safeguard_stop" else f"safety_{safety}")
        mode = ROBOT_MODES.get(r.getRobotMode(), "undefined")
        if mode != "running":
            codes.append(f"robot_mode_{mode}")
        if not c.isProgramRunning():
            codes.append("control_script_stopped")
        return tuple(codes)

    def command_tcp_target(self, position, quaternion, twist) -> None:
        """speedL(twist + feedback_gain * pose error), in ur_base, speed-limited; never blocks."""
        if self._faults:
            return
        self._arm_watchdog()
        if self._motion == "joint":
            self.control.stopJ(MAX_JOINT_ACCELERATION / 4, False)
        s, Rt = self.state, self._R.T
        error = np.empty(6)
        error[:3] = np.asarray(position, float) - s.tcp_position
        orientation_error(np.asarray(quaternion, float), matrix_to_quat(s.tcp_rotation), error[3:])
        v = np.asarray(twist, float) + self.feedback_gain * error  # base frame
        xd = np.concatenate([clip_norm(Rt @ v[:3], self.max_linear_speed)[0],
                             clip_norm(Rt @ v[3:], self.max_angular_speed)[0]])
        if not np.all(np.isfinite(xd)):
            raise ValueError(f"command_tcp_target: non-finite tool speed {xd.tolist()}")
        self.control.speedL(xd.tolist(), self.acceleration, 0.0)
        self._motion = "speed"

    def halt(self) -> None:
        """Decelerate to rest once (speedStop / stopJ), then nothing: sense() keeps the watchdog."""
        if self._motion == "idle" or self._faults:
            self._motion = "idle"
            return
        if self._motion == "speed":
            self.control.speedStop(self.halt_deceleration)
        else:
            self.control.stopJ(MAX_JOINT_ACCELERATION / 4, False)
        self._motion = "idle"

    def move_joints(self, q, speed: float) -> None:
        """An asynchronous moveJ to q (6,) rad at speed rad/s (leading axis), limited."""
        q = np.asarray(q, dtype=float)
        if q.shape != (6,) or not np.all((q >= self.joint_lower) & (q <= self.joint_upper)):
            raise ValueError(f"move_joints: q must be 6 angles within the joint limits, got {q.tolist()}")
        if self._faults:
            return
        self._arm_watchdog()
        if self._motion == "speed":
            self.control.speedStop(self.halt_deceleration)
        speed = min(max(float(speed), 0.01), MAX_JOINT_SPEED)
        self.control.moveJ(q.tolist(), speed, 1.4, True)
        self._motion = "joint"

    # --- faults ---------------------------------------------------------------------------------
    def read_faults(self) -> tuple[str, ...]:
        return self._faults

    def recover_faults(self) -> None:
        faults = self._faults
        if any(f not in RECOVERABLE for f in faults):
            log.warning("faults %s need the pendant; no recovery through RTDE", faults)
            return
        try:
            if "connection_lost" in faults:
                self.receive.reconnect()
                self.control.reconnect()
            if "protective_stop" in faults:
                dashboard = self._sdk.DashboardClient(self.host)
                dashboard.connect()
                dashboard.unlockProtectiveStop()
                dashboard.disconnect()
            if not self.control.isProgramRunning():
                self.control.reuploadScript()
                self.control.setWatchdog(self.watchdog_hz)
        except RuntimeError as error:
            log.warning("recovery failed: %s", error)
        self._motion = "idle"
        self._read()

    # --- the rest of the contract ---------------------------------------------------------------
    def latest_state(self) -> RobotState:
        self._read()
        return self.state

    def external_wrench(self) -> np.ndarray:
        return self._wrench.copy()

    def set_gripper(self, width: float) -> None:
        """No gripper ("none")."""

    def close(self) -> None:
        """Stop the arm (speedStop / stopJ), end the control script, disconnect."""
        if self._closed:
            return
        self._closed = True
        try:
            self._faults = self._codes()
            self.halt()
            self.control.stopScript()
            self.control.disconnect()
            self.receive.disconnect()
        except RuntimeError as error:
            log.warning("closing the UR connection: %s", error)
