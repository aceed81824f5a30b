"""The one factory that names robot backends: concrete backends are imported here, lazily, and nowhere else in robostack.

`check_drivable` is the other half of adopting a backend: the robot server drives only what it
has a control law for, and says so by the backend's declared control mode and capabilities.
"""

from __future__ import annotations

from controllers.robot_interface import ControlMode, contract_problems


def ur_models() -> tuple[str, ...]:
    """The UR models whose kinematics the ur backend knows (--ur-model), without its SDK."""
    from hardware.ur_kinematics import MODELS

    return MODELS


def make_backend(name: str, task, config=None):
    """The robot backend for `name`; the mirror compiles the task's scene (a `sim.scene.Scene`).
    `config`: the RobotServerConfig, whose options a real arm needs (its address)."""
    if name == "mujoco":
        from sim.mujoco_backend import MujocoBackend
        from sim.mujoco_scene import compile_scene

        return MujocoBackend(compile_scene(task.build_scene()))
    if name == "mujoco-position":  # the MuJoCo Panda as a position-controlled arm (a UR's law)
        from sim.mujoco_backend import MujocoBackend
        from sim.mujoco_position import MujocoPositionMirror
        from sim.mujoco_scene import compile_scene

        return MujocoPositionMirror(MujocoBackend(compile_scene(task.build_scene())))
    if name == "pybullet":
        from sim.pybullet_backend import PybulletBackend

        scene = task.build_scene()
        backend = PybulletBackend(scene)
        # Its cameras are drawn from the scene description (sim/pybullet_cameras.py), which
        # PyBullet does not keep: the backend carries it.
        backend.scene = scene
        return backend
    if name == "franka" and getattr(config, "franka_law", "torque") == "tracker":
        from hardware.franka_tracker import FrankaTrackerBackend

        return FrankaTrackerBackend(getattr(config, "franka_host", "127.0.0.1"),
                                    gripper=getattr(config, "franka_gripper", True),
                                    markers=real_arm_markers(task))
    if name == "franka":
        from hardware.franka import FrankaBackend

        return FrankaBackend(getattr(config, "franka_host", "127.0.0.1"),
                             gripper=getattr(config, "franka_gripper", True),
                             markers=real_arm_markers(task))
    if name == "ur":
        from hardware.ur import UrBackend

        return UrBackend(getattr(config, "ur_host", "127.0.0.1"),
                         frequency=getattr(config, "ur_frequency", 500.0),
                         model=getattr(config, "ur_model", "ur5e"),
                         watchdog_hz=getattr(config, "ur_watchdog_hz", 20.0), markers=real_arm_markers(task))
    raise ValueError(
        f"unknown backend {name!r}: this build offers 'mujoco', 'pybullet', 'mujoco-position' "
        "(the MuJoCo mirror position-controlled, as a UR is), 'franka' (a Franka "
        "through franky, docs/hardware/franka.md) and 'ur' (a UR through ur_rtde, docs/hardware/ur.md)"
    )


def real_arm_markers(task):
    """The task's virtual markers (its goal points) for a real arm's world; ValueError for a task
    with physical objects, whose poses a real arm's server cannot observe (no perception)."""
    scene = task.build_scene()
    objects = [o.name for o in getattr(scene, "objects", ())]
    if objects:
        raise ValueError(
            f"task {task.name!r} observes the poses of {objects}: on a real arm they would need "
            "perception, which the robot server does not have; run a task without objects "
            "(--task reach) on the arm, or this task in a mirror")
    return scene.markers


def renders_cameras(backend) -> bool:
    """Whether the backend's scene cameras can be rendered: a MuJoCo world (sim/mujoco_world.py)
    or a PyBullet mirror that carries its scene (make_backend's). A real arm's cameras are real
    (`robostack camera-server`)."""
    world = getattr(backend, "world", None) if backend.capabilities.world else None
    if world is None:
        return False
    return hasattr(world, "model") or _is_pybullet(backend)


def simulated_cameras(backend, names):
    """A renderer of the backend's simulated cameras `names` (render(name) -> (H, W, 3) uint8,
    close()): sim/mujoco_cameras.py for MuJoCo, sim/pybullet_cameras.py for PyBullet, made in
    the calling thread, whose GL context it keeps."""
    if not renders_cameras(backend):
        raise ValueError(f"backend {type(backend).__name__} renders no cameras")
    if _is_pybullet(backend):
        from sim.pybullet_cameras import PybulletCameras

        return PybulletCameras.of_backend(backend, names)
    from sim.mujoco_cameras import MujocoCameras

    return MujocoCameras.of_world(backend.world, names)


def _is_pybullet(backend) -> bool:
    """A PyBullet mirror with its scene, told apart without importing pybullet for another backend."""
    return type(backend).__module__ == "sim.pybullet_backend" and getattr(backend, "scene", None) is not None


def check_drivable(backend) -> None:
    """Raise ValueError, naming the reason, unless the robot server can drive `backend`: a
    correct declaration of the contract; joint torque control with kinematics (the impedance
    law), or Cartesian position control with kinematics and the tcp wrench (the admittance law)."""
    name = type(backend).__name__
    problems = contract_problems(backend)
    if problems:
        raise ValueError(f"backend {name} breaks the robot backend contract: " + "; ".join(problems))
    if backend.control_mode is ControlMode.CARTESIAN_POSITION:
        missing = [c for c in ("kinematics", "external_wrench") if not getattr(backend.capabilities, c)]
        if missing:
            raise ValueError(f"backend {name} is position-controlled but declares no {' and no '.join(missing)}: "
                             "the admittance law needs the tcp pose and the measured tcp wrench every tick")
        return
    if backend.control_mode is not ControlMode.JOINT_TORQUE:
        raise ValueError(
            f"backend {name} is controlled by {backend.control_mode.value!r} targets: the robot server "
            f"drives {ControlMode.JOINT_TORQUE.value!r} arms (Cartesian impedance) and "
            f"{ControlMode.CARTESIAN_POSITION.value!r} arms (admittance, controllers/admittance.py) only")
    if not backend.capabilities.kinematics:
        raise ValueError(f"backend {name} declares no kinematics: the Cartesian impedance law "
                         "needs the tcp pose and Jacobian on every tick")
