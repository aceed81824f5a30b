"""A position-controlled mode of the MuJoCo mirror: the Panda behaving as a UR does behind
ur-rtde, so the admittance law (controllers/admittance.py) can be run against real contact.

A UR takes a tcp pose (or twist) and its own servo drives the joints there, stiffly; it reports
the wrench at the tcp. Here the servo is the torque mirror (sim/mujoco_backend.py) under a stiff
Cartesian impedance law without an error clip (SERVO_GAINS: 4,000 N/m, critically damped), run
on every 1 ms physics tick, and one command period is two ticks (a UR e-series' 500 Hz). The
wrench is the mirror's estimate from the constraint forces on the arm joints, the counterpart of
a UR's getActualTCPForce. The contact force the figure is judged by is MuJoCo's own
(`table_contact_force`), not that estimate.

As a backend (`--backend mujoco-position`) it is what the robot server drives a UR as: the
admittance law, homing by teleport (simulated_reset: the mirror has no joint moves, so a reset
with drive=true is refused), halt() holding the servo where it is. The scene, its world and its
cameras are the torque mirror's. Used by tests/sim/test_admittance_in_the_mirror.py,
benchmarks/bench_admittance.py and, through the server, tests/robostack/test_admittance_server.py.
"""

from __future__ import annotations

import mujoco
import numpy as np

from controllers.cartesian_impedance import CartesianImpedanceController, CartesianImpedanceGains
from controllers.robot_interface import BackendCapabilities, ControlMode
from controllers.rotations import matrix_to_quat

SERVO_GAINS = CartesianImpedanceGains(
    translational_stiffness=4000.0, rotational_stiffness=300.0,
    translational_clip=float("inf"), rotational_clip=float("inf"))
TICKS_PER_COMMAND = 2  # 1 ms physics ticks per 2 ms command period (500 Hz, a UR e-series)


class MujocoPositionMirror:
    """The torque mirror `backend` (a MujocoBackend) driven as a position-controlled arm."""

    control_mode = ControlMode.CARTESIAN_POSITION
    capabilities = BackendCapabilities(kinematics=True, external_wrench=True, simulated_reset=True,
                                       world=True, faults=True)

    def __init__(self, backend, servo_gains: CartesianImpedanceGains = SERVO_GAINS):
        self.backend = backend
        self.world = backend.world
        self.control_period = backend.control_period * TICKS_PER_COMMAND
        self.torque_limits, self.home_q = backend.torque_limits, backend.home_q
        self.joint_lower, self.joint_upper = backend.joint_lower, backend.joint_upper
        self.gripper_max_width = backend.gripper_max_width
        # No reference smoothing: a position servo goes where it is told, at once.
        self.servo = CartesianImpedanceController(dt=backend.control_period, gains=servo_gains,
                                                  filter_coefficient=1.0)
        self._table = mujoco.mj_name2id(backend.model, mujoco.mjtObj.mjOBJ_GEOM, "table")
        self._force = np.zeros(6)
        self.hold_here()

    @property
    def state(self):
        return self.backend.state

    def sense(self):
        """The state the next command acts on (physics advances in command_tcp_target and halt)."""
        return self.backend.sense()

    def latest_state(self):
        return self.backend.latest_state()

    def reset(self, q, gripper_width=None) -> None:
        """Teleport to q at rest, the servo holding there."""
        self.backend.reset(q, gripper_width=gripper_width)
        self.hold_here()

    def set_gripper(self, width: float) -> None:
        self.backend.set_gripper(width)

    def read_faults(self) -> tuple[str, ...]:
        return self.backend.read_faults()

    def close(self) -> None:
        self.backend.close()

    def hold_here(self) -> None:
        s = self.backend.latest_state()
        self.servo.reset(s.q, s.tcp_position, matrix_to_quat(s.tcp_rotation))
        # The redundant joint stays where it is (a 6-joint UR has none to drift).
        self.servo.set_nullspace_posture(s.q.copy())

    def command_tcp_target(self, position, quaternion, twist=None) -> None:
        """Servo the tcp to this pose (base frame, quaternion w, x, y, z) for one command period.
        The twist is accepted for the contract; the stiff servo follows the pose alone."""
        self.servo.set_reference(np.asarray(position, float), np.asarray(quaternion, float))
        b = self.backend
        for _ in range(TICKS_PER_COMMAND):
            s = b.sense()
            b.actuate(self.servo.compute(s.q, s.dq, s.tcp_position, s.tcp_rotation, s.jacobian, s.coriolis))

    def halt(self) -> None:
        """Stay where the servo's reference is (a UR's speedStop ends at rest)."""
        position, quaternion = self.servo.reference
        self.command_tcp_target(position, quaternion)

    def external_wrench(self) -> np.ndarray:
        """The wrench the environment applies at the tcp, [N; Nm], base frame (estimated)."""
        return self.backend.external_wrench()

    def table_contact_force(self) -> float:
        """N: the normal force between the table and everything touching it (MuJoCo's contact
        solution, the ground truth the admittance figure is judged by)."""
        m, d, total = self.backend.model, self.backend.data, 0.0
        for i in range(d.ncon):
            contact = d.contact[i]
            if self._table in (contact.geom1, contact.geom2):
                mujoco.mj_contactForce(m, d, i, self._force)
                total += abs(self._force[0])  # the contact frame's x axis is the normal
        return total
