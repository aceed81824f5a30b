"""A learner that listens on a network address does so only with CURVE (docs/security.md):
`--curve-key` makes both its sockets (requests, weights) CURVE servers admitting only the actor
keys in the allow-list; an actor with `--actor-key`/`--learner-key` is served, any other key is
not, and without a key the learner refuses to listen off loopback at all. Real processes and
sockets (the learner binds 0.0.0.0; the test connects over loopback)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from robostack import transport
from test_learner_fuzz import ENV, TINY, hello_meta

pytestmark = pytest.mark.timeout(180)


def _port() -> int:
    return int(transport.free_tcp_endpoint().rsplit(":", 1)[1])


def start(tmp_path, keys, *extra):
    port, weights = _port(), _port()
    err = open(tmp_path / "learner.err", "w+")
    process = subprocess.Popen(
        [sys.executable, "-m", "robostack.training.learner", *TINY, "--run-dir", str(tmp_path / "run"),
         "--endpoint", f"tcp://0.0.0.0:{port}", "--weights-endpoint", f"tcp://0.0.0.0:{weights}", *extra],
        env=dict(ENV, ROBOSTACK_KEYS=str(keys)), stdout=subprocess.DEVNULL, stderr=err, text=True)
    return process, port, weights, err


def test_a_curve_learner_serves_allowed_actors_only_and_a_plain_one_refuses_the_network(tmp_path, keys):
    process, port, weights, err = start(tmp_path, keys, "--curve-key", "server")
    actor = transport.CurveKeys("client", server_key="server", keys_dir=str(keys))
    stranger = transport.CurveKeys("stranger", server_key="server", keys_dir=str(keys))
    endpoint = f"tcp://127.0.0.1:{port}"
    try:
        with transport.RequestClient(endpoint, "actor-0", timeout=1.0, curve=actor) as client:
            deadline = time.monotonic() + 90
            while not (tmp_path / "run" / "run.json").exists() or process.poll() is not None:
                assert process.poll() is None, err.seek(0) or err.read()[-3000:]
                assert time.monotonic() < deadline, "learner not up in 90 s"
                time.sleep(0.2)
            while True:
                try:
                    client.request("stats")
                    break
                except transport.PeerTimeout:
                    assert process.poll() is None and time.monotonic() < deadline, err.seek(0) or err.read()[-3000:]
            reply = client.request("hello", hello_meta(tmp_path / "run", session=client.session), timeout=10.0)
            assert reply.kind == "welcome", reply.meta
        with transport.Subscriber(f"tcp://127.0.0.1:{weights}", "weights", curve=actor) as subscriber:
            assert subscriber.latest(timeout=10.0).kind == "weights"  # republished every 2 s
        with transport.RequestClient(endpoint, "actor-0", timeout=1.0, curve=stranger) as client:
            with pytest.raises(transport.PeerTimeout, match="CURVE"):
                client.request("stats")
        with transport.RequestClient(endpoint, "actor-0", timeout=1.0) as plaintext:
            with pytest.raises(transport.PeerTimeout):
                plaintext.request("stats")
        err.seek(0)
        assert transport.fingerprint(transport.read_public_key(keys / "stranger.key")) in err.read()
    finally:
        process.kill()
        process.wait(10)
        err.close()

    process, *_, err = start(tmp_path, keys)  # no key: refused before it binds
    try:
        assert process.wait(60) != 0
        err.seek(0)
        log = err.read()
        assert "robostack keys create" in log, log[-2000:]
    finally:
        if process.poll() is None:
            process.kill()
        err.close()
