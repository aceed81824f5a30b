"""A position-controlled mode of the MuJoCo mirror: the Panda behaving as a UR does behind
ur-rtde, so the admittance law (controllers/admittance.py) can be run against real contact.

A UR takes a tcp pose (or twist) and its own servo drives the joints there, stiffly; it reports
the wrench at the tcp. Here the servo is the torque mirror (sim/mujoco_backend.py) under a stiff
Cartesian impedance law without an error clip (SERVO_GAINS: 4,000 N/m, critically damped), run
on every 1 ms physics tick, and one command period is two ticks (a UR e-series' 500 Hz). The
wrench is the mirror's estimate from the constraint forces on the arm joints, the counterpart of
a UR's getActualTCPForce. The contact force the figure is judged by is MuJoCo's own
(`table_contact_force`), not that estimate.

What this mode is not (yet): a backend the robot server drives. It implements the methods of
ControlMode.CARTESIAN_POSITION (command_tcp_target, halt, external_wrench, sense) for the
admittance experiments in tests/sim/test_admittance_in_the_mirror.py and benchmarks/bench_admittance.py;
the server's position-controlled path does not exist yet (issue 16).
"""

from __future__ import annotations

import mujoco
import numpy as np

from controllers.cartesian_impedance import CartesianImpedanceController, CartesianImpedanceGains
from controllers.robot_interface import ControlMode
from controllers.rotations import matrix_to_quat

SERVO_GAINS = CartesianImpedanceGains(
    translational_stiffness=4000.0, rotational_stiffness=300.0,
    translational_clip=float("inf"), rotational_clip=float("inf"))
TICKS_PER_COMMAND = 2  # 1 ms physics ticks per 2 ms command period (500 Hz, a UR e-series)


class MujocoPositionMirror:
    """The torque mirror `backend` (a MujocoBackend) driven as a position-controlled arm."""

    control_mode = ControlMode.CARTESIAN_POSITION

    def __init__(self, backend, servo_gains: CartesianImpedanceGains = SERVO_GAINS):
        self.backend = backend
        self.control_period = backend.control_period * TICKS_PER_COMMAND
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
        return self.backend.state

    def hold_here(self) -> None:
        s = self.backend.latest_state()
        self.servo.reset(s.q, s.tcp_position, matrix_to_quat(s.tcp_rotation))
        self.servo.set_nullspace_posture(self.backend.home_q)

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
