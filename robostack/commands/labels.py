"""`robostack record-labels`: record camera frames labelled success or not, for a reward classifier.

The training data of a learned reward classifier (HIL-SERL: on a real robot nothing else
computes the reward).

    robostack record-labels --task pick_cube --device autopilot --episodes 20 --log labels/pick_cube
    robostack record-labels --task pick_cube --device keyboard --episodes 10 --log labels/pick_cube

The log is an episode log (robostack/data/episode_log/: the format record-demos writes, with the
same cameras, state and timestamps) with one extra per-frame column, `label.success` (bool):
whether the OBSERVATION of that row (its camera images and state) shows the task's success.
Each episode's row holds rl/reset_seed (the mirror resets the same way again), rl/label_source
("simulator" or "operator") and rl/label_plan (what the autopilot did; "operator" for a person).
Episodes do not end at success: they run --episode-steps env steps (default: the task's time
limit + 30; 30 s when a person drives), so the frames after a success are labelled too.

Label sources:
  autopilot  the mirror's way: the task's scripted expert drives and the simulator labels
             (frame 0: the task's success check on the reset's observation; frame t+1: the
             step's info["success"], the same check on the new observation). label_source
             "simulator". On a real arm nothing knows success, so a person labels there.
  a person   --device keyboard|gamepad|spacemouse: drive with the deadman as in record-demos;
             the success key (keyboard: ENTER/y) turns the label ON ("the scene shows success
             from now on"), the failure key (n) turns it OFF; every frame gets the label's state
             when it was logged, and the view shows it as the phase. re-record (b) drops the
             episode, stop (q) quits (the kept episodes are saved). label_source "operator".

Near misses (HIL-SERL's guidance: ~200 positive frames and 2-3x as many negatives, the negatives
that look most like success). The autopilot, seeded per episode (LabelAutopilot), uses generic
actions, nothing task-specific:
  undo       once success has held for a random 3-12 frames it undoes it for 3-8 steps: lowers
             the arm (action z = -1, gripper kept closed), opens the gripper (the drop: its last
             action component -1) or both, drawn per undo; a task without a gripper lowers or
             moves away sideways. Then the expert starts over (more positives, and the cube
             somewhere new), until the episode's steps run out.
  near miss  a fraction --near-miss of the episodes stop the expert before success: once it has
             closed the gripper (its action's gripper component > 0.5) for a random 1-6 steps
             (pick_cube succeeds after ~8: the cube is lifted a little, not enough), the arm
             holds still, gripper closed, to the end; without a gripper, after 1-6 expert steps.
             Where a task succeeds sooner the episode has positives too; the labels stay the
             simulator's either way.
  empty      a fraction --empty-grasp of the others close the gripper on nothing after a random
             2-12 expert steps and wander from there (a random direction held 3-6 steps, mostly
             upward), gripper closed, to the end: a closed gripper high above the table with
             the object elsewhere. Without these a classifier learns "gripper closed and up"
             as success, and the policy finds that scene within 3,000 steps of training
             (docs/learning/pick_cube_classifier.md).
After each episode: `episode N: P positive, M negative frames (label source ...)`; at the end the
totals of the whole log, checked against the guidance, with what to do when they miss it.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field

import numpy as np

from hardware.teleop.base import DeviceUnavailable
from robostack.commands.record import Recorder, camera_names, cameras_on_offer, keys_for, with_cameras
from robostack.config import add_dataclass_arguments, check_backend, dataclass_from_args, usage_errors
from robostack.env.teleop import DEVICES, needs_pacing
from robostack.env.teleop_view import VIEWS
from robostack.env.remote import RemoteServers

GUIDANCE_POSITIVES = 200  # HIL-SERL: about this many positive frames ...
GUIDANCE_RATIO = (2.0, 3.0)  # ... and this many times as many negatives
HOLD_FRAMES = (3, 12)  # success held this many frames (inclusive) before the autopilot undoes it
UNDO_STEPS = (3, 8)  # steps of an undo
NEAR_MISS_STEPS = (1, 6)  # expert steps with the gripper closed before a near miss holds still
EMPTY_GRASP_STEPS = (2, 12)  # expert steps before an empty-grasp episode closes on nothing
WANDER_STEPS = (3, 6)  # steps each wandering direction is held
EXTRA_STEPS = 30  # the default episode: the task's time limit plus this, so success is held


@dataclass
class LabelConfig:
    """What to label, with which device, and where the label log goes."""

    task: str = "pick_cube"  # task to label (pick_cube, reach)
    device: str = "autopilot"  # autopilot (the mirror: expert drives, the simulator labels),
        # keyboard, gamepad or spacemouse (a person drives and labels)
    episodes: int = 20  # episodes to keep
    log: str = "labels/pick_cube"  # label log folder (appended to if it exists)
    cameras: str = ""  # cameras to record, comma-separated; "" all the task's scene has
    episode_steps: int = 0  # env steps of every episode (0: the task's limit + 30, 30 s for a person)
    near_miss: float = 0.3  # share of autopilot episodes stopped before success (near-miss negatives)
    empty_grasp: float = 0.25  # share of the other autopilot episodes that close on nothing and wander
    seed: int = 0  # first reset seed; episode attempts use seed, seed+1, ...
    transport: str = "zmq"  # zmq (robot server subprocess) or inprocess
    backend: str = "mujoco"  # mirror to run in: mujoco (MuJoCo) or pybullet (PyBullet: the same Panda, tcp and controller)
    endpoint: str = ""  # connect to a running robot server (a real arm) instead of starting one
    remote: RemoteServers = field(default_factory=RemoteServers, metadata={"option_prefix": ""})  # with --endpoint: its camera server and CURVE keys
    max_attempts: int = 0  # give up after this many episodes, re-recorded ones included (0: 3x --episodes)
    view: str = "auto"  # live view: auto, window, terminal or plain (as record-demos)

    def __post_init__(self):
        self.remote.check_against(self.endpoint)
        check_backend(self.backend)
        if self.device not in DEVICES:
            raise ValueError(f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.view not in VIEWS:
            raise ValueError(f"--view must be one of {', '.join(VIEWS)}, got {self.view!r}")
        if self.episodes < 1 or self.max_attempts < 0 or self.episode_steps < 0:
            raise ValueError(f"--episodes must be >= 1, --max-attempts and --episode-steps >= 0 "
                             f"(0: the default), got {self.episodes}, {self.max_attempts}, "
                             f"{self.episode_steps}")
        if not 0.0 <= self.near_miss <= 1.0 or not 0.0 <= self.empty_grasp <= 1.0:
            raise ValueError(f"--near-miss and --empty-grasp are shares of the episodes, in [0, 1], "
                             f"got {self.near_miss} and {self.empty_grasp}")
        names = camera_names(self.cameras)
        if any(not c for c in names) or len(set(names)) != len(names):
            raise ValueError(f"--cameras must be distinct camera names separated by commas "
                             f"(e.g. front,wrist), got {self.cameras!r}")


class LabelAutopilot:
    """The mirror's labeller: the task's scripted expert drives, undoing each success after a
    while and stopping short of it in near-miss episodes (the module doc). `reset(episode=i)`
    draws episode i's plan from (seed, i); `act(fields, success)` is the action at the current
    observation (`success`: the simulator's label of it)."""

    name = "autopilot"

    def __init__(self, task, seed: int = 0, near_miss: float = 0.3, empty_grasp: float = 0.0):
        self.task, self.config = task, task.config
        self.seed, self.near_miss, self.empty_grasp = seed, near_miss, empty_grasp
        self.gripper = bool(self.config.control_gripper)
        self.expert = task.expert(seed=seed, noise=0.0)
        self.reset(episode=0)

    def controls(self) -> list[tuple[str, str, str]]:
        return [("info", "-", "the task's scripted expert drives, the simulator labels; Ctrl-C quits")]

    def close(self) -> None:
        pass

    def reset(self, episode: int = 0) -> None:
        self.rng = np.random.default_rng([self.seed, episode, 14])
        self.expert.reset()
        self.is_near_miss = bool(self.rng.random() < self.near_miss)
        self.stop_after = int(self.rng.integers(NEAR_MISS_STEPS[0], NEAR_MISS_STEPS[1] + 1))
        self.mode, self.closed, self.held = "expert", 0, 0
        self._draw_hold()
        self.plan = [f"near miss: holds after {self.stop_after} "
                     f"{'closed-gripper ' if self.gripper else ''}expert steps"] if self.is_near_miss else []
        # Drawn after the near miss's draws, so adding it left those episodes as they were.
        self.is_empty = not self.is_near_miss and bool(self.rng.random() < self.empty_grasp)
        self.empty_at = int(self.rng.integers(EMPTY_GRASP_STEPS[0], EMPTY_GRASP_STEPS[1] + 1))
        self.steps, self.wander_left = 0, 0
        if self.is_empty:
            self.plan.append(f"empty grasp: closes on nothing after {self.empty_at} expert steps, wanders")

    def _draw_hold(self) -> None:
        self.hold_for = int(self.rng.integers(HOLD_FRAMES[0], HOLD_FRAMES[1] + 1))

    def _still(self, gripper: float) -> np.ndarray:
        action = np.zeros(self.config.action_dim(), np.float32)
        if self.gripper:
            action[-1] = gripper
        return action

    def _start_undo(self) -> None:
        kinds = ("lower", "drop", "lower+drop") if self.gripper else ("lower", "away")
        kind = kinds[int(self.rng.integers(len(kinds)))]
        self.undo = self._still(-1.0 if "drop" in kind else 1.0)
        if "lower" in kind:
            self.undo[2] = -1.0
        if kind == "away":
            angle = self.rng.uniform(0, 2 * np.pi)
            self.undo[:2] = np.cos(angle), np.sin(angle)
        self.undo_left = int(self.rng.integers(UNDO_STEPS[0], UNDO_STEPS[1] + 1))
        self.mode = "undo"
        self.plan.append(f"undo: {kind} after {self.held} success frames")

    def _wander(self) -> np.ndarray:
        if self.wander_left == 0:
            self.direction = self._still(1.0)
            self.direction[:3] = self.rng.uniform(-1, 1, 2).tolist() + [self.rng.uniform(-0.3, 1.0)]
            self.wander_left = int(self.rng.integers(WANDER_STEPS[0], WANDER_STEPS[1] + 1))
        self.wander_left -= 1
        return self.direction.copy()

    def act(self, fields: dict, success: bool) -> np.ndarray:
        self.held = self.held + 1 if success else 0
        self.steps += 1
        if self.is_empty and self.steps > self.empty_at:
            return self._wander()
        if self.mode == "expert" and not self.is_near_miss and self.held >= self.hold_for:
            self._start_undo()
        if self.mode == "undo":
            self.undo_left -= 1
            if self.undo_left == 0:  # the expert starts over from wherever the undo left things
                self.mode, self.held = "expert", 0
                self.expert.reset()
                self._draw_hold()
            return self.undo.copy()
        if self.mode == "hold":
            return self._still(1.0)
        action = np.asarray(self.expert(fields), np.float32)
        closed = action[-1] > 0.5 if self.gripper else True
        self.closed = self.closed + 1 if closed else 0
        if self.is_near_miss and self.closed >= self.stop_after:
            self.mode = "hold"  # this step closes / moves as the expert said; still from the next
        return action


class LabelRecorder(Recorder):
    """record-demos' session loop (reset, the person's start, the view) with label episodes:
    every episode runs its full length and every frame gets a label."""

    MEANINGS = {"success": "label ON: the scene shows success", "failure": "label OFF: it does not"}

    def __init__(self, config: LabelConfig, env, device, writer, view):
        super().__init__(config, env, device, writer, view)
        self.source = "operator" if self.person else "simulator"
        on, off = keys_for(self.controls, "success"), keys_for(self.controls, "failure")
        self.hints["RECORDING"] = (f"{on} when the scene shows success (label on), {off} when it "
                                   f"no longer does (off); " + self.hints["RECORDING"].split("; ")[-1])
        self.totals = [0, 0]  # positive, negative frames of this session

    # The device's success / failure keys set the label here, not end the episode: the key map
    # the view shows (set in Recorder.__init__, shown at once) says so.
    @property
    def controls(self) -> list[tuple[str, str, str]]:
        return self._controls

    @controls.setter
    def controls(self, rows) -> None:
        self._controls = [(role, keys, self.MEANINGS.get(role, what)) for role, keys, what in rows]

    def _label_phase(self, label: bool, paused: bool) -> dict:
        if self.person:
            detail = f"episode {self.kept + 1}: frames labelled {'SUCCESS' if label else 'not success'}"
            detail += f" (deadman off: the arm holds; {self.start} to go on)" if paused else ""
        else:
            detail = f"episode {self.kept + 1}: the simulator's label"
        return {"phase": "SUCCESS" if label else "NO SUCCESS", "detail": detail}

    def _episode(self, obs, seed: int) -> None:
        from robostack.data.episode_log import LABEL_FEATURE, image_timestamps
        from robostack.env.wrappers import operator_action

        env, writer = self.env, self.writer
        hold = np.zeros(env.action_space.shape, np.float32)  # no motion, gripper kept
        # A person's latch starts off; the simulator's label of frame 0 is the reset's observation.
        label = False if self.person else bool(env.task.evaluate(env.fields()).success)
        labels, outcome = [], "done"
        self.view.update(hint=self.hints["RECORDING"], **self._label_phase(label, False))
        self.pacer.start()
        while len(labels) < env.config.max_episode_steps:
            self.pacer.wait()
            if self.person:
                reading = self._read()
                if reading.stop or reading.rerecord:
                    outcome = "quit" if reading.stop else "re-record"
                    self.stopped = self.stopped or reading.stop
                    break
                label = (label or reading.success) and not reading.failure
                action = operator_action(reading, env) if reading.intervene else hold
                intervention = bool(reading.intervene)
            else:
                action, intervention = self.device.act(env.fields(), label), True
            next_obs, reward, terminated, truncated, info = env.step(action)
            events = self.reset_events + list(info.get("supervisor_transitions", []))
            self.reset_events = []
            # The env's own outcome columns as record-demos logs them (its `terminated` at
            # success is logged, and ignored: the episode goes on); the label is the frame's.
            writer.add_frame(obs, action, reward, terminated, truncated, take=True,
                             success=bool(info["success"]), intervention=intervention,
                             timestamps={"state": np.nan if info.get("time") is None
                                         else float(info["time"]), **self.image_times},
                             events=events, extras={LABEL_FEATURE: label})
            labels.append(label)
            self.image_times = image_timestamps(info)
            obs = next_obs
            if not self.person:
                label = bool(info["success"])  # the check on the observation of the next frame
            self.view.update(progress=self._progress(len(labels)), fields=env.fields(),
                             images=self._images(obs),
                             **self._label_phase(label, self.person and not intervention))
        self._finish_labels(obs, seed, outcome, labels)

    def _finish_labels(self, obs, seed: int, outcome: str, labels: list[bool]) -> None:
        if outcome != "done" or not labels:
            self.writer.discard_episode()
            self.view.update(phase="DROPPED", detail=f"{outcome}: episode not logged")
            self.view.say(f"attempt {self.attempts}: {outcome}, episode dropped")
            return
        plan = "operator" if self.person else ("; ".join(self.device.plan) or "expert only")
        index = self.writer.end_episode(obs, metadata={"reset_seed": seed, "label_source": self.source,
                                                       "label_plan": plan})
        self.kept += 1
        positive = int(sum(labels))
        self.totals[0] += positive
        self.totals[1] += len(labels) - positive
        self.view.update(phase="SAVED", detail=f"logged as episode {index}", counters=self._counters())
        self.view.say(f"episode {index}: {positive} positive, {len(labels) - positive} negative "
                      f"frames (label source {self.source}{'; ' + plan if not self.person else ''})")


def guidance(positives: int, negatives: int, episodes: int, config: LabelConfig) -> list[str]:
    """Lines checking a label log's totals against HIL-SERL's guidance (>= 200 positive frames,
    2-3x as many negatives), each shortfall with what to do about it."""
    low, high = GUIDANCE_RATIO
    lines = [f"totals: {positives} positive, {negatives} negative frames in {episodes} episodes"]
    ratio = negatives / positives if positives else math.inf
    if positives < GUIDANCE_POSITIVES:
        rate = positives / episodes if episodes else 0.0
        more = f"about {math.ceil((GUIDANCE_POSITIVES - positives) / rate)} more episodes" if rate \
            else "episodes that reach success"
        lines.append(f"below the guidance of {GUIDANCE_POSITIVES} positive frames: record {more} "
                     "(run record-labels again with the same --log: it appends)")
    if ratio < low:
        lines.append(f"negatives are {ratio:.1f}x the positives (guidance {low:g}-{high:g}x): record "
                     f"more near misses (--near-miss, now {config.near_miss:g}; a person: scenes "
                     "that almost succeed) or longer episodes (--episode-steps)")
    elif ratio > high:
        lines.append(f"negatives are {ratio:.1f}x the positives (guidance {low:g}-{high:g}x): "
                     f"fewer near misses (--near-miss, now {config.near_miss:g}), shorter "
                     "--episode-steps, or more episodes that hold success longer")
    if len(lines) == 1:
        lines.append(f"meets the guidance (>= {GUIDANCE_POSITIVES} positives, negatives "
                     f"{low:g}-{high:g}x the positives)")
    return lines


def log_totals(root) -> tuple[int, int, int]:
    """(positive frames, negative frames, episodes) of a label log, every episode it holds."""
    from robostack.data.episode_log import LABEL_FEATURE, EpisodeLog

    log = EpisodeLog(root)
    labels = [log.episode(i)[LABEL_FEATURE] for i in range(len(log))]
    positives = int(sum(int(np.sum(x)) for x in labels))
    return positives, int(sum(len(x) for x in labels)) - positives, len(log)


def record_labels(config: LabelConfig, say=print, view=None, device=None) -> dict:
    """Record a label log as `config` says; `say` gets what a log should keep. `view` and
    `device` replace the live view and the person's device --view and --device would open
    (tests); both are closed at the end."""
    from robostack.data.episode_log import EpisodeWriter, features_from_spaces, label_features, state_names, timestamp_sources
    from robostack.env import make_env
    from robostack.env.teleop import episode_steps, make_device
    from robostack.env.teleop_view import make_view

    person = needs_pacing(config.device)
    view = view or make_view(config.view, title=f"robostack record-labels | task {config.task} | "
                             f"device {config.device}", say=say)
    env = writer = recorder = None
    try:
        if person and device is None:  # first: a missing device fails before the server wait
            device = make_device(config.device, seed=config.seed)
        doing = f"connecting to the robot server at {config.endpoint}" if config.endpoint else \
            f"starting the robot server for {config.task} in the {config.backend} mirror (takes a few seconds)"
        with view.busy(doing):
            opened = make_env(config.task, backend=config.backend, transport_kind=config.transport,
                              endpoint=config.endpoint or None, seed=config.seed,
                              **config.remote.env_options())
            cameras = camera_names(config.cameras) or tuple(cameras_on_offer(opened))
            if not cameras:
                opened.close()
                raise SystemExit(f"robostack record-labels: the robot server (task {config.task}) "
                                 "has no cameras, and a reward classifier learns from camera "
                                 "images. Fix: a task or robot server with cameras (--cameras); a "
                                 "real-time one reads them from a camera server (--camera-endpoint)")
            env = with_cameras(opened, cameras)  # an unknown camera: SystemExit naming the ones there
            env.reset(seed=config.seed)  # the first reset builds the scene: part of the wait
        env.config.max_episode_steps = episode_steps(config.device, env.config.policy_hz,
                                                     env.config.max_episode_steps + EXTRA_STEPS,
                                                     config.episode_steps)
        if device is None:
            device = LabelAutopilot(env.task, seed=config.seed, near_miss=config.near_miss,
                                    empty_grasp=config.empty_grasp)
        features = {**features_from_spaces(env.observation_space, env.action_space,
                                           state_names=state_names(env.state_fields)),
                    **label_features()}
        writer = EpisodeWriter(config.log, fps=env.config.policy_hz, features=features,
                               task=config.task, timestamp_sources=timestamp_sources(env.observation_space))
        view.say(f"recording {config.episodes} label episodes of {env.config.max_episode_steps} steps, "
            f"cameras {', '.join(cameras)}, into {config.log}")
        recorder = LabelRecorder(config, env, device, writer, view)
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
    result = {"kept": recorder.kept if recorder else 0, "attempts": recorder.attempts if recorder else 0,
              "log": config.log, "stopped": bool(recorder and recorder.stopped),
              "positives": recorder.totals[0] if recorder else 0,
              "negatives": recorder.totals[1] if recorder else 0}
    if writer is not None:
        positives, negatives, episodes = log_totals(config.log)
        result["guidance"] = guidance(positives, negatives, episodes, config)
        for line in result["guidance"]:
            say(line)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="robostack record-labels", description=__doc__.splitlines()[0])
    add_dataclass_arguments(parser, LabelConfig)
    args = parser.parse_args(argv)
    with usage_errors(parser):
        config = dataclass_from_args(LabelConfig, args)
    try:
        result = record_labels(config)
    except DeviceUnavailable as exc:
        print(f"robostack record-labels: {exc}", file=sys.stderr)
        return 2
    print(f"\n{result['kept']} label episodes kept of {result['attempts']} attempts, in {result['log']}")
    return 0 if result["kept"] else 1


if __name__ == "__main__":
    sys.exit(main())
