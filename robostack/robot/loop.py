"""The robot server's loops: the control ticks of each mode, and the two clocks around them.

The ticks (the project's hottest code: keep them lean), one control law each, every torque
through the one TorqueRamp:
* `cartesian_ticks`: the Cartesian impedance law and the joint-limit guard (armed, hold). A
  backend with the capability `compiled_impedance_loop` runs the very same tick compiled, with
  the same signature (`backend.run_impedance_ticks`).
* `homing_ticks`: the joint impedance move home of a real arm's reset.
* `damped_ticks`: disarmed / stopped: damped, gravity compensated, no motion commanded.
* `admittance_ticks`, `halted_ticks`, `joint_move_ticks`: the same three for a position-
  controlled arm (a UR), whose own servo follows the admittance law's tcp pose; no torque.

The clocks connect a RobotServer to its sockets (the command socket, whose requests the lease
governs, and the local admin socket: docs/leases.md); they only call its public side (handle,
run_ticks, release, state_message, reset_reply, stats, loop_summary, running):
* `serve_lockstep`: physics is frozen between requests; a request is answered as it arrives.
* `serve_realtime`: the 1 kHz tick of wall-clock time a real arm runs on (`wait_until` paces it,
  `TickStats` measures it); between ticks (the supervisor ticks with the control tick) it publishes the state and
  answers requests, spread so that no tick carries two heavy items.

What a request may cost a real-time tick is bounded: at most one request is received, decoded
and answered per tick, its frames are bounded by the command socket (ZMQ_MAXMSGSIZE,
RobotServerConfig.max_request_bytes; a peer sending more is disconnected by ZeroMQ's I/O
thread, outside the tick) and so is its frame count (sockets.RequestServer). The alternative, a
receiving thread with a queue, was not built: in CPython a decode in another thread holds the
GIL as long as it would here. Objects alive when the loop starts are frozen out of the garbage
collector (see serve_realtime). Nothing a request does raises out of the loop: an unexpected
error is logged with its traceback and answered with an "error" reply. TickStats reports the
worst request per tick and every missed tick; benchmarks/bench_fuzz.py measures them.
"""

from __future__ import annotations

import gc
import logging
import os
import time

import numpy as np

from robostack import transport

log = logging.getLogger("robostack.robot.loop")

DEFERRED = "deferred"  # a handler's reply kind when the reply follows later (see DeferredReply)


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
    the tick late (other processes competing for the cores, no real-time priority).

    Percentiles hide rare events, so beside them it counts every tick since the start of the
    window that started more than one period late (`missed_ticks`), keeps the worst lateness
    (`stall_max_ms`) whatever the ring holds, and the worst time one request took inside a
    tick (receive, decode, handle, reply): wall time (`request_max_ms`, which includes any
    preemption by the OS meanwhile) and this thread's CPU time (`request_cpu_max_ms`, what the
    request itself cost)."""

    def __init__(self, size: int = 10_000, period: float = 0.001):
        self.lateness = np.zeros(size)
        self.cpu = np.zeros(size)
        self.period = period
        self.count = 0
        self.missed = 0  # ticks that started more than one period late
        self.stall_max = 0.0  # s, the latest start seen
        self.requests = 0
        self.request_max = 0.0  # s, the longest one request took inside a tick
        self.request_max_kind = ""  # what that request was ("" if it was refused undecoded)
        self.request_cpu_max = 0.0  # s of this thread's CPU time, the most one request took
        self.request_cpu_max_kind = ""
        self.slow_requests = 0  # requests that took more than a period of CPU time
        self.started = time.perf_counter()

    def record(self, late: float) -> None:
        self.lateness[self.count % len(self.lateness)] = late
        self.count += 1
        if late > self.period:
            self.missed += 1
            if late > self.stall_max:
                self.stall_max = late

    def record_cpu(self, seconds: float) -> None:
        """The CPU time of the tick last passed to record()."""
        self.cpu[(self.count - 1) % len(self.cpu)] = seconds

    def record_request(self, seconds: float, cpu: float, kind: str) -> None:
        """Wall and CPU time one request took in a tick, from polling the socket to the reply."""
        self.requests += 1
        if seconds > self.request_max:
            self.request_max, self.request_max_kind = seconds, kind
        if cpu > self.period:
            self.slow_requests += 1
        if cpu > self.request_cpu_max:
            self.request_cpu_max, self.request_cpu_max_kind = cpu, kind

    @staticmethod
    def _percentiles_ms(values: np.ndarray) -> tuple[float, float, float]:
        """Nearest-rank p50, p99 and max in ms. np.partition, not np.percentile: this runs inside
        the 1 kHz loop, where np.percentile costs ~0.2 ms per call on 10,000 samples."""
        n = len(values)
        ranks = [(n - 1) // 2, min(n - 1, int(np.ceil(0.99 * n)) - 1), n - 1]
        p50, p99, top = np.partition(values, ranks)[ranks]
        return float(p50 * 1e3), float(p99 * 1e3), float(top * 1e3)

    def counters(self) -> dict:
        """The figures kept since the window started (all ticks, not the ring): cheap, a few
        microseconds, so a `stats` request can read them fresh inside a tick."""
        elapsed = time.perf_counter() - self.started
        return {
            "ticks": self.count,
            "rate_hz": self.count / elapsed if elapsed > 0 else 0.0,
            "missed_ticks": self.missed, "stall_max_ms": self.stall_max * 1e3,
            "requests": self.requests, "request_max_ms": self.request_max * 1e3,
            "request_max_kind": self.request_max_kind,
            "request_cpu_max_ms": self.request_cpu_max * 1e3,
            "request_cpu_max_kind": self.request_cpu_max_kind,
            "slow_requests": self.slow_requests,  # more than one period of CPU time
        }

    def summary(self) -> dict:
        """counters() and the percentiles of the ring (~0.5 ms on 10,000 ticks: the real-time
        loop computes it once a second on a tick that answers no request)."""
        n = min(self.count, len(self.lateness))
        if n == 0:
            return {"ticks": 0}
        late = self._percentiles_ms(self.lateness[:n])
        cpu = self._percentiles_ms(self.cpu[:n])
        summary = self.counters()
        summary.update({
            "window_ticks": n,  # the percentiles cover the last `window_ticks` ticks
            "overrun_p50_ms": late[0], "overrun_p99_ms": late[1], "overrun_max_ms": late[2],
            "cpu_p50_ms": cpu[0], "cpu_p99_ms": cpu[1], "cpu_max_ms": cpu[2],
        })
        return summary


def cartesian_ticks(backend, controller, n: int, flag_counts, ramp, guard) -> int:
    """Up to n ticks of sense -> Cartesian impedance law -> guard check -> ramp -> actuate;
    flag_counts[i] counts the ticks controller flag i was on. Returns the ticks run: it stops
    after a tick on which the joint-limit guard tripped."""
    sense, actuate, check = backend.sense, backend.actuate, guard.check
    compute, flags = controller.compute, controller.flags
    for tick in range(n):
        s = sense()
        tau = compute(s.q, s.dq, s.tcp_position, s.tcp_rotation, s.jacobian, s.coriolis)
        tripped = check(s.q, s.dq)  # before actuate: a simulated state may advance in place
        actuate(ramp(tau))
        flag_counts += flags
        if tripped:
            return tick + 1
    return n


def homing_ticks(backend, move, n: int, ramp) -> int:
    """Up to n ticks of a HomingMove; returns the ticks run, stopping after the one it ended on."""
    sense, actuate = backend.sense, backend.actuate
    for tick in range(n):
        s = sense()
        actuate(ramp(move.tick(s.q, s.dq, s.coriolis)))
        if move.status != "moving":
            return tick + 1
    return n


def damped_ticks(backend, damping, n: int, ramp) -> int:
    """n ticks of torque -damping * dq (damping: Nms/rad per joint)."""
    sense, actuate, tau = backend.sense, backend.actuate, np.zeros(len(damping))
    for _ in range(n):
        np.multiply(-damping, sense().dq, out=tau)
        actuate(ramp(tau))
    return n


def admittance_ticks(backend, law, n: int, flag_counts, ramp, guard) -> int:
    """A position-controlled arm's cartesian_ticks (same signature; no torque, so no ramp): up
    to n ticks of sense -> admittance law on the measured tcp wrench -> guard check -> command
    the tcp. Stops after a tick on which the guard tripped, or, halting the arm, after one whose
    wrench was not finite (law.sensor_fault says so: the force bound needs the sensor)."""
    sense, command, wrench, check = backend.sense, backend.command_tcp_target, backend.external_wrench, guard.check
    step, flags = law.tick, law.flags
    for tick in range(n):
        s = sense()
        w = wrench()
        if not np.isfinite(w).all():
            backend.halt()
            law.sensor_fault = (f"the tcp wrench reads {np.round(w, 3).tolist()}: the force/torque "
                                "sensor is broken or disconnected, and the admittance law's force "
                                "bound needs it; halted (check the sensor, then fault-reset)")
            return tick + 1
        tripped = check(s.q, s.dq)
        command(*step(w))
        flag_counts += flags
        if tripped:
            return tick + 1
    return n


def halted_ticks(backend, n: int) -> int:
    """A position-controlled arm's damped_ticks: n ticks of sense -> halt (decelerate, stay)."""
    sense, halt = backend.sense, backend.halt
    for _ in range(n):
        sense()
        halt()
    return n


def joint_move_ticks(backend, move, n: int) -> int:
    """A position-controlled arm's homing_ticks: the arm runs its own joint move (JointMoveHome);
    up to n ticks of sense -> move.tick, stopping after the one the move ended on."""
    sense = backend.sense
    for tick in range(n):
        s = sense()
        move.tick(s.q, s.dq)
        if move.status != "moving":
            return tick + 1
    return n


def send_reply(requests, request, reply) -> None:
    """Answer `request` on the socket `requests` with a handler's (kind, meta, arrays)."""
    kind, meta, arrays = reply
    if kind == "error":
        requests.reply_error(request, meta["error"])
    else:
        requests.reply(request, kind, meta, arrays)


class DeferredReply:
    """A reply that follows its request later, when the work it asked for is done (a real arm's
    reset, answered when the arm is home), while the loop goes on serving others."""

    def __init__(self):
        self.waiting = None  # (request socket, request) still to be answered
        self.result = None  # the last reply sent (or to be returned, when nobody waits)

    def wait(self, requests, request) -> None:
        self.waiting = (requests, request)

    def send(self, reply) -> None:
        self.result = reply
        if self.waiting is not None:
            (requests, request), self.waiting = self.waiting, None
            send_reply(requests, request, reply)


def serve(robot) -> None:
    """Bind the robot server's request, admin and state sockets, and run its clock until it
    stops."""
    config = robot.config
    curve = transport.CurveKeys.from_options(config.curve_key)
    # max_arrays: a robot request carries at most 2 (target position and quaternion); refusing
    # a longer one early keeps a hostile 259-frame message from costing a tick ~1.6 ms.
    requests = transport.RequestServer(config.command_endpoint, source="robot_server", curve=curve,
                                       max_message_bytes=config.max_request_bytes, max_arrays=4)
    admin = publisher = None
    try:
        admin = bind_admin(config.admin(), config.max_request_bytes)
        publisher = transport.Publisher(config.state_endpoint, source="robot_server", curve=curve)
        if config.clock == "lockstep":
            serve_lockstep(robot, requests, admin)
        else:
            serve_realtime(robot, requests, publisher, admin)
    finally:
        robot.release()  # at once: a real arm's graceful stop needs the ticks it just had
        # Sockets close with LINGER 0, which drops replies ZeroMQ's I/O thread has not sent yet:
        # give it a moment to send the last one (the 'bye' to a shutdown), else its sender waits
        # out its timeout (seen on a loaded machine).
        time.sleep(0.1)
        for sock in (requests, admin, publisher):
            if sock is not None:
                sock.close()
        if admin is not None:
            _remove_socket_file(config.admin())


def bind_admin(endpoint: str, max_bytes: int):
    """The admin socket: owner-only (whoever may open its file may stop the server). A stale file
    of a dead server is replaced; a live server there keeps it (TransportError, as for a port)."""
    path = endpoint[len("ipc://"):]
    if os.path.exists(path):
        probe = transport.RequestClient(endpoint, source="robot_server", timeout=0.3)
        try:
            probe.request("hello")
            alive = True
        except transport.TransportError:
            alive = False
        finally:
            probe.close()
        if alive:
            raise transport.TransportError(
                f"cannot bind the admin socket {endpoint!r}: another robot server answers there; "
                "stop it, or give this one another --command-endpoint or --admin-endpoint")
        os.unlink(path)
    old = os.umask(0o177)  # created 0600, never briefly open to others
    try:
        admin = transport.RequestServer(endpoint, source="robot_server_admin",
                                        max_message_bytes=max_bytes, max_arrays=4)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    log.info("admin socket (shutdown, disarm, state, stats, break_lease without a lease): %s", endpoint)
    return admin


def _remove_socket_file(endpoint: str) -> None:
    try:
        os.unlink(endpoint[len("ipc://"):])
    except OSError:
        pass


def answer(robot, requests, request, access: str = "remote") -> None:
    """Answer one request from the socket `requests`; a deferred reply follows when ready.
    Never raises: the loop must outlive any request (RobotServer.handle already turns errors
    into replies; this catches what escapes it, e.g. a reply that cannot be sent)."""
    try:
        reply = robot.handle(request.message.kind, request.message.meta, request.message.arrays,
                             peer=request.identity, access=access)
        if reply[0] == DEFERRED:
            robot.reset_reply.wait(requests, request)
        else:
            send_reply(requests, request, reply)
    except Exception as exc:
        log.exception("answering %.40r failed", request.message.kind)
        try:
            requests.reply_error(request, f"internal error answering {request.message.kind[:40]!r}: "
                                          f"{type(exc).__name__}: {exc}; see the server's log")
        except Exception:
            log.exception("could not send the error reply either")


def poll_and_answer(robot, requests, access: str = "remote") -> bool:
    """Receive, decode and answer at most one request, without waiting; True if one came. Its
    time (from the poll to the reply sent) goes into robot.stats. `access`: "remote" (the
    command socket) or "admin" (see RobotServer.handle)."""
    start, cpu, rejected = time.perf_counter(), time.thread_time(), requests.rejected
    try:
        request = requests.poll(0)
    except Exception:  # a socket error: log it, keep the loop (and the arm's control) alive
        log.exception("receiving a request failed")
        return False
    if request is None:
        if requests.rejected != rejected:  # one came and was refused undecoded: it counts too
            robot.stats.record_request(time.perf_counter() - start, time.thread_time() - cpu, "")
        return False
    answer(robot, requests, request, access)
    robot.stats.record_request(time.perf_counter() - start, time.thread_time() - cpu,
                               request.message.kind[:40])
    return True


def serve_lockstep(robot, requests, admin) -> None:
    """Answer requests until the server stops; physics advances only inside them. The admin
    socket is looked at between requests (waits up to 50 ms when nothing comes)."""
    while robot.running:
        for sock, wait, access in ((requests, 0.05, "remote"), (admin, 0.0, "admin")):
            try:
                request = sock.poll(wait)
            except Exception:  # a socket error: log it and go on serving
                log.exception("receiving a request failed")
                continue
            if request is not None:
                answer(robot, sock, request, access)


def serve_realtime(robot, requests, publisher, admin) -> None:
    """Tick at the control period of wall-clock time until the server stops."""
    period = robot.period
    publish_every = max(1, int(round(1.0 / (robot.config.state_hz * period))))
    # The work beside the control tick is spread so that no tick carries two heavy items.
    # CPU time measured in this loop (cold caches after each wait, 2-core machine): control
    # tick ~0.1 ms, building the state message ~0.3 ms, publishing it ~0.2 ms, answering a
    # request 0.3-0.5 ms; all on one tick came to ~1 ms, the whole period. So: watchdogs and
    # the state message on one tick, publishing on the next (stamped with the build time),
    # loop statistics on a third, and requests wait out the build and publish ticks (at most
    # 2 ms more latency for a request) and the statistics tick.
    build, send = 0, 1 % publish_every
    no_requests = {build, send} if publish_every > 2 else set()
    summary_tick = (1000 - publish_every // 2) % 1000  # between two state messages
    if summary_tick % publish_every in no_requests:  # a state_hz that puts it on a busy tick
        summary_tick = (summary_tick + 2) % 1000
    loop_summary = None
    meta = arrays = stamp = None
    # What the process holds by now (modules, numba, the scene: a few 10^5 objects) goes to the
    # collector's permanent generation. Otherwise a full collection scans all of it, and requests
    # that allocate many small objects (a header of thousands of empty lists) trigger one every
    # ~1000 requests: 30-38 ms inside one tick, measured with gc.callbacks (bench_fuzz.py).
    gc.collect()
    gc.freeze()
    robot.stats = TickStats(period=period)
    next_tick = time.perf_counter()
    tick = 0
    while robot.running:
        now, cpu = time.perf_counter(), time.thread_time()
        late = max(0.0, now - next_tick)
        robot.stats.record(late)  # before any resynchronisation, so that no stall goes unseen
        if late > 0.05:  # fell far behind: resynchronise rather than run the missed ticks fast
            next_tick = now
        robot.run_ticks(1)  # the supervisor ticks with it: deadlines, peer loss, faults
        phase = tick % publish_every
        if phase == build:
            meta, arrays = robot.state_message()
            meta["loop"], loop_summary = loop_summary, None
            stamp = time.monotonic()
        if phase == send:
            try:
                publisher.publish("state", meta, arrays, stamp=stamp)
            except Exception:  # a state the wire cannot carry is a bug; the arm's control goes on
                log.exception("publishing the state failed")
        if tick % 1000 == summary_tick:
            loop_summary = robot.stats.summary()  # goes out with the next state message
            robot.loop_summary = (time.perf_counter(), loop_summary)  # and in 'stats' replies
        elif phase not in no_requests:
            # At most one request per tick; the admin socket first every 16th tick, so that a
            # flood on the command socket cannot lock its owner out.
            sockets = [(requests, "remote"), (admin, "admin")]
            if tick % 16 == 3:
                sockets.reverse()
            if not poll_and_answer(robot, *sockets[0]):
                poll_and_answer(robot, *sockets[1])
        robot.stats.record_cpu(time.thread_time() - cpu)
        tick += 1
        next_tick += period
        wait_until(next_tick)
