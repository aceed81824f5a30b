"""A fake of ur_rtde's RTDEControlInterface / RTDEReceiveInterface / DashboardClient (same
method names and signatures as ur-rtde 1.6.5; tests/hardware/test_ur_backend.py compares them
with the real wheel): a kinematic UR in wall time that integrates speedL (tool speed ramped at
the commanded acceleration) and moveJ (joints at the commanded speed), and CHECKS what it is
sent, appending every breach to `ARM.violations`: tool speed/acceleration beyond ur_rtde's
limits, motion before setWatchdog, motion while protectively stopped or with the script stopped,
waitPeriod without initPeriod. A watchdog left unkicked for 1 / min_frequency stops the script.
The tcp and the joints are integrated independently (no UR kinematics): enough to check the
backend's calls, not its kinematics (the backend's check of --ur-model against the measured tcp
therefore logs a mismatch here, unless a test puts the two where a UR would have them, as
test_ur_kinematics.py does). Tests only; one arm per process (`ARM`)."""

from __future__ import annotations

import time
from datetime import timedelta

import numpy as np

from controllers.rotations import matrix_to_quat, quat_to_rotvec, rotvec_to_matrix

TOOL_SPEED_MAX, TOOL_ACCELERATION_MAX, JOINT_SPEED_MAX = 3.0, 150.0, 3.14
quat_to_rotvec(matrix_to_quat(rotvec_to_matrix(np.zeros(3))))  # compiled now, not inside a tick


class Arm:
    def __init__(self):
        self.calls: list[tuple[float, str, tuple]] = []
        self.violations: list[str] = []
        self.position, self.rotation = np.array([0.4, 0.0, 0.3]), np.diag([1.0, -1.0, -1.0])
        self.q = np.array([0.0, -1.5708, 1.5708, -1.5708, -1.5708, 0.0])
        self.dq = np.zeros(6)
        self.speed, self.speed_target, self.accel = np.zeros(6), np.zeros(6), 1.0
        self.joint_target, self.joint_speed = None, 0.0
        self.force = np.zeros(6)
        self.watchdog_hz, self.last_kick = 0.0, None
        self.program_running, self.protective_stop, self.stopped_at = True, False, None
        self.unlock_delay = 5.0  # s after a protective stop before the dashboard may unlock (UR's rule)
        self.connected = True
        self.t = time.perf_counter()

    def advance(self) -> None:
        now = time.perf_counter()
        if self.watchdog_hz and self.last_kick is not None and self.program_running \
                and now - self.last_kick > 1.0 / self.watchdog_hz:
            self.program_running = False
            self.calls.append((now, "watchdog_fired", ()))
        if not self.program_running or self.protective_stop:
            self.speed_target[:] = 0.0
            self.speed[:] = 0.0
            self.joint_target = None
        while self.t < now:
            dt = min(0.002, now - self.t)
            self.t += dt
            step = self.speed_target - self.speed
            self.speed += step * min(1.0, self.accel * dt / max(np.linalg.norm(step[:3]), 1e-12))
            self.position = self.position + self.speed[:3] * dt
            self.rotation = rotvec_to_matrix(self.speed[3:] * dt) @ self.rotation
            self.dq[:] = 0.0
            if self.joint_target is not None:
                d = self.joint_target - self.q
                lead = np.abs(d).max()
                if lead < 1e-9:
                    self.joint_target = None
                else:
                    self.dq = d * min(self.joint_speed, lead / dt) / lead
                    self.q = self.q + self.dq * dt

    def record(self, name, args, motion=False):
        self.advance()
        self.calls.append((time.perf_counter(), name, args))
        if motion:
            if not self.watchdog_hz:
                self.violations.append(f"{name} before setWatchdog")
            if self.protective_stop:
                self.violations.append(f"{name} while protectively stopped")
                return False
            if not self.program_running:
                self.violations.append(f"{name} with the control script stopped")
                return False
        return True

    def count(self, name):
        return sum(1 for _, n, _ in self.calls if n == name)


ARM = Arm()


def reset_arm() -> Arm:
    global ARM
    ARM = Arm()
    return ARM


class RTDEControlInterface:
    def __init__(self, hostname: str, frequency: float = -1.0, flags: int = 1, ur_cap_port: int = 50002,
                 rt_priority: int = 0):
        self.arm, self.dt = ARM, 1.0 / (frequency if frequency > 0 else 500.0)
        self._started = None

    def initPeriod(self):
        self._started = time.perf_counter()
        return timedelta(seconds=self._started)

    def waitPeriod(self, arg0):
        if self._started is None:
            self.arm.violations.append("waitPeriod without initPeriod")
        end = arg0.total_seconds() + self.dt
        while time.perf_counter() < end:
            pass
        self.arm.record("waitPeriod", ())

    def setWatchdog(self, min_frequency: float = 10.0):
        self.arm.watchdog_hz = float(min_frequency)
        self.arm.last_kick = time.perf_counter()
        return self.arm.record("setWatchdog", (min_frequency,))

    def kickWatchdog(self):
        self.arm.advance()  # a kick after the timeout comes too late
        self.arm.last_kick = time.perf_counter()
        return self.arm.record("kickWatchdog", ())

    def speedL(self, xd, acceleration: float = 0.25, time: float = 0.0):
        a = self.arm
        xd = np.asarray(xd, float)
        if xd.shape != (6,) or np.linalg.norm(xd[:3]) > TOOL_SPEED_MAX or np.abs(xd[3:]).max() > JOINT_SPEED_MAX:
            a.violations.append(f"speedL {xd.tolist()} beyond the tool speed limits")
        if not 0.0 < acceleration <= TOOL_ACCELERATION_MAX:
            a.violations.append(f"speedL acceleration {acceleration}")
        if not a.record("speedL", (xd.tolist(), acceleration, time), motion=True):
            return False
        a.speed_target[:], a.accel, a.joint_target = xd, acceleration, None
        return True

    def servoL(self, arg0, arg1, arg2, arg3, arg4, arg5):
        return self.arm.record("servoL", (arg0,), motion=True)

    def speedStop(self, a: float = 10.0):
        self.arm.record("speedStop", (a,))
        self.arm.speed_target[:], self.arm.accel = 0.0, a
        return True

    def servoStop(self, a: float = 10.0):
        return self.speedStop(a)

    def stopJ(self, a: float = 2.0, asynchronous: bool = False):
        self.arm.record("stopJ", (a,))
        self.arm.joint_target = None

    def moveJ(self, q, speed: float = 1.05, acceleration: float = 1.4, asynchronous: bool = False):
        a = self.arm
        if not 0.0 < speed <= JOINT_SPEED_MAX or len(q) != 6:
            a.violations.append(f"moveJ {q} at {speed} rad/s")
        if not asynchronous:
            a.violations.append("a blocking moveJ inside a tick")
        if not a.record("moveJ", (list(q), speed, acceleration, asynchronous), motion=True):
            return False
        a.joint_target, a.joint_speed = np.asarray(q, float), speed
        a.speed_target[:] = a.speed[:] = 0.0
        return True

    def isProgramRunning(self):
        self.arm.advance()
        return self.arm.program_running

    def isConnected(self):
        return self.arm.connected

    def reuploadScript(self):
        a = self.arm
        a.record("reuploadScript", ())
        if a.protective_stop:
            return False
        a.program_running, a.last_kick = True, time.perf_counter()
        return True

    def reconnect(self):
        self.arm.connected = True
        return True

    def stopScript(self):
        self.arm.record("stopScript", ())
        self.arm.program_running = False

    def disconnect(self):
        self.arm.record("disconnect", ())

    def setTcp(self, arg0):
        return self.arm.record("setTcp", (list(arg0),))

    def getTCPOffset(self):
        return [0.0, 0.0, 0.15, 0.0, 0.0, 0.0]

    def zeroFtSensor(self):
        return self.arm.record("zeroFtSensor", ())

    def triggerProtectiveStop(self):
        a = self.arm
        a.record("triggerProtectiveStop", ())
        a.protective_stop, a.program_running, a.stopped_at = True, False, time.perf_counter()
        return True


class RTDEReceiveInterface:
    def __init__(self, hostname: str, frequency: float = -1.0, variables: list = [], verbose: bool = False,
                 use_upper_range_registers: bool = False, rt_priority: int = 0):
        self.arm = ARM

    def getActualTCPPose(self):
        a = self.arm
        a.advance()
        return list(a.position) + list(quat_to_rotvec(matrix_to_quat(a.rotation)))

    def getActualQ(self):
        return list(self.arm.q)

    def getActualQd(self):
        return list(self.arm.dq)

    def getActualTCPForce(self):
        return list(self.arm.force)

    def getActualTCPSpeed(self):
        return list(self.arm.speed)

    def getTimestamp(self):
        return self.arm.t

    def getRobotMode(self):
        return 7

    def getSafetyMode(self):
        return 3 if self.arm.protective_stop else 1

    def isProtectiveStopped(self):
        return self.arm.protective_stop

    def isEmergencyStopped(self):
        return False

    def isConnected(self):
        return self.arm.connected

    def reconnect(self):
        return True

    def disconnect(self):
        pass


class DashboardClient:
    def __init__(self, hostname: str, port: int = 29999, verbose: bool = False):
        self.arm = ARM

    def connect(self, timeout_ms: int = 2000):
        pass

    def disconnect(self):
        pass

    def unlockProtectiveStop(self):
        a = self.arm
        a.record("unlockProtectiveStop", ())
        if a.protective_stop and time.perf_counter() - a.stopped_at < a.unlock_delay:
            raise RuntimeError("Cannot unlock protective stop until 5s after occurrence")
        a.protective_stop = False
