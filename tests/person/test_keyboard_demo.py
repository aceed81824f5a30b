"""A person at the keyboard, played by this test: `robostack record-demos --device keyboard` runs
as a terminal program under tmux; the test reads the screen (tmux capture-pane) as a person
reads the live view, and types (tmux send-keys) what a person watching it would: start, move
over the cube, descend, close, lift; after two kept demonstrations (of three asked for) it
quits with q. Nothing here reaches into the program: if the view does not show the key map,
the counters or the tcp and cube readout, or the keys do not drive the arm at a pace a person
can follow, the demonstrations do not get recorded.

Needs tmux (the apt package `tmux`); installed here if missing and possible, else skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EPISODES = 2  # the person records these, then quits (of WANTED asked for)
WANTED = 3
PHASES = ("STARTING", "READY", "RECORDING", "PAUSED", "SAVED", "DROPPED", "KEEP?", "POLICY", "OPERATOR")
NUMBER = r"([-+]\d+\.\d+)"


def tmux_binary() -> str | None:
    """tmux, installed with apt-get when it is missing and this user may (CI containers)."""
    found = shutil.which("tmux")
    if found or not shutil.which("apt-get") or os.geteuid() != 0:
        return found
    for command in (["apt-get", "install", "-y", "-q", "tmux"], ["apt-get", "update", "-q"],
                    ["apt-get", "install", "-y", "-q", "tmux"]):
        subprocess.run(command, capture_output=True, timeout=600,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        if shutil.which("tmux"):
            break
    return shutil.which("tmux")


class Terminal:
    """A program in a detached tmux session of its own tmux server: keys in, screen out."""

    def __init__(self, tmux: str, command: str, columns: int = 110, rows: int = 48):
        self.tmux, self.socket = tmux, f"robostack-test-{uuid.uuid4().hex[:8]}"
        subprocess.run([tmux, "-L", self.socket, "-f", "/dev/null", "new-session", "-d", "-s", "person",
                        "-x", str(columns), "-y", str(rows), command], check=True, timeout=30)

    def screen(self) -> str:
        result = subprocess.run([self.tmux, "-L", self.socket, "capture-pane", "-p", "-t", "person"],
                                capture_output=True, text=True, timeout=30)
        return result.stdout

    def type(self, keys: str) -> None:
        if keys:
            subprocess.run([self.tmux, "-L", self.socket, "send-keys", "-t", "person", "-l", keys],
                           check=True, timeout=30)

    def close(self) -> None:
        subprocess.run([self.tmux, "-L", self.socket, "kill-server"], capture_output=True, timeout=30)


@dataclass
class View:
    """What a person reads off the screen (None: not on this screen)."""

    phase: str | None = None
    kept: int | None = None
    tcp: np.ndarray | None = None
    cube: np.ndarray | None = None
    width: float | None = None
    speed: int | None = None

    @classmethod
    def read(cls, screen: str) -> "View":
        view = cls()
        for line in screen.splitlines():
            word = line.split(" ", 1)[0]
            if view.phase is None and word in PHASES:
                view.phase = word
            if m := re.search(r"kept (\d+) of \d+ wanted", line):
                view.kept = int(m.group(1))
            if m := re.match(rf"tcp\s+x {NUMBER}\s+y {NUMBER}\s+z {NUMBER}", line):
                view.tcp = np.array([float(v) for v in m.groups()])
            if m := re.match(rf"cube_position\s+x {NUMBER}\s+y {NUMBER}\s+z {NUMBER}", line):
                view.cube = np.array([float(v) for v in m.groups()])
            if m := re.search(r"width (\d+\.\d+) m", line):
                view.width = float(m.group(1))
            if m := re.search(r"speed (\d+)%", line):
                view.speed = int(m.group(1))
        return view


# Which key moves which way (read off the key map a person sees: w/s, a/d, r/f).
AXIS_KEYS = (("w", "s"), ("a", "d"), ("r", "f"))
SPEEDS = {"1": 10, "2": 30, "3": 100}  # key -> percent, as the key map says


@dataclass
class Person:
    """Watches the view and types: over the cube, down, close, up. One decision per look."""

    stage: str = "wait"
    stage_since: float = field(default_factory=time.monotonic)
    started_episode_at: float = 0.0
    widths: list = field(default_factory=list)

    def go(self, stage: str) -> None:
        self.stage, self.stage_since = stage, time.monotonic()

    def keys(self, view: View) -> str:
        now = time.monotonic()
        if view.phase == "READY" and view.kept is not None and view.kept >= EPISODES:
            return "q"  # enough: quit, keeping what is recorded
        if view.phase == "READY":
            self.go("align")
            self.started_episode_at = now
            self.widths = []
            return " "  # SPACE starts the episode
        if view.phase != "RECORDING" or view.tcp is None or view.cube is None:
            return ""
        if now - self.started_episode_at > 25.0:  # hopeless: drop it and record it again
            return "b"
        error = view.cube - view.tcp  # where the cube is, seen from the gripper
        if self.stage == "align":  # above the cube first, at the height the arm is at
            goal = np.array([error[0], error[1], 0.0])
            if np.abs(goal[:2]).max() < 0.006:
                self.go("descend")
        if self.stage == "descend":  # straight down; back over the cube first if it drifted
            drifted = np.abs(error[:2]).max() > 0.008
            goal = np.array([error[0], error[1], 0.0]) if drifted else np.array([0.0, 0.0, error[2]])
            if not drifted and abs(error[2]) < 0.006:
                self.go("close")
                return "c"
        if self.stage == "close":  # wait until the fingers stop on the cube
            self.widths.append(view.width)
            settled = len(self.widths) >= 3 and abs(self.widths[-1] - self.widths[-3]) < 0.001
            if settled and now - self.stage_since > 0.6:
                self.go("lift")
            return ""
        if self.stage == "lift":
            goal = np.array([0.0, 0.0, 0.2])
        distance = np.abs(goal).max()
        speed = "3" if distance > 0.05 else "2" if distance > 0.015 else "1"
        keys = speed if view.speed != SPEEDS[speed] else ""
        for axis, (plus, minus) in enumerate(AXIS_KEYS):
            if abs(goal[axis]) > 0.004:
                keys += plus if goal[axis] > 0 else minus
        return keys


@pytest.fixture(scope="module")
def tmux():
    found = tmux_binary()
    if found is None:
        pytest.skip("needs tmux (apt-get install -y tmux), which is missing and could not be installed")
    return found


def drive_in_terminal(tmux: str, robostack_args: str, person, exit_file: Path, timeout: float):
    """Run `robostack ROBOSTACK_ARGS` in a tmux terminal (no display, one thread) and let
    `person` watch the screen and type until the program exits (its code in `exit_file`) or
    `timeout` s pass. Returns (the screens that showed a phase, the final screen)."""
    python_path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH", "")) if p)
    command = (f"cd {ROOT} && env -u DISPLAY PYTHONPATH={python_path} OMP_NUM_THREADS=1 "
               f"MUJOCO_GL=egl {sys.executable} -m robostack.cli {robostack_args}; "
               f"echo $? > {exit_file}; sleep 300")
    terminal = Terminal(tmux, command)
    screens, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not (exit_file.exists() and exit_file.read_text().strip()):
            screen = terminal.screen()
            view = View.read(screen)
            if view.phase is not None:
                screens.append(screen)
            terminal.type(person.keys(view))
            time.sleep(0.1)  # a person's reaction: about one screen refresh
        final = terminal.screen()
    finally:
        terminal.close()
    return screens, final


@pytest.fixture(scope="module")
def recorded(tmux, tmp_path_factory):
    """Two successful keyboard demonstrations recorded through the terminal view."""
    folder = tmp_path_factory.mktemp("person")
    log, exit_file = folder / "demos", folder / "exit_code"
    screens, final = drive_in_terminal(
        tmux, f"record-demos --device keyboard --task pick_cube --episodes {WANTED} --max-attempts 5 "
              f"--seed 3 --log {log}", Person(), exit_file, timeout=120)
    assert exit_file.exists(), "record-demos did not finish in time; last screen:\n" + \
        (screens[-1] if screens else final)
    return {"log": log, "exit_code": int(exit_file.read_text()), "screens": screens, "final": final}


def test_a_person_records_two_successful_demonstrations_with_the_keyboard(recorded):
    from robostack.data.episode_log import EpisodeLog

    assert recorded["exit_code"] == 0, recorded["final"]
    log = EpisodeLog(recorded["log"])
    successes = [i for i in range(len(log)) if log.episodes[i]["rl/success"]]
    assert len(successes) >= EPISODES, recorded["final"]
    for i in successes:
        episode = log.episode(i)
        assert episode["next.success"][-1] and episode["intervention"].any()
        assert len(episode["action"]) > 15  # a person's pace, not one burst of steps
    # q quit cleanly: everything recorded is there, and the terminal got its normal screen back
    assert len(log) == EPISODES
    # A loaded machine can slow the arm enough that the person gives up on an attempt (b, after
    # 25 s) and records it again: that attempt counts, its episode is not kept.
    kept = re.search(r"(\d+) episodes kept of (\d+) attempts", recorded["final"])
    assert kept, recorded["final"]
    assert int(kept.group(1)) == EPISODES and EPISODES <= int(kept.group(2)) <= 5, recorded["final"]
    assert "quit before the next episode started" in recorded["final"]


def test_the_screen_showed_the_key_map_counters_and_readout(recorded):
    screens = recorded["screens"]
    first = next(s for s in screens if "READY" in s)
    for shown in ("SPACE", "w/s", "a/d", "r/f", "c/v", "ENTER/y", "q/ESC",  # the key map
                  f"kept 0 of {WANTED} wanted", "attempt 1 of 5", "tcp", "cube_position", "width"):
        assert shown in first, f"{shown!r} not on the screen:\n{first}"
    phases = {View.read(s).phase for s in screens}
    assert {"READY", "RECORDING"} <= phases
    assert any(f"kept 1 of {WANTED} wanted" in s for s in screens)


def test_the_demonstrations_train_a_short_run(recorded, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", MUJOCO_GL="egl")
    result = subprocess.run(
        [sys.executable, "-m", "robostack.cli", "train", "--single-process",
         "--demo-log", str(recorded["log"]), "--demos", str(EPISODES), "--total-steps", "300",
         "--learning-starts", "100", "--eval-every", "300", "--eval-episodes", "1",
         "--progress-every", "100000", "--run-dir", str(tmp_path / "run"),
         "--sac-hidden-dims", "32", "32", "--sac-num-critics", "2"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def test_the_demonstrations_train_over_processes(recorded, tmp_path):
    """The issue's figure: the person's demonstrations train a run over processes (`robostack
    train`, the default mode), and the learner holds exactly them as its demonstrations."""
    from robostack.data.episode_log import EpisodeLog
    from robostack.training.run_state import load_run_state

    run = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", MUJOCO_GL="egl")
    result = subprocess.run(
        [sys.executable, "-m", "robostack.cli", "train", "--demo-log", str(recorded["log"]),
         "--demos", str(EPISODES), "--total-steps", "200", "--learning-starts", "100",
         "--eval-every", "0", "--final-eval-episodes", "1", "--progress-seconds", "5",
         "--run-dir", str(run), "--sac-hidden-dims", "32", "32", "--sac-num-critics", "2"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    log = EpisodeLog(recorded["log"])
    actions = np.concatenate([log.episode(i)["action"] for i in range(len(log))
                              if log.episodes[i]["rl/success"]])
    state = load_run_state(run)
    assert state.counters["demo_episodes"] == EPISODES
    assert len(state.demos) == len(actions)  # the person's steps, no scripted expert's
    np.testing.assert_allclose(state.demos._actions[state.demos._valid], actions, atol=1e-6)
    assert state.counters["env_steps"] >= 200


@dataclass
class TakingOver:
    """A person supervising training: waits for the policy to act, takes over (SPACE), moves
    the arm a few centimetres up or down (r/f: down when the policy left it near the top of
    the workspace, where up cannot move it), hands back (SPACE) and quits (q)."""

    stage: str = "wait"
    start_z: float | None = None
    direction: str = "r"
    looks_since: int = 0
    seen: set = field(default_factory=set)

    def keys(self, view: View) -> str:
        self.seen.add(view.phase)
        self.looks_since += 1
        if view.tcp is None:
            return ""
        if self.stage == "wait" and view.phase == "POLICY":
            self.stage, self.looks_since = "drive", 0
            self.start(view)
            return " "
        if self.stage == "drive":
            if abs(view.tcp[2] - self.start_z) > 0.04:
                self.stage, self.looks_since = "hand back", 0
                return " "
            if view.phase == "POLICY" and self.looks_since > 10:  # a new episode reset the deadman
                self.looks_since = 0
                self.start(view)
                return " "
            return "3" + self.direction if view.speed != 100 else self.direction
        if self.stage == "hand back" and view.phase == "POLICY":
            self.stage = "quit"
            return "q"
        return ""

    def start(self, view: View) -> None:
        self.start_z = view.tcp[2]
        self.direction = "f" if self.start_z > 0.3 else "r"


def test_a_person_takes_over_during_training_over_processes(tmux, tmp_path):
    """`robostack train --intervention keyboard`, the default multi-process mode, in a terminal:
    the launcher holds the keyboard and the live view and relays the device to the actor. The
    person's steps reach the learner as interventions, and q stops the run with a checkpoint."""
    from robostack.training.run_state import load_run_state

    run, exit_file = tmp_path / "run", tmp_path / "exit_code"
    person = TakingOver()
    screens, final = drive_in_terminal(
        tmux, f"train --task reach --intervention keyboard --total-steps 100000 --max-episode-steps 150 "
              f"--demos 0 --learning-starts 50 --eval-every 0 --final-eval-episodes 0 "
              f"--progress-seconds 3 --run-dir {run} --sac-hidden-dims 16 16 --sac-num-critics 2",
        person, exit_file, timeout=200)
    last = screens[-1] if screens else final
    assert exit_file.exists(), f"train did not finish (stage {person.stage}); last screen:\n{last}"
    assert int(exit_file.read_text()) == 0, final
    assert person.stage == "quit" and {"POLICY", "OPERATOR"} <= person.seen, last
    assert "stopped by the operator" in final, final
    first = next(s for s in screens if "POLICY" in s and "goal_position" in s)
    for shown in ("SPACE", "w/s", "r/f", "q/ESC", "tcp", "goal_position"):  # key map and readout
        assert shown in first, f"{shown!r} not on the screen:\n{first}"
    state = load_run_state(run)  # the checkpoint the stop wrote
    assert state.counters["interventions"] >= 3
    assert len(state.demos) == state.counters["interventions"]  # the person's steps are demonstrations
