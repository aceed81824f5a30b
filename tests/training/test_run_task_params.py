"""A run's task parameters (--task-params) are recorded in config.json, reach every robot server
the run starts (in this process, as a subprocess, or the launcher's), and `robostack eval` can
override them, e.g. to check a policy with the table 3 cm higher."""

from __future__ import annotations

import argparse
import json

import pytest

from robostack.training.config import (
    ActorIdentity,
    LaunchOptions,
    RunConfig,
    load_run_config,
    parse_run_options,
)
from robostack.training.rollouts import open_env


def test_task_params_are_checked_before_anything_starts(capsys):
    with pytest.raises(SystemExit) as exc:
        parse_run_options(argparse.ArgumentParser(), ["--task", "reach", "--task-params", "table_hight=0.03"])
    assert exc.value.code == 2 and "table_hight" in capsys.readouterr().err


@pytest.mark.parametrize("transport_kind", ["inprocess", "zmq"])
def test_the_run_s_env_runs_its_task_params(transport_kind):
    config = RunConfig(task="reach", task_params="table_height=0.03,goal_height=0.2", max_episode_steps=20)
    env = open_env(config, seed=0, transport_kind=transport_kind)
    try:
        # The env takes the parameters from its server's hello: they reached the server.
        assert env.task.params.table_height == 0.03 and env.task.params.goal_height == 0.2
        assert env.config.max_episode_steps == 20
    finally:
        env.close()


def test_the_launcher_records_them_and_starts_every_robot_server_with_them(tmp_path):
    from robostack.training.launcher import Launcher

    config = RunConfig(task="reach", task_params="table_height=0.03", run_dir=str(tmp_path),
                       launch=LaunchOptions(actors=2, pin_cpus=False))
    launcher = Launcher(config, say=lambda _: None)
    launcher.prepare_run_dir()
    assert json.loads((tmp_path / "config.json").read_text())["task_params"] == "table_height=0.03"
    for i, server in enumerate(launcher.server_children):
        args = server.args
        assert args[args.index("--task-params") + 1] == "table_height=0.03"
        assert args[args.index("--seed") + 1] == str(config.seed + i)
    # The actors and the learner read them with the rest of the run's configuration.
    assert parse_run_options(argparse.ArgumentParser(), launcher.actor_children[1].args,
                             ActorIdentity)[0] == config


def test_eval_overrides_the_run_s_task_params_without_touching_its_own_result(tmp_path):
    from robostack.commands.evaluate import evaluate_run
    from robostack.training.train import train

    config = RunConfig(task="reach", demos=2, total_steps=30, learning_starts=20, eval_every=30,
                       eval_episodes=1, max_episode_steps=20, progress_every=10**9, run_dir=str(tmp_path))
    config.sac.hidden_dims, config.sac.num_critics, config.sac.batch_size = (16, 16), 2, 16
    train(config, progress=None)
    assert load_run_config(tmp_path / "config.json").task_params == ""
    own = json.loads((tmp_path / "eval.json").read_text())
    result = evaluate_run(tmp_path, episodes=2, task_params="table_height=0.03", say=lambda _: None)
    assert result["task_params"] == "table_height=0.03" and result["episodes"] == 2
    # Its own result file, named for the parameters (NaN != NaN: a time to success without a
    # success is NaN; compare as text).
    [written] = (tmp_path / "evals").glob("eval-*-2ep-table_height_0.03.json")
    assert str(json.loads(written.read_text())) == str(result)
    assert str(json.loads((tmp_path / "eval.json").read_text())) == str(own)  # the run's own stays
