"""PyBullet mirror of a torque-controlled Panda: the `RobotBackend` contract on a second engine.

The same robot as the MuJoCo mirror (sim/mujoco_backend.py): the shared URDF with the identified
inertials (sim/pybullet_scene.py), the same tcp (`panda_grasptarget`, 0.105 m beyond the flange),
base frame, home posture, limits and units, so the same controller and safety code drive both.

One physics step is one control tick (1 ms). `sense()` reads the joint state and computes, for
that configuration, the tcp pose, the Jacobian, the gravity torque and the Coriolis torque;
`actuate(torque)` applies torque + gravity - joint damping for one `stepSimulation` (a PyBullet
torque acts for one step only: it is written every tick). The URDF's default velocity motors
would hold every joint still, so they are switched off (zero force) at construction and reset.

What PyBullet does not have, and is done here, in the backend (as a Panda's firmware does):
* Gravity compensation: the inverse dynamics at zero velocity and acceleration (all 9 DoF, the
  fingers' mass included) is added to every commanded torque, so commanded torques exclude
  gravity, as on a real Franka and in the MuJoCo mirror.
* Joint damping: `panda_model.ARM_DAMPING` applied explicitly (-d * dq), the viscous friction the
  MuJoCo model has; Bullet's per-link velocity damping is switched off instead.
Known difference: PyBullet has no rotor inertia ("armature", 0.1 kg m^2 per joint in MuJoCo), so
the mass matrices differ by that diagonal and the PyBullet wrist is lighter.

The gripper: both fingers position-controlled to width / 2 each, at most
`GRIPPER_FORCE_LIMIT / 2` per finger (MuJoCo's tendon servo splits its force the same way),
geared to each other as the real hand's are, with the fingertip friction raised to
`FINGER_FRICTION`: at 1 kHz a 20 N grasp with Bullet's default friction of 1.0 dropped the cube.

Kinematics are computed here in double precision (sim/pybullet_scene.py's TcpChain) because
PyBullet reports link poses in single precision. The external torques are J_c^T f_c over the
contact forces PyBullet reports; with a cube held they carry a spurious torque of ~0.4 Nm about
the tcp z axis (the solver's friction forces at the pad corners do not balance exactly), which
MuJoCo's constraint forces do not have. The net force (the cube's weight) is right.
"""

from __future__ import annotations

import math

import numpy as np
import pybullet as p

from controllers.robot_interface import BackendCapabilities, ControlMode, RobotState
from sim import panda_model
from sim.pybullet_scene import TcpChain, build_scene, joint_indices
from sim.scene import Scene

FINGER_FRICTION = 2.0  # fingertip sliding friction: 1.0 lets a grasped cube slip out at 1 kHz
FINGER_FORCE = panda_model.GRIPPER_FORCE_LIMIT / 2  # N per finger
FINGER_COUPLING_FORCE = 50.0  # N the gear between the fingers may exert to keep them symmetric
FINGER_MAX_SPEED = 0.2  # m/s per finger (the URDF's velocity limit)
UNSTABLE_SPEED = 100.0  # rad/s: a joint this fast means the simulation blew up (a Panda: 2.6)


class PybulletBackend:
    control_mode = ControlMode.JOINT_TORQUE  # a Panda's torque interface, gravity compensated

    def __init__(self, scene: Scene):
        self.client = p.connect(p.DIRECT)  # one physics server per backend, no GUI
        c = self.client
        try:
            self.robot, self.world = build_scene(scene, c)
        except Exception:
            p.disconnect(c)
            raise
        self.control_period = float(scene.physics_timestep)
        self.torque_limits = panda_model.TORQUE_LIMITS.copy()
        self.joint_lower = panda_model.JOINT_LOWER.copy()
        self.joint_upper = panda_model.JOINT_UPPER.copy()
        self.home_q = panda_model.HOME_Q.copy()
        self.gripper_max_width = panda_model.GRIPPER_MAX_WIDTH

        joints, links = joint_indices(self.robot, c)
        self._arm = [joints[n] for n in panda_model.ARM_JOINTS]
        self._fingers = [joints[n] for n in panda_model.FINGER_JOINTS]
        self._dofs = self._arm + self._fingers  # the 9 DoF Jacobian and dynamics calls want
        self._tcp = links["panda_grasptarget"]
        self._kinematics = TcpChain(panda_model.panda_urdf_path())
        # Movable joints in index order must be exactly arm then fingers: PyBullet's Jacobian
        # and mass matrix are laid out over the movable joints in that order.
        movable = [j for j in range(p.getNumJoints(self.robot, physicsClientId=c))
                   if p.getJointInfo(self.robot, j, physicsClientId=c)[2] != p.JOINT_FIXED]
        assert movable == self._dofs, (movable, self._dofs)
        for link in range(-1, p.getNumJoints(self.robot, physicsClientId=c)):
            p.changeDynamics(self.robot, link, linearDamping=0.0, angularDamping=0.0, jointDamping=0.0,
                             physicsClientId=c)
        for link in self._fingers:
            p.changeDynamics(self.robot, link, lateralFriction=FINGER_FRICTION, physicsClientId=c)
        # The Franka Hand's fingers are geared together (the URDF's `mimic`, which PyBullet
        # ignores; MuJoCo's mirror has an equality): without it the first finger to touch the
        # cube pushed it 2 cm off the tcp before the other arrived.
        gear = p.createConstraint(self.robot, self._fingers[0], self.robot, self._fingers[1],
                                  p.JOINT_GEAR, [1, 0, 0], [0, 0, 0], [0, 0, 0], physicsClientId=c)
        p.changeConstraint(gear, gearRatio=-1, erp=0.1, maxForce=FINGER_COUPLING_FORCE, physicsClientId=c)

        self._q9 = np.zeros(9)
        self._dq9 = np.zeros(9)
        self._zeros9 = [0.0] * 9
        self._gravity = np.zeros(7)  # gravity torque at the last sensed configuration, Nm
        self._applied = np.zeros(7)
        self._negative_limits = -self.torque_limits
        self._damping = np.asarray(panda_model.ARM_DAMPING, float) * np.ones(7)
        self._gripper_target = self.gripper_max_width
        self._time = 0.0
        self._unstable = False
        self.state = RobotState(
            q=np.zeros(7), dq=np.zeros(7), tcp_position=np.zeros(3), tcp_rotation=np.eye(3),
            jacobian=np.zeros((6, 7)), coriolis=np.zeros(7), tau_external=np.zeros(7))
        self.reset(self.home_q, gripper_width=self.gripper_max_width)
        self.capabilities = BackendCapabilities(
            kinematics=True, dynamics=True, external_wrench=True, simulated_reset=True,
            compiled_impedance_loop=False, world=True, faults=True)

    # --- RobotBackend -----------------------------------------------------------------------
    def sense(self) -> RobotState:
        c, s = self.client, self.state
        joints = p.getJointStates(self.robot, self._dofs, physicsClientId=c)
        q9 = [joint[0] for joint in joints]
        dq9 = [joint[1] for joint in joints]
        self._q9[:] = q9
        self._dq9[:] = dq9
        s.q[:] = self._q9[:7]
        s.dq[:] = self._dq9[:7]
        # Plain floats: numpy's isfinite/abs/max on 9 numbers cost ~10 us a tick. A NaN or inf
        # anywhere makes the sum non-finite.
        if not (math.isfinite(sum(dq9)) and max(map(abs, dq9[:7])) < UNSTABLE_SPEED):
            self._unstable = True
            return s
        # Double-precision kinematics of our own (PyBullet's link poses are single precision).
        self._kinematics.compute(s.q, s.tcp_position, s.tcp_rotation, s.jacobian)
        gravity = p.calculateInverseDynamics(self.robot, q9, self._zeros9, self._zeros9, physicsClientId=c)
        bias = p.calculateInverseDynamics(self.robot, q9, dq9, self._zeros9, physicsClientId=c)
        self._gravity[:] = gravity[:7]
        s.coriolis[:] = [b - g for b, g in zip(bias[:7], gravity)]  # Coriolis = bias - gravity
        s.time = self._time
        return s

    def actuate(self, torque: np.ndarray) -> None:
        applied = self._applied
        np.clip(torque, self._negative_limits, self.torque_limits, out=applied)
        applied += self._gravity  # the firmware's gravity compensation
        applied -= self._damping * self.state.dq  # viscous joint friction
        p.setJointMotorControlArray(self.robot, self._arm, p.TORQUE_CONTROL, forces=applied.tolist(),
                                    physicsClientId=self.client)
        p.stepSimulation(physicsClientId=self.client)
        self._time += self.control_period

    def set_gripper(self, width: float) -> None:
        self._gripper_target = min(max(float(width), 0.0), self.gripper_max_width)
        for finger in self._fingers:
            p.setJointMotorControl2(self.robot, finger, p.POSITION_CONTROL,
                                    targetPosition=self._gripper_target / 2, force=FINGER_FORCE,
                                    maxVelocity=FINGER_MAX_SPEED, physicsClientId=self.client)

    def close(self) -> None:
        if self.client is not None and p.isConnected(self.client):
            p.disconnect(self.client)
        self.client = None

    def latest_state(self) -> RobotState:
        """The state of the configuration now, with the slower fields; advances nothing."""
        self.sense()
        return self.finish_state()

    # --- slower queries (per policy step, not per tick) ---------------------------------------
    def finish_state(self) -> RobotState:
        """Gripper width and external joint torques (contacts only), from the current state."""
        s = self.state
        s.gripper_width = float(self._q9[7] + self._q9[8])
        s.tau_external[:] = self._contact_torques()
        return s

    def _contact_torques(self) -> np.ndarray:
        """Joint torques (7,) of the contact forces the scene exerts on the arm, sum of J_c^T f_c
        over the contact points: the simulated counterpart of libfranka's tau_ext_hat_filtered
        (MuJoCo's mirror also counts joint-limit forces; PyBullet does not report them)."""
        c, tau = self.client, np.zeros(7)
        q9 = self._q9.tolist()
        for contact in p.getContactPoints(bodyA=self.robot, physicsClientId=c):
            link, on_robot, normal = contact[3], np.asarray(contact[5]), np.asarray(contact[7])
            # The normal points from B (the scene) to A (the robot): the force on the robot.
            force = contact[9] * normal + contact[10] * np.asarray(contact[11]) + contact[12] * np.asarray(contact[13])
            com_position, com_orientation = p.getLinkState(self.robot, link, physicsClientId=c)[:2]
            inverse = p.invertTransform(com_position, com_orientation)
            local = p.multiplyTransforms(*inverse, on_robot.tolist(), [0, 0, 0, 1])[0]
            linear, _ = p.calculateJacobian(self.robot, link, list(local), q9, self._zeros9, self._zeros9,
                                            physicsClientId=c)
            tau += np.asarray(linear)[:, :7].T @ force
        return tau

    def external_wrench(self) -> np.ndarray:
        """Estimated external wrench at the tcp (force N, torque Nm; base frame)."""
        s = self.finish_state()
        # tau_ext = J^T F  ->  F = pinv(J^T) tau_ext (least squares; the arm is redundant).
        return np.linalg.lstsq(s.jacobian.T, s.tau_external, rcond=1e-3)[0]

    def mass_matrix(self) -> np.ndarray:
        """Joint-space inertia of the arm (7, 7), kg m^2, at the last sensed configuration (no
        rotor inertia: PyBullet has none, see the module docstring)."""
        full = p.calculateMassMatrix(self.robot, self._q9.tolist(), physicsClientId=self.client)
        return np.asarray(full)[:7, :7].copy()

    def read_faults(self) -> tuple[str, ...]:
        """("simulation_unstable",) once a joint ran faster than UNSTABLE_SPEED or went non-finite
        since the last reset(); () otherwise. Only a reset clears it."""
        return ("simulation_unstable",) if self._unstable else ()

    def pybullet_tcp_pose(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """PyBullet's own tcp position, rotation and Jacobian (the tests check TcpChain against
        them): single-precision pose, double-precision Jacobian (localPosition is in the link's
        centre-of-mass frame, which for panda_grasptarget is its own frame)."""
        c, q9 = self.client, self._q9.tolist()
        link = p.getLinkState(self.robot, self._tcp, computeForwardKinematics=True, physicsClientId=c)
        linear, angular = p.calculateJacobian(self.robot, self._tcp, [0.0, 0.0, 0.0], q9, self._zeros9,
                                              self._zeros9, physicsClientId=c)
        jacobian = np.vstack([np.asarray(linear)[:, :7], np.asarray(angular)[:, :7]])
        return np.array(link[4]), np.reshape(p.getMatrixFromQuaternion(link[5]), (3, 3)), jacobian

    def tcp_twist(self) -> np.ndarray:
        return self.state.jacobian @ self.state.dq

    # --- simulation-only ---------------------------------------------------------------------
    def reset(self, q: np.ndarray, gripper_width: float | None = None) -> None:
        """Teleport the arm to `q` at rest (simulation only; real arms are driven there)."""
        c = self.client
        for joint, value in zip(self._arm, np.asarray(q, float)):
            p.resetJointState(self.robot, joint, float(value), 0.0, physicsClientId=c)
        # The URDF's joints come with velocity motors holding them: off, or torques fight them.
        p.setJointMotorControlArray(self.robot, self._arm, p.VELOCITY_CONTROL, forces=[0.0] * 7,
                                    physicsClientId=c)
        if gripper_width is not None:
            for finger in self._fingers:
                p.resetJointState(self.robot, finger, float(gripper_width) / 2, 0.0, physicsClientId=c)
            self.set_gripper(gripper_width)
        self._unstable = False
        self.latest_state()

    @property
    def time(self) -> float:
        return self._time
