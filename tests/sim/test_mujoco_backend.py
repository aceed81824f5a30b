"""The MuJoCo mirror: model sanity, gravity compensation, gripper, state consistency."""

import numpy as np
import pytest

from sim import panda_model
from sim.mujoco_backend import MujocoBackend
from sim.mujoco_scene import compile_scene
from sim.scene import Box, Scene


@pytest.fixture(scope="module")
def backend():
    cube = Box("cube", (0.02, 0.02, 0.02), 0.1, (1, 0, 0, 1), (0.5, 0.0, 0.02))
    return MujocoBackend(compile_scene(Scene(objects=(cube,))))


def test_physics_runs_at_one_kilohertz(backend):
    assert backend.control_period == pytest.approx(0.001)


def test_identified_masses_replace_urdf_placeholders(backend):
    m = backend.model
    arm_mass = sum(m.body(f"panda_link{i}").mass[0] for i in range(8))
    # Gaz et al. 2019: links 0-7 weigh ~16.7 kg in total; the URDF's placeholders sum to 17.1
    # with 0.1 kg m^2 inertia on a 0.2 kg wrist. Check the identified values made it in.
    assert arm_mass == pytest.approx(16.69, abs=0.05)
    assert m.body("panda_link7").inertia.max() < 0.02


def test_gravity_compensated_arm_holds_still_without_torque(backend):
    backend.reset(backend.home_q, gripper_width=0.08)
    start = backend.state.tcp_position.copy()
    for _ in range(1000):  # one second
        backend.sense()
        backend.actuate(np.zeros(7))
    drift = np.linalg.norm(backend.state.tcp_position - start)
    assert drift < 1e-3, f"tcp drifted {drift * 1e3:.2f} mm in 1 s with gravity compensation"


def test_home_pose_points_gripper_down_in_front_of_base(backend):
    backend.reset(backend.home_q, gripper_width=0.08)
    s = backend.state
    assert 0.3 < s.tcp_position[0] < 0.6 and abs(s.tcp_position[1]) < 1e-6
    assert s.tcp_rotation[:, 2] @ np.array([0, 0, -1.0]) > 0.99  # tcp z axis points down


def test_jacobian_matches_finite_differences(backend):
    backend.reset(backend.home_q + 0.1, gripper_width=0.08)
    jac = backend.state.jacobian.copy()
    p0 = backend.state.tcp_position.copy()
    eps = 1e-6
    for j in range(7):
        q = backend.home_q + 0.1
        q[j] += eps
        backend.reset(q)
        np.testing.assert_allclose((backend.state.tcp_position - p0) / eps, jac[:3, j], atol=1e-4)


def test_gripper_closes_and_opens(backend):
    backend.reset(backend.home_q, gripper_width=0.08)
    backend.set_gripper(0.0)
    for _ in range(500):
        backend.sense()
        backend.actuate(np.zeros(7))
    assert backend.finish_state().gripper_width < 0.002
    backend.set_gripper(0.08)
    for _ in range(500):
        backend.sense()
        backend.actuate(np.zeros(7))
    assert backend.finish_state().gripper_width > 0.075


def test_torques_are_clamped_to_rated_limits(backend):
    assert np.allclose(backend.model.actuator_ctrlrange[:7, 1], panda_model.TORQUE_LIMITS)


def test_mass_matrix_is_symmetric_positive_definite_with_armature(backend):
    backend.reset(backend.home_q, gripper_width=0.08)
    backend.sense()
    inertia = backend.mass_matrix()
    np.testing.assert_allclose(inertia, inertia.T, atol=1e-12)
    assert np.linalg.eigvalsh(inertia).min() > 0.09  # armature 0.1 kg m^2 on every joint
