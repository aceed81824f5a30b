"""Classifier metrics (robostack/rl/classifier_metrics.py): exact values on small hand-computed
examples, and the threshold calibration meeting its false-positive target on a held-out set."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from robostack.rl.classifier_metrics import (allowed_false_positives, average_precision, binary_report,
                                             confusion, format_report, plot_curves, pr_curve, roc_auc,
                                             roc_curve, threshold_for_fpr)

LABELS = np.array([1, 1, 0, 1, 0, 0, 1, 0], bool)
SCORES = np.array([0.9, 0.8, 0.8, 0.6, 0.5, 0.4, 0.4, 0.1])


def test_counts_and_rates_by_hand():
    assert confusion(LABELS, SCORES, 0.6) == {"tp": 3, "fp": 1, "tn": 3, "fn": 1}
    r = binary_report(LABELS, SCORES, 0.8)  # >= 0.8: 0.9 (pos), 0.8 (pos), 0.8 (neg)
    assert (r["tp"], r["fp"], r["tn"], r["fn"]) == (2, 1, 3, 2)
    assert r["precision"] == pytest.approx(2 / 3) and r["recall"] == 0.5 and r["fpr"] == 0.25
    assert r["accuracy"] == pytest.approx(5 / 8) and r["fnr"] == 0.5


def test_areas_by_hand():
    # Pairs (positive, negative) ranked right, ties 1/2: 4 + 3.5 + 3 + 1.5 of 16.
    assert roc_auc(LABELS, SCORES) == pytest.approx(12 / 16)
    # Step-wise AP: recall steps of 1/4 at precisions 1, 2/3, 3/4, 4/7.
    assert average_precision(LABELS, SCORES) == pytest.approx((1 + 2 / 3 + 3 / 4 + 4 / 7) / 4)
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert roc_auc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]) == 0.0
    assert roc_auc([1, 0, 1, 0], [0.5] * 4) == 0.5
    fpr, tpr, thresholds = roc_curve(LABELS, SCORES)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1 and thresholds[0] == np.inf
    precision, recall, _ = pr_curve(LABELS, SCORES)
    assert precision[-1] == 1 and recall[-1] == 0 and recall[0] == 1


def test_calibration_meets_its_target_on_a_held_out_set():
    rng = np.random.default_rng(0)
    validation, held_out = rng.beta(2, 5, 2_000), rng.beta(2, 5, 100_000)
    threshold = threshold_for_fpr(validation, 0.01)
    assert np.mean(validation >= threshold) <= 0.01
    assert 0.005 <= np.mean(held_out >= threshold) <= 0.015
    # With confidence, the bound holds for the true rate: the held-out rate stays below target.
    cautious = threshold_for_fpr(validation, 0.01, confidence=0.95)
    assert cautious > threshold and np.mean(held_out >= cautious) <= 0.01
    positives = rng.beta(5, 2, 10_000)
    assert np.mean(positives >= cautious) > 0.4  # recall is what is left (these overlap a lot)
    assert not np.any(validation >= threshold_for_fpr(validation, 0.0))


def test_clopper_pearson_allowance():
    assert allowed_false_positives(490, 0.01) == 4
    assert allowed_false_positives(490, 0.01, 0.95) == 1  # P(X <= 1) = 0.043, P(X <= 2) = 0.089
    assert allowed_false_positives(100, 0.01, 0.95) == -1  # 0.99^100 = 0.37: cannot certify
    assert threshold_for_fpr(np.linspace(0, 0.5, 100), 0.01, 0.95) > 0.5


def test_ties_and_empty_input():
    assert threshold_for_fpr([0.5] * 10 + [0.1] * 90, 0.05) > 0.5  # the 10 tied go together
    assert threshold_for_fpr([0.5] * 10 + [0.1] * 90, 0.10) == 0.5
    with pytest.raises(ValueError, match="no negative scores"):
        threshold_for_fpr([], 0.01)


def test_no_positives_is_nan_not_an_error():
    r = binary_report([0, 0, 0], [0.1, 0.2, 0.9], 0.5)
    assert np.isnan(r["recall"]) and np.isnan(r["roc_auc"]) and r["fpr"] == pytest.approx(1 / 3)
    assert "n/a" in format_report(r)


def test_the_curves_png(tmp_path):
    path = plot_curves(tmp_path / "curves.png", LABELS, SCORES, 0.6, "a title")
    image = cv2.imread(str(path))
    assert image.shape == (470, 900, 3) and (image < 250).mean() > 0.01
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]  # no temp file left
    text = format_report(binary_report(LABELS, SCORES, 0.6), "validation")
    assert "true success" in text and "said failure" in text
