"""PyBullet mirror cameras: the same images as MuJoCo's where geometry is concerned (the cube on
the same pixels in both mirrors, front and wrist), the wrist camera riding the hand, the image
layout, the env's image observations, and what a frame costs with each renderer. Real PyBullet
and real MuJoCo (MUJOCO_GL=egl), rendered in one thread."""

import os
import time

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")  # before mujoco is imported; the Makefile sets it too
import numpy as np  # noqa: E402

from controllers.rotations import quat_to_matrix  # noqa: E402
from robostack.env import make_env  # noqa: E402
from robostack.robot.backends import make_backend, renders_cameras, simulated_cameras  # noqa: E402
from sim import pybullet_cameras  # noqa: E402
from sim.pybullet_cameras import PybulletCameras  # noqa: E402
from tasks import make_task  # noqa: E402
from tasks.common import TaskConfig, wrist_camera  # noqa: E402

HALF = 0.02  # m, the pick_cube cube's half edge
TOLERANCE = 3.0  # px at 128 x 128: how far the cube's centroid may lie between the mirrors
RENDERERS = (pybullet_cameras.EGL, pybullet_cameras.TINY)


def _red_centroid(image):
    """Centroid (u, v) px of the cube's pixels (as tests/sim/test_mujoco_cameras.py): red well
    above green and blue; the lit table is brown in every renderer (r/g ~ 1.2-1.4)."""
    rgb = image.astype(float)
    mask = (rgb[..., 0] > 60) & (rgb[..., 0] > 2.2 * rgb[..., 1]) & (rgb[..., 0] > 2.2 * rgb[..., 2])
    assert mask.sum() >= 4, f"the cube is not in the image ({mask.sum()} red pixels)"
    v, u = np.nonzero(mask)
    return np.array([u.mean(), v.mean()])


@pytest.fixture(scope="module")
def mirrors():
    """A PyBullet and a MuJoCo mirror of pick_cube, with their cameras (PyBullet: both renderers)."""
    task = make_task("pick_cube")
    bullet, mujoco_backend = make_backend("pybullet", task), make_backend("mujoco", task)
    assert renders_cameras(bullet) and renders_cameras(mujoco_backend)
    mujoco_cameras = simulated_cameras(mujoco_backend, ["front", "wrist"])
    bullet_cameras = {r: PybulletCameras.of_backend(bullet, renderer=r) for r in RENDERERS}
    yield bullet, mujoco_backend, bullet_cameras, mujoco_cameras
    for cameras in (*bullet_cameras.values(), mujoco_cameras):
        cameras.close()
    bullet.close()
    mujoco_backend.close()


def _both(mirrors, q=None, cube_xy=None):
    """Put both mirrors in the same state: arm at `q` (default home), the cube at `cube_xy` on
    the table (default: under the tcp)."""
    bullet, mujoco_backend, *_ = mirrors
    q = bullet.home_q if q is None else q
    for backend in (bullet, mujoco_backend):
        backend.reset(q, gripper_width=backend.gripper_max_width)
    if cube_xy is None:
        cube_xy = bullet.latest_state().tcp_position[:2]
    for backend in (bullet, mujoco_backend):
        backend.world.set_object_pose("cube", [cube_xy[0], cube_xy[1], HALF], [1.0, 0.0, 0.0, 0.0])


def test_clip_planes_are_mujocos(mirrors):
    _, mujoco_backend, *_ = mirrors
    model = mujoco_backend.world.model
    assert pybullet_cameras.NEAR == pytest.approx(model.vis.map.znear * model.stat.extent, rel=1e-3)
    assert pybullet_cameras.FAR == pytest.approx(model.vis.map.zfar * model.stat.extent, rel=1e-3)


@pytest.mark.parametrize("renderer", RENDERERS)
def test_frames_are_rgb_uint8_pictures(mirrors, renderer):
    cameras, mujoco_cameras = mirrors[2][renderer], mirrors[3]
    _both(mirrors, cube_xy=(0.5, 0.05))
    before = mujoco_cameras.render("front")
    assert cameras.renderer == renderer and cameras.names == ("front", "wrist")
    assert cameras.sizes() == {"front": (128, 128), "wrist": (128, 128)}
    for name in cameras.names:
        image = cameras.render(name)
        assert image.shape == (128, 128, 3) and image.dtype == np.uint8 and image.flags["C_CONTIGUOUS"]
        assert image.std() > 5  # a picture, not a blank buffer
        again = cameras.render(name)
        assert np.array_equal(image, again) and again is not image
    # MuJoCo's cameras in the same thread still draw into their own context.
    assert np.array_equal(mujoco_cameras.render("front"), before)


@pytest.mark.parametrize("renderer", RENDERERS)
@pytest.mark.parametrize("cube_xy", [(0.45, 0.0), (0.55, 0.12), (0.40, -0.12)])
def test_front_camera_sees_the_cube_where_mujoco_does(mirrors, renderer, cube_xy):
    _, _, bullet_cameras, mujoco_cameras = mirrors
    _both(mirrors, cube_xy=cube_xy)
    bullet = _red_centroid(bullet_cameras[renderer].render("front"))
    reference = _red_centroid(mujoco_cameras.render("front"))
    offset = float(np.linalg.norm(bullet - reference))
    print(f"front {renderer} cube {cube_xy}: PyBullet {bullet.round(2)} MuJoCo {reference.round(2)} "
          f"offset {offset:.2f} px")
    assert offset <= TOLERANCE
    # And both where the cube's centre projects through MuJoCo's pinhole model.
    projected = mujoco_cameras.project("front", [*cube_xy, HALF])
    assert np.linalg.norm(bullet - projected) <= TOLERANCE


@pytest.mark.parametrize("renderer", RENDERERS)
def test_wrist_camera_rides_the_hand_as_in_mujoco(mirrors, renderer):
    bullet, _, bullet_cameras, mujoco_cameras = mirrors
    cameras, declared = bullet_cameras[renderer], wrist_camera()
    centroids, images = [], []
    for shift in (0.0, 0.15):  # swing the arm about joint 1; the cube stays near the home tcp
        q = bullet.home_q.copy()
        q[0] += shift
        _both(mirrors, q, cube_xy=(0.45, 0.03))
        # The camera frame is the hand's (PyBullet's link pose) times the declared pose.
        position, rotation = cameras.pose("wrist")
        reference_position, reference_rotation = mujoco_cameras.pose("wrist")
        np.testing.assert_allclose(position, reference_position, atol=2e-5)
        np.testing.assert_allclose(rotation, reference_rotation, atol=2e-5)
        hand_rotation = rotation @ quat_to_matrix(declared.orientation()).T
        assert np.allclose(hand_rotation.T @ hand_rotation, np.eye(3), atol=1e-6)
        image = cameras.render("wrist")
        found, reference = _red_centroid(image), _red_centroid(mujoco_cameras.render("wrist"))
        offset = float(np.linalg.norm(found - reference))
        print(f"wrist {renderer} shift {shift}: PyBullet {found.round(2)} MuJoCo {reference.round(2)} "
              f"offset {offset:.2f} px")
        assert offset <= TOLERANCE
        centroids.append(found)
        images.append(image.astype(int))
    # The view changed with the arm: the cube moved across the image, its pixels with it (the
    # table around it is nearly uniform).
    assert np.linalg.norm(centroids[1] - centroids[0]) > 10
    assert (np.abs(images[1] - images[0]).max(axis=-1) > 40).sum() > 50


# Mean abs RGB difference (0-255) from MuJoCo's frames, tiny renderer, per camera, at the states
# below: measured 6.4 / 8.2 (home) and 8.2 / 8.4 (moved arm); before MuJoCo's look was painted
# on (white background, flat directional light) 87.3 / 68.3 and 81.1 / 65.8.
APPEARANCE_BOUND = {"front": 10.0, "wrist": 13.0}
OLD_GAP = {"front": 81.1, "wrist": 63.8}


@pytest.mark.parametrize("shift", [(0.0, 0.0), (0.3, -0.2)])
def test_tiny_frames_look_like_mujocos(mirrors, shift):
    """A vision policy trained in MuJoCo sees nearly the same pictures here (issue 15)."""
    bullet, _, bullet_cameras, mujoco_cameras = mirrors
    q = bullet.home_q.copy()
    q[0] += shift[0]
    q[3] += shift[1]
    _both(mirrors, q, cube_xy=(0.45, 0.05))
    for name in ("front", "wrist"):
        image = bullet_cameras[pybullet_cameras.TINY].render(name).astype(int)
        reference = mujoco_cameras.render(name).astype(int)
        gap = float(np.abs(image - reference).mean())
        print(f"appearance {name} shift {shift}: mean abs RGB difference {gap:.2f}")
        assert gap < APPEARANCE_BOUND[name] < OLD_GAP[name] / 4
    # MuJoCo's background: black where no body is (above the table's far edge, front camera).
    front = bullet_cameras[pybullet_cameras.TINY].render("front")
    assert front[0, 0].max() == 0 and mujoco_cameras.render("front")[0, 0].max() < 10
    # The table shades a fixed camera keeps from earlier frames are the ones a first frame computes.
    with PybulletCameras.of_backend(bullet, ["front"], renderer=pybullet_cameras.TINY) as fresh:
        assert np.array_equal(fresh.render("front"), front)


def test_env_returns_pybullet_images():
    config = TaskConfig(cameras=("front", "wrist"))
    frames = {}
    for backend in ("pybullet", "mujoco"):
        env = make_env("pick_cube", backend=backend, transport_kind="inprocess", config=config, seed=6)
        try:
            observation, _ = env.reset(seed=6)  # a cube the wrist camera sees whole
            frames[backend] = (observation, env.fields()["cube_position"].copy())
            for name in ("front", "wrist"):
                image = observation[f"images/{name}"]
                assert image.shape == (128, 128, 3) and image.dtype == np.uint8
                assert env.observation_space[f"images/{name}"].contains(image)
            action = np.zeros(env.action_space.shape, np.float32)
            action[0] = 1.0  # move the tcp along +x
            for _ in range(3):
                stepped, *_ = env.step(action)
            moved = np.abs(stepped["images/wrist"].astype(int) - observation["images/wrist"]).mean()
            assert moved > 1.0, moved  # the wrist camera's view followed the hand
        finally:
            env.close()
    # The same reset in both mirrors: the cube at the same place, on the same pixels.
    (bullet, bullet_cube), (reference, reference_cube) = frames["pybullet"], frames["mujoco"]
    np.testing.assert_allclose(bullet_cube, reference_cube, atol=2e-3)
    for name in ("front", "wrist"):
        offset = np.linalg.norm(_red_centroid(bullet[f"images/{name}"]) - _red_centroid(reference[f"images/{name}"]))
        print(f"env {name}: offset {offset:.2f} px")
        assert offset <= TOLERANCE


def test_render_time_per_frame(mirrors):
    """Loose: a frame within a second on the slowest machine; the figures are printed."""
    _both(mirrors)
    renderers = {**mirrors[2], "mujoco": mirrors[3]}
    for rounds in range(2):  # interleaved: the machine's load changes from second to second
        for label, cameras in renderers.items():
            cameras.render("front")
            start = time.perf_counter()
            for _ in range(5):
                cameras.render("front")
                cameras.render("wrist")
            seconds = (time.perf_counter() - start) / 10
            print(f"render {label}: {seconds * 1e3:.1f} ms a 128 x 128 frame ({1 / seconds:.0f} fps)")
            assert seconds < 1.0


def test_closed_cameras_refuse_to_render():
    task = make_task("pick_cube")
    backend = make_backend("pybullet", task)
    try:
        cameras = PybulletCameras.of_backend(backend, ["front"], renderer="tiny")
        with pytest.raises(KeyError, match="not rendered here"):
            cameras.render("wrist")
        cameras.close()
        cameras.close()  # twice is harmless
        with pytest.raises(RuntimeError, match="closed"):
            cameras.render("front")
        with pytest.raises(KeyError, match="no camera"):
            PybulletCameras.of_backend(backend, ["side"])
    finally:
        backend.close()
