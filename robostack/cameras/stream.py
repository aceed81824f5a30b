"""The consumer side of the camera server (server.py), and the image helpers both sides share.

    stream = CameraStream("ipc:///run/user/1000/robostack/cameras", ["front", "wrist"], max_age=0.1)
    frame = stream.latest("front")      # hardware.cameras.base.Frame, the newest one only
    stream.close()

latest(name) drains the socket without waiting, keeps each camera's newest valid frame, and
returns it if it is fresh. It raises
  - StaleFrame (with .frame and .age) when the newest frame is older than max_age: the message
    gives the age and the limit;
  - CameraError when the server reported the camera dead, or when nothing arrived from it for
    more than two frame periods (the contract's rule, judged here on our clock, so a server that
    died silently is caught too);
  - CameraTimeout when no frame of that camera ever arrived within `first_timeout`.

Every message is hostile until validated (wrong kind, meta fields of the wrong type, an image
of the wrong shape/dtype/size, a JPEG that does not decode, an unknown camera, a seq that goes
backwards): it is dropped, its reason counted in `rejected` and logged (rate-limited), never a
crash and never handed to the caller.

Why not transport.Subscriber.latest: it drains to the newest message of the whole socket, and
one socket carries several cameras and their status messages; here the newest is per camera.
"""

from __future__ import annotations

import collections
import logging
import math
import time

import numpy as np
import zmq

from hardware.cameras.base import CameraError, CameraTimeout, Frame, StaleFrame
from robostack.transport.endpoints import is_same_host
from robostack.transport.envelope import ProtocolError, decode
from robostack.transport.sockets import open_socket

__all__ = ["CameraStream", "crop_resize", "encode_jpeg", "decode_jpeg", "parse_crop", "parse_size",
           "ENCODINGS"]

_log = logging.getLogger(__name__)

ENCODINGS = ("raw", "jpeg")
DEAD_AFTER_PERIODS = 2.0  # the camera contract's rule
FUTURE_TOLERANCE = 0.005  # s: a capture stamp this far after its arrival is refused (same host)
MAX_SIDE = 8192  # no camera of ours is bigger; a bigger claimed size is an attack on our memory


def _cv2():
    try:
        import cv2
    except ImportError:
        raise CameraError("JPEG and resizing need cv2: pip install opencv-python-headless") from None
    return cv2


# --- image helpers ------------------------------------------------------------------------------

def parse_size(text: str) -> tuple[int, int]:
    """'WxH' -> (width, height)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"size {text!r} is not WIDTHxHEIGHT, e.g. 128x128") from None
    if not (0 < w <= MAX_SIDE and 0 < h <= MAX_SIDE):
        raise ValueError(f"size {text!r}: width and height must be in 1..{MAX_SIDE}")
    return w, h


def parse_crop(text: str) -> tuple[int, int, int, int]:
    """'X,Y,W,H' (pixels, top-left corner and size) -> (x, y, w, h)."""
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"crop {text!r} is not X,Y,WIDTH,HEIGHT in pixels, e.g. 80,0,480,480") from None
    if x < 0 or y < 0 or w <= 0 or h <= 0:
        raise ValueError(f"crop {text!r}: x, y must be >= 0 and width, height > 0")
    return x, y, w, h


def crop_resize(image: np.ndarray, crop: tuple[int, int, int, int] | None,
                resize: tuple[int, int] | None) -> np.ndarray:
    """Crop (x, y, w, h) then resize to (w, h); INTER_AREA, the right filter for shrinking."""
    if crop is not None:
        x, y, w, h = crop
        if y + h > image.shape[0] or x + w > image.shape[1]:
            raise ValueError(f"crop {crop} does not fit in a {image.shape[1]}x{image.shape[0]} "
                             f"image: make it smaller or move it")
        image = image[y:y + h, x:x + w]
    if resize is not None and (image.shape[1], image.shape[0]) != tuple(resize):
        image = _cv2().resize(image, tuple(resize), interpolation=_cv2().INTER_AREA)
    return np.ascontiguousarray(image)


def encode_jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """RGB (H, W, 3) uint8 -> JPEG bytes as a 1-D uint8 array. cv2 writes BGR, so the channels
    are swapped first; decode_jpeg swaps them back: RGB survives the round trip."""
    cv2 = _cv2()
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise CameraError(f"cv2.imencode could not encode a {image.shape} image as JPEG")
    return data.reshape(-1)


def decode_jpeg(data: np.ndarray) -> np.ndarray | None:
    """JPEG bytes -> RGB (H, W, 3) uint8, or None when they are not a colour JPEG."""
    cv2 = _cv2()
    try:
        bgr = cv2.imdecode(np.asarray(data, np.uint8).reshape(-1), cv2.IMREAD_COLOR)
    except cv2.error:
        return None
    if bgr is None or bgr.ndim != 3 or bgr.shape[2] != 3:
        return None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


# --- the consumer -------------------------------------------------------------------------------

class _Camera:
    """What the consumer knows of one camera."""

    def __init__(self, name: str, size: tuple[int, int] | None):
        self.name = name
        self.size = size  # expected (width, height) after the server's crop/resize, or None
        self.frame: Frame | None = None
        self.arrival: float | None = None  # our monotonic time the newest frame arrived
        self.fps: float | None = None  # the camera's nominal rate, from its frames
        self.session: str | None = None
        self.meta: dict = {}  # validated meta of the newest frame (drop counts, encoding, ...)
        self.dead: str | None = None  # the server's reason, from camera_status
        self.dead_since_seq = 0
        self.latency = collections.deque(maxlen=1000)  # capture -> arrival, s (same host only)
        self.received = 0


def _meta_number(meta: dict, key: str, kind=float, low=-math.inf, high=math.inf):
    value = meta.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        raise ValueError(f"meta {key!r} is {type(value).__name__}, expected {kind.__name__}")
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"meta {key!r} is {value!r}, outside [{low}, {high}]")
    return kind(value)


class CameraStream:
    """Newest frames of named cameras from one camera server.

    cameras: the names to accept, or {name: (width, height)} to also check each image's size
    (as delivered, after the server's crop/resize). Frames of other cameras are rejected.
    max_age: the default staleness limit of latest(), s. first_timeout: how long latest() waits
    for a camera's first frame. Use from one thread (it owns a ZeroMQ socket)."""

    def __init__(self, endpoint: str, cameras, max_age: float = 0.1, first_timeout: float = 5.0,
                 context=None, curve=None, hwm: int = 100):
        if not cameras:
            raise ValueError("CameraStream needs the names of the cameras to read, e.g. ['front']")
        if not max_age > 0:
            raise ValueError(f"max_age must be > 0 s, got {max_age}")
        sizes = cameras if isinstance(cameras, dict) else {name: None for name in cameras}
        self.cameras = {name: _Camera(name, tuple(size) if size else None)
                        for name, size in sizes.items()}
        self.endpoint = endpoint
        self.max_age = max_age
        self.first_timeout = first_timeout
        self.rejected: collections.Counter = collections.Counter()  # reason -> count
        self.superseded = 0  # valid frames drained unread because a newer one came
        self._same_host = is_same_host(endpoint)
        self._offset: dict[str, float] = {}  # per server session: min(arrival - capture)
        # hwm bounds memory at hwm x frame size (100 x 921 kB = 92 MB for raw 640x480) and must
        # exceed what arrives between two reads, or the backlog waits in kernel buffers.
        self.curve = curve
        self._open_args = (context, zmq.SUB, endpoint, False, [(zmq.RCVHWM, hwm)], curve)
        self._connect()

    def _connect(self) -> None:
        self._sock = open_socket(*self._open_args)
        self._sock.setsockopt(zmq.SUBSCRIBE, b"")
        self._poller = zmq.Poller()
        self._poller.register(self._sock, zmq.POLLIN)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- reading ------------------------------------------------------------------------------
    def latest(self, name: str, max_age: float | None = None,
               first_timeout: float | None = None) -> Frame:
        """The newest frame of camera `name`; StaleFrame, CameraError, CameraTimeout: see module doc.
        first_timeout (None: self.first_timeout) bounds this call's wait for a first frame, so a
        caller reading several cameras can give them one shared deadline."""
        cam = self.cameras.get(name)
        if cam is None:
            raise ValueError(f"camera {name!r} is not one this stream reads ({sorted(self.cameras)})")
        max_age = self.max_age if max_age is None else max_age
        first_timeout = self.first_timeout if first_timeout is None else max(0.0, first_timeout)
        self.poll()
        if cam.frame is None and cam.dead is None:
            deadline = time.monotonic() + first_timeout
            while cam.frame is None and cam.dead is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    if self.curve is not None:
                        # libzmq never retries a connection refused at the CURVE handshake: a
                        # fresh socket at the next call gets in once our key is allowed.
                        self._sock.close()
                        self._connect()
                    raise CameraTimeout(
                        f"camera {name!r}: no frame from {self.endpoint} within "
                        f"{first_timeout:.1f} s (rejected so far: {dict(self.rejected) or 'none'}): "
                        f"is `robostack camera-server` running there with a camera named {name!r}?")
                self.poll(remaining)
        now = time.monotonic()
        if cam.dead is not None:
            raise CameraError(f"camera {name!r}: the camera server reports it dead: {cam.dead}")
        frame = cam.frame
        period = 1.0 / cam.fps
        silent = now - cam.arrival
        if silent > DEAD_AFTER_PERIODS * period:
            raise CameraError(
                f"camera {name!r}: no frame arrived from {self.endpoint} for {silent:.3f} s, more "
                f"than two frame periods ({DEAD_AFTER_PERIODS * period:.3f} s at {cam.fps:g} fps): "
                f"the camera or its server stopped; check `robostack camera-server`'s log")
        age = self._age(cam, frame, now)
        if age > max_age:
            raise StaleFrame(
                f"camera {name!r}: the newest frame (seq {frame.seq}) is {age * 1e3:.1f} ms old, "
                f"over the max_age limit of {max_age * 1e3:.1f} ms: the server or network lags, "
                f"or the limit is below the camera's period ({period * 1e3:.1f} ms)", frame, age)
        return frame

    def _age(self, cam: _Camera, frame: Frame, now: float) -> float:
        if self._same_host:
            return now - frame.capture_time
        # Clocks of two hosts have unrelated origins: age beyond the fastest delivery seen from
        # this server session (catches queueing, not a constant network latency).
        return now - frame.capture_time - self._offset.get(cam.session, 0.0)

    def poll(self, timeout: float = 0.0) -> int:
        """Drain what is queued (waiting up to `timeout` s for the first message); returns how
        many messages were read."""
        if not self._poller.poll(max(0, math.ceil(timeout * 1000))):
            return 0
        newest: dict[str, tuple] = {}  # camera -> (msg, arrival) of its newest frame this drain
        count = 0
        while True:
            try:
                frames = self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            count += 1
            arrival = time.monotonic()
            try:
                msg = decode(frames)
                self._route(msg, arrival, newest)
            except Exception as exc:  # ProtocolError/ValueError: the peer's fault; others: ours
                self._reject(exc)
        for name, (msg, arrival) in newest.items():
            try:
                self._accept(self.cameras[name], msg, arrival)
            except Exception as exc:
                self._reject(exc)
        return count

    def _route(self, msg, arrival: float, newest: dict) -> None:
        if msg.kind not in ("frame", "camera_status"):
            raise ValueError(f"unexpected kind {msg.kind[:40]!r}: a camera server sends 'frame' and 'camera_status'")
        name = msg.meta.get("camera")
        if not isinstance(name, str) or name not in self.cameras:
            raise ValueError(f"unknown camera: {str(name)[:40]!r} is not one of {sorted(self.cameras)}")
        cam = self.cameras[name]
        if msg.kind == "camera_status":
            alive = msg.meta.get("alive")
            if not isinstance(alive, bool):
                raise ValueError("bad camera_status: 'alive' is not a bool")
            if alive:
                # Alive clears a death only once a frame newer than the death arrives (_accept),
                # so a status sent before the death and delivered after it cannot revive it.
                return
            reason = msg.meta.get("reason")
            cam.dead = str(reason)[:500] if reason else "no reason given"
            cam.dead_since_seq = cam.frame.seq if cam.frame is not None else 0
            newest.pop(name, None)  # frames queued before the death are not to be used
            return
        _meta_number(msg.meta, "seq", int, 1, 2**62)  # cheap checks now, the image in _accept
        held = newest.get(name)
        if held is not None:
            self.superseded += 1
        newest[name] = (msg, arrival)

    def _accept(self, cam: _Camera, msg, arrival: float) -> None:
        """Validate the newest frame message of `cam` fully and make it the camera's frame."""
        meta = msg.meta
        seq = _meta_number(meta, "seq", int, 1, 2**62)
        capture = _meta_number(meta, "capture_time")
        fps = _meta_number(meta, "fps", float, 1e-3, 1e4)
        width = _meta_number(meta, "width", int, 1, MAX_SIDE)
        height = _meta_number(meta, "height", int, 1, MAX_SIDE)
        dropped = _meta_number(meta, "dropped", int, 0, 2**62)
        server_dropped = _meta_number(meta, "server_dropped", int, 0, 2**62)
        if self._same_host and capture > arrival + FUTURE_TOLERANCE:
            # On one clock a frame cannot come from the future; one that claims so would never
            # turn stale.
            raise ValueError(f"capture_time in the future: {capture - arrival:.3f} s after its "
                             f"arrival on the same host's clock")
        encoding = meta.get("encoding")
        if encoding not in ENCODINGS:
            raise ValueError(f"bad encoding: {str(encoding)[:20]!r} is not one of {ENCODINGS}")
        if cam.size is not None and (width, height) != cam.size:
            raise ValueError(f"wrong size: {width}x{height}, this stream expects "
                             f"{cam.size[0]}x{cam.size[1]} for {cam.name!r}")
        if list(msg.arrays) != ["image"]:
            raise ValueError(f"bad arrays: expected one array 'image', got {list(msg.arrays)[:5]}")
        data = msg.arrays["image"]
        if data.dtype != np.uint8:
            raise ValueError(f"wrong dtype: image is {data.dtype}, expected uint8")
        if encoding == "raw":
            if data.shape != (height, width, 3):
                raise ValueError(f"wrong shape: raw image is {data.shape}, meta says {(height, width, 3)}")
            image = data.copy()  # our own writable array, off the socket's buffer
        else:
            if data.ndim != 1 or data.size == 0:
                raise ValueError(f"bad jpeg: expected 1-D bytes, got shape {data.shape}")
            image = decode_jpeg(data)
            if image is None:
                raise ValueError(f"bad jpeg: {data.size} bytes that cv2 cannot decode as a colour JPEG")
            if image.shape != (height, width, 3):
                raise ValueError(f"wrong shape: jpeg decodes to {image.shape}, meta says {(height, width, 3)}")
        if cam.session == msg.session and cam.frame is not None and seq <= cam.frame.seq:
            raise ValueError(f"seq not increasing: {seq} after {cam.frame.seq} (a replay or reordering)")
        if cam.dead is not None and cam.session == msg.session and seq <= cam.dead_since_seq:
            return  # an old frame: the camera stays dead
        cam.dead = None  # a new frame: the camera is back
        cam.session = msg.session
        cam.fps = fps
        cam.meta = {"dropped": dropped, "server_dropped": server_dropped, "encoding": encoding,
                    "width": width, "height": height, "crop": meta.get("crop"),
                    "resize": meta.get("resize")}
        cam.frame = Frame(image=image, seq=seq, capture_time=capture, camera=cam.name)
        cam.arrival = arrival
        cam.received += 1
        self._offset[msg.session] = min(self._offset.get(msg.session, math.inf), arrival - capture)
        if self._same_host:
            cam.latency.append(arrival - capture)

    def _reject(self, exc: Exception) -> None:
        if isinstance(exc, (ProtocolError, ValueError)):
            reason = str(exc).split(":")[0][:80]  # the kind of problem, without its values
        else:  # a message we failed to handle is still dropped, but it is a bug of ours
            reason = f"internal error {type(exc).__name__}"
            _log.error("%s: handling a message failed", self.endpoint, exc_info=exc)
        self.rejected[reason] += 1
        total = sum(self.rejected.values())
        if total <= 10 or total % 1000 == 0:  # a flood of garbage is not a flood of log lines
            _log.warning("%s: dropped a message (%d so far): %s", self.endpoint, total, exc)

    # --- figures ------------------------------------------------------------------------------
    def stats(self) -> dict:
        """Per camera: frames received, capture->arrival latency (median, p95, s; same host
        only), the server's drop counters; and the rejected reasons."""
        out = {"rejected": dict(self.rejected), "superseded": self.superseded, "cameras": {}}
        for name, cam in self.cameras.items():
            lat = np.array(cam.latency) if cam.latency else None
            out["cameras"][name] = {
                "received": cam.received, "dead": cam.dead,
                "latency_median_s": float(np.median(lat)) if lat is not None else None,
                "latency_p95_s": float(np.percentile(lat, 95)) if lat is not None else None,
                "dropped": cam.meta.get("dropped"), "server_dropped": cam.meta.get("server_dropped"),
            }
        return out
