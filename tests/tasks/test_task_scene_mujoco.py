"""A task's Scene compiled by sim/mujoco_scene.py and acted on through sim/mujoco_world.py: the
parameters reach the compiled model, the world reads back what it writes, a per-episode mass
leaves the model as if compiled with it, and the robot server draws it per reset."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from robostack.robot.server import RobotServer, RobotServerConfig
from sim.mujoco_backend import MujocoBackend
from sim.mujoco_scene import compile_scene
from sim.mujoco_world import MujocoWorld
from sim.scene import Box, Camera, Scene
from tasks import make_task


def test_cube_size_and_table_height_reach_the_compiled_model():
    default = compile_scene(make_task("pick_cube").build_scene())
    model = compile_scene(make_task("pick_cube", params={"cube_half_size": 0.0125, "table_height": 0.03,
                                                         "cube_mass": 0.2}).build_scene())
    assert default.geom("cube").size.tolist() == [0.02, 0.02, 0.02]
    assert model.geom("cube").size.tolist() == [0.0125, 0.0125, 0.0125]
    assert model.body("cube").mass[0] == pytest.approx(0.2)
    table = model.geom("table")
    assert table.pos[2] + table.size[2] == pytest.approx(0.03)  # the table top
    assert default.geom("table").pos[2] + default.geom("table").size[2] == pytest.approx(0.0)
    assert model.body("panda_link0").pos.tolist() == [0.0, 0.0, 0.0]  # the base stays at z = 0
    goal = compile_scene(make_task("reach", params={"success_radius": 0.05}).build_scene()).site("goal")
    assert goal.size[0] == pytest.approx(0.05)


def test_physics_options_are_the_mirrors():
    model = compile_scene(make_task("reach").build_scene())
    assert model.opt.timestep == 0.001
    assert model.opt.integrator == mujoco.mjtIntegrator.mjINT_EULER
    assert model.opt.cone == mujoco.mjtCone.mjCONE_ELLIPTIC and model.opt.impratio == 10
    assert model.opt.disableflags & mujoco.mjtDisableBit.mjDSBL_EULERDAMP


def cube_scene(mass):
    return Scene(objects=(Box("cube", (0.02, 0.02, 0.02), mass, (1, 0, 0, 1), (0.5, 0.0, 0.02)),))


def test_world_reads_back_what_it_writes():
    backend = MujocoBackend(compile_scene(cube_scene(0.1)))
    world = backend.world
    quaternion = np.array([np.cos(0.2), 0.0, 0.0, np.sin(0.2)])
    world.set_object_pose("cube", (0.45, 0.1, 0.05), quaternion)
    position, read = world.object_pose("cube")
    assert np.allclose(position, [0.45, 0.1, 0.05]) and np.allclose(read, quaternion)
    with pytest.raises(KeyError, match=r"no object 'ball'.*\['cube'\]"):
        world.object_pose("ball")
    with pytest.raises(ValueError, match="position \\(3,\\)"):
        world.set_object_pose("cube", (0.4, 0.1), quaternion)

    reach = MujocoBackend(compile_scene(make_task("reach").build_scene()))
    reach.world.set_marker_position("goal", (0.4, -0.1, 0.2))
    assert reach.world.marker_position("goal").tolist() == [0.4, -0.1, 0.2]
    assert reach.model.site("goal").pos.tolist() == [0.4, -0.1, 0.2]


def test_set_object_mass_equals_compiling_with_that_mass():
    model = compile_scene(cube_scene(0.1))
    data = mujoco.MjData(model)
    data.qpos[:7] = [0.1, -0.3, 0.0, -2.4, 0.0, 2.0, 0.7]
    mujoco.mj_forward(model, data)
    qpos = data.qpos.copy()
    world = MujocoWorld(model, data)
    world.set_object_mass("cube", 0.25)
    compiled = compile_scene(cube_scene(0.25))
    for name in ("body_mass", "body_inertia", "body_subtreemass", "body_invweight0", "dof_invweight0"):
        assert np.allclose(getattr(model, name), getattr(compiled, name), rtol=1e-12, atol=1e-15), name
    assert model.stat.meaninertia == pytest.approx(compiled.stat.meaninertia, rel=1e-12)
    assert np.array_equal(data.qpos, qpos)  # the state survives the refresh
    assert world.object_mass("cube") == 0.25
    with pytest.raises(ValueError, match="mass must be > 0"):
        world.set_object_mass("cube", 0.0)


def test_robot_server_draws_the_cube_mass_per_reset():
    server = RobotServer(RobotServerConfig(task="pick_cube", task_params="cube_mass=0.05:0.2"))
    masses = []
    for seed in (0, 1, 2, 0):
        kind, meta, arrays = server.handle("reset", {"seed": seed}, {})
        assert kind == "state", meta
        masses.append(server.backend.world.object_mass("cube"))
    assert all(0.05 <= m <= 0.2 for m in masses)
    assert len(set(masses[:3])) == 3 and masses[3] == masses[0]


def test_raised_table_holds_the_cube_after_reset():
    server = RobotServer(RobotServerConfig(task="pick_cube", task_params="table_height=0.03"))
    kind, meta, arrays = server.handle("reset", {"seed": 4}, {})
    assert kind == "state", meta
    assert arrays["cube_position"][2] == pytest.approx(0.03 + 0.02, abs=1e-3)  # resting on it
    kind, hello, _ = server.handle("hello", {}, {})
    assert hello["task_config"]["params"]["table_height"] == 0.03  # travels to the env
    assert hello["task_config"]["workspace_min"][2] == pytest.approx(0.03)


def test_camera_looks_at_its_target():
    camera = Camera("front", position=(1.2, 0.3, 0.6), look_at=(0.5, 0.0, 0.05), fovy=50, width=96, height=64)
    model = compile_scene(Scene(cameras=(camera,)))
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    axes = data.cam("front").xmat.reshape(3, 3)
    toward = np.array(camera.look_at) - np.array(camera.position)
    assert np.allclose(-axes[:, 2], toward / np.linalg.norm(toward))  # MuJoCo cameras look along -z
    assert abs(axes[2, 0]) < 1e-12 and axes[2, 1] > 0  # image x horizontal, image y up
    assert model.cam("front").fovy[0] == 50 and model.cam_resolution[0].tolist() == [96, 64]
    with pytest.raises(ValueError, match="exactly one of look_at and quaternion"):
        Camera("both", (1, 0, 1), look_at=(0, 0, 0), quaternion=(1, 0, 0, 0))
