"""Simulated cameras: RGB images of the mirror's scene, rendered headless from its MuJoCo cameras.

`MujocoCameras(model, data)` renders the model's cameras (those a task's `Scene` declared, see
sim/mujoco_scene.py) from the current state of `data`: `render(name)` returns an (H, W, 3) uint8
RGB image, top row first, C-contiguous - the layout of `hardware.cameras.base.Frame.image`, so a
policy sees the same array from a simulated and a real camera. `intrinsics(name)` gives the
pinhole model of the same camera (the fields of `hardware.cameras.base.Intrinsics`), `pose(name)`
its frame in the world, and `project(name, points)` where world points land in its image.

Headless: one OpenGL context (MUJOCO_GL=egl works without a display or a GPU: Mesa's llvmpipe
renders in software) and one MjrContext, made once and reused for every frame; every camera draws
into the same offscreen buffer (a viewport of its own size) and is read back from it.

What a frame costs, and what is cut (benchmarks/bench_render.py; Mesa llvmpipe on this project's
2-core machine): with `mujoco.Renderer`'s defaults a 128 x 128 frame of pick_cube costs ~2.6 ms
and a 640 x 480 one ~12 ms; here ~1.3 ms and ~4 ms. Two things decide it. Multisampling: the
offscreen buffer is multisampled 4x by default (`visual.quality.offsamples`), which software
rendering pays in full - about half of a small frame and two thirds of a large one; it is off
here. Triangles: the robot's full visual meshes (103k triangles) cost ~11 ms a frame at any
size, which is why the mirror draws its coarse meshes (sim/panda_model.py). The rest is cut
because a real camera does not see it, though it costs little in these scenes (the lights cast
no shadows already): no shadows, reflections, skybox, fog or haze, and only the geom groups a
camera needs - the scene's geoms (group 0) and the robot's visual meshes
(`panda_model.VISUAL_GROUP`), not its collision geometry or the tcp site.

Frames: the `world` frame is the robot `base` frame. A camera frame is MuJoCo's (OpenGL's):
x right, y up in the image, the camera looks along its -z axis. Quaternions (w, x, y, z). Image
coordinates (u, v) are OpenCV's: u to the right, v down, the centre of the top-left pixel at
(0, 0).

One thread: an EGL context is current in one thread at a time, and this one is made current in
the thread that creates `MujocoCameras`; rendering from another thread is refused with an error
saying so (create the cameras in the thread that renders, e.g. the robot server's loop thread).
"""

from __future__ import annotations

import threading
from typing import Sequence

import mujoco
import numpy as np

from sim import panda_model

# Geom groups a camera draws: scene geoms (table, objects; group 0) and the robot's visual meshes.
CAMERA_GEOM_GROUPS = (0, panda_model.VISUAL_GROUP)
# Site groups a camera draws: the task's markers (group 0), e.g. a reach goal it must see.
CAMERA_SITE_GROUPS = (0,)

# Which MujocoCameras' context is current in this thread: several may live in one thread (each
# has its own context), and a frame must be drawn into its own.
_current = threading.local()


class MujocoCameras:
    """Renders `cameras` (names of the model's cameras; default: all of them) at the resolution
    each camera declares (`model.cam_resolution`), with the lean settings above."""

    def __init__(self, model: mujoco.MjModel, data: mujoco.MjData,
                 cameras: Sequence[str] | None = None):
        self.model, self.data = model, data
        names = [model.camera(i).name for i in range(model.ncam)]
        if cameras is None:
            cameras = names
        unknown = [c for c in cameras if c not in names]
        if unknown:
            raise KeyError(f"no camera {unknown} in this model; its cameras: {names}. A task "
                           f"declares its cameras in its Scene (sim/scene.py Camera)")
        self.names = tuple(cameras)
        self._ids = {name: names.index(name) for name in self.names}
        self._sizes = {name: (int(model.cam_resolution[i][0]), int(model.cam_resolution[i][1]))
                       for name, i in self._ids.items()}  # (width, height) px
        width = max([w for w, _ in self._sizes.values()], default=1)
        height = max([h for _, h in self._sizes.values()], default=1)
        if width > model.vis.global_.offwidth or height > model.vis.global_.offheight:
            raise ValueError(
                f"camera images up to {width} x {height} px do not fit the model's offscreen buffer "
                f"({model.vis.global_.offwidth} x {model.vis.global_.offheight}); compile the scene "
                f"with sim/mujoco_scene.py, which sizes it to the largest camera")

        self._gl = _gl_context(model.vis.global_.offwidth, model.vis.global_.offheight)
        self._gl.make_current()
        _current.owner = self
        self._thread = threading.get_ident()
        samples = model.vis.quality.offsamples
        # Read once, when the context is made: a multisampled buffer costs every frame.
        model.vis.quality.offsamples = 0
        try:
            self._context = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_100)
        finally:
            model.vis.quality.offsamples = samples
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._context)

        self._option = mujoco.MjvOption()
        self._scene = mujoco.MjvScene(model, maxgeom=model.ngeom + model.nsite + 100)
        self._option.geomgroup[:] = [g in CAMERA_GEOM_GROUPS for g in range(len(self._option.geomgroup))]
        self._option.sitegroup[:] = [g in CAMERA_SITE_GROUPS for g in range(len(self._option.sitegroup))]
        for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION,
                     mujoco.mjtRndFlag.mjRND_SKYBOX, mujoco.mjtRndFlag.mjRND_FOG,
                     mujoco.mjtRndFlag.mjRND_HAZE):
            self._scene.flags[flag] = 0
        self._camera = mujoco.MjvCamera()
        self._camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._buffers = {name: np.empty((h, w, 3), np.uint8) for name, (w, h) in self._sizes.items()}
        self._rects = {name: mujoco.MjrRect(0, 0, w, h) for name, (w, h) in self._sizes.items()}

    @classmethod
    def of_world(cls, world, cameras: Sequence[str] | None = None) -> "MujocoCameras":
        """The cameras of a running mirror, from its world (`MujocoBackend.world`, a
        sim/mujoco_world.py `MujocoWorld`): they render the very MjData the backend steps."""
        return cls(world.model, world.data, cameras)

    def sizes(self) -> dict[str, tuple[int, int]]:
        """{name: (height, width)} px: the shape of `task.cameras` that the env's observation
        space reads (robostack/env/spaces.py)."""
        return {name: self.size(name) for name in self.names}

    # --- images ---------------------------------------------------------------------------------
    def render(self, name: str) -> np.ndarray:
        """The camera's view of `data` as it is now (run a kinematics pass after changing qpos;
        the cameras' own poses are updated here):
        a new (H, W, 3) uint8 RGB array, top row first, C-contiguous."""
        camera_id = self._id(name)
        if threading.get_ident() != self._thread:
            raise RuntimeError(
                f"camera {name!r}: MujocoCameras renders in the thread that created it (its EGL "
                f"context is current there and cannot be in two threads); create it in the "
                f"thread that renders")
        if self._context is None:
            raise RuntimeError(f"camera {name!r}: these cameras were closed")
        if getattr(_current, "owner", None) is not self:
            self._gl.make_current()
            _current.owner = self
        self._camera.fixedcamid = camera_id
        # Camera poses are not part of a kinematics pass (mj_kinematics): a wrist camera would
        # be drawn from where the hand was at the last full mj_forward. mj_camlight places the
        # cameras from the bodies' poses now (microseconds).
        mujoco.mj_camlight(self.model, self.data)
        mujoco.mjv_updateScene(self.model, self.data, self._option, None, self._camera,
                               mujoco.mjtCatBit.mjCAT_ALL, self._scene)
        rect, buffer = self._rects[name], self._buffers[name]
        mujoco.mjr_render(rect, self._scene, self._context)
        mujoco.mjr_readPixels(buffer, None, rect, self._context)
        return np.ascontiguousarray(buffer[::-1])  # OpenGL reads bottom row first

    def render_all(self) -> dict[str, np.ndarray]:
        """{name: image} of every camera, all of the same state."""
        return {name: self.render(name) for name in self.names}

    # --- geometry -------------------------------------------------------------------------------
    def intrinsics(self, name: str) -> dict:
        """Pinhole intrinsics (px) of the camera: width, height, fx, fy, cx, cy - the fields of
        `hardware.cameras.base.Intrinsics` (no distortion). MuJoCo's `fovy` is the vertical field
        of view and its pixels are square; the principal point is the image centre, in OpenCV's
        pixel coordinates (centre of the top-left pixel at (0, 0))."""
        camera_id = self._id(name)
        width, height = self._sizes[name]
        fy = 0.5 * height / np.tan(np.radians(self.model.cam_fovy[camera_id]) / 2)
        return {"width": width, "height": height, "fx": float(fy), "fy": float(fy),
                "cx": (width - 1) / 2, "cy": (height - 1) / 2}

    def pose(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(position (3,) m, rotation (3, 3)) of the camera frame in the world frame, from the last
        kinematics pass: rotation columns are the camera's x (right), y (up), z (backward) axes."""
        camera_id = self._id(name)
        return self.data.cam_xpos[camera_id].copy(), self.data.cam_xmat[camera_id].reshape(3, 3).copy()

    def project(self, name: str, points) -> np.ndarray:
        """Image coordinates (..., 2) = (u right, v down) px of world `points` (..., 3) m, through
        the camera's pose and intrinsics. Points behind the camera get NaN."""
        position, rotation = self.pose(name)
        k = self.intrinsics(name)
        local = (np.asarray(points, float) - position) @ rotation  # world -> camera frame
        depth = -local[..., 2]  # the camera looks along -z
        with np.errstate(divide="ignore", invalid="ignore"):
            u = k["cx"] + k["fx"] * local[..., 0] / depth
            v = k["cy"] - k["fy"] * local[..., 1] / depth  # image v grows down, camera y up
        uv = np.stack([u, v], axis=-1)
        uv[depth <= 0] = np.nan
        return uv

    def size(self, name: str) -> tuple[int, int]:
        """(height, width) px of the camera's images, the order of an image array's shape."""
        width, height = self._sizes[self._check(name)]
        return height, width

    def _check(self, name: str) -> str:
        if name not in self._ids:
            raise KeyError(f"camera {name!r} is not rendered here; cameras: {list(self.names)}")
        return name

    def _id(self, name: str) -> int:
        return self._ids[self._check(name)]

    # --- lifetime -------------------------------------------------------------------------------
    def close(self) -> None:
        """Frees the GL resources; idempotent."""
        if getattr(self, "_context", None) is not None:
            self._gl.make_current()
            self._context.free()
            self._context = None
            _current.owner = None
        if getattr(self, "_gl", None) is not None:
            self._gl.free()
            self._gl = None

    def __enter__(self) -> "MujocoCameras":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _gl_context(width: int, height: int):
    """An offscreen OpenGL context of the backend MUJOCO_GL names; a clear error if none works."""
    import os

    backend = os.environ.get("MUJOCO_GL", "")
    # mujoco picks its GL backend when first imported: name the one it took, too.
    chosen = getattr(getattr(mujoco, "GLContext", None), "__module__", "none")
    try:
        return mujoco.GLContext(width, height)
    except Exception as error:
        raise RuntimeError(
            f"no OpenGL context for the simulated cameras (MUJOCO_GL={backend or 'unset'}, "
            f"mujoco imported with {chosen}): {error}. "
            "Headless rendering needs MUJOCO_GL=egl set before mujoco is imported, and Mesa's EGL "
            "and software rasteriser: apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri "
            "(.ci/run installs libegl1 and libgl1, which depend on them on Debian 12)"
        ) from error
