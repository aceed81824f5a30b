"""`robostack camera-server`: cameras published over ZeroMQ, read with stream.CameraStream.

    robostack camera-server --cameras "front=synthetic,640x480,30;wrist=/dev/video0,640x480,30" \
        --resize "wrist=128x128"

One PUB socket carries every camera. Per frame, kind "frame":
    meta {camera, seq, capture_time, publish_time, fps, dropped (the camera's own count),
          server_dropped (frames the camera captured that this server never published because
          it was still busy with the one before), encoding, width, height, crop, resize}
    one array "image": raw (H, W, 3) uint8 RGB, or the JPEG bytes as 1-D uint8.
The envelope's stamp is the capture time. Every `status_period` s, and at once when a camera
dies, kind "camera_status": meta {camera, alive, reason, fps (nominal), fps_measured}, so a
consumer learns of a dead camera even when no frame flows.

Encoding: raw on ipc (a copy is cheaper than a JPEG encode), JPEG on tcp (a 640x480 raw frame is
921 kB: 30 fps of it is 221 Mbit/s); `--encoding` overrides. Each camera has its own thread
(wait for its next frame, crop/resize, encode, publish); they share the socket under a lock.
PUB never blocks: a consumer that does not read loses frames, the server does not slow down.

A non-loopback tcp bind needs CURVE keys (--curve-key), like every robostack server.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass

from hardware.cameras.base import CameraError, CameraTimeout
from robostack.cameras.stream import (ENCODINGS, crop_resize, encode_jpeg, parse_crop,
                                      parse_size)
from robostack.transport.auth import CurveKeys
from robostack.transport.endpoints import ipc_endpoint
from robostack.transport.envelope import TransportError
from robostack.transport.sockets import Publisher

_log = logging.getLogger(__name__)


@dataclass
class CameraServerConfig:
    cameras: str = "front=synthetic,640x480,30"  # cameras to open, ';'-separated NAME=SOURCE,WxH,FPS:
        # SOURCE is `synthetic` (a test pattern), a device index or /dev/videoN, or a video file
        # or image pattern (OpenCV)
    endpoint: str = ""  # where to publish: ipc:///path or tcp://127.0.0.1:PORT; "" = ipc_endpoint('cameras')
    encoding: str = "auto"  # raw | jpeg | auto (raw on ipc, jpeg on tcp)
    jpeg_quality: int = 90  # JPEG quality 1..100 (90: mean abs error ~1-2 levels on camera images)
    crop: str = ""  # per camera, ';'-separated NAME=X,Y,W,H in pixels, applied before resize
    resize: str = ""  # per camera, ';'-separated NAME=WxH, applied after crop (INTER_AREA)
    task: str = ""  # a task (pick_cube, reach) whose policy reads these cameras: each camera named
        # like one of the task's (front, wrist) is resized to the size the task observes, after a
        # centred crop to its aspect ratio when --cameras gives the source's WxH; --crop and
        # --resize still win. "": no task
    status_period: float = 0.25  # s between camera_status messages per camera
    synthetic_stop_after: float = 0.0  # s after which synthetic cameras go silent (tests); 0 = never
    hwm: int = 2  # frames queued per slow subscriber before PUB drops
    curve_key: str = ""  # this server's CURVE key pair, required for a non-loopback bind

    def __post_init__(self):
        self.specs = parse_cameras(self.cameras)
        self.crops = {k: parse_crop(v) for k, v in _per_camera(self.crop, "crop", self.specs).items()}
        self.resizes = {k: parse_size(v) for k, v in _per_camera(self.resize, "resize", self.specs).items()}
        if self.task:
            self._fit_to_task()
        if self.encoding not in (*ENCODINGS, "auto"):
            raise ValueError(f"--encoding {self.encoding!r}: use raw, jpeg or auto")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"--jpeg-quality {self.jpeg_quality}: use 1..100")
        if not self.status_period > 0:
            raise ValueError(f"--status-period {self.status_period}: must be > 0 s")

    def _fit_to_task(self) -> None:
        """Crop and resize each camera the task observes to what its policy was trained on."""
        from tasks import TASKS, make_task

        if self.task not in TASKS:
            raise ValueError(f"--task {self.task!r}: tasks are {', '.join(TASKS)}")
        declared = {c.name: (c.width, c.height) for c in make_task(self.task).build_scene().cameras}
        shared = [name for name in self.specs if name in declared]
        if not shared:
            raise ValueError(f"--task {self.task}: no camera here is named like one of its cameras "
                             f"({', '.join(declared)}); name them so in --cameras")
        for name in shared:
            width, height = declared[name]
            _, source_w, source_h, _ = self.specs[name]
            if name not in self.crops and source_w and source_h and source_w * height != source_h * width:
                side_w = min(source_w, source_h * width // height)
                side_h = min(source_h, source_w * height // width)
                self.crops[name] = ((source_w - side_w) // 2, (source_h - side_h) // 2, side_w, side_h)
            self.resizes.setdefault(name, (width, height))

    def resolved_endpoint(self) -> str:
        return self.endpoint or ipc_endpoint("cameras")

    def resolved_encoding(self) -> str:
        if self.encoding != "auto":
            return self.encoding
        return "jpeg" if self.resolved_endpoint().startswith("tcp://") else "raw"


def parse_cameras(text: str) -> dict[str, tuple[str, int | None, int | None, float | None]]:
    """'NAME=SOURCE[,WxH][,FPS];...' -> {name: (source, width, height, fps)}."""
    specs = {}
    for entry in filter(None, (e.strip() for e in text.split(";"))):
        name, eq, rest = entry.partition("=")
        parts = [p.strip() for p in rest.split(",")]
        if not eq or not name.strip() or not parts[0]:
            raise ValueError(f"--cameras entry {entry!r} is not NAME=SOURCE[,WxH][,FPS], e.g. "
                             f"front=synthetic,640x480,30 or wrist=/dev/video0,640x480,30")
        width = height = fps = None
        for part in parts[1:]:
            if "x" in part.lower():
                width, height = parse_size(part)
            else:
                try:
                    fps = float(part)
                except ValueError:
                    raise ValueError(f"--cameras entry {entry!r}: {part!r} is neither WxH nor an fps") from None
        if name.strip() in specs:
            raise ValueError(f"--cameras names {name.strip()!r} twice")
        specs[name.strip()] = (parts[0], width, height, fps)
    if not specs:
        raise ValueError("--cameras is empty: name at least one, e.g. front=synthetic,640x480,30")
    return specs


def _per_camera(text: str, option: str, specs: dict) -> dict[str, str]:
    out = {}
    for entry in filter(None, (e.strip() for e in text.split(";"))):
        name, eq, value = entry.partition("=")
        if not eq or name.strip() not in specs:
            raise ValueError(f"--{option} entry {entry!r}: expected NAME=VALUE with NAME one of "
                             f"the cameras ({', '.join(specs)})")
        out[name.strip()] = value.strip()
    return out


def open_camera(name: str, source: str, width, height, fps, stop_after: float = 0.0):
    """A Camera for a --cameras entry: the synthetic pattern, or an OpenCV source."""
    if source == "synthetic":
        from robostack.cameras.synthetic import SyntheticCamera
        return SyntheticCamera(name, width or 640, height or 480, fps or 30.0, stop_after=stop_after)
    from hardware.cameras.opencv_camera import OpenCVCamera  # lazily: it needs cv2
    return OpenCVCamera(name, int(source) if source.isdigit() else source, width, height, fps)


class CameraServer:
    """Opens the configured cameras and publishes them until stop()."""

    def __init__(self, config: CameraServerConfig, cameras: dict | None = None):
        self.config = config
        self.endpoint = config.resolved_endpoint()
        self.encoding = config.resolved_encoding()
        self.cameras = cameras or {name: open_camera(name, *spec, stop_after=config.synthetic_stop_after)
                                   for name, spec in config.specs.items()}
        self.publisher = Publisher(self.endpoint, "camera-server", hwm=config.hwm,
                                   curve=CurveKeys.from_options(config.curve_key or None))
        self._lock = threading.Lock()  # the PUB socket is shared by the camera threads
        self._running = threading.Event()
        self._threads: list[threading.Thread] = []
        self.published = {name: 0 for name in self.cameras}

    def start(self) -> None:
        for name, camera in self.cameras.items():
            camera.start()
            crop = self.config.crops.get(name)
            if crop and (crop[0] + crop[2] > camera.width or crop[1] + crop[3] > camera.height):
                self.stop()
                raise CameraError(f"--crop {name}={','.join(map(str, crop))} does not fit camera "
                                  f"{name!r}'s {camera.width}x{camera.height} image: make it "
                                  f"smaller or move it")
        self._running.set()
        for name, camera in self.cameras.items():
            thread = threading.Thread(target=self._serve, args=(name, camera),
                                      name=f"publish-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._running.clear()
        for thread in self._threads:
            thread.join(timeout=2.0)
        for camera in self.cameras.values():
            camera.stop()
        self.publisher.close()

    def _publish(self, kind: str, meta: dict, arrays=None, stamp=None) -> None:
        with self._lock:
            self.publisher.publish(kind, meta, arrays, stamp=stamp)

    def _serve(self, name: str, camera) -> None:
        crop, resize = self.config.crops.get(name), self.config.resizes.get(name)
        period = 1.0 / camera.fps
        last_seq = 0
        server_dropped = 0
        window_start, window_frames = time.monotonic(), 0
        next_status = 0.0
        dead_reason = None
        while self._running.is_set():
            try:
                # Bounded by the health rule: wait_next raises CameraError two periods after the
                # newest frame, so a death is reported here on time.
                frame = camera.wait_next(timeout=self.config.status_period)
            except CameraTimeout:
                frame = None
            except CameraError as exc:
                frame = None
                if dead_reason is None:
                    _log.warning("camera %r is dead: %s", name, exc)
                    next_status = 0.0  # tell consumers now, not at the next period
                dead_reason = str(exc)
                time.sleep(min(period, self.config.status_period))  # it may come back
            if frame is not None:
                # A gap in the camera's numbers: frames captured while this thread was busy.
                if last_seq and frame.seq > last_seq + 1:
                    server_dropped += frame.seq - last_seq - 1
                last_seq = frame.seq
                try:
                    self._send_frame(name, camera, frame, crop, resize, server_dropped)
                    window_frames += 1
                    dead_reason = None
                except Exception as exc:  # e.g. a frame of another size: say so, keep serving
                    if dead_reason is None:
                        _log.error("camera %r: cannot publish its frame", name, exc_info=exc)
                        next_status = 0.0
                    dead_reason = f"the server cannot publish its frames: {exc}"
            now = time.monotonic()
            if now >= next_status:
                fps_measured = window_frames / max(now - window_start, 1e-9)
                self._publish("camera_status", {
                    "camera": name, "alive": dead_reason is None, "reason": dead_reason,
                    "fps": float(camera.fps), "fps_measured": round(fps_measured, 2)})
                window_start, window_frames = now, 0
                next_status = now + self.config.status_period

    def _send_frame(self, name, camera, frame, crop, resize, server_dropped) -> None:
        image = crop_resize(frame.image, crop, resize)
        data = encode_jpeg(image, self.config.jpeg_quality) if self.encoding == "jpeg" else image
        meta = {
            "camera": name, "seq": frame.seq, "capture_time": frame.capture_time,
            "publish_time": time.monotonic(), "fps": float(camera.fps),
            "dropped": int(camera.dropped), "server_dropped": server_dropped,
            "encoding": self.encoding, "width": image.shape[1], "height": image.shape[0],
            "crop": list(crop) if crop else None, "resize": list(resize) if resize else None,
        }
        self._publish("frame", meta, {"image": data}, stamp=frame.capture_time)
        self.published[name] += 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="robostack camera-server",
        description="Publish cameras over ZeroMQ (raw on ipc, JPEG on tcp), with sequence "
                    "numbers, capture times, drop counters and camera_status messages; read them "
                    "with robostack.cameras.stream.CameraStream. docs/camera_server.md.")
    from robostack.config import add_dataclass_arguments, dataclass_from_args, usage_errors

    add_dataclass_arguments(parser, CameraServerConfig)
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default: INFO)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(message)s")
    with usage_errors(parser):
        config = dataclass_from_args(CameraServerConfig, args)
    try:
        server = CameraServer(config)
        server.start()
    except (CameraError, TransportError) as exc:  # a camera that will not open, an endpoint refused
        print(f"robostack camera-server: {exc}", file=sys.stderr)
        return 1
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stopping.set())
    signal.signal(signal.SIGINT, lambda *a: stopping.set())
    described = ", ".join(f"{n} ({c.width}x{c.height} @ {c.fps:g} fps)" for n, c in server.cameras.items())
    # Tests and scripts wait for this line: the socket is bound and every camera delivers.
    print(f"camera-server: publishing {described} as {server.encoding} on {server.endpoint}", flush=True)
    while not stopping.wait(0.5):
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
