"""The two training modes share one run directory: each resumes the other's checkpoints, `robostack
eval` reads both, and a fresh run (--resume false) never leaves a previous run's state behind, not
in one process and not when the launcher restarts a crashed learner.

Through the command line, as a user runs it; tiny networks and short episodes (plumbing, not
learning).
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

from robostack.rl.checkpoint import load_latest_checkpoint
from robostack.training.run_dir import METRICS_FIELDS, read_csv, read_summary
from robostack.training.run_state import load_run_state

TINY = ["--task", "reach", "--max-episode-steps", "20", "--demos", "2", "--sac-hidden-dims", "16", "16",
        "--sac-num-critics", "2", "--sac-batch-size", "16", "--utd-ratio", "1",
        "--learning-starts", "20", "--eval-every", "0", "--eval-episodes", "1",
        "--progress-every", "1000", "--checkpoint-every", "1", "--progress-seconds", "2"]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def robostack(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "robostack.cli", *args], capture_output=True,
                          text=True, env=ENV, timeout=timeout, check=False)
    assert done.returncode == 0, f"robostack {' '.join(args)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def assert_consistent(run_dir: Path, at_least: int) -> int:
    """The run's newest checkpoint holds at least `at_least` env steps, each once (actors may
    overshoot the budget by a batch), and metrics.csv has the one schema of both modes. Returns
    the checkpoint's env steps."""
    state = load_run_state(run_dir)
    assert state.counters["env_steps"] == len(state.online) >= at_least
    assert (run_dir / "metrics.csv").read_text().splitlines()[0].split(",") == METRICS_FIELDS
    return state.counters["env_steps"]


def assert_eval_reads(run_dir: Path, env_steps: int) -> None:
    robostack("eval", "--run", str(run_dir), "--episodes", "1", timeout=120)
    [written] = (run_dir / "evals").glob("eval-*-1ep.json")  # its own file, not the run's eval.json
    result = json.loads(written.read_text())
    assert result["episodes"] == 1 and result["env_steps"] == env_steps


@pytest.mark.timeout(600)
def test_single_process_then_over_processes_then_eval(tmp_path):
    run = tmp_path / "run"
    robostack("train", "--single-process", *TINY, "--run-dir", str(run), "--total-steps", "40")
    assert assert_consistent(run, 40) == 40
    robostack("train", *TINY, "--run-dir", str(run), "--total-steps", "70", "--final-eval-episodes", "1")
    assert read_summary(run, "learner")["resumed_from"]["env_steps"] == 40
    steps = assert_consistent(run, 70)
    assert [int(r["env_steps"]) for r in read_csv(run / "metrics.csv")][:2] == [0, 40]  # kept
    assert json.loads((run / "eval.json").read_text())["env_steps"] == steps  # the final evaluation
    assert_eval_reads(run, steps)


@pytest.mark.timeout(600)
def test_over_processes_then_single_process_then_eval(tmp_path):
    run = tmp_path / "run"
    robostack("train", *TINY, "--run-dir", str(run), "--total-steps", "40", "--final-eval-episodes", "0")
    steps = assert_consistent(run, 40)
    robostack("train", "--single-process", *TINY, "--run-dir", str(run), "--total-steps", "70")
    assert read_summary(run, "train")["resumed_from"]["env_steps"] == steps
    assert assert_consistent(run, 70) == 70
    assert_eval_reads(run, 70)


def test_single_process_fresh_run_replaces_the_previous_one(tmp_path):
    """--single-process --resume false on a used run directory: the new run's checkpoints are
    the ones kept and evaluated; the old run is moved aside whole."""
    from robostack.commands.evaluate import evaluate_run
    from robostack.training.config import RunConfig
    from robostack.training.train import train

    def config(**changes):
        config = RunConfig(task="reach", demos=2, learning_starts=20, eval_every=30, eval_episodes=1,
                           max_episode_steps=20, progress_every=10**9, run_dir=str(tmp_path), **changes)
        config.sac.hidden_dims, config.sac.num_critics, config.sac.batch_size = (16, 16), 2, 16
        return config

    train(config(total_steps=90), progress=None)
    train(config(total_steps=30, resume=False), progress=None)
    assert load_latest_checkpoint(tmp_path).state["env_steps"] == 30
    assert evaluate_run(tmp_path, episodes=1, say=lambda _: None)["env_steps"] == 30
    [old] = list(tmp_path.glob("replaced-*"))
    assert load_latest_checkpoint(old).state["env_steps"] == 90
    assert [r["env_steps"] for r in read_csv(old / "metrics.csv")] == ["0", "30", "60", "90"]


@pytest.mark.timeout(600)
def test_a_learner_restarted_after_a_crash_resumes_a_fresh_run(tmp_path):
    """`robostack train --resume false` (what `make demo` runs) moves the previous run aside once;
    the learner it restarts after kill -9 resumes this run's checkpoint instead of moving the run
    aside again and starting from zero."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "previous-run.txt").write_text("the run before")
    log = open(tmp_path / "train.log", "wb")
    train = subprocess.Popen([sys.executable, "-m", "robostack.cli", "train", *TINY, "--run-dir", str(run),
                              "--resume", "false", "--total-steps", "300", "--final-eval-episodes", "0"],
                             stdout=log, stderr=subprocess.STDOUT, env=ENV)
    try:
        deadline = time.monotonic() + 180
        while _checkpointed_steps(run) < 60:
            assert train.poll() is None and time.monotonic() < deadline, (tmp_path / "train.log").read_text()[-3000:]
            time.sleep(0.3)
        os.kill(json.loads((run / "processes.json").read_text())["learner"], signal.SIGKILL)
        assert train.wait(300) == 0, (tmp_path / "train.log").read_text()[-3000:]
    finally:
        if train.poll() is None:
            train.kill()
        log.close()
    [previous] = list(run.glob("replaced-*"))  # moved aside once, before any process started
    assert (previous / "checkpoints" / "previous-run.txt").read_text() == "the run before"
    restarts = read_summary(run, "launcher")["restarts"]
    # Killed after it told the actor "done" and before its final checkpoint, the learner comes
    # back short of its budget: the launcher then restarts the actor too, to resend (ci19).
    resent = "no learner checkpoint holds yet; restarting it" in (tmp_path / "train.log").read_text()
    assert restarts == ({"learner": 1, "actor-0": 1} if resent else {"learner": 1}), restarts
    assert read_summary(run, "learner")["resumed_from"]["env_steps"] >= 60
    state = load_run_state(run)
    assert state.counters["env_steps"] == len(state.online) >= 300  # each online step once
    # The actor's one sequence covers its demonstrations too: every transition it sent is held.
    assert sum(state.ledger["stored"].values()) == len(state.online) + len(state.demos)
    assert state.ledger["lost"] == {}


def _checkpointed_steps(run_dir: Path) -> int:
    try:
        checkpoint = load_latest_checkpoint(run_dir)
    except Exception:  # noqa: BLE001 - the placeholder of the previous run, or a save in flight
        return -1
    return -1 if checkpoint is None else int(checkpoint.state["env_steps"])
