"""Classifier metrics (robostack/rl/classifier_metrics.py): exact values on small hand-computed
examples, the areas against plain pairwise references, and the threshold calibration meeting
its false-positive target on a held-out set."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from robostack.rl.classifier_metrics import (allowed_false_positives, average_precision, binary_report,
                                             confusion, format_report, plot_curves, pr_curve, roc_auc,
                                             roc_curve, threshold_for_fpr)

LABELS = np.array([1, 1, 0, 1, 0, 0, 1, 0], bool)
SCORES = np.array([0.9, 0.8, 0.8, 0.6, 0.5, 0.4, 0.4, 0.1])
# At or above each distinct score, decreasing: (tp, fp) = 0.9: (1, 0), 0.8: (2, 1), 0.6: (3, 1),
# 0.5: (3, 2), 0.4: (4, 3), 0.1: (4, 4). Four positives, four negatives.


def test_counts_and_rates_by_hand():
    assert confusion(LABELS, SCORES, 0.6) == {"tp": 3, "fp": 1, "tn": 3, "fn": 1}
    r = binary_report(LABELS, SCORES, 0.8)  # >= 0.8: 0.9 (pos), 0.8 (pos), 0.8 (neg)
    assert (r["tp"], r["fp"], r["tn"], r["fn"]) == (2, 1, 3, 2)
    assert (r["positives"], r["negatives"], r["threshold"]) == (4, 4, 0.8)
    assert r["precision"] == pytest.approx(2 / 3) and r["recall"] == 0.5 and r["fpr"] == 0.25
    assert r["accuracy"] == pytest.approx(5 / 8) and r["fnr"] == 0.5
    assert r["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert r["roc_auc"] == pytest.approx(0.75)


def test_curves_by_hand():
    fpr, tpr, thresholds = roc_curve(LABELS, SCORES)
    np.testing.assert_allclose(fpr, [0, 0, 0.25, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(tpr, [0, 0.25, 0.5, 0.75, 0.75, 1, 1])
    np.testing.assert_array_equal(thresholds, [np.inf, 0.9, 0.8, 0.6, 0.5, 0.4, 0.1])
    precision, recall, thresholds = pr_curve(LABELS, SCORES)
    np.testing.assert_allclose(precision, [4 / 8, 4 / 7, 3 / 5, 3 / 4, 2 / 3, 1, 1])
    np.testing.assert_allclose(recall, [1, 1, 0.75, 0.75, 0.5, 0.25, 0])
    np.testing.assert_array_equal(thresholds, [0.1, 0.4, 0.5, 0.6, 0.8, 0.9])


def test_areas_by_hand():
    # Pairs (positive, negative) ranked right, ties 1/2: 4 + 3.5 + 3 + 1.5 of 16.
    assert roc_auc(LABELS, SCORES) == pytest.approx(12 / 16)
    # Step-wise AP: recall steps of 1/4 at precisions 1, 2/3, 3/4, 4/7.
    assert average_precision(LABELS, SCORES) == pytest.approx((1 + 2 / 3 + 3 / 4 + 4 / 7) / 4)
    assert average_precision([0, 1, 1], [0.9, 0.8, 0.7]) == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert average_precision([1, 1, 0], [0.9, 0.8, 0.7]) == 1.0
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert roc_auc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]) == 0.0
    assert roc_auc([1, 0, 1, 0], [0.5] * 4) == 0.5


def test_areas_match_plain_references_with_ties():
    rng = np.random.default_rng(3)
    for _ in range(50):
        labels = rng.random(40) < 0.4
        labels[:2] = True, False  # both classes
        scores = np.round(rng.random(40), 1)  # 11 distinct values: many ties
        pos, neg = scores[labels][:, None], scores[~labels][None, :]
        mann_whitney = np.mean((pos > neg) + 0.5 * (pos == neg))
        assert roc_auc(labels, scores) == pytest.approx(mann_whitney)
        # AP as the mean over positives of the precision at that positive's score (ties together).
        at = [np.sum(labels & (scores >= s)) / np.sum(scores >= s) for s in scores[labels]]
        assert average_precision(labels, scores) == pytest.approx(np.mean(at))


def test_calibration_meets_its_target_on_a_held_out_set():
    rng = np.random.default_rng(0)
    validation, held_out = rng.beta(2, 5, 2_000), rng.beta(2, 5, 100_000)
    threshold = threshold_for_fpr(validation, 0.01)
    assert np.mean(validation >= threshold) <= 0.01
    assert 0.005 <= np.mean(held_out >= threshold) <= 0.015
    positives = rng.beta(5, 2, 10_000)
    assert 0.4 < np.mean(positives >= threshold) < 0.7  # recall is what is left (these overlap)
    # With confidence, the bound holds for the true rate: the held-out rate stays below target.
    cautious = threshold_for_fpr(validation, 0.01, confidence=0.95)
    assert cautious > threshold and np.mean(held_out >= cautious) <= 0.01
    assert np.mean(positives >= cautious) > 0.4
    strict = threshold_for_fpr(validation, 0.0)
    assert not np.any(validation >= strict) and strict == np.nextafter(validation.max(), 1)


def test_calibration_is_the_lowest_threshold_meeting_the_target():
    rng = np.random.default_rng(4)
    for _ in range(200):
        negatives = np.round(rng.random(int(rng.integers(1, 50))), 1)
        target = float(rng.choice([0.0, 0.02, 0.1, 0.3]))
        t = threshold_for_fpr(negatives, target)
        assert np.mean(negatives >= t) <= target
        for lower in np.unique(negatives[negatives < t]):  # every lower candidate breaks it
            assert np.mean(negatives >= lower) > target


def test_clopper_pearson_allowance():
    assert allowed_false_positives(490, 0.01) == 4
    assert allowed_false_positives(490, 0.01, 0.95) == 1  # P(X <= 1) = 0.043, P(X <= 2) = 0.089
    assert allowed_false_positives(100, 0.01, 0.95) == -1  # 0.99^100 = 0.37: cannot certify
    assert threshold_for_fpr(np.linspace(0, 0.5, 100), 0.01, 0.95) > 0.5


def test_ties_and_bad_input():
    tied = [0.5] * 10 + [0.1] * 90
    assert threshold_for_fpr(tied, 0.05) == np.nextafter(0.5, 1)  # the 10 tied go together
    assert threshold_for_fpr(tied, 0.10) == 0.5
    assert threshold_for_fpr(tied, 0.99) == 0.5  # 0.1 would let all 100 through
    with pytest.raises(ValueError, match="no negative scores"):
        threshold_for_fpr([], 0.01)
    with pytest.raises(ValueError, match="NaN"):
        threshold_for_fpr([0.1, float("nan")], 0.01)
    with pytest.raises(ValueError, match="no scores"):
        roc_curve([], [])
    with pytest.raises(ValueError, match="2 labels for 3 scores"):
        confusion([0, 1], [0.1, 0.2, 0.3], 0.5)


def test_no_positives_is_nan_not_an_error():
    r = binary_report([0, 0, 0], [0.1, 0.2, 0.9], 0.5)
    assert np.isnan(r["recall"]) and np.isnan(r["fnr"]) and np.isnan(r["f1"])
    assert np.isnan(r["roc_auc"]) and np.isnan(r["average_precision"])
    assert r["fpr"] == pytest.approx(1 / 3) and r["precision"] == 0.0
    assert "n/a" in format_report(r)
    _, recall, _ = pr_curve([0, 0], [0.1, 0.2])
    np.testing.assert_array_equal(recall, [1, 1, 0])  # sklearn's convention: nothing missed


def test_the_report_text():
    text = format_report(binary_report(LABELS, SCORES, 0.6), "validation")
    lines = text.splitlines()
    assert lines[0] == "validation" and "recall 75.0%" in text and "false-positive rate 25.0%" in text
    assert "ROC AUC 0.7500" in text
    assert lines[-2].split() == ["true", "success", "3", "1"]  # tp, fn
    assert lines[-1].split() == ["true", "failure", "1", "3"]  # fp, tn
    assert "said success" in lines[-3] and "said failure" in lines[-3]


def test_the_curves_png(tmp_path):
    path = plot_curves(tmp_path / "curves.png", LABELS, SCORES, 0.6, "a title")
    image = cv2.imread(str(path))
    assert image.shape == (470, 900, 3) and (image < 250).mean() > 0.01
    assert (image[5, 5] == 255).all()  # white background
    red = (image[..., 2] > 180) & (image[..., 0] < 80) & (image[..., 1] < 80)
    assert red.sum() > 100  # the operating point and its values
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]  # no temp file left
    plot_curves(tmp_path / "curves.png", [0, 0, 0], [0.1, 0.2, 0.9], 0.5)  # one class: still drawn
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]
