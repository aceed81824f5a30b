"""Simulated cameras: where the scene lands in the image, the wrist camera riding the hand, the
image layout, and dynamics untouched by the visual meshes. Rendered for real (MUJOCO_GL=egl)."""

import os

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")  # before mujoco is imported; the Makefile sets it too
try:
    import mujoco
except Exception as error:  # e.g. MUJOCO_GL=osmesa without libOSMesa: fails inside PyOpenGL
    pytest.fail(f"mujoco does not import with MUJOCO_GL={os.environ['MUJOCO_GL']!r}: {error!r}. The "
                f"simulated cameras render with MUJOCO_GL=egl (Mesa: libegl1 libegl-mesa0 "
                f"libgl1-mesa-dri)", pytrace=False)
import numpy as np  # noqa: E402

from controllers.rotations import quat_to_matrix  # noqa: E402
from sim.mujoco_scene import compile_scene  # noqa: E402
from tasks.common import wrist_camera  # noqa: E402
from tasks.pick_cube import PickCube  # noqa: E402

HALF = 0.02  # m, the pick_cube cube's half edge


def _cameras(model, data):
    from sim.mujoco_cameras import MujocoCameras
    try:
        return MujocoCameras(model, data)
    except RuntimeError as error:
        pytest.fail(f"headless rendering is unavailable: {error}", pytrace=False)


@pytest.fixture(scope="module")
def world():
    model = compile_scene(PickCube().build_scene())
    data = mujoco.MjData(model)
    arm = slice(0, 7)
    data.qpos[arm] = PickCube().config.home_q
    mujoco.mj_forward(model, data)
    cameras = _cameras(model, data)
    yield model, data, cameras
    cameras.close()


def _place_cube(model, data, x, y, z=HALF):
    address = model.jnt_qposadr[model.joint("cube").id]
    data.qpos[address:address + 7] = [x, y, z, 1, 0, 0, 0]
    mujoco.mj_forward(model, data)


def _red_centroid(image):
    """Centroid (u, v) px of the cube's pixels: red well above green and blue (the lit table is
    brown, r/g ~ 1.2; the cube's r/g is ~4 on every face)."""
    rgb = image.astype(float)
    mask = (rgb[..., 0] > 60) & (rgb[..., 0] > 2.2 * rgb[..., 1]) & (rgb[..., 0] > 2.2 * rgb[..., 2])
    assert mask.sum() >= 4, f"the cube is not in the image ({mask.sum()} red pixels)"
    v, u = np.nonzero(mask)
    return np.array([u.mean(), v.mean()]), int(mask.sum())


@pytest.mark.parametrize("xy", [(0.45, 0.0), (0.55, 0.12), (0.40, -0.12)])
def test_front_camera_sees_the_cube_where_its_pose_projects(world, xy):
    model, data, cameras = world
    _place_cube(model, data, *xy)
    image = cameras.render("front")
    found, pixels = _red_centroid(image)
    expected = cameras.project("front", data.body("cube").xpos)
    assert np.linalg.norm(found - expected) < 3.0, (found, expected, pixels)


def test_intrinsics_follow_fovy_and_resolution(world):
    model, _, cameras = world
    k = cameras.intrinsics("front")
    fovy = model.cam_fovy[model.camera("front").id]
    assert (k["width"], k["height"]) == (128, 128)
    assert k["fy"] == pytest.approx(64 / np.tan(np.radians(fovy) / 2))
    assert k["fx"] == k["fy"] and (k["cx"], k["cy"]) == (63.5, 63.5)


def test_wrist_camera_rides_the_hand_and_sees_the_cube_below_it(world):
    model, data, cameras = world
    declared = wrist_camera()
    poses, images = [], []
    for shift in (0.0, 0.3):
        data.qpos[0] = PickCube().config.home_q[0] + shift  # swing the arm about joint 1
        mujoco.mj_forward(model, data)
        hand = data.body("panda_hand")
        hand_rotation = hand.xmat.reshape(3, 3)
        expected_position = hand.xpos + hand_rotation @ np.asarray(declared.position)
        expected_rotation = hand_rotation @ quat_to_matrix(declared.orientation())
        position, rotation = cameras.pose("wrist")
        np.testing.assert_allclose(position, expected_position, atol=1e-9)
        np.testing.assert_allclose(rotation, expected_rotation, atol=1e-9)
        # The cube on the table under the tcp: the wrist camera sees it where it projects.
        tcp = data.site("tcp").xpos
        _place_cube(model, data, tcp[0], tcp[1])
        image = cameras.render("wrist")
        found, _ = _red_centroid(image)
        expected = cameras.project("wrist", data.body("cube").xpos)
        assert np.linalg.norm(found - expected) < 3.0, (found, expected)
        poses.append(position)
        images.append(image)
    assert np.linalg.norm(poses[1] - poses[0]) > 0.05  # it moved with the hand
    data.qpos[0] = PickCube().config.home_q[0]
    mujoco.mj_forward(model, data)


def test_images_are_rgb_uint8_and_deterministic(world):
    model, data, cameras = world
    _place_cube(model, data, 0.5, 0.05)
    first = {name: cameras.render(name) for name in cameras.names}
    cameras.render("wrist")  # another camera in between changes nothing
    for name, image in first.items():
        assert image.shape == (128, 128, 3) and image.dtype == np.uint8
        assert image.flags["C_CONTIGUOUS"]
        assert image.std() > 5  # a picture, not a blank buffer
        again = cameras.render(name)
        assert np.array_equal(image, again)
        assert again is not image  # a fresh array each frame: safe to keep
    assert sorted(cameras.names) == ["front", "wrist"]


def test_unknown_camera_names_the_ones_there(world):
    _, _, cameras = world
    with pytest.raises(KeyError, match="front"):
        cameras.render("side")


def _trajectory(model):
    """1 s of physics: the cube dropped from 3 cm onto the table, the arm under small varying
    torques, the gripper closing; qpos and qvel every 50 ms."""
    data = mujoco.MjData(model)
    data.qpos[:7] = PickCube().config.home_q
    _place_cube(model, data, 0.5, 0.0, HALF + 0.03)
    samples = []
    for step in range(1000):
        data.ctrl[:7] = 2.0 * np.sin(np.arange(7) + step * 0.01)
        data.ctrl[7] = 0.02 if step < 500 else 0.0
        mujoco.mj_step(model, data)
        if step % 50 == 49:
            samples.append(np.concatenate([data.qpos, data.qvel]))
    return np.array(samples), data


def test_visual_meshes_leave_the_dynamics_unchanged():
    scene = PickCube().build_scene()
    models = {visual: compile_scene(scene, visual=visual) for visual in ("none", "coarse", "full")}
    before = models.pop("none")
    reference, ref_data = _trajectory(before)
    assert ref_data.ncon > 0  # the cube lies on the table: contacts were part of it
    for visual, model in models.items():
        assert model.ngeom > before.ngeom  # the visual meshes are there
        visual_geoms = model.geom_group == 2
        assert (model.geom_contype[visual_geoms] == 0).all() and (model.geom_conaffinity[visual_geoms] == 0).all()
        for field in ("body_mass", "body_inertia", "body_ipos", "body_iquat", "body_subtreemass",
                      "dof_armature", "dof_damping", "dof_invweight0", "body_invweight0"):
            assert np.array_equal(getattr(model, field), getattr(before, field)), (visual, field)
        trajectory, _ = _trajectory(model)
        assert np.max(np.abs(trajectory - reference)) <= 1e-12, visual


def test_a_second_camera_set_in_the_same_thread_leaves_the_first_ones_images_alone(world):
    model, data, cameras = world
    _place_cube(model, data, 0.5, 0.0)
    alone = cameras.render("front")
    from tasks.reach import Reach
    reach_model = compile_scene(Reach().build_scene())
    reach_data = mujoco.MjData(reach_model)
    mujoco.mj_forward(reach_model, reach_data)
    with _cameras(reach_model, reach_data) as reach_cameras:  # its context is made current
        reach_image = reach_cameras.render("front")
        assert np.array_equal(cameras.render("front"), alone)
        assert not np.array_equal(reach_image, alone)  # no cube, arm elsewhere: another picture
        assert np.array_equal(reach_cameras.render("front"), reach_image)


def test_rendering_from_another_thread_is_refused_by_name(world):
    import threading
    _, _, cameras = world
    errors = []

    def render():
        try:
            cameras.render("front")
        except RuntimeError as error:
            errors.append(str(error))
    thread = threading.Thread(target=render)
    thread.start()
    thread.join(timeout=30)
    assert errors and "thread that created it" in errors[0]
    assert cameras.render("front").shape == (128, 128, 3)  # still fine in its own thread


def test_the_backends_world_gives_cameras_on_the_data_it_steps():
    from sim.mujoco_backend import MujocoBackend
    from sim.mujoco_cameras import MujocoCameras
    backend = MujocoBackend(compile_scene(PickCube().build_scene()))
    with MujocoCameras.of_world(backend.world) as cameras:
        assert cameras.data is backend.data
        assert cameras.sizes() == {"front": (128, 128), "wrist": (128, 128)}
        before = cameras.render("wrist")
        backend.reset(backend.home_q + np.array([0.4, 0, 0, 0, 0, 0, 0]), gripper_width=0.08)
        mujoco.mj_kinematics(backend.model, backend.data)
        assert not np.array_equal(cameras.render("wrist"), before)


def test_a_camera_on_a_body_that_is_not_there_is_refused_by_name():
    from sim.scene import Camera, Scene
    camera = Camera("wrist", (0.0, 0.0, 0.1), look_at=(0.0, 0.0, 0.2), attached_to="panda_palm")
    with pytest.raises(ValueError, match="panda_palm.*panda_hand"):
        compile_scene(Scene(cameras=(camera,)))
    with pytest.raises(ValueError, match="fovy"):
        Camera("front", (1.0, 0.0, 1.0), look_at=(0.0, 0.0, 0.0), fovy=0.0)
