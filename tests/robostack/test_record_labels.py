"""record-labels: the autopilot's label log in the mirror (every label the simulator's check of
the logged observation, post-success frames, near misses), a person's latch with a scripted
device, and the errors for cameras."""

import re

import numpy as np
import pytest

from robostack.commands.labels import LabelConfig, record_labels
from robostack.data.episode_log import LABEL_FEATURE, EpisodeLog, label_features
from tasks import make_task

STEPS = 45  # pick_cube's expert first succeeds at ~step 24: time for a hold, an undo and a retry


def autopilot(tmp_path, **options) -> tuple[dict, list[str]]:
    lines = []
    config = LabelConfig(**{"task": "pick_cube", "device": "autopilot", "episodes": 3,
                            "log": str(tmp_path), "cameras": "front", "episode_steps": STEPS,
                            "near_miss": 0.0, "empty_grasp": 0.0, "transport": "inprocess", "view": "plain", "seed": 5,
                            **options})
    return record_labels(config, say=lines.append), lines


@pytest.fixture(scope="module")
def label_log(tmp_path_factory):
    root = tmp_path_factory.mktemp("labels")
    result, lines = autopilot(root)
    assert result["kept"] == 3
    return root, result, lines


def state_fields(state: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    """The logged state vector back as named fields (cube_position.0, ... -> cube_position)."""
    fields: dict[str, list] = {}
    for name, value in zip(names, state):
        fields.setdefault(name.rsplit(".", 1)[0] if name[-1].isdigit() else name, []).append(value)
    return {k: np.asarray(v, np.float64) for k, v in fields.items()}


def test_the_label_column_is_the_simulators_check_of_each_logged_observation(label_log):
    root, _, _ = label_log
    log = EpisodeLog(root)
    assert log.features[LABEL_FEATURE] == label_features()[LABEL_FEATURE]
    assert "observation.images.front" in log.features and "observation.images.wrist" not in log.features
    task, names = make_task("pick_cube"), log.features["observation.state"]["names"]
    for i in range(3):
        episode = log.episode(i)
        labels = episode[LABEL_FEATURE]
        assert labels.dtype == bool and len(labels) == STEPS
        # The label of frame t+1 is the outcome the env reported for step t ...
        assert (labels[1:] == episode["next.success"][:-1]).all()
        # ... and every label is the task's success check on the observation logged in its row.
        judged = [task.evaluate(state_fields(s, names)).success for s in episode["observation.state"]]
        assert labels.tolist() == judged
        assert not labels[0]  # the reset's observation: the cube on the table


def test_episodes_run_past_success_and_hold_positives_and_negatives(label_log):
    root, result, _ = label_log
    log = EpisodeLog(root)
    positives = 0
    for i in range(3):
        episode = log.episode(i)
        labels = episode[LABEL_FEATURE]
        first = int(np.argmax(labels))
        assert labels.any() and first < STEPS - 5  # succeeded, and frames after success logged
        assert not labels[first:].all()  # the autopilot undid the success: near-miss negatives
        # The env terminated at success; the episode went on regardless (terminated is logged).
        assert episode["next.done"][first - 1] and len(labels) == STEPS
        positives += int(labels.sum())
    assert result["positives"] == positives and result["negatives"] == 3 * STEPS - positives
    assert 0 < positives < 3 * STEPS


def test_each_episode_records_its_seed_label_source_and_plan(label_log):
    root, _, _ = label_log
    log = EpisodeLog(root)
    for i in range(3):
        meta = log.episodes[i]
        assert meta["rl/reset_seed"] == 5 + i
        assert meta["rl/label_source"] == "simulator"
        assert meta["rl/label_plan"].startswith("undo: ")
    # One camera's frames, decoded: the images the labels are about.
    frames = log.episode(0, video=True)["observation.images.front"]
    assert frames.shape == (STEPS, 128, 128, 3) and frames.std() > 5


def test_progress_lines_count_each_episode_and_check_the_guidance(label_log):
    root, result, lines = label_log
    log = EpisodeLog(root)
    for i in range(3):
        labels = log.episode(i)[LABEL_FEATURE]
        p = int(labels.sum())
        assert any(line.startswith(f"episode {i}: {p} positive, {STEPS - p} negative frames "
                                   "(label source simulator") for line in lines), lines
    total = result["positives"]
    assert f"totals: {total} positive, {3 * STEPS - total} negative frames in 3 episodes" in lines
    assert any(line.startswith("below the guidance of 200 positive frames: record about ") for line in lines)
    assert result["guidance"] == [line for line in lines if line in result["guidance"]]


def test_near_miss_episodes_stop_the_expert_before_success(tmp_path):
    result, lines = autopilot(tmp_path, near_miss=1.0, episodes=2)
    assert result["kept"] == 2 and result["positives"] == 0
    log = EpisodeLog(tmp_path)
    names = log.features["observation.state"]["names"]
    for i in range(2):
        episode = log.episode(i)
        assert not episode[LABEL_FEATURE].any() and not episode["next.success"].any()
        assert log.episodes[i]["rl/label_plan"].startswith("near miss: holds after ")
        # It holds still with the gripper closed: the last frames' actions move nothing.
        assert np.abs(episode["action"][-10:, :3]).max() == 0 and (episode["action"][-10:, 3] == 1).all()
        final = state_fields(episode["observation.state"][-1], names)
        assert final["gripper_width"][0] < 0.07  # closed on the cube (open: 0.08 m)
    assert any("negatives are inf" in line or "x the positives" in line for line in lines)


def test_appending_with_the_same_cameras_continues_the_log(tmp_path):
    autopilot(tmp_path, episodes=1, episode_steps=5)
    result, lines = autopilot(tmp_path, episodes=1, episode_steps=5, seed=9)
    log = EpisodeLog(tmp_path)
    assert len(log) == 2 and log.episodes[1]["rl/reset_seed"] == 9
    assert "totals: 0 positive, 10 negative frames in 2 episodes" in lines  # the whole log


def test_an_unknown_camera_is_named_with_the_ones_there(tmp_path):
    with pytest.raises(SystemExit, match=r"no camera side on the robot server \(task pick_cube\): "
                                         r"it has front, wrist"):
        autopilot(tmp_path, cameras="front,side")
    assert not (tmp_path / "meta").exists()  # nothing was written


def test_bad_options_are_usage_errors(capsys):
    from robostack.commands.labels import main

    with pytest.raises(SystemExit) as exc:
        main(["--near-miss", "1.5", "--log", "unused"])
    assert exc.value.code == 2 and "--near-miss and --empty-grasp are shares of the episodes, in [0, 1]" in capsys.readouterr().err


# --- a person, with a scripted stand-in for the keyboard ----------------------------------------
class ScriptedPerson:
    """One scripted reading per read() (the last one repeats), the keyboard's key map."""

    name = "keyboard"
    start_hint = "press SPACE"

    def __init__(self, script):
        self.script, self.closed = list(script), False

    def read(self):
        return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    def controls(self):
        from hardware.teleop.keyboard import keyboard_controls
        return keyboard_controls()

    def close(self):
        self.closed = True


def reading(**events):
    from hardware.teleop.base import TeleopReading
    return TeleopReading(timestamp=0.0, **events)


def forward(**events):
    return reading(intervene=True, translation=np.array([0.3, 0.0, 0.0]), **events)


def test_a_persons_keys_latch_the_label_and_re_record_drops_the_episode(tmp_path):
    from robostack.env.teleop_view import PlainView

    script = ([forward()] * 3 + [reading(rerecord=True)]  # start, 2 steps, re-record
              + [forward()]  # attempt 2: the start
              + [forward()] * 3 + [forward(success=True)] + [forward()] * 3 + [forward(failure=True)])
    lines = []
    device = ScriptedPerson(script)
    config = LabelConfig(task="pick_cube", device="keyboard", episodes=1, log=str(tmp_path),
                         cameras="front", episode_steps=8, transport="inprocess", seed=3)
    result = record_labels(config, say=lines.append, view=PlainView(say=lines.append), device=device)
    assert result["kept"] == 1 and result["attempts"] == 2 and device.closed
    assert "attempt 1: re-record, episode dropped" in lines
    log = EpisodeLog(tmp_path)
    assert len(log) == 1
    episode = log.episode(0)
    # Each frame carries the latch's state when it was logged: on at the success key, off at failure.
    assert episode[LABEL_FEATURE].tolist() == [False] * 3 + [True] * 4 + [False]
    assert episode["intervention"].all() and episode["action"][0][0] == pytest.approx(0.3)
    meta = log.episodes[0]
    assert meta["rl/label_source"] == "operator" and meta["rl/reset_seed"] == 4
    assert meta["rl/label_plan"] == "operator"
    assert "SUCCESS: episode 1: frames labelled SUCCESS" in lines
    assert "NO SUCCESS: episode 1: frames labelled not success" in lines
    keys = next(line for line in lines if line.startswith("keys: "))
    assert "ENTER/y label ON: the scene shows success" in keys and "n label OFF" in keys
    assert "episode 0: 4 positive, 4 negative frames (label source operator)" in lines
    assert re.search(r"^totals: 4 positive, 4 negative frames in 1 episodes$", "\n".join(lines), re.M)


def test_empty_grasp_episodes_close_on_nothing_and_wander(tmp_path):
    result, _ = autopilot(tmp_path, empty_grasp=1.0, episodes=2)
    log = EpisodeLog(tmp_path)
    for i in range(2):
        plan = log.episodes[i]["rl/label_plan"]
        assert plan.startswith("empty grasp: closes on nothing after"), plan
        at = int(plan.split("after ")[1].split()[0])
        episode = log.episode(i)
        assert not episode[LABEL_FEATURE].any()  # never a success: the object is not held
        assert (episode["action"][at:, -1] == 1.0).all()  # the gripper closed from there on
        assert np.ptp(episode["action"][at:, :3], axis=0).max() > 0.5  # and the arm wandered
