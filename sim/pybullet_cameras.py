"""Simulated cameras of the PyBullet mirror: RGB images of its scene, the same views as MuJoCo's.

`PybulletCameras(scene, client, robot, world, names)` renders the `sim.scene.Camera`s a task's
`Scene` declares from the current state of a PyBullet physics client: `render(name)` returns an
(H, W, 3) uint8 RGB image, top row first, C-contiguous - the layout sim/mujoco_cameras.py returns
and `hardware.cameras.base.Frame.image` has, so a policy sees the same array from either mirror.
`PybulletCameras.of_backend(backend, names)` makes them for a running `PybulletBackend`
(robostack.robot.backends.simulated_cameras does, for the robot server).

The same camera as in MuJoCo: the pose the `Camera` gives (in the base frame, or in the frame of
its `attached_to` link, read from the physics client at every render so a wrist camera rides the
hand), the vertical field of view `fovy`, square pixels at the declared width x height, and
MuJoCo's clip planes (`NEAR`, `FAR`). tests/sim/test_pybullet_cameras.py checks that the cube
lands on the same pixels in both mirrors (within 1.2 px at 128 x 128, front and wrist).

A render client of its own. The frames are not drawn in the backend's physics client but in a
second PyBullet client holding a visual copy of the scene (`build_render_scene`), which takes the
physics client's joint angles and object and marker poses before every frame (~0.2 ms). Two
reasons: PyBullet's EGL plugin draws only bodies created after it was loaded, and the backend
builds its scene before any camera exists; and the copy carries the robot's low-poly meshes, the
"coarse" visuals MuJoCo's cameras draw (sim/panda_model.py), which cut the tiny renderer's frame
from ~85 to ~18 ms here (a software renderer pays per triangle).

Renderer (`self.renderer`): PyBullet's CPU "tiny renderer" (ER_TINY_RENDERER) by default, or
its EGL plugin (ER_BULLET_HARDWARE_OPENGL through EGL; Mesa's llvmpipe needs no display or GPU).
128 x 128 on this 2-core machine (the test prints it): EGL 19-60 ms, tiny 8-18 ms, MuJoCo
0.5-1 ms. EGL renders its whole offscreen window at any image size (32 px costs what 512 px
does): on a CPU it is the slower one; on a GPU it is the one to use.
Appearance (tiny renderer): MuJoCo's, so a vision policy trained in one mirror sees the same
pictures in the other. Pixels with no body (segmentation buffer) are painted black: MuJoCo draws
no skybox. Boxes (table, objects) are re-shaded per pixel with MuJoCo's lighting model, its
headlight and the scene's `Light`s as spots with falloff and highlights, at each pixel's point
(depth buffer) on its face (the box's pose). The robot keeps the tiny renderer's one light,
fitted to MuJoCo's frames. Mean abs RGB difference from MuJoCo's (0-255) at six states: front
85.4 -> 6.8, wrist 67.1 -> 9.3; ~3 ms more a frame. EGL's colours are not matched; it draws
shadows whatever it is asked, so it is lit from straight above.

Frames: the camera frame is MuJoCo's (OpenGL's), sim/scene.py: x right, y up in the image, the
camera looks along its -z axis; an OpenGL view matrix is the inverse of that frame's pose, so no
axis is flipped here. Quaternions (w, x, y, z) at our boundary; PyBullet's are (x, y, z, w).

GL contexts: the EGL plugin makes its context current in the thread that loads it. MuJoCo's
cameras keep their own context current between frames, so each call into the plugin here saves
the thread's current EGL context, makes the plugin's current and restores the saved one after:
both mirrors' cameras render in one thread (the tests interleave them and check MuJoCo's frames
are unchanged). Render in the thread that made these cameras; another thread is refused.
"""

from __future__ import annotations

import ctypes
import os
import pkgutil
import tempfile
import threading
import xml.etree.ElementTree as ElementTree
from typing import Sequence

import numpy as np
import pybullet as p

from controllers.rotations import quat_to_matrix
from sim.pybullet_scene import joint_indices, patched_panda_urdf, to_pybullet_quaternion
from sim.scene import Camera, Scene

# Clip planes (m). MuJoCo's defaults are 0.01 and 50 times the model's extent
# (`vis.map.znear`, `vis.map.zfar`, `stat.extent`); every task scene has the same table and
# robot, hence the same extent, 2.328 m (checked against the compiled scene in the tests).
MUJOCO_EXTENT = 2.328  # m
NEAR = 0.01 * MUJOCO_EXTENT
FAR = 50.0 * MUJOCO_EXTENT

# The tiny renderer's light on what `_mujoco_shading` does not repaint (the robot): the best on
# a grid of mean abs RGB difference from MuJoCo's frames at six states (front + wrist).
TINY_LIGHT = {"lightAmbientCoeff": 0.2, "lightDiffuseCoeff": 0.8, "lightSpecularCoeff": 0.1,
              "lightColor": [1.0, 1.0, 1.0]}
HEADLIGHT_KEY = 0.6
SPOT_COS_CUTOFF = float(np.cos(np.radians(45.0)))  # MuJoCo's default spot cutoff

EGL = "egl"  # PyBullet's eglRenderer plugin: ER_BULLET_HARDWARE_OPENGL
TINY = "tiny"  # PyBullet's CPU renderer: ER_TINY_RENDERER


class PybulletCameras:
    """Renders the cameras `cameras` (names; default: all) of `scene` (the `sim.scene.Scene` the
    physics client `client` was built from, sim/pybullet_scene.py), whose robot is body `robot`
    and whose objects and markers `world` (a `PybulletWorld` on that client) reads. `renderer`:
    "egl", "tiny" or None: tiny, the faster of the two on a CPU (measured above); ask for "egl"
    where a GPU's OpenGL driver draws it.

    The frames are drawn in a render client of their own (see the module docstring), built
    from the same scene (after the EGL plugin, if any) and given the physics client's joint
    angles and object and marker poses before every frame."""

    def __init__(self, scene: Scene, client: int, robot: int, world, cameras: Sequence[str] | None = None,
                 renderer: str | None = None):
        declared = [c.name for c in scene.cameras]
        names = declared if cameras is None else list(cameras)
        unknown = [n for n in names if n not in declared]
        if unknown:
            raise KeyError(f"no camera {unknown} in this scene; its cameras: {declared}. A task declares its "
                           f"cameras in its Scene (sim/scene.py Camera)")
        if renderer not in (None, EGL, TINY):
            raise ValueError(f"renderer must be {EGL!r}, {TINY!r} or None (tiny), got {renderer!r}")
        self.client, self.robot, self.world = client, robot, world
        self.cameras = {c.name: c for c in scene.cameras if c.name in names}
        self.names = tuple(self.cameras)
        joints, self._links = joint_indices(robot, client)
        for camera in self.cameras.values():
            if camera.attached_to is not None and camera.attached_to not in self._links:
                raise ValueError(f"camera {camera.name!r} is attached_to {camera.attached_to!r}, which is no "
                                 f"link of the robot; links: {sorted(self._links)}")
        self._joints = sorted(j for j in joints.values()
                              if p.getJointInfo(robot, j, physicsClientId=client)[2] != p.JOINT_FIXED)
        self._objects = [box.name for box in scene.objects]
        self._markers = [marker.name for marker in scene.markers]
        # Fixed parts of each camera: its pose in its reference frame, its projection matrix.
        self._local = {name: (np.asarray(c.position, float), quat_to_matrix(c.orientation()))
                       for name, c in self.cameras.items()}
        self._projection = {name: p.computeProjectionMatrixFOV(c.fovy, c.width / c.height, NEAR, FAR)
                            for name, c in self.cameras.items()}
        # Toward the scene's first light (PyBullet's convention), or up if there is none.
        key = -np.asarray(scene.lights[0].direction, float) if scene.lights else np.array([0.0, 0.0, 1.0])
        self._light = key / np.linalg.norm(key)
        self._spots = [(np.float32(light.position), np.float32(light.direction) / np.linalg.norm(light.direction))
                       for light in scene.lights]  # float32: the per-pixel shading is ~1.5x faster
        self._rays = {name: _camera_rays(c).astype(np.float32) for name, c in self.cameras.items()}
        self._fixed = {name: (np.zeros((c.height, c.width, 3), np.uint8), np.zeros((c.height, c.width), bool))
                       for name, c in self.cameras.items() if c.attached_to is None}
        self._thread = threading.get_ident()
        self._closed = False

        self._plugin, self._egl = -1, None
        if renderer == EGL:
            self._load_egl()
            if self._plugin < 0:
                raise RuntimeError("PyBullet's eglRenderer plugin did not load: it needs libEGL and an OpenGL "
                                   "driver (Mesa: apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri); "
                                   "renderer='tiny' needs none of it")
        if self._plugin < 0:
            self._render_client = p.connect(p.DIRECT)
        self.renderer = EGL if self._plugin >= 0 else TINY
        self._flag = p.ER_BULLET_HARDWARE_OPENGL if self.renderer == EGL else p.ER_TINY_RENDERER
        try:
            with _egl_current(self._egl):
                self._render_robot, self._render_bodies, self._table_body = build_render_scene(
                    scene, self._render_client)
            # The boxes `_as_mujoco` shades: (body, rgb, half size, pose if fixed).
            self._shaded = [(self._table_body, np.asarray(scene.table.colour[:3]), np.asarray(scene.table.half_size),
                             (np.asarray(scene.table.center()), np.eye(3)))]
            self._shaded += [(self._render_bodies[box.name], np.asarray(box.colour[:3]), np.asarray(box.half_size),
                              None) for box in scene.objects]
        except Exception:
            self.close()
            raise

    def _load_egl(self) -> None:
        """A render client with the EGL plugin loaded, before any body (see the module docstring)."""
        loader = pkgutil.get_loader("eglRenderer")
        if loader is None:
            return
        try:
            from OpenGL import EGL as egl
        except Exception:  # no PyOpenGL: the plugin's context could not be kept apart from MuJoCo's
            egl = None
        render_client = p.connect(p.DIRECT)
        before = _current_egl(egl)
        plugin = p.loadPlugin(loader.get_filename(), "_eglRendererPlugin", physicsClientId=render_client)
        if plugin < 0:
            p.disconnect(render_client)
            return
        self._egl = (egl, _current_egl(egl))  # the plugin made its context current while loading
        _make_current(egl, before)
        self._render_client, self._plugin = render_client, plugin

    @classmethod
    def of_backend(cls, backend, cameras: Sequence[str] | None = None, scene: Scene | None = None,
                   renderer: str | None = None) -> "PybulletCameras":
        """The cameras of a running `PybulletBackend`: they render the state of the very client
        the backend steps. `scene`: the `sim.scene.Scene` the backend was built from (default:
        `backend.scene`, which robostack.robot.backends.make_backend sets)."""
        scene = scene if scene is not None else getattr(backend, "scene", None)
        if scene is None:
            raise ValueError("PybulletCameras.of_backend: the backend does not carry its Scene (backend.scene); "
                             "make it with robostack.robot.backends.make_backend, or pass scene=")
        return cls(scene, backend.client, backend.robot, backend.world, cameras, renderer)

    def sizes(self) -> dict[str, tuple[int, int]]:
        """{name: (height, width)} px, as MujocoCameras.sizes."""
        return {name: self.size(name) for name in self.names}

    def size(self, name: str) -> tuple[int, int]:
        camera = self._camera(name)
        return camera.height, camera.width

    # --- images ---------------------------------------------------------------------------------
    def render(self, name: str) -> np.ndarray:
        """The camera's view of the physics client's state now: a new (H, W, 3) uint8 RGB array,
        top row first, C-contiguous."""
        camera = self._camera(name)
        if self._closed:
            raise RuntimeError(f"camera {name!r}: these cameras were closed")
        if threading.get_ident() != self._thread:
            raise RuntimeError(f"camera {name!r}: PybulletCameras renders in the thread that created it (the "
                               f"EGL plugin's context is current there); create it in the thread that renders")
        position, rotation = self.pose(name)
        view = _view_matrix(position, rotation)
        if self.renderer == EGL:
            # It draws shadows whatever `shadow` says (MuJoCo's cameras none): lit from above, they
            # hide under what casts them (the key light laid the arm's across the table).
            keywords = {"lightDirection": [0.0, 0.0, 1.0], "shadow": 0}
        else:
            # MuJoCo's headlight (along the view: what lights the robot's faces a camera sees
            # there) tilted toward the key light.
            light = (1 - HEADLIGHT_KEY) * rotation[:, 2] + HEADLIGHT_KEY * self._light
            keywords = {"lightDirection": (light / np.linalg.norm(light)).tolist(), "shadow": 0, **TINY_LIGHT}
        with _egl_current(self._egl):
            self._sync()
            _, _, rgba, depth, segmentation = p.getCameraImage(
                camera.width, camera.height, view, self._projection[name], renderer=self._flag,
                physicsClientId=self._render_client, **keywords)
        # Top row first already (PyBullet flips OpenGL's bottom-up read-back itself).
        image = np.reshape(rgba, (camera.height, camera.width, 4))[..., :3].astype(np.uint8)
        if self.renderer == TINY:
            self._as_mujoco(name, image, np.reshape(depth, image.shape[:2]), np.reshape(segmentation, image.shape[:2]),
                            position, rotation)
        return np.ascontiguousarray(image)

    def _as_mujoco(self, name, image, depth, segmentation, position, rotation) -> None:
        """MuJoCo's look painted over the tiny renderer's frame, in place (module docstring). A fixed
        camera sees the table on the same pixels, depths: their shades are kept (`_fixed`)."""
        image[segmentation < 0] = 0
        for body, colour, half, pose in self._shaded:
            mask = segmentation == body
            if not mask.any():
                continue
            shade = (name, depth, position, rotation, colour, half, *(pose or _pose(body, self._render_client)))
            if pose is None or name not in self._fixed:
                image[mask] = self._shade(mask, *shade)
                continue
            kept, known = self._fixed[name]
            if (new := mask & ~known).any():
                kept[new], known[new] = self._shade(new, *shade), True
            image[mask] = kept[mask]

    def _shade(self, mask, name, depth, position, rotation, colour, half, centre, box_rotation) -> np.ndarray:
        """(n, 3) uint8: a box's pixels `mask`, normal that of the face their point lies on."""
        # Eye-space distance from the depth buffer's [0, 1] (OpenGL's perspective depth).
        distance = (FAR * NEAR / (FAR - (FAR - NEAR) * depth[mask])).astype(np.float32)
        points = np.float32(position) + (distance[:, None] * self._rays[name][mask]) @ np.float32(rotation.T)
        local = (points - centre) @ box_rotation / half
        axis = np.argmax(np.abs(local), axis=1)
        sign = np.sign(local[np.arange(len(local)), axis])
        normals = box_rotation.T[axis] * sign[:, None]
        return _mujoco_shading(points, np.float32(normals), np.float32(position), np.float32(rotation[:, 2]),
                               colour, self._spots)

    def render_all(self) -> dict[str, np.ndarray]:
        return {name: self.render(name) for name in self.names}

    def _sync(self) -> None:
        """The render client takes the physics client's joint angles, object and marker poses."""
        c = self._render_client
        states = p.getJointStates(self.robot, self._joints, physicsClientId=self.client)
        for joint, state in zip(self._joints, states):
            p.resetJointState(self._render_robot, joint, state[0], physicsClientId=c)
        for name in self._objects:
            position, quaternion = self.world.object_pose(name)
            p.resetBasePositionAndOrientation(self._render_bodies[name], position.tolist(),
                                              to_pybullet_quaternion(quaternion), physicsClientId=c)
        for name in self._markers:
            p.resetBasePositionAndOrientation(self._render_bodies[name], self.world.marker_position(name).tolist(),
                                              [0, 0, 0, 1], physicsClientId=c)

    # --- geometry -------------------------------------------------------------------------------
    def pose(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(position (3,) m, rotation (3, 3)) of the camera frame in the world (base) frame now:
        rotation columns are the camera's x (right), y (up), z (backward) axes, as
        MujocoCameras.pose."""
        camera = self._camera(name)
        position, rotation = self._local[name]
        if camera.attached_to is None:
            return position.copy(), rotation.copy()
        link = self._links[camera.attached_to]
        if link < 0:
            origin, quaternion = p.getBasePositionAndOrientation(self.robot, physicsClientId=self.client)
        else:  # the link's own (URDF) frame, not its centre of mass
            origin, quaternion = p.getLinkState(self.robot, link, computeForwardKinematics=True,
                                                physicsClientId=self.client)[4:6]
        body_rotation = np.reshape(p.getMatrixFromQuaternion(quaternion), (3, 3))
        return np.asarray(origin) + body_rotation @ position, body_rotation @ rotation

    def _camera(self, name: str) -> Camera:
        if name not in self.cameras:
            raise KeyError(f"camera {name!r} is not rendered here; cameras: {list(self.names)}")
        return self.cameras[name]

    # --- lifetime -------------------------------------------------------------------------------
    def close(self) -> None:
        """Disconnects the render client (the EGL plugin with it); idempotent. The physics
        client is the backend's: it is left alone."""
        client = getattr(self, "_render_client", None)
        if not self._closed and client is not None and p.isConnected(client):
            with _egl_current(self._egl):
                p.disconnect(client)
        self._plugin, self._closed = -1, True

    def __enter__(self) -> "PybulletCameras":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def build_render_scene(scene: Scene, client: int) -> tuple[int, dict[str, int], int]:
    """What the cameras see of `scene`, built in the (empty) render client: the Panda with its
    low-poly collision meshes as visuals (MuJoCo's "coarse" visuals, sim/panda_model.py: 3,640
    triangles against the visual meshes' 103,191, which a software renderer pays for per
    triangle), the table, boxes and markers as visual-only bodies (nothing is simulated here).
    Returns the robot's body id, {object or marker name: body id} and the table's body id."""
    robot_xml = ElementTree.fromstring(patched_panda_urdf())
    for link in robot_xml.iter("link"):
        coarse = [m.get("filename") for c in link.findall("collision") for m in c.iter("mesh")]
        for visual in link.findall("visual"):
            for mesh in visual.iter("mesh"):
                if coarse:
                    mesh.set("filename", coarse[0])
    handle, path = tempfile.mkstemp(suffix=".urdf", prefix="robostack_panda_camera_")
    try:
        with os.fdopen(handle, "w") as f:
            f.write(ElementTree.tostring(robot_xml, encoding="unicode"))
        robot = p.loadURDF(path, [0, 0, 0], [0, 0, 0, 1], useFixedBase=True, physicsClientId=client)
    finally:
        os.remove(path)

    def visual_body(shape, position, quaternion=(1.0, 0.0, 0.0, 0.0)) -> int:
        return p.createMultiBody(0.0, -1, shape, list(position), to_pybullet_quaternion(quaternion),
                                 physicsClientId=client)

    table = scene.table
    table_body = visual_body(p.createVisualShape(p.GEOM_BOX, halfExtents=list(table.half_size),
                                                 rgbaColor=list(table.colour), physicsClientId=client),
                             table.center())
    bodies = {}
    for box in scene.objects:
        bodies[box.name] = visual_body(p.createVisualShape(p.GEOM_BOX, halfExtents=list(box.half_size),
                                                           rgbaColor=list(box.colour), physicsClientId=client),
                                       box.position, box.quaternion)
    for marker in scene.markers:
        bodies[marker.name] = visual_body(p.createVisualShape(p.GEOM_SPHERE, radius=marker.radius,
                                                              rgbaColor=list(marker.colour), physicsClientId=client),
                                          marker.position)
    return robot, bodies, table_body


def _view_matrix(position: np.ndarray, rotation: np.ndarray) -> list[float]:
    """OpenGL view matrix (16 floats, column-major) of a camera at `position` with frame
    `rotation` (x right, y up, looking along -z: OpenGL's own camera frame, nothing flipped):
    world -> camera, the inverse of the camera's pose."""
    view = np.eye(4)
    view[:3, :3] = rotation.T
    view[:3, 3] = -rotation.T @ position
    return view.T.reshape(-1).tolist()  # column-major = the transpose's rows


def _pose(body: int, client: int) -> tuple[np.ndarray, np.ndarray]:  # (centre, rotation)
    centre, quaternion = p.getBasePositionAndOrientation(body, physicsClientId=client)
    return np.asarray(centre), np.reshape(p.getMatrixFromQuaternion(quaternion), (3, 3))


def _camera_rays(camera: Camera) -> np.ndarray:
    """(H, W, 3): per pixel, the camera-frame point on its ray at eye depth 1 (z = -1)."""
    half = np.tan(np.radians(camera.fovy) / 2)
    v, u = np.mgrid[0:camera.height, 0:camera.width]
    x = ((u + 0.5) / camera.width * 2 - 1) * half * camera.width / camera.height
    y = (1 - (v + 0.5) / camera.height * 2) * half
    return np.stack([x, y, -np.ones_like(x)], -1)


def _mujoco_shading(points, normals, eye, view_axis, colour, spots) -> np.ndarray:
    """(n, 3) uint8: `colour` at world `points` (n, 3), unit `normals`, as MuJoCo's defaults
    light it (sim/mujoco_scene.py keeps them): headlight along `view_axis` (the camera's z),
    ambient 0.1, diffuse 0.4, specular 0.5; each of `spots` ((position, unit direction)) cutoff
    45 deg, exponent 10, diffuse 0.7, specular 0.3; material specular 0.5, shininess 64."""
    to_eye = eye - points
    to_eye /= np.linalg.norm(to_eye, axis=1, keepdims=True)
    diffuse = 0.1 + 0.4 * np.maximum(normals @ view_axis, 0.0)
    specular = 0.25 * _blinn(view_axis + to_eye, normals)
    for position, direction in spots:
        to_light = position - points
        to_light /= np.linalg.norm(to_light, axis=1, keepdims=True)
        cosine = -(to_light @ direction)
        facing = np.einsum("ij,ij->i", to_light, normals)
        spot = np.where((cosine >= SPOT_COS_CUTOFF) & (facing > 0), _power(cosine, 10), 0.0)
        diffuse += 0.7 * spot * facing
        specular += 0.15 * spot * _blinn(to_light + to_eye, normals)
    shade = colour[None, :] * diffuse[:, None] + specular[:, None]
    return np.clip(shade * 255 + 0.5, 0, 255).astype(np.uint8)


def _blinn(half, normals) -> np.ndarray:
    """Blinn-Phong's (n . h)^64 for unnormalised half vectors `half`."""
    cosine = np.einsum("ij,ij->i", half, normals) / np.sqrt(np.einsum("ij,ij->i", half, half))
    return _power(cosine, 64)


def _power(x, n: int) -> np.ndarray:
    """max(x, 0)^n by squaring: numpy's float power is ~10x slower, and it runs per pixel."""
    result, x = 1.0, np.maximum(x, 0.0)
    while n:
        result, x, n = (result * x if n & 1 else result), x * x, n >> 1
    return result


def _current_egl(egl):
    """(display, draw surface, read surface, context) current in this thread (None without EGL)."""
    if egl is None:
        return None
    return (egl.eglGetCurrentDisplay(), egl.eglGetCurrentSurface(egl.EGL_DRAW),
            egl.eglGetCurrentSurface(egl.EGL_READ), egl.eglGetCurrentContext())


def _address(handle) -> int | None:
    """The value of an EGL handle: PyOpenGL gives a new wrapper object on every call."""
    return ctypes.cast(handle, ctypes.c_void_p).value


def _make_current(egl, handles) -> None:
    if egl is None or handles is None:
        return
    display, draw, read, context = handles
    if _address(context) is None:  # nothing was current: release whatever is now
        display = egl.eglGetCurrentDisplay()
        if _address(display) is not None:
            egl.eglMakeCurrent(display, egl.EGL_NO_SURFACE, egl.EGL_NO_SURFACE, egl.EGL_NO_CONTEXT)
        return
    egl.eglMakeCurrent(display, draw, read, context)


class _egl_current:
    """Within the block the EGL plugin's context is current; the thread's previous one after.
    `handles`: (PyOpenGL's EGL module or None, the plugin's handles), or None (tiny renderer)."""

    def __init__(self, handles):
        self._handles = handles
        self._before = None

    def __enter__(self):
        if self._handles is None or self._handles[0] is None:
            return
        egl, mine = self._handles
        before = _current_egl(egl)
        if _address(before[3]) != _address(mine[3]):
            self._before = before
            _make_current(egl, mine)

    def __exit__(self, *exc):
        if self._before is not None:
            _make_current(self._handles[0], self._before)
            self._before = None
