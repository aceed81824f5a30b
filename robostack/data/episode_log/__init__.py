"""The episode log: one on-disk format for demos, interventions, classifier labels and rollouts.

Layout (LeRobotDataset v3.0, readable by LeRobot; templates as in lerobot.datasets.utils):

    meta/info.json                                codebase_version "v3.0", fps (int), features,
                                                  totals, splits {"train": "0:N"}
    meta/stats.json                               per feature: min, max, mean, std, count,
                                                  q01..q99, pooled over the episodes (stats.py)
    meta/tasks.parquet                            task_index, task (pandas reads task as index)
    meta/episodes/chunk-CCC/file-FFF.parquet      one row per episode: length, tasks, file
                                                  indices, dataset_from/to_index, video
                                                  from/to timestamps, rl/* summary, final/*,
                                                  stats/<feature>/<stat> of the episode
    meta/events/chunk-CCC/file-FFF.parquet        the episode's safety events (the supervisor's
                                                  transitions, ...), one row each: episode_index,
                                                  frame_index, index, kind, from_state,
                                                  to_state, reason, time (robostack's; LeRobot
                                                  never reads it)
    data/chunk-CCC/file-FFF.parquet               one row per step
    videos/<video key>/chunk-CCC/file-FFF.mp4     one per camera (mp4v, RGB in and out)

Frame t holds the observation at which action t was taken, the executed `action`, what the
policy proposed (`policy_action`, equal to `action` unless `intervention`), and the outcome of
the step: `next.reward`, `next.done` (termination: no bootstrapping past it), `next.truncated`
(time limit: bootstrapping continues), `next.success`. `timestamp` is frame_index / fps as in
LeRobot; `timestamp.<source>` (float64 s, NaN when not given) is when each source was measured,
on the clock of whoever stamped it (the robot server's monotonic clock for `state`).
LeRobot drops an episode's last next-observation; RL needs it to bootstrap a truncated episode,
so it is kept: vector observations as `final/<key>` columns of the episode row, images as one
extra trailing video frame after `to_timestamp` (outside the episode's time range, so LeRobot
never decodes it).

Crash safety: one data file (and one video file per camera, one episodes-metadata file) per
episode. Everything of an episode is written under temporary names, fsynced and renamed into
place; `meta/info.json` is rewritten last, atomically, and is the commit point: an episode
exists when `total_episodes` counts it. A crash (kill -9 included) loses at most the episode in
flight; reopening the log removes its leftovers and appends after the last committed episode.
Integrity: the commit records a sha256 of each of the episode's files (data, metadata, events,
videos) in `meta/info.json` (robostack.files.file_sha256, by path); the reader verifies a file
before using it, and a damaged episode is named and skipped, never silently read (reader.py).
The log's own files: info.json holds a digest of its own content (robostack.info_sha256; a
changed one is refused, since every other check hangs on it); the committed task list's digest
(robostack.tasks_sha256; a damaged tasks.parquet is named and each episode's task read from its
row, and a writer rebuilds the file); stats.json's sha256 is committed with the episode like
the episode's files (a file that does not match is named and the statistics pooled from the
episodes' rows used instead). Episodes without recorded checksums (logs from before them)
read with one warning naming them.
Safety events: `add_frame(..., events=info["supervisor_transitions"])` logs the supervisor's
transitions (and other safety events) with their reasons at the frame whose step reported them;
`EpisodeLog.events(i)` reads them back (layout.check_events: what is accepted and how it is
bounded).
Extra per-frame columns: any other 1-d feature the writer is opened with (dtype float32,
float64, int64, int32, bool or uint8; shape [1] or [n]; a name no fixed column has), e.g.
"label.success" or "next.classifier.probability", is a column of every frame:
`add_frame(..., extras={"label.success": True})` gives its value in each one (a missing or an
undeclared one is a ValueError; NaN is an unknown float, and float extras get no statistics),
`EpisodeLog.episode(i)` returns it under its name, and `extra_keys(features)` lists them. A log
reopened with other extras is refused, like one with other features.
Label logs (`robostack record-labels`, the reward classifier's training data): episode logs with
one extra column LABEL_FEATURE, "label.success" (bool: the frame's observation, its images and
state, shows the task's success; `label_features()` declares it), and in each episode's row
rl/reset_seed and rl/label_source: "simulator" (the mirror's success check) or "operator" (a
person's labels).
`meta/stats.json` is written just before each commit (LeRobot writes it after), so that the
commit records its checksum; a writer that finds it not the file the commit recorded (a crash
in between) pools it again from the episodes' rows.

Writes happen on a background thread behind a bounded queue: `add_frame` copies the arrays and
enqueues them; video encoding, parquet writing and statistics (a histogram per camera frame as
it is encoded, the rest when the episode is committed) never run on the control loop. Copying
two 640x480 frames costs ~0.3-0.5 ms a step; `add_frame(..., take=True)` hands them over
uncopied and read-only instead (~0.1 ms; handoff.py: which arrays are taken, and the limits).
The reader needs numpy, pyarrow and OpenCV only (no torch).
"""

from robostack.data.episode_log.layout import CODEBASE_VERSION, DATA_PATH, EPISODES_PATH, INFO_PATH, LABEL_FEATURE, TASKS_PATH, VIDEO_PATH, EpisodeLogError, env_key, extra_keys, feature_key, features_from_spaces, image_timestamps, label_features, state_names, timestamp_sources
from robostack.data.episode_log.reader import EpisodeLog, event_lines, logged_transitions
from robostack.data.episode_log.stats import STATS_PATH, aggregate_stats
from robostack.data.episode_log.writer import EpisodeWriter

__all__ = ["CODEBASE_VERSION", "DATA_PATH", "EPISODES_PATH", "INFO_PATH", "LABEL_FEATURE", "STATS_PATH", "TASKS_PATH",
           "VIDEO_PATH", "EpisodeLog", "EpisodeLogError", "EpisodeWriter", "aggregate_stats", "env_key", "event_lines",
           "extra_keys", "feature_key", "features_from_spaces", "image_timestamps", "label_features", "logged_transitions",
           "state_names", "timestamp_sources"]
