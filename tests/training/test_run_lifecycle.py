"""A run's life as the person at the terminal sees it: options checked before anything starts,
resuming refused when the settings differ, a fresh run moving the old one aside whole, Ctrl-C
leaving a checkpoint to resume from, stand-alone evaluations that never overwrite each other,
and `robostack runs` saying where every run stands.

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

from robostack.training.run_dir import read_csv
from robostack.training.run_state import load_run_state

TINY = ["--task", "reach", "--max-episode-steps", "20", "--demos", "1", "--sac-hidden-dims", "16", "16",
        "--sac-num-critics", "2", "--sac-batch-size", "16", "--utd-ratio", "1",
        "--learning-starts", "20", "--eval-every", "0", "--eval-episodes", "1",
        "--progress-every", "10", "--progress-seconds", "2"]
ENV = dict(os.environ, OMP_NUM_THREADS="1", MUJOCO_GL="egl", PYTHONUNBUFFERED="1")


def robostack(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robostack.cli", *args], capture_output=True,
                          text=True, env=ENV, timeout=timeout, check=False)


def ok(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert done.returncode == 0, f"{' '.join(done.args[3:])}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished single-process run of 40 steps (its final evaluation: 1 episode)."""
    run = tmp_path_factory.mktemp("lifecycle") / "run"
    ok(robostack("train", "--single-process", *TINY, "--run-dir", str(run), "--total-steps", "40"))
    return run


# --- options ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("option, value, words", [
    (["--demo-fraction"], "1.5", "between 0 and 1"),
    (["--sac-discount"], "0.0", "in (0, 1]"),
    (["--total-steps"], "0", ">= 1"),
    (["--actors"], "0", ">= 1"),
    (["--sac-hidden-dims"], "16 -4", "each of them"),
])
def test_an_out_of_range_option_is_a_usage_error_before_anything_exists(tmp_path, option, value, words, capsys):
    # In this process, through the entry point's main(): the check runs before any process
    # starts, so a subprocess per case (10 torch imports) would test nothing more. The one below
    # goes through a real `robostack train` process.
    from robostack.cli import main

    for mode in ([], ["--single-process"]):
        run = tmp_path / ("one" if mode else "many")
        with pytest.raises(SystemExit) as exited:
            main(["train", *mode, "--task", "reach", "--run-dir", str(run), *option, *value.split()])
        stderr = capsys.readouterr().err
        assert exited.value.code == 2, stderr
        assert f"{option[0]} {value}: must be" in stderr and words in stderr, stderr
        assert not run.exists()  # no config, no logs, no process


def test_a_usage_error_from_the_command_line_exits_2_without_a_traceback(tmp_path):
    for mode in ([], ["--single-process"]):
        run = tmp_path / ("one" if mode else "many")
        done = robostack("train", *mode, "--task", "reach", "--run-dir", str(run), "--demo-fraction", "1.5")
        assert done.returncode == 2, done.stdout + done.stderr
        assert "--demo-fraction 1.5: must be" in done.stderr and "between 0 and 1" in done.stderr
        assert "Traceback" not in done.stderr
        assert not run.exists()


# --- resuming ----------------------------------------------------------------------------------------

def test_resuming_with_other_settings_is_refused_with_the_differences_and_two_ways_out(trained):
    before = (trained / "config.json").read_text()
    done = robostack("train", "--single-process", *TINY, "--run-dir", str(trained), "--total-steps", "40",
                     "--sac-hidden-dims", "32", "32", "--seed", "5")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "recorded with other settings" in done.stderr
    assert "--sac-hidden-dims  recorded 16 16, given 32 32" in done.stderr
    assert "--seed" in done.stderr and "recorded 0, given 5" in done.stderr
    assert "--run-dir OTHER_DIR" in done.stderr and "--resume false" in done.stderr
    assert (trained / "config.json").read_text() == before  # nothing of the run was touched
    # Over processes, the same refusal before any process starts.
    done = robostack("train", *TINY, "--run-dir", str(trained), "--total-steps", "40", "--seed", "5")
    assert done.returncode == 2 and "recorded 0, given 5" in done.stderr, done.stdout + done.stderr
    assert not (trained / "logs").exists() and (trained / "config.json").read_text() == before


def test_a_longer_budget_resumes_the_run(tmp_path):
    run = tmp_path / "run"
    ok(robostack("train", "--single-process", *TINY, "--run-dir", str(run), "--total-steps", "30",
                 "--final-eval-episodes", "0"))
    # --total-steps and the evaluation cadence may change on resume.
    ok(robostack("train", "--single-process", *TINY, "--run-dir", str(run), "--total-steps", "50",
                 "--final-eval-episodes", "0", "--progress-every", "25"))
    state = load_run_state(run)
    assert state.counters["env_steps"] == len(state.online) == 50
    assert not list(run.glob("replaced-*"))


def test_a_fresh_run_moves_everything_of_the_previous_one_aside(tmp_path):
    run = tmp_path / "run"
    ok(robostack("train", "--single-process", *TINY, "--run-dir", str(run), "--total-steps", "30"))
    (run / "episodes").mkdir()
    (run / "episodes" / "note.txt").write_text("an episode log of the old run")
    (run / "my-notes.md").write_text("notes the user kept beside the run")
    old = sorted(p.name for p in run.iterdir())
    ok(robostack("train", "--single-process", *TINY, "--run-dir", str(run), "--total-steps", "20",
                 "--resume", "false", "--seed", "4"))
    [previous] = list(run.glob("replaced-*"))
    assert sorted(p.name for p in previous.iterdir()) == old
    assert (previous / "episodes" / "note.txt").is_file() and (previous / "my-notes.md").is_file()
    assert load_run_state(previous).counters["env_steps"] == 30
    assert load_run_state(run).counters["env_steps"] == 20
    assert not (run / "episodes").exists() and not (run / "my-notes.md").exists()


# --- Ctrl-C --------------------------------------------------------------------------------------------

def test_ctrl_c_in_one_process_leaves_a_checkpoint_and_the_same_command_resumes(tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "robostack.cli", "train", "--single-process", *TINY,
               "--run-dir", str(run), "--total-steps", "100000", "--final-eval-episodes", "0"]
    train = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    lines = []
    try:
        deadline = time.monotonic() + 120
        for line in train.stdout:  # wait until it is learning: past step 40
            lines.append(line)
            if line.startswith("step") and int(line.split()[1].split("/")[0]) >= 40:
                break
            assert time.monotonic() < deadline, "".join(lines)
        train.send_signal(signal.SIGINT)
        out, _ = train.communicate(timeout=60)
    finally:
        if train.poll() is None:
            train.kill()
    tail = out.strip().splitlines()
    assert train.returncode == 130, "".join(lines) + out
    assert "Traceback" not in out
    assert "Run the same command to resume" in tail[-1] and "checkpoint" in tail[-1], out
    stopped_at = load_run_state(run).counters["env_steps"]
    assert stopped_at >= 40
    assert json.loads((run / "summary" / "train.json").read_text())["state"] == "stopped"
    # The same command with a smaller budget: it resumes, and has nothing left to do but finish.
    resumed = ok(robostack("train", "--single-process", *TINY, "--run-dir", str(run),
                           "--total-steps", str(stopped_at + 10), "--final-eval-episodes", "0"))
    state = load_run_state(run)
    assert state.counters["env_steps"] == len(state.online) == stopped_at + 10, resumed.stdout[-2000:]


# --- stand-alone evaluations ------------------------------------------------------------------------------

def test_each_evaluation_writes_its_own_file_and_a_metrics_row_naming_it(trained):
    own = (trained / "eval.json").read_text()
    first = ok(robostack("eval", "--run", str(trained), "--episodes", "1", timeout=120))
    second = ok(robostack("eval", "--run", str(trained), "--episodes", "2", timeout=120))
    files = sorted((trained / "evals").glob("eval-*.json"))
    assert len(files) == 2
    for done, path in zip((first, second), files):
        assert f"result in {path}" in done.stdout
    assert {json.loads(p.read_text())["episodes"] for p in files} == {1, 2}
    assert (trained / "eval.json").read_text() == own  # the run's final evaluation stays
    named = [row["standalone_eval"] for row in read_csv(trained / "metrics.csv") if row["standalone_eval"]]
    assert sorted(named) == sorted(str(p.relative_to(trained)) for p in files)


def test_eval_of_a_folder_that_is_no_run_is_a_usage_error(tmp_path):
    done = robostack("eval", "--run", str(tmp_path), "--episodes", "1")
    assert done.returncode == 2 and "not a run directory" in done.stderr, done.stderr
    done = robostack("eval", "--run", str(tmp_path), "--episodes", "0")
    assert done.returncode == 2 and "--episodes 0" in done.stderr, done.stderr


# --- robostack runs ---------------------------------------------------------------------------------------

def test_runs_lists_every_run_of_a_folder_with_its_state(trained, tmp_path):
    folder = tmp_path / "runs"
    folder.mkdir()
    os.symlink(trained, folder / "finished")
    (folder / "empty").mkdir()  # not a run
    stopped = folder / "stopped"
    (stopped / "summary").mkdir(parents=True)
    (stopped / "config.json").write_text(json.dumps({"task": "pick_cube", "mode": "single-process",
                                                     "total_steps": 500}))
    (stopped / "summary" / "train.json").write_text(json.dumps({"state": "stopped", "env_steps": 120}))
    crashed = folder / "crashed"
    (crashed / "summary").mkdir(parents=True)
    (crashed / "config.json").write_text(json.dumps({"task": "reach", "mode": "single-process"}))
    (crashed / "summary" / "train.json").write_text(json.dumps({"state": "running", "pid": 2**22 + 7}))
    (folder / "damaged").mkdir()
    (folder / "damaged" / "config.json").write_text("{not json")

    rows = {Path(r["run"]).name: r for r in json.loads(ok(robostack("runs", str(folder), "--json")).stdout)}
    assert rows["finished"]["state"] == "finished" and rows["finished"]["env_steps"] == 40
    assert rows["finished"]["task"] == "reach" and rows["finished"]["success_rate"] is not None
    assert rows["stopped"]["state"] == "stopped" and rows["stopped"]["env_steps"] == 120
    assert rows["crashed"]["state"] == "crashed" and rows["crashed"]["live_pids"] == []
    assert "not a run" in rows["empty"]["note"]
    assert "config.json unreadable" in rows["damaged"]["note"]
    listing = ok(robostack("runs", str(folder))).stdout
    header, *lines = listing.splitlines()
    assert header.split()[:3] == ["RUN", "TASK", "MODE"] and len(lines) == 5
    assert any(line.startswith("stopped") and "120/500" in line and "stopped" in line.split()[4:]
               for line in lines), listing


def test_runs_without_a_runs_folder_says_so(tmp_path):
    done = subprocess.run([sys.executable, "-m", "robostack.cli", "runs"], capture_output=True, text=True,
                          env=ENV, cwd=tmp_path, timeout=60, check=False)
    assert done.returncode == 0 and "no runs yet" in done.stdout, done.stdout + done.stderr
    done = robostack("runs", str(tmp_path / "nowhere"))
    assert done.returncode == 2 and "no such folder" in done.stderr
