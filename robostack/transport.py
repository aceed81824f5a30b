"""The robostack wire format and the four socket roles every process uses.

Every message on every socket is one *envelope*, a ZeroMQ multipart message:

    frame 0     msgpack map {"v": SCHEMA_VERSION, "kind": str, "src": str, "ses": str,
                             "seq": int, "t": float, "meta": {...},
                             "arrays": [[name, dtype.str, shape], ...]}
    frame 1..n  the raw C-order bytes of each array, in the order listed in "arrays"

- "src" names the sending process ("robot-server", "actor", ...); "ses" is a random id drawn
  once per socket object, so a consumer can tell a restarted peer from the old one.
- "seq" counts messages per socket object. A reply carries the seq of the request it answers
  (see RequestServer.reply), which is how a client pairs replies with requests.
- "t" is the sender's time.monotonic() when it sent (or the stamp it passed, e.g. a camera's
  capture time). Monotonic clocks are only comparable on one host: see Message.age and
  Subscriber.latest for what that means for age checks.
- "meta" is plain data (str/int/float/bool/None/list/dict); numbers in bulk go in arrays.
- Only bool/int/uint/float/complex arrays go on the wire. Nothing is ever pickled: a peer can
  send us garbage, never code.

Bump SCHEMA_VERSION whenever the header changes shape; decode() refuses other versions with a
message that says which side to upgrade.

Socket roles (all sockets LINGER 0, so closing never blocks on undelivered messages; like any
ZeroMQ socket, use each object from one thread only):

    Publisher  -> Subscriber      latest-value streams (state, frames, weights): PUB/SUB; the
                                  consumer drains to the newest message and checks its age.
    RequestClient -> RequestServer   commands (step, reset, gains, stats): DEALER/ROUTER with a
                                  timeout on every wait; nothing here can block forever.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import socket
import time
import uuid
from dataclasses import dataclass, field

import msgpack
import numpy as np
import zmq

__all__ = [
    "SCHEMA_VERSION", "Message", "encode", "decode",
    "TransportError", "ProtocolError", "PeerTimeout", "StaleMessage", "RemoteError",
    "Publisher", "Subscriber", "RequestClient", "RequestServer", "Request",
    "free_tcp_endpoint", "ipc_endpoint", "default_context",
]

SCHEMA_VERSION = 1

# Buffers at least this big are handed to ZeroMQ without a copy; smaller ones are copied,
# because a zero-copy frame costs more bookkeeping (a Python object, a free callback from the
# I/O thread) than memcpy of a few KiB. pyzmq applies it inside send(copy=False) as the
# socket's copy_threshold.
ZERO_COPY_BYTES = 64 * 1024

# dtype.kind letters allowed on the wire: bool, signed int, unsigned int, float, complex.
_WIRE_KINDS = "biufc"

_log = logging.getLogger(__name__)


# --- errors -----------------------------------------------------------------------------------

class TransportError(RuntimeError):
    """Base class of everything this module raises about peers and messages."""


class ProtocolError(TransportError, ValueError):
    """A message that is not a valid robostack envelope. `seq` is the sender's sequence number
    when the header was readable enough to find it (so a server can still address its error
    reply), else None."""

    def __init__(self, text: str, seq: int | None = None):
        super().__init__(text)
        self.seq = seq

    def __reduce__(self):  # keep extra fields when an error crosses a process boundary
        return type(self), (str(self), self.seq)


class PeerTimeout(TransportError, TimeoutError):
    """A peer did not answer or publish in time: it is dead, stuck, or not where we look."""


class StaleMessage(TransportError):
    """The newest message from a stream is older than the consumer allows. The message itself
    is attached as `.message` for callers that want to log or inspect it."""

    def __init__(self, text: str, message: "Message"):
        super().__init__(text)
        self.message = message

    def __reduce__(self):
        return type(self), (str(self), self.message)


class RemoteError(TransportError):
    """The server understood the request and refused it; `.text` is its explanation verbatim."""

    def __init__(self, text: str, endpoint: str, kind: str):
        super().__init__(f"server at {endpoint} refused {kind!r}: {text}")
        self.text = text
        self.endpoint = endpoint
        self.kind = kind

    def __reduce__(self):
        return type(self), (self.text, self.endpoint, self.kind)


# --- the envelope -----------------------------------------------------------------------------

@dataclass
class Message:
    """One envelope. `arrays` decoded from the wire are views on the received buffers and may be
    read-only: copy one (`a.copy()`) before writing into it."""

    kind: str
    meta: dict = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = ""
    session: str = ""
    seq: int = 0
    stamp: float = 0.0

    def age(self) -> float:
        """Seconds since the sender stamped this message. Only meaningful when sender and
        receiver share a host: time.monotonic() has an arbitrary origin per machine."""
        return time.monotonic() - self.stamp


def encode(msg: Message) -> list:
    """Message -> list of frames (bytes header, then one buffer per array).

    Large array buffers are sent without copying, so the caller must not write into an array
    it has just sent; send a copy if you reuse a buffer (e.g. a preallocated camera frame)."""
    # A receiver would refuse these; say so at the sender, where the bug is.
    if not isinstance(msg.kind, str) or not isinstance(msg.meta, dict):
        raise TypeError(f"message kind must be a str and meta a dict, got kind {msg.kind!r} and "
                        f"meta of type {type(msg.meta).__name__}")
    specs = []
    buffers = []
    for name, array in msg.arrays.items():
        if not isinstance(array, np.ndarray):
            array = np.asarray(array)
        if array.dtype.kind not in _WIRE_KINDS:
            raise TypeError(
                f"array {name!r} of {msg.kind!r} has dtype {array.dtype}: only bool, int, uint, "
                f"float and complex arrays go on the wire; put text in meta")
        if not array.flags.c_contiguous:
            array = np.ascontiguousarray(array)
        specs.append((name, array.dtype.str, array.shape))
        # Flat byte views: len() of a frame is then its size in bytes. cast() refuses empty arrays.
        buffers.append(memoryview(array).cast("B") if array.size else b"")
    header = {
        # "v" and "kind" lead so that a kind's header starts with a fixed byte string, which
        # Subscriber uses as a ZeroMQ topic filter (see _topic).
        "v": SCHEMA_VERSION, "kind": msg.kind,
        "src": msg.source, "ses": msg.session, "seq": msg.seq, "t": msg.stamp,
        "meta": msg.meta, "arrays": specs,
    }
    try:
        head = msgpack.packb(header)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(_explain_unpackable(msg, exc)) from None
    return [head, *buffers]


def _explain_unpackable(msg: Message, exc: Exception) -> str:
    """Find the first value msgpack cannot send and say where it is. Only runs on failure, so the
    hot path stays msgpack.packb and nothing else."""

    def walk(value, path):
        if value is None or isinstance(value, (bool, float, str, bytes)):
            return None
        if isinstance(value, int):
            return None if -2**63 <= value < 2**64 else (path, f"int {value} (beyond 64 bits)")
        if isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                found = walk(item, f"{path}[{i}]")
                if found:
                    return found
            return None
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, (str, int)):
                    return (path, f"a dict key of type {type(key).__name__}")
                found = walk(item, f"{path}[{key!r}]")
                if found:
                    return found
            return None
        return (path, f"a {type(value).__module__}.{type(value).__name__}")

    found = walk(msg.meta, "meta")
    if found is None:
        return f"cannot encode {msg.kind!r}: {exc}"
    path, what = found
    return (f"{path} of {msg.kind!r} is {what}, which the wire format cannot carry: meta holds "
            f"plain str/int/float/bool/None/list/dict (use int()/float()/.tolist() on numpy "
            f"values), and numeric data in bulk goes in `arrays`")


# Allowed dtypes seen on the wire, by their dtype.str. Only valid, allowed dtypes are cached,
# so a hostile peer cannot grow this without bound.
_DTYPES: dict[str, np.dtype] = {}


def _wire_dtype(name, dtype_str) -> np.dtype:
    dtype = _DTYPES.get(dtype_str) if isinstance(dtype_str, str) else None
    if dtype is not None:
        return dtype
    try:
        dtype = np.dtype(dtype_str) if isinstance(dtype_str, str) else None
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind not in _WIRE_KINDS:
        raise ProtocolError(
            f"array {name!r} has dtype {dtype_str!r}, which robostack does not accept: only "
            f"bool, int, uint, float and complex arrays go on the wire (never object, string, "
            f"structured or datetime); the sender must convert it")
    _DTYPES[dtype_str] = dtype
    return dtype


_HEADER_TYPES = (("kind", str), ("src", str), ("ses", str), ("seq", int), ("t", (float, int)),
                 ("meta", dict), ("arrays", list))


def decode(frames) -> Message:
    """Frames (bytes, memoryview or zmq.Frame) -> Message, or ProtocolError saying what is wrong.

    Arrays are views on the frames: no copy, read-only when the frames are bytes."""
    if len(frames) == 0:
        raise ProtocolError("empty message: a robostack envelope has at least a header frame")
    head = frames[0]
    try:
        header = msgpack.unpackb(head, strict_map_key=False)
    except Exception as exc:  # msgpack raises a zoo of types on garbage; all mean the same here
        raise ProtocolError(
            f"header frame ({len(head)} bytes) is not msgpack ({type(exc).__name__}: {exc}): the "
            f"peer does not speak the robostack wire format; is another program using this "
            f"endpoint?") from None
    if not isinstance(header, dict):
        raise ProtocolError(
            f"header is a msgpack {type(header).__name__}, not a map: the peer does not speak the "
            f"robostack wire format; is another program using this endpoint?")
    seq = header.get("seq")
    seq = seq if isinstance(seq, int) else None
    version = header.get("v")
    if version != SCHEMA_VERSION:
        if version is None:
            raise ProtocolError(
                f"header has no schema version 'v' (keys: {sorted(map(str, header))}): the peer "
                f"does not speak the robostack wire format", seq)
        raise ProtocolError(
            f"peer speaks schema v{version}, this process speaks v{SCHEMA_VERSION}: "
            f"upgrade/downgrade robostack on one side so both speak the same version", seq)
    for key, types in _HEADER_TYPES:
        value = header.get(key)
        if not isinstance(value, types) or isinstance(value, bool):
            problem = "lacks field" if key not in header else f"has {type(value).__name__} for"
            raise ProtocolError(
                f"schema v{SCHEMA_VERSION} header {problem} {key!r}: the sender's robostack is "
                f"broken or not a release; upgrade it", seq)

    specs = header["arrays"]
    if len(specs) != len(frames) - 1:
        raise ProtocolError(
            f"{header['kind']!r} header lists {len(specs)} arrays but {len(frames) - 1} buffer "
            f"frames followed: the message was truncated or corrupted", seq)
    arrays = {}
    for spec, buf in zip(specs, frames[1:]):
        try:
            name, dtype_str, shape = spec
            count = math.prod(shape)  # [-2, -4] multiplies out fine; np.ndarray refuses it
            if not isinstance(name, str) or not isinstance(count, int) or count < 0:
                raise TypeError
        except (TypeError, ValueError):
            raise ProtocolError(_bad_spec(header, spec), seq) from None
        dtype = _wire_dtype(name, dtype_str)
        # len() is the byte size for bytes, zmq.Frame and encode()'s flat memoryviews.
        if len(buf) != count * dtype.itemsize:
            raise ProtocolError(
                f"array {name!r} of {header['kind']!r}: buffer has {len(buf)} bytes but "
                f"{dtype_str} x {list(shape)} needs {count * dtype.itemsize}: the message was "
                f"truncated or corrupted", seq)
        try:  # a view on the frame, like np.frombuffer(buf, dtype).reshape(shape) but cheaper
            arrays[name] = np.ndarray(shape, dtype, buf)
        except (TypeError, ValueError):
            raise ProtocolError(_bad_spec(header, spec), seq) from None
    if len(arrays) != len(specs):
        raise ProtocolError(f"{header['kind']!r} header lists an array name twice", seq)
    return Message(header["kind"], header["meta"], arrays, header["src"], header["ses"],
                   header["seq"], float(header["t"]))


def _bad_spec(header: dict, spec) -> str:
    return (f"{header['kind']!r} header has array entry {spec!r}, expected [name, dtype, shape] "
            f"with a str name and non-negative int dims")


def _topic(kind: str) -> bytes:
    """The first bytes of every header of this kind: fixmap marker, "v", version, "kind", kind.
    ZeroMQ SUB filters match a prefix of frame 0, so subscribing to this selects one kind
    exactly (msgpack length-prefixes strings, so "state" does not match "states")."""
    n_fields = 8
    return (bytes([0x80 | n_fields]) + msgpack.packb("v") + msgpack.packb(SCHEMA_VERSION)
            + msgpack.packb("kind") + msgpack.packb(kind))


# --- sockets ------------------------------------------------------------------------------------

def default_context() -> zmq.Context:
    """The process-wide shared context. Looked up per socket rather than at import, because
    zmq.Context.instance() makes a fresh one after a fork and a stale one would deadlock."""
    return zmq.Context.instance()


def free_tcp_endpoint(host: str = "127.0.0.1") -> str:
    """A tcp endpoint on a port that was free a moment ago (for tests; another process can take
    it before you bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return f"tcp://{host}:{s.getsockname()[1]}"


def ipc_endpoint(name: str) -> str:
    """A per-user unix-socket endpoint, faster than loopback tcp between processes on one host."""
    if not name or "/" in name:
        raise ValueError(f"ipc endpoint name must be a non-empty word without '/', got {name!r}")
    return f"ipc:///tmp/robostack-{os.getuid()}-{name}"


def _open(context, kind: int, endpoint: str, bind: bool, options=()) -> zmq.Socket:
    sock = (context or default_context()).socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.copy_threshold = ZERO_COPY_BYTES
    for option, value in options:
        sock.setsockopt(option, value)
    try:
        sock.bind(endpoint) if bind else sock.connect(endpoint)
    except zmq.ZMQError as exc:
        sock.close()
        verb = "bind" if bind else "connect to"
        if exc.errno == zmq.EADDRINUSE:
            fix = ("another process (an old server still running?) holds it: stop that or "
                   "pick another port")
        elif exc.errno in (zmq.EINVAL, zmq.EPROTONOSUPPORT):
            fix = "expected 'tcp://HOST:PORT' or 'ipc:///path' (check the config)"
        elif exc.errno == zmq.EADDRNOTAVAIL:
            fix = "that address is not on this machine: bind tcp://*:PORT or one of its own"
        else:
            fix = "check the endpoint in the config"
        raise TransportError(f"cannot {verb} {endpoint!r}: {exc.strerror}: {fix}") from None
    return sock


def _send(sock: zmq.Socket, frames: list) -> None:
    # copy=False makes pyzmq skip the copy for buffers >= ZERO_COPY_BYTES and copy smaller ones.
    # NOBLOCK: PUB and ROUTER drop rather than block anyway, and a DEALER with no connection
    # raises zmq.Again, which RequestClient handles, so nothing here can hang.
    last = len(frames) - 1
    for i, frame in enumerate(frames):
        sock.send(frame, zmq.NOBLOCK | (zmq.SNDMORE if i < last else 0), copy=False)


def _ms(seconds: float) -> int:
    return max(0, math.ceil(seconds * 1000))


def _new_session() -> str:
    return uuid.uuid4().hex[:12]


class _Socket:
    """Close and context-manager plumbing shared by the four roles."""

    _sock: zmq.Socket

    def close(self) -> None:
        self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- latest-value streams -----------------------------------------------------------------------

class Publisher(_Socket):
    """PUB side of a latest-value stream. publish() never blocks: when a subscriber falls behind
    by more than `hwm` messages, ZeroMQ drops new messages for it instead of queueing them. A
    subscriber that connects late misses what came before, so streams should republish
    periodically (state and frames do by nature; a weights publisher should resend its latest
    weights every few seconds)."""

    def __init__(self, endpoint: str, source: str, bind: bool = True, context=None, hwm: int = 2):
        self.endpoint = endpoint
        self.source = source
        self.session = _new_session()
        self._seq = 0
        self._sock = _open(context, zmq.PUB, endpoint, bind, [(zmq.SNDHWM, hwm)])

    def publish(self, kind: str, meta: dict | None = None, arrays: dict | None = None,
                stamp: float | None = None) -> int:
        """Send one message; returns its seq. `stamp` defaults to now; pass the time the data
        was measured (e.g. a camera's capture time) when that is earlier."""
        self._seq += 1
        msg = Message(kind, meta or {}, arrays or {}, self.source, self.session, self._seq,
                      time.monotonic() if stamp is None else stamp)
        _send(self._sock, encode(msg))
        return self._seq


def _is_same_host(endpoint: str) -> bool:
    """True when the endpoint can only reach this machine, so sender stamps are on our clock."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    host = endpoint.partition("://")[2].rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Subscriber(_Socket):
    """SUB side of a latest-value stream: hands out the newest message and says when the stream
    is dead (PeerTimeout) or old (StaleMessage).

    Why drain instead of ZMQ_CONFLATE: conflate does not support multipart messages.

    Why a deep receive queue (`hwm` messages) although we only want the newest: when the queue
    is full, ZeroMQ's I/O thread stops reading the socket and the backlog waits in kernel
    buffers, where draining cannot reach it. Measured with a 1 kHz state stream read at 10 Hz:
    hwm=2 returned messages ~900 ms old, hwm=1000 about 2 ms old. So hwm should exceed what
    arrives between two reads; memory is bounded by hwm x message size, so lower it for streams
    of big messages published fast (for 100 kB frames at 30 Hz, hwm=100 bounds it at 10 MB).
    """

    def __init__(self, endpoint: str, topic_kinds=None, connect: bool = True, context=None,
                 hwm: int = 1000, same_host: bool | None = None):
        self.endpoint = endpoint
        self.kinds = [topic_kinds] if isinstance(topic_kinds, str) else list(topic_kinds or [])
        self._sock = _open(context, zmq.SUB, endpoint, not connect, [(zmq.RCVHWM, hwm)])
        for topic in [_topic(k) for k in self.kinds] or [b""]:
            self._sock.setsockopt(zmq.SUBSCRIBE, topic)
        self._poller = zmq.Poller()  # reused: Socket.poll() would build one per call
        self._poller.register(self._sock, zmq.POLLIN)
        # Whether publisher stamps are on our clock; guessed from the endpoint unless told.
        self._same_host = _is_same_host(endpoint) if same_host is None else same_host
        self._last_rx: float | None = None  # our monotonic time of the last message
        # Cross-host age estimate: the smallest (our receive time - sender stamp) seen in this
        # publisher session is clock offset + fastest transit; age beyond that is queueing.
        self._offset_session = None
        self._offset = math.inf

    def poll_latest(self) -> Message | None:
        """Newest queued message, dropping older ones, or None if nothing is queued. Never waits."""
        frames = None
        while True:
            try:
                # Not copied: streams carry camera frames and weights, and most drained
                # messages are thrown away unread.
                frames = self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
        if frames is None:
            return None
        now = self._last_rx = time.monotonic()
        msg = decode(frames)
        if msg.session != self._offset_session:
            self._offset_session, self._offset = msg.session, math.inf
        self._offset = min(self._offset, now - msg.stamp)
        return msg

    def latest(self, timeout: float, max_age: float | None = None) -> Message:
        """Wait up to `timeout` s for a message newer than the last one returned, then return the
        newest. PeerTimeout if none came; StaleMessage if the newest is older than `max_age` s.

        Age is exact (stamp vs our clock) when the publisher shares our host: ipc and loopback
        endpoints, or `same_host=True`. Otherwise the clocks have unrelated origins, so age is
        measured beyond the fastest delivery seen from this publisher session: queueing delay is
        caught, a constant network latency is not, and clocks must tick at the same rate
        (NTP-disciplined hosts drift microseconds per second, unsynchronised ones up to ~0.1 ms/s,
        which a long session accumulates into false staleness)."""
        if not self._poller.poll(_ms(timeout)):
            raise PeerTimeout(self._silence(timeout))
        msg = self.poll_latest()
        if msg is None:  # poll said readable; cannot happen, but never return None from here
            raise PeerTimeout(self._silence(timeout))
        if max_age is not None:
            age = msg.age() if self._same_host else time.monotonic() - msg.stamp - self._offset
            if age > max_age:
                raise StaleMessage(
                    f"newest {msg.kind!r} message from {msg.source or '?'} at {self.endpoint} is "
                    f"{age * 1e3:.1f} ms old, limit {max_age * 1e3:.1f} ms: the publisher is "
                    f"lagging, or this consumer reads too rarely to keep up", msg)
        return msg

    def _silence(self, timeout: float) -> str:
        what = " or ".join(repr(k) for k in self.kinds) or "any"
        if self._last_rx is None:
            since = "never received one"
        else:
            since = f"last one {time.monotonic() - self._last_rx:.2f} s ago"
        return (f"no {what} message from {self.endpoint} within {timeout:.2f} s ({since}): is its "
                f"publisher running and publishing there, with the same robostack schema "
                f"v{SCHEMA_VERSION}?")


# --- requests -----------------------------------------------------------------------------------

class RequestClient(_Socket):
    """DEALER side of request/reply, with a deadline on every wait (the lazy-pirate pattern).

    A reply carries its request's seq in the header; replies with any other seq are leftovers
    and are dropped. After a timeout the socket is thrown away and reopened, so a request still
    queued for a dead server is discarded rather than delivered late (a late "step" would move
    the arm unasked). `retries` resends with the same seq, so a server can recognise a
    duplicate by (session, seq); only retry requests that are safe to repeat.

    Requests and replies are received as copied bytes, not zero-copy frames: they are mostly
    small, and a zmq.Frame object per part costs more than copying a few hundred bytes (about
    1.5 us per part, measured). Decoded arrays are therefore read-only.

    One thread per client: ZeroMQ sockets are not thread-safe."""

    def __init__(self, endpoint: str, source: str, timeout: float = 1.0, retries: int = 0,
                 context=None, peer: str = "its server"):
        self.endpoint = endpoint
        self.source = source
        self.timeout = timeout
        self.retries = retries
        self.peer = peer  # for error messages, e.g. "the robot server (`robostack robot-server`)"
        self.session = _new_session()
        self._context = context
        self._seq = 0
        self._connect()

    def _connect(self) -> None:
        # IMMEDIATE: queue requests only on a live connection, so "no server" shows up as
        # "cannot send" instead of requests piling up for whoever binds next.
        self._sock = _open(self._context, zmq.DEALER, self.endpoint, False, [(zmq.IMMEDIATE, 1)])
        # One poller for the socket's life: Socket.poll() builds a new one per call, a
        # measurable share of a round trip.
        self._poller = zmq.Poller()
        self._poller.register(self._sock, zmq.POLLIN)

    def request(self, kind: str, meta: dict | None = None, arrays: dict | None = None,
                timeout: float | None = None) -> Message:
        """Send one request and return the reply. Raises PeerTimeout if no reply came within
        `timeout` s on any of 1 + retries attempts, RemoteError if the server refused it, and
        ProtocolError if the reply is not a valid envelope."""
        timeout = self.timeout if timeout is None else timeout
        self._seq += 1
        frames = encode(Message(kind, meta or {}, arrays or {}, self.source, self.session,
                                self._seq, time.monotonic()))
        for _ in range(1 + self.retries):
            reply, problem = self._exchange(frames, self._seq, timeout)
            if reply is not None:
                break
            self._sock.close()
            self._connect()
        else:
            attempts = f" on each of {1 + self.retries} attempts" if self.retries else ""
            raise PeerTimeout(
                f"{problem} to {kind!r} from {self.endpoint} within {timeout:.2f} s{attempts}: is "
                f"{self.peer} running and reachable at {self.endpoint}?")
        if reply.kind == "error":
            raise RemoteError(str(reply.meta.get("error", reply.meta)), self.endpoint, kind)
        return reply

    def _exchange(self, frames: list, seq: int, timeout: float):
        deadline = time.monotonic() + timeout
        try:
            _send(self._sock, frames)
        except zmq.Again:  # not connected (yet): IMMEDIATE refuses to queue, so wait for it
            if not self._sock.poll(_ms(timeout), zmq.POLLOUT):
                return None, "no connection, so no reply"
            _send(self._sock, frames)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._poller.poll(_ms(remaining)):
                return None, "connected but no reply"
            try:
                reply = decode(self._sock.recv_multipart(zmq.NOBLOCK))  # copied: see class doc
            except ProtocolError as exc:
                raise ProtocolError(f"reply from {self.endpoint}: {exc}", exc.seq) from None
            # seq -1: the server could not read our request at all, but it answered us alone.
            if reply.seq == seq or (reply.kind == "error" and reply.seq == -1):
                return reply, None
            # Otherwise a leftover reply to an earlier request: drop it and keep waiting.


@dataclass
class Request:
    """A request as the server sees it. `routing` is the ZeroMQ envelope that addresses the
    reply: [identity] from a DEALER client, [identity, b""] from a plain REQ client."""

    message: Message
    routing: list

    @property
    def identity(self) -> bytes:
        return self.routing[0]


class RequestServer(_Socket):
    """ROUTER side of request/reply, made for a loop that also does other work:

        while running:
            request = server.poll(0.0)
            if request is not None:
                server.reply(request, "ok", {...})
            ...control work...

    Requests that are not valid envelopes are answered at once with an "error" reply naming the
    problem, logged, and never returned. Replies to clients that went away are dropped."""

    def __init__(self, endpoint: str, source: str, bind: bool = True, context=None):
        self.endpoint = endpoint
        self.source = source
        self.session = _new_session()
        self.rejected = 0  # malformed requests answered with an error
        self._sock = _open(context, zmq.ROUTER, endpoint, bind)
        self._poller = zmq.Poller()  # reused: Socket.poll() would build one per call
        self._poller.register(self._sock, zmq.POLLIN)

    def poll(self, timeout: float = 0.0) -> Request | None:
        """The next request, waiting up to `timeout` s; None if none (or it was malformed)."""
        if not self._poller.poll(_ms(timeout)):
            return None
        frames = self._sock.recv_multipart(zmq.NOBLOCK)  # copied: see RequestClient
        # A REQ client puts an empty delimiter after its identity; a header is never empty.
        split = 2 if len(frames) > 1 and len(frames[1]) == 0 else 1
        routing = frames[:split]
        try:
            msg = decode(frames[split:])
        except ProtocolError as exc:
            self.rejected += 1
            _log.warning("%s: rejected a request: %s", self.endpoint, exc)
            self._send_reply(routing, -1 if exc.seq is None else exc.seq, "error",
                             {"error": f"malformed request: {exc}"}, {})
            return None
        return Request(msg, routing)

    def reply(self, request: Request, kind: str, meta: dict | None = None,
              arrays: dict | None = None) -> None:
        """Answer `request`. The reply's seq is the request's seq: that is how clients match."""
        self._send_reply(request.routing, request.message.seq, kind, meta or {}, arrays or {})

    def reply_error(self, request: Request, text: str) -> None:
        """Refuse `request`; the client raises RemoteError with `text`. Say what was wrong and
        how to fix it, e.g. "action contains NaN at index 3: send finite values"."""
        self._send_reply(request.routing, request.message.seq, "error", {"error": text}, {})

    def _send_reply(self, routing, seq, kind, meta, arrays) -> None:
        msg = Message(kind, meta, arrays, self.source, self.session, seq, time.monotonic())
        _send(self._sock, routing + encode(msg))
