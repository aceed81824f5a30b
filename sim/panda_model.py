"""The Franka Panda as MuJoCo sees it, built from the one robot description both mirrors share.

Source of truth: the `franka_panda/panda.urdf` that ships inside `pybullet_data` (so the PyBullet
mirror loads the very same file). MuJoCo compiles that URDF once its `package://` mesh paths are
rewritten; everything the URDF gets wrong for dynamics is patched here, in one place:

* Inertias. The URDF carries placeholder inertias (0.1 kg m^2 on every axis, even on a 0.2 kg
  link), which make the wrist absurdly sluggish. We substitute the identified parameters of
  Gaz et al., "Dynamic Identification of the Franka Emika Panda Robot" (RA-L 2019), the same
  numbers MuJoCo Menagerie's panda uses. Link frames of the URDF and of that paper agree.
* Joint damping and rotor inertia ("armature"), so the unactuated arm does not ring.
* Gravity compensation. A real Panda compensates gravity inside its firmware; commanded torques
  exclude it. MuJoCo's per-body `gravcomp` does exactly that, so one controller drives both.
* Actuators: seven torque motors clamped to the Panda's rated torques, and one position servo on
  a tendon coupling the two fingers (the URDF's `mimic`, which MuJoCo's importer ignores).
* Finger pads: box collision geoms on the fingertips. Grasping with the convex hulls of the
  finger meshes is unreliable; the real fingertips are rubber pads too.
* Visual meshes (what cameras see), one of `VISUALS`, as geoms in `VISUAL_GROUP` that collide
  with nothing (contype = conaffinity = 0) and add no mass (every body's inertial is explicit):
  - "coarse" (the default): every link's low-poly collision mesh the package ships (3,640
    triangles in all), drawn as its visual. The package's visual meshes have 103,191 triangles,
    and software rendering (Mesa llvmpipe, the headless renderer on a machine without a GPU)
    pays per triangle: 10 ms a frame for them against 0.6 ms for the rest of the scene, which
    would cap a two-camera env at under 50 steps/s. At 128 x 128 px the difference is a few
    pixels along the silhouettes.
  - "full": the URDF's visual OBJs. MuJoCo's importer reads only the first material group of a
    multi-material OBJ (link5's visual mesh compiles with 250 of its 18,327 triangles), so they
    are read here instead, split by material colour into one mesh each.
  - "none": no visual meshes: the model as it was before cameras (collision geometry of link7,
    hand and fingers only). The tests check that all three have the very same dynamics.
  Collision geoms move to `COLLISION_GROUP`, which cameras do not render; their shapes and
  contact classes are unchanged.

Frames (all right-handed, SI units):
* `world` - the simulation world. The robot base frame `base` (= `panda_link0`) coincides with
  it: z up, x pointing away from the robot's cable side toward the workspace.
* `tcp` - a site at `panda_grasptarget`, 0.105 m beyond the flange along the flange z axis,
  between the fingertips. Its z axis points out of the gripper (down, at the home pose).
Quaternions are (w, x, y, z), MuJoCo's order.
"""

from __future__ import annotations

import functools
import os
import xml.etree.ElementTree as ElementTree

import mujoco
import numpy as np

from controllers import franka
from controllers.rotations import matrix_to_quat

ARM_JOINTS = tuple(f"panda_joint{i}" for i in range(1, 8))
FINGER_JOINTS = ("panda_finger_joint1", "panda_finger_joint2")
TCP_SITE = "tcp"

# Rated joint torques (Nm) and position limits (rad): the datasheet values the controllers use.
TORQUE_LIMITS = np.array(franka.TORQUE_LIMITS)
JOINT_LOWER = np.array(franka.JOINT_LOWER)
JOINT_UPPER = np.array(franka.JOINT_UPPER)
HOME_Q = np.array(franka.HOME_Q)  # rad, the nullspace posture and default reset target
GRIPPER_MAX_WIDTH = franka.GRIPPER_MAX_WIDTH  # m, fully open (0.04 per finger)

# Identified inertial parameters (Gaz et al. 2019): mass (kg), centre of mass in the link frame
# (m), full inertia (Ixx, Iyy, Izz, Ixy, Ixz, Iyz) about the centre of mass (kg m^2).
_INERTIALS = {
    "panda_link0": (0.629769, (-0.041018, -0.00014, 0.049974),
                    (0.00315, 0.00388, 0.004285, 8.2904e-07, 0.00015, 8.2299e-06)),
    "panda_link1": (4.970684, (0.003875, 0.002081, -0.04762),
                    (0.70337, 0.70661, 0.009117, -0.000139, 0.006772, 0.019169)),
    "panda_link2": (0.646926, (-0.003141, -0.02872, 0.003495),
                    (0.007962, 0.02811, 0.025995, -0.003925, 0.010254, 0.000704)),
    "panda_link3": (3.228604, (0.027518, 0.039252, -0.066502),
                    (0.037242, 0.036155, 0.01083, -0.004761, -0.011396, -0.012805)),
    "panda_link4": (3.587895, (-0.05317, 0.104419, 0.027454),
                    (0.025853, 0.019552, 0.028323, 0.007796, -0.001332, 0.008641)),
    "panda_link5": (1.225946, (-0.011953, 0.041065, -0.038437),
                    (0.035549, 0.029474, 0.008627, -0.002117, -0.004037, 0.000229)),
    "panda_link6": (1.666555, (0.060149, -0.014117, -0.010517),
                    (0.001964, 0.004354, 0.005433, 0.000109, -0.001158, 0.000341)),
    "panda_link7": (0.735522, (0.010517, -0.004252, 0.061597),
                    (0.012516, 0.010027, 0.004815, -0.000428, -0.001196, -0.000741)),
    "panda_hand": (0.73, (-0.01, 0.0, 0.03), (0.001, 0.0025, 0.0017, 0.0, 0.0, 0.0)),
    "panda_leftfinger": (0.015, (0.0, 0.01, 0.02), (2.375e-6, 2.375e-6, 7.5e-7, 0.0, 0.0, 0.0)),
    "panda_rightfinger": (0.015, (0.0, -0.01, 0.02), (2.375e-6, 2.375e-6, 7.5e-7, 0.0, 0.0, 0.0)),
}
ARM_DAMPING = 1.0  # Nm s/rad, viscous joint friction of the order identified on real Pandas
ARM_ARMATURE = 0.1  # kg m^2, reflected rotor inertia; also keeps the wrist numerically stiff
FINGER_DAMPING = 10.0  # N s/m
GRIPPER_FORCE_LIMIT = 70.0  # N, the Franka Hand's continuous grasp force
GRIPPER_KP = 2000.0  # N/m of tendon (per-finger opening) error

# Collision classes: robot geoms collide with the scene but not with each other (self-collision
# of adjacent links is meaningless here and costs time every physics step). Only the links that
# can touch the workspace (link7, hand, fingers) collide at all: collision tests of the upper arm
# doubled the cost of a physics step, and the safety box keeps the upper arm off the table.
ROBOT_CONTYPE, ROBOT_CONAFFINITY = 1, 0
SCENE_CONTYPE, SCENE_CONAFFINITY = 1, 1
COLLIDING_LINKS = ("panda_link7", "panda_hand", "panda_leftfinger", "panda_rightfinger")

# Geom groups (MuJoCo renders a geom when its group is enabled in the scene options): scene
# geoms (table, objects) stay in group 0; the robot's visual meshes and its collision geoms are
# kept apart so a camera can draw the one without the other (they overlap: drawing both costs
# twice the triangles and z-fights). The tcp site goes in `COLLISION_GROUP` too: a camera image
# of the real arm has no marker at the tcp.
VISUAL_GROUP = 2
COLLISION_GROUP = 3
VISUALS = ("coarse", "full", "none")


def panda_urdf_path() -> str:
    """Path of the shared Panda description (shipped by the `pybullet_data` package)."""
    try:
        import pybullet_data
    except ImportError as error:  # pragma: no cover - pybullet is a core dependency
        raise ImportError(
            "The Panda description ships with pybullet's data package: pip install pybullet"
        ) from error
    return os.path.join(pybullet_data.getDataPath(), "franka_panda", "panda.urdf")


def panda_spec(visual: str = "coarse") -> mujoco.MjSpec:
    """An editable MuJoCo spec of the Panda (arm + hand), dynamics patched as described above;
    `visual`: which meshes cameras see, one of `VISUALS` (see the module docstring)."""
    if visual not in VISUALS:
        raise ValueError(f"visual must be one of {VISUALS}, got {visual!r}")
    visual_meshes = visual != "none"
    urdf_path = panda_urdf_path()
    root = os.path.dirname(urdf_path)
    with open(urdf_path) as f:
        urdf = f.read()
    urdf = urdf.replace("package://", root + "/")
    # MuJoCo-specific compiler options live in a <mujoco> element inside the URDF.
    urdf = urdf.replace(
        '<robot name="panda" xmlns:xacro="http://www.ros.org/wiki/xacro">',
        '<robot name="panda"><mujoco><compiler discardvisual="true" fusestatic="false" '
        'strippath="false" balanceinertia="true"/></mujoco>',
    )
    spec = mujoco.MjSpec.from_string(urdf)

    for body in spec.bodies:
        if body.name in _INERTIALS:
            mass, com, (ixx, iyy, izz, ixy, ixz, iyz) = _INERTIALS[body.name]
            body.explicitinertial = True
            body.mass = mass
            body.ipos = com
            body.iquat = [1, 0, 0, 0]
            body.fullinertia = [ixx, iyy, izz, ixy, ixz, iyz]
        if body.name.startswith("panda_"):
            body.gravcomp = 1.0
    for geom in list(spec.geoms):
        if geom.parent.name in COLLIDING_LINKS:
            geom.contype, geom.conaffinity = ROBOT_CONTYPE, ROBOT_CONAFFINITY
            geom.group = COLLISION_GROUP
        elif visual_meshes:
            # The compiler would discard it (discardvisual) were it not switched off below.
            spec.delete(geom)
        else:
            geom.contype, geom.conaffinity = 0, 0  # discarded by the compiler (discardvisual)
    if visual_meshes:
        # discardvisual drops every geom that collides with nothing: the visual meshes are such
        # geoms. The URDF importer already skipped the URDF's visual elements; the collision
        # meshes of links 0-6 collide with nothing here and were deleted above with their assets.
        spec.compiler.discardvisual = False
        used = {geom.meshname for geom in spec.geoms}
        for mesh in list(spec.meshes):
            if mesh.name not in used:
                spec.delete(mesh)
        _add_visual_meshes(spec, urdf_path, visual)

    for name in ARM_JOINTS:
        joint = spec.joint(name)
        joint.damping = [ARM_DAMPING, 0.0, 0.0]  # MuJoCo 4: [linear, quadratic, cubic]
        joint.armature = ARM_ARMATURE
    for name in FINGER_JOINTS:
        joint = spec.joint(name)
        joint.damping = [FINGER_DAMPING, 0.0, 0.0]
        joint.armature = 0.01

    for name, limit in zip(ARM_JOINTS, TORQUE_LIMITS):
        motor = spec.add_actuator(name=name.replace("joint", "torque"), target=name)
        motor.trntype = mujoco.mjtTrn.mjTRN_JOINT
        motor.ctrllimited = True
        motor.ctrlrange = [-limit, limit]

    # Both fingers move together: a tendon measuring the mean finger opening (= width / 2),
    # driven by a force-limited position servo, and an equality keeping the fingers symmetric.
    tendon = spec.add_tendon(name="gripper")
    for name in FINGER_JOINTS:
        tendon.wrap_joint(name, 0.5)
    spec.add_equality(
        type=mujoco.mjtEq.mjEQ_JOINT, name1=FINGER_JOINTS[0], name2=FINGER_JOINTS[1],
        data=[0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # finger1 = 0 + 1 * finger2
    )
    servo = spec.add_actuator(name="gripper", target="gripper")
    servo.trntype = mujoco.mjtTrn.mjTRN_TENDON
    servo.ctrllimited = True
    servo.ctrlrange = [0.0, GRIPPER_MAX_WIDTH / 2]
    servo.forcelimited = True
    servo.forcerange = [-GRIPPER_FORCE_LIMIT, GRIPPER_FORCE_LIMIT]
    servo.gaintype = mujoco.mjtGain.mjGAIN_FIXED
    servo.gainprm[0] = GRIPPER_KP
    servo.biastype = mujoco.mjtBias.mjBIAS_AFFINE
    servo.biasprm[:3] = [0.0, -GRIPPER_KP, -2 * np.sqrt(GRIPPER_KP * 0.05)]

    # Rubber fingertip pads (left finger opens along +y of its frame, right finger along -y).
    for finger, side in (("panda_leftfinger", 1.0), ("panda_rightfinger", -1.0)):
        pad = spec.body(finger).add_geom(
            name=f"{finger}_pad", type=mujoco.mjtGeom.mjGEOM_BOX,
            pos=[0.0, side * 0.0045, 0.044], size=[0.0095, 0.0045, 0.0095],
            rgba=[0.2, 0.2, 0.2, 1.0], friction=[1.5, 0.01, 0.001], mass=0.0,
        )
        pad.contype, pad.conaffinity = ROBOT_CONTYPE, ROBOT_CONAFFINITY
        pad.condim = 4  # torsional friction keeps a grasped cube from spinning out
        pad.group = COLLISION_GROUP

    tcp = spec.body("panda_grasptarget").add_site(name=TCP_SITE, size=[0.005, 0.005, 0.005])
    tcp.group = COLLISION_GROUP
    return spec


def _add_visual_meshes(spec: mujoco.MjSpec, urdf_path: str, visual: str) -> None:
    """One visual-only mesh geom per (link, material colour) of the URDF's visual elements."""
    for link, parts in _visual_parts(urdf_path, visual).items():
        body = spec.body(link)
        for index, (vertices, faces, rgba, pos, quat) in enumerate(parts):
            name = f"{link}_visual{index}"
            spec.add_mesh(name=name, uservert=vertices.ravel().tolist(),
                          userface=faces.ravel().tolist())
            geom = body.add_geom(name=name, type=mujoco.mjtGeom.mjGEOM_MESH, meshname=name,
                                 pos=pos, quat=quat, rgba=rgba, mass=0.0)
            geom.contype, geom.conaffinity = 0, 0
            geom.group = VISUAL_GROUP


@functools.lru_cache(maxsize=4)
def _visual_parts(urdf_path: str, detail: str) -> dict[str, list]:
    """link name -> [(vertices (n, 3) m, faces (k, 3) int, rgba, pos, quat)] from the URDF's
    visual ("full") or collision ("coarse") elements, in the link frame; pos/quat (w, x, y, z)
    are the element's origin. Parsed once per process (the full meshes are ~9 MB of OBJ text,
    0.9 s): every scene compile reuses the arrays."""
    root = os.path.dirname(urdf_path)
    element = "visual" if detail == "full" else "collision"
    parts: dict[str, list] = {}
    for link in ElementTree.parse(urdf_path).getroot().iter("link"):
        for visual in link.iter(element):
            mesh = visual.find("geometry/mesh")
            if mesh is None:
                continue
            origin = visual.find("origin")
            xyz = [float(v) for v in origin.get("xyz", "0 0 0").split()] if origin is not None else [0.0] * 3
            rpy = [float(v) for v in origin.get("rpy", "0 0 0").split()] if origin is not None else [0.0] * 3
            path = os.path.join(root, mesh.get("filename").replace("package://", ""))
            quat = matrix_to_quat(_rpy_matrix(*rpy)).tolist()
            for vertices, faces, rgba in _read_obj(path):
                parts.setdefault(link.get("name"), []).append((vertices, faces, rgba, xyz, quat))
    return parts


def _rpy_matrix(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """URDF's fixed-axis roll-pitch-yaw: R = Rz(yaw) Ry(pitch) Rx(roll)."""
    cr, sr, cp, sp, cy, sy = np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw)
    return np.array([[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                     [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                     [-sp, cp * sr, cp * cr]])


def _read_obj(path: str) -> list[tuple[np.ndarray, np.ndarray, list[float]]]:
    """A triangle OBJ split by diffuse colour: [(vertices (n, 3), faces (k, 3), rgba)], each
    part with only the vertices its faces use. Colours come from the OBJ's .mtl (Kd); white
    where there is none. Texture maps are ignored (a camera at 128 x 128 cannot resolve them)."""
    colours: dict[str, tuple[float, ...]] = {}
    material, vertices, faces_by_colour = None, [], {}
    with open(path) as f:
        lines = f.read().splitlines()
    for line in lines:
        if line.startswith("mtllib "):
            colours = _read_mtl(os.path.join(os.path.dirname(path), line.split(None, 1)[1].strip()))
        elif line.startswith("v "):
            vertices.append(line.split()[1:4])
        elif line.startswith("usemtl "):
            material = line.split(None, 1)[1].strip()
        elif line.startswith("f "):
            corners = line.split()[1:]
            if len(corners) != 3:
                raise ValueError(f"{path}: only triangle faces are read, found one with {len(corners)} corners")
            colour = colours.get(material, (1.0, 1.0, 1.0, 1.0))
            faces_by_colour.setdefault(colour, []).append([c.split("/", 1)[0] for c in corners])
    all_vertices = np.array(vertices, dtype=float)
    parts = []
    for colour, faces in faces_by_colour.items():
        faces = np.array(faces, dtype=np.int64) - 1  # OBJ indices start at 1
        used, compact = np.unique(faces, return_inverse=True)
        parts.append((all_vertices[used], compact.reshape(faces.shape).astype(np.int32), list(colour)))
    return parts


def _read_mtl(path: str) -> dict[str, tuple[float, ...]]:
    """material name -> rgba from a .mtl file's Kd (diffuse) and d (opacity) lines."""
    colours, name, kd, alpha = {}, None, (1.0, 1.0, 1.0), 1.0
    if not os.path.exists(path):
        return colours
    with open(path) as f:
        for line in f:
            words = line.split()
            if not words:
                continue
            if words[0] == "newmtl":
                if name is not None:
                    colours[name] = (*kd, alpha)
                name, kd, alpha = " ".join(words[1:]), (1.0, 1.0, 1.0), 1.0
            elif words[0] == "Kd":
                kd = tuple(float(v) for v in words[1:4])
            elif words[0] == "d":
                alpha = float(words[1])
    if name is not None:
        colours[name] = (*kd, alpha)
    return colours
