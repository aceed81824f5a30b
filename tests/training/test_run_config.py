"""One run configuration: every option once, with help, written to config.json and read back by
the launcher's children, whose command lines say only who they are."""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest

from robostack.training.config import (
    ActorIdentity,
    LaunchOptions,
    LearnerIdentity,
    RunConfig,
    load_run_config,
    parse_run_options,
    write_run_config,
)


def option_fields(cls, prefix=""):
    """(option name, owner class) of every command-line option a config class yields."""
    found = []
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            nested = f.metadata.get("option_prefix", f"{f.name.replace('_', '-')}-")
            found += option_fields(type(default), prefix + nested)
        else:
            found.append((prefix + f.name.replace("_", "-"), cls.__name__))
    return found


def test_no_option_is_repeated_across_the_run_and_the_process_identities():
    options = option_fields(RunConfig) + option_fields(LearnerIdentity) + option_fields(ActorIdentity)
    names = [name for name, _ in options]
    repeated = sorted({name for name in names if names.count(name) > 1})
    assert not repeated, f"options defined twice: {repeated}"
    # What used to be repeated per process now has one home each.
    owners = dict(options)
    assert owners["checkpoint-every"] == "LearnerOptions" and owners["seed"] == "RunConfig"
    assert owners["batch-steps"] == "ActorOptions" and owners["actors"] == "LaunchOptions"
    for shared in ("task", "max-episode-steps", "demos", "demo-noise", "intervention",
                   "takeover-penalty", "task-params", "final-eval-episodes"):
        assert owners[shared] == "RunConfig", shared


def test_every_option_has_help_text():
    parser = argparse.ArgumentParser()
    parse_run_options(parser, [], LearnerIdentity, ActorIdentity)
    bare = [action.option_strings[0] for action in parser._actions
            if action.option_strings and action.dest != "help"
            and (not action.help or action.help.startswith("(default"))]
    assert not bare, f"options without help text: {bare}"


def test_config_json_round_trips_and_command_line_options_override_it(tmp_path):
    config = RunConfig(task="reach", seed=3, run_dir=str(tmp_path), max_episode_steps=20,
                       intervention="autopilot", task_params="goal_height=0.1",
                       launch=LaunchOptions(actors=2))
    config.sac = dataclasses.replace(config.sac, hidden_dims=(16, 16))
    config.autopilot = dataclasses.replace(config.autopilot, start=(1, 4))
    path = write_run_config(config, mode="actor-learner", endpoints={"learner": "tcp://x"})
    assert json.loads(path.read_text())["endpoints"] == {"learner": "tcp://x"}  # beside it
    assert load_run_config(path) == config  # tuples come back as tuples, sections as dataclasses
    again, identity, _ = parse_run_options(argparse.ArgumentParser(),
                                           ["--config", str(path), "--seed", "5", "--actor-id", "a-1"],
                                           ActorIdentity)
    assert again == dataclasses.replace(config, seed=5) and identity.actor_id == "a-1"


def test_a_config_json_of_another_version_keeps_what_it_knows(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({
        "task": "reach", "seed": 2, "learner": {"checkpoint_every": 60.0, "endpoint": "tcp://*:1"},
        "launch": {"actors": 2, "batch_steps": 8}, "no_longer_an_option": 1, "mode": "actor-learner"}))
    config = load_run_config(tmp_path / "config.json")
    assert (config.task, config.seed, config.learner.checkpoint_every, config.launch.actors) == \
        ("reach", 2, 60.0, 2)


def test_launcher_children_get_the_config_file_and_their_identity_only(tmp_path):
    from robostack.training.launcher import Launcher

    config = RunConfig(task="reach", run_dir=str(tmp_path), demos=3, max_episode_steps=20,
                       resume=False, launch=LaunchOptions(actors=2, pin_cpus=False))
    launcher = Launcher(config, say=lambda _: None)
    launcher.prepare_run_dir()
    identity_options = {f"--{name}" for name, _ in option_fields(LearnerIdentity) + option_fields(ActorIdentity)}
    for child in [launcher.learner, *launcher.actor_children]:
        options = {arg for arg in child.args if arg.startswith("--")}
        assert options - identity_options == {"--config"} | ({"--resume"} if child is launcher.learner else set())
        assert child.args[child.args.index("--config") + 1] == str(tmp_path / "config.json")
    parsed = [parse_run_options(argparse.ArgumentParser(), child.args, ActorIdentity)
              for child in launcher.actor_children]
    assert [p[0] for p in parsed] == [config, config]  # every actor runs the same configuration
    assert [(p[1].index, p[1].evaluator) for p in parsed] == [(0, True), (1, False)]
    learner_config, learner, _ = parse_run_options(argparse.ArgumentParser(), launcher.learner.args,
                                                   LearnerIdentity)
    # The learner always resumes: a checkpoint it finds was written by this run before a crash.
    assert learner_config == dataclasses.replace(config, resume=True)
    assert learner.endpoint == launcher.learner_endpoint


def test_invalid_values_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as exc:
        parse_run_options(argparse.ArgumentParser(), ["--intervention", "joystick"])
    assert exc.value.code == 2 and "'joystick'" in capsys.readouterr().err
