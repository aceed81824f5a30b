"""The admittance law (controllers/admittance.py) against a simulated position-controlled tcp:
the commanded pose is where the tcp is (a stiff servo), and a wall of stiffness k below z = 0
pushes back with k * depth. Figures are for a UR's 500 Hz control period."""

import numpy as np
import pytest

from controllers.admittance import AdmittanceController, AdmittanceGains, dead_band
from controllers.rotations import quat_angle, rotvec_to_quat

DT = 0.002  # s, a UR e-series' RTDE period
DOWN = np.array([0.0, 1.0, 0.0, 0.0])  # tcp z pointing down (180 deg about base x)


def press(wall_stiffness, gains=AdmittanceGains(), start=0.05, target=-0.10, seconds=4.0,
          servo_lag=0.0):
    """Approach a wall at z = 0 from `start`, the target `target` (m) in or beyond it; returns
    (peak contact force, mean contact force over the last 0.5 s, the controller), in N."""
    controller = AdmittanceController(DT, gains)
    controller.reset([0.5, 0.0, start], DOWN)
    controller.set_reference([0.5, 0.0, target], DOWN)
    z, forces = start, []
    for _ in range(int(seconds / DT)):
        force = wall_stiffness * max(0.0, -z)  # the wall pushes up on the tcp
        position, _, _ = controller.tick([0.0, 0.0, force, 0.0, 0.0, 0.0])
        z = position[2] if servo_lag == 0.0 else z + (position[2] - z) * min(1.0, DT / servo_lag)
        forces.append(force)
    forces = np.array(forces)
    return forces.max(), forces[-int(0.5 / DT):].mean(), controller


@pytest.mark.parametrize("bound", [10.0, 15.0, 20.0])
@pytest.mark.parametrize("wall", [1e3, 5e3, 2e4])
@pytest.mark.parametrize("target", [-0.10, -1.0])
def test_steady_contact_force_is_the_bound_however_deep_the_target(bound, wall, target):
    peak, steady, controller = press(wall, AdmittanceGains(force_bound=bound), target=target)
    assert steady == pytest.approx(bound, abs=0.05)  # pressing with the bound, never more
    assert "error_clipped" in dict(controller.active_flags())
    assert np.linalg.norm(controller.velocity) < 1e-3  # at rest against the wall


def test_impact_on_a_compliant_surface_stays_within_3_n_of_the_bound():
    # The figure in the law's own terms: 10 cm below the surface, peak <= bound + 3 N,
    # for a 5 kN/m contact (a padded fingertip on a table) and a servo lagging by 10 ms.
    for lag in (0.0, 0.01):
        peak, steady, _ = press(5e3, servo_lag=lag)
        assert steady <= 15.0 + 0.05 and peak <= 15.0 + 3.0, (lag, peak, steady)
    # Stiffer contact overshoots on impact, by ~v sqrt(M k): the price of the defaults' speed.
    peak, steady, _ = press(2e4)
    assert 30.0 < peak < 60.0 and steady == pytest.approx(15.0, abs=0.05)


def test_free_space_motion_converges_without_overshoot_and_within_the_speed_limit():
    g = AdmittanceGains()
    controller = AdmittanceController(DT, g)
    controller.reset([0.4, 0.0, 0.3], DOWN)
    controller.set_reference([0.45, 0.02, 0.25], DOWN)
    goal, path, speeds = np.array([0.45, 0.02, 0.25]), [], []
    for _ in range(int(4.0 / DT)):
        position, _, twist = controller.tick(np.zeros(6))
        path.append(np.dot(position - [0.4, 0.0, 0.3], goal - [0.4, 0.0, 0.3]) / np.sum((goal - [0.4, 0.0, 0.3]) ** 2))
        speeds.append(np.linalg.norm(twist[:3]))
    assert np.linalg.norm(controller.position - goal) < 0.5e-3
    assert max(path) < 1.0 + 1e-3  # overdamped: no overshoot past the target
    # The spring is clipped, so the speed the damper allows is force_bound / damping (~0.093 m/s).
    assert max(speeds) == pytest.approx((g.force_bound - g.dead_band) / g.damping, rel=0.02)


def test_dead_band_hides_small_forces_and_a_push_moves_the_tcp_along_it():
    assert not dead_band(np.array([0.6, 0.0, 0.7]), 1.0).any()
    assert dead_band(np.array([3.0, 0.0, 4.0]), 1.0) == pytest.approx([2.4, 0.0, 3.2])
    controller = AdmittanceController(DT)
    controller.reset([0.5, 0.0, 0.3], DOWN)
    for _ in range(500):
        controller.tick([0.8, 0.0, 0.0, 0.0, 0.05, 0.0])  # sensor noise and bias
    assert np.abs(controller.position - [0.5, 0.0, 0.3]).max() == 0.0
    for _ in range(2000):  # 4 s of a hand pushing with 10 N along +y: it yields, held by the spring
        controller.tick([0.0, 10.0, 0.0, 0.0, 0.0, 0.0])
    g = controller.gains
    assert controller.position[1] == pytest.approx((10.0 - g.dead_band) / g.stiffness, rel=0.02)


def test_velocity_and_acceleration_limits_bound_what_reaches_the_arm():
    g = AdmittanceGains(damping=1.0, max_velocity=0.05, max_acceleration=0.5)
    controller = AdmittanceController(DT, g)
    controller.reset([0.5, 0.0, 0.3], DOWN)
    controller.set_reference([0.9, 0.0, 0.3], DOWN)
    previous, flagged = np.zeros(3), set()
    for _ in range(1000):
        _, _, twist = controller.tick(np.zeros(6))
        assert np.linalg.norm(twist[:3]) <= 0.05 + 1e-12
        assert np.linalg.norm(twist[:3] - previous) <= 0.5 * DT + 1e-12
        previous = twist[:3].copy()
        flagged |= {name for name, _ in controller.active_flags()}
    assert {"velocity_limited", "acceleration_limited", "error_clipped"} <= flagged


def test_orientation_turns_to_the_target_and_presses_with_at_most_the_torque_bound():
    controller = AdmittanceController(DT)
    controller.reset([0.5, 0.0, 0.3], [1.0, 0.0, 0.0, 0.0])
    goal = rotvec_to_quat([0.0, 0.0, 0.4])
    controller.set_reference([0.5, 0.0, 0.3], goal)
    for _ in range(int(6.0 / DT)):
        controller.tick(np.zeros(6))
    assert quat_angle(controller.quaternion, goal) < 2e-3
    # Blocked from turning (a torsional spring of 50 Nm/rad about z), the torque stays at the bound.
    controller.reset([0.5, 0.0, 0.3], [1.0, 0.0, 0.0, 0.0])
    controller.set_reference([0.5, 0.0, 0.3], rotvec_to_quat([0.0, 0.0, 1.5]))
    for _ in range(int(6.0 / DT)):
        angle = 2.0 * np.arctan2(controller.quaternion[3], controller.quaternion[0])
        controller.tick([0.0, 0.0, 0.0, 0.0, 0.0, -50.0 * angle])
    assert 50.0 * angle == pytest.approx(controller.gains.torque_bound, abs=0.02)


def test_holding_brakes_to_rest_where_the_commanded_pose_is():
    controller = AdmittanceController(DT)
    controller.reset([0.5, 0.0, 0.3], DOWN)
    controller.set_reference([0.6, 0.0, 0.3], DOWN)
    for _ in range(200):
        controller.tick(np.zeros(6))
    moving_at = controller.position.copy()
    controller.snap_reference()
    for _ in range(1000):
        controller.tick(np.zeros(6))
    # The damper brakes it within millimetres, and the spring brings it back to where the hold
    # began (overdamped: the slow mode's time constant is damping / stiffness = 0.5 s).
    assert np.linalg.norm(controller.velocity) < 2e-4
    assert np.linalg.norm(controller.position - moving_at) < 1e-3


def test_bad_input_is_refused_by_name():
    controller = AdmittanceController(DT)
    controller.reset([0.5, 0.0, 0.3], DOWN)
    with pytest.raises(ValueError, match="not finite.*sensor"):
        controller.tick([0.0, np.nan, 0.0, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="6 numbers"):
        controller.tick([0.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="not a rotation"):
        controller.set_reference([0.5, 0.0, 0.3], [0.1, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="3 finite numbers"):
        controller.set_reference([0.5, np.inf, 0.3], DOWN)
    with pytest.raises(ValueError, match="must exceed the dead band"):
        AdmittanceGains(force_bound=1.0, dead_band=1.0)
    with pytest.raises(ValueError, match="mass must be > 0"):
        AdmittanceGains(mass=0.0)
    with pytest.raises(ValueError, match="finite number"):
        AdmittanceGains(damping=float("nan"))
    with pytest.raises(ValueError, match="dt"):
        AdmittanceController(0.0)
    assert np.array_equal(controller.position, [0.5, 0.0, 0.3])  # nothing of the state was lost
