"""Feature statistics as LeRobot v3 keeps them, so that its normalisation works on our logs.

    meta/stats.json                   {feature: {min, max, mean, std, count, q01, q10, q50, q90, q99}}
    meta/episodes/... row             the same per episode, as columns "stats/<feature>/<stat>"

Every statistic is a list: (n,) per element of a vector feature ((1,) for a scalar one), (3, 1, 1)
per channel for a camera (pixel values scaled to [0, 1]); `count` is [frames]. As in LeRobot
(lerobot.datasets.compute_stats):
  - an episode's statistics are over all its frames; the std is the population std (ddof 0);
  - a camera's statistics are over LeRobot's sample of the episode's frames (`sample_indices`:
    every frame up to 100, then ~length**0.75), each frame strided down to ~150 px when its
    larger side is 300 px or more; `count` is the number of sampled frames;
  - the log's statistics pool the episodes': min of mins, max of maxes, count-weighted mean,
    pooled variance (within-episode variance plus the spread of the episode means), and each
    quantile as the count-weighted mean of the episodes' quantiles (LeRobot's approximation:
    pooled quantiles are not recoverable from per-episode ones).
Per-episode quantiles here are exact (numpy's default linear interpolation); LeRobot estimates
them from a 5000-bin histogram, which agrees to within a bin.

Not given statistics: `timestamp.<source>` (absolute clock readings, NaN where a source was not
stamped; nothing normalises them, and NaN is not valid JSON).

Camera frames are recycled by the writer as soon as they are encoded, so what the statistics
need of each frame is kept as it passes through the writer thread: a 256-bin histogram per
channel (3 kB, whatever the resolution). Statistics of uint8 pixels follow exactly from those.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

STATS_PATH = "meta/stats.json"
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
QUANTILE_KEYS = tuple(f"q{round(q * 100):02d}" for q in QUANTILES)  # q01 q10 q50 q90 q99
STAT_KEYS = ("min", "max", "mean", "std", "count") + QUANTILE_KEYS
_PIXEL_VALUES = np.arange(256, dtype=np.float64)


def stats_features(features: Mapping[str, Mapping]) -> list[str]:
    """The features that get statistics: every numeric one and every camera, not the clock
    readings `timestamp.<source>`."""
    return [k for k, ft in features.items()
            if ft["dtype"] != "string" and not k.startswith("timestamp.")]


# --------------------------------------------------------------------------- one episode
def vector_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """Statistics of one episode's (T,) or (T, n) values over its T frames."""
    x = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    stats = {"min": x.min(axis=0), "max": x.max(axis=0), "mean": x.mean(axis=0),
             "std": x.std(axis=0), "count": np.array([len(x)], dtype=np.int64)}
    for key, row in zip(QUANTILE_KEYS, np.quantile(x, QUANTILES, axis=0)):
        stats[key] = row
    return stats


def sample_indices(length: int) -> list[int]:
    """The frames of an episode LeRobot samples for image statistics: all of them up to 100,
    then int(length ** 0.75) evenly spread (at most 10 000)."""
    count = max(min(100, length), min(int(length ** 0.75), 10_000))
    return np.round(np.linspace(0, length - 1, count)).astype(int).tolist()


def downsample(frame: np.ndarray) -> np.ndarray:
    """LeRobot's stride for image statistics: frames whose larger side is 300 px or more are
    strided down to ~150 px; smaller ones are used whole. `frame` is (H, W, 3)."""
    height, width = frame.shape[:2]
    if max(height, width) < 300:
        return frame
    stride = int(max(height, width) / 150)
    return frame[::stride, ::stride]


def channel_histogram(frame: np.ndarray) -> np.ndarray:
    """(3, 256) pixel counts per channel of an (H, W, 3) uint8 frame, after `downsample`.
    OpenCV's calcHist: ~20 us for 128x128 (numpy's bincount takes 4x that) and it releases
    the GIL, so the writer thread does not hold up the control loop meanwhile."""
    import cv2

    small = np.ascontiguousarray(downsample(frame))
    return np.stack([cv2.calcHist([small], [c], None, [256], [0, 256]).reshape(256)
                     for c in range(3)]).astype(np.int64)


def _histogram_quantile(counts: np.ndarray, q: float) -> float:
    """np.quantile(values, q) (linear interpolation) of the uint8 values `counts` describes."""
    cumulative = np.cumsum(counts)
    position = q * (cumulative[-1] - 1)
    below = int(np.floor(position))
    value_at = lambda rank: float(np.searchsorted(cumulative, rank, side="right"))
    low = value_at(below)
    high = value_at(min(below + 1, cumulative[-1] - 1))
    return low + (position - below) * (high - low)


def image_stats(histograms: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Per-channel statistics, in [0, 1], of an episode's camera from its frames' histograms
    (one `channel_histogram` per frame, in frame order), over LeRobot's sample of frames."""
    chosen = sample_indices(len(histograms))
    counts = np.sum([histograms[i] for i in chosen], axis=0).astype(np.float64)  # (3, 256)
    pixels = counts.sum(axis=1)
    mean = counts @ _PIXEL_VALUES / pixels
    variance = (counts * (_PIXEL_VALUES[None] - mean[:, None]) ** 2).sum(axis=1) / pixels
    present = counts > 0
    stats = {"min": present.argmax(axis=1).astype(np.float64),
             "max": (255 - present[:, ::-1].argmax(axis=1)).astype(np.float64),
             "mean": mean, "std": np.sqrt(variance)}
    for key, q in zip(QUANTILE_KEYS, QUANTILES):
        stats[key] = np.array([_histogram_quantile(c, q) for c in counts])
    out = {key: (value / 255.0).reshape(3, 1, 1) for key, value in stats.items()}
    out["count"] = np.array([len(chosen)], dtype=np.int64)
    return out


# --------------------------------------------------------------------------- pooling
def aggregate_stats(stats_list: Sequence[Mapping[str, Mapping[str, np.ndarray]]]) -> dict:
    """The statistics of the union of the episodes (or logs) in `stats_list` (see the module doc)."""
    keys = [k for k in stats_list[0]] + sorted({k for s in stats_list[1:] for k in s} - set(stats_list[0]))
    return {key: _aggregate_feature([s[key] for s in stats_list if key in s]) for key in keys}


def _aggregate_feature(parts: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    means = np.stack([np.asarray(p["mean"], np.float64) for p in parts])
    variances = np.stack([np.asarray(p["std"], np.float64) ** 2 for p in parts])
    counts = np.stack([np.asarray(p["count"], np.int64) for p in parts])  # (k, 1)
    weights = counts.reshape(len(parts), *([1] * (means.ndim - 1))).astype(np.float64)
    total = weights.sum(axis=0)  # broadcasts against (n,) and (3, 1, 1) alike
    mean = (means * weights).sum(axis=0) / total
    variance = ((variances + (means - mean) ** 2) * weights).sum(axis=0) / total
    out = {"min": np.min([p["min"] for p in parts], axis=0),
           "max": np.max([p["max"] for p in parts], axis=0),
           "mean": mean, "std": np.sqrt(variance), "count": counts.sum(axis=0)}
    for key in QUANTILE_KEYS:
        if all(key in p for p in parts):
            out[key] = (np.stack([p[key] for p in parts]) * weights).sum(axis=0) / total
    return out


# --------------------------------------------------------------------------- on disk
def to_json(stats: Mapping[str, Mapping[str, np.ndarray]]) -> dict:
    """Nested lists, as LeRobot's write_stats writes them."""
    return {key: {name: np.asarray(value).tolist() for name, value in ft.items()}
            for key, ft in stats.items()}


def from_json(data: Mapping[str, Mapping[str, list]]) -> dict[str, dict[str, np.ndarray]]:
    """Numpy arrays, as LeRobot's load_stats gives them."""
    return {key: {name: np.asarray(value) for name, value in ft.items()} for key, ft in data.items()}


def to_columns(stats: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, list]:
    """Columns of an episode's metadata row: "stats/<feature>/<stat>" -> list (floats; count
    int), the same types in every row so that the per-episode files concatenate."""
    return {f"stats/{key}/{name}": (np.asarray(value, np.int64) if name == "count"
                                    else np.asarray(value, np.float64)).tolist()
            for key, ft in stats.items() for name, value in ft.items()}


def from_columns(row: Mapping[str, object]) -> dict[str, dict[str, np.ndarray]]:
    """Inverse of `to_columns` on a metadata row (other columns ignored); {} if it has none."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for column, value in row.items():
        if column.startswith("stats/"):
            key, name = column[len("stats/"):].rsplit("/", 1)
            out.setdefault(key, {})[name] = np.asarray(value)
    return out
