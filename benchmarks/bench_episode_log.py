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
    add     EpisodeWriter.add_frame                                 (what logging adds on the loop)
    end     end_episode, at episode ends (reported apart: once an episode, not a step)
Three modes run in interleaved slices so that a change in machine load hits all alike: "off"
(no writer), "copy" (a writer to a temp folder, add_frame copying the frames: the default) and
"take" (another writer, add_frame(..., take=True): the frames handed over read-only, uncopied).
Video encoding and parquet writing run on each writer's background thread, concurrently with
the next steps. Reported: step time off vs on (does the background thread slow the step?),
add_frame's median / p95 copying vs taking, their ratio, and add_frame's share of the step
    add / step                            issue 12 target: < 5 % of step time
(the measured step's median, and the 10.6 ms lock-step step measured when the issue was filed)
and, since a 10 Hz policy's step is its period, what the loop gives up of it: add / period.
Also the time the step spends producing its two fresh frames: a taking writer holds them until
they are encoded, and while it lags behind (unpaced) new arrays cost the allocator more.
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
REFERENCE_STEP_S = 10.6e-3  # the mirror's lock-step step compute when issue 12 was measured


class Loop:
    """Drives the env with the expert and synthetic cameras; optionally logs every step."""

    def __init__(self, env, writer: EpisodeWriter | None, size: tuple[int, int], take: bool = False):
        self.env, self.writer, self.take = env, writer, take
        self.expert = env.task.expert(seed=0)
        h, w = size
        yy, xx = np.mgrid[0:h, 0:w]
        noise = np.random.default_rng(0).integers(0, 24, (h, w, 3))  # texture: no flat areas
        self._base = (np.stack([xx, yy, (xx + yy) // 2], -1) % 200 + noise).astype(np.uint8)
        self.steps = 0
        self.episodes = 0
        self.frame_times: list[float] = []  # producing the two frames, part of `step`
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

    def step(self) -> tuple[float, float, float | None]:
        t0 = time.perf_counter()
        captured = dict(self.captured)  # of self.obs's frames, before _frames stamps the next ones
        action = self.expert(self.env.fields())
        t_state = time.monotonic()
        nxt, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        t_frames = time.perf_counter()
        nxt = self._frames(nxt)
        t1 = time.perf_counter()
        self.frame_times.append(t1 - t_frames)
        if self.writer is not None:  # each step's frames are new arrays (np.roll), as an env's
            self.writer.add_frame(self.obs, action, reward, terminated, truncated,
                                  success=info["success"], take=self.take, timestamps={
                                      "state": t_state, "action": time.monotonic(), **captured})
        t2 = time.perf_counter()
        end = None
        if self.writer is not None and (terminated or truncated):
            self.writer.end_episode(nxt)
            end = time.perf_counter() - t2
        self.obs = nxt
        if terminated or truncated:
            self.episodes += 1
            self.obs = self._reset()  # not timed: resets are not steps
        return t1 - t0, t2 - t1, end


def run(loops: dict[str, Loop], seconds: float, period: float | None, slice_s: float = 2.0) -> dict:
    """{mode: (step times, add_frame times, end_episode times)}, s."""
    times = {name: ([], [], []) for name in loops}
    end = time.perf_counter() + seconds * len(loops)
    while time.perf_counter() < end:
        for name, loop in loops.items():
            slice_end = time.perf_counter() + slice_s
            next_tick = time.perf_counter()
            while time.perf_counter() < slice_end:
                step, add, ended = loop.step()
                times[name][0].append(step), times[name][1].append(add)
                if ended is not None:
                    times[name][2].append(ended)
                if period:
                    next_tick += period
                    time.sleep(max(0.0, next_tick - time.perf_counter()))
    return {name: tuple(np.array(t) for t in ts) for name, ts in times.items()}


def report(title: str, times: dict, wall: dict | None = None, period: float | None = None,
           frames: dict | None = None) -> None:
    ms = lambda a, q: 1e3 * float(np.percentile(a, q)) if len(a) else float("nan")  # noqa: E731
    s_off = times["off"][0]
    print(f"\n{title}")
    print("  steps measured: " + ", ".join(f"{k} {len(t[0])}" for k, t in times.items()))
    print("  env step (+2 frames), ms   p50 / p95 / mean:  " + "   ".join(
        f"{k} {ms(t[0], 50):.3f} / {ms(t[0], 95):.3f} / {1e3 * t[0].mean():.3f}" for k, t in times.items()))
    for k in ("copy", "take"):
        _, add, end = times[k]
        print(f"  {k}: add_frame ms  p50 / p95 / p99 / max:  {ms(add, 50):.3f} / {ms(add, 95):.3f} / "
              f"{ms(add, 99):.3f} / {1e3 * add.max():.3f};   end_episode ({len(end)}) p50 {ms(end, 50):.3f}")
    add_copy, add_take = times["copy"][1], times["take"][1]
    print(f"  add_frame median copy / take: {ms(add_copy, 50):.3f} / {ms(add_take, 50):.3f} ms = "
          f"{np.median(add_copy) / np.median(add_take):.1f}x;  p95 {ms(add_copy, 95):.3f} / "
          f"{ms(add_take, 95):.3f} ms = {np.percentile(add_copy, 95) / np.percentile(add_take, 95):.1f}x")
    for base, name in ((np.median(s_off), f"measured step ({ms(s_off, 50):.2f} ms, p50 off)"),
                       (REFERENCE_STEP_S, f"{1e3 * REFERENCE_STEP_S:.1f} ms step"),
                       *(((period, f"{1e3 * period:.0f} ms period"),) if period else ())):
        print(f"  add_frame median as a share of the {name}: copy {100 * np.median(add_copy) / base:.2f} %, "
              f"take {100 * np.median(add_take) / base:.2f} %   (target < 5 % of the step)")
    print("  step on vs off (the writer thread's pull on the loop), p50: " + ", ".join(
        f"{k} {100 * (np.median(times[k][0]) / np.median(s_off) - 1):+.1f} %" for k in ("copy", "take")))
    if frames:  # fresh arrays that a taking writer holds a while cost the allocator more
        print("  of which producing the 2 frames (np.roll: new arrays), ms p50: " + ", ".join(
            f"{k} {1e3 * np.median(v):.3f}" for k, v in frames.items()))
    if wall:
        print("  steps/s: " + ", ".join(f"{k} {v:.0f}" for k, v in wall.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="per mode, paced at 10 Hz")
    parser.add_argument("--unpaced-seconds", type=float, default=5.0, help="per mode; 0 skips")
    parser.add_argument("--size", default=f"{SIZE[1]}x{SIZE[0]}", help="camera WIDTHxHEIGHT (default 640x480)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))

    env_off, env_on, env_take = make_env("pick_cube"), make_env("pick_cube"), make_env("pick_cube")
    hz = env_off.config.policy_hz
    import gymnasium as gym

    space = dict(env_on.observation_space.spaces)
    space.update({f"images/{c}": gym.spaces.Box(0, 255, (height, width, 3), np.uint8) for c in CAMERAS})
    features = features_from_spaces(space, env_on.action_space,
                                    state_names=state_names(env_on.state_fields))
    with tempfile.TemporaryDirectory() as tmp:
        sources = ("state", "action", *(f"images/{c}" for c in CAMERAS))
        writers = {mode: EpisodeWriter(Path(tmp) / mode, hz, features, task="pick_cube",
                                       timestamp_sources=sources) for mode in ("copy", "take")}
        loops = {"off": Loop(env_off, None, (height, width)),
                 "copy": Loop(env_on, writers["copy"], (height, width)),
                 "take": Loop(env_take, writers["take"], (height, width), take=True)}
        for loop in loops.values():  # warm-up: numba compiles the server loop, first encoder
            for _ in range(20):
                loop.step()
        print(f"pick_cube, robot server over zmq (lock-step), {len(CAMERAS)} synthetic "
              f"{width}x{height} streams, {hz} Hz, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, "
              f"{os.cpu_count()} cores")
        for loop in loops.values():
            loop.frame_times.clear()
        times = run(loops, args.seconds, 1.0 / hz)
        report(f"paced at {hz} Hz ({args.seconds:.0f} s per mode)", times, period=1.0 / hz,
               frames={k: loop.frame_times[:] for k, loop in loops.items()})
        if args.unpaced_seconds > 0:
            counts = {k: loop.steps for k, loop in loops.items()}
            for loop in loops.values():
                loop.frame_times.clear()
            times = run(loops, args.unpaced_seconds, None)
            wall = {k: (loops[k].steps - counts[k]) / args.unpaced_seconds for k in loops}
            report(f"unpaced, as fast as lock-step training ({args.unpaced_seconds:.0f} s per mode)",
                   times, wall, frames={k: loop.frame_times[:] for k, loop in loops.items()})
        for mode, writer in writers.items():
            writer.close()
            root = Path(tmp) / mode
            log = EpisodeLog(root)
            size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
            first = log.episode(0)
            print(f"\nlog ({mode}): {len(log)} episodes, {log.info['total_frames']} frames, "
                  f"{size / 1e6:.1f} MB ({size / max(1, log.info['total_frames']) / 1e3:.1f} kB/frame); "
                  f"camera frames taken {writer.frames.taken}, copied {writer.frames.copied}; "
                  f"add_frame waited on a full queue for {writer.stall_seconds:.3f} s in total")
            print("  per-camera capture times logged and increasing: " + ", ".join(
                f"{c} {bool(np.all(np.diff(first[f'timestamp.images.{c}']) > 0))}" for c in CAMERAS))
    env_off.close(), env_on.close(), env_take.close()


if __name__ == "__main__":
    main()
