"""`robostack replay`: run a logged episode again in the mirror (`robostack view`, which only
looks at one, is robostack/commands/view.py).

    robostack replay LOG --episode N [--backend mujoco]   re-execute in the mirror, report the
                                                          end-effector tracking error

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

import numpy as np

from robostack.commands.view import intact_episode, state_field
from robostack.commands.view import main as view_command
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


def replay(log_path: str, config: ReplayConfig, say=print) -> dict:
    from robostack.data.episode_log import EpisodeLog, event_lines
    from robostack.env import make_env

    log = EpisodeLog(log_path)
    if not 0 <= config.episode < len(log):
        raise SystemExit(f"robostack replay: {log_path} has {len(log)} episodes; --episode "
                         f"{config.episode} is out of range")
    episode = intact_episode(log, config.episode, "replay")
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
    """`robostack view` (robostack/commands/view.py), where cli.py looks for it."""
    return view_command(argv)


if __name__ == "__main__":
    sys.exit(main())
