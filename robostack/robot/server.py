"""The robot server: one arm, its 1 kHz impedance loop, and the safety rules below every policy.

Whatever sits above (an env, a teleop device, a replay) talks to this process over ZeroMQ:

* requests on a ROUTER socket (`command_endpoint`): hello, reset, step (lock-step only),
  command (real-time only), heartbeat, state, arm, disarm, gains, fault_reset, stats, shutdown,
  and the lease's acquire and release. Every request is answered, bad ones with an "error"
  reply that names the problem; the server keeps serving.
* who may move the arm: one client at a time holds the lease (robostack/robot/lease.py,
  docs/leases.md); without it a client may send hello, state, stats and acquire only. A local
  admin socket (`admin_endpoint`, ipc, owner-only) serves shutdown, disarm, state, stats and
  break_lease without one. `handle()` called in this process is trusted, as before.
* the latest state on a PUB socket (`state_endpoint`), in real-time mode at `state_hz`.

Two clocks (robostack/robot/loop.py):

* `realtime`: the loop ticks at 1 kHz of wall-clock time, as it does on a real arm. Commands carry
  a deadline; when it passes without a new command the arm holds at the measured pose (the next
  tick). When the lease holder sends no request for `peer_timeout` seconds it is presumed dead
  and its lease expires (other peers' requests do not count): damped stop, then disarmed until
  someone holding the lease explicitly sends `arm` or `reset`.
* `lockstep` (simulation only): physics is frozen between requests; each `step` advances it by
  exactly one policy period (100 ticks at 10 Hz), with the controller evaluated every tick. This
  is how training in the mirror runs many times faster than real time.

The arm is whatever backend the factory made, used by its declared control mode and capabilities
(controllers/robot_interface.py). Which law drives it is the safety supervisor's
(controllers/supervisor.py, asked before every chunk of ticks): disarmed, stopping, fault and
recovering are damped; armed holds and tracking follows commands (Cartesian impedance, the
stiffness soft-started after `arm`); homing is a real arm's reset (the joint impedance law drives
it home tick by tick while the loop goes on serving, and the reset is answered when it is there,
or with an error naming why not; the mirror teleports instead). Every transition and its reason
is in the state message. `gains` requests stay within `--gain-ceilings` (controllers/gain_limits.py).

Safety (controllers/safety.py, identical for sim and hardware): every command is checked for
shape and finiteness, its target clipped to the task's workspace box and its step capped; the
impedance law bounds force through its error clip and torque limits; every torque, whichever law
made it, reaches the arm through one rate-limited ramp; a joint moving into the margin before
its limit holds the arm. Each clamp and hold is reported in the next state message with its reason.

One thing: at ~700 lines (its settings are robostack/robot/server_config.py), the tick and the request handlers share the arm's mode, target and
torque ramp, and the safety rules only hold if every path through them sits in one place (who may
send what, the lease check in handle(), included; the lease's own rules are in lease.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import signal
import sys
import time

import numpy as np

from controllers import safety
from controllers.cartesian_impedance import CartesianImpedanceController, CartesianImpedanceGains
from controllers.gain_limits import (GAIN_SHAPES, GainCeilings, check_gains, parse_ceilings,
                                     rated_ceilings, soft_start_gains)
from controllers.joint_impedance import HomingMove, JointImpedanceController
from controllers.robot_interface import ControlMode
from controllers.rotations import matrix_to_quat
from controllers.supervisor import ENERGIZED, Supervisor
from robostack import transport
from robostack.robot import lease, loop
from robostack.robot.images import LockstepImages
from robostack.robot.backends import check_drivable, make_backend
from robostack.robot.loop import TickStats
from robostack.robot.position_arm import AdmittanceLaw, ImpedanceTargets, JointMoveHome, parse_admittance_gains
from robostack.robot.server_config import RobotServerConfig  # noqa: F401 (its home, re-exported)
from tasks import make_task, parse_task_params

log = logging.getLogger("robostack.robot.server")

STOP_DAMPING = np.array([20.0, 20.0, 20.0, 20.0, 5.0, 5.0, 5.0])  # Nms/rad, damped stop


class RobotServer:
    """The server's logic, transport-free: `handle()` answers one request; the loops of
    robostack/robot/loop.py connect it to ZeroMQ. Tests and the in-process env drive `handle()`
    directly."""

    def __init__(self, config: RobotServerConfig | None = None, task=None, backend=None):
        self.config = config or RobotServerConfig()
        if task is not None and self.config.task_params:
            raise ValueError("task_params is for a server that builds its task: this one was given "
                             "a task object (make it with make_task(name, params=...))")
        self.task = task or make_task(self.config.task,
                                      params=parse_task_params(self.config.task, self.config.task_params))
        self.backend = backend or make_backend(self.config.backend, self.task, self.config)
        b = self.backend
        check_drivable(b)
        self.period = b.control_period
        self.ticks_per_step = int(round(1.0 / (self.task.config.policy_hz * self.period)))
        if abs(self.ticks_per_step * self.period * self.task.config.policy_hz - 1.0) > 1e-9:
            raise ValueError("the policy period must be a whole number of control ticks")
        tc = self.task.config
        low, high = np.array(tc.workspace_min, float), np.array(tc.workspace_max, float)
        if self.config.box() is not None:  # bring-up: only inside both boxes
            low, high = np.maximum(low, self.config.box()[0]), np.minimum(high, self.config.box()[1])
            if not (low < high).all():
                raise ValueError(f"workspace_box {self.config.workspace_box!r} does not overlap the task's "
                                 f"box {tc.workspace_min} - {tc.workspace_max}")
        self.limits = safety.SafetyLimits(
            workspace_min=tuple(low), workspace_max=tuple(high), gripper_max=b.gripper_max_width,
            max_position_step=self.config.max_position_step, max_rotation_step=self.config.max_rotation_step)
        # The law: Cartesian impedance for a torque-controlled arm; admittance for a position-
        # controlled one (robostack/robot/position_arm.py), behind the same few calls.
        self.position_arm = b.control_mode is ControlMode.CARTESIAN_POSITION
        self._gains_info = (None, {})  # (the gains it describes, the report): see _operator_info
        # An arm with a Cartesian impedance law of its own (franky's tracker) takes the targets.
        self.own_impedance = self.position_arm and getattr(b, "own_impedance_law", None) is not None
        if self.own_impedance:
            self.gains = b.own_impedance_law
            self.law = ImpedanceTargets(b)
        elif self.position_arm:
            self.gains = parse_admittance_gains(self.config.admittance_gains)
            self.law = AdmittanceLaw(self.period, self.gains)
        else:
            self.law = CartesianImpedanceController(
                dt=self.period, filter_coefficient=min(1.0, self.period / self.config.smoothing_time))
            # The start option tightens the arm's rating; the starting gains are brought under it.
            self.gain_ceilings = parse_ceilings(self.config.gain_ceilings, rated_ceilings(b.torque_limits))
            self.gains = _within(self.law.gains, self.gain_ceilings)  # full; the law may run scaled
            self.law.set_gains(self.gains)
        self.joint = JointImpedanceController(dt=self.period)
        # Every torque, whichever law made it, reaches the arm through this one ramp.
        self.ramp = safety.TorqueRamp(self.period, b.torque_limits)
        self.joint_guard = safety.JointLimitGuard(b.joint_lower, b.joint_upper)
        self._homing: HomingMove | None = None  # the move of a reset on a real arm, while it runs
        self.reset_reply = loop.DeferredReply()  # a real arm's reset is answered when home
        self.rng = np.random.default_rng(self.config.seed)
        # Which law drives the arm is the supervisor's (controllers/supervisor.py). Its clock: wall
        # time in real time; in lock-step the ticks run (simulated time, which a reset does not
        # turn back).
        self._ticks = 0
        realtime = self.config.clock == "realtime"
        self._now = time.monotonic if realtime else (lambda: self._ticks * self.period)
        self._peers = realtime  # lock-step: one client drives, any peer counts as it
        self._peer = None  # the sender of the request being answered
        self.supervisor = Supervisor(self.config.supervisor_config(), now=self._now())
        self._access = "local"  # of the request being answered (see handle)
        self._law = "damped"  # the law of the latest supervisor tick
        self._scale = 1.0  # the soft start's stiffness scale now applied to self.gains
        self.flags: dict[str, str] = {}  # flag -> reason, since the last state report
        self._flag_ticks = np.zeros(len(self.law.FLAG_NAMES), dtype=np.int64)
        self.gripper_target = b.gripper_max_width
        self.command_seq = -1
        self.stats = TickStats()
        self.loop_summary = None  # real time: the loop's latest TickStats.summary() (see _on_stats)
        self.lease = lease.Lease(self.config.lease_timeout())
        self.images = LockstepImages(b, self.task, self.config.clock)  # robostack/robot/images.py
        self._hello = self._hello_info()  # fixed for the server's life: built once, not per request
        self.running = True
        compiled = self.config.clock == "lockstep" and self.config.fast_loop and b.capabilities.compiled_impedance_loop
        self._fast_loop = b.run_impedance_ticks if compiled else None  # the same ticks, compiled
        ticks = loop.admittance_ticks if self.position_arm else loop.cartesian_ticks
        self._cartesian_ticks = self._fast_loop or functools.partial(ticks, b)
        b.latest_state()
        self._hold_here()

    # --- the 1 kHz tick --------------------------------------------------------------------
    @property
    def mode(self) -> str:
        """The supervisor's state (controllers.supervisor.STATES)."""
        return self.supervisor.state

    def run_ticks(self, n: int) -> None:
        """Advance n control ticks in the law the supervisor says; it is asked before every
        chunk (real time runs one tick at a time, so a missed deadline holds on the next tick), a
        tick can change the state (the joint-limit guard trips, homing ends), and the remaining
        ticks follow the new law. While the soft start ramps, chunks are at most 10 ticks."""
        while n > 0:
            out = self._supervise()
            chunk = n if out.stiffness_scale >= 1.0 else min(n, 10)
            if out.mode in ("hold", "track"):
                done = self._cartesian_ticks(self.law, chunk, self._flag_ticks, self.ramp, self.joint_guard)
                if self.joint_guard.tick_counts[1]:
                    self._joint_limit_hold()
                if self.position_arm and self.law.sensor_fault:
                    self.supervisor.fault(self._now(), "wrench_not_finite", self.law.sensor_fault)
                    self.law.sensor_fault = ""
            elif out.mode == "homing" and self._homing is not None:
                if self.position_arm:
                    done = loop.joint_move_ticks(self.backend, self._homing, chunk)
                else:
                    done = loop.homing_ticks(self.backend, self._homing, chunk, self.ramp)
                if self._homing.status != "moving":
                    self._end_homing()
            elif self.position_arm:
                done = loop.halted_ticks(self.backend, chunk)
            else:
                done = loop.damped_ticks(self.backend, STOP_DAMPING, chunk, self.ramp)
            n -= done
            self._ticks += done

    def _supervise(self):
        """One supervisor tick, and what it asks for done: engage the Cartesian law at the measured
        pose, hold there, recover the backend, scale the stiffness, end a homing move."""
        b, sup = self.backend, self.supervisor
        out = sup.tick(self._now(), b.state.dq, b.read_faults() if b.capabilities.faults else ())
        self._law = out.mode
        if out.engage:
            self._hold_here()
        elif out.hold_here:  # keeps the torque memory: the hold starts from the torque it has
            s = b.state
            self.law.snap_reference(s.tcp_position, matrix_to_quat(s.tcp_rotation))
        if out.recover and b.capabilities.fault_recovery:
            b.recover_faults()
        scale = out.stiffness_scale if out.mode in ("hold", "track") else 1.0
        if abs(scale - self._scale) >= 0.01 or (scale == 1.0 and self._scale != 1.0):
            self._scale = scale
            self._apply_gains()
        if self._homing is not None and out.mode != "homing":
            self._end_homing(out.reason)
        return out

    def _apply_gains(self) -> None:
        """The gains set, soft-started by the supervisor's stiffness scale."""
        if self.position_arm:
            self.law.set_stiffness_scale(self._scale)
        else:
            self.law.set_gains(soft_start_gains(self.gains, self._scale))

    def _joint_limit_hold(self) -> None:
        """The guard tripped: hold at the measured pose (torque memory kept, so no torque step),
        and say why until the next command moves the arm on."""
        s = self.backend.state
        self.law.snap_reference(s.tcp_position, matrix_to_quat(s.tcp_rotation))
        reason = self.joint_guard.trip(s.q, s.dq)
        self.supervisor.hold(self._now(), reason)
        self.flags["joint_limit"] = reason

    def _collect_controller_flags(self) -> None:
        if not self._flag_ticks.any():
            return
        reasons = dict(self.law.active_flags())
        for name, ticks in zip(self.law.FLAG_NAMES, self._flag_ticks):
            if ticks:
                self.flags[name] = f"{ticks} ticks; last: {reasons.get(name, 'n/a')}"
        self._flag_ticks[:] = 0

    def _hold_here(self) -> None:
        """Make the measured pose the reference (no jump), keep the gripper where it is."""
        s = self.backend.state
        self.law.reset(s.q, s.tcp_position, matrix_to_quat(s.tcp_rotation))
        self.law.set_nullspace_posture(self.backend.home_q)

    # --- state report ----------------------------------------------------------------------
    def state_message(self) -> tuple[dict, dict]:
        b = self.backend
        s = b.latest_state()  # the post-step configuration (a tick leaves it one step behind)
        self._collect_controller_flags()
        self.flags.update(self.ramp.take_report() + self.joint_guard.take_report(s.q))
        ref_pos, ref_quat = self.law.reference
        arrays = {
            "q": s.q.copy(), "dq": s.dq.copy(),
            "tcp_position": s.tcp_position.copy(),
            "tcp_quaternion": matrix_to_quat(s.tcp_rotation),
            # [linear m/s; angular rad/s], base frame; an arm that reads it directly (a UR) says so
            "tcp_velocity": s.extras["tcp_velocity"].copy() if "tcp_velocity" in s.extras else s.jacobian @ s.dq,
            "gripper_width": np.array([s.gripper_width]),
            "external_wrench": b.external_wrench() if b.capabilities.external_wrench else np.zeros(6),
            "reference_position": ref_pos, "reference_quaternion": ref_quat,
        }
        if b.capabilities.world:  # simulated: the task observes its objects
            arrays.update(self.task.observe(b.world, s))
        meta = {
            # The supervisor's state, law and report (its reason and latest transitions are
            # repeated in every message: the stream is lossy, subscribers keep the newest only).
            "mode": self.mode, "control": self._law, "supervisor": self.supervisor.report(),
            "stiffness_scale": self._scale,  # the soft start: 0..1 of the gains set
            "time": float(s.time), "command_seq": self.command_seq,
            "flags": [[k, v] for k, v in self.flags.items()],
            "gripper_target": self.gripper_target,
        }
        self.flags = {}
        return meta, arrays

    # --- requests --------------------------------------------------------------------------
    def handle(self, kind: str, meta: dict, arrays: dict, peer=None,
               access: str = "local") -> tuple[str, dict, dict]:
        """Answer one request. Returns (reply kind, meta, arrays); errors become "error" replies,
        whatever raised them: no request can take the server down. `access`: "local" (a caller
        in this process: trusted, `peer` is the controlling peer's name, real time only),
        "remote" (the command socket: what the lease allows, the lease token is the peer) or
        "admin" (the admin socket: lease.ADMIN_REQUESTS only)."""
        self._peer = peer if self._peers else None
        handler = getattr(self, f"_on_{kind}", None) if isinstance(kind, str) else None
        if handler is None:
            valid = sorted(n[4:] for n in dir(self) if n.startswith("_on_"))
            return "error", {"error": f"unknown request {str(kind)[:40]!r}: valid requests are {valid}"}, {}
        if not isinstance(meta or {}, dict) or not isinstance(arrays or {}, dict):
            return "error", {"error": f"{kind}: meta and arrays must be dicts, got "
                                      f"{type(meta).__name__} and {type(arrays).__name__}"}, {}
        self._access = access
        if access == "admin":
            if kind not in lease.ADMIN_REQUESTS:
                return "error", {"error": f"{kind!r} is not served on the admin socket, only "
                                          f"{sorted(lease.ADMIN_REQUESTS)}; send it on the command "
                                          "socket with the lease"}, {}
            self._peer = None
        elif access == "remote" and kind in lease.OPEN_REQUESTS:
            self._peer = None  # reading (or asking for the lease) controls nothing
        elif access == "remote":
            if kind == "break_lease":
                return "error", {"error": "'break_lease' is served on the admin socket only "
                                          f"({self.config.admin()})"}, {}
            now = time.monotonic()
            try:
                self.lease.check(now, (meta or {}).get("lease"))
            except ValueError as refused:
                return "error", {"error": f"{kind}: {refused}"}, {}
            self._peer = self.lease.token  # the supervisor's controlling peer: the token
            meta = {k: v for k, v in meta.items() if k != "lease"}  # the handlers' fields only
            self.supervisor.heartbeat(self._now(), self._peer)  # every request of the holder counts
        if self._homing is not None and kind in ("arm", "disarm", "reset", "shutdown", "release",
                                                  "break_lease"):
            self._end_homing(f"{kind!r} requested")  # the waiting reset gets an error reply
        try:
            reply = handler(meta or {}, arrays or {})
            if self._access == "remote" and self._peer is not None and self.lease.token == self._peer:
                self.lease.renewed = time.monotonic()  # a long request (a reset) must not expire it
            return reply
        except (safety.CommandRejected, ValueError, KeyError, TypeError) as error:
            return "error", {"error": f"{kind}: {error}"}, {}
        except Exception as error:  # a bug of ours, found by a request: hold, log, answer
            log.exception("%r request failed unexpectedly", kind)
            self.supervisor.hold(self._now(), f"{kind!r} failed: holding here")
            self.flags["internal_error"] = f"{kind!r} failed: holding here"
            return "error", {"error": f"{kind}: internal error ({type(error).__name__}: {error}); "
                                      f"the server logged its traceback and goes on serving"}, {}

    def _state_reply(self, kind: str = "state", images=()):
        meta, arrays = self.state_message()
        if images:  # rendered from the state just sensed: the image and the state are one instant
            arrays.update(self.images.render(images))
            meta["image_time"] = meta["time"]
        return kind, meta, arrays

    def _hello_info(self) -> dict:
        tc, b = self.task.config, self.backend
        return {
            "schema": transport.SCHEMA_VERSION, "task": self.task.name, "clock": self.config.clock,
            "backend": self.config.backend, "control_mode": b.control_mode.value,
            "capabilities": dataclasses.asdict(b.capabilities),
            "control_period": self.period, "policy_hz": tc.policy_hz,
            "task_config": dataclasses.asdict(tc), "task_fields": dict(self.task.state_fields),
            "gripper_max_width": b.gripper_max_width,
            "lease_timeout": self.config.lease_timeout(),
            # Where the rest of this server is, and the joint limits, for tools (robostack robot).
            "state_endpoint": self.config.state_endpoint, "admin_endpoint": self.config.admin(),
            "joint_lower": np.asarray(b.joint_lower, dtype=float).tolist(),
            "joint_upper": np.asarray(b.joint_upper, dtype=float).tolist(),
            # {camera: [height, width]} this server renders on request (lock-step mirror only)
            "cameras": {name: list(size) for name, size in self.images.offered.items()},
        }

    def _on_hello(self, meta, arrays):
        if meta.get("task") not in (None, self.task.name):
            return "error", {"error": f"task mismatch: this server runs {self.task.name!r}, the "
                                      f"client expects {str(meta['task'])[:60]!r}; start the server "
                                      f"with --task {str(meta['task'])[:60]}"}, {}
        return "hello", dict(self._hello), {}  # a copy: an in-process caller may keep and edit it

    def _on_state(self, meta, arrays):
        return self._state_reply(images=self.images.requested(meta))

    def _on_stats(self, meta, arrays):
        """Real-time loop statistics since the loop started or the last {"reset": true}. In real
        time the summary is the one the loop computes once a second between ticks' requests
        (`loop_summary`, up to 1 s old, "age_s" says how old): computing it here cost a tick
        ~1 ms (bench_fuzz.py); the counters are read fresh."""
        if self.loop_summary is not None:
            summary = dict(self.loop_summary[1])
            summary.update(self.stats.counters())
            summary["age_s"] = time.perf_counter() - self.loop_summary[0]
        else:
            summary = self.stats.summary()
        reply = "stats", {"loop": summary, "mode": self.mode, **self._operator_info()}, {}
        if meta.get("reset"):
            self.stats = TickStats(period=self.stats.period)  # a fresh window, e.g. after start-up
            self.loop_summary = None
        return reply

    def _operator_info(self) -> dict:
        """Who holds the lease and which gains are in force (as set: None is a damping derived
        as 2 sqrt(K); `damping_in_force` has the numbers), for `stats` readers such as
        `robostack robot state`. The gains part is rebuilt only when the gains change."""
        now = time.monotonic()
        live = self.lease.live(now)
        if self._gains_info[0] is not self.gains and self.own_impedance:
            self._gains_info = (self.gains, {"law": "the arm's own Cartesian impedance",
                                             "gains": dataclasses.asdict(self.gains)})
        elif self._gains_info[0] is not self.gains and self.position_arm:
            self._gains_info = (self.gains, {"law": "admittance", "gains": dataclasses.asdict(self.gains),
                                             "error_clip_m": self.gains.error_clip})
        elif self._gains_info[0] is not self.gains:
            g, c = self.gains, self.gain_ceilings
            vec = g.packed()[0]
            self._gains_info = (g, {
                "gains": {n: None if getattr(g, n) is None else np.asarray(getattr(g, n), dtype=float).tolist()
                          for n in GAIN_SHAPES},
                "damping_in_force": {"translational_damping": vec[6:9].tolist(),
                                     "rotational_damping": vec[9:12].tolist(),
                                     "nullspace_damping": vec[25:32].tolist()},
                "gain_ceilings": {f.name: np.asarray(getattr(c, f.name), dtype=float).tolist()
                                  for f in dataclasses.fields(c)}})
        return {"lease": {"held": live, "holder": self.lease.holder if live else "",
                          "seconds_left": self.lease.seconds_left(now), "timeout": self.lease.timeout},
                **self._gains_info[1]}

    def _on_heartbeat(self, meta, arrays):
        """The controlling peer is alive (counts only from the peer that armed); over the
        command socket it also renews the lease (handle() did)."""
        counted = self.supervisor.heartbeat(self._now(), self._peer)
        return "ack", {"counted": counted, "mode": self.mode}, {}

    # --- the lease (robostack/robot/lease.py) --------------------------------------------------------
    def _on_acquire(self, meta, arrays):
        """Take the lease (or renew one's own): a new holder finds the arm disarmed (a damped stop
        if it was energized): arming is explicit, reconnection never resumes motion."""
        holder = meta.get("holder", "")
        holder = holder[:80] if isinstance(holder, str) else ""
        token, new = self.lease.acquire(time.monotonic(), holder or "unnamed client",
                                        meta.get("lease"))
        if new:
            self._stop_for(f"lease acquired by {holder or 'unnamed client'!r}")
            self.supervisor.heartbeat(self._now(), token)
            log.info("lease acquired by %r", holder)
        timeout = self.lease.timeout
        return "lease", {"lease": token, "holder": self.lease.holder, "timeout": timeout,
                         "heartbeat_period": timeout / 5, "mode": self.mode}, {}

    def _on_release(self, meta, arrays):
        """Give the lease up; an energized arm makes a damped stop."""
        holder = self.lease.holder
        self.lease.release()
        self._stop_for(f"lease released by {holder!r}")
        return "released", {"mode": self.mode}, {}

    def _stop_for(self, reason: str) -> None:
        """The controller changed: an energized arm makes a damped stop (a fault stays a fault)."""
        if self.mode in ENERGIZED:
            self.supervisor.disarm(self._now(), reason)
            self._supervise()

    def _on_break_lease(self, meta, arrays):
        """Admin socket (or in-process): end whoever's lease; an energized arm makes a damped stop."""
        holder = self.lease.holder if self.lease.live(time.monotonic()) else None
        self.lease.release()
        self._stop_for(f"lease of {holder!r} broken on the admin socket")
        return "released", {"broken": holder, "mode": self.mode}, {}

    def _on_arm(self, meta, arrays):
        self.supervisor.arm(self._now(), self._peer)  # held at the measured pose, soft-started
        self._supervise()
        return self._state_reply()

    def _on_disarm(self, meta, arrays):
        self.supervisor.disarm(self._now(), "disarm requested")
        self._supervise()
        return self._state_reply()

    def _on_gains(self, meta, arrays):
        # Only within the ceilings the server was started with (GainRefused, a ValueError, names
        # the gain, its value, the ceiling and how to raise it); a refused request changes nothing.
        if self.own_impedance:
            raise ValueError(
                f"this arm runs its own Cartesian impedance law ({self.config.backend}, "
                f"--franka-law tracker), whose gains are fixed at start; restart the server to "
                f"change them, or use --franka-law torque, whose gains this request sets")
        if self.position_arm:
            raise ValueError(
                f"this arm is position-controlled ({self.config.backend}): its law is the admittance "
                f"law, whose gains are fixed at start (--admittance-gains, e.g. force_bound=10); "
                f"{sorted(str(k)[:40] for k in meta)[:8]} are Cartesian impedance gains, which it has none of")
        self.gains = check_gains(meta, self.gain_ceilings, self.gains)
        self._apply_gains()
        return self._state_reply()

    def _on_fault_reset(self, meta, arrays):
        """An operator's fault reset (`robostack robot fault-reset`): a fault, latched or not,
        is recovered through the backend and ends disarmed (Supervisor.clear_fault); it never
        energizes the arm. The reply's `fault_reset` says "started" or "no fault". Real time:
        the reply says "recovering" and the state tells how it ends; in lock-step, where physics
        and the supervisor's clock advance only inside requests, the recovery runs here."""
        started = self.supervisor.clear_fault(self._now())
        self._supervise()  # asks the backend to recover now
        if started and self.config.clock == "lockstep":
            c = self.supervisor.config
            ticks = int((c.recovery_timeout + c.recovery_settle) / self.period) + 20
            while self.mode == "recovering" and ticks > 0:
                self.run_ticks(10)
                ticks -= 10
        kind, reply, state_arrays = self._state_reply()
        reply["fault_reset"] = "started" if started else "no fault"
        return kind, reply, state_arrays

    def _on_shutdown(self, meta, arrays):
        self.running = False
        self.supervisor.disarm(self._now(), "shutdown requested")
        return "bye", {}, {}

    def _on_reset(self, meta, arrays):
        """Move to the home pose (+ optional noise) and, in the mirror, reset the task's scene.
        meta `drive`: true drives the arm home with the joint impedance law even in the mirror
        (what a real arm's reset does; the scene stays as it is), for rehearsing a bring-up."""
        seed = transport.meta_int(meta, "seed", None, low=0)
        drive = meta.get("drive", False)
        if not isinstance(drive, bool):
            raise ValueError(f"drive: true or false, got {type(drive).__name__}")
        images = self.images.requested(meta)
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        tc, b = self.task.config, self.backend
        # The task's home posture is a Panda's; an arm of another joint count homes to its own.
        home = np.array(tc.home_q if len(tc.home_q) == len(b.home_q) else b.home_q, dtype=float)
        if tc.home_joint_noise > 0:
            home += self.rng.uniform(-tc.home_joint_noise, tc.home_joint_noise, len(home))
        outside = safety.joint_limit_guard(home, b.joint_lower, b.joint_upper, margin=0.0)
        if outside:
            raise ValueError("home posture: " + "; ".join(r for _, r in outside) + "; fix the task's home_q")
        if b.capabilities.simulated_reset and not drive:  # the mirror teleports; a real arm is driven
            self.joint_guard.latched.clear()
            self.supervisor.reset(self._now(), teleport=True, peer=self._peer)  # full stiffness
            b.reset(home, gripper_width=b.gripper_max_width)
            self.ramp.restart()  # the arm is at rest with no torque: nothing to ramp from
            self._supervise()  # engages the Cartesian law at the home pose
            if tc.home_tcp_noise > 0:
                offset = np.zeros(3)
                offset[:2] = self.rng.uniform(-tc.home_tcp_noise, tc.home_tcp_noise, 2)
                position, quaternion = self.law.reference
                if self.position_arm:  # the commanded pose moves there, smoothly, while settling
                    self.law.set_reference(position + offset, quaternion)
                else:
                    self.law.reset(b.state.q, position + offset, quaternion)
            if b.capabilities.world:  # the scene's objects are simulated too
                self.task.reset_scene(b.world, self.rng)
            self.run_ticks(int(round(self.config.settle_time / self.period)))
            return self._armed_after_reset(images)
        if self.position_arm and not callable(getattr(b, "move_joints", None)):
            raise ValueError(f"drive=true needs the arm's joint moves (move_joints), which "
                             f"{type(b).__name__} does not have: it teleports home; send 'reset' "
                             "without drive")
        self.supervisor.reset(self._now(), teleport=False, peer=self._peer)  # MotionRefused: error reply
        self.joint_guard.latched.clear()
        if b.capabilities.world:  # a real arm's virtual markers (a goal point): drawn now
            self.task.reset_scene(b.world, self.rng)
        return self._start_homing(home)

    def _armed_after_reset(self, images=()):
        self.gripper_target = self.backend.gripper_max_width
        self.backend.set_gripper(self.gripper_target)
        self.flags = {}
        self._flag_ticks[:] = 0
        return self._state_reply(images=images)

    # --- homing: a real arm's reset, driven tick by tick ------------------------------------------
    def _start_homing(self, home: np.ndarray):
        """Drive home with the joint impedance law from the next tick on. In real time the reply
        is deferred until the move ends (the loop keeps ticking and serving meanwhile); in
        lock-step, where physics only advances inside requests, the move runs here."""
        timeout = round(self.config.home_timeout / self.period)
        if self.position_arm:  # the arm's own joint move (a UR's moveJ), watched tick by tick
            self._homing = JointMoveHome(self.backend, home, self.config.home_speed, timeout)
        else:
            self._homing = HomingMove(self.joint, home, self.backend.state.q, self.ramp.commanded,
                                      timeout_ticks=timeout)
        if self.config.clock == "realtime":
            return loop.DEFERRED, {}, {}
        while self._homing is not None:
            self.run_ticks(self.ticks_per_step)
        return self.reset_reply.result

    def _end_homing(self, aborted_by: str | None = None) -> None:
        """The move home ended: arrived (armed), timed out (damped stop), or aborted (disarmed)."""
        move, self._homing = self._homing, None
        if aborted_by is not None:  # the supervisor's transition (or the request) says why
            reply = "error", {"error": f"reset: homing aborted: {aborted_by}"}, {}
        elif move.status == "arrived":
            self.supervisor.homing_done(self._now(), True)
            self._hold_here()
            reply = self._armed_after_reset()
        else:  # timed out: something is in the way, or home is out of reach
            reason = (f"home posture not reached within {self.config.home_timeout} s: "
                      f"{move.remaining_error(self.backend.state.q)}; damped stop: clear the way "
                      "(or fix the task's home_q) and send 'reset' again")
            self.supervisor.homing_done(self._now(), False, reason)
            self.flags["home_failed"] = reason
            reply = "error", {"error": f"reset: {reason}"}, {}
        self.reset_reply.send(reply)

    def _command_target(self, meta, arrays, valid_for=None):
        """Validate and safety-filter a Cartesian command, let the supervisor admit it (armed, from
        the controlling peer, a deadline it allows: MotionRefused names why not); set reference
        and gripper."""
        for name in ("target_position", "target_quaternion"):  # complex or bool: refused, not cast
            dtype = np.asarray(arrays[name]).dtype if name in arrays else np.dtype(float)
            if dtype.kind not in "iuf":
                raise ValueError(f"{name} has dtype {dtype}: send real numbers (float64)")
        s = self.backend.state
        tcp_quaternion = matrix_to_quat(s.tcp_rotation)
        safe = safety.filter_command(
            arrays.get("target_position"), arrays.get("target_quaternion"), meta.get("gripper"),
            s.tcp_position, tcp_quaternion, self.limits,
        )
        self.supervisor.command(self._now(), valid_for, self._peer)  # raises unless motion is allowed
        self.flags.update(safe.flags)
        refusal = None  # while a joint is held off its limit, nothing moves it further toward it
        if self.joint_guard.latched:
            refusal = self.joint_guard.refusal(s.q, s.jacobian, s.tcp_position, tcp_quaternion,
                                               safe.position, safe.quaternion)
        if refusal is None:
            self.law.set_reference(safe.position, safe.quaternion)
        else:  # admitted, but not followed: the arm holds where it is
            self.supervisor.hold(self._now(), refusal)
            self.flags["joint_limit"] = refusal
        if safe.gripper is not None:
            self.gripper_target = float(safe.gripper)
            self.backend.set_gripper(self.gripper_target)
        self.command_seq = transport.meta_int(meta, "seq", self.command_seq + 1, low=-1)

    def _on_step(self, meta, arrays):
        if self.config.clock != "lockstep":
            raise ValueError("'step' is for lock-step servers; this one runs in real time: send "
                             "'command' and read the state stream")
        images = self.images.requested(meta)  # checked before the arm moves
        self._command_target(meta, arrays)
        self.run_ticks(self.ticks_per_step)
        return self._state_reply(images=images)

    def _on_command(self, meta, arrays):
        if self.config.clock != "realtime":
            raise ValueError("'command' is for real-time servers; in lock-step send 'step'")
        # Finite and positive: a NaN deadline would never expire (now > NaN is always False).
        deadline = transport.meta_float(meta, "deadline", self.config.command_deadline,
                                        low=0.0, high=3600.0)
        self._command_target(meta, arrays, valid_for=deadline)
        return "ack", {"command_seq": self.command_seq, "mode": self.mode}, {}

    # --- serving loops ------------------------------------------------------------------------
    def serve(self) -> None:
        """Bind the configured endpoints and serve until shutdown (robostack/robot/loop.py)."""
        log.info("robot server: task=%s backend=%s clock=%s commands=%s state=%s admin=%s",
                 self.task.name, self.config.backend, self.config.clock,
                 self.config.command_endpoint, self.config.state_endpoint, self.config.admin())
        try:
            loop.serve(self)
        finally:
            self.release()

    def release(self) -> None:
        """Disarm and release the arm, once. The loop calls it as soon as it stops ticking: a
        real arm's graceful stop (the Franka's TorqueStopMotion) needs the torque stream that
        franky's 50 ms watchdog ends otherwise."""
        if getattr(self, "_released", False):
            return
        self._released = True
        if self._homing is not None:
            self._end_homing("the server stopped")
        self.supervisor.disarm(self._now(), "server stopped")
        self.images.close()
        self.backend.close()


def _within(gains: CartesianImpedanceGains, ceilings: GainCeilings) -> CartesianImpedanceGains:
    """`gains` with every number above its ceiling lowered to it (a start option may tighten
    the ceilings below the default gains); GainRefused if they still break one (a spring-force
    ceiling below the default stiffness x clip: name the gains in the start option too)."""
    lowered = {}
    for name, (n, _) in GAIN_SHAPES.items():
        value = getattr(gains, name)
        if value is None:  # a damping derived from the (lowered) stiffness
            continue
        a = np.broadcast_to(np.asarray(value, dtype=float), (n,))
        top = ceilings.ceiling(name)
        if (a > top).any():
            lowered[name] = float(min(a[0], top[0])) if n == 1 else np.minimum(a, top).tolist()
    return check_gains(lowered, ceilings, gains)


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
    try:
        server = RobotServer(config)
    except ValueError as error:  # e.g. a task a real arm cannot run: a usage error, no traceback
        parser.error(str(error))
    except (ConnectionError, ImportError) as error:  # a real arm not reachable, its SDK missing
        parser.exit(1, f"robostack robot-server: {error}\n")

    def stop(signum, frame):
        server.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
