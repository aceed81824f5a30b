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
import functools
import itertools
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
    from robostack.data.episode_log import EpisodeLog, event_lines
    from robostack.env import make_env

    log = EpisodeLog(log_path)
    if not 0 <= config.episode < len(log):
        raise SystemExit(f"robostack replay: {log_path} has {len(log)} episodes; --episode "
                         f"{config.episode} is out of range")
    episode = _intact_episode(log, config.episode, "replay")
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
        for line in event_lines(episode["events"], log.fps):
            say(line)
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
PLOT_COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
               (140, 86, 75), (227, 119, 194)]  # RGB, matplotlib's first seven
INTERVENTION_SHADE = (255, 221, 221)  # RGB
SUCCESS_COLOR = (0, 150, 0)
ACTION_NAMES = {3: ["x", "y", "z"], 4: ["x", "y", "z", "gripper"],  # TaskConfig.action_dim():
                6: ["x", "y", "z", "rx", "ry", "rz"],              # translation, rotation if
                7: ["x", "y", "z", "rx", "ry", "rz", "gripper"]}   # controlled, gripper last


def action_names(log, dims: int) -> list[str]:
    """Names of the action's components: the log's, else the env's layout (the action's size
    says which parts it has), else a0, a1, ..."""
    return log.features["action"].get("names") or ACTION_NAMES.get(dims) or [f"a{i}" for i in range(dims)]


def true_spans(flags: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) step ranges where `flags` is set."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], np.asarray(flags, np.int8), [0]])))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


def episode_panels(log, episode: dict) -> list[dict]:
    """The plot's panels: {"title", "ylabel", "series": [{"label", "values", "color", "dashed"}],
    "legend": [(label, color, style)], "ylim"}; `values` is per step, NaN where not drawn."""
    panels = []
    try:
        tcp, _ = state_field(log, episode, "tcp_position")
        panels.append({"title": "tcp position (base frame)", "ylabel": "position [m]", "series": [
            {"label": f"tcp {axis}", "values": tcp[:, i]} for i, axis in enumerate("xyz")]})
        width, _ = state_field(log, episode, "gripper_width")
        panels.append({"title": "gripper width", "ylabel": "width [m]",
                       "series": [{"label": "gripper width", "values": width[:, 0]}]})
    except ValueError:  # a log without state names (or without a gripper): the state as logged
        if not panels:
            names = log.features["observation.state"].get("names")
            state = episode["observation.state"]
            panels.append({"title": "observation.state", "ylabel": "state (as logged)", "series": [
                {"label": names[i] if names else f"s{i}", "values": state[:, i]}
                for i in range(state.shape[1])]})
    for panel in panels:
        for i, series in enumerate(panel["series"]):
            series.update(color=PLOT_COLORS[i % len(PLOT_COLORS)], dashed=False)
        panel["legend"] = [(s["label"], s["color"], "line") for s in panel["series"]]

    executed = episode["action"]
    # LeRobot's own datasets have neither: then nothing was overridden.
    proposed = episode.get("policy_action", executed)
    intervened = np.asarray(episode.get("intervention", np.zeros(len(executed), bool)), bool)
    names = action_names(log, executed.shape[1])
    action = {"title": "action: executed (solid), policy's proposal on intervention steps (dashed)"
              if intervened.any() else "action: executed (no intervention steps)",
              "ylabel": "action [normalised]", "series": [], "legend": []}
    for i, name in enumerate(names):
        color = PLOT_COLORS[i % len(PLOT_COLORS)]
        action["series"].append({"label": f"{name} executed", "values": executed[:, i],
                                 "color": color, "dashed": False})
        action["legend"].append((name, color, "line"))
    if intervened.any():
        for i, name in enumerate(names):
            action["series"].append({"label": f"{name} policy", "color": PLOT_COLORS[i % len(PLOT_COLORS)],
                                     "values": np.where(intervened, proposed[:, i], np.nan), "dashed": True})
        action["legend"] += [("executed", (0, 0, 0), "line"), ("policy", (0, 0, 0), "dashed")]
    low = min(-1.0, float(np.nanmin(np.concatenate([executed, proposed]))))
    high = max(1.0, float(np.nanmax(np.concatenate([executed, proposed]))))
    action["ylim"] = (low, high)  # the whole normalised range, so that magnitudes compare
    panels.append(action)

    rewards = episode["next.reward"].astype(float)
    panels.append({"title": "reward", "ylabel": "reward", "series": [
        {"label": "reward", "values": rewards, "color": PLOT_COLORS[0], "dashed": False},
        {"label": "return (cumulative)", "values": np.cumsum(rewards), "color": PLOT_COLORS[1],
         "dashed": False}]})
    panels[-1]["legend"] = [(s["label"], s["color"], "line") for s in panels[-1]["series"]]
    for panel in panels:
        if intervened.any():
            panel["legend"].append(("intervention", INTERVENTION_SHADE, "shade"))
        if episode["next.success"].any():
            panel["legend"].append(("success", SUCCESS_COLOR, "marker"))
    return panels


def nice_ticks(low: float, high: float, count: int = 5) -> np.ndarray:
    """Round tick values (1, 2 or 5 x 10^k apart) covering [low, high]."""
    raw = (high - low) / max(count - 1, 1)
    magnitude = 10.0 ** np.floor(np.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    ticks = np.arange(np.ceil(low / step), np.floor(high / step + 1e-6) + 1) * step
    return ticks + 0.0  # no "-0" label


def _dashed(image, points: np.ndarray, color, dash: float = 6.0, gap: float = 4.0) -> None:
    import cv2

    for a, b in itertools.pairwise(points):
        length = float(np.hypot(*(b - a)))
        for start in np.arange(0.0, length, dash + gap):
            stop = min(start + dash, length)
            p = a + (b - a) * (start / max(length, 1e-9))
            q = a + (b - a) * (stop / max(length, 1e-9))
            cv2.line(image, tuple(np.round(p).astype(int)), tuple(np.round(q).astype(int)),
                     color, 1, cv2.LINE_AA)


def _text(image, text: str, origin, scale: float = 0.4, color=(0, 0, 0), vertical=False) -> None:
    """ASCII text (OpenCV's Hershey fonts have no other glyphs); `vertical` reads bottom to top,
    centred on `origin`."""
    import cv2

    text = text.encode("ascii", "replace").decode()
    if not vertical:
        cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)
        return
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    label = np.full((h + base + 2, w + 2, 3), 255, np.uint8)
    cv2.putText(label, text, (1, h + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)
    label = cv2.rotate(label, cv2.ROTATE_90_COUNTERCLOCKWISE)
    x, y = origin[0] - label.shape[1] // 2, max(0, origin[1] - label.shape[0] // 2)
    region = image[y:y + label.shape[0], x:x + label.shape[1]]
    np.minimum(region, label[:region.shape[0], :region.shape[1]], out=region)


def _to_pixel_row(value, *, low: float, high: float, bottom: int, top: int):
    return bottom - (np.asarray(value, float) - low) / (high - low) * (bottom - top)


def plot_episode(panels: list[dict], times: np.ndarray, path: Path, *, title: str,
                 step_seconds: float, shaded: list[tuple[int, int]] = (),
                 success_step: int | None = None, width: int = 1100,
                 panel_height: int = 200) -> dict:
    """A PNG of stacked time-series panels sharing the time axis (OpenCV only, no plotting
    library): a title, per panel a title, y label, ticks and legend, the intervention steps
    `shaded` ([start, stop) step ranges) and the first success marked. Returns what was drawn:
    {"path", "title", "xlabel", "size", "shaded" (spans in s), "success_time", "panels":
    [{"title", "ylabel", "series" (labels), "legend" (labels), "ylim"}]}."""
    import cv2

    left, legend_width, top, bottom = 90, 190, 44, 44
    right = width - legend_width
    image = np.full((top + panel_height * len(panels) + bottom, width, 3), 255, np.uint8)
    title_scale = 0.55
    while title_scale > 0.3 and cv2.getTextSize(title, cv2.FONT_HERSHEY_SIMPLEX, title_scale, 1)[0][0] > width - left:
        title_scale *= 0.9  # a long log name or task: smaller, not cut off
    _text(image, title, (left, 28), scale=title_scale)
    duration = len(times) * step_seconds  # step t covers [t, t + 1) x step_seconds
    def to_x(t):  # s -> pixel column
        return left + (np.asarray(t, float) / max(duration, 1e-9)) * (right - left)

    x_ticks = nice_ticks(0.0, duration, 8)
    drawn = []
    for p, panel in enumerate(panels):
        y0 = top + p * panel_height + 22  # the plot area, below the panel's title
        y1 = top + (p + 1) * panel_height - 24  # above the tick labels
        values = np.concatenate([np.asarray(s["values"], float) for s in panel["series"]])
        low, high = panel.get("ylim") or (float(np.nanmin(values)), float(np.nanmax(values)))
        if high - low < 1e-9:  # a constant (a gripper held open): a band around it, to scale
            pad = max(0.1 * abs(low), 1e-3)
            low, high = low - pad, high + pad
        margin = 0.05 * (high - low)
        low, high = low - margin, high + margin
        to_y = functools.partial(_to_pixel_row, low=low, high=high, bottom=y1, top=y0)
        for a, b in shaded:
            cv2.rectangle(image, (int(to_x(a * step_seconds)), y0), (int(to_x(b * step_seconds)), y1),
                          INTERVENTION_SHADE, -1)
        for tick in nice_ticks(low, high, 5):
            y = round(float(to_y(tick)))
            cv2.line(image, (left, y), (right, y), (230, 230, 230), 1)
            _text(image, f"{tick:.3g}", (left - 48, y + 4), 0.35, (60, 60, 60))
        for tick in x_ticks:
            x = round(float(to_x(tick)))
            cv2.line(image, (x, y0), (x, y1), (230, 230, 230), 1)
            _text(image, f"{tick:g}", (x - 8, y1 + 14), 0.35, (60, 60, 60))
        if success_step is not None:
            x = round(float(to_x(times[success_step])))
            cv2.line(image, (x, y0), (x, y1), SUCCESS_COLOR, 2)
        cv2.rectangle(image, (left, y0), (right, y1), (120, 120, 120), 1)
        _text(image, panel["title"], (left, y0 - 7), 0.45)
        _text(image, panel["ylabel"], (18, (y0 + y1) // 2), 0.4, vertical=True)
        for series in panel["series"]:
            v = np.asarray(series["values"], float)
            points = np.stack([to_x(times), to_y(v)], 1)
            finite = np.isfinite(v)
            for a, b in true_spans(finite):  # NaN: not drawn (the policy outside interventions)
                if b - a == 1:  # a lone step (a one-step take-over): a dot, not nothing
                    cv2.circle(image, tuple(np.round(points[a]).astype(int)), 2, series["color"], -1)
                elif series["dashed"]:
                    _dashed(image, points[a:b], series["color"])
                else:
                    cv2.polylines(image, [np.round(points[a:b]).astype(np.int32)], False,
                                  series["color"], 1, cv2.LINE_AA)
        for k, (label, color, style) in enumerate(panel["legend"]):
            y = y0 + 10 + 15 * k
            x = right + 12
            if style == "shade":
                cv2.rectangle(image, (x, y - 5), (x + 22, y + 5), color, -1)
            elif style == "dashed":
                _dashed(image, np.array([[x, y], [x + 22, y]], float), color)
            else:
                cv2.line(image, (x, y), (x + 22, y), color, 2 if style == "marker" else 1, cv2.LINE_AA)
            _text(image, label, (x + 28, y + 4), 0.38)
        drawn.append({"title": panel["title"], "ylabel": panel["ylabel"], "ylim": (low, high),
                      "series": [s["label"] for s in panel["series"]],
                      "legend": [label for label, _, _ in panel["legend"]]})
    xlabel = "time [s]"
    _text(image, xlabel, ((left + right) // 2 - 30, image.shape[0] - 10), 0.45)
    if not cv2.imwrite(str(path), image[..., ::-1].copy()):  # RGB drawing, BGR file
        raise OSError(f"could not write {path}")
    return {"path": str(path), "title": title, "xlabel": xlabel, "size": image.shape[:2],
            "panels": drawn, "shaded": [(a * step_seconds, b * step_seconds) for a, b in shaded],
            "success_time": None if success_step is None else float(times[success_step])}


def plot_title(log_path: str, index: int, episode: dict, meta: dict, fps: float) -> str:
    """log | episode | task | success | length: what the plot is of, on one line."""
    success = bool(meta.get("rl/success", bool(episode["next.success"].any())))
    steps = len(episode["action"])
    return (f"{Path(log_path).resolve().name}  |  episode {index}  |  task: {episode['task']}  |  "
            f"success: {'yes' if success else 'no'}  |  {steps} steps, {steps / fps:.1f} s")


def view(log_path: str, config: ViewConfig, say=print) -> dict:
    """Write episode `config.episode`'s plot (PNG) and one video per camera (with overlays).
    Returns the paths ("plot", one per camera key) and "figure": what the plot shows
    (plot_episode's description: panels, their series and legends, shaded interventions)."""
    import cv2

    from robostack.data.episode_log import EpisodeLog, event_lines

    log = EpisodeLog(log_path)
    if not 0 <= config.episode < len(log):
        raise SystemExit(f"robostack view: {log_path} has {len(log)} episodes; --episode "
                         f"{config.episode} is out of range")
    episode = _intact_episode(log, config.episode, "view", video=bool(log.video_keys))
    out = Path(config.out or Path(log_path) / "views")
    out.mkdir(parents=True, exist_ok=True)
    stem = f"episode_{config.episode:06d}"
    rewards = episode["next.reward"].astype(float)
    plot_path = out / f"{stem}.png"
    successes = np.flatnonzero(episode["next.success"])
    figure = plot_episode(
        episode_panels(log, episode), episode["timestamp"].astype(float), plot_path,
        title=plot_title(log_path, config.episode, episode, log.episodes[config.episode], log.fps),
        step_seconds=1.0 / log.fps, shaded=true_spans(episode["intervention"]),
        success_step=int(successes[0]) if len(successes) else None)
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
    say(f"episode {config.episode} of {log_path}: {len(rewards)} steps, task {episode['task']}")
    for line in event_lines(episode["events"], log.fps):
        say(line)
    if not log.video_keys:
        say("the log has no camera streams: wrote the plot only")
    for what, path in written.items():
        say(f"{what}: {path}")
    return {**written, "figure": figure}


# --------------------------------------------------------------------------- CLI
def _intact_episode(log, index: int, command: str, video: bool = False) -> dict:
    """Episode `index` of `log`; a damaged one (a file not matching its recorded checksum) is a
    one-line refusal naming the file, and the intact episodes one can look at instead."""
    from robostack.data.episode_log import EpisodeLogError

    try:
        return log.episode(index, video=video)
    except EpisodeLogError as exc:
        damaged = log.damaged(video=video)
        intact = [i for i in range(len(log)) if i not in damaged]
        raise SystemExit(f"robostack {command}: {exc}\nintact episodes: "
                         f"{_ranges(intact) or 'none'}; damaged: {_ranges(sorted(damaged))}") from None


def _ranges(indices: list[int]) -> str:
    """[0, 1, 2, 5] -> "0-2, 5"."""
    spans, start = [], None
    for k, i in enumerate(indices):
        if start is None:
            start = i
        if k + 1 == len(indices) or indices[k + 1] != i + 1:
            spans.append(f"{start}" if start == i else f"{start}-{i}")
            start = None
    return ", ".join(spans)


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
