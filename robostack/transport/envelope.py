"""The robostack wire format: one envelope for every message on every socket (sockets.py).

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
- "meta" is plain data (str/int/float/bool/None/list/dict); numbers
  in bulk go in arrays. Handlers read numbers out of it with `meta_int` / `meta_float`, which
  refuse wrong types, non-finite values and integers outside the range a reply can carry.
- Only bool/int/uint/float/complex arrays go on the wire. Nothing is ever pickled: a peer can
  send us garbage, never code.

Every message from a socket is hostile until decode() has validated it: whatever the bytes,
decode() returns a Message or raises ProtocolError naming the problem (never another type), and
its cost is bounded by the size of the frames, which the receiving socket bounds (sockets.py,
`max_message_bytes`).

Bump SCHEMA_VERSION whenever the header changes shape; decode() refuses other versions with a
message that says which side to upgrade.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import msgpack
import numpy as np

__all__ = ["SCHEMA_VERSION", "Message", "encode", "decode", "TransportError", "ProtocolError",
           "PeerTimeout", "StaleMessage", "RemoteError", "meta_int", "meta_float", "MAX_ARRAYS"]


SCHEMA_VERSION = 1

# Integers a reply can carry: msgpack encodes int64 and uint64. A value read from a peer and sent
# back (a seq, a counter) must stay inside, with room to count on, so meta_int's default range
# is [-2**62, 2**62].
INT_RANGE = 2**62

# At most this many arrays in one message (a transitions batch has ~10); more is an attack on
# the receiver's time, refused before any is looked at.
MAX_ARRAYS = 256

# The longest dtype string a peer may send: '<f8', '|b1', '<c16'. np.dtype() parses anything
# (sub-arrays, structured types, a million-element shape), so the string is checked first.
_MAX_DTYPE_CHARS = 8
_MAX_DIMS = 32  # numpy allows 64; no array of ours has more than 4


# Buffers at least this big are handed to ZeroMQ without a copy; smaller ones are copied,
# because a zero-copy frame costs more bookkeeping (a Python object, a free callback from the
# I/O thread) than memcpy of a few KiB. pyzmq applies it inside send(copy=False) as the
# socket's copy_threshold.
ZERO_COPY_BYTES = 64 * 1024


# dtype.kind letters allowed on the wire: bool, signed int, unsigned int, float, complex.
_WIRE_KINDS = "biufc"


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
    try:  # np.dtype raises TypeError, ValueError, SyntaxError... on garbage: all mean "refuse"
        ok = isinstance(dtype_str, str) and len(dtype_str) <= _MAX_DTYPE_CHARS
        dtype = np.dtype(dtype_str) if ok else None
    except Exception:
        dtype = None
    if dtype is None or dtype.kind not in _WIRE_KINDS:
        raise ProtocolError(
            f"array {name!r} has dtype {dtype_str!r}, which robostack does not accept: only "
            f"bool, int, uint, float and complex arrays go on the wire (never object, string, "
            f"structured or datetime); the sender must convert it")
    _DTYPES[dtype_str] = dtype
    return dtype


def _refuse_ext(code, data):
    raise ValueError(f"msgpack ext type {code} ({len(data)} bytes): robostack sends none")


_HEADER_TYPES = (("kind", str), ("src", str), ("ses", str), ("seq", int), ("t", (float, int)),
                 ("meta", dict), ("arrays", list))


def decode(frames) -> Message:
    """Frames (bytes, memoryview or zmq.Frame) -> Message, or ProtocolError saying what is wrong.

    Arrays are views on the frames: no copy, read-only when the frames are bytes."""
    if len(frames) == 0:
        raise ProtocolError("empty message: a robostack envelope has at least a header frame")
    head = frames[0]
    try:
        # ext types are refused (nothing of ours sends them), a msgpack timestamp reads as a
        # float; msgpack bounds nesting (StackError) and declared lengths by the frame's size.
        header = msgpack.unpackb(head, strict_map_key=False, ext_hook=_refuse_ext, timestamp=1)
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
    if not math.isfinite(header["t"]):
        raise ProtocolError(f"header field 't' is {header['t']!r}: a send time must be a finite "
                            f"time.monotonic() stamp", seq)

    specs = header["arrays"]
    if len(specs) > MAX_ARRAYS:
        raise ProtocolError(f"{_short(header['kind'])} lists {len(specs)} arrays, more than the "
                            f"{MAX_ARRAYS} a message may carry", seq)
    if len(specs) != len(frames) - 1:
        raise ProtocolError(
            f"{header['kind']!r} header lists {len(specs)} arrays but {len(frames) - 1} buffer "
            f"frames followed: the message was truncated or corrupted", seq)
    arrays = {}
    for spec, buf in zip(specs, frames[1:]):
        if not (isinstance(spec, list) and len(spec) == 3 and isinstance(spec[0], str)
                and isinstance(spec[2], list) and len(spec[2]) <= _MAX_DIMS
                and all(type(d) is int and 0 <= d < INT_RANGE for d in spec[2])):
            raise ProtocolError(_bad_spec(header, spec), seq)
        name, dtype_str, shape = spec
        count = math.prod(shape)
        dtype = _wire_dtype(name, dtype_str)
        # len() is the byte size for bytes, zmq.Frame and encode()'s flat memoryviews.
        if len(buf) != count * dtype.itemsize:
            raise ProtocolError(
                f"array {name!r} of {header['kind']!r}: buffer has {len(buf)} bytes but "
                f"{dtype_str} x {list(shape)} needs {count * dtype.itemsize}: the message was "
                f"truncated or corrupted", seq)
        try:  # a view on the frame, like np.frombuffer(buf, dtype).reshape(shape) but cheaper
            arrays[name] = np.ndarray(shape, dtype, buf)
        except Exception:  # e.g. [0, 2**61, 2**61]: no bytes, but numpy refuses the shape
            raise ProtocolError(_bad_spec(header, spec), seq) from None
    if len(arrays) != len(specs):
        raise ProtocolError(f"{header['kind']!r} header lists an array name twice", seq)
    return Message(header["kind"], header["meta"], arrays, header["src"], header["ses"],
                   header["seq"], float(header["t"]))


def _bad_spec(header: dict, spec) -> str:
    return (f"{_short(header['kind'])} header has array entry {_short(spec)}, expected [name, "
            f"dtype, shape] with a str name and at most {_MAX_DIMS} non-negative int dims whose "
            f"product numpy can hold")


def _short(value, limit: int = 80) -> str:
    """repr() of a peer's value for an error message, cut: a hostile peer chooses its size."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


# --- reading numbers out of meta --------------------------------------------------------------

_REQUIRED = object()


def meta_int(meta: dict, key: str, default=_REQUIRED, low: int = -INT_RANGE,
             high: int = INT_RANGE) -> int:
    """meta[key] as an int in [low, high], or ProtocolError naming the field and the fix. A
    float is refused even when whole: a seq or a count that went through a float has lost
    exactness somewhere. Absent: `default` (ProtocolError when none is given)."""
    value = meta.get(key, default)
    if value is _REQUIRED:
        raise ProtocolError(f"meta lacks {key!r}: send an int in [{low}, {high}]")
    if value is default:
        return value
    if type(value) is not int or not low <= value <= high:
        raise ProtocolError(f"meta {key!r} is {_short(value)} ({type(value).__name__}): send an "
                            f"int in [{low}, {high}]")
    return value


def meta_float(meta: dict, key: str, default=_REQUIRED, low: float = -math.inf,
               high: float = math.inf, finite: bool = True) -> float:
    """meta[key] as a float in [low, high] (finite unless finite=False, then NaN passes too:
    e.g. "no success, so no time to success"), or ProtocolError naming the field."""
    value = meta.get(key, default)
    if value is _REQUIRED:
        raise ProtocolError(f"meta lacks {key!r}: send a finite number in [{low}, {high}]")
    if value is default:
        return value
    if type(value) not in (int, float) or (finite and not math.isfinite(value)) \
            or not (low <= value <= high or (not finite and math.isnan(value))):
        raise ProtocolError(f"meta {key!r} is {_short(value)} ({type(value).__name__}): send a "
                            f"{'finite ' if finite else ''}number in [{low}, {high}]")
    return float(value)


def _topic(kind: str) -> bytes:
    """The first bytes of every header of this kind: fixmap marker, "v", version, "kind", kind.
    ZeroMQ SUB filters match a prefix of frame 0, so subscribing to this selects one kind
    exactly (msgpack length-prefixes strings, so "state" does not match "states")."""
    n_fields = 8
    return (bytes([0x80 | n_fields]) + msgpack.packb("v") + msgpack.packb(SCHEMA_VERSION)
            + msgpack.packb("kind") + msgpack.packb(kind))
