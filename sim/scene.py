"""The scene as engine-neutral data, and the world interface through which tasks act on it.

A task (tasks/) describes its scene with the dataclasses below: the table, the objects it
manipulates, visual-only markers, cameras and lights, and the robot standing at the origin. An
engine turns that description into its own model (sim/mujoco_scene.py for MuJoCo) and offers the
`World` protocol at run time (sim/mujoco_world.py), so the same task runs on any simulated
backend. Nothing here imports an engine.

Frames: every position and orientation is in the robot `base` frame (x toward the workspace,
z up), which in the simulated mirror coincides with the `world` frame: the robot base stands at
the origin, at z = 0, whatever the table height. The table top is the plane z = `Table.height`.
SI units (m, kg, s); angles in degrees only where a camera's field of view is concerned;
quaternions (w, x, y, z).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from controllers.rotations import matrix_to_quat

# The mirror's physics step (s). The impedance controller runs at 1 kHz on a real Panda and the
# mirror evaluates it every physics tick, so simulated and real control loops see the same period.
PHYSICS_TIMESTEP = 0.001

Vector3 = tuple[float, float, float]
Quaternion = tuple[float, float, float, float]
Colour = tuple[float, float, float, float]  # red, green, blue, alpha in [0, 1]


@dataclass(frozen=True)
class Table:
    """A box whose top face is the plane z = `height` (base frame)."""

    height: float = 0.0  # m, z of the table top; the robot base stays at z = 0
    half_size: Vector3 = (0.8, 0.8, 0.02)  # m, half extents
    center_xy: tuple[float, float] = (0.45, 0.0)  # m, centre of the top face
    friction: Vector3 = (1.0, 0.005, 0.0001)  # sliding, torsional (m), rolling (m)
    colour: Colour = (0.55, 0.45, 0.35, 1.0)

    def center(self) -> Vector3:
        """Centre of the table's box (base frame, m)."""
        return (self.center_xy[0], self.center_xy[1], self.height - self.half_size[2])


@dataclass(frozen=True)
class Box:
    """A free rigid box (an object the robot manipulates), initially at `position` at rest."""

    name: str
    half_size: Vector3  # m, half extents along the box's own axes
    mass: float  # kg
    colour: Colour
    position: Vector3  # m, centre, base frame
    quaternion: Quaternion = (1.0, 0.0, 0.0, 0.0)  # orientation, base frame
    friction: Vector3 = (1.0, 0.01, 0.001)  # sliding, torsional (m), rolling (m)


@dataclass(frozen=True)
class Marker:
    """A visual-only sphere (collides with nothing), e.g. a reach goal."""

    name: str
    position: Vector3  # m, base frame
    radius: float = 0.01  # m
    colour: Colour = (0.2, 0.8, 0.2, 0.6)


@dataclass(frozen=True)
class Camera:
    """A camera as data; sim/mujoco_cameras.py renders it in the MuJoCo mirror.

    Frames: the camera frame is x right, y up in the image, and the camera looks along its -z
    axis (the OpenGL / MuJoCo convention). Its pose is given in the `reference frame`: the robot
    `base` frame for a world-fixed camera (`attached_to=None`), or the frame of the body named by
    `attached_to` (e.g. "panda_hand", the Franka Hand's frame: origin at the flange, z along the
    approach direction toward the fingertips, the fingers opening along +-y), in which case the
    camera moves with that body (a wrist camera). Give its orientation either as `quaternion`
    (w, x, y, z: camera frame -> reference frame) or as a point to `look_at` (reference frame)."""

    name: str
    position: Vector3  # m, reference frame
    look_at: Vector3 | None = None  # m, reference frame; the image centre sees this point
    quaternion: Quaternion | None = None  # (w, x, y, z), camera frame -> reference frame
    fovy: float = 45.0  # degrees, vertical field of view
    width: int = 128  # px
    height: int = 128  # px
    attached_to: str | None = None  # body the camera rides on; None: fixed in the base frame

    def __post_init__(self):
        if (self.look_at is None) == (self.quaternion is None):
            raise ValueError(f"camera {self.name!r}: give exactly one of look_at and quaternion")
        if not (0.0 < self.fovy < 180.0):
            raise ValueError(f"camera {self.name!r}: fovy is the vertical field of view in degrees, "
                             f"in (0, 180); got {self.fovy}")
        if int(self.width) != self.width or int(self.height) != self.height or self.width < 1 or self.height < 1:
            raise ValueError(f"camera {self.name!r}: width and height are whole pixels >= 1, got "
                             f"{self.width} x {self.height}")

    def orientation(self) -> np.ndarray:
        """Quaternion (w, x, y, z) of the camera frame in its reference frame (base frame, or the
        `attached_to` body's frame). With `look_at`, the image stays upright with respect to the
        reference frame's z axis: the camera's x (right) axis is horizontal in that frame;
        looking straight along -z it is the reference frame's +y."""
        if self.quaternion is not None:
            return np.asarray(self.quaternion, dtype=float)
        backward = np.asarray(self.position, float) - np.asarray(self.look_at, float)
        if np.linalg.norm(backward) < 1e-9:
            raise ValueError(f"camera {self.name!r}: look_at equals the camera position")
        backward /= np.linalg.norm(backward)
        right = np.cross([0.0, 0.0, 1.0], backward)
        if np.linalg.norm(right) > 1e-9:
            right = right / np.linalg.norm(right)
        else:  # looking along +-z: no horizontal direction is preferred, take +y
            right = np.array([0.0, 1.0, 0.0])
        up = np.cross(backward, right)
        return matrix_to_quat(np.column_stack([right, up, backward]))


@dataclass(frozen=True)
class Light:
    """A directional-looking spot light (rendering only)."""

    name: str
    position: Vector3  # m, base frame
    direction: Vector3  # pointing direction, base frame (need not be unit length)


DEFAULT_LIGHTS = (
    Light("key", (0.5, -0.5, 1.5), (0.0, 0.3, -1.0)),
    Light("fill", (-0.5, 0.5, 2.0), (0.3, 0.0, -1.0)),
)


@dataclass(frozen=True)
class Scene:
    """Everything an engine needs to build a task's world besides the robot's own description."""

    robot: str = "panda"  # the robot standing at the base-frame origin
    table: Table = field(default_factory=Table)
    objects: tuple[Box, ...] = ()
    markers: tuple[Marker, ...] = ()
    cameras: tuple[Camera, ...] = ()
    lights: tuple[Light, ...] = DEFAULT_LIGHTS
    physics_timestep: float = PHYSICS_TIMESTEP  # s

    def __post_init__(self):
        names = [item.name for group in (self.objects, self.markers, self.cameras, self.lights)
                 for item in group]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"scene names must be unique; repeated: {repeated}")
        if "table" in names:
            raise ValueError("'table' is the table's name; give the object another one")


class World(Protocol):
    """What a task may read and change in a running simulated world (the backend's `world`).

    Positions are in the robot `base` frame (= the simulator's world frame in the mirror), m;
    quaternions (w, x, y, z), base frame. Names are those of the task's `Scene`. On a real arm no
    world exists: perception or a person does a task's resets and observations there."""

    def object_pose(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(position (3,), quaternion (4,)) of the object's centre: fresh copies."""
        ...

    def set_object_pose(self, name: str, position, quaternion) -> None:
        """Teleport the object there, at rest (zero velocity)."""
        ...

    def object_mass(self, name: str) -> float:
        """The object's mass (kg)."""
        ...

    def set_object_mass(self, name: str, mass: float) -> None:
        """Change the object's mass (kg), inertia scaled with it (same shape, uniform density)."""
        ...

    def marker_position(self, name: str) -> np.ndarray:
        """Position (3,) of a marker: a fresh copy."""
        ...

    def set_marker_position(self, name: str, position) -> None:
        ...
