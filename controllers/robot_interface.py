"""The contract between control code and a robot: what a backend measures, how it is commanded
(its control mode) and what else it offers (its capabilities).

Real arms (hardware/) and the simulated mirrors (sim/) implement `RobotBackend`; the robot server
and the control laws only ever see this interface, so the same code drives both. A backend says
what it is instead of being probed: `control_mode` names how it takes commands, `capabilities`
lists the optional parts it implements, and `contract_problems()` checks that the declaration
and the methods present agree (the robot server refuses a backend that fails it, and
tests/robot/test_backend_contract.py runs every backend through the same checks).

Conventions: SI units. Cartesian quantities are in the robot `base` frame. The `tcp` frame sits
between the fingertips, z pointing out of the gripper. The Jacobian maps joint velocities to the
tcp twist [linear (3); angular (3)] in the base frame. Torques exclude gravity: a Franka
compensates gravity in firmware and the mirrors do the same, so controllers never add it.
Quaternions, wherever they appear, are (w, x, y, z).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields
from typing import Protocol

import numpy as np


@dataclass
class RobotState:
    """One control tick's measurements. Backends may update these arrays in place every tick."""

    q: np.ndarray  # (n,) joint positions, rad (n = 7 for a Panda, 6 for a UR)
    dq: np.ndarray  # (n,) joint velocities, rad/s
    tcp_position: np.ndarray  # (3,) m, base frame
    tcp_rotation: np.ndarray  # (3, 3) rotation of tcp in base frame (columns = tcp axes)
    jacobian: np.ndarray  # (6, n) tcp Jacobian, base frame, rows [linear; angular]
    coriolis: np.ndarray  # (n,) Coriolis/centrifugal torques, Nm (zero if unavailable)
    tau_external: np.ndarray  # (n,) estimated external joint torques, Nm (zero if unavailable)
    gripper_width: float = 0.0  # m, distance between the fingertips
    time: float = 0.0  # s, backend clock (simulated time in the mirror)
    extras: dict = field(default_factory=dict)


class ControlMode(enum.Enum):
    """How an arm takes commands, once per control tick."""

    # actuate(torque): joint torques, gravity excluded (a Franka through libfranka / franky).
    JOINT_TORQUE = "joint_torque"
    # command_joint_target(q, dq): joint position + velocity targets its own servo tracks.
    JOINT_POSITION = "joint_position"
    # command_tcp_target(position, quaternion, twist): tcp pose + twist targets, base frame (a UR
    # arm through ur-rtde's servoL / speedL).
    CARTESIAN_POSITION = "cartesian_position"


# The method each control mode commands the arm through.
COMMAND_METHOD = {
    ControlMode.JOINT_TORQUE: "actuate",
    ControlMode.JOINT_POSITION: "command_joint_target",
    ControlMode.CARTESIAN_POSITION: "command_tcp_target",
}


@dataclass(frozen=True)
class BackendCapabilities:
    """The optional parts of the contract a backend implements; each one names what it adds.

    The robot server decides by these, never by probing for attributes."""

    # sense() fills tcp_position, tcp_rotation and jacobian every tick (the Cartesian
    # impedance law needs them; without, a caller would need its own kinematic model). A
    # position-controlled arm's law needs only the pose; the joint-limit guard still reads the
    # Jacobian to refuse commands that move a latched joint further (a UR's backend computes it
    # from the arm's DH kinematics: ur_rtde reads none).
    kinematics: bool = False
    # sense() fills coriolis, and mass_matrix() returns the (7, 7) joint-space inertia.
    dynamics: bool = False
    # external_wrench(): the estimated wrench at the tcp, [force N; torque Nm], base frame.
    external_wrench: bool = False
    # reset(q, gripper_width): teleport to q at rest, exactly (simulation only). Without it the
    # arm is driven home by the joint impedance controller, tick by tick.
    simulated_reset: bool = False
    # run_impedance_ticks(controller, n_ticks, flag_counts, torque_ramp, joint_guard): n ticks of
    # sense -> Cartesian impedance law -> joint-limit guard -> torque ramp -> actuate in compiled
    # code (a simulation in lock-step). Same law, same order, same physics as the Python loop;
    # returns the ticks run, stopping early after a tick on which the joint-limit guard tripped.
    compiled_impedance_loop: bool = False
    # world: object poses of the task's scene (the engine-neutral interface tasks act through);
    # simulations only, a real arm's scene is seen by cameras.
    world: bool = False
    # read_faults() -> tuple[str, ...]: the fault codes active now, () when healthy (libfranka's
    # error names on a Franka, "simulation_unstable" in a mirror); cheap enough for every tick.
    # The safety supervisor (controllers/supervisor.py) reacts to them; without the capability
    # only the faults the server detects itself reach it.
    faults: bool = False
    # recover_faults(): ask the arm to clear its faults (libfranka's automaticErrorRecovery);
    # the supervisor asks for it when a recovery starts and waits until read_faults() is empty.
    fault_recovery: bool = False


# The attribute (usually a method) each capability promises.
CAPABILITY_MEMBER = {
    "kinematics": None,  # a property of the RobotState that sense() returns
    "dynamics": "mass_matrix",
    "external_wrench": "external_wrench",
    "simulated_reset": "reset",
    "compiled_impedance_loop": "run_impedance_ticks",
    "world": "world",
    "faults": "read_faults",
    "fault_recovery": "recover_faults",
}


class RobotBackend(Protocol):
    """An arm of n joints (7 for a Panda, 6 for a UR; torque control needs 7) with an optional
    parallel gripper, ticked by its owner at its control rate (1 kHz for a Panda).

    Every backend has what is declared here; `control_mode` says which command method it has
    (COMMAND_METHOD), `capabilities` which of the optional members (CAPABILITY_MEMBER)."""

    control_mode: ControlMode
    capabilities: BackendCapabilities
    control_period: float  # s between ticks (0.001 for a Panda)
    torque_limits: np.ndarray  # (n,) Nm
    joint_lower: np.ndarray  # (n,) rad
    joint_upper: np.ndarray  # (n,) rad
    home_q: np.ndarray  # (n,) rad, default reset / nullspace posture
    gripper_max_width: float  # m
    state: RobotState  # the last tick's measurements (what sense() returned)

    def sense(self) -> RobotState:
        """Measurements for the current tick (on hardware: blocks until the tick arrives)."""

    def latest_state(self) -> RobotState:
        """The state as it is now, complete (gripper width, external torques), without waiting
        for or advancing a tick: on hardware the last measurement; in a simulation recomputed
        from the current configuration (a tick leaves kinematics one step behind)."""

    def set_gripper(self, width: float) -> None:
        """Command the fingertip distance in metres (0 closes, gripper_max_width opens)."""

    def close(self) -> None:
        """Release the arm and any connection."""


class TorqueControlled(RobotBackend, Protocol):
    """ControlMode.JOINT_TORQUE: a Franka."""

    def actuate(self, torque: np.ndarray) -> None:
        """Apply joint torques (7,) Nm, gravity excluded, for this tick (the array is the
        caller's: copy it); the mirror advances one step. Torques beyond torque_limits are
        clamped to them."""


class CartesianPositionControlled(RobotBackend, Protocol):
    """ControlMode.CARTESIAN_POSITION: a UR through ur-rtde, or the MuJoCo mirror's position
    mode. The arm's own servo follows the tcp; the robot server's admittance law
    (controllers/admittance.py) says where, from the wrench the arm measures. A tick is sense()
    and then exactly one of the calls below; in a mirror that call advances the physics."""

    def command_tcp_target(self, position: np.ndarray, quaternion: np.ndarray, twist: np.ndarray) -> None:
        """Follow this tcp pose (m; w, x, y, z; base frame) with this feed-forward twist
        [m/s; rad/s] for one tick. Never blocks."""

    def halt(self) -> None:
        """Decelerate to rest and stay there (a UR's speedStop); repeated calls keep it at rest."""

    def move_joints(self, q: np.ndarray, speed: float) -> None:
        """Start a joint move to q (rad) at `speed` (rad/s, the leading joint) that runs on by
        itself while the owner keeps ticking with sense() alone (a UR's asynchronous moveJ); a
        backend without simulated_reset must offer it, for the server's homing."""


def contract_problems(backend) -> list[str]:
    """What is wrong with `backend`'s declaration of the contract; [] if nothing.

    Checks that the control mode and capabilities are declared with the types above, that the
    command method of the mode and the member of every declared capability are present, and the
    shapes of the limits. Run once when a backend is adopted, not per tick."""
    name = type(backend).__name__
    mode = getattr(backend, "control_mode", None)
    capabilities = getattr(backend, "capabilities", None)
    problems = []
    if not isinstance(mode, ControlMode):
        problems.append(f"{name}.control_mode must be a ControlMode ({[m.value for m in ControlMode]}), "
                        f"got {mode!r}")
    elif not callable(getattr(backend, COMMAND_METHOD[mode], None)):
        problems.append(f"{name} declares control mode {mode.value!r} but has no "
                        f"{COMMAND_METHOD[mode]}() to command it")
    if not isinstance(capabilities, BackendCapabilities):
        problems.append(f"{name}.capabilities must be a BackendCapabilities, got {capabilities!r}")
    else:
        for capability in fields(BackendCapabilities):
            member = CAPABILITY_MEMBER[capability.name]
            if getattr(capabilities, capability.name) and member and not hasattr(backend, member):
                problems.append(f"{name} declares capability {capability.name!r} but has no {member}")
    if mode is ControlMode.CARTESIAN_POSITION:
        wanted = ["halt"] + ([] if isinstance(capabilities, BackendCapabilities) and capabilities.simulated_reset
                             else ["move_joints"])
        for member in wanted:
            if not callable(getattr(backend, member, None)):
                problems.append(f"{name} declares control mode {mode.value!r} but has no {member}()"
                                + (" (homing an arm without simulated_reset)" if member == "move_joints" else ""))
    for member in ("sense", "latest_state", "set_gripper", "close"):
        if not callable(getattr(backend, member, None)):
            problems.append(f"{name} has no {member}(), which every backend needs")
    # A Panda has 7 joints, a UR 6; torque control (the Cartesian impedance law's nullspace
    # task, the joint impedance homing) is written for 7.
    n = np.asarray(getattr(backend, "home_q", None), dtype=object).shape
    n = n[0] if len(n) == 1 and n[0] in (6, 7) else 7
    if mode is ControlMode.JOINT_TORQUE:
        n = 7
    for member in ("torque_limits", "joint_lower", "joint_upper", "home_q"):
        value = np.asarray(getattr(backend, member, None), dtype=object)
        if value.shape != (n,):
            problems.append(f"{name}.{member} must be {n} numbers (one per joint"
                            f"{'; torque control is for 7-joint arms' if mode is ControlMode.JOINT_TORQUE else ''}), "
                            f"got {getattr(backend, member, None)!r}")
    if not problems:
        lower, upper = np.asarray(backend.joint_lower, float), np.asarray(backend.joint_upper, float)
        if not (lower < upper).all():
            problems.append(f"{name}: joint_lower {lower.tolist()} must be below joint_upper {upper.tolist()}")
        if not (np.asarray(backend.torque_limits, float) > 0).all():
            problems.append(f"{name}.torque_limits must be > 0 Nm, got {backend.torque_limits!r}")
        if not getattr(backend, "control_period", 0.0) > 0.0:
            problems.append(f"{name}.control_period must be > 0 s")
    return problems
