"""`robostack train-classifier`: a success classifier from label logs, calibrated for a target
false-positive rate, saved as one file that `robostack train --reward-classifier` uses as the
reward.

    robostack record-labels --task pick_cube --device autopilot --episodes 40 --log labels/pick_cube
    robostack train-classifier --labels labels/pick_cube --out classifiers/pick_cube.pt
    robostack train-classifier --labels labels/pick_cube --test-labels labels/pick_cube_test ...

It reads every intact episode of the label logs (episode logs with a per-frame `label.success`
column, robostack/data/episode_log), holds out --validation-fraction of the EPISODES, trains on
the rest with balanced batches and random-shift augmentation (rl/classifier.py), and sets the
decision threshold on the held-out episodes: the lowest one whose false-positive rate there is
at most --target-fpr (a false success is what breaks training; recall is what is left). It
prints accuracy, precision, recall, FPR and the confusion matrix, and writes beside --out:
<name>.report.json (all figures) and <name>.curves.png (ROC and precision-recall, the operating
point marked). --test-labels: logs never seen in training or calibration, reported at the
calibrated threshold: the honest figure.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from robostack.config import add_dataclass_arguments, dataclass_from_args, usage_errors
from robostack.rl.classifier import ClassifierConfig

LABEL = "label.success"


@dataclass
class TrainClassifierConfig:
    """Which label logs, where the classifier goes, and how it is trained."""

    labels: str = "labels/pick_cube"  # label logs (robostack record-labels), comma-separated
    out: str = "classifiers/pick_cube.pt"  # the classifier file to write
    test_labels: str = ""  # label logs held out entirely, reported at the calibrated threshold
    threads: int = 1  # torch threads
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)


def read_labels(logs: str, cameras=(), say=print) -> dict:
    """Every intact episode of the comma-separated label `logs`: {"frames": {camera: (N, H, W, 3)},
    "labels": (N,) bool, "episodes": (N,) int (unique across logs), "task": str,
    "sources": {label source: episodes}}. A log without labels, or of another task, is refused."""
    from robostack.data.episode_log import EpisodeLog, env_key
    from robostack.data.episode_log.reader import skip_damaged

    frames: dict[str, list] = {}
    labels, episodes, tasks, sources = [], [], set(), {}
    for root in filter(None, (p.strip() for p in logs.split(","))):
        log = EpisodeLog(root)
        if LABEL not in log.info["features"]:
            raise SystemExit(f"robostack train-classifier: {root} has no {LABEL} column: it is not a "
                             "label log. Record one with `robostack record-labels`")
        videos = [k for k in log.video_keys if not cameras or env_key(k)[len("images/"):] in cameras]
        if not videos:
            raise SystemExit(f"robostack train-classifier: {root} has no camera frames"
                             f"{' of ' + ','.join(cameras) if cameras else ''} to learn from")
        for i in skip_damaged(log, range(len(log)), video=True, say=say):
            episode = log.episode(i, video=True)
            tasks.add(episode["task"])
            for key in videos:
                frames.setdefault(env_key(key)[len("images/"):], []).append(episode[key])
            labels.append(np.asarray(episode[LABEL], bool).reshape(-1))
            episodes.append(np.full(len(labels[-1]), len(episodes)))
            source = str(log.episodes[i].get("rl/label_source", "unknown"))
            sources[source] = sources.get(source, 0) + 1
    if not labels:
        raise SystemExit(f"robostack train-classifier: no intact labelled episodes in {logs}")
    if len(tasks) > 1:
        raise SystemExit(f"robostack train-classifier: the label logs mix tasks {sorted(tasks)}; "
                         "a classifier is for one task")
    counts = {len(v) for v in frames.values()}
    if counts != {len(labels)}:
        raise SystemExit("robostack train-classifier: the label logs do not all have the same "
                         f"cameras ({sorted(frames)}); choose common ones with --classifier-cameras")
    return {"frames": {c: np.concatenate(v) for c, v in frames.items()},
            "labels": np.concatenate(labels), "episodes": np.concatenate(episodes),
            "task": tasks.pop(), "sources": sources}


def describe(data: dict) -> str:
    n, positives = len(data["labels"]), int(data["labels"].sum())
    sources = ", ".join(f"{k}: {v}" for k, v in data["sources"].items())
    return (f"{n} frames of {len(np.unique(data['episodes']))} episodes ({sources} labels), "
            f"{positives} positive, {n - positives} negative, cameras {','.join(data['frames'])}")


def train_classifier(config: TrainClassifierConfig, say=print) -> dict:
    """Train, calibrate, save and report; returns the report (also written as JSON)."""
    import torch

    from robostack.rl.classifier import SuccessClassifier, fit, save_classifier
    from robostack.rl.classifier_metrics import binary_report, format_report, plot_curves

    torch.set_num_threads(config.threads)
    cameras = config.classifier.camera_list()
    data = read_labels(config.labels, cameras, say)
    say(f"labels: {describe(data)}")
    trained = fit(config.classifier, data["frames"], data["labels"], data["episodes"],
                  task=data["task"], progress=say)
    trained.data["logs"] = config.labels
    out = save_classifier(config.out, trained)
    stem = out.with_suffix("")
    target = config.classifier.target_fpr
    report = {"classifier": str(out), "task": data["task"], "threshold": trained.threshold,
              "target_fpr": target, "data": trained.data, "validation": trained.validation}
    say(format_report(trained.validation, f"validation episodes ({trained.data['validation_episodes']}), "
                      f"threshold {trained.threshold:.4f} calibrated here for FPR <= {target:.1%}"))
    curves = [plot_curves(f"{stem}.curves.png", trained.validation_labels, trained.validation_scores,
                          trained.threshold, f"{data['task']} success classifier, validation episodes")]
    if config.test_labels:
        test = read_labels(config.test_labels, tuple(trained.camera_sizes), say)
        say(f"test labels: {describe(test)}")
        classifier = SuccessClassifier.load(out, task=data["task"])
        scores = classifier.probabilities({c: test["frames"][c] for c in trained.camera_sizes})
        report["test"] = binary_report(test["labels"], scores, trained.threshold)
        report["test"]["logs"] = config.test_labels
        say(format_report(report["test"], f"held-out test episodes ({config.test_labels}) at "
                          f"threshold {trained.threshold:.4f}"))
        curves.append(plot_curves(f"{stem}.test_curves.png", test["labels"], scores,
                                  trained.threshold, f"{data['task']} success classifier, test episodes"))
    report["curves"] = [str(p) for p in curves]
    from robostack.files import write_json_atomic

    write_json_atomic(f"{stem}.report.json", json.loads(json.dumps(report, default=float)))
    say(f"classifier saved to {out} (threshold {trained.threshold:.4f}); report {stem}.report.json, "
        f"curves {', '.join(report['curves'])}")
    say(f"use it: robostack train --task {data['task']} --cameras {','.join(trained.camera_sizes)} "
        f"--reward-classifier {out}")
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="robostack train-classifier", description=__doc__.splitlines()[0],
                                     epilog="\n".join(__doc__.splitlines()[1:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_arguments(parser, TrainClassifierConfig)
    args = parser.parse_args(argv)
    with usage_errors(parser):
        config = dataclass_from_args(TrainClassifierConfig, args)
    if not Path(config.labels.split(",")[0].strip()).exists():
        print(f"robostack train-classifier: no label log at {config.labels}: record one with "
              "`robostack record-labels`", file=sys.stderr)
        return 2
    try:
        train_classifier(config)
    except ValueError as error:  # e.g. too few episodes for a split, a bad crop
        print(f"robostack train-classifier: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
