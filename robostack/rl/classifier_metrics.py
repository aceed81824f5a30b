"""How good a success classifier is, and where its threshold goes: pure numpy (and OpenCV for
the curves PNG).

Convention: a frame is declared a success iff score >= threshold. Curves and areas are as
scikit-learn defines them (roc_curve, precision_recall_curve, roc_auc_score,
average_precision_score), without depending on it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import cv2
import numpy as np


def _scores(scores) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if np.isnan(scores).any():
        # A NaN sorts after every number and compares False with any threshold, so it would
        # silently count as "said failure": refuse it, the classifier upstream is broken.
        raise ValueError(f"{int(np.isnan(scores).sum())} of {scores.size} scores are NaN: "
                         "check the classifier's output (a diverged network, an empty frame)")
    return scores


def _arrays(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels).astype(bool).reshape(-1)
    scores = _scores(scores)
    if labels.shape != scores.shape:
        raise ValueError(f"{labels.size} labels for {scores.size} scores: one label per score")
    return labels, scores


def allowed_false_positives(negatives: int, target_fpr: float, confidence: float = 0.0) -> int:
    """How many of `negatives` validation negatives may score above the threshold. confidence
    0: floor(target * n), the empirical rate. confidence c > 0: the largest k for which seeing
    k false positives still shows, at confidence c, that the true rate is at most the target
    (the one-sided Clopper-Pearson bound: P(X <= k | n, target) <= 1 - c); -1 when even none
    would not (too few negatives to certify the target)."""
    if confidence <= 0:
        return int(np.floor(target_fpr * negatives + 1e-9))
    if target_fpr <= 0:
        return -1
    alpha, cdf, k = 1.0 - confidence, 0.0, -1
    for i in range(negatives + 1):
        cdf += math.exp(math.lgamma(negatives + 1) - math.lgamma(i + 1) - math.lgamma(negatives - i + 1)
                        + i * math.log(target_fpr) + (negatives - i) * math.log1p(-target_fpr))
        if cdf > alpha:
            break
        k = i
    return k


def threshold_for_fpr(negative_scores, target_fpr: float, confidence: float = 0.0) -> float:
    """The LOWEST threshold whose false-positive rate on `negative_scores` is at most
    `target_fpr` (with `confidence` > 0: whose rate is shown to be at most the target at that
    confidence, allowed_false_positives). Lowest, because it maximises recall subject to the
    bound: a false success is what breaks training (the policy learns to produce it), a missed
    one only slows it down. The candidates are the distinct negative scores, so tied negatives
    fall on one side together; where no negative may pass (target 0), the threshold goes just
    above the largest negative (np.nextafter)."""
    negatives = np.sort(_scores(negative_scores))
    if negatives.size == 0:
        raise ValueError("no negative scores to calibrate on: the validation episodes need failures")
    if not 0.0 <= target_fpr < 1.0 or not 0.0 <= confidence < 1.0:
        raise ValueError(f"target_fpr and confidence must be in [0, 1), got {target_fpr}, {confidence}")
    allowed = allowed_false_positives(negatives.size, target_fpr, confidence)  # may score >= t
    # Candidates: each distinct negative score (t = s lets through every negative >= s), and
    # just above the largest one (none let through). The count falls as t rises.
    values = np.unique(negatives)
    above = negatives.size - np.searchsorted(negatives, values, side="left")
    ok = np.flatnonzero(above <= allowed)
    return float(values[ok[0]]) if ok.size else float(np.nextafter(negatives[-1], np.inf))


def confusion(labels, scores, threshold: float) -> dict:
    labels, scores = _arrays(labels, scores)
    said = scores >= threshold
    return {"tp": int(np.sum(said & labels)), "fp": int(np.sum(said & ~labels)),
            "tn": int(np.sum(~said & ~labels)), "fn": int(np.sum(~said & labels))}


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b else float("nan")


def _counts_by_threshold(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, tps, fps): each distinct score, decreasing, with how many positives and
    negatives score at or above it. Tied scores share one threshold, as in sklearn."""
    labels, scores = _arrays(labels, scores)
    if scores.size == 0:
        raise ValueError("no scores: a curve needs at least one labelled frame")
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # the last index of each distinct score
    return s[last], np.cumsum(y)[last], np.cumsum(~y)[last]


def roc_curve(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) as sklearn's roc_curve(drop_intermediate=False): thresholds
    decreasing, the first one +inf (nothing said positive, the point (0, 0)). A rate without
    its class (no negatives for fpr, no positives for tpr) is NaN."""
    thresholds, tps, fps = _counts_by_threshold(labels, scores)
    tps, fps = np.r_[0, tps], np.r_[0, fps]
    return (fps / fps[-1] if fps[-1] else np.full(fps.shape, np.nan),
            tps / tps[-1] if tps[-1] else np.full(tps.shape, np.nan), np.r_[np.inf, thresholds])


def pr_curve(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) as sklearn's precision_recall_curve: thresholds
    increasing, the last point (precision 1, recall 0) without a threshold. Without positives
    recall is 1 everywhere (nothing was missed), as sklearn sets it."""
    thresholds, tps, fps = _counts_by_threshold(labels, scores)
    precision = tps / (tps + fps)  # never 0/0: each threshold lets at least one frame through
    recall = tps / tps[-1] if tps[-1] else np.ones(tps.shape)
    return np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0], thresholds[::-1]


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve (trapezoid): the probability that a random positive scores
    above a random negative, ties counted 1/2. NaN without both classes."""
    labels, _ = _arrays(labels, scores)
    if labels.all() or not labels.any():
        return float("nan")
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def average_precision(labels, scores) -> float:
    """sum_n (R_n - R_{n-1}) P_n over the thresholds (sklearn's step-wise, no interpolation)."""
    labels, _ = _arrays(labels, scores)
    if not labels.any():
        return float("nan")
    precision, recall, _ = pr_curve(labels, scores)
    return float(-np.sum(np.diff(recall) * precision[:-1]))


def binary_report(labels, scores, threshold: float) -> dict:
    """Counts and rates at `threshold` (NaN where undefined), with ROC AUC and AP."""
    labels, scores = _arrays(labels, scores)
    c = confusion(labels, scores, threshold)
    tp, fp, tn, fn = c["tp"], c["fp"], c["tn"], c["fn"]
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return {**c, "positives": tp + fn, "negatives": tn + fp, "threshold": float(threshold),
            "accuracy": _ratio(tp + tn, labels.size), "precision": precision, "recall": recall,
            "fpr": _ratio(fp, fp + tn), "fnr": _ratio(fn, fn + tp),
            "f1": _ratio(2 * precision * recall, precision + recall) if tp else float("nan"),
            "roc_auc": roc_auc(labels, scores), "average_precision": average_precision(labels, scores)}


def _percent(value: float) -> str:
    return "n/a" if value != value else f"{value:.1%}"


def format_report(report: dict, title: str = "") -> str:
    r = report
    lines = [title] if title else []
    lines += [f"  threshold {r['threshold']:.4f}: accuracy {_percent(r['accuracy'])}, precision "
              f"{_percent(r['precision'])}, recall {_percent(r['recall'])}, false-positive rate "
              f"{_percent(r['fpr'])}, false-negative rate {_percent(r['fnr'])}",
              f"  ROC AUC {r['roc_auc']:.4f}, average precision {r['average_precision']:.4f}",
              f"  {'':<14}{'said success':>14}{'said failure':>14}",
              f"  {'true success':<14}{r['tp']:>14}{r['fn']:>14}",
              f"  {'true failure':<14}{r['fp']:>14}{r['tn']:>14}"]
    return "\n".join(lines)


def plot_curves(path, labels, scores, threshold: float, title: str = "") -> Path:
    """A PNG with the ROC (left) and precision-recall (right) curves, the operating point at
    `threshold` marked on both. Written atomically (a temp file renamed into place), so a
    reader never sees half a PNG."""
    labels, scores = _arrays(labels, scores)
    report = binary_report(labels, scores, threshold)
    width, height, top, margin, size = 900, 470, 60, 60, 340
    image = np.full((height, width, 3), 255, np.uint8)
    black, grey, blue, red = (0, 0, 0), (190, 190, 190), (200, 90, 20), (30, 30, 220)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(image, title[:90], (margin, 30), font, 0.6, black, 1, cv2.LINE_AA)

    def panel(x0, xs, ys, point, name, xlabel, ylabel, diagonal):
        def px(x, y):
            return int(round(x0 + x * size)), int(round(top + (1 - y) * size))
        cv2.rectangle(image, px(0, 1), px(1, 0), black, 1, cv2.LINE_AA)
        for t in (0.0, 0.5, 1.0):
            cv2.putText(image, f"{t:g}", (px(t, 0)[0] - 8, top + size + 18), font, 0.4, black, 1, cv2.LINE_AA)
            cv2.putText(image, f"{t:g}", (x0 - 28, px(0, t)[1] + 4), font, 0.4, black, 1, cv2.LINE_AA)
        if diagonal:
            cv2.line(image, px(0, 0), px(1, 1), grey, 1, cv2.LINE_AA)
        ok = np.isfinite(xs) & np.isfinite(ys)
        if ok.sum() >= 2:
            points = np.array([px(x, y) for x, y in zip(xs[ok], ys[ok])], np.int32)
            cv2.polylines(image, [points], False, blue, 2, cv2.LINE_AA)
        if all(np.isfinite(point)):
            cv2.circle(image, px(*point), 6, red, -1, cv2.LINE_AA)
        cv2.putText(image, name, (x0, top - 10), font, 0.5, black, 1, cv2.LINE_AA)
        cv2.putText(image, xlabel, (x0 + size // 2 - 30, top + size + 38), font, 0.45, black, 1, cv2.LINE_AA)
        cv2.putText(image, ylabel, (x0 - 55, top - 10 + size // 2), font, 0.45, black, 1, cv2.LINE_AA)

    fpr, tpr, _ = roc_curve(labels, scores)
    precision, recall, _ = pr_curve(labels, scores)
    recall_at, fpr_at = report["recall"], report["fpr"]
    panel(margin + 20, fpr, tpr, (fpr_at, recall_at), f"ROC, AUC {report['roc_auc']:.3f}",
          "false-positive rate", "TPR", True)
    panel(margin + 20 + size + 90, recall, precision, (recall_at, report["precision"]),
          f"precision-recall, AP {report['average_precision']:.3f}", "recall", "prec.", False)
    cv2.putText(image, f"threshold {threshold:.3f}: FPR {_percent(fpr_at)}, recall {_percent(recall_at)}, "
                f"precision {_percent(report['precision'])}", (margin, height - 12), font, 0.5, red, 1, cv2.LINE_AA)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.png")
    try:
        if not cv2.imwrite(str(tmp), image):
            raise OSError(f"{path}: OpenCV could not write the PNG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
