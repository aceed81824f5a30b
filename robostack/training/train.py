"""`robostack train --single-process`: SAC in the RLPD recipe, in one loop a newcomer reads top to
bottom (config -> env -> demonstrations -> buffers -> act/store/update -> evaluate/checkpoint).

The env still talks to its robot server through the usual request contract (in this process by
default, or over ZeroMQ with `--transport zmq`). The actor/learner split over processes builds on
the same pieces (issue 4).

Run directory layout: config.json, metrics.csv (one row per evaluation: env_steps, wall_seconds
since online training began, evaluations included, eval_seconds of it spent evaluating,
success_rate, time_to_success_s), checkpoints/, buffers/.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from robostack.config import add_dataclass_arguments, dataclass_from_args, usage_errors
from robostack.rl.buffers import ReplayBuffer, load_demonstrations, sample_mixed
from robostack.rl.checkpoint import load_latest_checkpoint, save_checkpoint
from robostack.rl.networks import state_statistics
from robostack.rl.sac import build_agent, update
from robostack.training.config import TrainConfig
from robostack.training.rollouts import collect_demonstrations, evaluate, logged_demonstrations


def train(config: TrainConfig, progress=print) -> list[dict]:
    """Run (or resume) one training run; returns the evaluation history (metrics.csv's rows).
    `progress`: where progress lines go (None: nowhere)."""
    from robostack.env import make_env

    progress = progress or (lambda line: None)

    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))

    task_config = None
    if config.max_episode_steps is not None:
        from tasks import make_task

        task_config = dataclasses.replace(make_task(config.task).config,
                                          max_episode_steps=config.max_episode_steps)
    env = make_env(config.task, transport_kind=config.transport, config=task_config, seed=config.seed)
    sac_config = dataclasses.replace(config.sac, seed=config.seed, utd_ratio=config.utd_ratio)
    agent = build_agent(sac_config, env.observation_space, env.action_space)
    action_dim = env.action_space.shape[0]

    step, wall_offset, history = 0, 0.0, []
    online = ReplayBuffer(config.buffer_capacity, env.observation_space, action_dim, seed=config.seed)
    checkpoint = load_latest_checkpoint(run_dir) if config.resume else None
    if checkpoint is not None:
        agent.load_state_dict(checkpoint.state["agent"], checkpoint.state.get("state_scale"))
        step, wall_offset = int(checkpoint.state["env_steps"]), float(checkpoint.state["wall_seconds"])
        history = json.loads(checkpoint.state["history"])
        online = ReplayBuffer.load(run_dir / "buffers" / "online.npz")
        demos = ReplayBuffer.load(run_dir / "buffers" / "demos.npz")
        progress(f"resumed from {checkpoint.path} at env step {step}")
    else:
        if config.demo_log:
            episodes = logged_demonstrations(config.demo_log, config.demos, progress)
        else:
            episodes = collect_demonstrations(env, config.demos, config.seed, config.demo_noise, progress)
        # Room for intervention steps: the HIL-SERL rule puts them in the demo buffer as well.
        extra = min(config.total_steps, config.buffer_capacity) if config.intervention else 0
        demos = load_demonstrations(episodes, seed=config.seed, extra_capacity=extra)
        # Buffers keep raw observations; the agent's encoder standardises states itself.
        if config.normalize_state:
            agent.set_state_scale(*state_statistics(np.concatenate([e["observations"]["state"]
                                                                    for e in episodes])))
    acting = env  # what the training loop steps; evaluation always uses `env`, no operator
    if config.intervention:
        from robostack.env.teleop import make_device
        from robostack.env.wrappers import InterventionWrapper

        device = make_device(config.intervention, task=env.task,
                             protocol=config.autopilot, seed=config.seed)
        acting = InterventionWrapper(env, device, takeover_penalty=config.takeover_penalty)
    intervention_steps = int(history[-1].get("intervention_steps", 0)) if history else 0
    takeovers = 0  # since this process started (progress only)
    rng = np.random.default_rng(config.seed)

    def save(step: int, wall: float) -> None:
        (run_dir / "buffers").mkdir(exist_ok=True)
        online.save(run_dir / "buffers" / "online.npz")
        demos.save(run_dir / "buffers" / "demos.npz")
        save_checkpoint(run_dir, step, {"agent": agent.state_dict(), "env_steps": step, "wall_seconds": wall,
                                        "history": json.dumps(history)})

    metrics_file = run_dir / "metrics.csv"
    started = time.perf_counter() - wall_offset
    obs, _ = acting.reset(seed=config.seed)
    episode_return, returns, successes, finished, update_time = 0.0, [], [], 0, 0.0
    eval_seconds = float(history[-1]["eval_seconds"]) if history else 0.0
    metrics: dict = {}
    batch = None  # one preallocated CPU batch, refilled in place every step
    if step == 0:
        t0 = time.perf_counter()
        result = evaluate(agent, env, config.eval_episodes, config.seed)
        eval_seconds += time.perf_counter() - t0
        history.append({"env_steps": 0, "wall_seconds": round(time.perf_counter() - started, 1),
                        "eval_seconds": round(eval_seconds, 1), **result,
                        "intervention_steps": 0})
        _write_metrics(metrics_file, history)
        obs, _ = acting.reset(seed=config.seed)
    while step < config.total_steps:
        # --- act and store ---------------------------------------------------------------------
        action = agent.act(obs, deterministic=False)
        next_obs, reward, terminated, truncated, info = acting.step(action)
        if info.get("intervention"):  # the operator's action, in the policy's action space
            action = info["executed_action"]
            demos.add(obs, action, reward, next_obs, terminated, truncated)
            intervention_steps += 1
        takeovers += int(info.get("takeover", False))
        online.add(obs, action, reward, next_obs, terminated, truncated)
        obs, episode_return, step = next_obs, episode_return + reward, step + 1
        if terminated or truncated:
            returns.append(episode_return)
            successes.append(info["success"])
            finished += 1
            obs, episode_return = acting.reset(seed=int(rng.integers(2**31)))[0], 0.0

        # --- learn: UTD critic updates on one 50/50 demo/online sample ---------------------------
        if step >= config.learning_starts:
            t0 = time.perf_counter()
            batch = sample_mixed(online, demos, agent.config.batch_size * config.utd_ratio,
                                 demo_fraction=config.demo_fraction, generator=rng, out=batch)
            metrics = update(agent, batch)
            update_time += time.perf_counter() - t0

        # --- report, evaluate, checkpoint --------------------------------------------------------
        if step % config.progress_every == 0:
            elapsed = time.perf_counter() - started
            recent = successes[-20:]
            progress(f"step {step:>6}/{config.total_steps}  episodes {finished:>4}  "
                     f"train success(last 20) {np.mean(recent) if recent else 0:5.0%}  "
                     f"return {np.mean(returns[-20:]) if returns else 0:5.2f}  "
                     f"critic {float(metrics.get('critic_loss', float('nan'))):7.4f}  "
                     f"alpha {float(metrics.get('temperature', float('nan'))):.3f}  "
                     f"updates/s {agent.critic_updates / max(update_time, 1e-9):6.0f}  "
                     f"{step / max(elapsed, 1e-9):5.1f} steps/s"
                     + (f"  interventions {intervention_steps / step:4.0%} of steps, "
                        f"{takeovers} takeovers" if config.intervention else ""))
        if step % config.eval_every == 0 or step == config.total_steps:
            t0 = time.perf_counter()
            result = evaluate(agent, env, config.eval_episodes, config.seed)
            eval_seconds += time.perf_counter() - t0
            wall = time.perf_counter() - started
            history.append({"env_steps": step, "wall_seconds": round(wall, 1),
                            "eval_seconds": round(eval_seconds, 1), **result,
                            "intervention_steps": intervention_steps})
            _write_metrics(metrics_file, history)
            progress(f"eval @ {step} steps ({wall:.0f} s): success {result['success_rate']:.0%} "
                     f"over {config.eval_episodes} episodes, time to success "
                     f"{result['time_to_success_s']:.2f} s")
            save(step, wall)
            obs, episode_return = acting.reset(seed=int(rng.integers(2**31)))[0], 0.0
    env.close()
    return history


def _write_metrics(path: Path, history: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    os.replace(tmp, path)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--single-process" not in argv:  # the product path: separate processes over ZeroMQ
        from robostack.training.launcher import main as launch

        return launch(argv)
    parser = argparse.ArgumentParser(prog="robostack train", description=__doc__.splitlines()[0])
    parser.add_argument("--single-process", action="store_true",
                        help="train in this process (env, agent, buffers in one loop)")
    add_dataclass_arguments(parser, TrainConfig)  # --sac-* defaults: default_sac_config()
    args = parser.parse_args(argv)
    with usage_errors(parser):  # e.g. an unknown --intervention, --autopilot-start 5 2
        config = dataclass_from_args(TrainConfig, args)
    history = train(config)
    final = history[-1]
    print(f"\nfinal: success {final['success_rate']:.0%} after {final['env_steps']} env steps "
          f"({final['wall_seconds']:.0f} s); metrics in {config.run_dir}/metrics.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
