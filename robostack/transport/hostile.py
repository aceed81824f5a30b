"""Hostile requests, for fuzzing a server of ours over its real socket (tests/robot/test_fuzz.py,
tests/training/test_learner_fuzz.py, benchmarks/bench_fuzz.py).

`hostile_message(rng, kinds, session)` draws one multipart message (a list of bytes frames, as
a DEALER sends it) from a mix of what a broken or malicious peer sends: random bytes, headers
that are not maps, of another schema version or with fields of the wrong type; array
descriptors NumPy rejects in every way it can (ValueError, TypeError, SyntaxError), shapes whose
product overflows, buffers of the wrong length; non-finite, 2**64-sized and wrongly typed values
in the header and in every meta field a server reads; meta that is a list; nesting bombs; many
small objects in one frame; messages of hundreds of frames. Every draw is one the server must
answer with an "error" reply (or, for a well-formed request with odd values, a normal one) and
survive. Oversized frames are not drawn here: ZeroMQ disconnects their sender, so callers send
them on a socket of their own (`oversized_message`).

Seeded: the same rng state gives the same messages.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import msgpack
import numpy as np
import zmq

from robostack.transport.envelope import SCHEMA_VERSION

# Values that break naive int()/float() handling or the reply's encoding.
NASTY_VALUES = [
    math.nan, math.inf, -math.inf, 2**64 - 1, -2**63, 2**63, 1e308, -1e308, 5e-324, -1, 0,
    True, False, None, "", "x" * 300, "1", b"\x00\xff", [], {}, [1, 2, 3], {"a": 1}, 0.5, -0.0,
    [math.nan] * 3, [2**64 - 1] * 7, {"": None}, [[[]]],
]

# dtype strings NumPy rejects with ValueError, TypeError or SyntaxError, or accepts as a kind
# the wire refuses (object, str, void, structured, datetime), or parses slowly.
NASTY_DTYPES = [
    "|V-1", "(2,)i4", "O", "<U0", "<U10", "S5", "i" + "9" * 30, "V" + "9" * 20, "M8[zz]", "m8[s]",
    "(1000000000,1000000000)f8", "f8,f8", "[('a','<f8')]", "<f8)", "(", "", " ", "\x00", "<f" * 50,
    "float64" * 100, 5, None, 3.5, ["<f8"], {"f": 1}, True, b"<f8", "<V8", "|O", "<c32", "<f2",
]
GOOD_DTYPES = ["<f8", "<f4", "|u1", "<i8", "|b1", "<c16"]

NASTY_SHAPES = [
    [-1], [2**63], [2**64 - 1], [0, 2**62, 2**62], [2**31, 2**31, 2**31], [1.5], "abc", [[1]],
    [True, True], [None], list(range(1, 40)), [1] * 65, 3, None, {"0": 1}, [3, -3], [0] * 33,
]


def _header(kind: str, meta, arrays, session: str = "fuzz", seq=1, t=0.0, override=None) -> dict:
    header = {"v": SCHEMA_VERSION, "kind": kind, "src": "fuzz", "ses": session, "seq": seq,
              "t": t, "meta": meta, "arrays": arrays}
    header.update(override or {})
    return header


def _pack(value) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def _nested(depth: int, leaf=None):
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def _pick(rng, items):
    return items[int(rng.integers(len(items)))]


def hostile_meta(rng, fields: list[str]) -> dict:
    """A meta map giving one to three of `fields` (plus maybe an unknown one) nasty values."""
    meta = {}
    for _ in range(int(rng.integers(1, 4))):
        meta[_pick(rng, fields + ["no_such_field"])] = _pick(rng, NASTY_VALUES)
    return meta


def hostile_message(rng, kinds: dict[str, list[str]], session: str = "fuzz",
                    arrays: dict[str, tuple] | None = None, base_meta: dict | None = None) -> list[bytes]:
    """One hostile message. `kinds`: request kind -> the meta fields its handler reads;
    `arrays`: name -> (shape, dtype) of arrays the server reads (hostile values go in them);
    `base_meta`: valid meta the nasty fields are mixed into (e.g. a greeted actor's id)."""
    kind = _pick(rng, list(kinds))
    seq = int(rng.integers(1, 2**31))
    choice = int(rng.integers(14))
    if choice == 0:  # random bytes, one or more frames
        n = int(rng.integers(1, 4))
        return [rng.bytes(int(rng.integers(0, 2000))) for _ in range(n)]
    if choice == 1:  # msgpack that is not a map, or a map of another schema
        return [_pack(_pick(rng, [[1, 2], "hello", 7, None, {"v": 999, "kind": kind},
                                  {"kind": kind}, {"v": "1"}, {1: 2}, {"v": SCHEMA_VERSION}]))]
    if choice == 2:  # header fields of the wrong type or out of range
        field = _pick(rng, ["kind", "src", "ses", "seq", "t", "meta", "arrays"])
        header = _header(kind, {}, [], session, seq, override={field: _pick(rng, NASTY_VALUES)})
        return [_pack(header)]
    if choice == 3:  # the seq and stamp a server echoes or reads as numbers
        header = _header(kind, {}, [], session, seq=_pick(rng, [2**64 - 1, -2**63, 0, -1]),
                         t=_pick(rng, [math.nan, math.inf, -math.inf, 1e308, -1e308]))
        return [_pack(header)]
    if choice == 4:  # meta of the wrong type
        return [_pack(_header(kind, _pick(rng, [[1, 2], "meta", 3, None, [{}]]), [], session, seq))]
    if choice == 5:  # array descriptors numpy rejects, or kinds the wire refuses
        dtype = _pick(rng, NASTY_DTYPES)
        spec = [["a", dtype, [2]]]
        return [_pack(_header(kind, {}, spec, session, seq)), b"\x00" * 16]
    if choice == 6:  # shapes whose product overflows or is no shape
        spec = [["a", _pick(rng, GOOD_DTYPES), _pick(rng, NASTY_SHAPES)]]
        return [_pack(_header(kind, {}, spec, session, seq)), b"\x00" * int(rng.integers(0, 64))]
    if choice == 7:  # entries that are not [name, dtype, shape]; counts that do not match
        spec = _pick(rng, [[["a"]], [[1, "<f8", [1]]], ["abc"], [None], [["a", "<f8", [1], 4]],
                           [["a", "<f8", [1]], ["a", "<f8", [1]]]])
        return [_pack(_header(kind, {}, spec, session, seq)), b"\x00" * 8, b"\x00" * 8]
    if choice == 8:  # buffer length that does not match the descriptor
        spec = [["a", "<f8", [3]]]
        return [_pack(_header(kind, {}, spec, session, seq)), rng.bytes(int(rng.integers(0, 40)))]
    if choice == 9:  # nesting bombs and many small objects in one header
        if rng.random() < 0.3:  # deeper than msgpack's packer goes: spliced in as bytes
            marker = "@" * 16
            head = _pack(_header(kind, {"x": marker}, [], session, seq))
            deep = b"\x91" * int(rng.integers(600, 5000)) + b"\xc0"
            return [head.replace(_pack(marker), deep)]
        bomb = _pick(rng, [_nested(int(rng.integers(100, 400))), [[]] * 2000, [{}] * 2000,
                           {str(i): i for i in range(1000)}, [0.5] * 1500])
        return [_pack(_header(kind, {"x": bomb}, [], session, seq))]
    if choice == 10:  # many frames: more than a message may carry
        n = int(rng.integers(260, 1200))
        return [_pack(_header(kind, {}, [], session, seq))] + [b""] * n
    # 11-13: the fields the handler reads, with nasty values, and its arrays with nasty contents
    meta = {**(base_meta or {}), **(hostile_meta(rng, kinds[kind]) if kinds[kind] else {})}
    specs, buffers = [], []
    for name, (shape, dtype) in (arrays or {}).items():
        if rng.random() < 0.5:
            continue
        values = _pick(rng, [np.full(shape, np.nan), np.full(shape, np.inf), np.full(shape, 1e300),
                             rng.normal(size=shape) * 1e6, np.zeros(()), np.zeros((2, 2, 2)),
                             np.zeros(shape, complex), np.ones(shape, bool), np.zeros((0,)),
                             np.full(shape, 2**62, np.int64)])
        with np.errstate(all="ignore"):  # 1e300 as float32 is inf: meant
            values = np.ascontiguousarray(values.astype(dtype) if values.dtype.kind == "f" and
                                          rng.random() < 0.3 else values)
        specs.append([name, values.dtype.str, list(values.shape)])
        buffers.append(values.tobytes())
    return [_pack(_header(kind, meta, specs, session, seq)), *buffers]


def oversized_message(size: int, session: str = "fuzz") -> list[bytes]:
    """A well-formed request whose one array frame is `size` bytes."""
    header = _header("state", {}, [["a", "|u1", [size]]], session)
    return [_pack(header), bytes(size)]


@dataclass
class FuzzResult:
    sent: int = 0
    replies: int = 0
    errors: int = 0  # "error" replies naming a problem
    unnamed: list = field(default_factory=list)  # "error" replies without a text (should be none)
    kinds: dict = field(default_factory=dict)  # reply kind -> count
    seconds: float = 0.0


def send_all(endpoint: str, messages, window: int = 32, timeout: float = 10.0,
             context=None) -> FuzzResult:
    """Send `messages` (lists of frames) from one DEALER, at most `window` awaiting a reply,
    and collect one reply per message. Stops waiting `timeout` s after the last reply came:
    a server that stops answering shows up as replies < sent."""
    sock = (context or zmq.Context.instance()).socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    result, start = FuzzResult(), time.monotonic()
    pending = iter(messages)
    exhausted, last_reply = False, time.monotonic()
    try:
        while True:
            while not exhausted and result.sent - result.replies < window:
                frames = next(pending, None)
                if frames is None:
                    exhausted = True
                    break
                sock.send_multipart(frames)
                result.sent += 1
            if exhausted and result.replies >= result.sent:
                break
            if not sock.poll(100):
                if time.monotonic() - last_reply > timeout:
                    break
                continue
            reply = sock.recv_multipart()
            last_reply = time.monotonic()
            result.replies += 1
            try:
                header = msgpack.unpackb(reply[0])
                kind = header["kind"]
            except Exception:
                kind = "<undecodable reply>"
            result.kinds[kind] = result.kinds.get(kind, 0) + 1
            if kind == "error":
                text = header["meta"].get("error")
                if isinstance(text, str) and len(text) > 10:
                    result.errors += 1
                else:
                    result.unnamed.append(header["meta"])
    finally:
        sock.close()
    result.seconds = time.monotonic() - start
    return result


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (VmRSS in /proc/<pid>/status)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")
