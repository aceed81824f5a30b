"""The Cartesian impedance law against its definition, a plain numpy reference and its own
uncompiled self; and the controller's smoothing, limits and flags."""

import math

import numpy as np
import pytest

from controllers.cartesian_impedance import (
    CARTESIAN_FLAGS,
    CartesianImpedanceController,
    CartesianImpedanceGains,
    impedance_torque,
    orientation_error,
    project_nullspace,
    tick_kernel,
)
from controllers.rotations import quat_multiply, quat_to_matrix, rotvec_to_quat

FLAG = {name: i for i, name in enumerate(CARTESIAN_FLAGS)}


def axis_angle(axis, angle):
    axis = np.asarray(axis, dtype=float)
    return rotvec_to_quat(axis / np.linalg.norm(axis) * angle)


def random_quat(rng):
    q = rng.normal(size=4)
    return q / np.linalg.norm(q)


def law_inputs(rng, **override):
    """Keyword arguments for impedance_torque: a random but well-conditioned state, default
    gains, limits loose enough not to act unless a test tightens them."""
    vec, clip, integral_limit, torque_limits, rate = CartesianImpedanceGains().packed()
    kw = dict(
        q=rng.uniform(-1.5, 1.5, 7), dq=rng.normal(0, 0.3, 7),
        position=rng.uniform(-0.5, 0.5, 3), quaternion=random_quat(rng),
        jacobian=rng.normal(0, 0.4, (6, 7)), coriolis=rng.normal(0, 0.5, 7),
        q_nullspace=rng.uniform(-1.5, 1.5, 7),
        ref_position=rng.uniform(-0.5, 0.5, 3), ref_quaternion=random_quat(rng),
        stiffness=vec[0:6].copy(), damping=vec[6:12].copy(), integral_gain=vec[12:18].copy(),
        nullspace_stiffness=vec[18:25].copy(), nullspace_damping=vec[25:32].copy(),
        error_clip=clip, integral_limit=integral_limit, torque_limit=np.full(7, 1e9),
        max_torque_step=1e9, pinv_damping=0.01, dt=0.001,
        integral=np.zeros(6), tau_prev=np.zeros(7), work=np.zeros((7, 6)),
        tau_out=np.zeros(7), wrench_out=np.zeros(6), error_out=np.zeros(6),
        flags_out=np.zeros(len(CARTESIAN_FLAGS), dtype=np.bool_),
    )
    kw.update(override)
    return kw


def run_law(fn=impedance_torque, **kw):
    fn(**kw)
    return kw


def numpy_reference(kw):
    """The law written the obvious way with numpy, for the error-free (no NaN) case."""
    p_err = kw["position"] - kw["ref_position"]
    qe = quat_multiply(kw["quaternion"], kw["ref_quaternion"] * [1, -1, -1, -1])
    qe = qe / np.linalg.norm(qe) * np.sign(qe[0])
    angle = 2 * math.atan2(np.linalg.norm(qe[1:]), qe[0])
    r_err = qe[1:] / np.linalg.norm(qe[1:]) * angle
    e = np.clip(np.concatenate([p_err, r_err]), -kw["error_clip"], kw["error_clip"])
    J = kw["jacobian"]
    F = -kw["stiffness"] * e - kw["damping"] * (J @ kw["dq"])
    A = np.linalg.solve(J @ J.T + kw["pinv_damping"] ** 2 * np.eye(6), J)
    tau0 = kw["nullspace_stiffness"] * (kw["q_nullspace"] - kw["q"]) - kw["nullspace_damping"] * kw["dq"]
    return J.T @ F + (np.eye(7) - J.T @ A) @ tau0 + kw["coriolis"], F


def test_orientation_error_is_base_frame_rotation_vector():
    rng = np.random.default_rng(0)
    out = np.zeros(3)
    for _ in range(10):
        ref = random_quat(rng)
        for angle in (0.02, -0.02, 1.0, 3.0):
            # Current = reference turned by `angle` about *base* z: left multiplication.
            current = quat_multiply(axis_angle([0, 0, 1], angle), ref)
            assert orientation_error(current, ref, out)
            np.testing.assert_allclose(out, [0, 0, angle], atol=1e-12)
            # q and -q are one orientation: same error.
            assert orientation_error(-current, ref, out)
            np.testing.assert_allclose(out, [0, 0, angle], atol=1e-12)
    # Past π the shorter way round is the other direction.
    assert orientation_error(axis_angle([1, 0, 0], 3.5), np.array([1.0, 0, 0, 0]), out)
    np.testing.assert_allclose(out, [3.5 - 2 * math.pi, 0, 0], atol=1e-12)
    assert not orientation_error(np.zeros(4), np.array([1.0, 0, 0, 0]), out)


def test_small_rotation_about_z_gives_restoring_torque_about_z():
    rng = np.random.default_rng(0)
    ref = random_quat(rng)
    kw = run_law(**law_inputs(rng, quaternion=quat_multiply(axis_angle([0, 0, 1], 0.02), ref), ref_quaternion=ref,
                              dq=np.zeros(7)))
    kw["position"][:] = kw["ref_position"]
    run_law(**kw)
    np.testing.assert_allclose(kw["wrench_out"], [0, 0, 0, 0, 0, -150.0 * 0.02], atol=1e-9)
    assert not kw["flags_out"].any()


def test_error_clip_bounds_the_wrench_for_any_reference_offset():
    rng = np.random.default_rng(0)
    for _ in range(50):
        kw = law_inputs(rng, dq=np.zeros(7))
        kw["ref_position"] = kw["position"] + rng.choice([-1, 1], 3) * rng.uniform(0.05, 10.0, 3)
        kw["ref_quaternion"] = quat_multiply(axis_angle(rng.normal(size=3), 2.0), kw["quaternion"])
        run_law(**kw)
        e = kw["error_out"]
        # At rest the wrench is exactly the spring at the clip, whatever the offset.
        np.testing.assert_allclose(kw["wrench_out"][:3], -2000.0 * 0.01 * np.sign(e[:3]), rtol=1e-12)
        big = np.abs(e[3:]) > 0.05
        np.testing.assert_allclose(kw["wrench_out"][3:][big], -150.0 * 0.05 * np.sign(e[3:][big]), rtol=1e-12)
        assert kw["flags_out"][FLAG["error_clipped_translation"]]
        assert kw["flags_out"][FLAG["error_clipped_rotation"]]
    # Moving, the bound is the clipped spring plus the damper.
    for _ in range(50):
        kw = law_inputs(rng, ref_position=rng.uniform(-10, 10, 3))
        run_law(**kw)
        v = kw["jacobian"] @ kw["dq"]
        bound = kw["stiffness"] * kw["error_clip"] + kw["damping"] * np.abs(v)
        assert np.all(np.abs(kw["wrench_out"]) <= bound + 1e-9)


def test_torque_matches_plain_numpy_reference():
    rng = np.random.default_rng(0)
    for _ in range(50):
        kw = run_law(**law_inputs(rng))
        tau, wrench = numpy_reference(kw)
        np.testing.assert_allclose(kw["wrench_out"], wrench, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(kw["tau_out"], tau, rtol=1e-9, atol=1e-9)


def test_nullspace_torque_produces_no_task_wrench():
    rng = np.random.default_rng(0)
    zero6 = np.zeros(6)
    for _ in range(50):
        kw = law_inputs(rng, stiffness=zero6, damping=zero6, coriolis=np.zeros(7), pinv_damping=1e-7)
        J = kw["jacobian"]
        # J has a 1-D nullspace: aim the posture error mostly along it so there is a torque to see.
        null_direction = np.linalg.svd(J)[2][-1]
        kw["q_nullspace"] = kw["q"] + 0.3 * null_direction + rng.normal(0, 0.05, 7)
        kw["dq"] = 0.1 * null_direction + rng.normal(0, 0.01, 7)
        tau_ns = run_law(**kw)["tau_out"]
        tau0 = kw["nullspace_stiffness"] * (kw["q_nullspace"] - kw["q"]) - kw["nullspace_damping"] * kw["dq"]
        assert np.linalg.norm(tau_ns) > 0.3 * np.linalg.norm(tau0)
        # J^T# tau_ns = 0: the wrench that would balance tau_ns at the tcp is zero.
        np.testing.assert_allclose(np.linalg.pinv(J.T) @ tau_ns, zero6, atol=1e-9 * np.linalg.norm(tau0))
        # ... and the projector is the orthogonal one onto the nullspace of J.
        np.testing.assert_allclose(tau_ns, (np.eye(7) - np.linalg.pinv(J) @ J) @ tau0, atol=1e-9)


def test_nullspace_leak_with_damping_is_bounded():
    rng = np.random.default_rng(0)
    for _ in range(20):
        J = rng.normal(0, 0.4, (6, 7))
        tau = rng.normal(0, 5, 7)
        before = tau.copy()
        project_nullspace(J, 1e-3, np.zeros((7, 6)), tau)
        sigma_min = np.linalg.svd(J, compute_uv=False).min()
        leak = np.linalg.norm(np.linalg.pinv(J.T) @ tau)
        assert leak <= (1e-3 / sigma_min) ** 2 * np.linalg.norm(np.linalg.pinv(J.T) @ before) * 1.01


def test_integral_term_winds_up_to_its_limit_and_no_further():
    rng = np.random.default_rng(0)
    kw = law_inputs(rng, dq=np.zeros(7), integral_gain=np.full(6, 1000.0),
                    integral_limit=np.array([10.0, 10, 10, 1, 1, 1]))
    kw["ref_position"] = kw["position"] - 1.0  # error +1 m per axis, clipped to +0.01
    kw["ref_quaternion"] = kw["quaternion"].copy()
    for tick in range(1, 2001):
        run_law(**kw)
        if tick == 5:  # before saturating, the integral is the sum of clipped errors times dt
            np.testing.assert_allclose(kw["integral"][:3], 5 * 0.01 * 0.001, rtol=1e-12)
            assert not kw["flags_out"][FLAG["integral_saturated"]]
    np.testing.assert_allclose(1000.0 * kw["integral"][:3], 10.0, rtol=1e-12)
    np.testing.assert_allclose(kw["wrench_out"][:3], -2000 * 0.01 - 10.0, rtol=1e-12)
    assert kw["flags_out"][FLAG["integral_saturated"]]
    # Turning the gain off clears the state, so turning it on again starts from zero.
    kw["integral_gain"] = np.zeros(6)
    run_law(**kw)
    assert not kw["integral"].any()


def test_rate_limit_and_clamp_hold_in_the_law():
    rng = np.random.default_rng(0)
    kw = law_inputs(rng, max_torque_step=1.0, torque_limit=np.array([87.0, 87, 87, 87, 12, 12, 12]))
    kw["stiffness"] *= 1000.0  # wants far more than the limits allow
    kw["tau_prev"] = rng.uniform(-5, 5, 7)
    run_law(**kw)
    assert np.all(np.abs(kw["tau_out"] - kw["tau_prev"]) <= 1.0 + 1e-12)
    assert kw["flags_out"][FLAG["rate_limited"]]
    kw["max_torque_step"] = 1e9
    run_law(**kw)
    assert np.all(np.abs(kw["tau_out"]) <= kw["torque_limit"])
    assert kw["flags_out"][FLAG["torque_clamped"]] and not kw["flags_out"][FLAG["rate_limited"]]


def test_compiled_law_matches_uncompiled_law():
    rng = np.random.default_rng(0)
    for trial in range(30):
        kw = law_inputs(rng, integral_gain=np.full(6, 50.0), max_torque_step=rng.choice([0.5, 1e9]),
                        torque_limit=np.array([87.0, 87, 87, 87, 12, 12, 12]))
        kw["ref_position"] = kw["position"] + rng.normal(0, 0.02, 3)
        kw["tau_prev"] = rng.uniform(-10, 10, 7)
        kw["integral"] = rng.normal(0, 0.001, 6)
        twin = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in kw.items()}
        run_law(impedance_torque, **kw)
        run_law(impedance_torque.py_func, **twin)
        for name in ("tau_out", "wrench_out", "error_out", "integral", "flags_out"):
            np.testing.assert_allclose(kw[name], twin[name], rtol=1e-9, atol=1e-9, err_msg=name)
    for _ in range(30):
        a, b = random_quat(rng), random_quat(rng)
        out_c, out_p = np.zeros(3), np.zeros(3)
        orientation_error(a, b, out_c)
        orientation_error.py_func(a, b, out_p)
        np.testing.assert_allclose(out_c, out_p, atol=1e-12)


# --- the stateful controller -------------------------------------------------------------------

def make_state(rng):
    return dict(q=rng.uniform(-1, 1, 7), dq=np.zeros(7), tcp_position=np.array([0.5, 0.0, 0.3]),
                tcp_orientation=np.array([0.0, 1.0, 0.0, 0.0]), jacobian=rng.normal(0, 0.4, (6, 7)))


def test_rate_limit_holds_over_consecutive_ticks():
    rng = np.random.default_rng(0)
    ctrl = CartesianImpedanceController(filter_coefficient=1.0)  # no smoothing: step demands
    s = make_state(rng)
    ctrl.reset(s["q"], s["tcp_position"], s["tcp_orientation"])
    prev = np.zeros(7)  # reset() starts from zero torque
    limited = 0
    for tick in range(300):
        if tick % 50 == 0:
            ctrl.set_reference(s["tcp_position"] + rng.uniform(-0.2, 0.2, 3), random_quat(rng))
        s["dq"] = rng.normal(0, 0.5, 7)
        tau = ctrl.compute(**s).copy()
        assert np.all(np.abs(tau - prev) <= 1.0 + 1e-12)
        assert np.all(np.abs(tau) <= np.array([87, 87, 87, 87, 12, 12, 12]))
        limited += ctrl.flags[FLAG["rate_limited"]]
        prev = tau
    assert limited > 10  # the demands were big enough for the limit to act


def test_torque_clamp_in_controller_with_reasons():
    rng = np.random.default_rng(0)
    gains = CartesianImpedanceGains(translational_stiffness=1e6, translational_clip=1.0, max_torque_rate=1e9)
    ctrl = CartesianImpedanceController(gains, filter_coefficient=1.0)
    s = make_state(rng)
    ctrl.reset(s["q"], s["tcp_position"], s["tcp_orientation"])
    ctrl.set_reference(s["tcp_position"] + 0.5, s["tcp_orientation"])
    tau = ctrl.compute(**s)
    assert np.all(np.abs(tau) <= np.array([87, 87, 87, 87, 12, 12, 12]))
    assert np.any(np.abs(tau) == np.array([87, 87, 87, 87, 12, 12, 12]))
    names = [flag for flag, _ in ctrl.active_flags()]
    assert names == ["torque_clamped"]
    assert "joint(s)" in ctrl.active_flags()[0][1]


def test_gain_change_is_smoothed_geometrically():
    rng = np.random.default_rng(0)
    alpha = 0.005
    ctrl = CartesianImpedanceController(filter_coefficient=alpha)
    s = make_state(rng)
    ctrl.reset(s["q"], s["tcp_position"] - [0.005, 0.0, 0.0], s["tcp_orientation"])  # 5 mm error in x
    ctrl.compute(**s)
    np.testing.assert_allclose(ctrl.wrench[0], -2000.0 * 0.005, rtol=1e-12)
    ctrl.set_gains(CartesianImpedanceGains(translational_stiffness=500.0))
    for n in range(1, 2001):
        ctrl.compute(**s)
        if n in (1, 10, 200, 2000):
            k = -ctrl.wrench[0] / 0.005
            np.testing.assert_allclose(k - 500.0, (1 - alpha) ** n * (2000.0 - 500.0), rtol=1e-9)


def test_reference_change_is_smoothed_and_quaternion_stays_unit():
    rng = np.random.default_rng(0)
    alpha = 0.005
    ctrl = CartesianImpedanceController(filter_coefficient=alpha)
    s = make_state(rng)
    ctrl.reset(s["q"], s["tcp_position"], s["tcp_orientation"])
    target_p = s["tcp_position"] + [0.1, -0.05, 0.02]
    target_q = quat_multiply(axis_angle([1, 1, 0], 0.8), s["tcp_orientation"])
    ctrl.set_reference(target_p, -target_q)  # the sign flip must not send it the long way round
    out = np.zeros(3)
    angles = []
    for n in range(1, 4001):
        ctrl.compute(**s)
        p, q = ctrl.reference
        assert abs(np.linalg.norm(q) - 1.0) < 1e-12
        orientation_error(q, target_q, out)
        angles.append(np.linalg.norm(out))
        if n in (1, 100, 1000):
            np.testing.assert_allclose(p - target_p, (1 - alpha) ** n * (s["tcp_position"] - target_p), atol=1e-12)
    assert np.all(np.diff(angles) < 0)  # monotonically toward the target
    assert angles[0] < 0.8 and angles[-1] < 1e-6
    np.testing.assert_allclose(p, target_p, atol=1e-9)


def test_rotation_matrix_and_quaternion_inputs_agree():
    rng = np.random.default_rng(0)
    s = make_state(rng)
    s["dq"] = rng.normal(0, 0.3, 7)
    quat = random_quat(rng)
    a, b = CartesianImpedanceController(), CartesianImpedanceController()
    for ctrl in (a, b):
        ctrl.reset(s["q"], s["tcp_position"], quat)
        ctrl.set_reference(s["tcp_position"] + 0.003, quat_multiply(axis_angle([0, 1, 0], 0.01), quat))
    for _ in range(5):
        ta = a.compute(**{**s, "tcp_orientation": quat}).copy()
        tb = b.compute(**{**s, "tcp_orientation": quat_to_matrix(quat)}).copy()
        np.testing.assert_allclose(ta, tb, atol=1e-12)
        assert np.any(ta != 0.0)


def test_non_finite_state_ramps_torque_to_zero():
    rng = np.random.default_rng(0)
    ctrl = CartesianImpedanceController(filter_coefficient=1.0)
    s = make_state(rng)
    ctrl.reset(s["q"], s["tcp_position"], s["tcp_orientation"])
    ctrl.set_reference(s["tcp_position"] + 0.1, s["tcp_orientation"])
    for _ in range(20):
        tau = ctrl.compute(**s).copy()
    assert np.abs(tau).max() > 5.0
    s["dq"] = np.full(7, np.nan)
    for _ in range(20):
        new = ctrl.compute(**s).copy()
        assert np.isfinite(new).all()
        assert np.all(np.abs(new) <= np.maximum(np.abs(tau) - 1.0, 0.0) + 1e-12)
        assert ctrl.flags[FLAG["invalid_input"]]
        tau = new
    assert not tau.any()
    assert ctrl.active_flags()[0][0] == "invalid_input"


def test_default_gains_and_validation():
    vec, clip, integral_limit, torque_limits, rate = CartesianImpedanceGains().packed()
    np.testing.assert_allclose(vec[6:9], 2 * math.sqrt(2000.0))  # critical damping for 1 kg
    np.testing.assert_allclose(vec[9:12], 2 * math.sqrt(150.0))
    np.testing.assert_allclose(vec[25:32], 2 * math.sqrt(10.0))
    np.testing.assert_allclose(clip, [0.01] * 3 + [0.05] * 3)
    np.testing.assert_allclose(torque_limits, [87, 87, 87, 87, 12, 12, 12])
    assert rate == 1000.0
    per_axis = CartesianImpedanceGains(translational_stiffness=(100.0, 200.0, 300.0)).packed()[0]
    np.testing.assert_allclose(per_axis[:3], [100, 200, 300])
    with pytest.raises(ValueError, match="translational_stiffness"):
        CartesianImpedanceGains(translational_stiffness=-1.0)
    with pytest.raises(ValueError, match="torque_limits"):
        CartesianImpedanceGains(torque_limits=(1.0, 2.0))
    with pytest.raises(RuntimeError, match="reset"):
        s = make_state(np.random.default_rng(0))
        CartesianImpedanceController().compute(**s)


def test_tick_kernel_with_kernel_state_is_compute():
    """The MuJoCo mirror's compiled loop calls tick_kernel(..., *kernel_state()) instead of
    compute(): both must be the same law with the same state, also across set_gains()."""
    rng = np.random.default_rng(0)
    s = make_state(rng)
    a, b = CartesianImpedanceController(), CartesianImpedanceController()
    target = random_quat(rng)
    for ctrl in (a, b):
        ctrl.reset(s["q"], s["tcp_position"], s["tcp_orientation"])
        ctrl.set_reference(s["tcp_position"] + 0.02, target)
    state = b.kernel_state()
    for tick in range(60):
        if tick == 30:
            for ctrl in (a, b):
                ctrl.set_gains(CartesianImpedanceGains(translational_stiffness=800.0, max_torque_rate=500.0))
            fresh = b.kernel_state()
            # the arrays are the same objects (a loop holding them sees the new gains) ...
            assert all(x is y for x, y in zip(fresh, state) if isinstance(x, np.ndarray))
            state = fresh  # ... but the scalars (here the torque step) are copies
        dq = rng.normal(0, 0.3, 7)
        tau_a = a.compute(s["q"], dq, s["tcp_position"], s["tcp_orientation"], s["jacobian"])
        tick_kernel(s["q"], dq, s["tcp_position"], s["tcp_orientation"], s["jacobian"], np.zeros(7),
                    b.nullspace_posture, *state)
        np.testing.assert_array_equal(tau_a, state[-4])
        np.testing.assert_array_equal(a.flags, state[-1])


def test_snap_reference_holds_without_a_torque_step():
    """A hold while moving must not cut the torque: snap_reference keeps the rate limiter's memory."""
    rng = np.random.default_rng(0)
    controller = CartesianImpedanceController()
    q, dq = rng.normal(size=7) * 0.3, np.zeros(7)
    jacobian = rng.normal(size=(6, 7)) * 0.3
    position, quaternion = np.array([0.5, 0.0, 0.3]), np.array([0.0, 1.0, 0.0, 0.0])
    controller.reset(q, position, quaternion)
    controller.set_reference(position + [0.05, 0.0, 0.0], quaternion)
    for _ in range(200):  # torque builds up toward the offset target
        tau = controller.compute(q, dq, position, quaternion, jacobian).copy()
    assert np.abs(tau).max() > 5.0
    controller.snap_reference(position, quaternion)
    after = controller.compute(q, dq, position, quaternion, jacobian)
    assert np.abs(after - tau).max() <= 1.0 + 1e-9  # one tick of the 1000 Nm/s rate limit
    np.testing.assert_allclose(controller.reference[0], position)
