"""Rollouts shared by both training modes and eval: demonstrations (scripted or from an episode log) and the deterministic evaluation."""

from __future__ import annotations

import numpy as np


def collect_demonstrations(env, count: int, seed: int, noise: float, progress=print) -> list[dict]:
    """Run the task's scripted expert until `count` successful episodes are recorded."""
    expert = env.task.expert(seed=seed, noise=noise)
    episodes, attempts = [], 0
    while len(episodes) < count:
        if attempts >= 5 * count:
            raise RuntimeError(f"scripted expert succeeded only {len(episodes)}/{attempts} times")
        obs, _ = env.reset(seed=1_000_000 + seed * 10_000 + attempts)
        attempts += 1
        expert.reset()
        states, actions, rewards, terms, truncs = [obs["state"]], [], [], [], []
        while True:
            action = expert(env.fields())
            obs, reward, terminated, truncated, info = env.step(action)
            states.append(obs["state"]), actions.append(action), rewards.append(reward)
            terms.append(terminated), truncs.append(truncated)
            if terminated or truncated:
                break
        if info["success"]:
            episodes.append({
                "observations": {"state": np.stack(states)}, "actions": np.stack(actions),
                "rewards": np.array(rewards, np.float32), "terminations": np.array(terms),
                "truncations": np.array(truncs),
            })
    if progress:
        progress(f"demonstrations: {count} successful of {attempts} expert episodes")
    return episodes


def logged_demonstrations(log_dir: str, count: int, progress=print) -> list[dict]:
    """Up to `count` successful episodes of an episode log, as replay-buffer episodes."""
    from robostack.data.episode_log import EpisodeLog

    log = EpisodeLog(log_dir)
    chosen = [i for i in range(len(log)) if log.episodes[i].get("rl/success", True)][:count]
    if not chosen:
        raise SystemExit(f"{log_dir}: no successful episodes to use as demonstrations (the log "
                         f"has {len(log)}); record some with `robostack record-demos`")
    episodes = [piece for i in chosen for piece in log.transitions(i, images=False)]
    progress(f"demonstrations: {len(chosen)} successful episodes from {log_dir}")
    return episodes


def evaluate(agent, env, episodes: int, seed: int) -> dict:
    """Deterministic policy on `episodes` fixed seeds: success rate and mean time to success."""
    successes, times = 0, []
    for i in range(episodes):
        obs, _ = env.reset(seed=2_000_000 + seed * 10_000 + i)
        for t in range(env.config.max_episode_steps):
            obs, _, terminated, truncated, info = env.step(agent.act(obs, deterministic=True))
            if terminated or truncated:
                break
        if info["success"]:
            successes += 1
            times.append((t + 1) / env.config.policy_hz)
    return {"success_rate": successes / episodes,
            "time_to_success_s": round(float(np.mean(times)), 3) if times else float("nan")}
