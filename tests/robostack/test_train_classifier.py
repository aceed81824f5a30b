"""From labels to a classifier-rewarded run: `robostack record-labels` (the autopilot in the
mirror), `robostack train-classifier` (file, report, curves), and `robostack train
--reward-classifier` (robot server, actor, learner as processes) logging the classifier's
probability each step beside the simulator's check; a classifier of another task or camera
layout is refused before anything starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from robostack.commands.classifier import TrainClassifierConfig, main, train_classifier
from robostack.commands.labels import LabelConfig, record_labels
from robostack.data.episode_log import EpisodeLog, EpisodeWriter
from robostack.rl.classifier import ClassifierConfig, SuccessClassifier

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MUJOCO_GL": "egl"}
TINY = ClassifierConfig(encoder="conv", steps=40, batch_size=16, latent_dim=8, hidden=16,
                        target_fpr=0.05, calibration_confidence=0.0)


@pytest.fixture(scope="module")
def labels(tmp_path_factory):
    root = tmp_path_factory.mktemp("labels")
    result = record_labels(LabelConfig(task="pick_cube", device="autopilot", episodes=6, log=str(root),
                                       cameras="front", episode_steps=40, transport="inprocess",
                                       view="plain", seed=0), say=lambda *_: None)
    assert result["kept"] == 6 and result["positives"] > 0
    return root


@pytest.fixture(scope="module")
def classifier(labels, tmp_path_factory):
    out = tmp_path_factory.mktemp("classifier") / "pick_cube.pt"
    lines = []
    report = train_classifier(TrainClassifierConfig(labels=str(labels), out=str(out), test_labels=str(labels),
                                                    classifier=TINY), say=lines.append)
    return out, report, lines


def test_train_classifier_writes_the_file_its_report_and_curves(classifier):
    out, report, lines = classifier
    loaded = SuccessClassifier.load(out, task="pick_cube", camera_sizes={"front": (128, 128)})
    assert loaded.threshold == pytest.approx(report["threshold"])
    saved = json.loads(out.with_suffix(".report.json").read_text())
    assert saved["validation"]["negatives"] > 0 and "fpr" in saved["test"]
    assert saved["data"]["episodes"] == 6 and saved["data"]["validation_episodes"] >= 1
    assert all(os.path.getsize(p) > 1000 for p in saved["curves"])
    text = "\n".join(lines)
    assert "said success" in text and "calibrated here for FPR <= 5.0%" in text
    assert f"--reward-classifier {out}" in text


def test_a_log_without_labels_is_refused(tmp_path, capsys):
    features = {"observation.state": {"dtype": "float32", "shape": [2], "names": None},
                "action": {"dtype": "float32", "shape": [2], "names": None}}
    with EpisodeWriter(tmp_path / "demos", fps=10, features=features, task="pick_cube") as writer:
        writer.add_frame({"state": np.zeros(2, np.float32)}, np.zeros(2))
        writer.end_episode({"state": np.zeros(2, np.float32)})
    with pytest.raises(SystemExit, match="not a label log.*record-labels"):
        main(["--labels", str(tmp_path / "demos"), "--out", str(tmp_path / "c.pt")])
    assert main(["--labels", str(tmp_path / "nowhere"), "--out", str(tmp_path / "c.pt")]) == 2
    assert "record-labels" in capsys.readouterr().err


def train(run_dir, classifier_path, *extra):
    command = [sys.executable, "-m", "robostack.cli", "train", "--run-dir", str(run_dir), "--task", "pick_cube",
               "--cameras", "front", "--sac-encoder", "conv", "--reward-classifier", str(classifier_path),
               "--total-steps", "120", "--demos", "0", "--learning-starts", "60", "--eval-every", "0",
               "--final-eval-episodes", "2", "--progress-every", "60", "--sac-batch-size", "8",
               "--sac-hidden-dims", "16", "16", "--checkpoint-every", "60", "--max-episode-steps", "30",
               "--classifier-consecutive", "1", "--classifier-sanity", "false", *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=ENV)


def test_a_classifier_rewarded_run_logs_the_classifier_beside_the_simulator(classifier, tmp_path):
    out, _, _ = classifier
    done = train(tmp_path / "run", out)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = EpisodeLog(tmp_path / "run" / "episodes" / "actor-0")
    episode = log.episode(0)
    p = episode["next.classifier_probability"]
    assert p.dtype == np.float32 and ((0 <= p) & (p <= 1)).all() and len(p) == len(episode["action"])
    assert episode["next.task_success"].dtype == bool
    # The reward is the classifier's: 1 exactly where it said success (k = 1, no sanity check).
    # (--demos 0: this tiny classifier misses the expert's successes, which is refused, below.)
    rewards = episode["next.reward"]
    np.testing.assert_array_equal(rewards, (p >= SuccessClassifier.load(out).threshold).astype(np.float32))
    summaries = [json.loads(line) for line in (tmp_path / "run" / "episodes.jsonl").read_text().splitlines()]
    online = [s for s in summaries if not s.get("demo") and s.get("end") in ("terminated", "truncated")]
    assert online and all({"classifier_tp", "classifier_fp", "classifier_tn", "classifier_fn",
                           "false_success"} <= set(s) for s in online)
    assert all(sum(s[f"classifier_{k}"] for k in ("tp", "fp", "tn", "fn")) == s["length"] for s in online)


@pytest.mark.parametrize("options, problem", [
    (("--cameras", "wrist"), "looks at cameras"),
    (("--task", "reach", "--cameras", "front"), "task 'pick_cube'"),
])
def test_a_classifier_for_another_layout_or_task_is_refused_before_anything_starts(classifier, tmp_path,
                                                                                   options, problem):
    out, _, _ = classifier
    done = train(tmp_path / "run", out, *options)
    assert done.returncode == 2 and problem in done.stderr and "--reward-classifier" in done.stderr
    assert not (tmp_path / "run" / "episodes").exists()
