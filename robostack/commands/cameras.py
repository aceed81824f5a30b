"""`robostack cameras`: which cameras there are, and what they see.

    robostack cameras --list [--task pick_cube] [--endpoint ipc:///...]
    robostack cameras --preview front.png [--task pick_cube] [--cameras front,wrist]
    robostack cameras --preview live.mp4 --seconds 2 --endpoint ipc:///... | --devices "w=/dev/video0"

--list: the simulated cameras each task's scene declares (size, rate = the task's policy_hz,
pose, the body it rides on), the /dev/video* devices (each probed by cv2 in a thread given
--timeout s: a stuck driver cannot hang the command), RealSense cameras when pyrealsense2
imports, and with --endpoint the camera server's cameras whose frames arrive within --timeout s.
--preview OUT.png: one frame of each selected camera side by side under a label (name, WxH);
OUT.mp4: --seconds of them at the source's rate. From a camera server (--endpoint), cameras
opened here (--devices, camera-server's --cameras format, or `realsense[:SERIAL]`), else a task's
simulated cameras (default pick_cube) after its reset_scene(--seed), the physics running with
the arm unpowered (gravity-compensated: it stays). --window: live too, where a display is, not CI.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robostack.config import add_dataclass_arguments, dataclass_from_args, usage_errors

LABEL_HEIGHT = 18  # px: the strip above each tile holding its label
GAP = 4  # px of black between two tiles


@dataclass
class CamerasConfig:
    preview: str = ""  # write the selected cameras' tiles to this .png (one frame) or .mp4 (--seconds)
    task: str = ""  # simulated cameras of this task ("" = every task for --list, pick_cube for --preview)
    cameras: str = ""  # comma-separated names of the cameras to preview or list ("" = all of the source's)
    endpoint: str = ""  # a running camera server to read (ipc:///path or tcp://HOST:PORT)
    devices: str = ""  # cameras to open here, ';'-separated NAME=SOURCE[,WxH][,FPS] as camera-server
        # --cameras takes (SOURCE: synthetic, a device index, /dev/videoN, a file, realsense[:SERIAL])
    seconds: float = 2.0  # length of an .mp4 preview, s
    seed: int = 0  # seed of the task's reset_scene for a simulated preview
    timeout: float = 1.5  # s to wait for a device to open or an endpoint's frames (and to measure its rate)

    def __post_init__(self):
        if not self.seconds > 0:
            raise ValueError(f"--seconds {self.seconds}: must be > 0")
        if not self.timeout > 0:
            raise ValueError(f"--timeout {self.timeout}: must be > 0 s")
        if sum(bool(s) for s in (self.endpoint, self.devices, self.task)) > 1:
            raise ValueError("name one source: --task, --endpoint or --devices")
        if self.preview and Path(self.preview).suffix.lower() not in (".png", ".mp4"):
            raise ValueError(f"--preview {self.preview!r}: the file must end in .png (one frame) "
                             f"or .mp4 (--seconds of video)")

    def selected(self) -> list[str]:
        return [name.strip() for name in self.cameras.split(",") if name.strip()]


class SourceError(RuntimeError):
    """A source that cannot deliver (a silent endpoint, a device that will not open)."""


class UsageError(ValueError):
    """A name or path on the command line that is wrong (exit 2, the valid choices named)."""


def select(available: list[str], wanted: list[str], where: str) -> list[str]:
    """`wanted` (all when empty), checked against `available`: a ValueError names the valid ones."""
    unknown = [name for name in wanted if name not in available]
    if unknown:
        raise UsageError(f"no camera {', '.join(map(repr, unknown))} in {where}; its cameras: "
                         f"{', '.join(available) or 'none'}")
    return wanted or list(available)


# --------------------------------------------------------------------------- simulated cameras
def task_names(config: CamerasConfig) -> list[str]:
    from tasks import TASKS

    if config.task and config.task not in TASKS:
        raise UsageError(f"unknown task {config.task!r}: choose one of {', '.join(sorted(TASKS))}")
    return [config.task] if config.task else sorted(TASKS)


def simulated_lines(names: list[str], wanted: list[str]) -> list[str]:
    from tasks import make_task

    lines, every = [], []
    for name in names:
        task = make_task(name)
        cameras = {c.name: c for c in task.build_scene().cameras}
        every += [camera for camera in cameras if camera not in every]
        for camera in cameras.values():
            if wanted and camera.name not in wanted:
                continue
            frame = f"on body {camera.attached_to}" if camera.attached_to else "fixed, base frame"
            position = ", ".join(f"{v:.3f}" for v in camera.position)
            lines.append(f"  {name}/{camera.name}: {camera.height}x{camera.width} (HxW) @ "
                         f"{task.config.policy_hz:g} Hz (policy_hz), {frame}: at ({position}) m, "
                         f"fovy {camera.fovy:g} deg")
    select(every, wanted, f"task {names[0]!r}" if len(names) == 1 else "any task")
    return lines


class SimulatedSource:
    """A task's scene in the mirror, its cameras rendered headless; `step()` runs its physics
    for one period of the task's policy rate with the arm unpowered (gravity-compensated)."""

    def __init__(self, task_name: str, wanted: list[str], seed: int):
        import mujoco

        from sim.mujoco_backend import MujocoBackend
        from sim.mujoco_cameras import MujocoCameras
        from sim.mujoco_scene import compile_scene
        from tasks import make_task

        task = make_task(task_name)
        scene = task.build_scene()
        self.names = select([c.name for c in scene.cameras], wanted, f"task {task_name!r}")
        self.backend = MujocoBackend(compile_scene(scene))
        self.backend.reset(np.array(task.config.home_q, float), self.backend.gripper_max_width)
        task.reset_scene(self.backend.world, np.random.default_rng(seed))
        mujoco.mj_forward(self.backend.model, self.backend.data)
        self.rate = float(task.config.policy_hz)
        self._mujoco = mujoco
        self._steps = max(1, round(1.0 / self.rate / self.backend.control_period))
        self.cameras = MujocoCameras.of_world(self.backend.world, self.names)

    def read(self) -> dict[str, np.ndarray]:
        return self.cameras.render_all()

    def step(self) -> None:
        for _ in range(self._steps):
            self._mujoco.mj_step(self.backend.model, self.backend.data)

    def close(self) -> None:
        self.cameras.close()


# --------------------------------------------------------------------------- devices
def probe_video_device(path: str, timeout: float) -> str:
    """One line on /dev/videoN: the driver's name, the size of a frame read and the rate the
    driver reports; cv2 runs in a daemon thread so that a stuck driver costs `timeout`, no more."""
    from hardware.cameras.opencv_camera import usb_serial

    node = os.path.basename(path)
    name_file = Path(f"/sys/class/video4linux/{node}/name")
    label = name_file.read_text().strip() if name_file.is_file() else "?"
    found: dict = {}

    def probe():
        import cv2

        cap = cv2.VideoCapture(path, cv2.CAP_V4L2)
        ok, image = cap.read() if cap.isOpened() else (False, None)
        found.update(opened=cap.isOpened(), size=image.shape[:2] if ok and image is not None else None,
                     fps=cap.get(cv2.CAP_PROP_FPS))
        cap.release()

    thread = threading.Thread(target=probe, name=f"probe-{node}", daemon=True)
    thread.start()
    thread.join(timeout)
    serial = usb_serial(path)
    head = f"  {path} ({label}{', serial ' + serial if serial else ''})"
    if thread.is_alive():
        return f"{head}: no answer within {timeout:g} s (a stuck driver?)"
    if not found.get("opened"):
        return f"{head}: cannot be opened (busy, no permission: the `video` group, or not a capture node)"
    if found.get("size") is None:
        return f"{head}: opened, no frame (a metadata node?)"
    (height, width), fps = found["size"], found.get("fps") or 0.0
    return f"{head}: {height}x{width} (HxW) @ {fps:g} fps (driver's default mode)"


def realsense_lines() -> list[str]:
    from hardware.cameras.realsense_camera import INSTALL, LIBUSB

    try:
        import pyrealsense2 as rs
    except (ImportError, OSError) as exc:
        return [f"  not available: {exc}; RealSense needs the extra {INSTALL} and libusb-1.0 ({LIBUSB})"]
    lines = []
    for device in rs.context().query_devices():
        name, serial = device.get_info(rs.camera_info.name), device.get_info(rs.camera_info.serial_number)
        modes = {(v.height(), v.width(), v.fps()) for sensor in device.query_sensors()
                 for p in sensor.get_stream_profiles() if p.stream_type() == rs.stream.color
                 for v in [p.as_video_stream_profile()]}
        shown = ", ".join(f"{h}x{w}@{f}" for h, w, f in sorted(modes, reverse=True)[:6])
        lines.append(f"  {name} serial {serial}: color modes (HxW@fps) {shown or 'none'}")
    return lines or ["  no RealSense camera connected"]


class DeviceSource:
    """The --devices cameras that are selected, opened here; read() waits for each one's next
    frame (they run on their own clocks), step() has nothing to do."""

    def __init__(self, text: str, wanted: list[str]):
        from robostack.cameras.server import open_camera, parse_cameras

        try:
            specs = parse_cameras(text)
        except ValueError as exc:
            raise UsageError(f"--devices: {exc}") from None
        self.names = select(list(specs), wanted, "--devices")
        self.cameras = {}
        try:
            for name in self.names:
                source, width, height, fps = specs[name]
                if source == "realsense" or source.startswith("realsense:"):
                    from hardware.cameras.realsense_camera import RealSenseCamera

                    camera = RealSenseCamera(name, source.partition(":")[2] or None, width or 640,
                                             height or 480, fps or 30.0)
                else:
                    camera = open_camera(name, source, width, height, fps)
                self.cameras[name] = camera
                camera.start()
        except BaseException:  # a CameraError is exit 1 in main(); those opened are closed first
            self.close()
            raise
        self.rate = min(30.0, max(c.fps for c in self.cameras.values()))

    def read(self) -> dict[str, np.ndarray]:
        return {name: camera.wait_next(timeout=2.0 / camera.fps + 1.0).image
                for name, camera in self.cameras.items()}

    def step(self) -> None:
        pass

    def close(self) -> None:
        for camera in self.cameras.values():
            camera.stop()


# --------------------------------------------------------------------------- camera server
def listen(endpoint: str, seconds: float) -> dict[str, dict]:
    """{camera: {width, height, fps (nominal), measured (Hz), encoding, frames}} of the frames a
    camera server publishes on `endpoint` within `seconds`; any message that is not a valid
    frame is skipped (CameraStream validates what is previewed)."""
    import zmq

    from robostack.transport.envelope import ProtocolError, decode
    from robostack.transport.sockets import open_socket

    sock = open_socket(None, zmq.SUB, endpoint, False, [(zmq.RCVHWM, 1000)])
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    seen: dict[str, dict] = {}
    deadline = time.monotonic() + seconds
    try:
        while (remaining := deadline - time.monotonic()) > 0:
            if not sock.poll(max(1, int(remaining * 1000))):
                continue
            try:
                msg = decode(sock.recv_multipart(zmq.NOBLOCK, copy=False))
                if msg.kind != "frame" or not isinstance((meta := msg.meta).get("camera"), str):
                    continue
                name, capture, seq = meta["camera"][:64], float(meta["capture_time"]), int(meta["seq"])
                entry = seen.setdefault(name, {"frames": 0, "first": (capture, seq)})
                entry.update(width=int(meta["width"]), height=int(meta["height"]), fps=float(meta["fps"]),
                             encoding=str(meta.get("encoding")), last=(capture, seq), frames=entry["frames"] + 1)
            except (zmq.Again, ProtocolError, KeyError, TypeError, ValueError):
                continue
    finally:
        sock.close()
    for entry in seen.values():
        # The camera's own rate, from its frame numbers: frames the server or the socket dropped
        # (PUB drops for a slow reader) count, since they were captured.
        span, frames = entry["last"][0] - entry["first"][0], entry["last"][1] - entry["first"][1]
        entry["measured"] = frames / span if span > 0 else 0.0
    return seen


def silent(endpoint: str, seconds: float) -> SourceError:
    return SourceError(f"no camera frame arrived from {endpoint} within {seconds:g} s: is "
                       f"`robostack camera-server --endpoint {endpoint}` running (and its cameras "
                       f"alive)? A longer --timeout helps a slow start")


class EndpointSource:
    def __init__(self, endpoint: str, wanted: list[str], timeout: float):
        from robostack.cameras.stream import CameraStream

        seen = listen(endpoint, timeout)
        if not seen:
            raise silent(endpoint, timeout)
        self.names = select(sorted(seen), wanted, f"the camera server at {endpoint}")
        self.rate = min(30.0, max(seen[n]["fps"] for n in self.names))
        self.stream = CameraStream(endpoint, {n: (seen[n]["width"], seen[n]["height"]) for n in self.names},
                                   max_age=1.0, first_timeout=timeout)
        self._due = time.monotonic()

    def read(self) -> dict[str, np.ndarray]:
        return {name: self.stream.latest(name).image for name in self.names}  # CameraError: exit 1

    def step(self) -> None:
        self._due += 1.0 / self.rate  # the newest frame of each camera, at the video's rate
        time.sleep(max(0.0, self._due - time.monotonic()))

    def close(self) -> None:
        self.stream.close()


# --------------------------------------------------------------------------- the tiles
def tile(images: dict[str, np.ndarray]) -> np.ndarray:
    """The images left to right, top-aligned on black, each under a label strip (its name and
    width x height): an RGB (LABEL_HEIGHT + max H, sum W + GAP * (n - 1), 3) uint8 image."""
    import cv2

    height = LABEL_HEIGHT + max(image.shape[0] for image in images.values())
    width = sum(image.shape[1] for image in images.values()) + GAP * (len(images) - 1)
    canvas = np.zeros((height, width, 3), np.uint8)
    x = 0
    for name, image in images.items():
        h, w = image.shape[:2]
        canvas[LABEL_HEIGHT:LABEL_HEIGHT + h, x:x + w] = image
        label = f"{name} {w}x{h}"
        # A small tile gets a smaller font, so its label stays on it.
        scale = min(0.4, 0.4 * w / max(1, cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)[0][0] + 4))
        cv2.putText(canvas, label, (x + 2, LABEL_HEIGHT - 5), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (255, 255, 255), 1, cv2.LINE_AA)
        x += w + GAP
    return canvas


def check_writable(path: Path) -> None:
    if not path.parent.is_dir():
        raise UsageError(f"--preview {path}: the folder {path.parent} does not exist (create it first)")
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"--preview {path}: cannot write there (no permission): pick another path")


def open_source(config: CamerasConfig):
    wanted = config.selected()
    if config.endpoint:
        return EndpointSource(config.endpoint, wanted, config.timeout)
    if config.devices:
        return DeviceSource(config.devices, wanted)
    task_names(config)  # an unknown task is a usage error naming the tasks
    return SimulatedSource(config.task or "pick_cube", wanted, config.seed)


def preview(config: CamerasConfig, window: bool = False, say=print) -> dict:
    """Write config.preview; returns {"path", "cameras", "frames", "size" (H, W), "rate"}."""
    import cv2

    path = Path(config.preview)
    check_writable(path)
    show = show_window(window, say)
    source = open_source(config)
    try:
        video = path.suffix.lower() == ".mp4"
        count = max(1, round(config.seconds * source.rate)) if video else 1
        say(f"preview: {', '.join(source.names)} at {source.rate:g} Hz, {count} frame(s) -> {path}")
        frames = []
        for i in range(count):
            if i:
                source.step()
            frames.append(tile(source.read()))
            if show is not None:
                show.imshow("robostack cameras", frames[-1][..., ::-1])
                show.waitKey(1)
        if video:
            from robostack.commands.view import write_video

            write_video(path, (frame[..., ::-1].copy() for frame in frames), source.rate)
        elif not cv2.imwrite(str(path), frames[0][..., ::-1].copy()):  # RGB tiles, BGR file
            raise SourceError(f"OpenCV could not write {path}")
    finally:
        source.close()
        if show is not None:
            show.destroyAllWindows()
    say(f"wrote {path}: {frames[0].shape[0]}x{frames[0].shape[1]} (HxW), {len(frames)} frame(s)")
    return {"path": str(path), "cameras": source.names, "frames": len(frames),
            "size": frames[0].shape[:2], "rate": source.rate}


def show_window(window: bool, say) -> object | None:
    """cv2 for a live window when asked and possible; otherwise None, and why (said once)."""
    if not window or os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        if window:
            say("--window: no live window in CI (CI is set); writing the file only")
        return None
    from robostack.env.teleop_view import opencv_gui

    cv2 = opencv_gui()
    if cv2 is None:
        say("--window: no display here (DISPLAY unset, or OpenCV without a GUI backend: pip "
            "install opencv-python); writing the file only")
    return cv2


# --------------------------------------------------------------------------- listing
def list_cameras(config: CamerasConfig, say=print) -> dict[str, list[str]]:
    """Say each section's lines; returns {section: lines}."""
    wanted = config.selected()
    sections: dict[str, list[str]] = {}
    if not (config.endpoint or config.devices):
        sections["simulated (task/camera)"] = simulated_lines(task_names(config), wanted)
        paths = sorted(glob.glob("/dev/video*"), key=lambda p: (len(p), p))
        sections["OpenCV/UVC"] = [probe_video_device(p, config.timeout) for p in paths] or [
            "  no /dev/video* devices"]
        sections["RealSense"] = realsense_lines()
    if config.devices:
        source = DeviceSource(config.devices, wanted)
        source.close()  # opened once: the size and rate each device gave
        sections["opened here (--devices)"] = [
            f"  {n}: {c.height}x{c.width} (HxW) @ {c.fps:g} fps" for n, c in source.cameras.items()]
    if config.endpoint:
        seen = listen(config.endpoint, config.timeout)
        if not seen:
            raise silent(config.endpoint, config.timeout)
        names = select(sorted(seen), wanted, f"the camera server at {config.endpoint}")
        sections[f"camera server {config.endpoint}"] = [
            f"  {n}: {seen[n]['height']}x{seen[n]['width']} (HxW) @ {seen[n]['fps']:g} fps nominal, "
            f"{seen[n]['measured']:.1f} fps measured, {seen[n]['frames']} frames received in "
            f"{config.timeout:g} s ({seen[n]['encoding']})" for n in names]
    for title, lines in sections.items():
        say(f"{title}:")
        for line in lines:
            say(line)
    return sections


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="robostack cameras", description=__doc__.splitlines()[0]
                                     + " --list, or --preview OUT.png / OUT.mp4 (docs/cameras.md).")
    parser.add_argument("--list", action="store_true",
                        help="list the cameras connected or simulated, with size and rate")
    parser.add_argument("--window", action="store_true",
                        help="with --preview, also show the tiles live (only where a display exists, never in CI)")
    add_dataclass_arguments(parser, CamerasConfig)
    args = parser.parse_args(argv)
    from hardware.cameras.base import CameraError
    from robostack.transport.envelope import TransportError

    with usage_errors(parser):
        config = dataclass_from_args(CamerasConfig, args)
        if not (args.list or config.preview):
            raise ValueError("say what to do: --list, or --preview OUT.png / OUT.mp4")
    try:
        if args.list:
            list_cameras(config)
        if config.preview:
            preview(config, window=args.window)
    except UsageError as exc:
        parser.error(str(exc))
    except (SourceError, CameraError, TransportError) as exc:  # a source that cannot deliver
        print(f"robostack cameras: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
