"""Tasks run against a fake in-memory world, with no physics engine anywhere: reset, observe,
evaluate, the workspace box on the table, and the config's trip through the `hello` reply."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from sim.scene import Box, Marker, Scene
from tasks import TaskConfig, make_task


class FakeWorld:
    """`sim.scene.World` as dictionaries, built from a task's Scene."""

    def __init__(self, scene: Scene):
        self.poses = {b.name: (np.array(b.position, float), np.array(b.quaternion, float))
                      for b in scene.objects}
        self.masses = {b.name: b.mass for b in scene.objects}
        self.markers = {m.name: np.array(m.position, float) for m in scene.markers}
        self.at_rest: set[str] = set()

    def object_pose(self, name):
        position, quaternion = self.poses[name]
        return position.copy(), quaternion.copy()

    def set_object_pose(self, name, position, quaternion):
        self.poses[name] = (np.array(position, float), np.array(quaternion, float))
        self.at_rest.add(name)

    def object_mass(self, name):
        return self.masses[name]

    def set_object_mass(self, name, mass):
        self.masses[name] = float(mass)

    def marker_position(self, name):
        return self.markers[name].copy()

    def set_marker_position(self, name, position):
        self.markers[name] = np.array(position, float)


def robot_at(tcp_position):
    return SimpleNamespace(tcp_position=np.asarray(tcp_position, float))


def test_tasks_import_no_engine():
    code = ("import sys, numpy as np; from tasks import make_task\n"
            "for name in ('pick_cube', 'reach'):\n"
            "    task = make_task(name, params={'table_height': 0.03})\n"
            "    task.build_scene(); task.expert(0)\n"
            "engines = [m for m in ('mujoco', 'pybullet') if m in sys.modules]\n"
            "assert not engines, engines\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_pick_cube_scene_is_engine_neutral_data():
    scene = make_task("pick_cube", params={"table_height": 0.03, "cube_half_size": 0.0125}).build_scene()
    assert isinstance(scene, Scene) and scene.robot == "panda"
    assert scene.table.height == 0.03
    (cube,) = scene.objects
    assert isinstance(cube, Box) and cube.name == "cube"
    assert cube.half_size == (0.0125, 0.0125, 0.0125) and cube.mass == 0.1
    assert cube.position[2] == pytest.approx(0.03 + 0.0125)  # resting on the raised table


def test_pick_cube_reset_observe_evaluate_on_a_fake_world():
    task = make_task("pick_cube", params={"table_height": 0.03})
    world = FakeWorld(task.build_scene())
    task.reset_scene(world, np.random.default_rng(7))
    position, quaternion = world.object_pose("cube")
    assert "cube" in world.at_rest
    assert 0.40 <= position[0] <= 0.58 and -0.12 <= position[1] <= 0.12
    assert position[2] == pytest.approx(0.03 + 0.02)  # on the table top, not at z = half size
    assert quaternion.tolist() == [1.0, 0.0, 0.0, 0.0]

    tcp = position + [0.0, 0.0, 0.1]
    fields = task.observe(world, robot_at(tcp))
    assert fields.keys() == task.state_fields.keys()
    assert np.allclose(fields["cube_position"], position)
    assert np.allclose(fields["cube_to_tcp"], [0.0, 0.0, 0.1])
    outcome = task.evaluate(fields)
    assert not outcome.success and outcome.reward == 0.0
    assert outcome.info["lift"] == pytest.approx(0.0, abs=1e-12)  # measured from the table top

    # Lifted 10 cm above the table top and held at the tcp: success. 9 cm above it is not.
    for centre_above_table, expected in ((0.101, True), (0.09, False)):
        lifted = np.array([0.5, 0.0, 0.03 + centre_above_table])
        world.set_object_pose("cube", lifted, (1.0, 0.0, 0.0, 0.0))
        outcome = task.evaluate(task.observe(world, robot_at(lifted + [0.0, 0.0, 0.01])))
        assert outcome.success is expected and outcome.reward == float(expected)
    # Lifted but 4 cm from the tcp (tossed, not held): hold_radius is 3 cm.
    outcome = task.evaluate(task.observe(world, robot_at(lifted + [0.04, 0.0, 0.0])))
    assert not outcome.success


def test_pick_cube_dense_reward_is_bounded_shaping():
    config = dataclasses.replace(make_task("pick_cube").config, dense_reward=True)
    task = make_task("pick_cube", config)
    world = FakeWorld(task.build_scene())
    task.reset_scene(world, np.random.default_rng(0))
    cube = world.object_pose("cube")[0]
    far = task.evaluate(task.observe(world, robot_at(cube + [0.0, 0.0, 0.3]))).reward
    near = task.evaluate(task.observe(world, robot_at(cube + [0.0, 0.0, 0.01]))).reward
    assert 0.0 < far < near <= 0.3


def test_reach_reset_observe_evaluate_on_a_fake_world():
    task = make_task("reach", params={"table_height": 0.05, "success_radius": 0.02})
    scene = task.build_scene()
    (marker,) = scene.markers
    assert isinstance(marker, Marker) and marker.radius == 0.02
    world = FakeWorld(scene)
    task.reset_scene(world, np.random.default_rng(3))
    goal = world.marker_position("goal")
    assert 0.35 <= goal[0] <= 0.60 and -0.15 <= goal[1] <= 0.15
    assert 0.05 + 0.10 <= goal[2] <= 0.05 + 0.30  # above the raised table top
    fields = task.observe(world, robot_at(goal + [0.015, 0.0, 0.0]))
    assert np.allclose(fields["goal_to_tcp"], [-0.015, 0.0, 0.0])
    assert task.evaluate(fields).success
    assert not task.evaluate(task.observe(world, robot_at(goal + [0.025, 0.0, 0.0]))).success


def test_workspace_box_stands_on_the_table():
    default = make_task("pick_cube").config
    assert default.workspace_min == (0.25, -0.35, 0.0) and default.workspace_max == (0.75, 0.35, 0.45)
    raised = make_task("pick_cube", params={"table_height": 0.03}).config
    assert raised.workspace_min == pytest.approx((0.25, -0.35, 0.03))
    assert raised.workspace_max == pytest.approx((0.75, 0.35, 0.48))
    # Configuring an already configured task moves nothing again (the env rebuilds the task
    # from the config the server sends), and changing the height moves the box by the difference.
    again = make_task("pick_cube", raised)
    assert again.config.workspace_min == raised.workspace_min
    lowered = make_task("pick_cube", raised, params={"table_height": -0.02})
    assert lowered.config.workspace_min[2] == pytest.approx(-0.02)
    assert lowered.config.workspace_max[2] == pytest.approx(0.43)


def test_expert_lifts_relative_to_the_table():
    low = make_task("pick_cube").expert(0)
    high = make_task("pick_cube", params={"table_height": 0.03}).expert(0)
    assert high.lift_to == pytest.approx(low.lift_to + 0.03)


def test_config_survives_the_hello_reply():
    """The server sends dataclasses.asdict(config) (msgpack turns tuples into lists); the env
    rebuilds TaskConfig(**...) and make_task: the same parameters, no second workspace shift."""
    import msgpack

    params = {"table_height": 0.03, "cube_half_size": 0.025, "cube_mass": (0.05, 0.2)}
    server_task = make_task("pick_cube", params=params)
    wire = msgpack.unpackb(msgpack.packb(dataclasses.asdict(server_task.config)))
    assert wire["params"]["cube_mass"] == [0.05, 0.2] and wire["params"]["table_height"] == 0.03
    config = TaskConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in wire.items()})
    client_task = make_task("pick_cube", config)
    assert client_task.params == server_task.params
    assert client_task.config == server_task.config


def test_task_params_and_a_task_object_together_are_refused():
    from robostack.robot.server import RobotServer, RobotServerConfig

    with pytest.raises(ValueError, match="task_params"):
        RobotServer(RobotServerConfig(task="reach", task_params="table_height=0.01"),
                    task=make_task("reach"))
