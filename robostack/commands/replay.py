"""`robostack replay` and `robostack view`: look at a logged episode, or run it again.

    robostack replay LOG --episode N [--backend mujoco]   re-execute in the mirror, report the
                                                          end-effector tracking error
    robostack view LOG --episode N [--out DIR]            video with overlays + PNG plot

Replay resets the mirror with the episode's recorded reset seed (same object placement), then
brings the tool centre point to the logged start position with ordinary env steps (so every
motion goes through the robot server's safety filter and step caps; nothing jumps), then sends
the logged actions one by one. After each step it compares the measured tcp position with the
logged next one: the error says how well the mirror reproduces the recording (a log from the
mirror itself replays within millimetres; one from a real arm shows the sim-to-real gap).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robostack.config import add_dataclass_arguments, dataclass_from_args


@dataclass
class ReplayConfig:
    episode: int = 0  # index of the episode in the log
    backend: str = "mujoco"  # robot backend of the mirror
    task: str = ""  # task to replay in (default: the episode's task)
    seed: int = -1  # reset seed (default -1: the one the log recorded, else 0)
    transport: str = "zmq"  # zmq (robot server subprocess) or inprocess
    approach_steps: int = 50  # env steps allowed to reach the logged start position
    tolerance: float = 0.01  # m; exit code 1 if the max tcp error exceeds it


@dataclass
class ViewConfig:
    episode: int = 0  # index of the episode in the log
    out: str = ""  # output folder (default: LOG/views)


# --------------------------------------------------------------------------- replay
def state_field(log, episode: dict, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(T, n) logged values of state field `name` and its (n,) final value, found through the
    per-element names the log's observation.state feature carries (tcp_position.0, ...)."""
    names = log.features["observation.state"].get("names") or []
    index = [i for i, n in enumerate(names) if n == name or n.rsplit(".", 1)[0] == name]
    if not index:
        raise ValueError(f"the log's observation.state has no field {name!r} (names: "
                         f"{names[:12]}...): replay needs logs written with state names "
                         "(episode_log.features_from_spaces(..., state_names=...))")
    return episode["observation.state"][:, index], episode["final/observation.state"][index]


def replay(log_path: str, config: ReplayConfig, say=print) -> dict:
    from robostack.data.episode_log import EpisodeLog
    from robostack.env import make_env

    log = EpisodeLog(log_path)
    if not 0 <= config.episode < len(log):
        raise SystemExit(f"robostack replay: {log_path} has {len(log)} episodes; --episode "
                         f"{config.episode} is out of range")
    episode = log.episode(config.episode)
    meta = log.episodes[config.episode]
    task = config.task or episode["task"]
    seed = config.seed if config.seed >= 0 else int(meta.get("rl/reset_seed") or 0)
    logged_tcp, final_tcp = state_field(log, episode, "tcp_position")
    actions = episode["action"]
    env = make_env(task, backend=config.backend, transport_kind=config.transport, seed=seed)
    try:
        if env.action_space.shape != actions.shape[1:]:
            raise SystemExit(f"robostack replay: the log's actions have {actions.shape[1]} dims, "
                             f"task {task!r} takes {env.action_space.shape[0]}: pass --task")
        env.reset(seed=seed)
        approach = approach_start(env, logged_tcp[0], config.approach_steps)
        say(f"episode {config.episode} of {log_path}: {len(actions)} steps, task {task}, reset "
            f"seed {seed}; start reached in {approach['steps']} steps "
            f"({1e3 * approach['error']:.1f} mm off)")
        errors, success = [], False
        targets = np.concatenate([logged_tcp[1:], final_tcp[None]])
        for t, action in enumerate(actions):
            _, _, terminated, truncated, info = env.step(action)
            errors.append(float(np.linalg.norm(env.fields()["tcp_position"] - targets[t])))
            success = success or bool(info["success"])
            if terminated and t < len(actions) - 1:
                say(f"the mirror ended the episode at step {t + 1} of {len(actions)} (success "
                    f"{info['success']}); stopping the replay there")
                break
    finally:
        env.close()
    errors = np.asarray(errors)
    result = {"steps": len(errors), "mean_error": float(errors.mean()),
              "max_error": float(errors.max()), "final_error": float(errors[-1]),
              "success": success, "logged_success": bool(meta.get("rl/success", False)),
              "start_error": approach["error"]}
    say(f"tcp position error vs the log: mean {1e3 * result['mean_error']:.1f} mm, max "
        f"{1e3 * result['max_error']:.1f} mm, final {1e3 * result['final_error']:.1f} mm; "
        f"success {result['success']} (logged {result['logged_success']})")
    return result


def approach_start(env, target: np.ndarray, max_steps: int, tolerance: float = 0.002) -> dict:
    """Step the tcp to `target` with capped xyz deltas (gripper kept), through the env."""
    step = env.config.max_translation_step
    action = np.zeros(env.action_space.shape, np.float32)
    for steps in range(max_steps + 1):
        error = target - env.fields()["tcp_position"]
        if np.linalg.norm(error) < tolerance or steps == max_steps:
            break
        action[:3] = np.clip(error / step, -1.0, 1.0)
        env.step(action)
    return {"steps": steps, "error": float(np.linalg.norm(error))}


# --------------------------------------------------------------------------- view
def plot_episode(series: dict[str, np.ndarray], path: Path, width: int = 900,
                 panel_height: int = 180) -> None:
    """A PNG of stacked time-series panels (OpenCV only, no plotting library)."""
    import cv2

    colors = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
              (140, 86, 75), (227, 119, 194)]
    image = np.full((panel_height * len(series), width, 3), 255, np.uint8)
    left, right, pad = 60, 10, 20
    for p, (title, values) in enumerate(series.items()):
        values = np.asarray(values, float).reshape(len(values), -1)
        top = p * panel_height
        lo, hi = np.nanmin(values), np.nanmax(values)
        hi = hi if hi > lo else lo + 1.0
        cv2.rectangle(image, (left, top + pad), (width - right, top + panel_height - pad), (200,) * 3)
        cv2.putText(image, title, (left + 4, top + pad - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0,) * 3, 1)
        for y, text in ((top + pad, f"{hi:.3g}"), (top + panel_height - pad, f"{lo:.3g}")):
            cv2.putText(image, text, (2, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (80,) * 3, 1)
        n = len(values)
        xs = left + (np.arange(n) / max(n - 1, 1)) * (width - right - left)
        for d in range(values.shape[1]):
            ys = top + panel_height - pad - (values[:, d] - lo) / (hi - lo) * (panel_height - 2 * pad)
            points = np.stack([xs, ys], 1).astype(np.int32)
            cv2.polylines(image, [points], False, colors[d % len(colors)], 1, cv2.LINE_AA)  # RGB image
    if not cv2.imwrite(str(path), image[..., ::-1].copy()):
        raise OSError(f"could not write {path}")


def view(log_path: str, config: ViewConfig, say=print) -> dict:
    import cv2

    from robostack.data.episode_log import EpisodeLog

    log = EpisodeLog(log_path)
    if not 0 <= config.episode < len(log):
        raise SystemExit(f"robostack view: {log_path} has {len(log)} episodes; --episode "
                         f"{config.episode} is out of range")
    episode = log.episode(config.episode, video=bool(log.video_keys))
    out = Path(config.out or Path(log_path) / "views")
    out.mkdir(parents=True, exist_ok=True)
    stem = f"episode_{config.episode:06d}"
    rewards = episode["next.reward"].astype(float)
    series = {"observation.state": episode["observation.state"], "action": episode["action"],
              "reward (blue), cumulative (orange)": np.stack([rewards, np.cumsum(rewards)], 1),
              "intervention (blue), success (orange)": np.stack(
                  [episode["intervention"], episode["next.success"]], 1).astype(float)}
    plot_path = out / f"{stem}.png"
    plot_episode(series, plot_path)
    written = {"plot": str(plot_path)}
    for key in log.video_keys:
        frames = episode[key]
        h, w = frames.shape[1:3]
        scale = max(1, 256 // max(h, w))  # small sim cameras: enlarge so the text is legible
        path = out / f"{stem}_{key.rsplit('.', 1)[-1]}.mp4"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(log.fps),
                                 (w * scale, h * scale))
        total = 0.0
        for t, frame in enumerate(frames):
            total += rewards[t]
            bgr = cv2.resize(np.ascontiguousarray(frame[..., ::-1]), (w * scale, h * scale),
                             interpolation=cv2.INTER_NEAREST)
            lines = [f"t {t}  r {rewards[t]:+.2f}  R {total:+.2f}"]
            if episode["next.success"][t]:
                lines.append("SUCCESS")
            if episode["intervention"][t]:
                lines.append("INTERVENTION")
                cv2.rectangle(bgr, (0, 0), (w * scale - 1, h * scale - 1), (0, 0, 255), 3)
            for i, text in enumerate(lines):
                cv2.putText(bgr, text, (5, 15 + 15 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                            (255, 255, 255), 1, cv2.LINE_AA)
            writer.write(bgr)
        writer.release()
        written[key] = str(path)
    if not log.video_keys:
        say("the log has no camera streams: wrote the plot only")
    for what, path in written.items():
        say(f"{what}: {path}")
    return written


# --------------------------------------------------------------------------- CLI
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="robostack replay",
                                     description="Re-execute a logged episode in the mirror and "
                                                 "report the end-effector tracking error.")
    parser.add_argument("log", help="episode log folder (the one holding meta/ and data/)")
    add_dataclass_arguments(parser, ReplayConfig)
    args = parser.parse_args(argv)
    config = dataclass_from_args(ReplayConfig, args)
    result = replay(args.log, config)
    if result["max_error"] > config.tolerance:
        print(f"max error {1e3 * result['max_error']:.1f} mm exceeds --tolerance "
              f"{1e3 * config.tolerance:.1f} mm")
        return 1
    return 0


def view_main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="robostack view",
                                     description="Write a logged episode's video (reward, success "
                                                 "and intervention overlays) and a PNG plot.")
    parser.add_argument("log", help="episode log folder (the one holding meta/ and data/)")
    add_dataclass_arguments(parser, ViewConfig)
    args = parser.parse_args(argv)
    view(args.log, dataclass_from_args(ViewConfig, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
