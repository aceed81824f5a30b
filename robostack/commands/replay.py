"""`robostack replay`: run a logged episode again in the mirror (`robostack view`, which only
looks at one, is robostack/commands/view.py).

    robostack replay LOG --episode N [--backend mujoco]   re-execute in the mirror, report the
                                                          end-effector tracking error
    robostack replay LOG --endpoint tcp://ARM:5555        the same on a running robot server: a
                                                          real arm (robot-server --backend franka|ur)

Replay resets the mirror with the episode's recorded reset seed (same object placement), then
brings the tool centre point to the logged start position with ordinary env steps (so every
motion goes through the robot server's safety filter and step caps; nothing jumps), then sends
the logged actions one by one. After each step it compares the measured tcp position with the
logged next one: the error says how well the mirror reproduces the recording (a log from the
mirror itself replays within millimetres; one from a real arm shows the sim-to-real gap).
Camera streams: for each logged camera the mirror's scene also has (by name), the mirror renders
it at every replayed step, and replay writes a video per camera, logged | re-rendered side by
side (OUT/episode_N_<camera>_replay.mp4), and reports their mean absolute pixel difference
(0-255 per channel): a few levels for a log from the mirror (the log's video encoding), more
where the scene differs (a real camera's view, another object placement).

An action is a step from the measured tcp, so the logged actions reproduce the logged path only
where the arm answers each step as the recording's did; on an arm that lags more, the replay falls
behind by a little more each step. `--follow targets` sends instead, each step, the target the
recording sent (logged tcp + the logged action's xyz step), from wherever the arm is: a lag then
stays a lag and never adds up (rotation and gripper stay the logged ones).

On a real arm (`--endpoint`) the reset is the arm's drive home, the reset seed draws only the
task's virtual markers, and the cameras are the camera server's (`--camera-endpoint`; a real scene
is not simulated): the tracking error is what it reports. The arm moves: the robot server's
safety filter, workspace box and supervisor apply as to any client.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from robostack.commands.view import intact_episode, state_field
from robostack.commands.view import main as view_command
from robostack.config import add_dataclass_arguments, check_backend, dataclass_from_args, usage_errors
from robostack.env.remote import RemoteServers


FOLLOW = ("actions", "targets")


@dataclass
class ReplayConfig:
    episode: int = 0  # index of the episode in the log
    backend: str = "mujoco"  # mirror to replay in: mujoco (MuJoCo) or pybullet (PyBullet: the same Panda, tcp and controller), whichever recorded the log
    task: str = ""  # task to replay in (default: the episode's task)
    seed: int = -1  # reset seed (default -1: the one the log recorded, else 0)
    transport: str = "zmq"  # zmq (robot server subprocess) or inprocess
    follow: str = "actions"  # actions: send the logged actions, each from where the arm is (as recorded; on an arm that lags more than the recording's, the lag adds up step by step); targets: send each step's recorded target (logged tcp + logged xyz step) from where the arm is, so a lag never adds up (rotation and gripper as logged)
    approach_steps: int = 50  # env steps allowed to reach the logged start position
    tolerance: float = 0.01  # m; exit code 1 if the max tcp error exceeds it
    out: str = ""  # folder of the side-by-side camera videos (default: LOG/replays)
    endpoint: str = ""  # replay on a running robot server (a real arm, or a mirror started apart) instead of starting a mirror
    remote: RemoteServers = field(default_factory=RemoteServers, metadata={"option_prefix": ""})  # with --endpoint: its camera server and CURVE keys

    def __post_init__(self):
        self.remote.check_against(self.endpoint)
        check_backend(self.backend)
        if self.follow not in FOLLOW:
            raise ValueError(f"--follow must be one of {', '.join(FOLLOW)}, got {self.follow!r}")


def replay(log_path: str, config: ReplayConfig, say=print) -> dict:
    from robostack.commands.record import cameras_on_offer, with_cameras
    from robostack.data.episode_log import EpisodeLog, env_key, event_lines
    from robostack.env import make_env
    from robostack.env.actions import action_to_target

    log = EpisodeLog(log_path)
    if not 0 <= config.episode < len(log):
        raise SystemExit(f"robostack replay: {log_path} has {len(log)} episodes; --episode "
                         f"{config.episode} is out of range")
    episode = intact_episode(log, config.episode, "replay", video=bool(log.video_keys))
    meta = log.episodes[config.episode]
    task = config.task or episode["task"]
    seed = config.seed if config.seed >= 0 else int(meta.get("rl/reset_seed") or 0)
    logged_tcp, final_tcp = state_field(log, episode, "tcp_position")
    actions = episode["action"]
    env = make_env(task, backend=config.backend, transport_kind=config.transport, seed=seed,
                   endpoint=config.endpoint or None, **config.remote.env_options())
    where = (f"on the robot server at {config.endpoint} ({env.server_info.get('backend')})" if config.endpoint
             else f"in the {config.backend} mirror")
    logged = {env_key(k).removeprefix("images/"): k for k in log.video_keys}
    offered = cameras_on_offer(env)
    cameras = [c for c in logged if c in offered]
    if logged.keys() - set(cameras):
        say(f"not re-rendered: camera {', '.join(sorted(logged.keys() - set(cameras)))} (the "
            f"{task} scene {where} renders {', '.join(offered) or 'none'}"
            f"{'; a real-time server reads them from a --camera-endpoint' if env.realtime else ''})")
    env = with_cameras(env, cameras)
    rendered = {c: [] for c in cameras}  # the mirror's frame at each logged frame's state
    try:
        if env.action_space.shape != actions.shape[1:]:
            raise SystemExit(f"robostack replay: the log's actions have {actions.shape[1]} dims, "
                             f"task {task!r} takes {env.action_space.shape[0]}: pass --task")
        obs, _ = env.reset(seed=seed)
        approach = approach_start(env, logged_tcp[0], config.approach_steps, obs)
        for c in cameras:
            rendered[c].append(approach["obs"][f"images/{c}"])
        say(f"episode {config.episode} of {log_path} {where}: {len(actions)} steps, task {task}, reset "
            f"seed {seed}; start reached in {approach['steps']} steps "
            f"({1e3 * approach['error']:.1f} mm off)")
        for line in event_lines(episode["events"], log.fps):
            say(line)
        errors, success = [], False
        targets = np.concatenate([logged_tcp[1:], final_tcp[None]])
        for t, action in enumerate(actions):
            if config.follow == "targets":  # the recorded target, from where the arm is now
                here = env.fields()
                recorded, _ = action_to_target(action, logged_tcp[t], here["tcp_quaternion"], env.config)
                action = np.array(action, np.float32)
                action[:3] = np.clip((recorded - here["tcp_position"]) / env.config.max_translation_step,
                                     -1.0, 1.0)
            obs, _, terminated, truncated, info = env.step(action)
            for c in cameras:
                rendered[c].append(obs[f"images/{c}"])
            errors.append(float(np.linalg.norm(env.fields()["tcp_position"] - targets[t])))
            success = success or bool(info["success"])
            if terminated and t < len(actions) - 1:
                say(f"the replay's env ended the episode at step {t + 1} of {len(actions)} (success "
                    f"{info['success']}); stopping the replay there")
                break
    finally:
        env.close()
    errors = np.asarray(errors)
    result = {"backend": env.server_info.get("backend", config.backend), "steps": len(errors), "mean_error": float(errors.mean()),
              "max_error": float(errors.max()), "final_error": float(errors[-1]),
              "success": success, "logged_success": bool(meta.get("rl/success", False)),
              "start_error": approach["error"], "follow": config.follow}
    say(f"tcp position error vs the log: mean {1e3 * result['mean_error']:.1f} mm, max "
        f"{1e3 * result['max_error']:.1f} mm, final {1e3 * result['final_error']:.1f} mm; "
        f"success {result['success']} (logged {result['logged_success']})")
    out = Path(config.out or Path(log_path) / "replays")
    result["cameras"] = {c: compare_frames(episode, logged[c], rendered[c], log.fps,
                                           out / f"episode_{config.episode:06d}_{c}_replay.mp4", say)
                         for c in cameras}
    return result


def compare_frames(episode: dict, key: str, rendered: list, fps: float, path: Path, say) -> dict:
    """Logged frames of camera `key` (with the final one) beside the mirror's re-rendered ones:
    their per-frame mean absolute difference (0-255) and a side-by-side video at `path`."""
    from robostack.commands.view import draw_overlay, write_video

    logged = list(episode[key]) + ([episode[f"final/{key}"]] if f"final/{key}" in episode else [])
    pairs = list(zip(logged, rendered))  # a replay the mirror ended early has fewer frames
    name = key.rsplit(".", 1)[-1]
    if logged[0].shape != rendered[0].shape:
        say(f"camera {name}: logged frames {logged[0].shape[:2]}, the mirror renders "
            f"{rendered[0].shape[:2]}: not compared")
        return {"frames": 0, "mean_abs_diff": None, "max_abs_diff": None, "video": None}
    diffs = [float(np.abs(a.astype(np.int16) - b).mean()) for a, b in pairs]
    scale = max(1, 256 // max(logged[0].shape[:2]))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, [draw_overlay(np.ascontiguousarray(np.concatenate([a, b], 1)[..., ::-1]),
                                    [(f"step {t}  logged | re-rendered  diff {d:.1f}", (255, 255, 255))],
                                    scale) for t, ((a, b), d) in enumerate(zip(pairs, diffs))], fps)
    result = {"frames": len(pairs), "mean_abs_diff": float(np.mean(diffs)),
              "max_abs_diff": float(np.max(diffs)), "video": str(path)}
    say(f"camera {name}: logged vs re-rendered, mean abs pixel difference {result['mean_abs_diff']:.2f} "
        f"(max frame {result['max_abs_diff']:.2f}) over {len(pairs)} frames: {path}")
    return result


def approach_start(env, target: np.ndarray, max_steps: int, obs=None, tolerance: float = 0.002) -> dict:
    """Step the tcp to `target` with capped xyz deltas (gripper kept), through the env; "obs"
    is the observation it ends at (`obs`, the reset's, when no step was needed)."""
    step = env.config.max_translation_step
    action = np.zeros(env.action_space.shape, np.float32)
    for steps in range(max_steps + 1):
        error = target - env.fields()["tcp_position"]
        if np.linalg.norm(error) < tolerance or steps == max_steps:
            break
        action[:3] = np.clip(error / step, -1.0, 1.0)
        obs = env.step(action)[0]
    return {"steps": steps, "error": float(np.linalg.norm(error)), "obs": obs}

# --------------------------------------------------------------------------- CLI
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="robostack replay",
                                     description="Re-execute a logged episode in the mirror (or, "
                                                 "--endpoint, on a running robot server: a real arm) "
                                                 "and report the end-effector tracking error.")
    parser.add_argument("log", help="episode log folder (the one holding meta/ and data/)")
    add_dataclass_arguments(parser, ReplayConfig)
    args = parser.parse_args(argv)
    with usage_errors(parser):
        config = dataclass_from_args(ReplayConfig, args)
    result = replay(args.log, config)
    if result["max_error"] > config.tolerance:
        print(f"max error {1e3 * result['max_error']:.1f} mm exceeds --tolerance "
              f"{1e3 * config.tolerance:.1f} mm")
        return 1
    return 0


def view_main(argv=None) -> int:
    """`robostack view` (robostack/commands/view.py), where cli.py looks for it."""
    return view_command(argv)


if __name__ == "__main__":
    sys.exit(main())
