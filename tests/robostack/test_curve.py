"""Who may connect: private unix-socket folders, the refusal of plaintext network binds, CURVE
with the ZAP allow-list, and `robostack keys`. Real sockets on loopback; every wait is bounded.

`python tests/robostack/test_curve.py` measures the round trip of a small request with and
without CURVE on loopback.
"""

import logging
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import zmq

from robostack.transport import (
    CurveKeys, PeerTimeout, Publisher, RequestClient, RequestServer, Subscriber, TransportError,
    fingerprint, free_tcp_endpoint, ipc_dir, ipc_endpoint, read_public_key)
from robostack.transport.auth import _handlers, write_key_pair

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]


# --- helpers ------------------------------------------------------------------------------------

@pytest.fixture
def context():
    """A context of the test's own, so each test starts its own authenticator; term() must
    also stop that authenticator's thread, or it would hang (bounded here)."""
    ctx = zmq.Context()
    yield ctx
    ender = threading.Thread(target=ctx.term, daemon=True)
    ender.start()
    ender.join(5.0)
    assert not ender.is_alive(), "context.term() hung: a socket (the ZAP thread's?) stayed open"


def curve(keys, name, server="server"):
    return CurveKeys(name, server_key=server, keys_dir=str(keys))


@contextmanager
def echo_server(endpoint, context, **kwargs):
    """A RequestServer answering every request with 'ok' from a thread, until the block ends."""
    server = RequestServer(endpoint, "echo", context=context, **kwargs)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            request = server.poll(0.02)
            if request is not None:
                server.reply(request, "ok", {"echo": request.message.meta.get("x")})

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        thread.join(5.0)
        server.close()


# --- binds --------------------------------------------------------------------------------------

@pytest.mark.parametrize("endpoint", ["tcp://*:5999", "tcp://0.0.0.0:5999", "tcp://192.168.1.10:5999",
                                      "tcp://[::]:5999", "tcp://robot-pc:5999", "ws://*:5999"])
def test_a_network_bind_without_keys_is_refused_naming_the_fix(endpoint, context):
    for make in (lambda: RequestServer(endpoint, "s", context=context),
                 lambda: Publisher(endpoint, "p", context=context),
                 lambda: Subscriber(endpoint, connect=False, context=context)):
        with pytest.raises(TransportError, match=r"refusing to bind .* without CURVE.*"
                                                 r"robostack keys create NAME"):
            make()


def test_loopback_and_ipc_binds_need_no_keys(context, tmp_path):
    for endpoint in (free_tcp_endpoint(), free_tcp_endpoint().replace("127.0.0.1", "localhost"),
                     ipc_endpoint(f"t-{os.getpid()}-{time.monotonic_ns()}")):
        with echo_server(endpoint, context), \
                RequestClient(endpoint, "c", timeout=5.0, context=context) as client:
            assert client.request("ping", {"x": 7}).meta == {"echo": 7}


def test_plaintext_sockets_beside_a_curve_server_are_not_sent_to_the_authenticator(context, keys):
    """One process serves CURVE to the network and plaintext on loopback and ipc (the robot
    server's admin socket): the authenticator must leave the plaintext ones alone."""
    with echo_server(free_tcp_endpoint(), context, curve=curve(keys, "server")):
        for endpoint in (free_tcp_endpoint(), ipc_endpoint(f"t-{os.getpid()}-{time.monotonic_ns()}")):
            with echo_server(endpoint, context), \
                    RequestClient(endpoint, "c", timeout=5.0, context=context) as client:
                assert client.request("ping", {"x": 2}).meta == {"echo": 2}
        assert _handlers[context].refused == 0


def test_binding_every_interface_with_keys_serves_an_allowed_client(context, keys):
    port = free_tcp_endpoint().rpartition(":")[2]
    with echo_server(f"tcp://0.0.0.0:{port}", context, curve=curve(keys, "server")), \
            RequestClient(f"tcp://127.0.0.1:{port}", "c", timeout=5.0, context=context,
                          curve=curve(keys, "client")) as client:
        for x in range(3):
            assert client.request("ping", {"x": x}).meta == {"echo": x}


# --- who CURVE admits ---------------------------------------------------------------------------

def test_an_unlisted_key_is_refused_within_the_timeout_and_logged(context, keys, caplog):
    endpoint = free_tcp_endpoint()
    stranger = curve(keys, "stranger")
    with echo_server(endpoint, context, curve=curve(keys, "server")), \
            RequestClient(endpoint, "c", timeout=0.5, context=context, curve=stranger) as client:
        with caplog.at_level(logging.WARNING, logger="robostack.transport.auth"):
            start = time.monotonic()
            with pytest.raises(PeerTimeout, match="CURVE is on: the server may have refused our "
                                                  f"key \\(fingerprint {stranger.fingerprint}"):
                client.request("ping", {"x": 1})
            assert time.monotonic() - start < 2.0
            for _ in range(2):  # each try reopens the socket: a new handshake, refused again
                with pytest.raises(PeerTimeout):
                    client.request("ping", timeout=0.3)
    handler = _handlers[context]
    assert handler.refused >= 3
    refusals = [r.getMessage() for r in caplog.records if "refused client key" in r.getMessage()]
    assert len(refusals) == 1, refusals  # rate-limited per key
    assert stranger.fingerprint in refusals[0] and "from 127.0.0.1" in refusals[0]
    assert "robostack keys allow" in refusals[0]


def test_allowed_and_refused_clients_side_by_side_and_revocation(context, keys):
    endpoint = free_tcp_endpoint()
    with echo_server(endpoint, context, curve=curve(keys, "server")):
        with RequestClient(endpoint, "c", timeout=5.0, context=context,
                           curve=curve(keys, "client")) as client:
            assert client.request("ping", {"x": 1}).meta == {"echo": 1}
            with RequestClient(endpoint, "s", timeout=0.3, context=context,
                               curve=curve(keys, "stranger")) as stranger:
                with pytest.raises(PeerTimeout):
                    stranger.request("ping")
            assert client.request("ping", {"x": 2}).meta == {"echo": 2}
            (keys / "allowed" / "client.key").unlink()  # revoke: read again at each handshake
            assert client.request("ping", {"x": 3}).meta == {"echo": 3}  # the live connection
        with RequestClient(endpoint, "c", timeout=0.5, context=context,
                           curve=curve(keys, "client")) as again:
            with pytest.raises(PeerTimeout):
                again.request("ping")


def test_a_plaintext_client_to_a_curve_server_is_refused(context, keys):
    endpoint = free_tcp_endpoint()
    with echo_server(endpoint, context, curve=curve(keys, "server")), \
            RequestClient(endpoint, "c", timeout=0.5, context=context) as plain:
        with pytest.raises(PeerTimeout, match="no connection"):
            plain.request("ping")


def test_a_client_with_the_wrong_server_key_is_refused(context, keys):
    endpoint = free_tcp_endpoint()
    with echo_server(endpoint, context, curve=curve(keys, "server")), \
            RequestClient(endpoint, "c", timeout=0.5, context=context,
                          curve=curve(keys, "client", server="stranger")) as client:
        with pytest.raises(PeerTimeout, match="check that 'stranger' is that server's public key"):
            client.request("ping")


def test_a_stream_over_curve_reaches_only_allowed_subscribers(context, keys):
    endpoint = free_tcp_endpoint()
    with Publisher(endpoint.replace("127.0.0.1", "*"), "p", context=context,
                   curve=curve(keys, "server")) as pub, \
            Subscriber(endpoint, "state", context=context, curve=curve(keys, "client")) as sub, \
            Subscriber(endpoint, "state", context=context, curve=curve(keys, "stranger")) as other:
        deadline = time.monotonic() + 5.0
        while (msg := sub.poll_latest()) is None:
            assert time.monotonic() < deadline, "the allowed subscriber got nothing"
            pub.publish("state", {"q": 1})
            time.sleep(0.01)
        assert msg.meta == {"q": 1}
        pub.publish("state", {"q": 2})
        with pytest.raises(PeerTimeout, match="CURVE is on"):
            other.latest(0.3)


def test_a_client_allowed_after_a_refusal_gets_in_at_its_next_try(context, keys):
    """libzmq never retries a connection refused at the handshake, so both clients reopen
    their socket after a timeout: allowing the key must be enough, no restart."""
    endpoint = free_tcp_endpoint()
    with echo_server(endpoint, context, curve=curve(keys, "server")), \
            Publisher(free_tcp_endpoint(), "p", context=context, curve=curve(keys, "server")) as pub, \
            RequestClient(endpoint, "c", timeout=0.3, context=context,
                          curve=curve(keys, "stranger")) as client, \
            Subscriber(pub.endpoint, context=context, curve=curve(keys, "stranger")) as sub:
        with pytest.raises(PeerTimeout):
            client.request("ping")
        pub.publish("state")
        with pytest.raises(PeerTimeout):
            sub.latest(0.3)
        shutil.copy(keys / "stranger.key", keys / "allowed" / "stranger.key")
        assert client.request("ping", {"x": 4}, timeout=5.0).meta == {"echo": 4}
        deadline = time.monotonic() + 5.0
        while (msg := sub.poll_latest()) is None:
            assert time.monotonic() < deadline, "the subscriber never got in after the allow"
            pub.publish("state", {"q": 3})
            time.sleep(0.01)
        assert msg.meta == {"q": 3}


def test_without_an_authenticator_curve_admits_nobody(context, keys):
    """What the server sockets rely on when the ZAP thread is gone: ZAP_ENFORCE_DOMAIN makes
    libzmq refuse a client nobody vouched for (without it, libzmq admits every key)."""
    public, secret = read_public_key(keys / "server.key"), curve(keys, "server").pair[1]
    server = context.socket(zmq.ROUTER)
    server.linger = 0
    server.curve_server, server.curve_secretkey = True, secret
    server.zap_domain = b"nobody-answers"
    server.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
    port = server.bind_to_random_port("tcp://127.0.0.1")
    client = curve(keys, "client")
    try:
        with RequestClient(f"tcp://127.0.0.1:{port}", "c", timeout=0.5, context=context,
                           curve=client) as dealer:
            assert client.server_public == public
            with pytest.raises(PeerTimeout):
                dealer.request("ping")
        assert server.poll(0) == 0
    finally:
        server.close()


def test_bad_key_files_are_refused_with_the_fix(context, keys, tmp_path):
    endpoint = free_tcp_endpoint()
    os.chmod(keys / "server.key_secret", 0o644)
    with pytest.raises(TransportError, match="readable by group or others.*chmod 600"):
        RequestServer(endpoint, "s", context=context, curve=curve(keys, "server"))
    os.chmod(keys / "server.key_secret", 0o600)
    with pytest.raises(TransportError, match="no server key"):
        RequestClient(endpoint, "c", context=context, curve=CurveKeys("client", keys_dir=str(keys)))
    garbage = tmp_path / "garbage.key"
    garbage.write_text('public-key = "not a key"\n')
    with pytest.raises(TransportError, match="no valid public key"):
        RequestClient(endpoint, "c", context=context,
                      curve=CurveKeys("client", server_key=str(garbage), keys_dir=str(keys)))
    os.chmod(keys / "allowed", 0o770)  # anyone in the group could add a key
    with pytest.raises(TransportError, match="open to group or others.*chmod 700"):
        RequestServer(endpoint, "s", context=context, curve=curve(keys, "server"))


def test_from_options_is_none_without_a_key():
    assert CurveKeys.from_options(None) is None and CurveKeys.from_options("") is None
    assert CurveKeys.from_options("robot", "server") == CurveKeys("robot", "server")


# --- the private unix-socket folder -------------------------------------------------------------

def test_ipc_sockets_live_in_a_folder_only_this_user_can_open(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    folder = ipc_dir()
    assert folder == Path(f"/tmp/robostack-{os.getuid()}")
    assert stat.S_IMODE(os.lstat(folder).st_mode) == 0o700 and folder.stat().st_uid == os.getuid()

    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    assert ipc_endpoint("cam0") == f"ipc://{runtime}/robostack/cam0"
    assert stat.S_IMODE(os.lstat(runtime / "robostack").st_mode) == 0o700

    os.chmod(runtime / "robostack", 0o750)
    with pytest.raises(TransportError, match=r"open to group or others \(mode 0750\).*chmod 700"):
        ipc_endpoint("cam0")

    os.chmod(runtime, 0o755)  # a shared runtime folder is not used: back to /tmp/robostack-<uid>
    assert ipc_dir() == folder


def test_ipc_folder_that_is_a_link_or_someone_elses_is_refused(monkeypatch, tmp_path):
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    (runtime / "robostack").symlink_to(tmp_path)
    with pytest.raises(TransportError, match="not a directory"):
        ipc_dir()
    if os.getuid() == 0:  # only root can give a folder away
        (runtime / "robostack").unlink()
        (runtime / "robostack").mkdir(mode=0o700)
        os.chown(runtime / "robostack", 65534, 65534)
        with pytest.raises(TransportError, match="belongs to uid 65534"):
            ipc_dir()


def test_an_ipc_path_too_long_for_a_unix_socket_is_refused(context):
    with pytest.raises(TransportError, match="over the 107 a unix socket allows"):
        ipc_endpoint("x" * 120)
    with pytest.raises(TransportError, match="over the 107 a unix socket allows"):
        RequestServer("ipc:///tmp/" + "y" * 120, "s", context=context)


# --- robostack keys -----------------------------------------------------------------------------

def keys_cli(*args, folder):
    env = {**os.environ, "CI": "true", "ROBOSTACK_KEYS": str(folder)}
    return subprocess.run([sys.executable, "-m", "robostack.cli", "keys", *args], cwd=REPO,
                          env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=30)


def test_keys_create_list_allow_revoke_round_trip(tmp_path, context):
    server_dir, client_dir = tmp_path / "robot-pc", tmp_path / "gpu-box"
    made = keys_cli("create", "robot-pc", folder=server_dir)
    assert made.returncode == 0, made.stderr
    assert keys_cli("create", "gpu-box", "--dir", str(client_dir), folder=server_dir).returncode == 0
    assert not (server_dir / "gpu-box.key").exists()  # --dir wins over ROBOSTACK_KEYS
    assert stat.S_IMODE(os.stat(server_dir / "robot-pc.key_secret").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(server_dir / "robot-pc.key").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(server_dir).st_mode) == 0o700

    again = keys_cli("create", "robot-pc", folder=server_dir)
    assert again.returncode == 1 and "never overwrites" in again.stderr
    secret = keys_cli("allow", str(client_dir / "gpu-box.key_secret"), folder=server_dir)
    assert secret.returncode == 1 and "is a secret key" in secret.stderr

    allowed = keys_cli("allow", str(client_dir / "gpu-box.key"), folder=server_dir)
    assert allowed.returncode == 0, allowed.stderr
    client_print = fingerprint(read_public_key(client_dir / "gpu-box.key"))
    listing = keys_cli("list", folder=server_dir)
    assert listing.returncode == 0, listing.stderr
    assert "robot-pc" in listing.stdout and "key pair" in listing.stdout
    assert f"allowed/gpu-box          {client_print}" in listing.stdout

    # The files the command wrote are what the sockets use, across the two "machines".
    shutil.copy(server_dir / "robot-pc.key", client_dir / "robot-pc.key")
    endpoint = free_tcp_endpoint()
    with echo_server(endpoint.replace("127.0.0.1", "*"), context,
                     curve=CurveKeys("robot-pc", keys_dir=str(server_dir))), \
            RequestClient(endpoint, "c", timeout=5.0, context=context,
                          curve=CurveKeys("gpu-box", "robot-pc", keys_dir=str(client_dir))) as c:
        assert c.request("ping", {"x": 5}).meta == {"echo": 5}

    revoked = keys_cli("revoke", "gpu-box", folder=server_dir)
    assert revoked.returncode == 0 and client_print in revoked.stdout
    assert "allowed/gpu-box" not in keys_cli("list", folder=server_dir).stdout
    assert keys_cli("revoke", "gpu-box", folder=server_dir).returncode == 1


# --- measurement --------------------------------------------------------------------------------

def measure(n: int = 2000, blocks: int = 10) -> None:
    """n requests each way, in alternating blocks so that a load spike on a shared machine hits
    both alike; the figure is the median block."""
    import statistics
    import tempfile
    from contextlib import ExitStack

    folder = Path(tempfile.mkdtemp()) / "keys"
    for name in ("server", "client"):
        write_key_pair(folder, name)
    (folder / "allowed").mkdir(mode=0o700)
    shutil.copy(folder / "client.key", folder / "allowed" / "client.key")
    with ExitStack() as stack:
        clients = {}
        for label, server_curve, client_curve in [
                ("plaintext", None, None),
                ("curve", curve(folder, "server"), curve(folder, "client"))]:
            endpoint = free_tcp_endpoint()
            stack.enter_context(echo_server(endpoint, None, curve=server_curve))
            clients[label] = stack.enter_context(
                RequestClient(endpoint, "c", timeout=5.0, curve=client_curve))
            for _ in range(100):  # connect and warm up
                clients[label].request("ping", {"x": 1})
        times = {label: [] for label in clients}
        for _ in range(blocks):
            for label, client in clients.items():
                start = time.perf_counter()
                for i in range(n // blocks):
                    client.request("ping", {"x": i})
                times[label].append((time.perf_counter() - start) / (n // blocks))
    median = {label: statistics.median(t) for label, t in times.items()}
    for label, t in times.items():
        print(f"{label:>9}: {median[label] * 1e6:7.1f} us per round trip, median of {blocks} blocks "
              f"(range {min(t) * 1e6:.1f}-{max(t) * 1e6:.1f}), {n} requests")
    print(f"ratio curve/plaintext: {median['curve'] / median['plaintext']:.2f}")


if __name__ == "__main__":
    measure()
