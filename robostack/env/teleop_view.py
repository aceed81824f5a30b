"""The live view a person at the controls looks at: before and while recording or driving.

It shows what the operator needs to act without reading any docs: the phase ("READY: press
SPACE to start", "RECORDING", "SAVED: success"), the episode counters, the arm's state (tcp
position in the base frame, gripper width) and the task's observation fields (e.g. the cube's
position), the device's live command, the device's own key map (from its driver), a hint line
and the last few events. Everything comes from the env's observation and the device, so the
same view serves the mirror and a real arm.

Three forms, one interface (`update(**state)`, `say(line)`, `busy(text)`, `poll_keys()`,
`close()`), picked by `make_view`:
  window    an OpenCV window, where a display exists and OpenCV has a GUI backend (the
            default opencv-python-headless has none: `pip install opencv-python` for it). Keys
            typed into the window reach the keyboard device (`poll_keys` -> device.feed).
  terminal  the same screen drawn in place on a terminal (ANSI: alternate screen, cursor
            home, no scrolling), redrawn after every step; what was said is printed to the
            normal screen when it closes, so nothing is lost from the scrollback.
  plain     one line per phase change or event (logs, pipes, tests).

Cameras: `update(images={"images/wrist": HxWx3 uint8, ...})` shows a small preview of each
frame (half-block characters in the terminal, the frame itself in the window). Envs without
cameras pass none, and the view says so rather than showing a placeholder picture.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

VIEWS = ("auto", "window", "terminal", "plain")
PREVIEW_COLUMNS = 32  # characters per camera preview in the terminal (2 pixel rows per line)


@dataclass
class ViewState:
    """What the view shows; commands set parts of it with `view.update(name=value, ...)`."""

    title: str = ""
    phase: str = ""  # one word, upper case: STARTING, READY, RECORDING, PAUSED, SAVED, ...
    detail: str = ""  # the phase's sentence: "press SPACE to start episode 1"
    counters: str = ""  # "kept 0 / 2 target   attempt 1 of 6"
    progress: str = ""  # "step 37 / 300   3.7 / 30.0 s"
    fields: dict | None = None  # env.fields(): tcp_position, gripper_width, task fields
    task_fields: tuple = ()  # names of the task's fields in `fields` to show
    reading: object | None = None  # the device's last TeleopReading
    device_status: str = ""  # what no single reading shows (the keyboard's speed level)
    controls: list = field(default_factory=list)  # (role, keys, meaning) rows
    hint: str = ""
    images: dict = field(default_factory=dict)  # camera name -> HxWx3 uint8 frame
    log: deque = field(default_factory=lambda: deque(maxlen=5))


# --- what is on the screen (plain text, shared by the terminal and the window) ------------------
def _vector(values) -> str:
    values = np.asarray(values, dtype=float).ravel()
    if values.size == 3:
        return "  ".join(f"{axis} {v:+.3f}" for axis, v in zip("xyz", values))
    return "  ".join(f"{v:+.3f}" for v in values)


def readout_lines(state: ViewState) -> list[str]:
    """The arm's state, the task's fields and the operator's command, one line each."""
    lines = []
    f = state.fields or {}
    if "tcp_position" in f:
        lines.append(f"{'tcp':<15}{_vector(f['tcp_position'])}   m, base frame")
    if "gripper_width" in f:
        command = ""
        if state.reading is not None:
            g = float(state.reading.gripper)
            command = "   command: " + ("close" if g > 0.5 else "open" if g < -0.5 else "keep")
        lines.append(f"{'gripper':<15}width {float(np.ravel(f['gripper_width'])[0]):.3f} m{command}")
    for name in state.task_fields:
        if name in f:
            lines.append(f"{name:<15}{_vector(f[name])}")
    r = state.reading
    if r is not None:
        t = np.asarray(r.translation, dtype=float)
        line = (f"{'operator':<15}xyz {t[0]:+.2f} {t[1]:+.2f} {t[2]:+.2f}   "
                f"deadman {'ON' if r.intervene else 'off'}")
        if np.any(r.rotation):
            rot = np.asarray(r.rotation, dtype=float)
            line += f"   rot {rot[0]:+.2f} {rot[1]:+.2f} {rot[2]:+.2f}"
        lines.append(line + (f"   {state.device_status}" if state.device_status else ""))
    if not state.images:
        lines.append(f"{'cameras':<15}none yet (each camera's frame is previewed here once "
                     "the env has cameras)")
    return lines


def screen_lines(state: ViewState, width: int = 100) -> list[str]:
    """The whole screen as plain text lines (the terminal and the window draw these)."""
    rule = "-" * min(width, 100)
    lines = [state.title, rule, f"{state.phase:<10}{state.detail}"]
    lines.append(f"{state.counters:<44}{state.progress}".rstrip())
    lines.append("")
    lines += readout_lines(state)
    if state.controls:
        lines += [rule, "keys"]
        width_keys = max(len(keys) for _, keys, _ in state.controls) + 2
        lines += [f"  {keys:<{width_keys}}{meaning}" for _, keys, meaning in state.controls]
    lines.append(rule)
    if state.hint:
        lines.append(f"hint: {state.hint}")
    if state.log:
        lines.append("events:")
        lines += [f"  {line}" for line in state.log]
    return lines


def preview_rows(image: np.ndarray, columns: int = PREVIEW_COLUMNS) -> list[str]:
    """A camera frame (HxWx3 uint8 RGB) as terminal text: each character is two pixels, the
    upper one as the foreground colour of a half block, the lower one as the background."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    height, width = image.shape[:2]
    rows = max(1, round(columns * height / width / 2))  # a character is about twice as tall
    ys = (np.arange(2 * rows) * height / (2 * rows)).astype(int)
    xs = (np.arange(columns) * width / columns).astype(int)
    pixels = image[ys][:, xs, :3].astype(int)
    out = []
    for y in range(rows):
        cells = []
        for top, bottom in zip(pixels[2 * y], pixels[2 * y + 1]):
            cells.append(f"\x1b[38;2;{top[0]};{top[1]};{top[2]}m\x1b[48;2;{bottom[0]};{bottom[1]};"
                         f"{bottom[2]}m\u2580")
        out.append("".join(cells) + "\x1b[0m")
    return out


# --- the three views --------------------------------------------------------------------------
class _View:
    """What the three views share: the state, and `busy` (a wait that says how long it takes)."""

    def __init__(self):
        self.state = ViewState()
        self._lock = threading.RLock()

    def update(self, **changes) -> None:
        with self._lock:
            for name, value in changes.items():
                if not hasattr(self.state, name):
                    raise AttributeError(f"the view has no {name!r} (see ViewState)")
                setattr(self.state, name, value)
            self._draw()

    def say(self, line: str) -> None:
        with self._lock:
            self.state.log.append(line)
            self._draw()

    @contextlib.contextmanager
    def busy(self, detail: str, phase: str = "STARTING"):
        """Show `detail` with the seconds it has taken so far, redrawn while the block runs."""
        started = time.monotonic()
        done = threading.Event()

        def tick():
            while not done.wait(0.25):
                self.update(phase=phase, detail=f"{detail} ... {time.monotonic() - started:.0f} s")

        self.update(phase=phase, detail=f"{detail} ...")
        thread = threading.Thread(target=tick, name="view-busy", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()
        self.say(f"{detail}: done in {time.monotonic() - started:.1f} s")

    def poll_keys(self) -> list[str]:
        """Keys typed into the view itself (only a window has its own keyboard focus)."""
        return []

    def _draw(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class PlainView(_View):
    """One line per phase change, event and key map (no redraws): logs, pipes and tests."""

    def __init__(self, say=print):
        super().__init__()
        self._print = say
        self._shown: tuple = ()
        self._controls_shown = False

    def say(self, line: str) -> None:
        with self._lock:
            self.state.log.append(line)
            self._print(line)

    def _draw(self) -> None:
        s = self.state
        if s.controls and not self._controls_shown:
            self._controls_shown = True
            self._print("keys: " + "; ".join(f"{keys} {meaning}" for _, keys, meaning in s.controls))
        shown = (s.phase, s.detail if s.phase != "STARTING" else "")
        # RECORDING changes every step; SAVED and DROPPED repeat what `say` already printed.
        if shown != self._shown and s.phase and s.phase not in ("RECORDING", "SAVED", "DROPPED"):
            self._print(f"{s.phase}: {s.detail}" if s.detail else s.phase)
        self._shown = shown


class TerminalView(_View):
    """The screen drawn in place: the terminal's alternate screen (as top and less use), cursor
    home and overwrite, so nothing scrolls and the user's scrollback is untouched."""

    def __init__(self, stream=None, size=shutil.get_terminal_size, min_interval: float = 0.05):
        super().__init__()
        self.stream = stream or sys.stdout
        self.size = size
        self.min_interval = min_interval  # s between redraws (an unpaced autopilot steps fast)
        self._last_draw = -np.inf
        self._last_phase = None
        self._history: list[str] = []  # every line said, printed after close
        self._open = True
        self.stream.write("\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J")  # alternate screen, hide cursor
        self.stream.flush()

    def say(self, line: str) -> None:
        with self._lock:
            self._history.append(line)
            self.state.log.append(line)
            self._draw(force=True)

    def _draw(self, force: bool = False) -> None:
        if not self._open:
            return
        now = time.monotonic()
        if not force and self.state.phase == self._last_phase and now - self._last_draw < self.min_interval:
            return
        self._last_draw, self._last_phase = now, self.state.phase
        columns, rows = self.size()
        lines = [line[:columns - 1] for line in screen_lines(self.state, columns - 1)]
        if lines and len(lines) > 2:  # the phase line stands out (reverse video)
            lines[2] = "\x1b[7m" + lines[2] + "\x1b[0m"
        preview = []
        for name, image in self.state.images.items():
            preview.append(f"camera {name}")
            preview += preview_rows(image, min(PREVIEW_COLUMNS, columns - 1))
        if preview:  # under the readout, above the key map
            at = 5 + len(readout_lines(self.state))
            lines[at:at] = preview
        lines = lines[:rows - 1]  # never write the last row: writing it scrolls some terminals
        self.stream.write("\x1b[H" + "".join(line + "\x1b[K\r\n" for line in lines) + "\x1b[J")
        self.stream.flush()

    def close(self) -> None:
        with self._lock:
            if not self._open:
                return
            self._open = False
            self.stream.write("\x1b[?25h\x1b[?1049l")  # cursor back, normal screen back
            for line in self._history:
                self.stream.write(line + "\n")
            self.stream.flush()


# OpenCV's key codes for the arrows (GTK/X11, then Qt and Windows) -> the keyboard's key names.
_WINDOW_KEYS = {65361: "left", 65362: "up", 65363: "right", 65364: "down",
                2424832: "left", 2490368: "up", 2555904: "right", 2621440: "down",
                13: "enter", 10: "enter", 32: "space", 27: "esc"}


class WindowView(_View):
    """The screen in an OpenCV window (text panel, camera frames beside it); events are also
    printed to the terminal by a PlainView."""

    def __init__(self, cv2, name: str = "robostack", say=print):
        super().__init__()
        self.cv2, self.name = cv2, name
        self.echo = PlainView(say)
        cv2.namedWindow(name, cv2.WINDOW_AUTOSIZE)

    def say(self, line: str) -> None:
        with self._lock:
            self.echo.say(line)
            self.state.log.append(line)
            self._draw()

    def render(self) -> np.ndarray:
        """The window's picture (BGR): text on the left, camera frames stacked on the right."""
        cv2 = self.cv2
        lines = screen_lines(self.state, 96)
        line_height, text_width = 18, 760
        frames = [cv2.resize(np.ascontiguousarray(image[..., :3][..., ::-1]), (320, 240))
                  for image in self.state.images.values()]
        height = max(line_height * (len(lines) + 1), 250 * len(frames))
        canvas = np.full((height, text_width + (330 if frames else 0), 3), 24, np.uint8)
        for i, line in enumerate(lines):
            colour = (80, 220, 255) if i == 2 else (230, 230, 230)
            cv2.putText(canvas, line, (8, line_height * (i + 1)), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                        colour, 1, cv2.LINE_AA)
        for i, frame in enumerate(frames):
            canvas[250 * i + 5:250 * i + 245, text_width + 5:text_width + 325] = frame
        return canvas

    def _draw(self) -> None:
        self.echo.state = self.state
        self.echo._draw()
        self.cv2.imshow(self.name, self.render())
        self.cv2.waitKey(1)  # let the GUI paint

    def poll_keys(self) -> list[str]:
        keys = []
        while True:
            code = self.cv2.waitKeyEx(1)
            if code < 0:
                return keys
            if code in _WINDOW_KEYS:
                keys.append(_WINDOW_KEYS[code])
            elif 32 < code < 127:
                keys.append(chr(code).lower())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.cv2.destroyWindow(self.name)
            self.cv2.waitKey(1)


def opencv_gui():
    """cv2 when a display exists and OpenCV can open a window there, else None."""
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return None
    try:
        import cv2

        cv2.namedWindow("robostack-probe", cv2.WINDOW_AUTOSIZE)
        cv2.destroyWindow("robostack-probe")
    except Exception:  # headless build ("The function is not implemented"), no X access, ...
        return None
    return cv2


def make_view(kind: str = "auto", title: str = "", say=print, stream=None):
    """A view by name. auto: a window where a display and OpenCV's GUI exist, else the terminal
    view when `stream` (stdout) is a terminal, else plain lines through `say`."""
    if kind not in VIEWS:
        raise ValueError(f"--view must be one of {', '.join(VIEWS)}, got {kind!r}")
    stream = stream or sys.stdout
    view = None
    if kind in ("auto", "window"):
        cv2 = opencv_gui()
        if cv2 is not None:
            view = WindowView(cv2, name=title or "robostack", say=say)
        elif kind == "window":
            say("no window possible (no DISPLAY, or OpenCV without a GUI backend: pip install "
                "opencv-python); showing the view in the terminal")
    if view is None and kind in ("auto", "window", "terminal") and stream.isatty():
        view = TerminalView(stream)
    if view is None:
        view = PlainView(say)
    view.update(title=title)
    return view
