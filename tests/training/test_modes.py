"""Every training option means the same in both modes: each test here checks that the
multi-process path (`robostack train`, the default: robot server, actor and learner as
processes) honours one option, from what the run leaves behind (the learner's checkpoint and
buffers, the actor's episode log, episodes.jsonl, TensorBoard events, the printed progress).

Through the command line, as a user runs it; tiny networks and short runs (plumbing, not
learning). Two runs over processes (module fixtures) serve all tests.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from robostack.training.run_state import load_run_state

TINY = ["--task", "reach", "--sac-hidden-dims", "16", "16", "--sac-num-critics", "2",
        "--sac-batch-size", "16", "--utd-ratio", "1", "--learning-starts", "40", "--eval-every", "0",
        "--final-eval-episodes", "1", "--progress-seconds", "1", "--progress-every", "50",
        "--checkpoint-every", "1"]
ENV = dict(os.environ, OMP_NUM_THREADS="1", MUJOCO_GL="egl", PYTHONUNBUFFERED="1")
SEED = 3
EPISODE_STEPS = 15
GOAL = (0.4, 0.05, 0.2)  # goal_x, goal_y, goal_height (above the table)
TASK_PARAMS = f"goal_x={GOAL[0]},goal_y={GOAL[1]},goal_height={GOAL[2]}"
# A progress line, the fields both modes print
PROGRESS = re.compile(r"step +\d+/\d+  episodes +\d+  success\(last 20\) +\d+%  return +-?[\d.]+  "
                      r"updates/s +\d+  UTD [\d.]+/\d+  interventions \d+  critic \S+  alpha \S+")


def robostack(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robostack.cli", *args], capture_output=True,
                          text=True, env=ENV, timeout=timeout, check=False)


def succeeded(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert done.returncode == 0, f"{' '.join(done.args[3:])}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def demo_log(tmp_path_factory) -> Path:
    """Two successful reach episodes recorded with record-demos (the autopilot drives)."""
    log = tmp_path_factory.mktemp("demos") / "log"
    succeeded(robostack("record-demos", "--device", "autopilot", "--task", "reach", "--episodes", "2",
                        "--seed", "11", "--log", str(log), "--view", "plain"))
    return log


@pytest.fixture(scope="module")
def logged_run(demo_log, tmp_path_factory) -> dict:
    """Over processes: --demo-log, --seed, --max-episode-steps, --task-params."""
    run = tmp_path_factory.mktemp("modes") / "run"
    done = succeeded(robostack("train", *TINY, "--run-dir", str(run), "--demo-log", str(demo_log),
                               "--demos", "5", "--seed", str(SEED), "--total-steps", "150",
                               "--max-episode-steps", str(EPISODE_STEPS), "--task-params", TASK_PARAMS))
    return {"run": run, "stdout": done.stdout, "state": load_run_state(run)}


@pytest.fixture(scope="module")
def autopilot_run(tmp_path_factory) -> dict:
    """Over processes: --intervention autopilot with --autopilot-* and --takeover-penalty."""
    run = tmp_path_factory.mktemp("modes") / "hil"
    succeeded(robostack("train", *TINY, "--run-dir", str(run), "--demos", "0", "--total-steps", "90",
                        "--max-episode-steps", str(EPISODE_STEPS), "--intervention", "autopilot",
                        "--autopilot-probability", "1", "--autopilot-start", "0", "0",
                        "--autopilot-duration", "3", "3", "--takeover-penalty", "0.5"))
    return {"run": run, "state": load_run_state(run)}


def episodes_jsonl(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "episodes.jsonl").read_text().splitlines()]


def test_the_learner_trains_on_the_logged_demonstrations_not_the_expert_s(logged_run, demo_log):
    from robostack.data.episode_log import EpisodeLog

    log = EpisodeLog(demo_log)
    logged = [log.transitions(i, images=False)[0] for i in range(len(log))]
    state = logged_run["state"]
    demos = state.demos
    assert state.counters["demo_episodes"] == len(log) == 2  # what the log holds, not --demos 5
    assert len(demos) == sum(len(e["actions"]) for e in logged)  # no expert episode beside them
    valid = demos._valid
    np.testing.assert_allclose(demos._actions[valid], np.concatenate([e["actions"] for e in logged]))
    np.testing.assert_allclose(demos._obs["state"][valid],
                               np.concatenate([e["observations"]["state"][:-1] for e in logged]), atol=1e-6)
    # Nobody recorded expert demonstrations: not the actor, not the learner.
    actor_log = (logged_run["run"] / "logs" / "actor-0.log").read_text()
    assert "expert episodes" not in actor_log and "expert episodes" not in logged_run["stdout"]
    assert f"demonstrations: 2 successful episodes from {demo_log}" in logged_run["stdout"]


def test_a_missing_demo_log_is_a_usage_error_before_anything_starts(tmp_path):
    run = tmp_path / "run"
    done = robostack("train", *TINY, "--run-dir", str(run), "--demo-log", str(tmp_path / "nowhere"),
                     "--total-steps", "50")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "--demo-log" in done.stderr and "nowhere" in done.stderr
    assert not run.exists()  # no config, no logs, no process


def test_max_episode_steps_limits_the_actors_episodes(logged_run):
    episodes = [e for e in episodes_jsonl(logged_run["run"]) if not e.get("demo")]
    assert max(e["length"] for e in episodes) == EPISODE_STEPS
    # The time limit ends them (truncated, not terminated), or success does, sooner.
    timed_out = [e for e in episodes if e["end"] == "truncated"]
    assert timed_out and all(e["length"] == EPISODE_STEPS for e in timed_out)
    assert all(e["length"] < EPISODE_STEPS for e in episodes if e["end"] == "terminated")


def test_task_params_reach_the_robot_server_the_actor_steps(logged_run):
    from robostack.env.spaces import state_layout
    from tasks import make_task

    state = logged_run["state"]
    where = state_layout(make_task("reach"))["goal_position"]
    goals = state.online._obs["state"][state.online._valid][:, where]
    table = make_task("reach").params.table_height
    np.testing.assert_allclose(goals, np.tile([GOAL[0], GOAL[1], table + GOAL[2]], (len(goals), 1)), atol=1e-6)


def test_seed_seeds_the_actor_s_episodes(logged_run):
    from robostack.data.episode_log import EpisodeLog

    log = EpisodeLog(logged_run["run"] / "episodes" / "actor-0")
    # Actor i draws its reset seeds from --seed + i (robostack/training/actor.py).
    expected = np.random.default_rng(SEED + 0 + 7919).integers(2**31)
    assert log.episodes[0]["rl/reset_seed"] == expected


def test_autopilot_protocol_and_takeover_penalty_reach_the_actor(autopilot_run):
    state = autopilot_run["state"]
    episodes = [e for e in episodes_jsonl(autopilot_run["run"]) if not e.get("demo")]
    assert episodes
    # --autopilot-probability 1 --autopilot-start 0 0 --autopilot-duration 3 3: the first three
    # steps of every episode are the autopilot's; they go to the demo buffer too (HIL-SERL).
    assert all(e["interventions"] == 3 for e in episodes if e["length"] >= 3)
    assert state.counters["interventions"] == len(state.demos) >= 3 * len(episodes)
    # --takeover-penalty 0.5 on each takeover's first step (reach's sparse reward is 0 there).
    rewards = state.online._rewards[state.online._valid]
    takeovers = int(np.sum(np.isclose(rewards, -0.5)))
    assert takeovers == len(episodes)  # one per episode, the one the budget cut short included


def test_both_modes_write_tensorboard_events_and_print_the_same_progress_fields(logged_run, demo_log, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    single = succeeded(robostack("train", "--single-process", *TINY, "--run-dir", str(tmp_path / "one"),
                                 "--demo-log", str(demo_log), "--seed", str(SEED), "--total-steps", "100",
                                 "--max-episode-steps", str(EPISODE_STEPS)))
    tags = {}
    for mode, run in (("processes", logged_run["run"]), ("single", tmp_path / "one")):
        events = EventAccumulator(str(run / "tensorboard"))
        events.Reload()
        tags[mode] = set(events.Tags()["scalars"])
        assert {"train/env_steps", "train/success_rate", "train/utd", "train/critic_loss",
                "eval/success_rate"} <= tags[mode], (mode, tags[mode])
        assert (run / "progress.csv").is_file()
    shared = {"train/" + k for k in ("env_steps", "episodes", "success_rate", "return", "updates_per_s",
                                     "env_steps_per_s", "utd", "interventions", "temperature")}
    assert shared <= tags["processes"] & tags["single"]
    for mode, out in (("processes", logged_run["stdout"]), ("single", single.stdout)):
        assert PROGRESS.search(out), f"{mode}: no progress line with the shared fields:\n{out[-2000:]}"


def test_a_finished_stand_alone_actor_cleans_its_spool_and_the_next_one_starts(tmp_path):
    """After a run that ended well, everything the actor sent is in the learner's final
    checkpoint: its spool goes, and an actor of the next run, on the same spool folder, is not
    refused for holding the previous run's batches."""
    from robostack import transport

    spool = tmp_path / "spool"
    server_endpoints = (transport.free_tcp_endpoint(), transport.free_tcp_endpoint())
    server = subprocess.Popen([sys.executable, "-m", "robostack.robot.server", "--task", "reach",
                               "--command-endpoint", server_endpoints[0], "--state-endpoint",
                               server_endpoints[1], "--log-level", "WARNING"], env=ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for run in ("first", "second"):
            learner_endpoints = (transport.free_tcp_endpoint(), transport.free_tcp_endpoint())
            common = [*TINY, "--run-dir", str(tmp_path / run), "--demos", "0", "--total-steps", "60",
                      "--max-episode-steps", str(EPISODE_STEPS)]
            learner = subprocess.Popen(
                [sys.executable, "-m", "robostack.training.learner", *common, "--endpoint",
                 learner_endpoints[0], "--weights-endpoint", learner_endpoints[1]],
                env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            try:
                actor = robostack("actor", *common, "--learner", learner_endpoints[0], "--weights",
                                  learner_endpoints[1], "--robot-server", server_endpoints[0],
                                  "--spool-dir", str(spool))
                assert actor.returncode == 0, f"{run}: {actor.stdout[-2000:]}{actor.stderr[-2000:]}"
                assert learner.wait(120) == 0
            finally:
                if learner.poll() is None:
                    learner.kill()
                    learner.wait(10)
            assert "cleaned (all durable)" in actor.stdout, actor.stdout[-2000:]
            assert not spool.exists(), list(spool.iterdir())
            state = load_run_state(tmp_path / run)
            assert state.ledger["stored"]["actor-0"] == len(state.online) >= 60
    finally:
        server.kill()
        server.wait(10)


def test_the_actor_logs_each_episode_s_supervisor_transitions_with_their_reasons(logged_run):
    from robostack.data.episode_log import EpisodeLog

    log = EpisodeLog(logged_run["run"] / "episodes" / "actor-0")
    events = log.events(0)
    # The reset arms the arm (its transitions land on frame 0), the first command makes it track.
    assert [(e["from_state"], e["to_state"]) for e in events][-1] == ("armed", "tracking"), events
    assert all(e["reason"] for e in events) and events[0]["frame_index"] == 0


def test_the_actor_acts_with_the_learner_s_signed_weights(logged_run):
    # Weights messages are signed with the run's secret; an actor that refused them would act
    # with its initial parameters for the whole run (weights_version -1).
    episodes = [e for e in episodes_jsonl(logged_run["run"]) if not e.get("demo")]
    assert max(e["weights_version"] for e in episodes) >= 1, episodes
