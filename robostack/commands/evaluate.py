"""`robostack eval --run DIR`: success rate and mean time to success of a run's latest policy.

Loads the newest intact checkpoint of DIR (written by `robostack train`, either mode), rebuilds
the agent from the configuration stored in it, and runs the deterministic policy (the mean
action) for N episodes on fixed seeds against a robot server: the one at --robot-server, or a
fresh one on loopback. Writes DIR/eval.json and adds a row to DIR/metrics.csv.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import torch

from robostack.training.run_dir import read_csv, write_csv


def load_policy(run_dir: Path, observation_space, action_space):
    """(agent, checkpoint) from the run's newest checkpoint that verifies."""
    from robostack.rl.checkpoint import load_latest_checkpoint
    from robostack.rl.sac import SACConfig, build_agent

    checkpoint = load_latest_checkpoint(run_dir)
    if checkpoint is None:
        raise SystemExit(f"robostack eval: {run_dir} has no checkpoint (checkpoints/ckpt_*.pt); "
                         f"train first, or point --run at a run directory")
    state = checkpoint.state["agent"]
    names = {f.name for f in dataclasses.fields(SACConfig)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in state["config"].items()
              if k in names}
    agent = build_agent(dataclasses.replace(SACConfig(**values), compile=False, device="cpu"),
                        observation_space, action_space)
    agent.load_state_dict(state, checkpoint.state.get("state_scale"))
    return agent, checkpoint


def evaluate_run(run_dir: str | os.PathLike, episodes: int, robot_server: str = "",
                 seed: int | None = None, say=print) -> dict:
    from robostack.env import RobotEnv, make_env
    from robostack.robot.client import ZmqConnection
    from robostack.training.rollouts import evaluate
    from tasks import make_task

    torch.set_num_threads(1)
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise SystemExit(f"robostack eval: no config.json in {run_dir}: not a run directory")
    config = json.loads(config_path.read_text())
    task_config = None
    if config.get("max_episode_steps") is not None:
        task_config = dataclasses.replace(make_task(config["task"]).config,
                                          max_episode_steps=int(config["max_episode_steps"]))
    seed = int(config.get("seed", 0)) if seed is None else seed
    if robot_server:
        env = RobotEnv(ZmqConnection(robot_server), task=config["task"], config=task_config)
    else:
        env = make_env(config["task"], transport_kind="zmq", config=task_config, seed=seed)
    try:
        agent, checkpoint = load_policy(run_dir, env.observation_space, env.action_space)
        env_steps = int(checkpoint.state.get("env_steps", checkpoint.step))
        start = time.perf_counter()
        result = evaluate(agent, env, episodes, seed)
    finally:
        env.close()
    result = {**result, "episodes": episodes, "env_steps": env_steps,
              "checkpoint": str(checkpoint.path), "seconds": round(time.perf_counter() - start, 1)}
    (run_dir / "eval.json").write_text(json.dumps(result, indent=2))
    _add_metrics_row(run_dir / "metrics.csv", {"env_steps": env_steps, "success_rate": result["success_rate"],
                                               "time_to_success_s": result["time_to_success_s"],
                                               "final": True})
    say(f"eval: success {result['success_rate']:.0%} over {episodes} episodes, mean time to "
        f"success {result['time_to_success_s']:.2f} s (policy after {env_steps} env steps, "
        f"{checkpoint.path.name}, deterministic)")
    return result


def _add_metrics_row(path: Path, row: dict) -> None:
    write_csv(path, [*read_csv(path), row])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="robostack eval", description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="run directory (holds config.json, checkpoints/)")
    parser.add_argument("--episodes", type=int, default=50, help="evaluation episodes (default 50)")
    parser.add_argument("--robot-server", default="",
                        help="command endpoint of a running robot server (default: start one)")
    parser.add_argument("--seed", type=int, default=None,
                        help="episode seeds (default: the run's seed, as in training evaluations)")
    args = parser.parse_args(argv)
    evaluate_run(args.run, args.episodes, args.robot_server, args.seed,
                 say=lambda text: print(text, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
