"""What talks to a robot server: in this process (`InProcessConnection`) or over ZeroMQ
(`ZmqConnection`), and `spawn_robot_server`, which starts one as a subprocess.

A server this module starts never outlives its owner: it dies with the process that started it
(robostack/processes.py), and the connection stops it on close(), when it is garbage-collected
and at interpreter exit.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
import weakref

from robostack import cpu_affinity, processes, transport


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


class ZmqConnection:
    """A robot server in another process (or machine), over a DEALER socket with timeouts."""

    def __init__(self, endpoint: str, timeout: float = 5.0, process: subprocess.Popen | None = None):
        self.endpoint = endpoint
        self.client = transport.RequestClient(
            endpoint, source="env", timeout=timeout,
            peer="the robot server (`robostack robot-server`)")  # named in timeout errors
        self.process = process
        # A user who forgets close(): stop the server at garbage collection or interpreter exit.
        self._stop_process = weakref.finalize(self, _stop, process) if process is not None else None

    def request(self, kind, meta=None, arrays=None, timeout=None) -> transport.Message:
        try:
            return self.client.request(kind, meta or {}, arrays or {}, timeout=timeout)
        except transport.PeerTimeout:
            if self.process is not None and self.process.poll() is not None:
                raise transport.TransportError(
                    f"the robot server process exited with code {self.process.returncode}; "
                    "see its log above") from None
            raise

    def close(self) -> None:
        try:
            if self.process is not None and self.process.poll() is None:
                try:
                    self.client.request("shutdown", timeout=1.0)
                except transport.TransportError:
                    pass
            if self._stop_process is not None:
                self._stop_process()
        finally:
            self.client.close()

    def __enter__(self) -> "ZmqConnection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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
    connection = ZmqConnection(command_endpoint, process=process)
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
