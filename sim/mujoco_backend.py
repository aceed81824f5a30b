"""MuJoCo mirror of a torque-controlled Panda: the `RobotBackend` contract on simulated physics.

One physics step is one control tick (1 ms). `sense()` runs the position/velocity stages of the
step (`mj_step1`), so kinematics, Jacobian and bias forces describe the state the controller is
about to act on; `actuate()` writes the torques and finishes the step (`mj_step2`). That split
is what a real 1 kHz loop sees: measure, compute, command, wait one period.

All state arrays are preallocated and updated in place: the tick is the hottest loop of the
project (20,000 ticks per second of wall clock when training in lock-step).
"""

from __future__ import annotations

import mujoco
import numpy as np

from controllers.robot_interface import BackendCapabilities, ControlMode, RobotState
from sim import panda_model
from sim.mujoco_world import MujocoWorld


class MujocoBackend:
    control_mode = ControlMode.JOINT_TORQUE  # a Panda's torque interface, gravity compensated

    def __init__(self, model: mujoco.MjModel):
        self.model = model
        self.data = mujoco.MjData(model)
        # What tasks read and move (objects, markers), base frame = MuJoCo's world frame.
        self.world = MujocoWorld(model, self.data)
        self.control_period = float(model.opt.timestep)
        self.torque_limits = panda_model.TORQUE_LIMITS.copy()
        self.joint_lower = panda_model.JOINT_LOWER.copy()
        self.joint_upper = panda_model.JOINT_UPPER.copy()
        self.home_q = panda_model.HOME_Q.copy()
        self.gripper_max_width = panda_model.GRIPPER_MAX_WIDTH

        def address(names, attribute):
            return [int(getattr(model.joint(n), attribute)[0]) for n in names]

        arm_qpos = address(panda_model.ARM_JOINTS, "qposadr")
        arm_dof = address(panda_model.ARM_JOINTS, "dofadr")
        # The URDF importer lays the arm out first and contiguously; slices keep every read a view.
        assert arm_qpos == list(range(arm_qpos[0], arm_qpos[0] + 7)), arm_qpos
        assert arm_dof == list(range(arm_dof[0], arm_dof[0] + 7)), arm_dof
        self._qpos = slice(arm_qpos[0], arm_qpos[0] + 7)
        self._dof = slice(arm_dof[0], arm_dof[0] + 7)
        self._finger_qpos = address(panda_model.FINGER_JOINTS, "qposadr")
        self._finger_dof = address(panda_model.FINGER_JOINTS, "dofadr")
        self._tcp = model.site(panda_model.TCP_SITE).id
        arm_actuators = [model.actuator(n.replace("joint", "torque")).id for n in panda_model.ARM_JOINTS]
        assert arm_actuators == list(range(arm_actuators[0], arm_actuators[0] + 7))
        self._torque_ctrl = slice(arm_actuators[0], arm_actuators[0] + 7)
        self._gripper_ctrl = model.actuator("gripper").id

        d = self.data
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))
        self.state = RobotState(
            q=d.qpos[self._qpos],  # views into MjData: always current, never copied
            dq=d.qvel[self._dof],
            tcp_position=d.site_xpos[self._tcp],
            tcp_rotation=d.site_xmat[self._tcp].reshape(3, 3),
            jacobian=np.zeros((6, 7)),
            coriolis=np.zeros(7),
            tau_external=np.zeros(7),
        )
        # MuJoCo counts each unstable step (NaN/huge qacc, qvel, qpos), resets the data and goes
        # on: counts above the value at the last reset are the mirror's one fault.
        self._instability_warnings = [int(w) for w in (mujoco.mjtWarning.mjWARN_BADQACC,
                                                       mujoco.mjtWarning.mjWARN_BADQVEL,
                                                       mujoco.mjtWarning.mjWARN_BADQPOS)]
        self._instabilities_at_reset = 0
        self._fast_scratch = {"q": np.zeros(7), "dq": np.zeros(7), "position": np.zeros(3),
                              "quaternion": np.zeros(4)}
        self.reset(self.home_q, gripper_width=self.gripper_max_width)
        self.capabilities = BackendCapabilities(
            kinematics=True, dynamics=True, external_wrench=True, simulated_reset=True,
            compiled_impedance_loop=fast_path_available(self), world=True, faults=True)

    # --- RobotBackend -----------------------------------------------------------------------
    def sense(self) -> RobotState:
        m, d, s = self.model, self.data, self.state
        mujoco.mj_step1(m, d)
        mujoco.mj_jacSite(m, d, self._jacp, self._jacr, self._tcp)
        s.jacobian[:3] = self._jacp[:, self._dof]
        s.jacobian[3:] = self._jacr[:, self._dof]
        # Bias = Coriolis + gravity; gravity is cancelled by gravcomp, as in a Panda's firmware.
        np.subtract(d.qfrc_bias[self._dof], d.qfrc_gravcomp[self._dof], out=s.coriolis)
        s.time = d.time
        return s

    def actuate(self, torque: np.ndarray) -> None:
        self.data.ctrl[self._torque_ctrl] = torque
        mujoco.mj_step2(self.model, self.data)

    def set_gripper(self, width: float) -> None:
        self.data.ctrl[self._gripper_ctrl] = min(max(width, 0.0), self.gripper_max_width) / 2

    def close(self) -> None:
        pass

    def latest_state(self) -> RobotState:
        """Kinematics of the configuration now (a tick leaves them one step behind) and the
        slower fields; advances nothing."""
        return self.sense_kinematics()

    # --- slower queries (per policy step, not per tick) ---------------------------------------
    def finish_state(self) -> RobotState:
        """Fill the fields that are too costly for every tick: gripper width, external torques."""
        d, s = self.data, self.state
        s.gripper_width = float(d.qpos[self._finger_qpos[0]] + d.qpos[self._finger_qpos[1]])
        # Constraint forces on the arm joints = what contacts (and joint limits) push back with:
        # the simulated counterpart of libfranka's tau_ext_hat_filtered.
        s.tau_external[:] = d.qfrc_constraint[self._dof]
        return s

    def external_wrench(self) -> np.ndarray:
        """Estimated external wrench at the tcp (force N, torque Nm; base frame)."""
        s = self.finish_state()
        # tau_ext = J^T F  ->  F = pinv(J^T) tau_ext (least squares; the arm is redundant).
        return np.linalg.lstsq(s.jacobian.T, s.tau_external, rcond=1e-3)[0]

    def mass_matrix(self) -> np.ndarray:
        """Joint-space inertia of the arm (7, 7), kg m^2, including rotor armature (libfranka's
        `mass`). From the last sense(); not needed by the impedance law, offered for users'
        controllers (e.g. operational-space control)."""
        full = np.zeros((self.model.nv, self.model.nv))
        mujoco.mj_fullM(self.model, self.data, full)  # MuJoCo 4: reads the inertia from MjData
        return full[self._dof, self._dof].copy()

    def _instabilities(self) -> int:
        return sum(self.data.warning[w].number for w in self._instability_warnings)

    def read_faults(self) -> tuple[str, ...]:
        """("simulation_unstable",) once MuJoCo found the simulation unstable (and reset its data,
        so the arm jumped) since the last reset(); () otherwise. Only a reset clears it: the
        mirror has no fault recovery of its own."""
        return ("simulation_unstable",) if self._instabilities() > self._instabilities_at_reset else ()

    def tcp_twist(self) -> np.ndarray:
        return self.state.jacobian @ self.state.dq

    # --- simulation-only ---------------------------------------------------------------------
    def reset(self, q: np.ndarray, gripper_width: float | None = None) -> None:
        """Teleport the arm to `q` at rest (simulation only; real arms are driven there)."""
        d = self.data
        d.qpos[self._qpos] = q
        d.qvel[self._dof] = 0.0
        d.ctrl[self._torque_ctrl] = 0.0
        if gripper_width is not None:
            for a in self._finger_qpos:
                d.qpos[a] = gripper_width / 2
            for a in self._finger_dof:
                d.qvel[a] = 0.0
            self.set_gripper(gripper_width)
        mujoco.mj_forward(self.model, d)
        self._instabilities_at_reset = self._instabilities()
        self.sense_kinematics()

    def sense_kinematics(self) -> RobotState:
        """State from the current qpos without stepping (after a reset or an object move)."""
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_comPos(self.model, self.data)
        mujoco.mj_jacSite(self.model, self.data, self._jacp, self._jacr, self._tcp)
        self.state.jacobian[:3] = self._jacp[:, self._dof]
        self.state.jacobian[3:] = self._jacr[:, self._dof]
        return self.finish_state()

    @property
    def time(self) -> float:
        return float(self.data.time)

    # --- capability compiled_impedance_loop (lock-step) ----------------------------------------
    def run_impedance_ticks(self, controller, n_ticks: int, flag_counts: np.ndarray,
                            torque_ramp, joint_guard) -> int:
        """Up to `n_ticks` of sense -> controller's law -> joint_guard check -> torque_ramp ->
        actuate, compiled end to end (see "lock-step fast path" below). `flag_counts[i]`
        accumulates the ticks on which controller flag i was active. Returns the ticks run:
        fewer than n_ticks when the guard tripped on the last of them."""
        return _run_impedance_ticks(self, controller, n_ticks, flag_counts, torque_ramp, joint_guard)


# --- lock-step fast path ----------------------------------------------------------------------
# In lock-step training the mirror runs 100 control ticks per env step. Driving each tick from
# Python (sense -> law -> actuate) costs ~3x the physics itself in interpreter overhead, so the
# loop below does the same things in compiled code: MuJoCo's own mj_step1 / mj_jacSite /
# mj_step2 called through ctypes, and the controllers' own compiled kernels (the Cartesian law,
# the joint-limit guard, the torque ramp). Same law, same order, same split step as the robot
# server's Python loop over sense()/actuate(); tests check both paths give identical physics.
_mujoco_lib = None


def _mujoco_functions():
    global _mujoco_lib
    if _mujoco_lib is None:
        import ctypes
        import glob
        import os

        path = glob.glob(os.path.join(os.path.dirname(mujoco.__file__), "libmujoco.so*"))
        if not path:
            return None
        lib = ctypes.CDLL(path[0])  # already loaded by the bindings: same handle, same globals
        pointer = ctypes.c_void_p
        for name, argtypes in (("mj_step1", [pointer, pointer]), ("mj_step2", [pointer, pointer]),
                               ("mj_jacSite", [pointer, pointer, pointer, pointer, ctypes.c_int])):
            getattr(lib, name).argtypes = argtypes
            getattr(lib, name).restype = None
        _mujoco_lib = lib
    return _mujoco_lib


def _build_impedance_loop():
    import numba

    from controllers.cartesian_impedance import tick_kernel
    from controllers.rotations import matrix_to_quaternion
    from controllers.safety import joint_limit_check, ramp_torque

    lib = _mujoco_functions()
    step1, step2, jac_site = lib.mj_step1, lib.mj_step2, lib.mj_jacSite

    @numba.njit(cache=False)  # ctypes pointers differ per process: nothing to cache
    def impedance_loop(n, model, data, site, qpos, qvel, site_xpos, site_xmat, bias, gravcomp,
                       ctrl, jacp, jacr, q, dq, position, quaternion, jacobian, coriolis,
                       flag_counts, posture, kernel_state, ramp_state, guard_state):
        tau, flags = kernel_state[-4], kernel_state[-1]
        commanded = ramp_state[1]
        for tick in range(n):
            step1(model, data)
            jac_site(model, data, jacp.ctypes.data, jacr.ctypes.data, site)
            for j in range(7):
                q[j] = qpos[j]
                dq[j] = qvel[j]
                coriolis[j] = bias[j] - gravcomp[j]
                for i in range(3):
                    jacobian[i, j] = jacp[i, j]
                    jacobian[3 + i, j] = jacr[i, j]
            for i in range(3):
                position[i] = site_xpos[i]
            matrix_to_quaternion(site_xmat, quaternion)
            tick_kernel(q, dq, position, quaternion, jacobian, coriolis, posture, *kernel_state)
            tripped = joint_limit_check(q, dq, *guard_state)
            ramp_torque(tau, *ramp_state)
            for j in range(7):
                ctrl[j] = commanded[j]
            for i in range(flags.shape[0]):
                flag_counts[i] += flags[i]
            step2(model, data)
            if tripped:
                return tick + 1
        return n

    return impedance_loop


_impedance_loop = None


def fast_path_available(backend) -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return (isinstance(backend, MujocoBackend) and backend._qpos.start == 0
            and backend._dof.start == 0 and backend._torque_ctrl.start == 0
            and _mujoco_functions() is not None)


def _run_impedance_ticks(backend: MujocoBackend, controller, n_ticks: int,
                         flag_counts: np.ndarray, torque_ramp, joint_guard) -> int:
    """See MujocoBackend.run_impedance_ticks."""
    global _impedance_loop
    if _impedance_loop is None:
        _impedance_loop = _build_impedance_loop()
    d, s, site = backend.data, backend.state, backend._tcp
    scratch = backend._fast_scratch
    ticks = _impedance_loop(
        n_ticks, backend.model._address, d._address, site, d.qpos, d.qvel, d.site_xpos[site],
        d.site_xmat[site].reshape(3, 3), d.qfrc_bias, d.qfrc_gravcomp, d.ctrl,
        backend._jacp, backend._jacr, scratch["q"], scratch["dq"], scratch["position"],
        scratch["quaternion"], s.jacobian, s.coriolis, flag_counts,
        controller.nullspace_posture, controller.kernel_state(), torque_ramp.kernel_state(),
        joint_guard.kernel_state(),
    )
    s.time = d.time
    return ticks
