"""A robot server on a network address (docs/security.md): only with `--curve-key`, and then its
command and state sockets admit only allow-listed client keys. A client with an allowed key
drives it through the env (lease and all); a stranger's key and a plaintext client get nothing,
and the stranger is logged by fingerprint; without a key the server refuses to bind off loopback.
Real server processes, bound on 0.0.0.0, reached over loopback; every wait bounded."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from robostack import transport
from robostack.env import RobotEnv
from robostack.robot.client import ZmqConnection

pytestmark = pytest.mark.timeout(180)


def _port() -> int:
    return int(transport.free_tcp_endpoint().rsplit(":", 1)[1])


def start(tmp_path, keys, *extra):
    command, state = _port(), _port()
    err = open(tmp_path / "server.err", "w+")
    process = subprocess.Popen(
        [sys.executable, "-m", "robostack.robot.server", "--task", "reach",
         "--command-endpoint", f"tcp://0.0.0.0:{command}", "--state-endpoint", f"tcp://0.0.0.0:{state}",
         "--admin-endpoint", transport.ipc_endpoint(f"curve-test-{command}-admin"), *extra],
        env=dict(os.environ, OMP_NUM_THREADS="1", ROBOSTACK_KEYS=str(keys)),
        stdout=subprocess.DEVNULL, stderr=err, text=True)
    return process, command, state, err


def log_of(err) -> str:
    err.seek(0)
    return err.read()


def test_a_curve_robot_server_serves_allowed_keys_only(tmp_path, keys):
    process, command, state, err = start(tmp_path, keys, "--curve-key", "server", "--clock", "realtime")
    client = transport.CurveKeys("client", server_key="server", keys_dir=str(keys))
    stranger = transport.CurveKeys("stranger", server_key="server", keys_dir=str(keys))
    endpoint = f"tcp://127.0.0.1:{command}"
    try:
        connection = ZmqConnection(endpoint, curve=client, timeout=1.0)
        deadline = time.monotonic() + 60
        while True:
            try:
                connection.request("hello")
                break
            except transport.PeerTimeout:
                assert process.poll() is None and time.monotonic() < deadline, log_of(err)[-3000:]
        connection.timeout = connection.client.timeout = 10.0
        with RobotEnv(connection, task="reach") as env:
            obs, _ = env.reset(seed=0)
            obs, *_ = env.step(np.zeros(env.action_space.shape, dtype=np.float32))
            assert np.isfinite(obs["state"]).all()
        with transport.Subscriber(f"tcp://127.0.0.1:{state}", "state", curve=client) as subscriber:
            subscriber.latest(timeout=10.0)  # published at state_hz in real time
        with transport.RequestClient(endpoint, "stranger", timeout=1.0, curve=stranger) as other:
            with pytest.raises(transport.PeerTimeout, match="CURVE"):
                other.request("hello")
        with transport.RequestClient(endpoint, "plaintext", timeout=1.0) as plaintext:
            with pytest.raises(transport.PeerTimeout):
                plaintext.request("hello")
        fingerprint = transport.fingerprint(transport.read_public_key(keys / "stranger.key"))
        deadline = time.monotonic() + 5
        while fingerprint not in log_of(err):
            assert time.monotonic() < deadline, log_of(err)[-3000:]
            time.sleep(0.1)
    finally:
        process.kill()
        process.wait(10)
        err.close()


def test_without_a_key_the_robot_server_refuses_a_network_address(tmp_path, keys):
    process, *_, err = start(tmp_path, keys)
    try:
        assert process.wait(60) != 0
        assert "robostack keys create" in log_of(err), log_of(err)[-2000:]
    finally:
        if process.poll() is None:
            process.kill()
        err.close()
