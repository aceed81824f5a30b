"""What talks to a robot server: in this process (`InProcessConnection`) or over ZeroMQ
(`ZmqConnection`), and `spawn_robot_server`, which starts one as a subprocess.

A server this module starts never outlives its owner: it dies with the process that started it
(robostack/processes.py), and the connection stops it on close(), when it is garbage-collected
and at interpreter exit.

ZmqConnection holds the server's lease for its user (robostack/robot/lease.py, docs/leases.md),
so that no env, teleop or replay client has to know about it: the first request that needs the
lease acquires it (waiting up to `lease_wait` s while another holder's lease runs out), every
request carries it, a lease that expired is acquired again (the arm is then disarmed: only an
explicit arm or reset moves it), a thread of its own heartbeats while the user is idle, and
close() releases it.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
import weakref

from robostack import cpu_affinity, processes, transport
from robostack.robot import lease


class InProcessConnection:
    """Calls a RobotServer living in this process: no sockets, same request/reply contract."""

    def __init__(self, server):
        self.server = server
        self.endpoint = "in-process"

    def request(self, kind, meta=None, arrays=None, timeout=None) -> transport.Message:
        reply_kind, reply_meta, reply_arrays = self.server.handle(kind, meta or {}, arrays or {})
        if reply_kind == "error":
            raise transport.RemoteError(reply_meta["error"], self.endpoint, kind)
        return transport.Message(kind=reply_kind, meta=reply_meta, arrays=reply_arrays)

    def close(self) -> None:
        pass


PEER = "the robot server (`robostack robot-server`)"  # named in timeout errors


class ZmqConnection:
    """A robot server in another process (or machine), over a DEALER socket with timeouts, and
    its lease held for the user (see the module docstring).

    holder: the name the server gives others refused the lease (default: host process id).
    lease_wait: s to keep asking while another client holds the lease (a dead one's runs out
    within the server's lease timeout, 0.5 s real time, 5 s lock-step); then RemoteError naming
    the holder. heartbeat: keep the lease alive from a thread while the user sends nothing (off:
    the lease lives only as long as the user keeps sending). admin_endpoint: the server's admin
    socket, used by close() to stop a server this connection started."""

    def __init__(self, endpoint: str, timeout: float = 5.0, process: subprocess.Popen | None = None,
                 holder: str | None = None, lease_wait: float = 15.0, heartbeat: bool = True,
                 admin_endpoint: str | None = None, curve: transport.CurveKeys | None = None):
        self.endpoint = endpoint
        self.timeout = timeout
        self.curve = curve  # for a server that serves with CURVE (docs/security.md)
        self.client = transport.RequestClient(endpoint, source="env", timeout=timeout, peer=PEER,
                                              curve=curve)
        self.process = process
        self.holder = holder or f"{os.uname().nodename} pid {os.getpid()}"
        self.lease_wait = lease_wait
        self.heartbeat = heartbeat
        self.admin_endpoint = admin_endpoint or lease.admin_endpoint_for(endpoint)
        # Shared with the heartbeat thread, which holds no reference to self (so that a forgotten
        # connection is still garbage-collected and its server stopped).
        self._lease = _LeaseState()
        self._heartbeat_thread: threading.Thread | None = None
        self._stop_heartbeat = weakref.finalize(self, self._lease.stop.set)
        # A user who forgets close(): stop the server at garbage collection or interpreter exit.
        self._stop_process = weakref.finalize(self, _stop, process) if process is not None else None

    @property
    def lease(self) -> str | None:
        """The lease token held now (None: not held, or lost and not yet acquired again)."""
        return self._lease.token

    def request(self, kind, meta=None, arrays=None, timeout=None) -> transport.Message:
        meta = dict(meta or {})
        if kind in lease.OPEN_REQUESTS:
            return self._send(kind, meta, arrays, timeout)
        had = self._lease.token
        meta["lease"] = had or self.acquire()
        try:
            return self._send(kind, meta, arrays, timeout)
        except transport.RemoteError as refused:
            if had is None or lease.NO_LEASE not in refused.text:
                raise
        # The lease expired (a pause past the lease timeout) or was broken: acquire it again
        # and send once more. The server disarmed the arm meanwhile, so a motion request is
        # refused until the user arms or resets: losing the lease never resumes motion by itself.
        self._lease.drop(had)
        meta["lease"] = self.acquire()
        return self._send(kind, meta, arrays, timeout)

    def acquire(self) -> str:
        """Hold the lease (asking again every 0.2 s for up to lease_wait s while another client
        holds it); its token. RemoteError naming the holder when it is still held."""
        deadline = time.monotonic() + self.lease_wait
        while True:
            try:
                reply = self._send("acquire", {"holder": self.holder, "lease": self._lease.token},
                                   None, None)
                break
            except transport.RemoteError as refused:
                if lease.HELD_BY not in refused.text or time.monotonic() >= deadline:
                    if lease.HELD_BY in refused.text:
                        raise transport.RemoteError(
                            f"{refused.text} (asked for {self.lease_wait:g} s)", self.endpoint,
                            "acquire") from None
                    raise
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        token = reply.meta.get("lease")
        period = reply.meta.get("heartbeat_period")
        if not isinstance(token, str) or not isinstance(period, (int, float)) or not 0 < period < 60:
            raise transport.ProtocolError(f"'acquire' reply from {self.endpoint} carries no lease "
                                          f"token and heartbeat period: {reply.meta}")
        self._lease.hold(token)
        if self.heartbeat and (self._heartbeat_thread is None or not self._heartbeat_thread.is_alive()):
            self._heartbeat_thread = threading.Thread(
                target=_heartbeat, args=(self.endpoint, self._lease, float(period), self.curve),
                name=f"lease heartbeat {self.endpoint}", daemon=True)
            self._heartbeat_thread.start()
        return token

    def release(self) -> None:
        """Give the lease up (the server makes a damped stop if the arm was energized)."""
        token = self._lease.token
        self._lease.drop(token)
        if token is not None:
            try:
                self._send("release", {"lease": token}, None, 1.0)
            except transport.TransportError:
                pass  # the server is gone or the lease was lost: either way it is not ours

    def _send(self, kind, meta, arrays, timeout) -> transport.Message:
        try:
            return self.client.request(kind, meta, arrays or {}, timeout=timeout)
        except transport.PeerTimeout:
            if self.process is not None and self.process.poll() is not None:
                raise transport.TransportError(
                    f"the robot server process exited with code {self.process.returncode}; "
                    "see its log above") from None
            raise

    def close(self) -> None:
        try:
            self._lease.stop.set()
            if self.process is not None and self.process.poll() is None:
                # Our own server: stopped on its admin socket, whoever holds the lease.
                with transport.RequestClient(self.admin_endpoint, source="env", timeout=1.0,
                                             peer=PEER) as admin:
                    try:
                        admin.request("shutdown")
                    except transport.TransportError:
                        pass
            else:
                self.release()
            if self._stop_process is not None:
                self._stop_process()
            if self._heartbeat_thread is not None:
                self._heartbeat_thread.join(timeout=2.0)
        finally:
            self.client.close()

    def __enter__(self) -> "ZmqConnection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _LeaseState:
    """The lease token, shared by a connection and its heartbeat thread."""

    def __init__(self):
        self.token: str | None = None
        self.stop = threading.Event()  # the connection closed or was collected
        self._lock = threading.Lock()

    def hold(self, token: str) -> None:
        with self._lock:
            self.token = token

    def drop(self, token) -> None:
        """Forget `token` (if it is still the one held: a newer one stays)."""
        with self._lock:
            if self.token == token:
                self.token = None


def _heartbeat(endpoint: str, state: _LeaseState, period: float, curve=None) -> None:
    """Renew the lease every `period` s on a socket of this thread's own (ZeroMQ sockets are not
    thread-safe) until the connection closes. A refusal means the lease is gone: forget it (the
    user's next request acquires a new one). A process that dies or is stopped stops this too,
    and so its lease expires."""
    client = transport.RequestClient(endpoint, source="env-heartbeat", timeout=max(period, 0.5),
                                     peer=PEER, curve=curve)
    try:
        while not state.stop.wait(period):
            token = state.token
            if token is None:
                continue
            try:
                client.request("heartbeat", {"lease": token})
            except transport.RemoteError:
                state.drop(token)
            except transport.TransportError:
                pass  # a busy or restarting server: the next beat tries again
    finally:
        client.close()


def _stop(process: subprocess.Popen, grace: float = 3.0) -> None:
    """Wait up to `grace` s for a process asked to shut down, then terminate, then kill it."""
    for stop in (None, process.terminate, process.kill):
        if process.poll() is not None:
            return
        if stop is not None:
            stop()
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def spawn_robot_server(task: str, backend: str = "mujoco", clock: str = "lockstep",
                       extra_args: tuple = (), startup_timeout: float = 30.0,
                       cpus: list[int] | None = None) -> ZmqConnection:
    """Start `robostack robot-server` as a subprocess on unix-socket endpoints and connect.
    `cpus`: cores the server may run on (see robostack/cpu_affinity.py); None: any."""
    # ipc rather than loopback tcp: both ends are on this host, and a unix socket skips the
    # TCP stack on every message (a lock-step env sends one round trip per step).
    name = f"server-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    command_endpoint = transport.ipc_endpoint(f"{name}-command")
    state_endpoint = transport.ipc_endpoint(f"{name}-state")
    process = subprocess.Popen(
        processes.child_command(
            "robostack.robot.server", "--task", task, "--backend", backend, "--clock", clock,
            "--command-endpoint", command_endpoint, "--state-endpoint", state_endpoint,
            "--log-level", "WARNING", *extra_args),
        env=processes.child_environment(OMP_NUM_THREADS="1"),
    )
    if cpus:
        cpu_affinity.pin(process.pid, cpus)
    connection = ZmqConnection(command_endpoint, process=process,
                               admin_endpoint=lease.admin_endpoint_for(command_endpoint))
    connection.state_endpoint = state_endpoint
    deadline = time.monotonic() + startup_timeout
    while True:
        try:
            connection.request("hello", timeout=1.0)
            return connection
        except transport.PeerTimeout:
            if process.poll() is not None or time.monotonic() > deadline:
                connection.close()
                raise transport.TransportError(
                    f"robot server did not come up within {startup_timeout} s "
                    f"(exit code {process.poll()})") from None
