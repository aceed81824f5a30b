"""Gain ceilings (controllers/gain_limits.py): what a `gains` request may set, what it is refused
with, the start option that sets the ceilings, and the soft start's scaled gains."""

from __future__ import annotations

import math

import numpy as np
import pytest

from controllers.cartesian_impedance import CartesianImpedanceController, CartesianImpedanceGains
from controllers.franka import MAX_TORQUE_RATE, TORQUE_LIMITS
from controllers.gain_limits import (
    GAIN_SHAPES,
    GainCeilings,
    GainRefused,
    check_gains,
    parse_ceilings,
    rated_ceilings,
    soft_start_gains,
)

RATED = GainCeilings()


def test_the_default_gains_and_the_rated_ceilings_agree_with_the_arm():
    assert check_gains({}, RATED) == CartesianImpedanceGains()
    assert RATED.torque_limits == TORQUE_LIMITS and RATED.max_torque_rate == MAX_TORQUE_RATE
    assert set(GAIN_SHAPES) == {f for f in CartesianImpedanceGains.__dataclass_fields__}


@pytest.mark.parametrize("request_, words", [
    # what today's server accepts and the issue names: an infinite clip, absurd torque limits
    ({"translational_clip": math.inf}, "translational_clip: inf is not finite"),
    ({"rotational_clip": [0.1, math.inf, 0.1]}, "not finite"),
    ({"torque_limits": [1000.0] * 7}, "torque_limits = 1000 Nm is above its ceiling [87, 87, 87, 87, 12, 12, 12] Nm"),
    ({"max_torque_rate": 1e6}, "max_torque_rate = 1e+06 Nm/s is above its ceiling 1000 Nm/s"),
    ({"translational_stiffness": 5000.0}, "translational_stiffness = 5000 N/m is above its ceiling 3000 N/m"),
    ({"rotational_damping": [1.0, 2.0, 41.0]}, "rotational_damping = [1, 2, 41] Nms/rad is above its ceiling 40"),
    ({"translational_integral_limit": math.inf}, "not finite"),
    ({"translational_stiffness": math.nan}, "not finite"),
    ({"nullspace_stiffness": -1.0}, "nullspace_stiffness: -1.0 is negative"),
    ({"nullspace_stiffness": [1.0, 2.0]}, "2 numbers; send one number or 7 numbers in Nm/rad"),
    ({"translational_clip": [[0.01, 0.01, 0.01]]}, "is not a number"),
    ({"translational_clip": "0.01"}, "'0.01' is not a number"),
    ({"translational_clip": True}, "True is not a number"),
    ({"translational_stiffness": None}, "None is not a number"),  # only a damping may be None
    ({"max_torque_rate": 0.0}, "max_torque_rate: must be a finite number > 0"),
    ({"stiffness": 100.0}, "unknown gain(s) ['stiffness']; valid: translational_stiffness (N/m)"),
])
def test_bad_or_excessive_gains_are_refused_naming_gain_value_and_ceiling(request_, words):
    with pytest.raises(GainRefused) as refused:
        check_gains(request_, RATED)
    assert words in str(refused.value)
    assert isinstance(refused.value, ValueError)  # the server's handler answers it as an error


def test_a_refusal_above_a_ceiling_says_how_to_raise_it():
    tight = parse_ceilings("translational_stiffness=1000")
    with pytest.raises(GainRefused) as refused:
        check_gains({"translational_stiffness": 1500.0}, tight)
    text = str(refused.value)
    assert "1500 N/m is above its ceiling 1000 N/m" in text
    assert "--gain-ceilings translational_stiffness=<value>" in text and "rated 3000 N/m" in text


def test_gains_within_the_ceilings_are_applied_to_the_current_gains():
    current = CartesianImpedanceGains(translational_stiffness=1000.0)
    gains = check_gains({"translational_clip": [0.02, 0.02, 0.01], "rotational_stiffness": 100,
                         "torque_limits": [80.0, 80.0, 80.0, 80.0, 10.0, 10.0, 10.0]}, RATED, current)
    assert gains.translational_stiffness == 1000.0  # kept from current
    assert gains.translational_clip == [0.02, 0.02, 0.01] and gains.rotational_stiffness == 100.0
    CartesianImpedanceController(gains)  # the law takes them
    at_ceiling = check_gains({"translational_stiffness": 3000.0, "torque_limits": list(TORQUE_LIMITS),
                              "max_torque_rate": MAX_TORQUE_RATE}, RATED)
    assert at_ceiling.translational_stiffness == 3000.0


def test_the_spring_force_ceiling_holds_when_only_one_factor_changes():
    stiff = check_gains({"translational_stiffness": 3000.0}, RATED)  # 3000 N/m x 0.01 m = 30 N
    with pytest.raises(GainRefused) as refused:
        check_gains({"translational_clip": [0.01, 0.05, 0.01]}, RATED, stiff)  # 150 N on y
    text = str(refused.value)
    assert "150 N on axis y is above the spring-force ceiling max_clip_force = 100 N" in text
    assert "--gain-ceilings max_clip_force=<value>" in text
    check_gains({"translational_clip": 0.05}, RATED)  # 2000 N/m x 0.05 m = 100 N: at the ceiling
    with pytest.raises(GainRefused, match="max_clip_torque"):
        check_gains({"rotational_stiffness": 300.0, "rotational_clip": 0.2}, RATED)


def test_a_damping_derived_from_a_new_stiffness_is_held_to_its_ceiling():
    low = parse_ceilings("translational_damping=50")  # 2 sqrt(1000) = 63 Ns/m
    with pytest.raises(GainRefused, match=r"translational_damping \(derived: 2 sqrt\(stiffness\).*63.2"):
        check_gains({"translational_stiffness": 1000.0}, low, CartesianImpedanceGains(
            translational_stiffness=400.0))
    check_gains({"translational_stiffness": 1000.0, "translational_damping": 50.0}, low)


def test_the_server_start_option_tightens_and_never_loosens_the_rating():
    ceilings = parse_ceilings("translational_stiffness=1500, translational_clip=0.02,"
                              "torque_limits=40:40:40:40:8:8:8")
    assert ceilings.translational_stiffness == 1500.0 and ceilings.translational_clip == 0.02
    assert ceilings.torque_limits == (40.0, 40.0, 40.0, 40.0, 8.0, 8.0, 8.0)
    assert ceilings.rotational_stiffness == RATED.rotational_stiffness
    assert parse_ceilings("") == RATED
    for text, words in [("translational_stiffness=5000", "above the arm's rated 3000 N/m"),
                        ("translational_clip=inf", "must be finite"),
                        ("stiffness=10", "valid: translational_stiffness (N/m)"),
                        ("translational_clip", "is not name=value"),
                        ("translational_clip=wide", "is not a number (m)"),
                        ("torque_limits=10:10", "needs 7 value(s)")]:
        with pytest.raises(ValueError, match="--gain-ceilings") as error:
            parse_ceilings(text)
        assert words in str(error.value), (text, str(error.value))


def test_rated_ceilings_follow_an_arm_weaker_than_a_panda():
    weak = rated_ceilings(torque_limits=[50.0] * 7, max_torque_rate=500.0)
    assert weak.torque_limits == (50.0, 50.0, 50.0, 50.0, 12.0, 12.0, 12.0)
    assert weak.max_torque_rate == 500.0
    with pytest.raises(GainRefused, match="torque_limits"):
        check_gains({"torque_limits": [60.0] * 4 + [10.0] * 3}, weak)
    with pytest.raises(ValueError, match="gain ceiling translational_clip"):
        GainCeilings(translational_clip=math.inf)


@pytest.mark.parametrize("seed", range(5))
def test_random_requests_either_are_refused_or_yield_gains_within_every_ceiling(seed):
    rng = np.random.default_rng(seed)
    names = list(GAIN_SHAPES)
    for _ in range(300):
        request = {}
        for name in rng.choice(names, size=rng.integers(1, 4), replace=False):
            top = RATED.ceiling(name)
            value = rng.choice([0.3, 0.9, 1.0, 1.5, 100.0]) * top
            if rng.random() < 0.1:
                value = value * np.nan if rng.random() < 0.5 else -value
            request[str(name)] = value.tolist() if rng.random() < 0.5 else float(value[0])
        try:
            gains = check_gains(request, RATED)
        except GainRefused:
            continue
        vec, clip, _, torque, rate = gains.packed()
        assert np.isfinite(vec).all() and np.isfinite(clip).all()
        assert (vec[0:3] * clip[:3] <= RATED.max_clip_force * (1 + 1e-9)).all()
        assert (torque <= np.array(TORQUE_LIMITS) * (1 + 1e-9)).all() and rate <= MAX_TORQUE_RATE


def test_soft_start_scales_the_stiffness_and_keeps_the_damping():
    gains = CartesianImpedanceGains()
    full = gains.packed()[0]
    half = soft_start_gains(gains, 0.5).packed()[0]
    np.testing.assert_allclose(half[0:6], 0.5 * full[0:6])  # Cartesian stiffness
    np.testing.assert_allclose(half[6:12], full[6:12])  # damping at its full value
    np.testing.assert_allclose(half[18:25], 0.5 * full[18:25])  # nullspace stiffness
    np.testing.assert_allclose(half[25:32], full[25:32])
    zero = soft_start_gains(gains, 0.0).packed()[0]
    assert (zero[0:6] == 0).all() and (zero[6:12] > 0).all()
    assert soft_start_gains(gains, 1.0) is gains and soft_start_gains(gains, math.nan).packed()[0][0] == 0.0
