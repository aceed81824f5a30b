"""franky-sim (a MuJoCo FR3 speaking libfranka's protocol, with a Franka Hand server) in a process
of its own, for the Franka backend's tests, with the faults it does not simulate injected.

    python tests/hardware/franky_sim_process.py      (tests: FrankySim below)

prints `READY <address>` once it serves (franky-sim binds the fixed ports 1337/1338 on the first
free loopback address 127.x.y.z, so parallel runs each get their own address), then reads lines
on stdin:
    fault NAME   the arm reports libfranka error NAME (e.g. communication_constraints_violation)
                 in Reflex and aborts the running motion as the firmware does (kReflexAborted);
                 libfranka's automatic error recovery clears it
    rate         prints `RATE <simulated ticks per wall second> <ticks>` since start
    quit         ends
A process of its own because the simulator is a 1 kHz Python loop: in the test's process it
would compete for the GIL with the robot server's own 1 kHz loop.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

# libfranka's errors in the order of its wire format (research_interface::robot::Error), which
# differs from franka::Errors' field order: read back one by one through franky 2.0.0.
ERRORS = (
    "joint_position_limits_violation", "cartesian_position_limits_violation",
    "self_collision_avoidance_violation", "joint_velocity_violation",
    "cartesian_velocity_violation", "force_control_safety_violation", "joint_reflex",
    "cartesian_reflex", "max_goal_pose_deviation_violation", "max_path_pose_deviation_violation",
    "cartesian_velocity_profile_safety_violation",
    "joint_position_motion_generator_start_pose_invalid",
    "joint_motion_generator_position_limits_violation",
    "joint_motion_generator_velocity_limits_violation",
    "joint_motion_generator_velocity_discontinuity",
    "joint_motion_generator_acceleration_discontinuity",
    "cartesian_position_motion_generator_start_pose_invalid",
    "cartesian_motion_generator_elbow_limit_violation",
    "cartesian_motion_generator_velocity_limits_violation",
    "cartesian_motion_generator_velocity_discontinuity",
    "cartesian_motion_generator_acceleration_discontinuity",
    "cartesian_motion_generator_elbow_sign_inconsistent",
    "cartesian_motion_generator_start_elbow_invalid",
    "force_controller_desired_force_tolerance_violation", "start_elbow_sign_inconsistent",
    "communication_constraints_violation", "power_limit_violation",
    "cartesian_motion_generator_joint_position_limits_violation",
    "cartesian_motion_generator_joint_velocity_limits_violation",
    "cartesian_motion_generator_joint_velocity_discontinuity",
    "cartesian_motion_generator_joint_acceleration_discontinuity",
    "cartesian_position_motion_generator_invalid_frame", "controller_torque_discontinuity",
    "joint_p2p_insufficient_torque_for_planning", "tau_j_range_violation", "instability_detected",
    "joint_move_in_wrong_direction", "cartesian_spline_motion_generator_violation",
    "joint_via_motion_generator_planning_joint_limit_violation",
    "base_acceleration_initialization_timeout", "base_acceleration_invalid_reading",
)


class FrankySim:
    """The franky-sim process: its address, fault injection, its measured rate."""

    def __init__(self):
        self.process = subprocess.Popen([sys.executable, str(Path(__file__))], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True,
                                        env=dict(os.environ, OMP_NUM_THREADS="1"))
        line = self.process.stdout.readline()
        if not line.startswith("READY "):
            self.process.kill()
            raise AssertionError(f"franky-sim did not start: {line!r}, exit {self.process.wait(10)}")
        self.host = line.split()[1]

    def send(self, line: str) -> None:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def rate(self) -> float:
        self.send("rate")
        return float(self.process.stdout.readline().split()[1])

    def close(self) -> None:
        try:
            self.send("quit")
            self.process.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait(10)


def main() -> int:
    from franky_sim import SimulationServer
    from franky_sim.franka_robot_protocol import (AutomaticErrorRecoveryCommand,
                                                  AutomaticErrorRecoveryStatus, BaseCommand,
                                                  MoveStatus, RobotCommand, RobotMode)
    from franky_sim.franka_robot_server import FrankaRobotServer
    from franky_sim.mujoco_simulator import MujocoSimulator

    class FaultyRobotServer(FrankaRobotServer):
        """The arm's state with an injected error; cleared by the automatic error recovery."""

        injected: int | None = None
        pending: int | None = None  # to inject at the next tick, in the simulator's thread

        @property
        def robot_state(self):
            state = super().robot_state
            if self.injected is None:
                return state
            flags = tuple(i == self.injected for i in range(len(ERRORS)))
            return state.replace(errors=flags, reflex_reason=flags, robot_mode=RobotMode.kReflex)

    class Recovery(AutomaticErrorRecoveryCommand):
        def handle(self, server):
            server.injected = None
            self.reply(AutomaticErrorRecoveryStatus.kSuccess)

    ticks = [0]
    with MujocoSimulator(enable_visualization=False) as sim:
        robot = sim.add_robot()
        with SimulationServer(sim) as server:
            arm = server.robot_servers[0]
            arm.__class__ = FaultyRobotServer
            arm._FrankaServer__command_class_map[RobotCommand.kAutomaticErrorRecovery] = Recovery

            def before_step(_sim) -> None:
                ticks[0] += 1
                if arm.pending is not None:  # the firmware's reflex: abort the motion, report why
                    arm.injected, arm.pending = arm.pending, None
                    motion = arm.current_motion_id
                    arm.stop_motion(send_preemption_signal=False)
                    arm.reset_current_motion_id()
                    if motion:
                        BaseCommand.send_response(arm._tcp_socket, RobotCommand.kMove, motion,
                                                  MoveStatus.kReflexAborted)

            sim.register_pre_step_callback(before_step)
            server.run_async()
            start = time.monotonic()
            print(f"READY {robot.hostname}", flush=True)
            done = threading.Event()

            def commands() -> None:
                for line in sys.stdin:
                    word, _, argument = line.strip().partition(" ")
                    if word == "fault":
                        arm.pending = ERRORS.index(argument)
                    elif word == "fault-index":
                        arm.pending = int(argument)
                    elif word == "rate":
                        print(f"RATE {ticks[0] / (time.monotonic() - start):.1f} {ticks[0]}", flush=True)
                    elif word == "quit":
                        break
                done.set()

            threading.Thread(target=commands, daemon=True).start()
            done.wait()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
