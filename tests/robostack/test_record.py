"""record-demos with the autopilot: a log that replays in the mirror and trains; and a person's
session (start key, real-time pacing, quit, Ctrl-C, --keep ask) with a scripted device."""

import time

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


def test_the_supervisors_transitions_are_logged_with_their_reasons_and_replay_lists_them(demo_log):
    log = EpisodeLog(demo_log)
    for i in range(3):
        events = log.events(i)
        # Each reset brings the arm to rest and arms it (from armed: record-demos' first reset
        # built the scene; from tracking: the previous episode); the first command tracks.
        assert [(e["frame_index"], e["kind"], e["to_state"]) for e in events] == [
            (0, "supervisor", "armed"), (0, "supervisor", "tracking")], events
        assert events[0]["from_state"] == ("armed" if i == 0 else "tracking")
        assert events[0]["reason"].startswith("reset: ") and events[1]["from_state"] == "armed"
        assert events[1]["reason"] == "command valid for inf s"  # lock-step: no deadline
    lines = []
    replay(str(demo_log), ReplayConfig(episode=2, transport="inprocess"), say=lines.append)
    assert "safety events: 2" in lines
    assert "  frame 0 (0.0 s) supervisor armed -> tracking: command valid for inf s" in lines


def test_transitions_over_a_robot_server_subprocess_reach_the_log(tmp_path):
    # zmq: the robot server in its own process, the state messages over loopback sockets.
    record(RecordConfig(task="reach", device="autopilot", episodes=1, keep="all",
                        max_episode_steps=4, log=str(tmp_path / "log"), transport="zmq", seed=1),
           say=lambda s: None)
    events = EpisodeLog(tmp_path / "log").events(0)
    assert [(e["frame_index"], e["from_state"], e["to_state"]) for e in events] == [
        (0, "armed", "armed"), (0, "armed", "tracking")], events
    assert "reset" in events[0]["reason"]


def test_recording_appends_to_an_existing_log(demo_log):
    record(RecordConfig(task="pick_cube", device="autopilot", episodes=1, log=str(demo_log),
                        transport="inprocess", seed=50), say=lambda s: None)
    assert len(EpisodeLog(demo_log)) == 4


def test_recorded_demos_train_a_short_single_process_run(demo_log, tmp_path):
    from robostack.training.config import RunConfig, default_sac_config
    from robostack.training.train import train

    sac = default_sac_config()
    sac.hidden_dims, sac.num_critics = (32, 32), 2
    history = train(RunConfig(task="pick_cube", demo_log=str(demo_log), demos=3, total_steps=120,
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


# --- a person's session, with a scripted stand-in for the keyboard -------------------------------
class ScriptedPerson:
    """Plays a person at a human device: one scripted reading per read() (the last one repeats),
    the keyboard's key map and start key. `raise_at`: read() number that raises Ctrl-C."""

    name = "keyboard"
    start_hint = "press SPACE"

    def __init__(self, script, raise_at: int | None = None):
        self.script, self.raise_at = list(script), raise_at
        self.reads = self.new_episodes = 0
        self.closed = False

    def read(self):
        self.reads += 1
        if self.raise_at is not None and self.reads >= self.raise_at:
            raise KeyboardInterrupt
        return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    def controls(self):
        from hardware.teleop.keyboard import keyboard_controls
        return keyboard_controls()

    def new_episode(self):
        self.new_episodes += 1

    def close(self):
        self.closed = True


def reading(**events):
    from hardware.teleop.base import TeleopReading
    return TeleopReading(timestamp=0.0, **events)


def forward(**events):
    return reading(intervene=True, translation=np.array([0.5, 0.0, 0.0]), **events)


def person_session(tmp_path, script, raise_at=None, **options):
    from robostack.env.teleop_view import PlainView

    lines = []
    device = ScriptedPerson(script, raise_at)
    config = RecordConfig(task="pick_cube", device="keyboard", episodes=1, log=str(tmp_path / "log"),
                          transport="inprocess", seed=3, **options)
    started = time.monotonic()
    result = record(config, view=PlainView(say=lines.append), device=device)
    return result, lines, device, time.monotonic() - started


def test_a_person_starts_with_the_deadman_and_the_mirror_steps_in_real_time(tmp_path):
    # 5 readings before SPACE (READY: nothing moves), 10 driving steps, then ENTER (success label)
    script = [reading()] * 5 + [forward()] * 10 + [forward(success=True)]
    result, lines, device, elapsed = person_session(tmp_path, script)
    assert result["kept"] == 1 and device.closed and device.new_episodes == 1
    episode = EpisodeLog(tmp_path / "log").episode(0)
    # The READY readings did not step the env; the first deadman reading is the start itself.
    assert len(episode["action"]) == 10
    assert episode["intervention"].all() and episode["next.success"][-1]
    assert episode["action"][0][0] == pytest.approx(0.5)
    # 16 readings at the 10 Hz policy rate of wall-clock time; unpaced this lock-step mirror
    # takes ~30 ms for them
    assert elapsed >= 1.4
    assert "READY: press SPACE to start episode 1 (attempt 1)" in lines
    keys = next(line for line in lines if line.startswith("keys: "))
    assert "SPACE start" in keys and "w/s" in keys and "q/ESC quit" in keys and "ENTER/y end" in keys
    assert "i/k" not in keys  # pick_cube holds the orientation: no rotation keys shown
    assert any("starting the robot server" in line and "done in" in line for line in lines)


def test_quit_during_an_episode_drops_it_and_keeps_the_log(tmp_path):
    script = [forward()] * 3 + [reading(stop=True)]
    result, lines, _, _ = person_session(tmp_path, script)
    assert result == {"kept": 0, "attempts": 1, "log": str(tmp_path / "log"), "stopped": True}
    assert "attempt 1: quit, episode dropped" in lines
    assert len(EpisodeLog(tmp_path / "log")) == 0


def test_ctrl_c_keeps_what_was_recorded(tmp_path):
    script = [forward()] * 3 + [forward(success=True)] + [forward()] * 20
    from robostack.env.teleop_view import PlainView

    lines = []
    device = ScriptedPerson(script, raise_at=8)  # Ctrl-C in the second episode
    config = RecordConfig(task="pick_cube", device="keyboard", episodes=3, log=str(tmp_path / "log"),
                          transport="inprocess", seed=3)
    result = record(config, view=PlainView(say=lines.append), device=device)
    assert result["kept"] == 1 and result["stopped"] and device.closed
    assert any(line.startswith("interrupted (Ctrl-C)") for line in lines)
    log = EpisodeLog(tmp_path / "log")
    assert len(log) == 1 and log.episodes[0]["rl/success"]


def test_keep_ask_is_answered_with_the_device(tmp_path, monkeypatch):
    import sys

    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    # an episode the operator ends as a failure; asked, they keep it with ENTER (success key)
    script = [forward()] * 2 + [forward(failure=True)] + [reading()] * 2 + [reading(success=True)]
    result, lines, _, _ = person_session(tmp_path, script, keep="ask")
    assert result["kept"] == 1
    assert any(line.startswith("KEEP?: keep this failure episode? ENTER/y: keep, n: drop")
               for line in lines)
    assert not EpisodeLog(tmp_path / "log").episodes[0]["rl/success"]


def test_episode_length_is_settable_and_sane_for_a_person(tmp_path):
    from robostack.env.teleop import episode_steps

    assert episode_steps("keyboard", 10.0, 50) == 300  # 30 s at 10 Hz
    assert episode_steps("autopilot", 10.0, 50) == 50  # the task's own
    assert episode_steps("gamepad", 10.0, 50, requested=80) == 80
    result = record(RecordConfig(task="pick_cube", device="autopilot", episodes=1, keep="all",
                                 max_episode_steps=6, log=str(tmp_path / "log"),
                                 transport="inprocess"), say=lambda s: None)
    assert result["kept"] == 1
    episode = EpisodeLog(tmp_path / "log").episode(0)
    assert len(episode["action"]) == 6 and episode["next.truncated"][-1]


def test_new_options_are_validated_and_documented(capsys):
    from robostack.commands.record import main

    for bad, message in ((["--max-episode-steps", "-1"], "--max-episode-steps must be >= 0"),
                         (["--view", "fancy"], "--view must be one of auto, window, terminal, plain"),
                         (["--device", "joystick"], "--device must be one of keyboard")):
        with pytest.raises(SystemExit) as exc:
            main(["--log", "unused", *bad])
        assert exc.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "30 s of policy steps when a person drives" in help_text
    assert "else the terminal redrawn in place" in help_text


def test_cameras_are_recorded_with_their_times_and_replay_re_renders_them(tmp_path):
    """record-demos --cameras front,wrist: one video per camera, each frame's capture time (the
    lock-step state's own); replay re-renders them from the replayed state and compares."""
    result = record(RecordConfig(task="pick_cube", device="autopilot", episodes=1, log=str(tmp_path),
                                 transport="inprocess", seed=7, cameras="front,wrist"), say=lambda s: None)
    assert result["kept"] == 1
    log = EpisodeLog(tmp_path)
    assert sorted(log.video_keys) == ["observation.images.front", "observation.images.wrist"]
    episode = log.episode(0, video=True)
    steps = len(episode["action"])
    for camera in ("front", "wrist"):
        frames, times = episode[f"observation.images.{camera}"], episode[f"timestamp.images.{camera}"]
        assert frames.shape == (steps, 128, 128, 3) and frames.dtype == np.uint8
        # the frame of row t is the observation the action was taken at: time t / 10 Hz
        np.testing.assert_allclose(times, np.arange(steps) / 10.0, atol=1e-9)
    lines = []
    same = replay(str(tmp_path), ReplayConfig(episode=0, transport="inprocess"), say=lines.append)
    other = replay(str(tmp_path), ReplayConfig(episode=0, transport="inprocess", seed=1234,
                                               out=str(tmp_path / "other")), say=lambda s: None)
    for camera in ("front", "wrist"):
        compared = same["cameras"][camera]
        assert compared["frames"] == steps + 1  # with the final observation
        assert compared["max_abs_diff"] < 5.0, compared  # video compression only
        assert (tmp_path / "replays" / f"episode_000000_{camera}_replay.mp4").stat().st_size > 1000
    # a replay from another cube position looks different where the wrist sees the cube
    assert other["cameras"]["wrist"]["mean_abs_diff"] > 3 * same["cameras"]["wrist"]["mean_abs_diff"]
    assert any(line.startswith("camera wrist: logged vs re-rendered") for line in lines)
