"""The four socket roles every process uses, over the envelope of envelope.py.

Who may connect (docs/security.md): this machine only, unless a socket is given CURVE keys
(`curve=CurveKeys(...)`, auth.py): a bind on a non-loopback address is refused without them.

Socket roles (all sockets LINGER 0, so closing never blocks on undelivered messages; like any
ZeroMQ socket, use each object from one thread only):

    Publisher  -> Subscriber      latest-value streams (state, frames, weights): PUB/SUB; the
                                  consumer drains to the newest message and checks its age.
    RequestClient -> RequestServer   commands (step, reset, gains, stats): DEALER/ROUTER with a
                                  timeout on every wait; nothing here can block forever.

One thing: the socket roles, which share their plumbing (open_socket, _send, the bind policy,
LINGER and CURVE set-up); split apart, each would import the others' private helpers.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from dataclasses import dataclass

import zmq

from robostack.transport.auth import CurveKeys, apply_curve, refusal_hint
from robostack.transport.endpoints import check_endpoint, is_same_host
from robostack.transport.envelope import (
    MAX_ARRAYS, SCHEMA_VERSION, ZERO_COPY_BYTES, Message, PeerTimeout, ProtocolError, RemoteError,
    StaleMessage, TransportError, _topic, decode, encode)

__all__ = ["Publisher", "Subscriber", "RequestClient", "RequestServer", "Request", "default_context",
           "open_socket"]


_log = logging.getLogger(__name__)


# --- sockets ------------------------------------------------------------------------------------

def default_context() -> zmq.Context:
    """The process-wide shared context. Looked up per socket rather than at import, because
    zmq.Context.instance() makes a fresh one after a fork and a stale one would deadlock."""
    return zmq.Context.instance()


def open_socket(context, kind: int, endpoint: str, bind: bool, options=(),
                curve: CurveKeys | None = None) -> zmq.Socket:
    """A ZeroMQ socket of `kind` bound or connected the way the four roles are (LINGER 0, the
    bind policy, CURVE when given), for a role of its own (the camera stream's consumer)."""
    check_endpoint(endpoint, bind, curve is not None)
    context = context or default_context()
    sock = context.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.copy_threshold = ZERO_COPY_BYTES
    for option, value in options:
        sock.setsockopt(option, value)
    if curve is not None:
        apply_curve(sock, context, curve, bind)
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
            fix = "that address is not on this machine: bind one of its own (or tcp://*:PORT, with CURVE)"
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

    def __init__(self, endpoint: str, source: str, bind: bool = True, context=None, hwm: int = 2,
                 curve: CurveKeys | None = None):
        self.endpoint = endpoint
        self.source = source
        self.session = _new_session()
        self._seq = 0
        self._sock = open_socket(context, zmq.PUB, endpoint, bind, [(zmq.SNDHWM, hwm)], curve)

    def publish(self, kind: str, meta: dict | None = None, arrays: dict | None = None,
                stamp: float | None = None) -> int:
        """Send one message; returns its seq. `stamp` defaults to now; pass the time the data
        was measured (e.g. a camera's capture time) when that is earlier."""
        self._seq += 1
        msg = Message(kind, meta or {}, arrays or {}, self.source, self.session, self._seq,
                      time.monotonic() if stamp is None else stamp)
        _send(self._sock, encode(msg))
        return self._seq


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
                 hwm: int = 1000, same_host: bool | None = None, curve: CurveKeys | None = None):
        self.endpoint = endpoint
        self.kinds = [topic_kinds] if isinstance(topic_kinds, str) else list(topic_kinds or [])
        self.curve = curve
        self._open_args = (context, zmq.SUB, endpoint, not connect, [(zmq.RCVHWM, hwm)], curve)
        self._connect()
        # Whether publisher stamps are on our clock; guessed from the endpoint unless told.
        self._same_host = is_same_host(endpoint) if same_host is None else same_host
        self._last_rx: float | None = None  # our monotonic time of the last message
        # Cross-host age estimate: the smallest (our receive time - sender stamp) seen in this
        # publisher session is clock offset + fastest transit; age beyond that is queueing.
        self._offset_session = None
        self._offset = math.inf

    def _connect(self) -> None:
        self._sock = open_socket(*self._open_args)
        for topic in [_topic(k) for k in self.kinds] or [b""]:
            self._sock.setsockopt(zmq.SUBSCRIBE, topic)
        self._poller = zmq.Poller()  # reused: Socket.poll() would build one per call
        self._poller.register(self._sock, zmq.POLLIN)

    def poll_latest(self) -> Message | None:
        """Newest queued message, dropping older ones, or None if nothing is queued. Never waits."""
        if self._sock.closed:
            self._connect()
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
        if self._sock.closed:
            self._connect()
        if not self._poller.poll(_ms(timeout)):
            if self.curve is not None and not self._open_args[3]:
                self._sock.close()  # reopened at the next call: see RequestClient.request
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
                f"v{SCHEMA_VERSION}?{refusal_hint(self.curve)}")


# --- requests -----------------------------------------------------------------------------------

# How long a request waits for its reply before it also watches for a dropped connection: a
# server that exits while it holds the request is noticed this late at most.
QUICK_REPLY_S = 0.02


class RequestClient(_Socket):
    """DEALER side of request/reply, with a deadline on every wait (the lazy-pirate pattern).

    A reply carries its request's seq in the header; replies with any other seq are leftovers
    and are dropped. After a timeout the socket is thrown away and reopened, so a request still
    queued for a dead server is discarded rather than delivered late (a late "step" would move
    the arm unasked). `retries` resends with the same seq, so a server can recognise a
    duplicate by (session, seq); only retry requests that are safe to repeat.

    A dropped connection ends the wait at once: the server exited or restarted, and the request
    it held is gone, so waiting out the timeout (a reset's is 30 s) only delays the caller's
    recovery. ZeroMQ reports the drop on a monitor socket within ~1 ms of the peer's exit.

    Requests and replies are received as copied bytes, not zero-copy frames: they are mostly
    small, and a zmq.Frame object per part costs more than copying a few hundred bytes (about
    1.5 us per part, measured). Decoded arrays are therefore read-only.

    One thread per client: ZeroMQ sockets are not thread-safe."""

    def __init__(self, endpoint: str, source: str, timeout: float = 1.0, retries: int = 0,
                 context=None, peer: str = "its server", curve: CurveKeys | None = None):
        self.endpoint = endpoint
        self.curve = curve
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
        self._sock = open_socket(self._context, zmq.DEALER, self.endpoint, False, [(zmq.IMMEDIATE, 1)],
                           self.curve)
        self._monitor = self._sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        # One poller for the socket's life: Socket.poll() builds a new one per call, a
        # measurable share of a round trip.
        self._reply_poller = zmq.Poller()
        self._reply_poller.register(self._sock, zmq.POLLIN)
        self._poller = zmq.Poller()
        self._poller.register(self._sock, zmq.POLLIN)
        self._poller.register(self._monitor, zmq.POLLIN)

    def _close_socket(self) -> None:
        if not self._sock.closed:
            self._sock.disable_monitor()
            self._monitor.close()
            self._sock.close()

    def close(self) -> None:
        self._close_socket()

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
            if self._sock.closed:
                self._connect()
            reply, problem = self._exchange(frames, self._seq, timeout)
            if reply is not None:
                break
            self._close_socket()
            # libzmq never retries a connection its server refused at the handshake, so under
            # CURVE the next socket connects only when needed: a key allowed since then gets in.
            if self.curve is None:
                self._connect()
        else:
            attempts = f" on each of {1 + self.retries} attempts" if self.retries else ""
            raise PeerTimeout(
                f"{problem} to {kind!r} from {self.endpoint} within {timeout:.2f} s{attempts}: is "
                f"{self.peer} running and reachable at {self.endpoint}?"
                f"{refusal_hint(self.curve)}")
        if reply.kind == "error":
            raise RemoteError(str(reply.meta.get("error", reply.meta)), self.endpoint, kind)
        return reply

    @staticmethod
    def _dropped(sent: float) -> str:
        return (f"the connection dropped {time.monotonic() - sent:.2f} s after the request (the "
                "server exited or restarted), so no reply")

    def _exchange(self, frames: list, seq: int, timeout: float):
        deadline = time.monotonic() + timeout
        # A drop before this request (a server restarted between two requests) says nothing of
        # this one, which goes to the connection there is now.
        while self._monitor.get(zmq.EVENTS) & zmq.POLLIN:
            self._monitor.recv_multipart()
        try:
            _send(self._sock, frames)
        except zmq.Again:  # not connected (yet): IMMEDIATE refuses to queue, so wait for it
            if not self._sock.poll(_ms(timeout), zmq.POLLOUT):
                return None, "no connection, so no reply"
            _send(self._sock, frames)
        quick = True
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None, "connected but no reply"
            if quick:  # most replies come within milliseconds: wait on the socket alone first,
                # since polling the monitor too costs ~7 us a round trip (4 % of a step's)
                quick = False
                ready = dict(self._reply_poller.poll(_ms(min(remaining, QUICK_REPLY_S))))
                if not ready:
                    continue
            else:
                ready = dict(self._poller.poll(_ms(remaining)))
                if not ready:
                    return None, "connected but no reply"
            dropped = self._sock not in ready  # only the monitor spoke: the connection dropped
            if dropped:
                self._monitor.recv_multipart()
                # A reply sent just before the server exited (shutdown's "bye") is read before
                # the drop is reported; the short poll is for one still being queued.
                if not self._sock.poll(10):
                    return None, self._dropped(deadline - timeout)
            try:
                reply = decode(self._sock.recv_multipart(zmq.NOBLOCK))  # copied: see class doc
            except ProtocolError as exc:
                raise ProtocolError(f"reply from {self.endpoint}: {exc}", exc.seq) from None
            # seq -1: the server could not read our request at all, but it answered us alone.
            if reply.seq == seq or (reply.kind == "error" and reply.seq == -1):
                return reply, None
            if dropped:  # a leftover reply, and nobody left to send ours
                return None, self._dropped(deadline - timeout)
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


# The largest frame (a header, or one array) a RequestServer accepts by default: room for a
# learner's batches with images; the robot server takes less (RobotServerConfig.max_request_bytes).
DEFAULT_MAX_MESSAGE_BYTES = 256 * 2**20


class RequestServer(_Socket):
    """ROUTER side of request/reply, made for a loop that also does other work:

        while running:
            request = server.poll(0.0)
            if request is not None:
                server.reply(request, "ok", {...})
            ...control work...

    Requests that are not valid envelopes are answered at once with an "error" reply naming the
    problem, logged (rate-limited), and never returned. Replies to gone clients are dropped.

    What one request may cost is bounded: a frame over `max_message_bytes` makes ZeroMQ's I/O
    thread drop it and disconnect the peer (ZMQ_MAXMSGSIZE; its request then times out), at
    most `hwm` requests wait per peer, and a message of over `max_arrays` + 3 frames is refused,
    its rest dropped `drain_frames` frames per poll(), so that none lands in one tick (the robot
    server's requests carry 2 arrays: reading 259 frames before refusing cost a tick ~1.6 ms)."""

    def __init__(self, endpoint: str, source: str, bind: bool = True, context=None,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, hwm: int = 1000,
                 drain_frames: int = 64, curve: CurveKeys | None = None, max_arrays: int = MAX_ARRAYS):
        if max_message_bytes <= 0:
            raise ValueError(f"max_message_bytes must be positive, got {max_message_bytes}")
        if not 0 <= max_arrays <= MAX_ARRAYS:
            raise ValueError(f"max_arrays must be in [0, {MAX_ARRAYS}], got {max_arrays}")
        self.max_arrays = max_arrays
        self.endpoint = endpoint
        self.source = source
        self.session = _new_session()
        self.max_message_bytes = max_message_bytes
        self.drain_frames = drain_frames
        self.rejected = 0  # malformed requests answered with an error
        self._draining = False  # the rest of an over-long multipart message is being dropped
        self._sock = open_socket(context, zmq.ROUTER, endpoint, bind,
                           [(zmq.MAXMSGSIZE, max_message_bytes), (zmq.RCVHWM, hwm)], curve)
        self._poller = zmq.Poller()  # reused: Socket.poll() would build one per call
        self._poller.register(self._sock, zmq.POLLIN)

    def poll(self, timeout: float = 0.0) -> Request | None:
        """The next request, waiting up to `timeout` s; None if none (or it was malformed)."""
        if not self._poller.poll(_ms(timeout)):
            return None
        frames = self._drain() if self._draining else self._recv_frames()
        if frames is None:
            return None
        # A REQ client puts an empty delimiter after its identity; a header is never empty.
        split = 2 if len(frames) > 1 and len(frames[1]) == 0 else 1
        routing = frames[:split]
        try:
            msg = decode(frames[split:])
        except Exception as exc:  # decode raises ProtocolError only; anything else is our bug
            self._reject(routing, exc)
            return None
        return Request(msg, routing)

    def _recv_frames(self) -> list | None:
        """One multipart message, or None (refused and answered) when it has too many frames."""
        sock, limit = self._sock, self.max_arrays + 3  # routing id, REQ delimiter, header, arrays
        frames = [sock.recv(zmq.NOBLOCK)]  # copied: see RequestClient
        while sock.getsockopt(zmq.RCVMORE):
            if len(frames) >= limit:
                self._draining = True
                self._reject(frames[:1], ProtocolError(
                    f"message of more than {limit} frames: a request here carries at most "
                    f"{self.max_arrays} arrays"))
                self._drain()
                return None
            frames.append(sock.recv(zmq.NOBLOCK))
        return frames

    def _drain(self) -> None:
        """Drop up to drain_frames parts of the over-long message being refused."""
        for _ in range(self.drain_frames):
            self._sock.recv(zmq.NOBLOCK, copy=False)
            if not self._sock.getsockopt(zmq.RCVMORE):
                self._draining = False
                return

    def _reject(self, routing: list, exc: Exception) -> None:
        self.rejected += 1
        if not isinstance(exc, ProtocolError):
            _log.error("%s: decode failed unexpectedly", self.endpoint, exc_info=exc)
        # Rate-limited: a flood of garbage must not turn into a flood of log lines.
        if self.rejected <= 10 or self.rejected % 1000 == 0:
            _log.warning("%s: rejected a request (%d so far): %s", self.endpoint, self.rejected, exc)
        seq = getattr(exc, "seq", None)
        self._send_reply(routing, -1 if seq is None else seq, "error",
                         {"error": f"malformed request: {exc}"}, {})

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
        try:
            frames = encode(msg)
        except TypeError as exc:  # a handler put something in its reply the wire cannot carry
            _log.error("%s: cannot encode the %r reply: %s", self.endpoint, kind, exc)
            msg.kind, msg.arrays = "error", {}
            msg.meta = {"error": f"internal error: cannot encode the {kind!r} reply ({exc})"}
            frames = encode(msg)
        _send(self._sock, routing + frames)
