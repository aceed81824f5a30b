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

Frames (all right-handed, SI units):
* `world` - the simulation world. The robot base frame `base` (= `panda_link0`) coincides with
  it: z up, x pointing away from the robot's cable side toward the workspace.
* `tcp` - a site at `panda_grasptarget`, 0.105 m beyond the flange along the flange z axis,
  between the fingertips. Its z axis points out of the gripper (down, at the home pose).
Quaternions are (w, x, y, z), MuJoCo's order.
"""

from __future__ import annotations

import os

import mujoco
import numpy as np

from controllers import franka

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


def panda_urdf_path() -> str:
    """Path of the shared Panda description (shipped by the `pybullet_data` package)."""
    try:
        import pybullet_data
    except ImportError as error:  # pragma: no cover - pybullet is a core dependency
        raise ImportError(
            "The Panda description ships with pybullet's data package: pip install pybullet"
        ) from error
    return os.path.join(pybullet_data.getDataPath(), "franka_panda", "panda.urdf")


def panda_spec() -> mujoco.MjSpec:
    """An editable MuJoCo spec of the Panda (arm + hand), dynamics patched as described above."""
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
    for geom in spec.geoms:
        if geom.parent.name in COLLIDING_LINKS:
            geom.contype, geom.conaffinity = ROBOT_CONTYPE, ROBOT_CONAFFINITY
        else:
            geom.contype, geom.conaffinity = 0, 0

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

    spec.body("panda_grasptarget").add_site(name=TCP_SITE, size=[0.005, 0.005, 0.005])
    return spec
