"""The joint impedance law against its definition and its uncompiled self; the controller's
smoothing and limits."""

import numpy as np
import pytest

from controllers.joint_impedance import (
    JOINT_FLAGS,
    JointImpedanceController,
    JointImpedanceGains,
    joint_impedance_torque,
)

FLAG = {name: i for i, name in enumerate(JOINT_FLAGS)}
LIMITS = np.array([87.0, 87, 87, 87, 12, 12, 12])
KP = np.array([600.0, 600, 600, 600, 250, 150, 50])
KD = np.array([50.0, 50, 50, 50, 20, 20, 10])  # joint 4: 50, under the Franka's joint-4 speed limit


def law_inputs(rng, **override):
    kw = dict(q=rng.uniform(-2, 2, 7), dq=rng.normal(0, 0.5, 7), coriolis=rng.normal(0, 0.5, 7),
              q_ref=np.zeros(7), stiffness=KP.copy(), damping=KD.copy(), error_clip=np.full(7, 0.1),
              torque_limit=np.full(7, 1e9), max_torque_step=1e9, tau_prev=np.zeros(7),
              tau_out=np.zeros(7), flags_out=np.zeros(len(JOINT_FLAGS), dtype=np.bool_))
    kw["q_ref"] = kw["q"] + rng.normal(0, 0.1, 7)
    kw.update(override)
    return kw


def test_law_matches_definition_with_error_clip():
    rng = np.random.default_rng(0)
    for _ in range(50):
        kw = law_inputs(rng)
        joint_impedance_torque(**kw)
        expected = KP * np.clip(kw["q_ref"] - kw["q"], -0.1, 0.1) - KD * kw["dq"] + kw["coriolis"]
        np.testing.assert_allclose(kw["tau_out"], expected, rtol=1e-12, atol=1e-12)
        assert kw["flags_out"][FLAG["error_clipped"]] == bool(np.any(np.abs(kw["q_ref"] - kw["q"]) > 0.1))


def test_far_reference_gives_at_most_kp_times_clip():
    rng = np.random.default_rng(0)
    kw = law_inputs(rng, dq=np.zeros(7), coriolis=np.zeros(7))
    kw["q_ref"] = kw["q"] + 3.0
    joint_impedance_torque(**kw)
    np.testing.assert_allclose(kw["tau_out"], KP * 0.1, rtol=1e-12)
    assert kw["flags_out"][FLAG["error_clipped"]]


def test_rate_limit_and_clamp():
    rng = np.random.default_rng(0)
    kw = law_inputs(rng, stiffness=KP * 100, max_torque_step=1.0, torque_limit=LIMITS, tau_prev=rng.uniform(-3, 3, 7))
    joint_impedance_torque(**kw)
    assert np.all(np.abs(kw["tau_out"] - kw["tau_prev"]) <= 1.0 + 1e-12)
    assert kw["flags_out"][FLAG["rate_limited"]]
    kw["max_torque_step"] = 1e9
    joint_impedance_torque(**kw)
    assert np.all(np.abs(kw["tau_out"]) <= LIMITS) and kw["flags_out"][FLAG["torque_clamped"]]


def test_compiled_law_matches_uncompiled_law():
    rng = np.random.default_rng(0)
    for _ in range(30):
        kw = law_inputs(rng, max_torque_step=rng.choice([0.5, 1e9]), torque_limit=LIMITS,
                        tau_prev=rng.uniform(-10, 10, 7))
        twin = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in kw.items()}
        joint_impedance_torque(**kw)
        joint_impedance_torque.py_func(**twin)
        np.testing.assert_allclose(kw["tau_out"], twin["tau_out"], rtol=1e-9, atol=1e-9)
        np.testing.assert_array_equal(kw["flags_out"], twin["flags_out"])


def test_controller_rate_limits_and_converges_to_smoothed_reference():
    rng = np.random.default_rng(0)
    alpha = 0.005
    ctrl = JointImpedanceController(filter_coefficient=alpha)
    q = rng.uniform(-1, 1, 7)
    ctrl.reset(q)
    target = q + 0.04  # within every joint's torque limit at these gains
    ctrl.set_reference(target)
    prev = np.zeros(7)
    for n in range(1, 1001):
        tau = ctrl.compute(q, np.zeros(7)).copy()
        assert np.all(np.abs(tau - prev) <= 1.0 + 1e-12)
        prev = tau
        if n in (1, 100, 1000):
            np.testing.assert_allclose(ctrl.reference - target, (1 - alpha) ** n * (q - target), atol=1e-12)
    # With the arm held still the torque settles on the spring toward the filtered reference.
    np.testing.assert_allclose(tau, KP * (ctrl.reference - q), rtol=1e-9)


def test_gain_change_is_smoothed_geometrically():
    alpha = 0.01
    ctrl = JointImpedanceController(JointImpedanceGains(max_torque_rate=1e9), filter_coefficient=alpha)
    q = np.zeros(7)
    ctrl.reset(q + 0.04)  # reference 0.04 rad ahead of the arm (10 Nm on joint 5, under 12)
    ctrl.set_gains(JointImpedanceGains(stiffness=100.0, max_torque_rate=1e9))
    for n in range(1, 301):
        tau = ctrl.compute(q, np.zeros(7))
        if n in (1, 50, 300):
            np.testing.assert_allclose(tau / 0.04 - 100.0, (1 - alpha) ** n * (KP - 100.0), rtol=1e-9)


def test_non_finite_state_ramps_to_zero_and_reports():
    ctrl = JointImpedanceController(filter_coefficient=1.0)
    q = np.zeros(7)
    ctrl.reset(q)
    ctrl.set_reference(q + 0.1)
    for _ in range(10):
        tau = ctrl.compute(q, np.zeros(7)).copy()
    bad = q.copy()
    bad[3] = np.nan
    new = ctrl.compute(bad, np.zeros(7))
    assert np.isfinite(new).all() and np.all(np.abs(new) == np.maximum(np.abs(tau) - 1.0, 0.0))
    assert [f for f, _ in ctrl.active_flags()] == ["invalid_input"]


def test_defaults_and_validation():
    vec, clip, limits, rate = JointImpedanceGains().packed()
    np.testing.assert_allclose(vec, np.concatenate([KP, KD]))
    np.testing.assert_allclose(clip, 0.1)
    np.testing.assert_allclose(limits, LIMITS)
    assert rate == 1000.0
    with pytest.raises(ValueError, match="damping"):
        JointImpedanceGains(damping=(1.0, 2.0))
    with pytest.raises(RuntimeError, match="reset"):
        JointImpedanceController().compute(np.zeros(7), np.zeros(7))
    with pytest.raises(ValueError, match="7 finite joint angles"):
        JointImpedanceController().set_reference([0.0, np.nan, 0, 0, 0, 0, 0])
