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

Renderer (`self.renderer`): PyBullet's CPU "tiny renderer" (ER_TINY_RENDERER) by default, or,
asked for, its EGL plugin (ER_BULLET_HARDWARE_OPENGL through EGL, which Mesa's llvmpipe provides
without a display or a GPU). Measured on this project's 2-core machine, busy with training runs
(tests/sim/test_pybullet_cameras.py prints it): 128 x 128, EGL 48-60 ms a frame, tiny 16-18 ms,
MuJoCo 0.5-1 ms. The EGL plugin renders its whole offscreen window whatever the image size (32 px
cost as much as 512 px), so on a CPU it is the slower one; on a GPU it is the one to use.
Lighting: the tiny renderer is lit from the scene's first `Light`; the EGL plugin draws shadows
whatever it is asked, so it is lit from straight above, where they hide under what casts them.
Colours differ a little between the renderers and from MuJoCo; the geometry does not.

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
from sim.scene import Camera, Light, Scene

# Clip planes (m). MuJoCo's defaults are 0.01 and 50 times the model's extent
# (`vis.map.znear`, `vis.map.zfar`, `stat.extent`); every task scene has the same table and
# robot, hence the same extent, 2.328 m (checked against the compiled scene in the tests).
MUJOCO_EXTENT = 2.328  # m
NEAR = 0.01 * MUJOCO_EXTENT
FAR = 50.0 * MUJOCO_EXTENT

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
        self._light = _light_direction(scene.lights)
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
                self._render_robot, self._render_bodies = build_render_scene(scene, self._render_client)
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
            # The EGL plugin draws shadows whatever `shadow` says, and MuJoCo's cameras draw none.
            # Lit from straight above, a shadow falls right under what casts it, hidden from both
            # cameras (a light from the scene's key light laid the arm's shadow across the table;
            # a headlight showed the shadow map's edges as dark bands).
            keywords = {"lightDirection": [0.0, 0.0, 1.0], "shadow": 0}
        else:
            keywords = {"lightDirection": self._light, "shadow": 0}
        with _egl_current(self._egl):
            self._sync()
            _, _, rgba, _, _ = p.getCameraImage(camera.width, camera.height, view, self._projection[name],
                                                renderer=self._flag, flags=p.ER_NO_SEGMENTATION_MASK,
                                                physicsClientId=self._render_client, **keywords)
        # Top row first already (PyBullet flips OpenGL's bottom-up read-back itself).
        return np.ascontiguousarray(np.reshape(rgba, (camera.height, camera.width, 4))[..., :3], dtype=np.uint8)

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


def build_render_scene(scene: Scene, client: int) -> tuple[int, dict[str, int]]:
    """What the cameras see of `scene`, built in the (empty) render client: the Panda with its
    low-poly collision meshes as visuals (MuJoCo's "coarse" visuals, sim/panda_model.py: 3,640
    triangles against the visual meshes' 103,191, which a software renderer pays for per
    triangle), the table, boxes and markers as visual-only bodies (nothing is simulated here).
    Returns the robot's body id and {object or marker name: body id}."""
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
    visual_body(p.createVisualShape(p.GEOM_BOX, halfExtents=list(table.half_size), rgbaColor=list(table.colour),
                                    physicsClientId=client), table.center())
    bodies = {}
    for box in scene.objects:
        bodies[box.name] = visual_body(p.createVisualShape(p.GEOM_BOX, halfExtents=list(box.half_size),
                                                           rgbaColor=list(box.colour), physicsClientId=client),
                                       box.position, box.quaternion)
    for marker in scene.markers:
        bodies[marker.name] = visual_body(p.createVisualShape(p.GEOM_SPHERE, radius=marker.radius,
                                                              rgbaColor=list(marker.colour), physicsClientId=client),
                                          marker.position)
    return robot, bodies


def _view_matrix(position: np.ndarray, rotation: np.ndarray) -> list[float]:
    """OpenGL view matrix (16 floats, column-major) of a camera at `position` with frame
    `rotation` (x right, y up, looking along -z: OpenGL's own camera frame, nothing flipped):
    world -> camera, the inverse of the camera's pose."""
    view = np.eye(4)
    view[:3, :3] = rotation.T
    view[:3, 3] = -rotation.T @ position
    return view.T.reshape(-1).tolist()  # column-major = the transpose's rows


def _light_direction(lights: Sequence[Light]) -> list[float]:
    """The tiny renderer's light: a direction toward the light (PyBullet's convention), from
    the scene's first light (it pointing along `direction`); from above if there is none."""
    if not lights:
        return [0.0, 0.0, 1.0]
    direction = -np.asarray(lights[0].direction, float)
    return (direction / np.linalg.norm(direction)).tolist()


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
