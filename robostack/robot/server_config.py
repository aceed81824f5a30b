"""The robot server's settings (`robostack robot-server --help` lists them, from the comments
here): which arm and task, the sockets, the clock, and the safety rules' numbers. Checked when
built, so that a bad option is a usage error naming itself before anything starts."""

from __future__ import annotations

import math
from dataclasses import dataclass

from controllers.gain_limits import parse_ceilings
from controllers.supervisor import SupervisorConfig
from robostack.config import REAL_ARMS, check_backend
from robostack.robot import lease
from robostack.robot.position_arm import parse_admittance_gains
from tasks import parse_task_params


@dataclass
class RobotServerConfig:
    """Robot server settings. Endpoints are ZeroMQ addresses (tcp://host:port or ipc://path)."""

    task: str = "pick_cube"  # task whose scene, workspace box and home pose to use
    task_params: str = ""  # the task's physical parameters, e.g. "cube_half_size=0.025,cube_mass=0.05:0.2"
        # (low:high = uniform per episode); an unknown name lists the valid ones with units
    backend: str = "mujoco"  # mujoco or pybullet (the mirrors), franka (a Franka through franky, docs/hardware/franka.md)
    franka_host: str = "127.0.0.1"  # --backend franka: the arm's FCI address (franky-sim serves on 127.x.y.z)
    franka_gripper: bool = True  # --backend franka: drive a Franka Hand (false: an arm without one)
    franka_law: str = "torque"  # --backend franka: torque (robostack's law in this loop, SimpleTorqueMotion)
        # or tracker (franky's CartesianImpedanceTrackingMotion in C++; targets streamed), docs/hardware/franka.md
    ur_host: str = "127.0.0.1"  # --backend ur: the UR controller's address (docs/hardware/ur.md)
    ur_frequency: float = 500.0  # --backend ur: the RTDE rate, 500 Hz (e-series) or 125 Hz (CB3); the server ticks at it
    ur_model: str = "ur5e"  # --backend ur: the arm's model (ur3e, ur5e, ur10e, ur16e; CB3: ur3, ur5, ur10), whose kinematics give the joint-limit guard its Jacobian
    ur_watchdog_hz: float = 20.0  # --backend ur: the RTDE watchdog; a tick later than 1 / this stops the arm's script
    clock: str = "lockstep"  # lockstep (sim only, faster than real time) or realtime
    command_endpoint: str = "tcp://127.0.0.1:5555"  # requests (ROUTER, bound here)
    state_endpoint: str = "tcp://127.0.0.1:5556"  # state stream (PUB, bound here)
    state_hz: float = 100.0  # real-time state publishing rate
    command_deadline: float = 0.3  # s a real-time command stays valid unless it says otherwise
    max_command_deadline: float = 1.0  # s, the longest deadline a command may ask for
    peer_timeout: float = 0.5  # s, real time: the lease expires this long after its holder's last
        # request (ZmqConnection heartbeats every peer_timeout / 5) -> damped stop, disarmed; other
        # peers' requests (e.g. a dashboard polling state) do not count. 0.5 s + the damped stop
        # keeps heartbeat loss -> zero velocity under 1 s (docs/leases.md)
    lockstep_lease_timeout: float = 5.0  # s, lock-step: physics waits for the client, so nothing
        # moves while it is silent; longer, so that a loaded machine never expires a live client
    admin_endpoint: str = ""  # the local admin socket (ipc://, owner-only): shutdown, disarm,
        # state, stats, break_lease without the lease; empty: derived from command_endpoint
    curve_key: str = ""  # this server's CURVE key pair (NAME in `robostack keys list`, or a path):
        # the command and state sockets then admit only allow-listed client keys; needed to serve
        # on a network address (docs/security.md); empty: plaintext, loopback/ipc only
    soft_start_time: float = 0.5  # s over which 'arm' ramps the stiffness from 0 to full
    transient_faults: str = "communication_constraints_violation"  # backend fault codes recovered
        # automatically (comma-separated), at most max_recoveries times within recovery_window
    max_recoveries: int = 3
    recovery_window: float = 60.0  # s
    workspace_box: str = ""  # a box inside the task's for bring-up, "xmin,ymin,zmin,xmax,ymax,zmax" (m,
        # base frame): targets are clipped to both; empty: the task's box
    max_position_step: float = 0.1  # m, cap on one command's target distance from the tcp
    max_rotation_step: float = 0.5  # rad, same for orientation
    settle_time: float = 0.2  # s of physics after a simulated reset, objects come to rest
    home_timeout: float = 10.0  # s a real arm may take to reach home before the reset fails
    # franka_ros uses 0.2 s, which at a 10 Hz policy lets the reference cover only 40% of each
    # commanded step.
    smoothing_time: float = 0.02  # s, time constant of the low-pass on reference/gain changes
    seed: int = 0  # seeds the first reset's randomisation (each reset may pass its own)
    fast_loop: bool = True  # lock-step: run the 1 kHz loop compiled (same law; false = Python)
    max_request_bytes: int = 4096  # bytes, the largest frame a request may have (ZMQ_MAXMSGSIZE: a
        # peer sending more is disconnected); commands are ~300 B, a 'gains' with every gain
        # ~1 KB; decoding hostile msgpack costs about 0.07 ms per KiB (a 6.5 KB header of 1000
        # small keys 0.43 ms median, 2 ms worst, measured in the loop's own process), so 4 KiB
        # keeps a tick's request work under the 2 ms stall bound (16 KiB measured 3.8 ms)
    admittance_gains: str = ""  # a position-controlled arm (ur, mujoco-position): its admittance law,
        # e.g. "force_bound=10,max_velocity=0.05" (controllers/admittance.py AdmittanceGains, SI);
        # empty: the defaults (15 N bound, 0.25 m/s). Fixed for the server's life: 'gains' refuses
    home_speed: float = 0.5  # rad/s, a position-controlled real arm's joint move home (reset), leading joint
    gain_ceilings: str = ""  # the most a 'gains' request may set, e.g. "translational_stiffness=1500,
        # translational_clip=0.02" (torque_limits: 7 values a:b:...); each at most the arm's rated
        # value (controllers/gain_limits.py); empty: the rated ceilings

    def __post_init__(self):
        if self.clock not in ("lockstep", "realtime"):
            raise ValueError(f"clock must be 'lockstep' or 'realtime', got {self.clock!r}")
        check_backend(self.backend, real_arms=True)
        if self.backend in REAL_ARMS and self.clock != "realtime":
            raise ValueError(f"--backend {self.backend} is a real arm, whose physics does not wait "
                             "for requests: run it with --clock realtime")
        from robostack.robot.backends import ur_models  # numpy only: no SDK imported

        if self.ur_model not in ur_models():
            raise ValueError(f"--ur-model {self.ur_model!r}: one of {', '.join(ur_models())}")
        if self.franka_law not in ("torque", "tracker"):
            raise ValueError(f"franka_law must be 'torque' (robostack's law, SimpleTorqueMotion) or "
                             f"'tracker' (franky's CartesianImpedanceTrackingMotion), got {self.franka_law!r}")
        if not 1024 <= self.max_request_bytes <= 2**30:
            raise ValueError(f"max_request_bytes must be in [1024, 2**30], got {self.max_request_bytes}")
        parse_task_params(self.task, self.task_params)  # a usage error now, not at start-up
        parse_ceilings(self.gain_ceilings)  # same: a bad or above-rated ceiling names itself now
        self.box()  # same: a malformed workspace box
        parse_admittance_gains(self.admittance_gains)  # same: a bad admittance gain
        if not 0.0 < self.home_speed <= 3.14:
            raise ValueError(f"home_speed must be in (0, 3.14] rad/s, got {self.home_speed}")
        self.supervisor_config()  # same: bad deadlines or timeouts
        if not self.lockstep_lease_timeout > 0:
            raise ValueError(f"lockstep_lease_timeout must be > 0 s, got {self.lockstep_lease_timeout}")
        if self.admin_endpoint and not self.admin_endpoint.startswith("ipc://"):
            raise ValueError(f"admin_endpoint must be a local ipc:// endpoint (anyone who can reach "
                             f"it may stop the server), got {self.admin_endpoint!r}")

    def box(self):
        """The workspace_box as ((xmin, ymin, zmin), (xmax, ymax, zmax)) m, or None."""
        if not self.workspace_box.strip():
            return None
        try:
            v = [float(x) for x in self.workspace_box.split(",")]
        except ValueError:
            v = []
        if len(v) != 6 or not all(math.isfinite(x) for x in v) or not all(a < b for a, b in zip(v[:3], v[3:])):
            raise ValueError(f"workspace_box must be 6 numbers xmin,ymin,zmin,xmax,ymax,zmax (m, base frame, "
                             f"each min below its max), got {self.workspace_box!r}")
        return tuple(v[:3]), tuple(v[3:])

    def lease_timeout(self) -> float:
        """s without a request from the lease holder before its lease expires."""
        return self.peer_timeout if self.clock == "realtime" else self.lockstep_lease_timeout

    def admin(self) -> str:
        """The admin socket's endpoint."""
        return self.admin_endpoint or lease.admin_endpoint_for(self.command_endpoint)

    def supervisor_config(self) -> SupervisorConfig:
        """The supervisor's rules. Lock-step has no wall clock to miss a deadline or lose a peer
        by (physics waits for the client), so those never expire there."""
        realtime = self.clock == "realtime"
        return SupervisorConfig(
            command_deadline=self.command_deadline if realtime else math.inf,
            max_command_deadline=self.max_command_deadline if realtime else math.inf,
            peer_timeout=self.peer_timeout if realtime else math.inf,
            soft_start_time=self.soft_start_time,
            transient_faults=tuple(filter(None, (c.strip() for c in self.transient_faults.split(",")))),
            max_recoveries=self.max_recoveries, recovery_window=self.recovery_window)
