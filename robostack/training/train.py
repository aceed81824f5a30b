"""`robostack train --single-process`: SAC in the RLPD recipe, in one loop a newcomer reads top to
bottom (config -> env -> demonstrations -> buffers -> act/store/update -> evaluate/checkpoint).

The env still talks to its robot server through the usual request contract (in this process by
default, or over ZeroMQ with `--transport zmq`). The actor/learner split over processes is built
from the same pieces (config, rollouts, the training-env factory, run_state) and reads and writes
the same run directory: either mode resumes the other's checkpoints, and `robostack eval` reads
both (robostack/training/run_dir.py lists the files).

Ctrl-C / SIGTERM: the current step ends, a checkpoint is written, and `robostack train
--single-process` says so in one line and exits with 130 (SIGINT) or 143 (SIGTERM); the same
command resumes the run. A second signal leaves at once (the previous checkpoint stays intact).
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from robostack.env.teleop_relay import open_person_controls
from robostack.env.wrappers import make_training_env
from robostack.files import write_json_atomic
from robostack.rl.buffers import ReplayBuffer, fitting_capacity, load_demonstrations, sample_mixed
from robostack.rl.networks import state_statistics
from robostack.rl.featurize import policy_env
from robostack.rl.sac import build_agent, update
from robostack.training.config import RunConfig, parse_run_options
from robostack.training.progress import ProgressReport, Rates, progress_stats
from robostack.training.rollouts import (collect_demonstrations, evaluate, logged_demonstrations, open_env,
                                         rewarded_env)
from robostack.training.run_dir import Summary, start_run, write_metrics
from robostack.training.run_state import load_run_state, save_run_state


class TrainingStopped(KeyboardInterrupt):
    """A signal (SIGINT, SIGTERM) stopped training after a checkpoint was written: the same
    configuration resumes it. A KeyboardInterrupt, so that code around `train()` that stops on
    Ctrl-C still does."""

    def __init__(self, signum: int, env_steps: int, checkpoint: Path):
        super().__init__(f"stopped by {signal.Signals(signum).name} at env step {env_steps}")
        self.signum, self.env_steps, self.checkpoint = signum, env_steps, checkpoint


class StopSignals:
    """While training (main thread only): SIGINT and SIGTERM are noted (`received`), and the
    loop stops between two steps, where its state is whole; a second one raises
    KeyboardInterrupt at once."""

    def __init__(self):
        self.received: int | None = None
        self.previous: dict = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self.note) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def note(self, signum, frame) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signum

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def train(config: RunConfig, progress=print) -> list[dict]:
    """Run (or resume) one training run; returns the evaluation history (metrics.csv's rows).
    `progress`: where progress lines go (None: nowhere). Raises config.ResumeRefused for a run
    directory holding a run recorded with other settings, TrainingStopped after SIGINT/SIGTERM."""
    with StopSignals() as signals:
        return _train(config, progress or (lambda line: None), signals)


def _train(config: RunConfig, progress, signals: StopSignals) -> list[dict]:
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    run_dir = Path(config.run_dir)
    # A person at the controls (--intervention keyboard|gamepad|spacemouse): their device is
    # opened first (a missing one fails before anything starts), and their live view shows
    # the progress lines.
    person = open_person_controls(config.intervention, config.task, say=progress)
    if person is not None:
        progress = person[1].say
    # Refuse to resume with other settings; a fresh run moves the previous one aside whole.
    start_run(config, "single-process", progress)
    summary = Summary(run_dir, "train")

    # What the policy observes: the env, or its cached frozen features (rl/featurize.py).
    env = policy_env(open_env(config, seed=config.seed, transport_kind=config.transport), config.sac)
    sac_config = dataclasses.replace(config.sac, seed=config.seed, utd_ratio=config.utd_ratio)
    agent = build_agent(sac_config, env.observation_space, env.action_space)
    rewarded = rewarded_env(env, config)  # training episodes' reward (--reward-classifier)
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
        capacity = fitting_capacity(env.observation_space, action_dim, config.buffer_capacity,
                                    config.buffer_memory, say=progress)
        online = ReplayBuffer(capacity, env.observation_space, action_dim, seed=config.seed)
        if config.demo_log:
            episodes = logged_demonstrations(config.demo_log, config.demos, progress)
        else:
            episodes = collect_demonstrations(rewarded, config.demos, config.seed, config.demo_noise, progress)
        # Room for intervention steps: the HIL-SERL rule puts them in the demo buffer as well.
        extra = min(config.total_steps, config.buffer_capacity) if config.intervention else 0
        if episodes:
            demos = load_demonstrations(episodes, seed=config.seed, extra_capacity=extra)
        else:  # --demos 0: batches come from the online buffer alone (and interventions)
            demos = ReplayBuffer(max(2, extra), env.observation_space, action_dim, seed=config.seed)
        counters["demo_episodes"] = len(episodes)
        # Buffers keep raw observations; the agent's encoder standardises states itself (from
        # the demonstrations; without any it passes states through unscaled, as the learner).
        if config.normalize_state and episodes:
            agent.set_state_scale(*state_statistics(np.concatenate([e["observations"]["state"]
                                                                    for e in episodes])))
    # What the training loop steps; evaluation always uses `env`, no operator.
    # With a person in the loop it steps in real time and shows each step on their view.
    acting = make_training_env(rewarded, config.intervention, config.autopilot, config.takeover_penalty,
                               seed=config.seed, device=person and person[0], screen=person and person[1])
    step = counters["env_steps"]
    rng = np.random.default_rng(config.seed)

    def evaluation(step: int) -> dict | None:
        """Evaluate, add the row to the history and metrics.csv, return it (None: no episodes)."""
        final = step >= config.total_steps
        episodes = config.final_episodes() if final else config.eval_episodes
        if episodes <= 0:
            return None
        t0 = time.perf_counter()
        result = evaluate(agent, env, episodes, config.seed, stop=lambda: signals.received is not None)
        counters["eval_seconds"] += time.perf_counter() - t0
        if result is None:  # cut short by a signal: no row (a resumed run evaluates on from here)
            return None
        counters["wall_seconds"] = time.perf_counter() - started
        history.append({"env_steps": step, "wall_seconds": round(counters["wall_seconds"], 1),
                        "eval_seconds": round(counters["eval_seconds"], 1), **result,
                        "intervention_steps": counters["interventions"], "final": final})
        write_metrics(run_dir, history)
        report.evaluation(step, result["success_rate"], result["time_to_success_s"])
        return {**history[-1], "episodes": episodes}

    def save() -> Path:
        counters["saves"] += 1
        counters["wall_seconds"] = time.perf_counter() - started
        counters["env_steps"] = step
        if config.eval_every > 0:  # where a learner resuming this run evaluates next
            counters["next_eval"] = (step // config.eval_every + 1) * config.eval_every
        return save_run_state(run_dir, counters["saves"], agent, online, demos, counters, history)

    # Progress lines, progress.csv and TensorBoard scalars, as the learner writes them.
    report = ProgressReport(run_dir, progress, resume=state is not None)
    rates = Rates()
    rates.sample(agent.critic_updates, step)
    started = time.perf_counter() - counters["wall_seconds"]
    obs, _ = acting.reset(seed=config.seed)
    episode_return, returns, successes = 0.0, [], []
    metrics: dict = {}
    batch = None  # one preallocated CPU batch, refilled in place every step
    def evaluate_and_save(step: int) -> None:
        result = evaluation(step)
        checkpoint = save()
        summary.update(env_steps=step, checkpoint=str(checkpoint))
        if result is not None:
            progress(f"eval @ {step} steps ({result['wall_seconds']:.0f} s): success "
                     f"{result['success_rate']:.0%} over {result['episodes']} episodes, time "
                     f"to success {result['time_to_success_s']:.2f} s")
        if result is not None and step >= config.total_steps:  # the final one, as the learner writes it
            write_json_atomic(run_dir / "eval.json", {**result, "checkpoint": str(checkpoint)})

    if step == 0 and signals.received is None:
        evaluation(0)  # what there was to learn
        obs, _ = acting.reset(seed=config.seed)
    summary.update(state="running", env_steps=step, total_steps=config.total_steps)
    while step < config.total_steps and signals.received is None:
        # --- act and store ---------------------------------------------------------------------
        action = agent.act(obs, deterministic=False)
        next_obs, reward, terminated, truncated, info = acting.step(action)
        if info.get("intervention"):  # the operator's action, in the policy's action space
            action = info["executed_action"]
            demos.add(obs, action, reward, next_obs, terminated, truncated)
            counters["interventions"] += 1
        online.add(obs, action, reward, next_obs, terminated, truncated)
        obs, episode_return, step = next_obs, episode_return + reward, step + 1
        if terminated or truncated:
            returns.append(episode_return)
            successes.append(info["success"])
            counters["episodes"] += 1
            obs, episode_return = acting.reset(seed=int(rng.integers(2**31)))[0], 0.0

        # --- learn: UTD critic updates on one 50/50 demo/online sample ---------------------------
        if step >= config.learning_starts:
            batch = sample_mixed(online, demos, agent.config.batch_size * config.utd_ratio,
                                 demo_fraction=config.demo_fraction, generator=rng, device=agent.device,
                                 out=batch if agent.device.type == "cpu" else None)
            metrics = update(agent, batch)
            counters["update_calls"] += 1

        # --- report, evaluate, checkpoint --------------------------------------------------------
        if step % config.progress_every == 0:
            report.report(progress_stats(
                config, env_steps=step, update_calls=counters["update_calls"],
                critic_updates=agent.critic_updates, episodes=counters["episodes"],
                demo_episodes=counters["demo_episodes"], interventions=counters["interventions"],
                recent=zip(returns[-20:], successes[-20:]), rates=rates,
                wall_seconds=time.perf_counter() - started, metrics=metrics), metrics)
        if (config.eval_every > 0 and step % config.eval_every == 0) or step == config.total_steps:
            evaluate_and_save(step)
            obs, episode_return = acting.reset(seed=int(rng.integers(2**31)))[0], 0.0
    if signals.received is not None:  # Ctrl-C / SIGTERM: a checkpoint to resume from, then leave
        checkpoint = save()
        name = signal.Signals(signals.received).name
        summary.update(state="stopped", why=f"stopped by {name}", env_steps=step, checkpoint=str(checkpoint))
        report.close()
        acting.close()
        raise TrainingStopped(signals.received, step, checkpoint)
    final_done = any(row.get("final") and row["env_steps"] == step for row in history)
    if not final_done and config.final_episodes() > 0:  # a signal cut the final evaluation short
        evaluate_and_save(step)
    summary.update(state="finished", env_steps=step, final=history[-1] if history else None)
    report.close()
    acting.close()  # the operator's device and view, then the env
    return history


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="robostack train --single-process",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--single-process", action="store_true",
                        help="train in this process (env, agent, buffers in one loop); the only mode of this module")
    config, _ = parse_run_options(parser, sys.argv[1:] if argv is None else argv, starts_run=True)
    if config.launch.arm_server:
        parser.error("--arm-server trains over processes (the actor on the arm, the learner apart): "
                     "leave out --single-process")
    try:
        history = train(config)
    except TrainingStopped as stopped:
        print(f"\n{stopped} of {config.total_steps}; checkpoint {stopped.checkpoint}. Run the same "
              f"command to resume.", flush=True)
        return 130 if stopped.signum == signal.SIGINT else 143
    except KeyboardInterrupt:  # before training began, or a second Ctrl-C while stopping
        print(f"\ninterrupted; no new checkpoint (an earlier one in {config.run_dir} stays). "
              f"Run the same command to resume.", flush=True)
        return 130
    if not history:
        print(f"\nfinished without an evaluation; run directory {config.run_dir}")
        return 0
    final = history[-1]
    print(f"\nfinal: success {final['success_rate']:.0%} after {final['env_steps']} env steps "
          f"({final['wall_seconds']:.0f} s); metrics in {config.run_dir}/metrics.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
