"""The PyBullet mirror (sim/pybullet_backend.py): the same robot as the MuJoCo mirror, torque
control done right, a grasp that holds, and the world interface. The engine-neutral contract is
tests/robot/test_backend_contract.py; this file checks what is particular to PyBullet."""

import time

import numpy as np
import pybullet as p
import pytest

from controllers import safety
from controllers.cartesian_impedance import CartesianImpedanceController
from controllers.rotations import matrix_to_quat
from robostack.robot import loop
from robostack.robot.backends import make_backend, renders_cameras
from sim import panda_model
from sim.mujoco_backend import MujocoBackend
from sim.mujoco_scene import compile_scene
from sim.pybullet_backend import PybulletBackend
from sim.scene import Box, Marker, Scene
from tasks import make_task

CUBE = Box("cube", (0.02, 0.02, 0.02), 0.1, (1, 0, 0, 1), (0.5, 0.0, 0.02))
SCENE = Scene(objects=(CUBE,), markers=(Marker("goal", (0.4, 0.1, 0.3)),))


@pytest.fixture(scope="module")
def backend():
    b = PybulletBackend(SCENE)
    yield b
    b.close()


@pytest.fixture(scope="module")
def mujoco():
    return MujocoBackend(compile_scene(SCENE))


def postures():
    rng = np.random.default_rng(3)
    return [panda_model.HOME_Q + d for d in [np.zeros(7), *rng.uniform(-0.5, 0.5, (3, 7))]]


def test_physics_runs_at_one_kilohertz(backend):
    assert backend.control_period == 0.001
    parameters = p.getPhysicsEngineParameters(physicsClientId=backend.client)
    assert parameters["fixedTimeStep"] == pytest.approx(0.001)
    start = backend.latest_state().time
    backend.sense()
    backend.actuate(np.zeros(7))
    assert backend.latest_state().time == pytest.approx(start + 0.001, abs=1e-12)


def test_the_identified_inertials_replace_the_urdf_placeholders(backend):
    _, links = _indices(backend)
    for name, (mass, com, (ixx, iyy, izz, ixy, ixz, iyz)) in panda_model._INERTIALS.items():
        if name == "panda_link0":  # the fixed base: PyBullet reports it massless, it never moves
            continue
        info = p.getDynamicsInfo(backend.robot, links[name], physicsClientId=backend.client)
        assert info[0] == pytest.approx(mass, rel=1e-12), name
        np.testing.assert_allclose(info[3], com, atol=1e-12, err_msg=name)
        # PyBullet stores the principal moments and turns the inertial frame onto their axes.
        tensor = np.array([[ixx, ixy, ixz], [ixy, iyy, iyz], [ixz, iyz, izz]])
        np.testing.assert_allclose(sorted(info[2]), np.linalg.eigvalsh(tensor), rtol=1e-5, atol=1e-9,
                                   err_msg=name)


def test_mass_matrix_is_mujocos_without_rotor_inertia(backend, mujoco):
    # Same identified inertials, same frames: the arms differ only by MuJoCo's armature.
    for q in postures():
        backend.reset(q, gripper_width=0.08)
        mujoco.reset(q, gripper_width=0.08)
        mujoco.sense()
        expected = mujoco.mass_matrix() - panda_model.ARM_ARMATURE * np.eye(7)
        np.testing.assert_allclose(backend.mass_matrix(), expected, atol=1e-6)


def test_gravity_torque_is_mujocos_gravity_compensation(backend, mujoco):
    for q in postures():
        backend.reset(q, gripper_width=0.08)
        mujoco.reset(q, gripper_width=0.08)
        mujoco.sense()
        expected = mujoco.data.qfrc_gravcomp[:7]
        assert np.abs(expected).max() > 1.0  # the arm is heavy: the comparison means something
        np.testing.assert_allclose(backend._gravity, expected, atol=1e-6)


def test_tcp_pose_and_jacobian_are_mujocos_and_pybullets(backend, mujoco):
    for q in postures():
        backend.reset(q)
        mujoco.reset(q)
        s, m = backend.latest_state(), mujoco.latest_state()
        np.testing.assert_allclose(s.tcp_position, m.tcp_position, atol=1e-9)
        np.testing.assert_allclose(s.tcp_rotation, m.tcp_rotation, atol=1e-9)
        np.testing.assert_allclose(s.jacobian, m.jacobian, atol=1e-9)
        # Our double-precision chain agrees with PyBullet's own (single-precision) link pose.
        position, rotation, jacobian = backend.pybullet_tcp_pose()
        np.testing.assert_allclose(s.tcp_position, position, atol=1e-6)
        np.testing.assert_allclose(s.tcp_rotation, rotation, atol=1e-6)
        np.testing.assert_allclose(s.jacobian, jacobian, atol=1e-12)


def test_torque_accelerates_the_arm_by_the_mass_matrix_for_one_tick(backend):
    # The default velocity motors are off: a torque from rest gives dq = h M^-1 tau after one
    # tick (a motor still on would hold the joints). And it acts for that tick only: with zero
    # torque on the next the velocity barely changes (damping and Coriolis only).
    q = panda_model.HOME_Q + 0.1
    backend.reset(q, gripper_width=0.08)
    tau = np.array([2.0, -3.0, 1.5, 2.0, 0.5, -0.4, 0.3])
    s = backend.sense()
    expected = backend.control_period * np.linalg.solve(backend.mass_matrix(), tau)
    backend.actuate(tau)
    after_torque = backend.sense().dq.copy()
    np.testing.assert_allclose(after_torque, expected, rtol=0.02, atol=1e-5)
    backend.actuate(np.zeros(7))
    change = backend.sense().dq - after_torque
    assert np.abs(change).max() < 0.05 * np.abs(after_torque).max(), change
    backend.actuate(np.zeros(7))
    assert s is backend.state


def test_fingers_move_together(backend):
    backend.reset(panda_model.HOME_Q, gripper_width=0.08)
    backend.set_gripper(0.02)
    for _ in range(300):
        backend.sense()
        backend.actuate(np.zeros(7))
    left, right = backend._q9[7:]
    assert left == pytest.approx(0.01, abs=1e-3) and right == pytest.approx(left, abs=2e-4)


def _indices(backend):
    from sim.pybullet_scene import joint_indices

    return joint_indices(backend.robot, backend.client)


def test_a_scripted_grasp_lifts_the_cube():
    # Above the cube, down, close, up: the Cartesian impedance law of the robot server, a tick at
    # a time, with the reference moved along straight lines. The cube must come up with the hand.
    b = make_backend("pybullet", make_task("pick_cube"))
    try:
        b.reset(b.home_q, gripper_width=b.gripper_max_width)
        s = b.latest_state()
        controller = CartesianImpedanceController(dt=b.control_period, filter_coefficient=0.05)
        down = matrix_to_quat(s.tcp_rotation)
        controller.reset(s.q, s.tcp_position, down)
        ramp = safety.TorqueRamp(b.control_period, b.torque_limits)
        guard = safety.JointLimitGuard(b.joint_lower, b.joint_upper)
        flags = np.zeros(len(controller.FLAG_NAMES), dtype=np.int64)
        cube = b.world.object_pose("cube")[0]

        def move_to(target, seconds, gripper=None):
            start, n = controller.reference[0].copy(), int(seconds / b.control_period)
            if gripper is not None:
                b.set_gripper(gripper)
            for k in range(0, n, 10):
                fraction = min(1.0, (k + 10) / (0.7 * n))
                controller.set_reference(start + fraction * (np.asarray(target) - start), down)
                assert loop.cartesian_ticks(b, controller, 10, flags, ramp, guard) == 10

        move_to(cube + [0, 0, 0.08], 1.0)
        move_to(cube, 1.0)
        move_to(cube, 0.5, gripper=0.0)
        move_to(cube + [0, 0, 0.15], 1.5)
        s = b.latest_state()
        lifted = b.world.object_pose("cube")[0]
        assert lifted[2] > cube[2] + 0.12, lifted
        assert np.linalg.norm(lifted - s.tcp_position) < 0.01, (lifted, s.tcp_position)
        assert s.gripper_width == pytest.approx(0.04, abs=2e-3)  # held, fingers on the cube
        assert b.external_wrench()[2] == pytest.approx(-0.1 * 9.81, abs=0.1)  # its weight
        assert b.read_faults() == ()
    finally:
        b.close()


def test_world_object_pose_and_mass_round_trip(backend):
    world = backend.world
    quaternion = np.array([np.cos(0.3), 0.0, 0.0, np.sin(0.3)])  # (w, x, y, z): 0.6 rad about z
    world.set_object_pose("cube", [0.45, -0.1, 0.02], quaternion)
    position, read = world.object_pose("cube")
    np.testing.assert_allclose(position, [0.45, -0.1, 0.02], atol=1e-12)
    np.testing.assert_allclose(read, quaternion, atol=1e-12)
    linear, angular = p.getBaseVelocity(world._objects["cube"], physicsClientId=backend.client)
    assert linear == (0.0, 0.0, 0.0) and angular == (0.0, 0.0, 0.0)
    assert world.object_mass("cube") == pytest.approx(0.1)
    inertia = np.asarray(p.getDynamicsInfo(world._objects["cube"], -1, physicsClientId=backend.client)[2])
    world.set_object_mass("cube", 0.25)
    assert world.object_mass("cube") == pytest.approx(0.25)
    scaled = p.getDynamicsInfo(world._objects["cube"], -1, physicsClientId=backend.client)[2]
    np.testing.assert_allclose(scaled, inertia * 2.5, rtol=1e-9)
    world.set_object_mass("cube", 0.1)
    with pytest.raises(KeyError, match="objects: \\['cube'\\]"):
        world.object_pose("ball")
    with pytest.raises(ValueError, match="mass must be > 0"):
        world.set_object_mass("cube", 0.0)
    np.testing.assert_allclose(world.marker_position("goal"), [0.4, 0.1, 0.3])
    world.set_marker_position("goal", [0.5, 0.0, 0.2])
    np.testing.assert_allclose(world.marker_position("goal"), [0.5, 0.0, 0.2])


def test_a_box_rests_on_the_table_and_falls_under_gravity(backend):
    backend.reset(panda_model.HOME_Q)
    backend.world.set_object_pose("cube", [0.6, 0.2, 0.12], [1, 0, 0, 0])
    for _ in range(100):  # 0.1 s of free fall from 10 cm above its resting height
        backend.sense()
        backend.actuate(np.zeros(7))
    assert backend.world.object_pose("cube")[0][2] == pytest.approx(0.12 - 0.5 * 9.81 * 0.1 ** 2, abs=3e-3)
    for _ in range(900):
        backend.sense()
        backend.actuate(np.zeros(7))
    assert backend.world.object_pose("cube")[0][2] == pytest.approx(0.02, abs=1e-3)  # on the table


def test_a_blown_up_simulation_is_a_fault_until_reset(backend):
    backend.reset(panda_model.HOME_Q)
    assert backend.read_faults() == ()
    p.resetJointState(backend.robot, backend._arm[6], panda_model.HOME_Q[6], 1e3, physicsClientId=backend.client)
    backend.sense()
    assert backend.read_faults() == ("simulation_unstable",)
    backend.reset(panda_model.HOME_Q)
    assert backend.read_faults() == ()


def test_factory_backends_have_their_own_clients_and_close_them():
    a, b = (make_backend("pybullet", make_task("pick_cube")) for _ in range(2))
    assert a.client != b.client
    assert renders_cameras(a)  # sim/pybullet_cameras.py
    a.close()
    assert not p.isConnected(a.client if a.client is not None else -1)
    assert b.latest_state().q.shape == (7,)  # the other one is untouched
    b.close()
    b.close()  # twice is harmless
    with pytest.raises(ValueError, match="'mujoco', 'pybullet'"):
        make_backend("gazebo", make_task("pick_cube"))


def test_a_pybullet_tick_costs_at_most_four_mujoco_python_ticks():
    # The server's Python tick loop on both mirrors, best of three, in this test: the ratio, not
    # the machine's load, is what is checked. Before the solver settings and compiled kinematics
    # it was 5-7.6x (~190 us a tick on an idle machine); after 2.3-3.1x.
    from robostack.robot.server import RobotServer, RobotServerConfig

    def tick_seconds(backend):
        server = RobotServer(RobotServerConfig(task="pick_cube", backend=backend, fast_loop=False))
        try:
            server.handle("reset", {"seed": 0}, {})
            server.run_ticks(200)
            best = float("inf")
            for _ in range(3):
                start = time.perf_counter()
                server.run_ticks(1000)
                best = min(best, (time.perf_counter() - start) / 1000)
            return best
        finally:
            server.backend.close()

    pybullet, mujoco = tick_seconds("pybullet"), tick_seconds("mujoco")
    assert pybullet < 4.0 * mujoco, (pybullet * 1e6, mujoco * 1e6)
