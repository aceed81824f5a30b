"""Issue 16's admittance figure in the MuJoCo mirror's position-controlled mode: the closed
fingers pressed into the table with a target 10 cm below it; the contact force, as MuJoCo's
contact solution gives it, must stay within the configured bound + 3 N."""

import pytest

from sim.admittance_press import approach_gains, closed_gripper_mirror, press
from sim.mujoco_scene import compile_scene
from tasks import make_task


@pytest.fixture(scope="module")
def mirror_and_table():
    task = make_task("reach")
    scene = task.build_scene()
    mirror = closed_gripper_mirror(compile_scene(scene))
    yield mirror, scene.table.height
    mirror.backend.close()


@pytest.mark.parametrize("bound", [10.0, 20.0])
def test_pressing_10_cm_into_the_table_stays_within_the_bound_plus_3_n(mirror_and_table, bound):
    mirror, table_z = mirror_and_table
    result = press(mirror, table_z, approach_gains(bound, approach_speed=0.01))
    assert result.steady_force == pytest.approx(bound, abs=0.2), result
    assert result.peak_force <= bound + 3.0, result
    assert result.estimated_force == pytest.approx(result.steady_force, abs=1.0), result  # what the law saw
    assert -0.005 < result.tcp_height < 0.02, result  # on the table, not 10 cm through it


def test_at_free_space_speed_the_impact_overshoots_but_the_steady_force_is_the_bound(mirror_and_table):
    # Why the approach speed matters: a position servo carries the arm's own inertia into the
    # table at (bound - dead band) / damping = 0.06 m/s; the spring's clip bounds what follows.
    mirror, table_z = mirror_and_table
    result = press(mirror, table_z, approach_gains(10.0, approach_speed=None), start_height=0.05)
    assert result.steady_force == pytest.approx(10.0, abs=0.2), result
    assert result.peak_force > 13.0, result
