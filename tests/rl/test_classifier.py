"""The success classifier (robostack/rl/classifier.py): a seeded tiny training run reaches a stated
accuracy on held-out episodes, its threshold meets the target false-positive rate there, the
file round-trips, and a file for another task, camera layout or a damaged one is refused."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from robostack.rl.classifier import (ClassifierConfig, ClassifierMismatch, SuccessClassifier, crop, fit,
                                     parse_crops, save_classifier, split_by_episode)

torch.set_num_threads(1)


def synthetic_labels(episodes=16, length=24, size=32, seed=0):
    """A bright square on a noisy background: in the upper third of the frame it is a success,
    lower down a failure; the negatives include near misses just below the line."""
    rng = np.random.default_rng(seed)
    n = episodes * length
    frames = rng.integers(0, 60, (n, size, size, 3), dtype=np.uint8)
    labels = np.zeros(n, bool)
    for i in range(n):
        success = rng.random() < 0.35
        top = int(rng.integers(1, size // 3 - 6)) if success else int(rng.integers(size // 3 + 2, size - 7))
        left = int(rng.integers(1, size - 7))
        frames[i, top:top + 6, left:left + 6] = (230, 40, 40)
        labels[i] = success
    return {"front": frames}, labels, np.repeat(np.arange(episodes), length)


FAST = ClassifierConfig(encoder="conv", steps=250, batch_size=32, latent_dim=16, hidden=32, lr=1e-3,
                        image_pad=2, validation_fraction=0.25, target_fpr=0.05, seed=0)


@pytest.fixture(scope="module")
def trained():
    frames, labels, episodes = synthetic_labels()
    return fit(FAST, frames, labels, episodes, task="pick_cube", progress=lambda *_: None)


def test_a_seeded_tiny_run_reaches_the_stated_accuracy_on_held_out_episodes(trained):
    report = trained.validation
    assert report["accuracy"] >= 0.9, report
    assert report["roc_auc"] >= 0.97, report
    # Calibrated there: the validation negatives' false-positive rate is at most the target.
    assert report["fpr"] <= FAST.target_fpr
    negatives = trained.validation_scores[~trained.validation_labels]
    assert np.mean(negatives >= trained.threshold) <= FAST.target_fpr
    assert report["recall"] >= 0.8, report


def test_the_validation_split_is_by_episode():
    labels = np.tile([True, False, False], 20)
    episodes = np.repeat(np.arange(6), 10)
    held = split_by_episode(episodes, labels, 0.34, np.random.default_rng(0))
    for e in range(6):  # no episode on both sides
        assert len(set(held[episodes == e].tolist())) == 1
    assert 1 <= len(np.unique(episodes[held])) <= 3
    with pytest.raises(ValueError, match="at least 2"):
        split_by_episode(np.zeros(10, int), labels[:10], 0.3, np.random.default_rng(0))
    with pytest.raises(ValueError, match="positives and negatives"):
        split_by_episode(episodes, episodes == 0, 0.3, np.random.default_rng(0))  # one positive episode


def test_the_file_round_trips_and_scores_as_trained(trained, tmp_path):
    path = save_classifier(tmp_path / "c.pt", trained)
    loaded = SuccessClassifier.load(path, task="pick_cube", camera_sizes={"front": (32, 32)})
    assert loaded.threshold == trained.threshold and loaded.camera_sizes == {"front": (32, 32)}
    frames, _, _ = synthetic_labels(episodes=2, seed=5)
    batch = loaded.probabilities(frames)
    single = [loaded.probability({"images/front": frames["front"][i], "state": np.zeros(3)}) for i in range(5)]
    np.testing.assert_allclose(batch[:5], single, atol=1e-6)
    assert loaded.content["validation"]["accuracy"] == pytest.approx(trained.validation["accuracy"])
    assert loaded.content["config"]["encoder"] == "conv"


def test_a_classifier_of_another_task_or_camera_layout_is_refused(trained, tmp_path):
    path = save_classifier(tmp_path / "c.pt", trained)
    with pytest.raises(ClassifierMismatch, match="task 'pick_cube'.*'reach'"):
        SuccessClassifier.load(path, task="reach")
    with pytest.raises(ClassifierMismatch, match="looks at cameras"):
        SuccessClassifier.load(path, camera_sizes={"wrist": (32, 32)})
    with pytest.raises(ClassifierMismatch, match="looks at cameras"):
        SuccessClassifier.load(path, camera_sizes={"front": (128, 128)})
    damaged = tmp_path / "damaged.pt"
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    damaged.write_bytes(bytes(blob))
    with pytest.raises(ClassifierMismatch, match="damaged|unreadable"):
        SuccessClassifier.load(damaged)
    torch.save({"format": "robostack.checkpoint"}, tmp_path / "ckpt.pt")
    with pytest.raises(ClassifierMismatch, match="not a robostack success classifier"):
        SuccessClassifier.load(tmp_path / "ckpt.pt")
    with pytest.raises(FileNotFoundError, match="train-classifier"):
        SuccessClassifier.load(tmp_path / "missing.pt")


def test_crops_parse_and_cut():
    assert parse_crops("front:1,2,10,12; wrist:0,0,8,8") == {"front": (1, 2, 10, 12), "wrist": (0, 0, 8, 8)}
    with pytest.raises(ValueError, match="top,left,height,width"):
        parse_crops("front:1,2,3")
    images = np.zeros((4, 32, 32, 3), np.uint8)
    assert crop(images, (1, 2, 10, 12)).shape == (4, 10, 12, 3)
    with pytest.raises(ValueError, match="does not fit"):
        crop(images, (30, 0, 10, 10))


def test_a_frozen_encoder_classifier_reuses_the_policys_features(tmp_path):
    pytest.importorskip("efficientnet_lite_pytorch", reason="pip install 'robostack[vision]'")
    frames, labels, episodes = synthetic_labels(episodes=6, length=10, size=64)
    config = dataclasses.replace(FAST, encoder="efficientnet-lite0", steps=30, augment_views=2)
    classifier = SuccessClassifier.load(save_classifier(tmp_path / "c.pt", fit(
        config, frames, labels, episodes, progress=lambda *_: None)))
    image = frames["front"][0]
    features = classifier.inputs("front", image[None]).permute(0, 2, 3, 1)[0].numpy()  # (h, w, C)
    from_pixels = classifier.probability({"images/front": image})
    classifier.features_layer = config.encoder_layer
    # Reused: the result comes from the features alone (no pixels in the observation).
    assert classifier.probability({"features/front": features}) == pytest.approx(from_pixels, abs=1e-3)
    classifier.features_layer = None  # another cut: it needs the pixels
    with pytest.raises(KeyError, match="images/front"):
        classifier.probability({"features/front": features})
