"""record-demos with the autopilot: a log that replays in the mirror and trains."""

import numpy as np
import pytest

from robostack.data.episode_log import EpisodeLog
from robostack.commands.record import RecordConfig, record
from robostack.commands.replay import ReplayConfig, replay


@pytest.fixture(scope="module")
def demo_log(tmp_path_factory):
    root = tmp_path_factory.mktemp("demos")
    result = record(RecordConfig(task="pick_cube", device="autopilot", episodes=3, log=str(root),
                                 transport="inprocess", seed=7), say=lambda s: None)
    assert result["kept"] == 3
    return root


def test_autopilot_demos_are_logged_with_their_reset_seed_and_human_flags(demo_log):
    log = EpisodeLog(demo_log)
    assert len(log) == 3
    for i in range(3):
        meta = log.episodes[i]
        assert meta["rl/success"] and meta["rl/reset_seed"] >= 7
        episode = log.episode(i)
        assert episode["intervention"].all()  # every step came from the operator
        assert episode["next.success"][-1] and episode["next.done"][-1]


def test_a_recorded_demo_replays_in_the_mirror_from_its_logged_seed(demo_log):
    result = replay(str(demo_log), ReplayConfig(episode=1, transport="inprocess"), say=lambda s: None)
    assert result["success"] and result["max_error"] < 0.001


def test_recording_appends_to_an_existing_log(demo_log):
    record(RecordConfig(task="pick_cube", device="autopilot", episodes=1, log=str(demo_log),
                        transport="inprocess", seed=50), say=lambda s: None)
    assert len(EpisodeLog(demo_log)) == 4


def test_recorded_demos_train_a_short_single_process_run(demo_log, tmp_path):
    from robostack.training.config import TrainConfig, default_sac_config
    from robostack.training.train import train

    sac = default_sac_config()
    sac.hidden_dims, sac.num_critics = (32, 32), 2
    history = train(TrainConfig(task="pick_cube", demo_log=str(demo_log), demos=3, total_steps=120,
                                learning_starts=50, eval_every=120, eval_episodes=1,
                                run_dir=str(tmp_path / "run"), sac=sac, progress_every=10_000),
                    progress=None)
    assert history[-1]["env_steps"] == 120  # trained on the logged demos and evaluated


def test_keep_ask_without_a_terminal_says_what_to_use(tmp_path, monkeypatch):
    import io
    import sys

    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    with pytest.raises(SystemExit, match="--keep success"):
        record(RecordConfig(device="autopilot", keep="ask", log=str(tmp_path), transport="inprocess"))


def test_bad_counts_are_usage_errors(capsys):
    from robostack.commands.record import main

    with pytest.raises(SystemExit) as exc:
        main(["--device", "autopilot", "--episodes", "0", "--log", "unused"])
    assert exc.value.code == 2 and "--episodes must be >= 1" in capsys.readouterr().err
