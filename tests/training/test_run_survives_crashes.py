"""A run survives any crash (issue 11, item 5): the run identity exists before the first
transition, so a learner killed before its first checkpoint comes back as the same run and
takes the actor's spool; any child that exits while the run is unfinished is restarted.

Through the command line, as a user runs it; tiny networks and short episodes (plumbing, not
learning). Every wait is bounded, and every process is killed in teardown.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from robostack import transport
from robostack.training.run_dir import read_summary
from robostack.training.run_state import load_run_state

TINY = ["--task", "reach", "--max-episode-steps", "20", "--demos", "2", "--sac-hidden-dims", "16", "16",
        "--sac-num-critics", "2", "--sac-batch-size", "16", "--utd-ratio", "1",
        "--learning-starts", "20", "--eval-every", "0", "--final-eval-episodes", "0",
        "--progress-every", "50", "--progress-seconds", "2", "--batch-steps", "8"]
ENV = dict(os.environ, OMP_NUM_THREADS="1", MUJOCO_GL="egl", PYTHONUNBUFFERED="1")
STARTUP = 180.0  # s; torch + mujoco imports of four processes on a loaded 2-core machine


class Train:
    """`robostack train` as a subprocess, its output in a log file."""

    def __init__(self, tmp_path: Path, run: Path, *args: str):
        self.run, self.log_path = run, tmp_path / "train.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen([sys.executable, "-m", "robostack.cli", "train", *TINY,
                                         "--run-dir", str(run), *args],
                                        stdout=self._log, stderr=subprocess.STDOUT, env=ENV)

    def text(self) -> str:
        """The end of the output, for failure messages."""
        return self.output()[-4000:]

    def output(self) -> str:
        """All of it, for checks that a line was printed (progress lines can push it far back:
        seen in CI, where a restarted robot server cost the actor a 30 s reset timeout)."""
        return self.log_path.read_text(errors="replace")

    def pids(self) -> dict:
        try:
            return json.loads((self.run / "processes.json").read_text())
        except (OSError, ValueError):
            return {}

    def stats(self) -> dict | None:
        try:
            endpoint = json.loads((self.run / "config.json").read_text())["endpoints"]["learner"]
        except (OSError, KeyError, ValueError):
            return None
        with transport.RequestClient(endpoint, "test", timeout=1.0) as client:
            try:
                return client.request("stats").meta
            except transport.TransportError:
                return None

    def wait_until(self, predicate, what: str, timeout: float = STARTUP):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"train exited before {what}:\n{self.text()}"
            value = predicate()
            if value:
                return value
            time.sleep(0.2)
        pytest.fail(f"not within {timeout} s: {what}\n{self.text()}")

    def finish(self, timeout: float = 300) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"train still running after {timeout} s:\n{self.text()}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._log.close()


@pytest.fixture
def trains():
    started: list[Train] = []
    yield started
    for t in started:
        t.kill()


def checkpoints(run: Path) -> list[Path]:
    return sorted((run / "checkpoints").glob("ckpt_*.pt"))


def assert_every_acknowledged_transition_held_once(run: Path) -> None:
    state = load_run_state(run)
    assert state.ledger["lost"] == {}, state.ledger
    # One sequence per actor over all its streams: every seq it handed out is held once.
    assert sum(state.ledger["stored"].values()) == len(state.online) + len(state.demos)
    assert state.counters["env_steps"] == len(state.online)
    for actor, held in state.ledger["stored"].items():
        summary = read_summary(run, actor)
        assert summary["state"] == "stopped" and summary["last_seq"] == held, summary


@pytest.mark.timeout(600)
def test_a_learner_killed_before_its_first_checkpoint_comes_back_as_the_same_run(tmp_path, trains):
    """kill -9 the learner during the demonstrations, long before its first checkpoint: the
    restarted learner is the same run (run.json), takes the actor's whole spool, and the run
    finishes with every transition held once."""
    run = tmp_path / "run"
    train = Train(tmp_path, run, "--total-steps", "300", "--checkpoint-every", "600")
    trains.append(train)
    run_id = json.loads((train.wait_until(lambda: (run / "run.json").is_file() and run / "run.json",
                                          "run.json written", 60)).read_text())["run"]
    # Some transitions held by the learner (in memory only), none checkpointed.
    train.wait_until(lambda: (train.stats() or {}).get("stored", {}).get("actor-0", 0) >= 8,
                     "the learner holding 8 transitions")
    assert checkpoints(run) == []
    os.kill(train.pids()["learner"], signal.SIGKILL)
    assert train.finish() == 0, train.text()
    assert read_summary(run, "launcher")["state"] == "done"
    assert read_summary(run, "launcher")["restarts"] == {"learner": 1}
    assert read_summary(run, "learner")["run"] == run_id
    assert json.loads((run / "run.json").read_text())["run"] == run_id
    assert "refused" not in train.output()
    assert_every_acknowledged_transition_held_once(run)
    # Episodes the dead learner had logged came again with the resend: each logged once.
    episodes = [json.loads(line) for line in (run / "episodes.jsonl").read_text().splitlines()]
    assert len({(e["actor"], e["last_seq"]) for e in episodes}) == len(episodes)


@pytest.mark.timeout(600)
def test_a_killed_actor_and_a_robot_server_told_to_shut_down_are_restarted(tmp_path, trains):
    """kill -9 the actor: restarted, it plays other episodes than the ones it played (reset
    seeds drawn from a stream of its own). Then a `shutdown` request to the robot server, which
    exits 0: the run is unfinished, so it is restarted, not taken as finished."""
    run = tmp_path / "run"
    train = Train(tmp_path, run, "--total-steps", "400", "--checkpoint-every", "1",
                  "--robot-timeout", "120")
    trains.append(train)
    train.wait_until(lambda: (train.stats() or {}).get("episodes", 0) >= 3, "3 training episodes")
    first_actor = train.pids()["actor-0"]
    os.kill(first_actor, signal.SIGKILL)
    train.wait_until(lambda: (read_summary(run, "actor-0") or {}).get("state") == "running"
                     and read_summary(run, "actor-0")["pid"] != first_actor, "the actor restarted")
    at = (train.stats() or {}).get("episodes", 0)
    train.wait_until(lambda: (train.stats() or {}).get("episodes", 0) >= at + 3,
                     "3 episodes of the restarted actor")
    first_server = train.pids()["robot-server-0"]
    command = json.loads((run / "config.json").read_text())["endpoints"]["robot_servers"][0]
    # The actor holds the server's lease: the local admin socket stops it without one.
    from robostack.robot.lease import admin_endpoint_for

    with transport.RequestClient(admin_endpoint_for(command), "test", timeout=5.0) as client:
        assert client.request("shutdown").kind == "bye"
    assert train.finish() == 0, train.text()
    launcher = read_summary(run, "launcher")
    assert launcher["state"] == "done", launcher
    assert launcher["restarts"] == {"actor-0": 1, "robot-server-0": 1}, train.text()
    assert "robot-server-0 exited (code 0) while the run is unfinished; restarting it" in train.output(), train.text()
    assert train.pids()["robot-server-0"] != first_server
    from robostack.data.episode_log import EpisodeLog

    log = EpisodeLog(run / "episodes" / "actor-0")
    seeds = [log.episodes[i]["rl/reset_seed"] for i in range(len(log))]
    assert len(seeds) >= 6 and len(set(seeds)) == len(seeds), seeds
    assert read_summary(run, "actor-0")["starts"] == 2
    assert_every_acknowledged_transition_held_once(run)


@pytest.mark.parametrize("window, abandoned", [(600.0, True), (0.3, False)])
def test_a_crash_loop_ends_the_run_but_crashes_spread_out_never_do(tmp_path, window, abandoned):
    """--restarts counts the exits within --restart-window s: a process that keeps dying at
    once is a crash loop (the run is abandoned, naming it); one dying now and then is always
    restarted. A real child process that exits 1 at once (a module that cannot be found)."""
    from robostack.training.config import RunConfig
    from robostack.training.launcher import Child, Launcher

    config = RunConfig(task="reach", run_dir=str(tmp_path / "run"))
    config.launch.restarts, config.launch.restart_window, config.launch.pin_cpus = 2, window, False
    lines = []
    launcher = Launcher(config, say=lines.append)
    launcher.log_dir.mkdir(parents=True)
    crashing = Child("robot-server-0", "robostack.no_such_module", [], launcher.log_dir)
    launcher.children = [crashing]
    crashing.start()
    outcome, deadline = None, time.monotonic() + 60
    try:
        while outcome is None and time.monotonic() < deadline and crashing.restarts < 6:
            outcome = launcher.supervise()
            time.sleep(0.35 if window < 1 else 0.05)  # spread out: each exit outside the window
    finally:
        if crashing.poll() is None:
            crashing.process.kill()
    if abandoned:
        assert outcome is not None and "robot-server-0 exited 3 times within 600 s" in outcome, lines
        assert crashing.restarts == 2
    else:
        assert outcome is None and crashing.restarts >= 6, (outcome, lines)


def test_an_actor_told_done_whose_last_transitions_no_checkpoint_holds_is_restarted(tmp_path):
    """Seen in CI: the learner said "done", was killed before its final checkpoint, and came
    back from an older one, 40 steps short of its budget; the actor, told done, had stopped, and
    the launcher took that as finished: the run waited for actors forever. An actor that stops
    with transitions no checkpoint holds (still in its spool) must be restarted to resend them."""
    from types import SimpleNamespace

    from robostack.training.launcher import Launcher
    from robostack.training.run_dir import Summary

    said = []
    actor = SimpleNamespace(name="actor-0", process=SimpleNamespace(pid=os.getpid()))
    launcher = SimpleNamespace(server_children=[], learner=None, run_dir=tmp_path, say=said.append)
    summary = Summary(tmp_path, "actor-0")
    summary.update(state="stopped", stop_reason="the learner reached its step budget", not_durable=40)
    assert not Launcher.finished_on_purpose(launcher, actor)
    assert "40 transitions no learner checkpoint holds yet" in said[-1]
    summary.update(not_durable=0)  # the normal end: the final checkpoint holds everything
    assert Launcher.finished_on_purpose(launcher, actor)
    summary.update(stop_reason="max_steps 300 reached", not_durable=40)  # its own budget: done
    assert Launcher.finished_on_purpose(launcher, actor)
