"""`robostack train --arm-server`'s options (robostack/training/config.py LaunchOptions): what
is refused before anything starts, and what the launcher hands its processes. The run itself,
on franky-sim: tests/hardware/test_franka_end_to_end.py."""

from __future__ import annotations

import subprocess
import sys

import pytest

from robostack.training.config import LaunchOptions, RunConfig
from robostack.training.launcher import Launcher


@pytest.mark.parametrize("options, message", [
    (dict(arm_server="tcp://arm:5555", actors=2), "one arm, one actor"),
    (dict(arm_camera_server="tcp://arm:5560"), "go with --arm-server"),
    (dict(arm_server="tcp://arm:5555", arm_key="laptop"), "needs --arm-key .* and the servers' public keys"),
    (dict(arm_server="tcp://arm:5555", arm_server_key="arm-pc"), "needs --arm-key"),
])
def test_arm_options_that_cannot_work_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        LaunchOptions(**options)


def test_single_process_training_refuses_an_arm_server(tmp_path):
    result = subprocess.run([sys.executable, "-m", "robostack.cli", "train", "--single-process",
                             "--arm-server", "tcp://127.0.0.1:5555", "--run-dir", str(tmp_path / "run")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "leave out --single-process" in result.stderr, result.stderr
    assert not (tmp_path / "run").exists()


def test_the_launcher_starts_no_mirror_and_points_the_actor_and_the_final_eval_at_the_arm(tmp_path):
    launch = LaunchOptions(arm_server="tcp://127.0.0.1:5555", arm_camera_server="tcp://127.0.0.1:5560",
                           arm_key="laptop", arm_server_key="arm-pc", arm_camera_server_key="arm-pc",
                           pin_cpus=False)
    launcher = Launcher(RunConfig(task="reach", run_dir=str(tmp_path / "run"), launch=launch), say=lambda _: None)
    launcher.run_id = "test"
    launcher.make_children()
    assert launcher.server_children == [] and [c.name for c in launcher.children] == ["learner", "actor-0"]
    argv = launcher.actor_children[0].args
    for option, value in [("--robot-server", "tcp://127.0.0.1:5555"), ("--camera-server", "tcp://127.0.0.1:5560"),
                          ("--actor-key", "laptop"), ("--robot-server-key", "arm-pc"),
                          ("--camera-server-key", "arm-pc")]:
        assert argv[argv.index(option) + 1] == value, (option, argv)
    assert launcher.arm_eval_options() == ["--camera-endpoint", "tcp://127.0.0.1:5560", "--curve-key", "laptop",
                                           "--server-key", "arm-pc", "--camera-server-key", "arm-pc"]
