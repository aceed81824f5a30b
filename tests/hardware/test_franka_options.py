"""How `--backend franka` is chosen and refused, without franky: the clear errors a lab meets
before any arm is connected, and the real arm's world of virtual markers."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from hardware.markers import MarkerWorld
from robostack.config import check_backend
from robostack.robot.backends import make_backend
from robostack.robot.server import RobotServerConfig
from sim.scene import Marker
from tasks import make_task


def test_the_robot_server_takes_franka_in_real_time_only():
    assert RobotServerConfig(backend="franka", clock="realtime").franka_host == "127.0.0.1"
    with pytest.raises(ValueError, match="real arm.*--clock realtime"):
        RobotServerConfig(backend="franka")  # lock-step: a real arm's physics does not wait
    with pytest.raises(ValueError, match="mujoco.*pybullet.*franka"):
        RobotServerConfig(backend="frank", clock="realtime")


def test_commands_that_start_their_own_mirror_point_a_real_arm_to_robot_server_and_endpoint():
    assert check_backend("pybullet") == "pybullet"
    assert check_backend("franka", real_arms=True) == "franka"
    with pytest.raises(ValueError, match="robot-server --backend franka --clock realtime.*--endpoint"):
        check_backend("franka")


def test_a_task_with_physical_objects_is_refused_on_a_real_arm_before_connecting():
    with pytest.raises(ValueError, match=r"pick_cube.*\['cube'\].*perception.*--task reach"):
        make_backend("franka", make_task("pick_cube"))


def test_a_missing_franky_names_the_extra(monkeypatch):
    from hardware.franka import import_franky

    monkeypatch.setitem(sys.modules, "franky", None)  # as if not installed
    with pytest.raises(ImportError, match=r"robostack\[franka\]"):
        import_franky()


def test_the_marker_world_holds_goals_and_refuses_objects():
    world = MarkerWorld([Marker("goal", (0.5, 0.0, 0.2), radius=0.03)])
    task = make_task("reach")
    task.reset_scene(world, np.random.default_rng(0))  # the task draws its goal into it
    goal = world.marker_position("goal")
    assert np.array_equal(goal, task.goal) and not np.array_equal(goal, [0.5, 0.0, 0.2])
    goal[0] = 9.0  # a copy
    assert world.marker_position("goal")[0] != 9.0
    with pytest.raises(ValueError, match="3 finite"):
        world.set_marker_position("goal", [0.0, np.nan, 0.0])
    with pytest.raises(KeyError, match="no marker 'cube'.*goal"):
        world.marker_position("cube")
    with pytest.raises(KeyError, match="perception"):
        world.object_pose("cube")


def test_a_bring_up_box_tightens_the_tasks_workspace_and_a_bad_one_is_named():
    from robostack.robot.server import RobotServer

    server = RobotServer(RobotServerConfig(task="reach", workspace_box="0.4,-0.05,0.1,0.5,0.05,9"))
    try:
        assert np.allclose(server.limits.workspace_min, (0.4, -0.05, 0.1))
        assert np.allclose(server.limits.workspace_max[:2], (0.5, 0.05))
        assert server.limits.workspace_max[2] == server.task.config.workspace_max[2]  # the task's
    finally:
        server.backend.close()
    with pytest.raises(ValueError, match="6 numbers"):
        RobotServerConfig(workspace_box="0.4,0.5")
    with pytest.raises(ValueError, match="each min below its max"):
        RobotServerConfig(workspace_box="0.5,0,0,0.4,0.1,0.1")
