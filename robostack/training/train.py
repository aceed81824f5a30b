"""`robostack train --single-process`: SAC in the RLPD recipe, in one loop a newcomer reads top to
bottom (config -> env -> demonstrations -> buffers -> act/store/update -> evaluate/checkpoint).

The env still talks to its robot server through the usual request contract (in this process by
default, or over ZeroMQ with `--transport zmq`). The actor/learner split over processes is built
from the same pieces (config, rollouts, the training-env factory, run_state) and reads and writes
the same run directory: either mode resumes the other's checkpoints, and `robostack eval` reads
both (robostack/training/run_dir.py lists the files).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

from robostack.env.wrappers import make_training_env
from robostack.files import write_json_atomic
from robostack.rl.buffers import ReplayBuffer, load_demonstrations, sample_mixed
from robostack.rl.networks import state_statistics
from robostack.rl.sac import build_agent, update
from robostack.training.config import RunConfig, parse_run_options, write_run_config
from robostack.training.rollouts import collect_demonstrations, evaluate, logged_demonstrations, open_env
from robostack.training.run_dir import Summary, archive_previous_run, write_metrics
from robostack.training.run_state import load_run_state, save_run_state


def train(config: RunConfig, progress=print) -> list[dict]:
    """Run (or resume) one training run; returns the evaluation history (metrics.csv's rows).
    `progress`: where progress lines go (None: nowhere)."""
    progress = progress or (lambda line: None)

    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    run_dir = Path(config.run_dir)
    if not config.resume:  # a fresh run: the previous one's checkpoints must not outlive it
        archive_previous_run(run_dir, progress)
    write_run_config(config, mode="single-process")
    summary = Summary(run_dir, "train")

    env = open_env(config, seed=config.seed, transport_kind=config.transport)
    sac_config = dataclasses.replace(config.sac, seed=config.seed, utd_ratio=config.utd_ratio)
    agent = build_agent(sac_config, env.observation_space, env.action_space)
    action_dim = env.action_space.shape[0]

    # Counters: the checkpoint schema both modes share (robostack/training/run_state.py).
    counters = {"env_steps": 0, "update_calls": 0, "episodes": 0, "interventions": 0,
                "demo_episodes": 0, "saves": 0, "wall_seconds": 0.0, "eval_seconds": 0.0,
                "scale_fixed": True}
    history: list[dict] = []
    state = load_run_state(run_dir) if config.resume else None
    if state is not None:
        agent.load_state_dict(state.agent, state.state_scale)
        counters.update(state.counters, saves=state.saves)  # the learner's too, kept for it
        history, online, demos = state.history, state.online, state.demos
        progress(f"resumed from {state.checkpoint} at env step {counters['env_steps']}")
        summary.update(resumed_from={"checkpoint": str(state.checkpoint),
                                     "env_steps": counters["env_steps"]})
    else:
        summary.update(resumed_from=None)
        online = ReplayBuffer(config.buffer_capacity, env.observation_space, action_dim, seed=config.seed)
        if config.demo_log:
            episodes = logged_demonstrations(config.demo_log, config.demos, progress)
        else:
            episodes = collect_demonstrations(env, config.demos, config.seed, config.demo_noise, progress)
        # Room for intervention steps: the HIL-SERL rule puts them in the demo buffer as well.
        extra = min(config.total_steps, config.buffer_capacity) if config.intervention else 0
        demos = load_demonstrations(episodes, seed=config.seed, extra_capacity=extra)
        counters["demo_episodes"] = len(episodes)
        # Buffers keep raw observations; the agent's encoder standardises states itself.
        if config.normalize_state:
            agent.set_state_scale(*state_statistics(np.concatenate([e["observations"]["state"]
                                                                    for e in episodes])))
    # What the training loop steps; evaluation always uses `env`, no operator.
    acting = make_training_env(env, config.intervention, config.autopilot, config.takeover_penalty,
                               seed=config.seed)
    step = counters["env_steps"]
    takeovers = 0  # since this process started (progress only)
    rng = np.random.default_rng(config.seed)

    def evaluation(step: int) -> dict | None:
        """Evaluate, add the row to the history and metrics.csv, return it (None: no episodes)."""
        final = step >= config.total_steps
        episodes = config.final_episodes() if final else config.eval_episodes
        if episodes <= 0:
            return None
        t0 = time.perf_counter()
        result = evaluate(agent, env, episodes, config.seed)
        counters["eval_seconds"] += time.perf_counter() - t0
        counters["wall_seconds"] = time.perf_counter() - started
        history.append({"env_steps": step, "wall_seconds": round(counters["wall_seconds"], 1),
                        "eval_seconds": round(counters["eval_seconds"], 1), **result,
                        "intervention_steps": counters["interventions"], "final": final})
        write_metrics(run_dir, history)
        return {**history[-1], "episodes": episodes}

    def save() -> Path:
        counters["saves"] += 1
        counters["wall_seconds"] = time.perf_counter() - started
        counters["env_steps"] = step
        if config.eval_every > 0:  # where a learner resuming this run evaluates next
            counters["next_eval"] = (step // config.eval_every + 1) * config.eval_every
        return save_run_state(run_dir, counters["saves"], agent, online, demos, counters, history)

    started = time.perf_counter() - counters["wall_seconds"]
    obs, _ = acting.reset(seed=config.seed)
    episode_return, returns, successes, update_time = 0.0, [], [], 0.0
    metrics: dict = {}
    batch = None  # one preallocated CPU batch, refilled in place every step
    if step == 0:
        evaluation(0)  # what there was to learn
        obs, _ = acting.reset(seed=config.seed)
    summary.update(state="running", env_steps=step, total_steps=config.total_steps)
    while step < config.total_steps:
        # --- act and store ---------------------------------------------------------------------
        action = agent.act(obs, deterministic=False)
        next_obs, reward, terminated, truncated, info = acting.step(action)
        if info.get("intervention"):  # the operator's action, in the policy's action space
            action = info["executed_action"]
            demos.add(obs, action, reward, next_obs, terminated, truncated)
            counters["interventions"] += 1
        takeovers += int(info.get("takeover", False))
        online.add(obs, action, reward, next_obs, terminated, truncated)
        obs, episode_return, step = next_obs, episode_return + reward, step + 1
        if terminated or truncated:
            returns.append(episode_return)
            successes.append(info["success"])
            counters["episodes"] += 1
            obs, episode_return = acting.reset(seed=int(rng.integers(2**31)))[0], 0.0

        # --- learn: UTD critic updates on one 50/50 demo/online sample ---------------------------
        if step >= config.learning_starts:
            t0 = time.perf_counter()
            batch = sample_mixed(online, demos, agent.config.batch_size * config.utd_ratio,
                                 demo_fraction=config.demo_fraction, generator=rng, out=batch)
            metrics = update(agent, batch)
            counters["update_calls"] += 1
            update_time += time.perf_counter() - t0

        # --- report, evaluate, checkpoint --------------------------------------------------------
        if step % config.progress_every == 0:
            elapsed = time.perf_counter() - started
            recent = successes[-20:]
            interventions = counters["interventions"]
            progress(f"step {step:>6}/{config.total_steps}  episodes {counters['episodes']:>4}  "
                     f"train success(last 20) {np.mean(recent) if recent else 0:5.0%}  "
                     f"return {np.mean(returns[-20:]) if returns else 0:5.2f}  "
                     f"critic {float(metrics.get('critic_loss', float('nan'))):7.4f}  "
                     f"alpha {float(metrics.get('temperature', float('nan'))):.3f}  "
                     f"updates/s {agent.critic_updates / max(update_time, 1e-9):6.0f}  "
                     f"{step / max(elapsed, 1e-9):5.1f} steps/s"
                     + (f"  interventions {interventions / step:4.0%} of steps, "
                        f"{takeovers} takeovers" if config.intervention else ""))
        if (config.eval_every > 0 and step % config.eval_every == 0) or step == config.total_steps:
            result = evaluation(step)
            checkpoint = save()
            summary.update(env_steps=step, checkpoint=str(checkpoint))
            if result is not None:
                progress(f"eval @ {step} steps ({result['wall_seconds']:.0f} s): success "
                         f"{result['success_rate']:.0%} over {result['episodes']} episodes, time "
                         f"to success {result['time_to_success_s']:.2f} s")
            if result is not None and step == config.total_steps:  # the final one, as the learner writes it
                write_json_atomic(run_dir / "eval.json", {**result, "checkpoint": str(checkpoint)})
            obs, episode_return = acting.reset(seed=int(rng.integers(2**31)))[0], 0.0
    summary.update(state="finished", env_steps=step, final=history[-1] if history else None)
    acting.close()  # the operator's device, then the env
    return history


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="robostack train --single-process",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--single-process", action="store_true",
                        help="train in this process (env, agent, buffers in one loop); the only mode of this module")
    config, _ = parse_run_options(parser, sys.argv[1:] if argv is None else argv)
    history = train(config)
    final = history[-1]
    print(f"\nfinal: success {final['success_rate']:.0%} after {final['env_steps']} env steps "
          f"({final['wall_seconds']:.0f} s); metrics in {config.run_dir}/metrics.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
