"""Wire format and socket roles, over real loopback sockets. Every wait is bounded."""

import os
import pickle
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import msgpack
import numpy as np
import pytest
import zmq

from robostack.transport import (
    SCHEMA_VERSION, Message, PeerTimeout, ProtocolError, Publisher, RemoteError, RequestClient,
    RequestServer, StaleMessage, Subscriber, TransportError, decode, default_context, encode,
    free_tcp_endpoint, ipc_dir, ipc_endpoint)
from robostack.transport.envelope import _topic
from robostack.transport.endpoints import is_same_host

pytestmark = pytest.mark.timeout(20)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# --- helpers ------------------------------------------------------------------------------------

def good_header(**overrides):
    header = {"v": SCHEMA_VERSION, "kind": "state", "src": "t", "ses": "s", "seq": 1, "t": 0.0,
              "meta": {}, "arrays": []}
    header.update(overrides)
    return header


@contextmanager
def serving(handler):
    """A RequestServer on a free port, polled by a thread that calls handler(server, request)."""
    with serving_at(free_tcp_endpoint(), handler) as server:
        yield server


@contextmanager
def serving_at(endpoint, handler):
    server = RequestServer(endpoint, "test-server")
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            request = server.poll(0.01)
            if request is not None:
                handler(server, request)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        thread.join(2.0)
        server.close()


def echo(server, request):
    server.reply(request, "echo", request.message.meta, request.message.arrays)


@contextmanager
def stream(**sub_kwargs):
    """A connected Publisher/Subscriber pair, past ZeroMQ's slow-joiner window."""
    endpoint = free_tcp_endpoint()
    with Publisher(endpoint, "test-pub", hwm=1000) as pub, \
            Subscriber(endpoint, **sub_kwargs) as sub:
        deadline = time.monotonic() + 5.0
        while sub.poll_latest() is None:
            assert time.monotonic() < deadline, "subscriber never joined"
            pub.publish("hello")
            time.sleep(0.01)
        yield pub, sub


# --- the envelope -------------------------------------------------------------------------------

ARRAYS = {
    "scalar": np.array(3.5),
    "empty": np.zeros((0,), np.float32),
    "empty2d": np.zeros((0, 3), np.int16),
    "bool": np.array([True, False, True]),
    "u8_image": np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3),
    "i64": np.array([-(2**62), 0, 2**62]),
    "f16": np.array([1.5, -2.0], np.float16),
    "c64": np.array([1 + 2j], np.complex64),
    "big_endian": np.arange(6, dtype=">f4").reshape(2, 3),
    "strided": np.arange(20.0).reshape(4, 5)[::2, 1::2],
    "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
}


def check_same(got: dict, want: dict):
    assert list(got) == list(want)
    for name, array in want.items():
        assert got[name].dtype == array.dtype, name
        assert got[name].shape == array.shape, name
        np.testing.assert_array_equal(got[name], array, err_msg=name)


def test_encode_decode_round_trip():
    meta = {"mode": "lockstep", "gains": [1.0, 2, None, True], "nested": {"a": {"b": "c"}},
            3: "int keys survive"}
    msg = Message("step", meta, dict(ARRAYS), "actor", "abc", 42, 123.25)
    frames = encode(msg)
    assert isinstance(frames[0], bytes) and len(frames) == 1 + len(ARRAYS)
    # Frames arrive as bytes on a copying receive: decode those, not our own memoryviews.
    got = decode([bytes(f) for f in frames])
    assert (got.kind, got.meta, got.source, got.session, got.seq, got.stamp) == (
        "step", meta, "actor", "abc", 42, 123.25)
    check_same(got.arrays, ARRAYS)


def test_arrays_round_trip_over_a_real_socket():
    # "weights" is above ZERO_COPY_BYTES, so it takes the zero-copy path both ways.
    arrays = dict(ARRAYS, weights=np.arange(300 * 300, dtype=np.float32).reshape(300, 300))
    with serving(echo) as server, RequestClient(server.endpoint, "client") as client:
        reply = client.request("anything", {"k": [1, 2]}, arrays, timeout=2.0)
    assert reply.kind == "echo" and reply.meta == {"k": [1, 2]}
    check_same(reply.arrays, arrays)


def test_non_plain_meta_is_a_clear_type_error():
    with pytest.raises(TypeError, match=r"meta\['gains'\]\[1\] of 'step' is a numpy.int64"):
        encode(Message("step", {"gains": [1, np.int64(2)]}))
    with pytest.raises(TypeError, match=r"dtype object"):
        encode(Message("step", {}, {"names": np.array(["a", None], dtype=object)}))
    with pytest.raises(TypeError, match=r"meta a dict"):
        encode(Message("step", [1, 2]))


def test_schema_mismatch_names_both_versions():
    frames = [msgpack.packb(good_header(v=SCHEMA_VERSION + 1))]
    with pytest.raises(ProtocolError) as err:
        decode(frames)
    text = str(err.value)
    assert f"v{SCHEMA_VERSION + 1}" in text and f"v{SCHEMA_VERSION}" in text
    assert "upgrade/downgrade" in text


BAD_SPEC = r"expected \[name, dtype, shape\]"


@pytest.mark.parametrize("frames, expected", [
    ([], "empty message"),
    ([b"\xc1garbage\xff"], "not msgpack"),
    ([msgpack.packb([1, 2, 3])], "not a map"),
    ([msgpack.packb({"hello": 1})], "no schema version"),
    ([msgpack.packb({k: v for k, v in good_header().items() if k != "seq"})], "lacks field 'seq'"),
    ([msgpack.packb(good_header(seq="7"))], "has str for 'seq'"),
    ([msgpack.packb(good_header(arrays=[["q", "<f8", [7]]]))], "lists 1 arrays but 0 buffer"),
    ([msgpack.packb(good_header(arrays=[["q", "<f8", [7]]])), b"\0" * 55], "has 55 bytes but"),
    ([msgpack.packb(good_header(arrays=[["q", "|O", [1]]])), b"\0" * 8], "dtype '|O'"),
    ([msgpack.packb(good_header(arrays=[["q", "<U3", [1]]])), b"\0" * 12], "dtype '<U3'"),
    ([msgpack.packb(good_header(arrays=[["q", "<f8", [-1]]])), b""], BAD_SPEC),
    ([msgpack.packb(good_header(arrays=[["q", "<f8", [-2, -4]]])), b"\0" * 64], BAD_SPEC),
    ([msgpack.packb(good_header(arrays=[["q", "<f8"]])), b""], BAD_SPEC),
    ([msgpack.packb(good_header(arrays=[[1, "<f8", [1]]])), b"\0" * 8], BAD_SPEC),
])
def test_malformed_messages_are_protocol_errors(frames, expected):
    with pytest.raises(ProtocolError, match=expected):
        decode(frames)


def test_error_types_and_that_they_survive_pickling():
    assert issubclass(ProtocolError, ValueError) and issubclass(ProtocolError, TransportError)
    assert issubclass(PeerTimeout, TimeoutError) and issubclass(PeerTimeout, TransportError)
    # Errors cross process boundaries (multiprocessing): their fields must come along.
    for error in [ProtocolError("bad", seq=3), PeerTimeout("late"),
                  RemoteError("no", "tcp://x", "step"), StaleMessage("old", Message("state"))]:
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error)
        assert vars(copy).keys() == vars(error).keys()
    assert pickle.loads(pickle.dumps(StaleMessage("old", Message("state", seq=5)))).message.seq == 5


def test_topic_prefix_is_how_every_header_of_that_kind_starts():
    for kind in ["state", "frames", "", "ünïcode"]:
        assert encode(Message(kind, {"x": 1}))[0].startswith(_topic(kind))
    assert not encode(Message("states"))[0].startswith(_topic("state"))


def test_endpoint_helpers():
    assert free_tcp_endpoint().startswith("tcp://127.0.0.1:")
    assert ipc_endpoint("cam0") == f"ipc://{ipc_dir()}/cam0"  # a private folder: test_curve.py
    assert is_same_host("tcp://127.0.0.1:5") and is_same_host("ipc:///tmp/x")
    assert is_same_host("tcp://localhost:5") and is_same_host("tcp://[::1]:5")
    assert not is_same_host("tcp://192.168.1.10:5") and not is_same_host("tcp://robot-pc:5")


def test_bind_conflict_and_bad_endpoint_say_what_to_do():
    endpoint = free_tcp_endpoint()
    with Publisher(endpoint, "first"):
        with pytest.raises(TransportError, match="in use.*stop that or pick another port"):
            Publisher(endpoint, "second")
    with pytest.raises(TransportError, match="expected 'tcp://HOST:PORT'"):
        Subscriber("tcp:/nonsense")


# --- requests -----------------------------------------------------------------------------------

def test_server_answers_garbage_with_an_error_and_keeps_serving():
    with serving(echo) as server:
        raw = default_context().socket(zmq.DEALER)
        raw.setsockopt(zmq.LINGER, 0)
        raw.connect(server.endpoint)
        try:
            raw.send_multipart([b"\x00not a header"])
            assert raw.poll(2000), "server did not answer a garbage request"
            reply = decode(raw.recv_multipart())
        finally:
            raw.close()
        assert reply.kind == "error" and reply.seq == -1
        assert "malformed request" in reply.meta["error"] and "not msgpack" in reply.meta["error"]

        with RequestClient(server.endpoint, "good-client") as client:
            assert client.request("ping", {"n": 1}, timeout=2.0).meta == {"n": 1}
        assert server.rejected == 1


def test_wrong_schema_request_raises_remote_error_naming_versions():
    with serving(echo) as server:
        raw = default_context().socket(zmq.DEALER)
        raw.setsockopt(zmq.LINGER, 0)
        raw.connect(server.endpoint)
        try:
            raw.send_multipart([msgpack.packb(good_header(v=99, seq=5))])
            assert raw.poll(2000)
            reply = decode(raw.recv_multipart())
        finally:
            raw.close()
    assert reply.kind == "error" and reply.seq == 5  # still addressed to the request
    assert "v99" in reply.meta["error"] and f"v{SCHEMA_VERSION}" in reply.meta["error"]


def test_remote_error_carries_the_servers_text():
    def refuse(server, request):
        server.reply_error(request, "action contains NaN at index 3: send finite values")

    with serving(refuse) as server, RequestClient(server.endpoint, "client") as client:
        with pytest.raises(RemoteError, match="NaN at index 3: send finite values") as err:
            client.request("step", arrays={"action": np.full(7, np.nan)}, timeout=2.0)
    assert err.value.text == "action contains NaN at index 3: send finite values"
    assert err.value.kind == "step" and err.value.endpoint == server.endpoint


@pytest.mark.parametrize("retries", [0, 1])
def test_request_without_server_times_out_promptly(retries):
    endpoint = free_tcp_endpoint()  # nothing listens here
    with RequestClient(endpoint, "client", timeout=0.2, retries=retries,
                       peer="the robot server (`robostack robot-server`)") as client:
        start = time.monotonic()
        with pytest.raises(PeerTimeout) as err:
            client.request("step")
        elapsed = time.monotonic() - start
    assert 0.2 * (1 + retries) - 0.01 <= elapsed < 0.2 * (1 + retries) + 0.3
    assert endpoint in str(err.value) and "robostack robot-server" in str(err.value)
    assert "'step'" in str(err.value) and "0.20 s" in str(err.value)


def test_late_reply_to_a_timed_out_request_is_never_returned():
    release = threading.Event()

    def slow_first(server, request):
        if request.message.meta["n"] == 1:
            release.wait(2.0)  # answer request 1 only after the client gave up on it
        server.reply(request, "echo", request.message.meta)

    with serving(slow_first) as server, RequestClient(server.endpoint, "c", timeout=0.2) as client:
        with pytest.raises(PeerTimeout, match="connected but no reply"):
            client.request("q", {"n": 1})
        release.set()
        time.sleep(0.05)  # let the late reply go out
        assert client.request("q", {"n": 2}, timeout=2.0).meta == {"n": 2}


def test_client_recovers_when_the_server_restarts():
    endpoint = free_tcp_endpoint()
    with RequestClient(endpoint, "client", timeout=0.3) as client:
        for _ in range(2):
            server = RequestServer(endpoint, "server")
            thread = threading.Thread(target=lambda: echo(server, server.poll(2.0)))
            thread.start()
            assert client.request("ping", {"n": 1}, timeout=2.0).meta == {"n": 1}
            thread.join(2.0)
            server.close()
            with pytest.raises(PeerTimeout):
                client.request("ping")


# A server in its own process that answers its first request as `how` says and then exits at
# once (os._exit: no close, as a crash or a SIGKILL leaves it).
_DYING_SERVER = """
import os, sys, time
from robostack.transport import RequestServer
server = RequestServer(sys.argv[1], "dying-server")
print("ready", flush=True)
request = None
while request is None:
    request = server.poll(1.0)
if sys.argv[2] == "reply":
    server.reply(request, "bye", {})
    time.sleep(0.001)
os._exit(0)
"""


def _dying_server(endpoint: str, how: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _DYING_SERVER, endpoint, how], cwd=REPO,
                            stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=REPO))
    assert proc.stdout.readline().strip() == "ready"
    return proc


@pytest.mark.parametrize("where", ["tcp", "ipc"])
def test_a_server_that_dies_holding_the_request_fails_it_at_once_not_at_its_timeout(where):
    # A reset waits up to 30 s for a real arm's homing; a server that died meanwhile must not
    # cost the caller those 30 s before it starts recovering.
    endpoint = free_tcp_endpoint() if where == "tcp" else ipc_endpoint(f"dying-{os.getpid()}")
    proc = _dying_server(endpoint, "exit")
    with RequestClient(endpoint, "client", timeout=30.0, peer="the robot server") as client:
        start = time.monotonic()
        with pytest.raises(PeerTimeout) as err:
            client.request("reset")
        elapsed = time.monotonic() - start
    proc.wait(5.0)
    assert elapsed < 3.0, elapsed  # ~1 ms after the exit on an idle machine
    assert "connection dropped" in str(err.value) and "'reset'" in str(err.value), err.value
    assert endpoint in str(err.value) and "the robot server" in str(err.value)


def test_a_reply_sent_just_before_the_server_exits_is_still_returned():
    endpoint = free_tcp_endpoint()
    proc = _dying_server(endpoint, "reply")
    with RequestClient(endpoint, "client", timeout=10.0) as client:
        assert client.request("shutdown").kind == "bye"
    proc.wait(5.0)


def test_a_server_restarted_between_two_requests_answers_the_second():
    # The drop of the first server is reported before the second request: it must not fail
    # that request, which the new server answers.
    endpoint = free_tcp_endpoint()
    with RequestClient(endpoint, "client", timeout=5.0) as client:
        proc = _dying_server(endpoint, "reply")
        assert client.request("first").kind == "bye"
        proc.wait(5.0)
        time.sleep(0.2)  # the drop is reported by now
        with serving_at(endpoint, echo):
            assert client.request("second", {"n": 2}).meta == {"n": 2}


def test_reply_with_an_old_seq_is_discarded():
    # A hand-made server that answers each request with a leftover reply first: the client must
    # skip it by seq and return the real one.
    endpoint = free_tcp_endpoint()
    router = default_context().socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(endpoint)

    def serve_once():
        assert router.poll(2000)
        identity, *frames = router.recv_multipart()
        request = decode(frames)
        for seq, tag in [(request.seq - 1, "stale"), (request.seq, "fresh")]:
            router.send_multipart([identity, *encode(Message("r", {"tag": tag}, seq=seq))])

    try:
        with RequestClient(endpoint, "client", timeout=2.0) as client:
            for _ in range(2):
                thread = threading.Thread(target=serve_once)
                thread.start()
                assert client.request("q").meta == {"tag": "fresh"}
                thread.join(2.0)
    finally:
        router.close()


def test_plain_req_client_can_talk_to_the_server():
    # DESIGN.md allows lazy-pirate REQ clients; their envelope has an empty delimiter frame.
    with serving(echo) as server:
        req = default_context().socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        req.connect(server.endpoint)
        try:
            req.send_multipart(encode(Message("ping", {"n": 7}, seq=9)))
            assert req.poll(2000)
            reply = decode(req.recv_multipart())
        finally:
            req.close()
    assert (reply.kind, reply.meta, reply.seq) == ("echo", {"n": 7}, 9)


# --- latest-value streams -----------------------------------------------------------------------

def test_latest_drains_to_the_newest_message():
    with stream() as (pub, sub):
        seqs = [pub.publish("state", {"i": i}, {"q": np.full(7, float(i))}) for i in range(300)]
        time.sleep(0.2)  # all of them now queued at the subscriber
        msg = sub.latest(1.0)
        assert msg.seq == seqs[-1] and msg.meta == {"i": 299} and msg.arrays["q"][0] == 299.0
        assert sub.poll_latest() is None  # nothing older left behind to be returned later


def test_subscriber_filters_by_kind():
    with stream(topic_kinds=["state", "hello"]) as (pub, sub):
        pub.publish("state", {"n": 1})
        pub.publish("states", {"n": 2})
        pub.publish("frames", {"n": 3})
        time.sleep(0.1)
        msg = sub.latest(1.0)
        assert (msg.kind, msg.meta) == ("state", {"n": 1})


def test_stale_message_is_refused_with_its_age():
    with stream() as (pub, sub):
        pub.publish("state", stamp=time.monotonic() - 1.0)
        with pytest.raises(StaleMessage, match=r"'state' message from test-pub .* ms old") as err:
            sub.latest(1.0, max_age=0.5)
        assert err.value.message.kind == "state"
        pub.publish("state")
        assert sub.latest(1.0, max_age=0.5).age() < 0.5


def test_age_across_hosts_ignores_clock_offset_but_sees_queueing():
    # Another host's monotonic clock: fresh messages stamped 1000 s "in the future".
    with stream(same_host=False) as (pub, sub):
        for _ in range(3):
            pub.publish("state", stamp=time.monotonic() + 1000.0)
            sub.latest(1.0, max_age=0.05)
        pub.publish("state", stamp=time.monotonic() + 1000.0 - 0.5)  # sat 0.5 s in a queue
        with pytest.raises(StaleMessage):
            sub.latest(1.0, max_age=0.05)


def test_silent_or_dead_publisher_is_a_peer_timeout():
    endpoint = free_tcp_endpoint()
    with Subscriber(endpoint, topic_kinds="state") as sub:
        start = time.monotonic()
        with pytest.raises(PeerTimeout, match="never received one") as err:
            sub.latest(0.1)
        assert time.monotonic() - start < 0.5
        assert endpoint in str(err.value) and "'state'" in str(err.value)

    with stream() as (pub, sub):
        pub.close()
        with pytest.raises(PeerTimeout, match=r"last one \d+\.\d+ s ago"):
            sub.latest(0.1)


def test_pub_sub_over_ipc():
    endpoint = ipc_endpoint(f"test-{time.monotonic_ns()}")
    with Publisher(endpoint, "p") as pub, Subscriber(endpoint) as sub:
        deadline = time.monotonic() + 5.0
        while (msg := sub.poll_latest()) is None:
            assert time.monotonic() < deadline
            pub.publish("frames", arrays={"img": np.ones((2, 8, 8, 3), np.uint8)})
            time.sleep(0.01)
    assert msg.arrays["img"].shape == (2, 8, 8, 3)
