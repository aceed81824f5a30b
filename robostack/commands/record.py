"""`robostack record-demos`: drive the arm with a teleop device and log demonstrations.

    robostack record-demos --task pick_cube --device keyboard --episodes 20 --log demos/pick

What a person sees: a live view (a window where a display exists, else the terminal redrawn in
place) with the device's key map, the episode counters, the tcp position, gripper width and
the task's observation fields, the phase, and a hint. Each attempt:
  READY      the env has reset (seeded, so the mirror can replay it); the arm stays still
             until the operator starts (keyboard: SPACE, gamepad: hold RT, SpaceMouse: move).
  RECORDING  every policy period of wall-clock time the device is read and the env steps once
             (real-time pacing, also on a lock-step mirror: a person must be able to react);
             while the deadman is off the arm holds still (PAUSED).
  the end    the task reports success or failure, the time limit (--max-episode-steps; 30 s by
             default with a person), or the operator ends it: success / failure keys (labels),
             re-record (dropped and recorded again), quit (the episode in progress is dropped,
             every kept one is saved). Ctrl-C quits the same way.
`--keep success` (default) logs successful episodes only, `all` logs every one, `ask` asks after
each (answered with the device's success / failure keys). The log is the episode log
(robostack/data/episode_log/: LeRobot v3 layout), written in the background and crash-safe,
with the safety supervisor's transitions and their reasons at the frames they happened;
`robostack train --demo-log DIR` trains from it and `robostack replay DIR --episode N`
re-executes an episode. The autopilot (the task's scripted expert as the operator) starts at
once and runs as fast as the env steps.
`--cameras front,wrist` records those cameras of the task's scene (rendered by the mirror at the
state of each step, or a real camera server's frames): one video per camera in the log and each
frame's capture time (timestamp.images.<camera>); `robostack view` shows them with overlays.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from hardware.teleop.base import DeviceUnavailable
from robostack.config import add_dataclass_arguments, check_backend, dataclass_from_args, usage_errors
from robostack.env.teleop import DEVICES, needs_pacing
from robostack.env.teleop_view import VIEWS
from robostack.env.remote import RemoteServers

KEEP = ("success", "all", "ask")


@dataclass
class RecordConfig:
    """What to record, with which device, and where the log goes."""

    task: str = "pick_cube"  # task to record (pick_cube, reach)
    device: str = "keyboard"  # keyboard, gamepad, spacemouse or autopilot (the scripted expert)
    episodes: int = 20  # episodes to keep
    log: str = "demos/pick_cube"  # episode log folder (appended to if it exists)
    keep: str = "success"  # success (only successful episodes), all, or ask after each
    seed: int = 0  # first reset seed; episode attempts use seed, seed+1, ...
    transport: str = "zmq"  # zmq (robot server subprocess) or inprocess
    backend: str = "mujoco"  # mirror to run in: mujoco (MuJoCo) or pybullet (PyBullet: the same Panda, tcp and controller)
    endpoint: str = ""  # connect to a running robot server (a real arm) instead of starting one
    remote: RemoteServers = field(default_factory=RemoteServers, metadata={"option_prefix": ""})  # with --endpoint: its camera server and CURVE keys
    max_attempts: int = 0  # give up after this many episodes (0: 3x --episodes)
    max_episode_steps: int = 0  # time limit of an episode in env steps (0: 30 s of policy
        # steps when a person drives, the task's own limit for the autopilot)
    view: str = "auto"  # live view: auto (a window where a display and OpenCV's GUI exist,
        # else the terminal redrawn in place, else plain lines), window, terminal or plain
    cameras: str = ""  # cameras to record, comma-separated (pick_cube: front,wrist; reach:
        # front): one video per camera in the log, with each frame's capture time; "" none

    def __post_init__(self):
        self.remote.check_against(self.endpoint)
        check_backend(self.backend)
        if self.keep not in KEEP:
            raise ValueError(f"--keep must be one of {KEEP}, got {self.keep!r}")
        if self.device not in DEVICES:
            raise ValueError(f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.view not in VIEWS:
            raise ValueError(f"--view must be one of {', '.join(VIEWS)}, got {self.view!r}")
        if self.episodes < 1 or self.max_attempts < 0:
            raise ValueError(f"--episodes must be >= 1 and --max-attempts >= 0 (0: 3x --episodes), "
                             f"got {self.episodes} and {self.max_attempts}")
        names = [c.strip() for c in self.cameras.split(",")] if self.cameras.strip() else []
        if any(not c for c in names) or len(set(names)) != len(names):
            raise ValueError(f"--cameras must be distinct camera names separated by commas "
                             f"(e.g. front,wrist), got {self.cameras!r}")
        if self.max_episode_steps < 0:
            raise ValueError(f"--max-episode-steps must be >= 0 (0: the default), "
                             f"got {self.max_episode_steps}")


def keys_for(controls, role: str) -> str:
    """The device's keys for `role` ("success", "stop", ...), or "" if it has none."""
    return next((keys for r, keys, _ in controls if r == role), "")


def _hints(controls, start: str) -> dict[str, str]:
    """The hint line of each phase, from the device's own keys."""
    ends = [f"{keys_for(controls, role)} {what}" for role, what in
            (("success", "ends it as success"), ("failure", "as failure"),
             ("rerecord", "drops it and records again")) if keys_for(controls, role)]
    stop = keys_for(controls, "stop") or "Ctrl-C"
    return {
        "READY": f"{start} to start recording (the arm stays still until then); {stop} quits",
        "RECORDING": "; ".join(ends + [f"{stop} quits (drops this episode, keeps the saved ones)"]),
    }


class Recorder:
    """One recording session: the attempt loop over an env, a device, a log writer and a view."""

    def __init__(self, config: RecordConfig, env, device, writer, view):
        from robostack.env.teleop import Pacer, device_controls, start_hint

        self.config, self.env, self.device, self.writer, self.view = config, env, device, writer, view
        self.person = needs_pacing(config.device)
        self.pacer = Pacer(env.config.policy_hz, enabled=self.person)
        self.controls = device_controls(device, env.config.control_rotation, env.config.control_gripper)
        self.start = start_hint(device)
        self.hints = _hints(self.controls, self.start)
        self.kept = self.attempts = 0
        self.max_attempts = config.max_attempts or 3 * config.episodes
        self.stopped = False
        self.reset_events: list = []  # the last reset's supervisor transitions, until frame 0
        self.image_times: dict = {}  # {camera: capture time} of the images in the observation
        view.update(controls=self.controls, task_fields=tuple(env.task.state_fields))

    # --- what the view shows ----------------------------------------------------------------
    def _counters(self) -> str:
        return (f"kept {self.kept} of {self.config.episodes} wanted   "
                f"attempt {self.attempts} of {self.max_attempts}")

    def _progress(self, steps: int) -> str:
        hz, limit = self.env.config.policy_hz, self.env.config.max_episode_steps
        return f"step {steps} / {limit}   {steps / hz:.1f} / {limit / hz:.1f} s"

    def _read(self):
        """The device's reading after the view's own keys (a focused window) reached it."""
        from robostack.env.wrappers import read_operator

        keys = self.view.poll_keys()
        if keys and hasattr(self.device, "feed"):
            self.device.feed(keys)
        reading = read_operator(self.device, self.env)
        status = self.device.status() if hasattr(self.device, "status") else ""
        self.view.update(reading=reading, device_status=status)
        return reading

    def _images(self, obs) -> dict:
        return {key: value for key, value in obs.items() if key.startswith("images/")}

    # --- the session ------------------------------------------------------------------------
    def run(self) -> None:
        from robostack.data.episode_log import image_timestamps
        from robostack.env.teleop import start_episode

        while self.kept < self.config.episodes and self.attempts < self.max_attempts and not self.stopped:
            seed = self.config.seed + self.attempts
            self.attempts += 1
            obs, info = self.env.reset(seed=seed)
            self.image_times = image_timestamps(info)
            # The reset's supervisor transitions (e.g. disarmed -> armed) belong to the episode:
            # they are logged with its first frame.
            self.reset_events = list(info.get("supervisor_transitions", []))
            start_episode(self.device, self.attempts - 1)
            self.view.update(counters=self._counters(), progress=self._progress(0),
                             fields=self.env.fields(), images=self._images(obs))
            if self.person and not self._wait_for_start():
                self.stopped = True
                self.attempts -= 1  # nothing was attempted
                self.view.say("quit before the next episode started")
                break
            self._episode(obs, seed)
        if self.kept < self.config.episodes and not self.stopped:
            self.view.say(f"only {self.kept} of {self.config.episodes} episodes kept after "
                          f"{self.attempts} attempts")

    def _wait_for_start(self) -> bool:
        """READY until the operator engages the deadman (True) or quits (False)."""
        self.view.update(phase="READY", detail=f"{self.start} to start episode {self.kept + 1} "
                         f"(attempt {self.attempts})", hint=self.hints["READY"])
        self.pacer.start()
        while True:
            self.pacer.wait()
            reading = self._read()
            if reading.stop:
                return False
            if reading.intervene:
                return True

    def _episode(self, obs, seed: int) -> None:
        from robostack.data.episode_log import image_timestamps
        from robostack.env.wrappers import operator_action

        env, writer = self.env, self.writer
        hold = np.zeros(env.action_space.shape, np.float32)  # no motion, gripper kept
        outcome, steps, success = "time limit", 0, False
        self.view.update(phase="RECORDING", detail=f"episode {self.kept + 1}", hint=self.hints["RECORDING"])
        self.pacer.start()
        while True:
            self.pacer.wait()
            reading = self._read()
            if reading.stop:
                self.stopped, outcome = True, "quit"
                break
            if reading.rerecord:
                outcome = "re-record"
                break
            action = operator_action(reading, env) if reading.intervene else hold
            next_obs, reward, terminated, truncated, info = env.step(action)
            success = bool(info["success"]) or reading.success
            labelled = reading.success or reading.failure
            events = self.reset_events + list(info.get("supervisor_transitions", []))
            self.reset_events = []
            # Each camera's time is that of the frame logged in this row (the observation the
            # action was taken at), so a frame and its timestamp never come from different steps.
            # take=True: the env's images are fresh arrays each step; the log keeps them uncopied
            # (read-only from here), which at 10 Hz with two 640x480 cameras cuts add_frame 3x.
            writer.add_frame(obs, action, reward, terminated or labelled, truncated, take=True,
                             success=success, intervention=bool(reading.intervene),
                             timestamps={"state": np.nan if info.get("time") is None
                                         else float(info["time"]), **self.image_times},
                             events=events)
            self.image_times = image_timestamps(info)
            obs, steps = next_obs, steps + 1
            paused = self.person and not reading.intervene
            self.view.update(
                phase="PAUSED" if paused else "RECORDING",
                detail=f"deadman off: the arm holds; {self.start} to go on" if paused
                else f"episode {self.kept + 1}", progress=self._progress(steps),
                fields=env.fields(), images=self._images(obs))
            if terminated or truncated or labelled:
                outcome = ("success" if success else "failure") if (terminated or labelled) \
                    else "time limit"
                break
        self._finish(obs, seed, outcome, steps, success)

    def _finish(self, obs, seed: int, outcome: str, steps: int, success: bool) -> None:
        config, label = self.config, f"attempt {self.attempts}: {outcome} after {steps} steps"
        if outcome in ("quit", "re-record") or steps == 0:
            self.writer.discard_episode()
            self.view.update(phase="DROPPED", detail=f"{outcome}: episode not logged")
            self.view.say(f"attempt {self.attempts}: {outcome}, episode dropped")
            return
        keep = config.keep == "all" or (config.keep == "success" and success) or \
            (config.keep == "ask" and self._ask(f"keep this {outcome} episode?"))
        if keep:
            index = self.writer.end_episode(obs, metadata={"reset_seed": seed})
            self.kept += 1
            self.view.update(phase="SAVED", detail=f"{outcome}, logged as episode {index}",
                             counters=self._counters())
            self.view.say(f"{label}, logged as episode {index} ({self.kept}/{config.episodes} kept)")
        else:
            self.writer.discard_episode()
            self.view.update(phase="DROPPED", detail=f"{outcome}: not kept (--keep {config.keep})")
            self.view.say(f"{label}, dropped ({self.kept}/{config.episodes} kept)")

    def _ask(self, question: str) -> bool:
        """--keep ask: the operator answers with the device's success (keep) or failure (drop)
        keys; the autopilot's run asks on the terminal."""
        if not self.person:
            return input(f"{question} [y/N] ").strip().lower().startswith("y")
        yes, no = keys_for(self.controls, "success"), keys_for(self.controls, "failure")
        self.view.update(phase="KEEP?", detail=f"{question} {yes}: keep, {no}: drop",
                         hint=f"{yes} keeps the episode, {no} drops it")
        self.pacer.start()
        while True:
            self.pacer.wait()
            reading = self._read()
            if reading.success:
                return True
            if reading.failure or reading.rerecord or reading.stop:
                self.stopped = self.stopped or reading.stop
                return False


def camera_names(text: str) -> tuple[str, ...]:
    """--cameras "front, wrist" -> ("front", "wrist")."""
    return tuple(c.strip() for c in text.split(",")) if text.strip() else ()


def cameras_on_offer(env) -> list[str]:
    """The cameras `env` can observe: in lock-step those its robot server renders; in real time
    its task scene's, which the camera server at env.camera_endpoint serves (none without one)."""
    if env.realtime:
        return [c.name for c in env.task.build_scene().cameras] if env.camera_endpoint else []
    return list(env.server_info.get("cameras") or {})


def with_cameras(env, cameras: Sequence[str]):
    """`env` seeing `cameras` ("images/<name>" observations, info["image_times"]): a new env
    over the same connection, its task config otherwise the one the server said (a real arm's
    server knows its own rate and workspace). A camera the server's scene lacks is refused,
    naming the ones it has."""
    if not cameras:
        return env
    from robostack.env.env import RobotEnv

    if env.realtime and not env.camera_endpoint:
        env.close()
        raise SystemExit(f"robostack: --cameras {','.join(cameras)}: a real-time robot server (a real "
                         "arm) renders no images; start `robostack camera-server` with those cameras "
                         "and pass its --camera-endpoint (docs/camera_server.md)")
    offered = cameras_on_offer(env)
    missing = [c for c in cameras if c not in offered]
    if missing:
        env.close()
        where = "in the task's scene" if env.realtime else "on the robot server"
        raise SystemExit(f"robostack: no camera {', '.join(missing)} {where} "
                         f"(task {env.task.name}): it has {', '.join(offered) or 'none'}. Fix: "
                         "--cameras with those names, or leave --cameras out")
    return RobotEnv(env.connection, config=dataclasses.replace(env.config, cameras=tuple(cameras)),
                    camera_endpoint=env.camera_endpoint, camera_curve=env.camera_curve)


def record(config: RecordConfig, say=print, view=None, device=None) -> dict:
    """Record demonstrations as `config` says; `say` gets what a log should keep (the plain
    view prints through it). `view` and `device` replace the live view and the device that
    --view and --device would open (tests; a caller with a device of its own); both are closed
    at the end."""
    from robostack.data.episode_log import (EpisodeWriter, features_from_spaces, state_names,
                                            timestamp_sources)
    from robostack.env import make_env
    from robostack.env.teleop import InterventionProtocol, episode_steps, make_device
    from robostack.env.teleop_view import make_view

    if config.keep == "ask" and not sys.stdin.isatty():
        raise SystemExit("robostack record-demos: --keep ask needs a terminal to ask in; use "
                         "--keep success or --keep all")
    person = needs_pacing(config.device)
    view = view or make_view(config.view, title=f"robostack record-demos | task {config.task} | "
                             f"device {config.device}", say=say)
    env = writer = recorder = None
    try:
        if person and device is None:
            # Opened first: a missing device fails before the wait for the server, and the
            # terminal stops echoing the keys a person types while waiting.
            device = make_device(config.device, seed=config.seed)
        if config.endpoint:
            doing = f"connecting to the robot server at {config.endpoint}"
        else:
            where = "in this process" if config.transport == "inprocess" else "a subprocess"
            doing = (f"starting the robot server for {config.task} in the {config.backend} mirror "
                     f"({where}; takes a few seconds)")
        with view.busy(doing):
            env = with_cameras(make_env(config.task, backend=config.backend, transport_kind=config.transport,
                                        endpoint=config.endpoint or None, seed=config.seed,
                                        **config.remote.env_options()),
                               camera_names(config.cameras))
            env.reset(seed=config.seed)  # the first reset builds the scene: part of the wait
        # The time limit is counted by the env (client side); the rest of the task config stays
        # what the server said (a real arm's server knows its own rate and workspace).
        env.config.max_episode_steps = episode_steps(config.device, env.config.policy_hz,
                                                     env.config.max_episode_steps,
                                                     config.max_episode_steps)
        if device is None:  # the autopilot as a demonstrator: takes over at step 0, never lets go
            protocol = InterventionProtocol(probability=1.0, start=(0, 0), duration=(10**6, 10**6))
            device = make_device(config.device, task=env.task, protocol=protocol, seed=config.seed)
        features = features_from_spaces(env.observation_space, env.action_space,
                                        state_names=state_names(env.state_fields))
        writer = EpisodeWriter(config.log, fps=env.config.policy_hz, features=features,
                               task=config.task, timestamp_sources=timestamp_sources(env.observation_space))
        recorder = Recorder(config, env, device, writer, view)
        recorder.run()
    except KeyboardInterrupt:
        view.say("interrupted (Ctrl-C): the episode in progress is dropped, the kept ones are saved")
        if recorder is not None:
            recorder.stopped = True
    finally:
        for part in (writer, device, env):
            if part is not None:
                part.close()
        view.close()
    kept, attempts = (recorder.kept, recorder.attempts) if recorder else (0, 0)
    return {"kept": kept, "attempts": attempts, "log": config.log,
            "stopped": bool(recorder and recorder.stopped)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="robostack record-demos",
                                     description=__doc__.splitlines()[0])
    add_dataclass_arguments(parser, RecordConfig)
    args = parser.parse_args(argv)
    with usage_errors(parser):
        config = dataclass_from_args(RecordConfig, args)
    try:
        result = record(config)
    except DeviceUnavailable as exc:
        print(f"robostack record-demos: {exc}", file=sys.stderr)
        return 2
    print(f"\n{result['kept']} episodes kept of {result['attempts']} attempts, in {result['log']}")
    return 0 if result["kept"] else 1


if __name__ == "__main__":
    sys.exit(main())
