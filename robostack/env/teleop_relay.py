"""A person at the controls of a training run: what their live view shows (`OperatorScreen`),
and, over processes, the relay that carries their device from the launcher to the actor.

Why a relay: `robostack train` runs the actor as a child process without a terminal (stdin
closed, its own session, so that Ctrl-C reaches the launcher only and it stops the processes in
order). The person's keyboard, gamepad or SpaceMouse is therefore opened by the launcher, which
holds the terminal and shows the live view, and its readings travel to the acting actor:

    launcher: TeleopRelay  --- readings (PUB, latest value, 50 Hz) --->  actor: RelayedDevice
              (device, view) <--- view state (PUB: episode, env fields) ---  (InterventionWrapper)

Safety: a reading older than `max_age` (the launcher hung, was stopped or died; a dropped
connection) counts as no reading: the deadman is released and the policy acts, exactly as if
the person let go. A reading of an earlier episode counts the same, so a deadman latched in the
last episode never carries over a reset. Edge events (success, failure, rerecord, stop) travel
as running counts, so a conflated latest-value stream can neither lose nor repeat a press.

Episodes: the actor's `reset(episode)` (robostack.env.teleop.start_episode, called by the
InterventionWrapper at every reset) says the new episode number on the view stream; the relay
then calls start_episode on the real device (the keyboard forgets its latched gripper and
deadman toggle) and tags its readings with that number.
"""

from __future__ import annotations

import os
import queue
import threading
import time
import uuid

import numpy as np

from hardware.teleop.base import TeleopReading
from robostack import transport

EDGES = ("success", "failure", "rerecord", "stop")
MAX_AGE = 0.5  # s: an older reading is no reading (deadman released)
RELAY_HZ = 50.0  # device reads and published readings per second (the actor steps at 10 Hz)


# --- what the person sees -------------------------------------------------------------------------
class OperatorScreen:
    """The live view of a training run with a person at the controls (both training modes):
    the device's key map, the phase (the policy acts / you drive), the episode, the arm's and
    the task's fields and the device's command. Lines said (progress, process output) go to the
    view's event list, so nothing scrolls the screen away."""

    # Re-recording means nothing in training; the other roles do (labels end the episode).
    SKIPPED_ROLES = ("rerecord",)

    def __init__(self, view, device, task_config, task_fields=(), title: str = ""):
        from robostack.env.teleop import device_controls, start_hint

        self.view, self.device = view, device
        self.start = start_hint(device)
        # A terminal has no key release: the keyboard's deadman is a toggle, the others are held.
        self.hand_back = f"{self.start} again" if getattr(device, "name", "") == "keyboard" \
            else "let go of the deadman"
        controls = [row for row in device_controls(device, task_config.control_rotation,
                                                   task_config.control_gripper)
                    if row[0] not in self.SKIPPED_ROLES]
        self.episode = 0
        self.intervening: bool | None = None
        self.closed = False
        view.update(title=title, controls=controls, task_fields=tuple(task_fields),
                    phase="STARTING", detail="starting the robot server, the learner and the actor",
                    hint=f"{self.start} to take over from the policy, {self.hand_back} to hand "
                         f"back; the success/failure keys end an episode; quit or Ctrl-C stops "
                         f"training (checkpoint, resumable)")

    def say(self, line: str) -> None:
        if self.closed:  # the view gave the terminal back: plain lines from now on
            print(line, flush=True)
        else:
            self.view.say(line)

    def new_episode(self, episode: int) -> None:
        self.episode = episode
        self.intervening = None
        self.view.update(counters=f"training episode {episode + 1}")

    def step(self, fields: dict | None, reading: TeleopReading | None, progress: str = "") -> None:
        """After each env step (or each relay tick): the newest fields and device reading."""
        changes = {"fields": fields, "reading": reading}
        if hasattr(self.device, "status"):
            changes["device_status"] = self.device.status()
        if progress:
            changes["progress"] = progress
        intervening = bool(reading is not None and reading.intervene)
        if intervening != self.intervening:
            self.intervening = intervening
            if intervening:
                changes.update(phase="OPERATOR",
                               detail=f"you drive (deadman on); {self.hand_back} to hand back to the policy")
            else:
                changes.update(phase="POLICY", detail=f"the policy acts; {self.start} to take over")
        self.view.update(**changes)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.view.close()


def training_title(task: str, device_name: str) -> str:
    return f"robostack train | task {task} | {device_name} takes over while its deadman is on"


# --- the actor's end --------------------------------------------------------------------------------
def reading_meta(reading: TeleopReading, counts: dict, episode: int, status: str = "") -> dict:
    """A reading as the relay's message: vectors as lists, edges as running counts."""
    return {"translation": np.asarray(reading.translation, float).tolist(),
            "rotation": np.asarray(reading.rotation, float).tolist(),
            "gripper": float(reading.gripper), "intervene": bool(reading.intervene),
            "counts": dict(counts), "episode": int(episode), "status": status}


class RelayedDevice:
    """A TeleopDevice whose readings come from the launcher's TeleopRelay (see the module doc).
    `observe(fields)` (called before each read by the InterventionWrapper) shows the env's fields
    on the launcher's view."""

    name = "relay"

    def __init__(self, readings_endpoint: str, view_endpoint: str, max_age: float = MAX_AGE,
                 source: str = "actor"):
        self.max_age = max_age
        self.readings = transport.Subscriber(readings_endpoint, "teleop", hwm=1000)
        self.view = transport.Publisher(view_endpoint, source=source, bind=False)
        self.episode = 0
        self.latest = None  # the newest message received (any age)
        self.seen: dict | None = None  # edge counts already turned into events
        self.status_text = ""
        self.announced = 0.0
        self.steps = 0  # of this episode

    def reset(self, episode: int | None = None) -> None:
        self.episode = self.episode + 1 if episode is None else int(episode)
        self.steps = 0
        self._announce()

    def _announce(self) -> None:
        self.view.publish("view", {"episode": self.episode})
        self.announced = time.monotonic()

    def observe(self, fields: dict) -> None:
        """Before each step: the env's fields, for the launcher's view."""
        self.steps += 1
        self.view.publish("view", {"episode": self.episode, "step": self.steps},
                          {name: np.asarray(value, np.float64) for name, value in fields.items()})

    def read(self) -> TeleopReading:
        message = self.readings.poll_latest()
        if message is not None:
            self.latest = message
        if self.latest is None:
            return TeleopReading(timestamp=time.monotonic())
        meta = self.latest.meta
        counts = {edge: int(meta["counts"].get(edge, 0)) for edge in EDGES}
        if self.seen is None:  # presses from before this actor listened are not its events
            self.seen = counts
        events = {edge: counts[edge] > self.seen[edge] for edge in EDGES}
        self.seen = counts
        self.status_text = meta.get("status", "")
        behind = int(meta["episode"]) != self.episode
        if behind and time.monotonic() - self.announced > 0.05:
            self._announce()  # the first announcement can be lost while the PUB connects
        fresh = self.latest.age() <= self.max_age and not behind
        if not fresh:  # stale or of another episode: as if the person let go
            return TeleopReading(timestamp=self.latest.stamp, **events)
        return TeleopReading(translation=np.asarray(meta["translation"], float),
                             rotation=np.asarray(meta["rotation"], float),
                             gripper=float(meta["gripper"]), intervene=bool(meta["intervene"]),
                             timestamp=self.latest.stamp, **events)

    def status(self) -> str:
        return self.status_text

    def close(self) -> None:
        self.readings.close()
        self.view.close()


# --- the launcher's end -------------------------------------------------------------------------
class TeleopRelay:
    """Reads `device` RELAY_HZ times a second in a thread of its own and publishes each reading;
    shows the acting actor's fields on `screen` (an OperatorScreen, or None). Everything that
    touches the device or the view happens in that thread: `say` queues lines for it.

    `stop_requested` turns True when the person pressed the device's stop key; `failure` holds
    a one-line reason when reading the device failed (the thread then ends, readings stop, and
    the actor's deadman releases within max_age)."""

    def __init__(self, device, screen: OperatorScreen | None = None, hz: float = RELAY_HZ):
        self.device, self.screen, self.period = device, screen, 1.0 / hz
        # Unix sockets in the user's private folder: a free tcp port can be taken by another
        # process between choosing it and binding it, and any local user could connect to it.
        name = f"teleop-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.readings_endpoint = transport.ipc_endpoint(f"{name}-readings")
        self.view_endpoint = transport.ipc_endpoint(f"{name}-view")
        self.stop_requested = False
        self.failure: str | None = None
        self._lines: queue.Queue = queue.Queue()
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self.published = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="teleop-relay", daemon=True)
        self._thread.start()
        self._ready.wait(10.0)  # both sockets bound before any actor starts

    def say(self, line: str) -> None:
        if self._thread is None or not self._thread.is_alive():
            (self.screen.say if self.screen is not None else print)(line)
        else:
            self._lines.put(line)

    def _run(self) -> None:
        from robostack.env.teleop import start_episode

        publisher = transport.Publisher(self.readings_endpoint, source="operator")
        views = transport.Subscriber(self.view_endpoint, "view", connect=False)
        self._ready.set()
        counts = {edge: 0 for edge in EDGES}
        episode, fields, progress = 0, None, ""
        next_tick = time.monotonic()
        try:
            while not self._stopping.is_set():
                self._show_lines()
                view = views.poll_latest()
                if view is not None:
                    if int(view.meta["episode"]) != episode:
                        episode = int(view.meta["episode"])
                        start_episode(self.device, episode)
                        if self.screen is not None:
                            self.screen.new_episode(episode)
                    if view.arrays:
                        fields = dict(view.arrays)
                        progress = f"step {view.meta.get('step', 0)} of this episode"
                try:
                    if self.screen is not None:
                        keys = self.screen.view.poll_keys()  # a focused window's keys
                        if keys and hasattr(self.device, "feed"):
                            self.device.feed(keys)
                    reading = self.device.read()
                except Exception as exc:  # noqa: BLE001 - any device failure ends the relay the same way
                    self.failure = f"the {getattr(self.device, 'name', 'teleop')} device failed: {exc}"
                    return
                for edge in EDGES:
                    counts[edge] += int(bool(getattr(reading, edge)))
                status = self.device.status() if hasattr(self.device, "status") else ""
                publisher.publish("teleop", reading_meta(reading, counts, episode, status))
                self.published += 1
                if reading.stop:
                    self.stop_requested = True
                if self.screen is not None:
                    self.screen.step(fields, reading, progress)
                next_tick += self.period
                delay = next_tick - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                else:
                    next_tick = time.monotonic()
        finally:
            publisher.close()
            views.close()
            self._show_lines()

    def _show_lines(self) -> None:
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                return
            if self.screen is not None:
                self.screen.say(line)
            else:
                print(line, flush=True)

    def close(self) -> None:
        """Stop the thread, then release the device and close the view (the terminal gets its
        normal screen back, with every line said printed on it)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        try:
            self.device.close()
        finally:
            if self.screen is not None:
                self.screen.close()


# --- opening a person's controls ----------------------------------------------------------------
def open_person_controls(intervention: str, task: str, view: str = "auto", say=print):
    """(device, screen) for a person in the loop (--intervention keyboard|gamepad|spacemouse),
    None for nobody or the autopilot. The device is opened first, before anything else starts,
    so a missing one (no terminal, no gamepad) fails at once with its DeviceUnavailable; then
    the live view (robostack.env.teleop_view.make_view: a window, the terminal redrawn in place,
    or plain lines). Both are restored at exit even if the caller dies first."""
    import atexit

    from robostack.env.teleop import intervention_device, make_device, needs_pacing
    from robostack.env.teleop_view import make_view
    from tasks import make_task

    name = intervention_device(intervention) if intervention else ""
    if not needs_pacing(name):
        return None
    device = make_device(name)
    atexit.register(device.close)
    task_object = make_task(task)
    screen = OperatorScreen(make_view(view, title=training_title(task, name), say=say), device,
                            task_object.config, task_object.state_fields,
                            title=training_title(task, name))
    atexit.register(screen.close)
    return device, screen
