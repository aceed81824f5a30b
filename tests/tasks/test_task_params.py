"""Task parameters: the command-line form, its errors, and per-episode draws (seeded, in bounds,
and with default parameters exactly today's spawn distribution)."""

from __future__ import annotations

import numpy as np
import pytest

from tasks import make_task, parse_task_params
from tasks.pick_cube import PickCubeParams
from tasks.reach import ReachParams


def test_parse_reads_numbers_and_ranges():
    parsed = parse_task_params("pick_cube", "cube_half_size=0.025, table_height=0.03,cube_mass=0.05:0.2")
    assert parsed == {"cube_half_size": 0.025, "table_height": 0.03, "cube_mass": (0.05, 0.2)}
    assert parse_task_params("pick_cube", "") == {}
    assert parse_task_params("reach", "goal_x=0.4:0.5,success_radius=0.02") == {
        "goal_x": (0.4, 0.5), "success_radius": 0.02}


def test_unknown_name_lists_the_valid_ones_with_units_and_defaults():
    with pytest.raises(ValueError) as error:
        parse_task_params("pick_cube", "cube_size=0.03")
    message = str(error.value)
    assert "'cube_size'" in message
    for expected in ("cube_half_size (m, default 0.02)", "cube_mass (kg, default 0.1, low:high = per episode)",
                     "table_height (m, default 0)", "cube_x (m, default 0.4:0.58", "lift_height", "hold_radius"):
        assert expected in message, message


@pytest.mark.parametrize("text, expected", [
    ("cube_mass=heavy", "'heavy' is not a number (cube_mass is in kg)"),
    ("cube_mass=0.2:0.05", "range low 0.2 > high 0.05"),
    ("cube_half_size=0.02:0.03", "cube_half_size (m) holds for the whole run and takes one number"),
    ("table_height=0:0.05", "per-episode pick_cube parameters: cube_x, cube_y, cube_mass"),
    ("cube_mass", "write name=value or name=low:high"),
    ("cube_mass=0.1:0.2:0.3", "a range is low:high"),
    ("cube_mass=0.1,cube_mass=0.2", "given twice"),
    ("cube_mass=0", "cube_mass (kg) must be > 0"),
    ("cube_half_size=nan", "expected a finite number"),
    ("cube_half_size=0.045", "does not fit the open gripper"),
])
def test_parse_errors_say_what_is_wrong(text, expected):
    with pytest.raises(ValueError) as error:
        parse_task_params("pick_cube", text)
    assert expected in str(error.value), str(error.value)


def test_unknown_task_is_named():
    with pytest.raises(ValueError, match="unknown task 'stack'"):
        parse_task_params("stack", "")


def test_range_for_reach_goal_and_error_for_its_radius():
    assert parse_task_params("reach", "goal_height=0.2:0.2") == {"goal_height": (0.2, 0.2)}
    with pytest.raises(ValueError, match="success_radius .* holds for the whole run"):
        parse_task_params("reach", "success_radius=0.01:0.02")


def test_default_spawn_is_todays_distribution():
    """Same seed, same cube position as the module constants gave before parameters existed:
    rng.uniform(SPAWN_MIN, SPAWN_MAX) with SPAWN_MIN = (0.40, -0.12), SPAWN_MAX = (0.58, 0.12)."""
    params = make_task("pick_cube").params
    for seed in range(20):
        legacy = np.random.default_rng(seed).uniform(np.array([0.40, -0.12]), np.array([0.58, 0.12]))
        episode = params.sample(np.random.default_rng(seed))
        assert [episode["cube_x"], episode["cube_y"]] == legacy.tolist()
        assert episode["cube_mass"] == 0.1
    reach = make_task("reach").params
    for seed in range(20):
        legacy = np.random.default_rng(seed).uniform(np.array([0.35, -0.15, 0.10]), np.array([0.60, 0.15, 0.30]))
        episode = reach.sample(np.random.default_rng(seed))
        assert [episode["goal_x"], episode["goal_y"], episode["goal_height"]] == legacy.tolist()


def test_per_episode_ranges_are_seeded_and_within_bounds():
    params = PickCubeParams.from_value(parse_task_params("pick_cube", "cube_mass=0.05:0.2,cube_x=0.45:0.5"))
    draws = [params.sample(np.random.default_rng(seed)) for seed in range(200)]
    masses = np.array([d["cube_mass"] for d in draws])
    xs = np.array([d["cube_x"] for d in draws])
    assert masses.min() >= 0.05 and masses.max() <= 0.2
    assert xs.min() >= 0.45 and xs.max() <= 0.5
    assert masses.std() > 0.03  # drawn, not fixed: uniform on 0.15 kg has std 0.043
    assert draws[17] == params.sample(np.random.default_rng(17))  # same seed, same episode
    assert draws[17] != draws[18]


def test_randomising_the_mass_leaves_the_spawn_positions_alone():
    fixed = make_task("pick_cube").params
    random_mass = make_task("pick_cube", params={"cube_mass": (0.05, 0.2)}).params
    for seed in range(10):
        a, b = fixed.sample(np.random.default_rng(seed)), random_mass.sample(np.random.default_rng(seed))
        assert (a["cube_x"], a["cube_y"]) == (b["cube_x"], b["cube_y"])
        assert a["cube_mass"] == 0.1 and b["cube_mass"] != 0.1


def test_a_single_number_fixes_a_per_episode_parameter():
    params = ReachParams.from_value({"goal_x": 0.5, "goal_y": 0.0})
    episodes = [params.sample(np.random.default_rng(seed)) for seed in range(5)]
    assert {e["goal_x"] for e in episodes} == {0.5} and {e["goal_y"] for e in episodes} == {0.0}
    assert len({e["goal_height"] for e in episodes}) == 5


def test_params_check_values_given_in_code_too():
    with pytest.raises(ValueError, match="range low 0.3 > high 0.1"):
        PickCubeParams(cube_mass=(0.3, 0.1))
    with pytest.raises(ValueError, match="unknown pick_cube parameter"):
        make_task("pick_cube", params={"cube_colour": 1.0})
