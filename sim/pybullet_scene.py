"""A `sim.scene.Scene` built in PyBullet: the Panda from the shared description, its table, the
task's boxes and markers, and the `sim.scene.World` interface on them (`PybulletWorld`).

The robot is the `franka_panda/panda.urdf` of `pybullet_data`, the very file the MuJoCo mirror
compiles (sim/panda_model.py), patched in memory before PyBullet reads it, with the same fixes:

* Inertias: the URDF's placeholders (0.1 kg m^2 on every axis) are replaced by the identified
  inertials MuJoCo uses (`panda_model._INERTIALS`: mass, centre of mass, full tensor), and the
  URDF is loaded with URDF_USE_INERTIA_FROM_FILE. PyBullet diagonalises a full tensor itself and
  turns the inertial frame onto its principal axes (what MuJoCo does at compile time), so no
  approximation is made; tests/sim/test_pybullet_backend.py compares the two mass matrices.
  (p.changeDynamics could set only the diagonal, not the principal axes: hence the patch.)
* Finger pads: the same box pads on the fingertips as in MuJoCo (same size and place).
* Collisions: only link7, the hand and the fingers collide, with the scene only (no self
  collision), as in MuJoCo (`panda_model.COLLIDING_LINKS`).

Frames and units as in sim/scene.py: base frame = PyBullet's world frame, the robot base at the
origin; SI units. PyBullet's quaternions are (x, y, z, w); everything here takes and returns
(w, x, y, z) and converts at the boundary.
"""

from __future__ import annotations

import math
import os
import tempfile
import xml.etree.ElementTree as ElementTree

import numpy as np
import pybullet as p

from controllers._kernels import jit
from sim import panda_model
from sim.scene import Box, Marker, Scene, Table

# Fingertip pads: centre in the finger frame (m) and half extents, as in panda_model.panda_spec.
PAD_POSITION = (0.0, 0.0045, 0.044)
PAD_HALF_SIZE = (0.0095, 0.0045, 0.0095)
SOLVER_ITERATIONS = 10  # Bullet's default: 50
SOLVER_RESIDUAL = 1e-4  # the solver stops below this residual (Bullet's default: 1e-7)


def to_pybullet_quaternion(quaternion) -> list[float]:
    """(w, x, y, z) -> PyBullet's (x, y, z, w)."""
    w, x, y, z = (float(v) for v in quaternion)
    return [x, y, z, w]


def from_pybullet_quaternion(quaternion) -> np.ndarray:
    """PyBullet's (x, y, z, w) -> (w, x, y, z)."""
    x, y, z, w = quaternion
    return np.array([w, x, y, z])


def patched_panda_urdf() -> str:
    """The shared Panda URDF as text, with the identified inertials and the fingertip pads, mesh
    paths made absolute (the text is loaded from a temporary file elsewhere)."""
    path = panda_model.panda_urdf_path()
    root_dir = os.path.dirname(path)
    robot = ElementTree.parse(path).getroot()
    for link in robot.iter("link"):
        name = link.get("name")
        for mesh in link.iter("mesh"):
            mesh.set("filename", os.path.join(root_dir, mesh.get("filename").replace("package://", "")))
        if name in panda_model._INERTIALS:
            mass, com, (ixx, iyy, izz, ixy, ixz, iyz) = panda_model._INERTIALS[name]
            for old in link.findall("inertial"):
                link.remove(old)
            inertial = ElementTree.SubElement(link, "inertial")
            ElementTree.SubElement(inertial, "origin", xyz=" ".join(repr(v) for v in com), rpy="0 0 0")
            ElementTree.SubElement(inertial, "mass", value=repr(mass))
            ElementTree.SubElement(inertial, "inertia", ixx=repr(ixx), iyy=repr(iyy), izz=repr(izz),
                                   ixy=repr(ixy), ixz=repr(ixz), iyz=repr(iyz))
        if name in ("panda_leftfinger", "panda_rightfinger"):
            side = 1.0 if name == "panda_leftfinger" else -1.0
            pad = ElementTree.SubElement(link, "collision")
            x, y, z = PAD_POSITION
            ElementTree.SubElement(pad, "origin", xyz=f"{x} {side * y} {z}", rpy="0 0 0")
            geometry = ElementTree.SubElement(pad, "geometry")
            ElementTree.SubElement(geometry, "box", size=" ".join(repr(2 * h) for h in PAD_HALF_SIZE))
    return ElementTree.tostring(robot, encoding="unicode")


def load_panda(client: int) -> int:
    """The patched Panda on a fixed base at the origin; returns its body id."""
    handle, path = tempfile.mkstemp(suffix=".urdf", prefix="robostack_panda_")
    try:
        with os.fdopen(handle, "w") as f:
            f.write(patched_panda_urdf())
        flags = p.URDF_USE_INERTIA_FROM_FILE
        robot = p.loadURDF(path, [0, 0, 0], [0, 0, 0, 1], useFixedBase=True, flags=flags,
                           physicsClientId=client)
    finally:
        os.remove(path)
    return robot


class TcpChain:
    """Forward kinematics and Jacobian of the tcp in double precision, from the URDF's joint
    origins: PyBullet returns link poses in single precision (getLinkState's positions are
    quantised to ~3e-8 m), too coarse for a 1e-5 finite-difference check of the Jacobian and
    for a controller differencing poses. The chain base -> panda_grasptarget: each joint a fixed
    origin transform, the seven revolute ones then rotating about their own z axis."""

    def __init__(self, urdf_path: str, tip: str = "panda_grasptarget"):
        by_child = {j.find("child").get("link"): j for j in ElementTree.parse(urdf_path).getroot().iter("joint")}
        chain, link = [], tip
        while link in by_child:
            joint = by_child[link]
            chain.append(joint)
            link = joint.find("parent").get("link")
        self._steps = []  # (rotation (3, 3), translation (3,), revolute)
        for joint in reversed(chain):
            origin = joint.find("origin")
            xyz = [float(v) for v in origin.get("xyz", "0 0 0").split()]
            rpy = [float(v) for v in origin.get("rpy", "0 0 0").split()]
            revolute = joint.get("type") == "revolute"
            if revolute and joint.find("axis").get("xyz").split() != ["0", "0", "1"]:
                raise ValueError(f"{joint.get('name')}: only joints about their z axis are handled")
            self._steps.append((panda_model._rpy_matrix(*rpy), np.array(xyz), revolute))
        self._rotations = np.array([rotation for rotation, _, _ in self._steps])
        self._translations = np.array([translation for _, translation, _ in self._steps])
        self._revolute = np.array([revolute for *_, revolute in self._steps])
        if self._revolute.sum() != 7:
            raise ValueError(f"the chain to {tip} must have 7 revolute joints")
        self._axes = np.zeros((7, 3))  # scratch of the kernel: joint axes and origins, base frame
        self._origins = np.zeros((7, 3))
        self._frame = np.zeros((3, 3))
        self.compute(np.zeros(7), np.zeros(3), np.eye(3), np.zeros((6, 7)))  # compile now

    def compute(self, q, position: np.ndarray, rotation: np.ndarray, jacobian: np.ndarray) -> None:
        """Fill the tcp position (3,), rotation (3, 3) and Jacobian (6, 7) for joint angles q
        (7 floats, an array). Compiled (numba): in Python, even on plain floats, this was the
        costliest part of a tick after the physics (~50 us of ~190)."""
        _chain_kernel(self._rotations, self._translations, self._revolute, np.asarray(q, float),
                      position, rotation, jacobian, self._axes, self._origins, self._frame)


@jit
def _chain_kernel(rotations, translations, revolute, q, position, rotation, jacobian, axes, origins,
                  frame):
    """The chain's pose and Jacobian into position, rotation, jacobian (axes, origins, frame:
    scratch). Each step: translate by the origin in the current frame, turn by the origin's
    rotation, then, for a revolute joint, record its axis (z) and origin and turn by Rz(q)."""
    for a in range(3):
        position[a] = 0.0
        for b in range(3):
            rotation[a, b] = 1.0 if a == b else 0.0
    i = 0
    for k in range(rotations.shape[0]):
        for a in range(3):
            position[a] += (rotation[a, 0] * translations[k, 0] + rotation[a, 1] * translations[k, 1]
                            + rotation[a, 2] * translations[k, 2])
        for a in range(3):
            for b in range(3):
                frame[a, b] = (rotation[a, 0] * rotations[k, 0, b] + rotation[a, 1] * rotations[k, 1, b]
                               + rotation[a, 2] * rotations[k, 2, b])
        rotation[:, :] = frame
        if revolute[k]:
            cq, sq = math.cos(q[i]), math.sin(q[i])
            for a in range(3):
                axes[i, a] = rotation[a, 2]
                origins[i, a] = position[a]
                # R @ Rz(q): columns x, y become c x + s y and c y - s x.
                x, y = rotation[a, 0], rotation[a, 1]
                rotation[a, 0] = cq * x + sq * y
                rotation[a, 1] = cq * y - sq * x
            i += 1
    for j in range(7):
        ax, ay, az = axes[j, 0], axes[j, 1], axes[j, 2]
        dx, dy, dz = position[0] - origins[j, 0], position[1] - origins[j, 1], position[2] - origins[j, 2]
        jacobian[0, j] = ay * dz - az * dy
        jacobian[1, j] = az * dx - ax * dz
        jacobian[2, j] = ax * dy - ay * dx
        jacobian[3, j] = ax
        jacobian[4, j] = ay
        jacobian[5, j] = az


def joint_indices(robot: int, client: int) -> tuple[dict[str, int], dict[str, int]]:
    """(joint name -> index, link name -> index) of the loaded robot (a link's index is that of
    the joint above it; the base link is -1)."""
    joints, links = {}, {}
    for j in range(p.getNumJoints(robot, physicsClientId=client)):
        info = p.getJointInfo(robot, j, physicsClientId=client)
        joints[info[1].decode()] = j
        links[info[12].decode()] = j
    links[p.getBodyInfo(robot, physicsClientId=client)[0].decode()] = -1
    return joints, links


def build_scene(scene: Scene, client: int) -> tuple[int, "PybulletWorld"]:
    """Build `scene` in the (empty) physics client: robot, table, objects, markers. Returns the
    robot's body id and the world interface. Cameras and lights are not built (no renderer yet)."""
    if scene.robot != "panda":
        raise ValueError(f"unknown robot {scene.robot!r}: the PyBullet mirror has ['panda']")
    p.setTimeStep(scene.physics_timestep, physicsClientId=client)
    p.setGravity(0, 0, -9.81, physicsClientId=client)
    # The constraint solver is most of a PyBullet tick: 10 iterations instead of 50, leaving the
    # loop once the residual is below 1e-4. Cone friction stays: with Bullet's two-row pyramid
    # the contact forces it reports gave a held cube's weight as ~0 N (external_wrench).
    p.setPhysicsEngineParameter(numSolverIterations=SOLVER_ITERATIONS,
                                solverResidualThreshold=SOLVER_RESIDUAL, physicsClientId=client)
    robot = load_panda(client)
    _, links = joint_indices(robot, client)
    for name, link in links.items():
        colliding = name in panda_model.COLLIDING_LINKS
        # Group 2 = robot, 1 = scene: robot links collide with the scene only.
        p.setCollisionFilterGroupMask(robot, link, 2 if colliding else 0, 1 if colliding else 0,
                                      physicsClientId=client)
    table = _add_table(scene.table, client)
    objects = {box.name: _add_box(box, client) for box in scene.objects}
    markers = {marker.name: _add_marker(marker, client) for marker in scene.markers}
    return robot, PybulletWorld(client, objects, markers, table)


def _set_friction(body: int, friction, client: int) -> None:
    sliding, torsional, rolling = friction
    p.changeDynamics(body, -1, lateralFriction=sliding, spinningFriction=torsional,
                     rollingFriction=rolling, physicsClientId=client)


def _scene_filter(body: int, client: int) -> None:
    p.setCollisionFilterGroupMask(body, -1, 1, 3, physicsClientId=client)  # scene: hits all


def _add_table(table: Table, client: int) -> int:
    shape = p.createCollisionShape(p.GEOM_BOX, halfExtents=list(table.half_size), physicsClientId=client)
    visual = p.createVisualShape(p.GEOM_BOX, halfExtents=list(table.half_size),
                                 rgbaColor=list(table.colour), physicsClientId=client)
    body = p.createMultiBody(0.0, shape, visual, list(table.center()), physicsClientId=client)
    _set_friction(body, table.friction, client)
    _scene_filter(body, client)
    return body


def _add_box(box: Box, client: int) -> int:
    shape = p.createCollisionShape(p.GEOM_BOX, halfExtents=list(box.half_size), physicsClientId=client)
    visual = p.createVisualShape(p.GEOM_BOX, halfExtents=list(box.half_size),
                                 rgbaColor=list(box.colour), physicsClientId=client)
    body = p.createMultiBody(box.mass, shape, visual, list(box.position),
                             to_pybullet_quaternion(box.quaternion), physicsClientId=client)
    _set_friction(body, box.friction, client)
    # Bullet's default velocity damping (0.04) would slow a falling or sliding box; MuJoCo has none.
    p.changeDynamics(body, -1, linearDamping=0.0, angularDamping=0.0, physicsClientId=client)
    _scene_filter(body, client)
    return body


def _add_marker(marker: Marker, client: int) -> int:
    visual = p.createVisualShape(p.GEOM_SPHERE, radius=marker.radius, rgbaColor=list(marker.colour),
                                 physicsClientId=client)
    return p.createMultiBody(0.0, -1, visual, list(marker.position), physicsClientId=client)


class PybulletWorld:
    """`sim.scene.World` on a PyBullet scene: objects are the boxes' bodies (by scene name),
    markers visual-only spheres. Reads are of the current simulation state; writes apply at once."""

    def __init__(self, client: int, objects: dict[str, int], markers: dict[str, int], table: int):
        self.client = client
        self.table = table
        self._objects = objects
        self._markers = markers

    def _object(self, name: str) -> int:
        try:
            return self._objects[name]
        except KeyError:
            raise KeyError(f"no object {name!r} in this scene; objects: {sorted(self._objects)}") from None

    def _marker(self, name: str) -> int:
        try:
            return self._markers[name]
        except KeyError:
            raise KeyError(f"no marker {name!r} in this scene; markers: {sorted(self._markers)}") from None

    # --- objects -------------------------------------------------------------------------------
    def object_pose(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        # A box's centre is its base frame: its inertial frame is not offset (uniform box).
        position, quaternion = p.getBasePositionAndOrientation(self._object(name), physicsClientId=self.client)
        return np.array(position), from_pybullet_quaternion(quaternion)

    def set_object_pose(self, name: str, position, quaternion) -> None:
        position = np.asarray(position, dtype=float)
        quaternion = np.asarray(quaternion, dtype=float)
        if position.shape != (3,) or quaternion.shape != (4,):
            raise ValueError(f"object pose: position (3,) and quaternion (4,) expected, got "
                             f"{position.shape} and {quaternion.shape}")
        body = self._object(name)
        quaternion = quaternion / np.linalg.norm(quaternion)
        p.resetBasePositionAndOrientation(body, position.tolist(), to_pybullet_quaternion(quaternion),
                                          physicsClientId=self.client)
        p.resetBaseVelocity(body, [0, 0, 0], [0, 0, 0], physicsClientId=self.client)

    def object_mass(self, name: str) -> float:
        return float(p.getDynamicsInfo(self._object(name), -1, physicsClientId=self.client)[0])

    def set_object_mass(self, name: str, mass: float) -> None:
        """Scale the mass and inertia together (same shape, uniform density)."""
        if not (np.isfinite(mass) and mass > 0):
            raise ValueError(f"object {name!r}: mass must be > 0 kg, got {mass}")
        body = self._object(name)
        info = p.getDynamicsInfo(body, -1, physicsClientId=self.client)
        old_mass, inertia = float(info[0]), np.asarray(info[2], float)
        p.changeDynamics(body, -1, mass=float(mass), localInertiaDiagonal=(inertia * (mass / old_mass)).tolist(),
                         physicsClientId=self.client)

    # --- markers -------------------------------------------------------------------------------
    def marker_position(self, name: str) -> np.ndarray:
        return np.array(p.getBasePositionAndOrientation(self._marker(name), physicsClientId=self.client)[0])

    def set_marker_position(self, name: str, position) -> None:
        position = np.asarray(position, dtype=float)
        if position.shape != (3,):
            raise ValueError(f"marker position: (3,) expected, got {position.shape}")
        p.resetBasePositionAndOrientation(self._marker(name), position.tolist(), [0, 0, 0, 1],
                                          physicsClientId=self.client)
