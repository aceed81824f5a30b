"""The robot server: one arm, its 1 kHz impedance loop, and the safety rules below every policy.

Whatever sits above (an env, a teleop device, a replay) talks to this process over ZeroMQ:

* requests on a ROUTER socket (`command_endpoint`): hello, reset, step (lock-step only),
  command (real-time only), state, arm, disarm, gains, stats, shutdown. Every request is
  answered, bad ones with an "error" reply that names the problem; the server keeps serving.
* the latest state on a PUB socket (`state_endpoint`), in real-time mode at `state_hz`.

Two clocks:

* `realtime`: the loop ticks at 1 kHz of wall-clock time, as it does on a real arm. Commands carry
  a deadline; when it passes without a new command the arm holds at the measured pose. When no
  request at all arrives for `peer_timeout` seconds the controlling peer is presumed dead: damped
  stop, and the arm stays disarmed until someone explicitly sends `arm` or `reset`.
* `lockstep` (simulation only): physics is frozen between requests; each `step` advances it by
  exactly one policy period (100 ticks at 10 Hz), with the controller evaluated every tick. This
  is how training in the mirror runs many times faster than real time.

Safety (controllers/safety.py, identical for sim and hardware): every command is checked for
shape and finiteness, its target clipped to the task's workspace box and its step capped; the
impedance law bounds force through its error clip, torque rate and torque limits. Each clamp and
hold is reported in the next state message with its reason.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
import time
from dataclasses import dataclass

import numpy as np

from controllers import safety
from controllers.cartesian_impedance import CartesianImpedanceController, CartesianImpedanceGains
from controllers.joint_impedance import JointImpedanceController
from controllers.rotations import matrix_to_quat
from robostack import transport
from robostack.robot.backends import make_backend
from tasks import make_task, parse_task_params

log = logging.getLogger("robostack.robot.server")

MODES = ("disarmed", "armed", "hold", "stopped")
STOP_DAMPING = np.array([20.0, 20.0, 20.0, 20.0, 5.0, 5.0, 5.0])  # Nms/rad, damped stop


@dataclass
class RobotServerConfig:
    """Robot server settings. Endpoints are ZeroMQ addresses (tcp://host:port or ipc://path)."""

    task: str = "pick_cube"  # task whose scene, workspace box and home pose to use
    task_params: str = ""  # the task's physical parameters, e.g. "cube_half_size=0.025,cube_mass=0.05:0.2"
        # (low:high = uniform per episode); an unknown name lists the valid ones with units
    backend: str = "mujoco"  # mujoco (the mirror); real arms plug in under hardware/
    clock: str = "lockstep"  # lockstep (sim only, faster than real time) or realtime
    command_endpoint: str = "tcp://127.0.0.1:5555"  # requests (ROUTER, bound here)
    state_endpoint: str = "tcp://127.0.0.1:5556"  # state stream (PUB, bound here)
    state_hz: float = 100.0  # real-time state publishing rate
    command_deadline: float = 0.3  # s a real-time command stays valid unless it says otherwise
    peer_timeout: float = 2.0  # s without any request -> damped stop, disarmed
    max_position_step: float = 0.1  # m, cap on one command's target distance from the tcp
    max_rotation_step: float = 0.5  # rad, same for orientation
    settle_time: float = 0.2  # s of physics after a simulated reset, objects come to rest
    # franka_ros uses 0.2 s, which at a 10 Hz policy lets the reference cover only 40% of each
    # commanded step.
    smoothing_time: float = 0.02  # s, time constant of the low-pass on reference/gain changes
    seed: int = 0  # seeds the first reset's randomisation (each reset may pass its own)
    fast_loop: bool = True  # lock-step: run the 1 kHz loop compiled (same law; false = Python)

    def __post_init__(self):
        if self.clock not in ("lockstep", "realtime"):
            raise ValueError(f"clock must be 'lockstep' or 'realtime', got {self.clock!r}")
        parse_task_params(self.task, self.task_params)  # a usage error now, not at start-up




def wait_until(deadline: float) -> None:
    """Return at time.perf_counter() >= deadline: sleep most of the remaining time, then spin.
    time.sleep alone overshoots by ~0.1 ms, which is a tenth of a 1 kHz period. (A function of
    its own so that benchmarks/bench_realtime_loop.py paces its idle baseline the same way.)"""
    remaining = deadline - time.perf_counter()
    if remaining > 3e-4:
        time.sleep(remaining - 2e-4)
    while time.perf_counter() < deadline:
        pass


class TickStats:
    """Per real-time tick: lateness of its start against the schedule ("overrun") and the CPU
    time its work took (physics, controller, requests, publishing; not the wait), in rings for
    percentiles. High overrun with low CPU time means the machine, not the server's work, made
    the tick late (other processes competing for the cores, no real-time priority)."""

    def __init__(self, size: int = 10_000):
        self.lateness = np.zeros(size)
        self.cpu = np.zeros(size)
        self.count = 0
        self.started = time.perf_counter()

    def record(self, late: float) -> None:
        self.lateness[self.count % len(self.lateness)] = late
        self.count += 1

    def record_cpu(self, seconds: float) -> None:
        """The CPU time of the tick last passed to record()."""
        self.cpu[(self.count - 1) % len(self.cpu)] = seconds

    @staticmethod
    def _percentiles_ms(values: np.ndarray) -> tuple[float, float, float]:
        """Nearest-rank p50, p99 and max in ms. np.partition, not np.percentile: this runs inside
        the 1 kHz loop, where np.percentile costs ~0.2 ms per call on 10,000 samples."""
        n = len(values)
        ranks = [(n - 1) // 2, min(n - 1, int(np.ceil(0.99 * n)) - 1), n - 1]
        p50, p99, top = np.partition(values, ranks)[ranks]
        return float(p50 * 1e3), float(p99 * 1e3), float(top * 1e3)

    def summary(self) -> dict:
        n = min(self.count, len(self.lateness))
        if n == 0:
            return {"ticks": 0}
        elapsed = time.perf_counter() - self.started
        late = self._percentiles_ms(self.lateness[:n])
        cpu = self._percentiles_ms(self.cpu[:n])
        return {
            "ticks": self.count,
            "window_ticks": n,  # the percentiles cover the last `window_ticks` ticks
            "rate_hz": self.count / elapsed if elapsed > 0 else 0.0,
            "overrun_p50_ms": late[0], "overrun_p99_ms": late[1], "overrun_max_ms": late[2],
            "cpu_p50_ms": cpu[0], "cpu_p99_ms": cpu[1], "cpu_max_ms": cpu[2],
        }


class RobotServer:
    """The server's logic, transport-free: `handle()` answers one request; the loops in
    `serve_lockstep()` / `serve_realtime()` connect it to ZeroMQ. Tests and the in-process
    env drive `handle()` directly."""

    def __init__(self, config: RobotServerConfig | None = None, task=None, backend=None):
        self.config = config or RobotServerConfig()
        if task is not None and self.config.task_params:
            raise ValueError("task_params is for a server that builds its task: this one was given "
                             "a task object (make it with make_task(name, params=...))")
        self.task = task or make_task(self.config.task,
                                      params=parse_task_params(self.config.task, self.config.task_params))
        self.backend = backend or make_backend(self.config.backend, self.task)
        b = self.backend
        self.period = b.control_period
        self.ticks_per_step = int(round(1.0 / (self.task.config.policy_hz * self.period)))
        if abs(self.ticks_per_step * self.period * self.task.config.policy_hz - 1.0) > 1e-9:
            raise ValueError("the policy period must be a whole number of control ticks")
        tc = self.task.config
        self.limits = safety.SafetyLimits(
            workspace_min=tc.workspace_min, workspace_max=tc.workspace_max,
            max_position_step=self.config.max_position_step,
            max_rotation_step=self.config.max_rotation_step,
            gripper_max=b.gripper_max_width,
        )
        self.cartesian = CartesianImpedanceController(
            dt=self.period, filter_coefficient=min(1.0, self.period / self.config.smoothing_time))
        self.joint = JointImpedanceController(dt=self.period)
        self.rng = np.random.default_rng(self.config.seed)
        self.mode = "disarmed"
        self.flags: dict[str, str] = {}  # flag -> reason, since the last state report
        # (mode, flag, reason) of the watchdog that put the arm in "hold" or "stopped". Unlike the
        # one-shot flags above it is repeated in every state message while that mode lasts: the
        # stream is lossy (subscribers keep only the newest message) and stream and `state`
        # replies drain the same one-shot flags, so a single report would often go unseen.
        self._condition: tuple[str, str, str] | None = None
        self._flag_ticks = np.zeros(len(CartesianImpedanceController.FLAG_NAMES), dtype=np.int64)
        self.gripper_target = b.gripper_max_width
        self.command_seq = -1
        self.command_expires = float("inf")
        self.last_request = time.monotonic()
        self.stats = TickStats()
        self.running = True
        self._fast_loop = None  # compiled lock-step loop of the MuJoCo mirror, when available
        if self.config.clock == "lockstep" and self.config.fast_loop:
            from sim import mujoco_backend

            if mujoco_backend.fast_path_available(self.backend):
                self._fast_loop = mujoco_backend.run_cartesian_impedance
        b.sense_kinematics() if hasattr(b, "sense_kinematics") else b.sense()
        self._hold_here()

    # --- the 1 kHz tick --------------------------------------------------------------------
    def run_ticks(self, n: int) -> None:
        """Advance n control ticks. The loop body is the project's hottest code: keep it lean."""
        sense, actuate = self.backend.sense, self.backend.actuate
        if self.mode in ("armed", "hold") and self._fast_loop is not None:
            self._fast_loop(self.backend, self.cartesian, n, self._flag_ticks)
        elif self.mode in ("armed", "hold"):
            compute, flags, counts = self.cartesian.compute, self.cartesian.flags, self._flag_ticks
            for _ in range(n):
                s = sense()
                actuate(compute(s.q, s.dq, s.tcp_position, s.tcp_rotation, s.jacobian, s.coriolis))
                counts += flags
        else:  # disarmed / stopped: damped, gravity-compensated, no motion commanded
            tau = np.zeros(7)
            for _ in range(n):
                s = sense()
                np.multiply(-STOP_DAMPING, s.dq, out=tau)
                np.clip(tau, -self.backend.torque_limits, self.backend.torque_limits, out=tau)
                actuate(tau)

    def _collect_controller_flags(self) -> None:
        if not self._flag_ticks.any():
            return
        reasons = dict(self.cartesian.active_flags())
        for name, ticks in zip(CartesianImpedanceController.FLAG_NAMES, self._flag_ticks):
            if ticks:
                self.flags[name] = f"{ticks} ticks; last: {reasons.get(name, 'n/a')}"
        self._flag_ticks[:] = 0

    def _hold_here(self) -> None:
        """Make the measured pose the reference (no jump), keep the gripper where it is."""
        s = self.backend.state
        self.cartesian.reset(s.q, s.tcp_position, matrix_to_quat(s.tcp_rotation))
        self.cartesian.set_nullspace_posture(self.backend.home_q)

    # --- state report ----------------------------------------------------------------------
    def state_message(self) -> tuple[dict, dict]:
        b = self.backend
        # Kinematics of the post-step configuration (a tick leaves them one step behind).
        s = b.sense_kinematics() if hasattr(b, "sense_kinematics") else b.state
        self._collect_controller_flags()
        ref_pos, ref_quat = self.cartesian.reference
        arrays = {
            "q": s.q.copy(), "dq": s.dq.copy(),
            "tcp_position": s.tcp_position.copy(),
            "tcp_quaternion": matrix_to_quat(s.tcp_rotation),
            "tcp_velocity": s.jacobian @ s.dq,  # [linear m/s; angular rad/s], base frame
            "gripper_width": np.array([s.gripper_width]),
            "external_wrench": (b.external_wrench() if hasattr(b, "external_wrench") else np.zeros(6)),
            "reference_position": ref_pos, "reference_quaternion": ref_quat,
        }
        if getattr(b, "world", None) is not None:  # simulated: the task observes its objects
            arrays.update(self.task.observe(b.world, s))
        if self._condition is not None and self._condition[0] == self.mode:
            self.flags.setdefault(self._condition[1], self._condition[2])
        meta = {
            "mode": self.mode, "time": float(s.time), "command_seq": self.command_seq,
            "flags": [[k, v] for k, v in self.flags.items()],
            "gripper_target": self.gripper_target,
        }
        self.flags = {}
        return meta, arrays

    # --- requests --------------------------------------------------------------------------
    def handle(self, kind: str, meta: dict, arrays: dict) -> tuple[str, dict, dict]:
        """Answer one request. Returns (reply kind, meta, arrays); errors become "error" replies."""
        self.last_request = time.monotonic()
        handler = getattr(self, f"_on_{kind}", None)
        if handler is None:
            valid = sorted(n[4:] for n in dir(self) if n.startswith("_on_"))
            return "error", {"error": f"unknown request {kind!r}: valid requests are {valid}"}, {}
        try:
            return handler(meta or {}, arrays or {})
        except (safety.CommandRejected, ValueError, KeyError, TypeError) as error:
            return "error", {"error": f"{kind}: {error}"}, {}

    def _state_reply(self, kind: str = "state"):
        meta, arrays = self.state_message()
        return kind, meta, arrays

    def _on_hello(self, meta, arrays):
        tc = self.task.config
        info = {
            "schema": transport.SCHEMA_VERSION,
            "task": self.task.name,
            "backend": self.config.backend,
            "clock": self.config.clock,
            "control_period": self.period,
            "policy_hz": tc.policy_hz,
            "task_config": dataclasses.asdict(tc),
            "task_fields": dict(self.task.state_fields),
            "gripper_max_width": self.backend.gripper_max_width,
        }
        if meta.get("task") not in (None, self.task.name):
            return "error", {"error": f"task mismatch: this server runs {self.task.name!r}, the "
                                      f"client expects {meta['task']!r}; start the server with "
                                      f"--task {meta['task']}"}, {}
        return "hello", info, {}

    def _on_state(self, meta, arrays):
        return self._state_reply()

    def _on_stats(self, meta, arrays):
        """Real-time loop statistics since the loop started or the last {"reset": true}."""
        reply = "stats", {"loop": self.stats.summary(), "mode": self.mode}, {}
        if meta.get("reset"):
            self.stats = TickStats()  # a fresh measurement window, e.g. after start-up and reset
        return reply

    def _on_arm(self, meta, arrays):
        self._hold_here()
        self.mode = "armed"
        self.command_expires = time.monotonic() + self.config.command_deadline
        return self._state_reply()

    def _on_disarm(self, meta, arrays):
        self.mode = "disarmed"
        return self._state_reply()

    def _on_gains(self, meta, arrays):
        allowed = {f.name for f in dataclasses.fields(CartesianImpedanceGains)}
        unknown = set(meta) - allowed
        if unknown:
            raise ValueError(f"unknown gain(s) {sorted(unknown)}; valid: {sorted(allowed)}")
        self.cartesian.set_gains(dataclasses.replace(self.cartesian.gains, **meta))
        return self._state_reply()

    def _on_shutdown(self, meta, arrays):
        self.running = False
        self.mode = "disarmed"
        return "bye", {}, {}

    def _on_reset(self, meta, arrays):
        """Move to the home pose (+ optional noise) and, in the mirror, reset the task's scene."""
        seed = meta.get("seed")
        if seed is not None:
            self.rng = np.random.default_rng(int(seed))
        tc = self.task.config
        home = np.array(tc.home_q, dtype=float)
        if tc.home_joint_noise > 0:
            home += self.rng.uniform(-tc.home_joint_noise, tc.home_joint_noise, 7)
        b = self.backend
        if hasattr(b, "reset"):  # the mirror teleports; a real arm is driven there
            b.reset(home, gripper_width=b.gripper_max_width)
            self._hold_here()
            if tc.home_tcp_noise > 0:
                offset = np.zeros(3)
                offset[:2] = self.rng.uniform(-tc.home_tcp_noise, tc.home_tcp_noise, 2)
                position, quaternion = self.cartesian.reference
                self.cartesian.reset(b.state.q, position + offset, quaternion)
            self.task.reset_scene(b.world, self.rng)
            self.mode = "armed"
            self.run_ticks(int(round(self.config.settle_time / self.period)))
        else:
            self._drive_home(home)
        self.gripper_target = b.gripper_max_width
        b.set_gripper(self.gripper_target)
        self.mode = "armed"
        self.flags = {}
        self._flag_ticks[:] = 0
        self.command_expires = time.monotonic() + self.config.command_deadline
        return self._state_reply()

    def _drive_home(self, home: np.ndarray, timeout: float = 10.0) -> None:
        """Joint impedance move to `home` (real arms, real-time mode)."""
        b = self.backend
        s = b.sense()
        self.joint.reset(s.q)
        self.joint.set_reference(home)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = b.sense()
            b.actuate(self.joint.compute(s.q, s.dq))
            if np.abs(s.q - home).max() < 0.01 and np.abs(s.dq).max() < 0.02:
                break
        else:
            raise RuntimeError(f"reset: home pose not reached within {timeout} s")
        self._hold_here()

    def _command_target(self, meta, arrays):
        """Validate and safety-filter a Cartesian command; set reference and gripper."""
        if self.mode in ("disarmed", "stopped"):
            raise ValueError(f"the arm is {self.mode}: send 'reset' or 'arm' before commanding "
                             "motion (a reconnecting client never resumes motion by itself)")
        s = self.backend.state
        safe = safety.filter_command(
            arrays.get("target_position"), arrays.get("target_quaternion"), meta.get("gripper"),
            s.tcp_position, matrix_to_quat(s.tcp_rotation), self.limits,
        )
        for name, reason in safe.flags:
            self.flags[name] = reason
        self.cartesian.set_reference(safe.position, safe.quaternion)
        if safe.gripper is not None:
            self.gripper_target = float(safe.gripper)
            self.backend.set_gripper(self.gripper_target)
        self.command_seq = int(meta.get("seq", self.command_seq + 1))
        if self.mode == "hold":
            self.mode = "armed"

    def _on_step(self, meta, arrays):
        if self.config.clock != "lockstep":
            raise ValueError("'step' is for lock-step servers; this one runs in real time: send "
                             "'command' and read the state stream")
        self._command_target(meta, arrays)
        self.run_ticks(self.ticks_per_step)
        return self._state_reply()

    def _on_command(self, meta, arrays):
        if self.config.clock != "realtime":
            raise ValueError("'command' is for real-time servers; in lock-step send 'step'")
        self._command_target(meta, arrays)
        deadline = float(meta.get("deadline", self.config.command_deadline))
        self.command_expires = time.monotonic() + deadline
        return "ack", {"command_seq": self.command_seq, "mode": self.mode}, {}

    # --- watchdogs (real time) --------------------------------------------------------------
    def check_watchdogs(self, now: float) -> None:
        if self.mode in ("armed", "hold") and now - self.last_request > self.config.peer_timeout:
            self.mode = "stopped"
            self._condition = ("stopped", "peer_lost", (
                f"no request for {now - self.last_request:.2f} s (peer_timeout "
                f"{self.config.peer_timeout} s): damped stop; send 'arm' or 'reset' to resume"))
            self.flags["peer_lost"] = self._condition[2]
        elif self.mode == "armed" and now > self.command_expires:
            self.mode = "hold"
            # Not _hold_here(): resetting the controller would also zero its torque memory, and
            # the rate limiter would then cut the torque to +-1 Nm in one tick, a discontinuity a
            # real arm rejects. snap_reference keeps the torque memory.
            s = self.backend.state
            self.cartesian.snap_reference(s.tcp_position, matrix_to_quat(s.tcp_rotation))
            self._condition = ("hold", "hold", (
                f"command deadline missed by {now - self.command_expires:.3f} s: holding at the "
                "measured pose until the next command"))
            self.flags["hold"] = self._condition[2]

    # --- serving loops ------------------------------------------------------------------------
    def serve(self) -> None:
        server = transport.RequestServer(self.config.command_endpoint, source="robot_server")
        publisher = transport.Publisher(self.config.state_endpoint, source="robot_server")
        log.info("robot server: task=%s backend=%s clock=%s commands=%s state=%s",
                 self.task.name, self.config.backend, self.config.clock,
                 self.config.command_endpoint, self.config.state_endpoint)
        try:
            if self.config.clock == "lockstep":
                self._serve_lockstep(server, publisher)
            else:
                self._serve_realtime(server, publisher)
        finally:
            self.mode = "disarmed"
            server.close()
            publisher.close()
            self.backend.close()

    def _answer(self, server, request) -> None:
        kind, meta, arrays = self.handle(request.message.kind, request.message.meta,
                                         request.message.arrays)
        if kind == "error":
            server.reply_error(request, meta["error"])
        else:
            server.reply(request, kind, meta, arrays)

    def _serve_lockstep(self, server, publisher) -> None:
        while self.running:
            request = server.poll(0.1)
            if request is not None:
                self._answer(server, request)

    def _serve_realtime(self, server, publisher) -> None:
        period = self.period
        publish_every = max(1, int(round(1.0 / (self.config.state_hz * period))))
        # The work beside the control tick is spread so that no tick carries two heavy items.
        # CPU time measured in this loop (cold caches after each wait, 2-core machine): control
        # tick ~0.1 ms, building the state message ~0.3 ms, publishing it ~0.2 ms, answering a
        # request 0.3-0.5 ms; all on one tick came to ~1 ms, the whole period. So: watchdogs and
        # the state message on one tick, publishing on the next (stamped with the build time),
        # loop statistics on a third, and requests wait out the build and publish ticks (at most
        # 2 ms more latency for a request).
        build, send = 0, 1 % publish_every
        no_requests = {build, send} if publish_every > 2 else set()
        summary_tick = (1000 - publish_every // 2) % 1000  # between two state messages
        loop_summary = None
        meta = arrays = stamp = None
        self.stats = TickStats()
        next_tick = time.perf_counter()
        tick = 0
        while self.running:
            now, cpu = time.perf_counter(), time.thread_time()
            self.stats.record(max(0.0, now - next_tick))
            self.run_ticks(1)
            phase = tick % publish_every
            if phase == build:
                self.check_watchdogs(time.monotonic())
                meta, arrays = self.state_message()
                meta["loop"], loop_summary = loop_summary, None
                stamp = time.monotonic()
            if phase == send:
                publisher.publish("state", meta, arrays, stamp=stamp)
            if phase not in no_requests:
                request = server.poll(0)
                if request is not None:
                    self._answer(server, request)
            if tick % 1000 == summary_tick:
                loop_summary = self.stats.summary()  # goes out with the next state message
            self.stats.record_cpu(time.thread_time() - cpu)
            tick += 1
            next_tick += period
            wait_until(next_tick)
            if next_tick < time.perf_counter() - 0.05:  # fell far behind: resynchronise
                next_tick = time.perf_counter()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="robostack robot-server",
        description="Run an arm (the MuJoCo mirror by default) behind ZeroMQ: 1 kHz impedance "
                    "control, safety filter, state stream and request socket.",
    )
    from robostack.config import add_dataclass_arguments, dataclass_from_args, usage_errors

    add_dataclass_arguments(parser, RobotServerConfig)
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default: INFO)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(message)s")
    with usage_errors(parser):  # e.g. a bad --task-params: the message, exit code 2
        config = dataclass_from_args(RobotServerConfig, args)
    server = RobotServer(config)

    def stop(signum, frame):
        server.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
