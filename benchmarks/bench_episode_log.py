"""What the episode log adds to the env step: pick_cube at 10 Hz with two real-size camera streams.

    .venv/bin/python benchmarks/bench_episode_log.py [--seconds 20] [--unpaced-seconds 5]
    .venv/bin/python benchmarks/bench_episode_log.py --size 128x128     # the simulated cameras' size

The env is the real one (robot server subprocess over ZeroMQ, lock-step mirror, scripted expert
acting). The two camera streams are 640x480x3 uint8 by default, the size of a real webcam or
RealSense colour stream, each with its capture time logged (timestamp.images.<camera>, as
record-demos logs them). Their frames are synthetic (moving gradients with noise, so the encoder
sees changing content, which costs it more than the mirror's smooth renders): the mirror's own
cameras are 128x128, and rendering 640x480 in software would cost the step ~4 ms a frame that
is the camera's, not the log's. Per control period we time
    step    env.step + producing the two frames                     (what the loop costs anyway)
    log     EpisodeWriter.add_frame (+ end_episode at episode ends)  (what logging adds on the loop)
Two modes run in interleaved slices so that a change in machine load hits both alike:
"off" (no writer) and "on" (writer to a temp folder; video encoding and parquet writing run on
its background thread, concurrently with the next steps). Reported: step time off vs on (does
the background thread slow the step?), the add_frame cost, and the ratio
    (step_on + log) / step_off - 1        issue 12 target: < 5 % of step time
and, since a 10 Hz policy's step is its period, what the loop gives up of it: log / period.
A paced 10 Hz loop leaves the writer ~90 % idle time; --unpaced-seconds also runs the loop as
fast as lock-step training does, the worst case for the writer competing for the core.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")

from robostack.env import make_env  # noqa: E402
from robostack.data.episode_log import EpisodeLog, EpisodeWriter, features_from_spaces, state_names  # noqa: E402

SIZE = (480, 640)  # (height, width), --size
CAMERAS = ("front", "wrist")


class Loop:
    """Drives the env with the expert and synthetic cameras; optionally logs every step."""

    def __init__(self, env, writer: EpisodeWriter | None, size: tuple[int, int]):
        self.env, self.writer = env, writer
        self.expert = env.task.expert(seed=0)
        h, w = size
        yy, xx = np.mgrid[0:h, 0:w]
        noise = np.random.default_rng(0).integers(0, 24, (h, w, 3))  # texture: no flat areas
        self._base = (np.stack([xx, yy, (xx + yy) // 2], -1) % 200 + noise).astype(np.uint8)
        self.steps = 0
        self.episodes = 0
        self.captured: dict[str, float] = {}  # each camera's capture time of the frames in self.obs
        self.obs = self._reset()

    def _frames(self, obs: dict) -> dict:
        shift = 7 * int(self.steps)  # px per step: the scene moves under the camera
        out = {"state": obs["state"]}
        for i, cam in enumerate(CAMERAS):
            out[f"images/{cam}"] = np.roll(self._base, shift * (i + 1), axis=1)
            self.captured[f"images/{cam}"] = time.monotonic()
        return out

    def _reset(self) -> dict:
        obs, _ = self.env.reset(seed=self.episodes)
        self.expert.reset()
        return self._frames(obs)

    def step(self) -> tuple[float, float]:
        t0 = time.perf_counter()
        captured = dict(self.captured)  # of self.obs's frames, before _frames stamps the next ones
        action = self.expert(self.env.fields())
        t_state = time.monotonic()
        nxt, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        nxt = self._frames(nxt)
        t1 = time.perf_counter()
        if self.writer is not None:
            self.writer.add_frame(self.obs, action, reward, terminated, truncated,
                                  success=info["success"], timestamps={
                                      "state": t_state, "action": time.monotonic(), **captured})
            if terminated or truncated:
                self.writer.end_episode(nxt)
        t2 = time.perf_counter()
        self.obs = nxt
        if terminated or truncated:
            self.episodes += 1
            self.obs = self._reset()  # not timed: resets are not steps
        return t1 - t0, t2 - t1


def run(loops: dict[str, Loop], seconds: float, period: float | None, slice_s: float = 2.0) -> dict:
    times = {name: ([], []) for name in loops}
    end = time.perf_counter() + seconds * len(loops)
    while time.perf_counter() < end:
        for name, loop in loops.items():
            slice_end = time.perf_counter() + slice_s
            next_tick = time.perf_counter()
            while time.perf_counter() < slice_end:
                step, log = loop.step()
                times[name][0].append(step), times[name][1].append(log)
                if period:
                    next_tick += period
                    time.sleep(max(0.0, next_tick - time.perf_counter()))
    return {name: (np.array(s), np.array(lg)) for name, (s, lg) in times.items()}


def report(title: str, times: dict, wall: dict | None = None, period: float | None = None) -> None:
    (s_off, _), (s_on, l_on) = times["off"], times["on"]
    ms = lambda a, q: 1e3 * float(np.percentile(a, q))  # noqa: E731
    print(f"\n{title}")
    print(f"  steps measured: off {len(s_off)}, on {len(s_on)}")
    print(f"  env step (+2 frames), ms   p50 / p95 / mean:  off {ms(s_off, 50):.3f} / "
          f"{ms(s_off, 95):.3f} / {1e3 * s_off.mean():.3f}   on {ms(s_on, 50):.3f} / "
          f"{ms(s_on, 95):.3f} / {1e3 * s_on.mean():.3f}")
    print(f"  add_frame (+end_episode), us  p50 / p95 / p99 / max:  {1e6 * np.percentile(l_on, 50):.1f} / "
          f"{1e6 * np.percentile(l_on, 95):.1f} / {1e6 * np.percentile(l_on, 99):.1f} / {1e6 * l_on.max():.1f}")
    added = ((s_on.mean() + l_on.mean()) / s_off.mean() - 1) * 100
    median = ((np.median(s_on) + np.median(l_on)) / np.median(s_off) - 1) * 100
    print(f"  added to the step: {added:+.2f} % (means), {median:+.2f} % (medians); "
          f"add_frame alone {100 * l_on.mean() / s_off.mean():.2f} %   (target < 5 %)")
    if period:
        print(f"  of the {1e3 * period:.0f} ms policy period: add_frame {100 * l_on.mean() / period:.2f} %, "
              f"step on vs off {100 * (s_on.mean() - s_off.mean()) / period:+.2f} %")
    if wall:
        print(f"  steps/s: off {wall['off']:.0f}, on {wall['on']:.0f} "
              f"({(wall['on'] / wall['off'] - 1) * 100:+.1f} %)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="per mode, paced at 10 Hz")
    parser.add_argument("--unpaced-seconds", type=float, default=5.0, help="per mode; 0 skips")
    parser.add_argument("--size", default=f"{SIZE[1]}x{SIZE[0]}", help="camera WIDTHxHEIGHT (default 640x480)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))

    env_off, env_on = make_env("pick_cube"), make_env("pick_cube")
    hz = env_off.config.policy_hz
    import gymnasium as gym

    space = dict(env_on.observation_space.spaces)
    space.update({f"images/{c}": gym.spaces.Box(0, 255, (height, width, 3), np.uint8) for c in CAMERAS})
    features = features_from_spaces(space, env_on.action_space,
                                    state_names=state_names(env_on.state_fields))
    with tempfile.TemporaryDirectory() as tmp:
        writer = EpisodeWriter(Path(tmp) / "log", hz, features, task="pick_cube",
                               timestamp_sources=("state", "action", *(f"images/{c}" for c in CAMERAS)))
        loops = {"off": Loop(env_off, None, (height, width)), "on": Loop(env_on, writer, (height, width))}
        for loop in loops.values():  # warm-up: numba compiles the server loop, first encoder
            for _ in range(20):
                loop.step()
        print(f"pick_cube, robot server over zmq (lock-step), {len(CAMERAS)} synthetic "
              f"{width}x{height} streams, {hz} Hz, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, "
              f"{os.cpu_count()} cores")
        report(f"paced at {hz} Hz ({args.seconds:.0f} s per mode)",
               run(loops, args.seconds, 1.0 / hz), period=1.0 / hz)
        if args.unpaced_seconds > 0:
            counts = {k: loop.steps for k, loop in loops.items()}
            times = run(loops, args.unpaced_seconds, None)
            wall = {k: (loops[k].steps - counts[k]) / args.unpaced_seconds for k in loops}
            report(f"unpaced, as fast as lock-step training ({args.unpaced_seconds:.0f} s per mode)",
                   times, wall)
        writer.close()
        log = EpisodeLog(Path(tmp) / "log")
        size = sum(p.stat().st_size for p in (Path(tmp) / "log").rglob("*") if p.is_file())
        print(f"\nlog: {len(log)} episodes, {log.info['total_frames']} frames, "
              f"{size / 1e6:.1f} MB ({size / max(1, log.info['total_frames']) / 1e3:.1f} kB/frame); "
              f"add_frame waited on a full queue for {writer.stall_seconds:.3f} s in total")
        first = log.episode(0)
        print("per-camera capture times logged and increasing: " + ", ".join(
            f"{c} {bool(np.all(np.diff(first[f'timestamp.images.{c}']) > 0))}" for c in CAMERAS))
    env_off.close(), env_on.close()


if __name__ == "__main__":
    main()
