"""The robot backend contract (controllers/robot_interface.py): one suite every backend passes.

BACKENDS lists them by the factory's names: the MuJoCo and PyBullet mirrors (torque-controlled),
the MuJoCo mirror's position-controlled mode, and the UR backend against the fake of ur_rtde
(tests/hardware/fake_ur_rtde.py; the Franka backend's own suite runs against franky-sim,
tests/hardware/test_franka_backend.py). A check needing a capability or a control mode a backend
does not have is skipped for it, never weakened: a real arm, say, has no simulated reset, so the
checks that start from an exact joint state run on the simulations only. A tick without a
command is zero torque for a torque-controlled arm and halt() for a position-controlled one.

Tolerances, stated once: Jacobian vs central finite differences of the tcp pose within 1e-5
(m/rad per rad); gravity-compensated hold with zero torque drifts less than 1 mm at the tcp and
2 mrad per joint in 1 s; the gripper reaches a commanded width within 3 mm in 0.5 s.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import sys

import numpy as np
import pytest

from controllers import safety
from controllers.cartesian_impedance import CartesianImpedanceController
from controllers.robot_interface import (
    CAPABILITY_MEMBER,
    COMMAND_METHOD,
    BackendCapabilities,
    ControlMode,
    RobotState,
    contract_problems,
)
from controllers.rotations import matrix_to_quat, quat_conjugate, quat_multiply, quat_to_rotvec
from robostack.robot import loop
from robostack.robot.backends import make_backend
from tasks import make_task

# Backend name (as make_backend knows it) -> the task whose scene it is built with.
BACKENDS = {"mujoco": "pick_cube", "pybullet": "pick_cube", "mujoco-position": "pick_cube", "ur": "reach"}
HARDWARE_TESTS = str(pathlib.Path(__file__).resolve().parents[1] / "hardware")


def build(name: str):
    if name != "ur":
        return make_backend(name, make_task(BACKENDS[name]))
    if HARDWARE_TESTS not in sys.path:
        sys.path.insert(0, HARDWARE_TESTS)
    import fake_ur_rtde
    from hardware.ur import SDK_ENV

    fake_ur_rtde.reset_arm()
    os.environ[SDK_ENV] = "fake_ur_rtde"
    try:
        from hardware.ur import UrBackend
        return UrBackend(markers=make_task("reach").build_scene().markers, watchdog_hz=2.0)
    finally:
        del os.environ[SDK_ENV]


@pytest.fixture(scope="module", params=list(BACKENDS))
def backend_name(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def backend(backend_name):
    b = build(backend_name)
    yield b
    b.close()


def needs(backend, *capabilities: str) -> None:
    missing = [c for c in capabilities if not getattr(backend.capabilities, c)]
    if missing:
        pytest.skip(f"{type(backend).__name__} does not declare {missing}")


def needs_torque(backend) -> None:
    if backend.control_mode is not ControlMode.JOINT_TORQUE:
        pytest.skip(f"{type(backend).__name__} is {backend.control_mode.value!r}: no torques")


def joints(backend) -> int:
    return len(backend.home_q)


def postures(backend) -> list[np.ndarray]:
    """Home and two seeded postures well inside the joint limits."""
    rng = np.random.default_rng(7)
    lower, upper = np.asarray(backend.joint_lower), np.asarray(backend.joint_upper)
    centre, half = (lower + upper) / 2, (upper - lower) / 2
    return [np.array(backend.home_q, float), np.array(backend.home_q, float) + 0.1,
            centre + rng.uniform(-0.4, 0.4, joints(backend)) * half]


def ticks(backend, torque, n: int) -> None:
    """n ticks of this torque, or, on a position-controlled arm, of halt()."""
    torque_controlled = backend.control_mode is ControlMode.JOINT_TORQUE
    for _ in range(n):
        backend.sense()
        if torque_controlled:
            backend.actuate(torque)
        else:
            backend.halt()


def move_somewhere(backend, n: int) -> None:
    """n ticks that set the arm moving: large torques, or a tcp target 5 cm off."""
    if backend.control_mode is ControlMode.JOINT_TORQUE:
        return ticks(backend, np.full(7, 2.0), n)
    for _ in range(n):
        s = backend.sense()
        backend.command_tcp_target(s.tcp_position + [0.05, 0.0, -0.05], matrix_to_quat(s.tcp_rotation), np.zeros(6))


# --- declaration ---------------------------------------------------------------------------------

def test_control_mode_and_capabilities_are_declared_and_match_the_methods(backend):
    assert isinstance(backend.control_mode, ControlMode)
    assert isinstance(backend.capabilities, BackendCapabilities)
    assert callable(getattr(backend, COMMAND_METHOD[backend.control_mode]))
    for name, member in CAPABILITY_MEMBER.items():
        if getattr(backend.capabilities, name) and member is not None:
            assert hasattr(backend, member), f"declares {name} without {member}"
    assert contract_problems(backend) == []


def test_the_contract_check_names_a_false_declaration(backend):
    class Liar:
        """Declares what it does not have."""

        def __init__(self, inner, **declared):
            self._inner = inner
            self.capabilities = dataclasses.replace(inner.capabilities, **declared)

        def __getattr__(self, name):
            if name in ("mass_matrix", "run_impedance_ticks", "actuate"):
                raise AttributeError(name)
            return getattr(self._inner, name)

    problems = contract_problems(Liar(backend, dynamics=True, compiled_impedance_loop=True))
    text = "\n".join(problems)
    assert "'dynamics' but has no mass_matrix" in text, text
    assert "'compiled_impedance_loop' but has no run_impedance_ticks" in text, text
    if backend.control_mode is ControlMode.JOINT_TORQUE:
        assert "'joint_torque' but has no actuate()" in text, text


def test_sense_returns_the_state_of_the_tick(backend):
    s = backend.sense()
    assert isinstance(s, RobotState)
    n = joints(backend)
    assert n == 7 or backend.control_mode is ControlMode.CARTESIAN_POSITION
    shapes = {"q": (n,), "dq": (n,), "tcp_position": (3,), "tcp_rotation": (3, 3), "jacobian": (6, n),
              "coriolis": (n,), "tau_external": (n,)}
    for field, shape in shapes.items():
        value = getattr(s, field)
        assert value.shape == shape and np.isfinite(value).all(), field
    ticks(backend, np.zeros(7), 1)
    time = backend.latest_state().time
    if backend.capabilities.simulated_reset:  # a real arm's last measurement is newer every period
        assert backend.latest_state().time == time  # latest_state() advances nothing
    rotation = backend.latest_state().tcp_rotation
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-9)


# --- kinematics ------------------------------------------------------------------------------------

def test_jacobian_matches_finite_differences_of_the_tcp_pose(backend):
    needs(backend, "kinematics", "simulated_reset")
    eps = 1e-6
    for q0 in postures(backend):
        backend.reset(q0)
        jacobian = backend.latest_state().jacobian.copy()
        numeric = np.zeros((6, 7))
        for j in range(7):
            poses = []
            for sign in (1.0, -1.0):
                q = q0.copy()
                q[j] += sign * eps
                backend.reset(q)
                s = backend.latest_state()
                poses.append((s.tcp_position.copy(), matrix_to_quat(s.tcp_rotation)))
            (p_plus, r_plus), (p_minus, r_minus) = poses
            numeric[:3, j] = (p_plus - p_minus) / (2 * eps)
            numeric[3:, j] = quat_to_rotvec(quat_multiply(r_plus, quat_conjugate(r_minus))) / (2 * eps)
        np.testing.assert_allclose(jacobian, numeric, atol=1e-5, err_msg=f"at q = {q0}")


# --- dynamics: gravity compensation, torque limits ------------------------------------------------------

def test_gravity_compensated_arm_holds_still_without_torque(backend):
    needs(backend, "simulated_reset")  # a real arm holds where it is; the mirror is put in postures
    for q0 in postures(backend):
        backend.reset(q0, gripper_width=backend.gripper_max_width)
        start = backend.latest_state().tcp_position.copy()
        ticks(backend, np.zeros(7), round(1.0 / backend.control_period))
        s = backend.latest_state()
        drift = np.linalg.norm(s.tcp_position - start)
        assert drift < 1e-3, f"tcp drifted {drift * 1e3:.2f} mm in 1 s at q = {q0}"
        assert np.abs(s.q - q0).max() < 2e-3, f"joints drifted {np.abs(s.q - q0).max():.4f} rad"


def test_torques_beyond_the_limits_are_clamped_to_them(backend):
    needs(backend, "simulated_reset")
    needs_torque(backend)
    limits = np.asarray(backend.torque_limits, float)
    pattern = np.array([1.0, -1.0, 1.0, 1.0, -1.0, 1.0, -1.0])
    q0 = postures(backend)[1]

    def motion(torque):
        backend.reset(q0, gripper_width=backend.gripper_max_width)
        ticks(backend, torque, 20)
        s = backend.latest_state()
        return s.q.copy(), s.dq.copy()

    at_limit = motion(pattern * limits)
    beyond = motion(pattern * limits * 3.0)
    np.testing.assert_allclose(beyond[0], at_limit[0], atol=1e-12)
    np.testing.assert_allclose(beyond[1], at_limit[1], atol=1e-9)
    within = motion(pattern * limits * 0.5)
    assert np.abs(within[1] - at_limit[1]).min() > 1e-3  # so the comparison can tell torques apart


def test_dynamics_mass_matrix_and_coriolis(backend):
    needs(backend, "dynamics")
    if backend.capabilities.simulated_reset:
        backend.reset(postures(backend)[2])
    s = backend.sense()
    inertia = backend.mass_matrix()
    assert inertia.shape == (7, 7)
    np.testing.assert_allclose(inertia, inertia.T, atol=1e-12)
    assert np.linalg.eigvalsh(inertia).min() > 0.0
    if backend.capabilities.simulated_reset:  # at rest: no velocity, no Coriolis torque
        assert np.abs(s.coriolis).max() < 1e-9
    backend.actuate(np.zeros(7))


def test_external_wrench_is_zero_in_free_space(backend):
    needs(backend, "external_wrench")
    if backend.capabilities.simulated_reset:
        backend.reset(np.asarray(backend.home_q, float))
    ticks(backend, np.zeros(7), 10)
    wrench = backend.external_wrench()
    assert wrench.shape == (6,) and np.isfinite(wrench).all()
    assert np.abs(wrench).max() < 0.5, wrench


# --- gripper, reset ----------------------------------------------------------------------------------

@pytest.mark.parametrize("width", [0.0, 0.04, "max"])
def test_gripper_reaches_the_commanded_width(backend, width):
    if backend.gripper_max_width == 0.0:
        pytest.skip(f"{type(backend).__name__} has no gripper")
    width = backend.gripper_max_width if width == "max" else width
    if backend.capabilities.simulated_reset:
        backend.reset(np.asarray(backend.home_q, float), gripper_width=backend.gripper_max_width / 2)
    backend.set_gripper(width)
    ticks(backend, np.zeros(7), round(0.5 / backend.control_period))
    measured = backend.latest_state().gripper_width
    assert abs(measured - width) < 3e-3, f"commanded {width} m, measured {measured:.4f} m"


def test_simulated_reset_gives_the_exact_joint_state(backend, backend_name):
    needs(backend, "simulated_reset")
    q0 = postures(backend)[2]
    backend.reset(np.asarray(backend.home_q, float))
    move_somewhere(backend, 50)  # moving, so the reset has something to undo
    backend.reset(q0, gripper_width=0.03)
    s = backend.latest_state()
    np.testing.assert_array_equal(s.q, q0)
    np.testing.assert_array_equal(s.dq, np.zeros(joints(backend)))
    assert s.gripper_width == pytest.approx(0.03, abs=1e-12)
    fresh = build(backend_name)  # the same state, from a backend that never moved
    fresh.reset(q0, gripper_width=0.03)
    np.testing.assert_allclose(s.tcp_position, fresh.latest_state().tcp_position, atol=1e-12)
    np.testing.assert_allclose(s.jacobian, fresh.latest_state().jacobian, atol=1e-12)


# --- the compiled lock-step loop ------------------------------------------------------------------------

def run_loop(name: str, compiled: bool, guard_lower_offset: float | None, n: int = 200):
    """n ticks of the Cartesian law toward a displaced reference, compiled or in Python; with a
    guard whose lower limits sit guard_lower_offset below the start (None: the arm's own)."""
    b = build(name)
    q0 = np.asarray(b.home_q, float)
    b.reset(q0, gripper_width=b.gripper_max_width)
    s = b.latest_state()
    controller = CartesianImpedanceController(dt=b.control_period, filter_coefficient=0.05)
    controller.reset(s.q, s.tcp_position, matrix_to_quat(s.tcp_rotation))
    controller.set_reference(s.tcp_position + [0.05, -0.04, -0.05], matrix_to_quat(s.tcp_rotation))
    lower = b.joint_lower if guard_lower_offset is None else q0 - guard_lower_offset
    guard = safety.JointLimitGuard(lower, b.joint_upper, margin=0.05, min_speed=0.0)
    ramp = safety.TorqueRamp(b.control_period, b.torque_limits)
    flags = np.zeros(len(controller.FLAG_NAMES), dtype=np.int64)
    if compiled:
        ran = b.run_impedance_ticks(controller, n, flags, ramp, guard)
    else:
        ran = loop.cartesian_ticks(b, controller, n, flags, ramp, guard)
    return ran, b.latest_state().q.copy(), flags, ramp.commanded.copy(), guard.tick_counts.copy()


@pytest.mark.parametrize("guard_lower_offset", [None, 0.01], ids=["free", "guard trips"])
def test_compiled_loop_is_the_python_loop(backend, backend_name, guard_lower_offset):
    needs(backend, "compiled_impedance_loop")
    compiled = run_loop(backend_name, True, guard_lower_offset)
    python = run_loop(backend_name, False, guard_lower_offset)
    assert compiled[0] == python[0]
    np.testing.assert_allclose(compiled[1], python[1], atol=1e-10)
    for a, b in zip(compiled[2:], python[2:]):
        np.testing.assert_allclose(a, b, atol=1e-10)
    if guard_lower_offset is None:
        assert compiled[0] == 200 and compiled[4][1] == 0
    else:  # the start sits inside the guard's margin: the first tick moving a joint down trips
        assert compiled[0] < 200 and compiled[4][1] == 1


# --- the robot server drives a backend by its declaration ----------------------------------------------

def test_the_server_refuses_a_backend_it_cannot_drive_naming_why(backend_name):
    from robostack.robot.server import RobotServer, RobotServerConfig
    from stand_in import StandIn

    config = RobotServerConfig(task=BACKENDS[backend_name])
    position_controlled = StandIn(build(backend_name), withhold=(), control_mode=ControlMode.JOINT_POSITION)
    position_controlled.command_joint_target = lambda q, dq: None
    with pytest.raises(ValueError, match="'joint_position' targets.*'cartesian_position' arms \\(admittance"):
        RobotServer(config, backend=position_controlled)
    without_kinematics = StandIn(build(backend_name), withhold=("kinematics",))
    with pytest.raises(ValueError, match="declares no kinematics"):
        RobotServer(config, backend=without_kinematics)
    false_declaration = StandIn(build(backend_name), withhold=())
    false_declaration._hidden = {"external_wrench"}  # declared, but gone
    with pytest.raises(ValueError, match="breaks the robot backend contract.*external_wrench"):
        RobotServer(config, backend=false_declaration)


def test_the_server_uses_only_what_a_backend_declares(backend_name):
    from robostack.robot.server import RobotServer, RobotServerConfig
    from stand_in import StandIn

    if backend_name == "ur":
        pytest.skip("a real arm's server runs in real time: tests/hardware/test_ur_server.py")
    # A position-controlled arm's law needs the wrench (the server refuses it without: above).
    withheld = ("compiled_impedance_loop", "world") if backend_name == "mujoco-position" else (
        "external_wrench", "compiled_impedance_loop", "world")
    bare = StandIn(build(backend_name), withhold=withheld)  # using any of them raises AttributeError
    server = RobotServer(RobotServerConfig(task=BACKENDS[backend_name]), backend=bare)
    assert server._fast_loop is None  # lock-step, but no compiled loop declared: the Python ticks
    kind, meta, state = server.handle("reset", {"seed": 0}, {})
    assert kind == "state", meta
    kind, meta, state = server.handle("step", {"gripper": 0.08}, {
        "target_position": state["tcp_position"], "target_quaternion": state["tcp_quaternion"]})
    assert kind == "state", meta
    if "external_wrench" in withheld:
        np.testing.assert_array_equal(state["external_wrench"], np.zeros(6))
    hello = server.handle("hello", {}, {})[1]
    assert hello["control_mode"] == bare.control_mode.value
    assert {name: hello["capabilities"][name] for name in withheld} == dict.fromkeys(withheld, False)
