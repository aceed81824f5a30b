"""`robostack view`: a logged episode as a PNG plot and one video per camera with overlays.

    robostack view LOG --episode N [--out DIR]

The plot stacks the tcp position, the gripper width, the executed action (and the policy's
proposal on intervention steps, dashed), the reward and the return on one time axis, with
intervention steps shaded and the first success marked; it is drawn with OpenCV alone.
Each camera's video shows the logged frames (small simulated cameras enlarged so the text is
legible) with, on every frame: the step and its time (s; the camera's own capture time beside
it where the log has one), the reward and the return, SUCCESS, INTERVENTION (and a red border),
and the safety events of that step, held for a second so that they can be read.
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
class ViewConfig:
    episode: int = 0  # index of the episode in the log
    out: str = ""  # output folder (default: LOG/views)



# --------------------------------------------------------------------------- reading a log
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


def intact_episode(log, index: int, command: str, video: bool = False) -> dict:
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


WHITE, GREEN, RED, YELLOW = (255, 255, 255), (0, 220, 0), (0, 0, 255), (0, 230, 255)  # BGR
EVENT_HOLD_S = 1.0  # a safety event stays on the video this long: one 0.1 s frame is unreadable


def overlay_lines(episode: dict, fps: float, key: str) -> list[list[tuple[str, tuple]]]:
    """Per frame of camera `key`, the lines written on it, top down, as (text, BGR colour): the
    step and its time (s; with the camera's capture time since the episode's first frame where
    the log has timestamp.<camera>), reward and return, SUCCESS, INTERVENTION, and the safety
    events logged at this frame or in the EVENT_HOLD_S before it."""
    rewards = episode["next.reward"].astype(float)
    returns = np.cumsum(rewards)
    captured = episode.get("timestamp." + key.removeprefix("observation."))
    hold = max(1, round(EVENT_HOLD_S * fps))
    out = []
    for t in range(len(rewards)):
        when = f"step {t}  {t / fps:.1f} s"
        if captured is not None and np.isfinite(captured[t]) and np.isfinite(captured[0]):
            when += f"  camera {captured[t] - captured[0]:.3f} s"
        lines = [(when, WHITE), (f"r {rewards[t]:+.2f}  return {returns[t]:+.2f}", WHITE)]
        if episode["next.success"][t]:
            lines.append(("SUCCESS", GREEN))
        if episode["intervention"][t]:
            lines.append(("INTERVENTION", RED))
        for event in episode["events"]:
            if t - hold < event["frame_index"] <= t:
                lines.append((f"{event['kind']} {event['from_state']} -> {event['to_state']}: "
                              f"{event['reason']}", YELLOW))
        out.append(lines)
    return out


def draw_overlay(bgr: np.ndarray, lines, scale: int, border: bool = False) -> np.ndarray:
    """`bgr` enlarged `scale` times with `lines` written on it (outlined in black, so that they
    read on any image; cut with "..." where wider than the image); a red border if `border`."""
    import cv2

    h, w = bgr.shape[:2]
    image = cv2.resize(bgr, (w * scale, h * scale), interpolation=cv2.INTER_NEAREST) if scale > 1 \
        else bgr.copy()
    if border:
        cv2.rectangle(image, (0, 0), (image.shape[1] - 1, image.shape[0] - 1), RED, 3)
    for i, (text, color) in enumerate(lines):
        text = text.encode("ascii", "replace").decode()  # Hershey fonts: ASCII only
        while len(text) > 4 and cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)[0][0] > image.shape[1] - 10:
            text = text[:-4] + "..."
        origin = (5, 15 + 15 * i)
        cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.4, color, 1, cv2.LINE_AA)
    return image


def write_video(path: Path, frames_bgr, fps: float) -> Path:
    """An mp4v video of equal-sized BGR frames; a refusal naming the fix if OpenCV cannot."""
    import cv2

    writer = None
    for frame in frames_bgr:
        if writer is None:
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps),
                                     (frame.shape[1], frame.shape[0]))
            if not writer.isOpened():
                raise OSError(f"{path}: OpenCV cannot write mp4v video. Fix: install "
                              "opencv-python-headless from PyPI (its wheels include FFmpeg).")
        writer.write(frame)
    if writer is not None:
        writer.release()
    return path


def view(log_path: str, config: ViewConfig, say=print) -> dict:
    """Write episode `config.episode`'s plot (PNG) and one video per camera (with overlays).
    Returns the paths ("plot", one per camera key), "figure": what the plot shows
    (plot_episode's description: panels, their series and legends, shaded interventions), and
    "overlays": {camera key: per frame, the lines written on it (overlay_lines)}."""
    from robostack.data.episode_log import EpisodeLog, event_lines

    log = EpisodeLog(log_path)
    if not 0 <= config.episode < len(log):
        raise SystemExit(f"robostack view: {log_path} has {len(log)} episodes; --episode "
                         f"{config.episode} is out of range")
    episode = intact_episode(log, config.episode, "view", video=bool(log.video_keys))
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
    overlays = {}
    for key in log.video_keys:
        frames = episode[key]
        h, w = frames.shape[1:3]
        scale = max(1, 256 // max(h, w))  # small sim cameras: enlarge so the text is legible
        path = out / f"{stem}_{key.rsplit('.', 1)[-1]}.mp4"
        overlays[key] = overlay_lines(episode, log.fps, key)
        written[key] = str(write_video(path, [
            draw_overlay(np.ascontiguousarray(frame[..., ::-1]), lines, scale,
                         border=bool(episode["intervention"][t]))
            for t, (frame, lines) in enumerate(zip(frames, overlays[key]))], log.fps))
    say(f"episode {config.episode} of {log_path}: {len(rewards)} steps, task {episode['task']}")
    for line in event_lines(episode["events"], log.fps):
        say(line)
    if not log.video_keys:
        say("the log has no camera streams: wrote the plot only")
    for what, path in written.items():
        say(f"{what}: {path}")
    return {**written, "figure": figure, "overlays": overlays}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="robostack view",
                                     description="Write a logged episode's PNG plot and one video "
                                                 "per camera (time, reward, success, intervention "
                                                 "and safety-event overlays).")
    parser.add_argument("log", help="episode log folder (the one holding meta/ and data/)")
    add_dataclass_arguments(parser, ViewConfig)
    args = parser.parse_args(argv)
    view(args.log, dataclass_from_args(ViewConfig, args))
    return 0



if __name__ == "__main__":
    sys.exit(main())
