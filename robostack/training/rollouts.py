"""What both training modes and `robostack eval` share around the env: the run's env
(`open_env`), demonstrations (scripted, from an episode log, or a whole log as a buffer) and the
deterministic evaluation."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from robostack import transport
from robostack.training.observed import task_config

# --- the run's env ------------------------------------------------------------------------------

def server_options(config, seed: int) -> list[str]:
    """The options a robot server for this run is started with, besides its task, backend, clock
    and endpoints."""
    args = ["--seed", str(seed)]
    if config.task_params:
        args += ["--task-params", config.task_params]
    return args


def open_env(config, seed: int, robot_server: str = "", transport_kind: str = "zmq",
             timeout: float = 0.0, waiting=None, curve=None, camera_endpoint=None, camera_curve=None):
    """The env of a run (RunConfig `config`): connected to the robot server at `robot_server`
    (waiting up to `timeout` s for it to answer, calling `waiting()` every try; `waiting` may
    raise to give up), else on a robot server of its own, in this process
    (`transport_kind="inprocess"`) or as a subprocess on loopback. A server of its own runs
    the run's task parameters. `curve`: transport.CurveKeys for a robot server serving with
    CURVE. `camera_endpoint` (`camera_curve`: its keys): the camera server a real-time robot
    server's cameras come from (robostack/env/remote.py)."""
    from robostack.env import RobotEnv, make_env
    from robostack.robot.client import ZmqConnection, spawn_robot_server

    if transport_kind == "inprocess":  # the parameters reach the server with the task config
        return make_env(config.task, backend=config.backend, transport_kind="inprocess",
                        config=task_config(config), seed=seed)
    if not robot_server:
        connection = spawn_robot_server(config.task, config.backend, extra_args=tuple(server_options(config, seed)))
        return RobotEnv(connection, task=config.task, config=task_config(config))
    deadline = time.monotonic() + timeout
    while True:
        connection = ZmqConnection(robot_server, curve=curve)
        try:
            return RobotEnv(connection, task=config.task, config=task_config(config),
                            camera_endpoint=camera_endpoint, camera_curve=camera_curve)
        except transport.PeerTimeout:
            connection.close()
            if time.monotonic() > deadline:
                raise
            if waiting is not None:
                waiting()


def check_server_backend(env, config) -> None:
    """Refuse a robot server that runs another mirror than the run records (--backend): its
    transitions would be learned, and its evaluations reported, as the run's mirror's. A real
    arm's server (no mirror) is what the run then trains on."""
    from robostack.config import MIRRORS

    served = env.server_info.get("backend")
    if served in MIRRORS and served != config.backend:
        where = getattr(env.connection, "endpoint", "in this process")
        raise SystemExit(f"the robot server ({where}) runs the {served} mirror, "
                         f"and this run trains in the {config.backend} one (--backend, config.json): "
                         f"start the robot server with --backend {config.backend}, or train a run "
                         f"of its own with --backend {served}")


def rewarded_env(observed, config):
    """The policy's env `observed` with the run's reward: itself (the task's reward), or with
    --reward-classifier wrapped in ClassifierReward (robostack/env/learned_reward.py). Training
    episodes and demonstrations step this one; evaluations step `observed`, judged by the
    task's own success check (in the mirror: the simulator)."""
    if not config.reward_classifier:
        return observed
    from robostack.env.learned_reward import ClassifierReward
    from robostack.rl.classifier import SuccessClassifier
    from robostack.rl.featurize import uses_cached_features

    base = observed.unwrapped
    classifier = SuccessClassifier.load(config.reward_classifier, task=base.task.name,
                                        camera_sizes=base.camera_sizes)
    if uses_cached_features(config.sac) and not config.sac.pretrained_encoder:
        classifier.features_layer = config.sac.encoder_layer  # same backbone: reuse its features
    plausible = getattr(base.task, "plausible_success", None) if config.classifier_sanity else None
    return ClassifierReward(observed, classifier.probability, classifier.threshold,
                            config.classifier_consecutive, plausible)


CLASSIFIER_COLUMNS = {  # the episode log's per-frame record of a classifier reward (of next obs)
    "next.classifier_probability": ("float32", "classifier_probability"),
    "next.classifier_positive": ("bool", "classifier_positive"),
    "next.task_success": ("bool", "task_success"),
}


def rollout_log(path: str, env, task: str, classifier: bool):
    """The EpisodeWriter of an actor's rollouts: the env's observations (pixels), each camera
    with its capture times, and with a classifier reward its CLASSIFIER_COLUMNS."""
    from robostack.data.episode_log import EpisodeWriter, features_from_spaces, state_names, timestamp_sources

    features = features_from_spaces(env.observation_space, env.action_space,
                                    state_names=state_names(env.state_fields))
    if classifier:
        features.update({name: {"dtype": dtype, "shape": [1], "names": None}
                         for name, (dtype, _) in CLASSIFIER_COLUMNS.items()})
    return EpisodeWriter(path, fps=env.config.policy_hz, features=features, task=task,
                         timestamp_sources=timestamp_sources(env.observation_space))


def classifier_extras(info: dict) -> dict | None:
    """A step's CLASSIFIER_COLUMNS values (None without a classifier reward)."""
    if "classifier_probability" not in info:
        return None
    return {name: info[key] for name, (_, key) in CLASSIFIER_COLUMNS.items()}


# --- demonstrations -----------------------------------------------------------------------------


def collect_demonstrations(env, count: int, seed: int, noise: float, progress=print,
                           rng: np.random.Generator | None = None) -> list[dict]:
    """Run the task's scripted expert until `count` successful episodes are recorded. Resets
    (and the expert's noise) are seeded from `seed`, or drawn from `rng` when given (a restarted
    actor must not record the demonstrations it already recorded)."""
    base = env.unwrapped  # the RobotEnv under any observation wrapper (cached features)
    expert = base.task.expert(seed=seed if rng is None else int(rng.integers(2**31)), noise=noise)
    episodes, attempts, task_successes = [], 0, 0
    while len(episodes) < count:
        if attempts >= 5 * count:
            if task_successes > len(episodes):  # a learned reward (ClassifierReward) said no
                raise RuntimeError(
                    f"the reward classifier called success in {len(episodes)} of {attempts} scripted-"
                    f"expert episodes, the task's own check in {task_successes}: it misses successes. "
                    "Train it on more positive frames (robostack record-labels), or lower "
                    "--classifier-consecutive")
            raise RuntimeError(f"scripted expert succeeded only {len(episodes)}/{attempts} times")
        obs, _ = env.reset(seed=1_000_000 + seed * 10_000 + attempts if rng is None
                           else int(rng.integers(2**31)))
        attempts += 1
        expert.reset()
        # Every observation key (the state, and images/<camera> when the policy sees cameras); the
        # expert itself acts on env.fields(), the full state, whatever the policy observes.
        observations, actions, rewards, terms, truncs = [obs], [], [], [], []
        while True:
            action = expert(base.fields())
            obs, reward, terminated, truncated, info = env.step(action)
            observations.append(obs), actions.append(action), rewards.append(reward)
            terms.append(terminated), truncs.append(truncated)
            if terminated or truncated:
                break
        task_successes += bool(info.get("task_success", info["success"]))
        if info["success"]:
            episodes.append({
                "observations": {k: np.stack([o[k] for o in observations]) for k in obs},
                "actions": np.stack(actions),
                "rewards": np.array(rewards, np.float32), "terminations": np.array(terms),
                "truncations": np.array(truncs),
            })
    if progress:
        progress(f"demonstrations: {count} successful of {attempts} expert episodes")
    return episodes


def logged_demonstrations(log_dir: str, count: int, progress=print) -> list[dict]:
    """Up to `count` successful episodes of an episode log, as replay-buffer episodes."""
    from robostack.data.episode_log import EpisodeLog

    from robostack.data.episode_log.reader import skip_damaged

    log = EpisodeLog(log_dir)
    # A damaged episode (a file not matching its recorded checksum) is named and skipped.
    intact = skip_damaged(log, range(len(log)), video=False, say=progress)
    chosen = [i for i in intact if log.episodes[i].get("rl/success", True)][:count]
    if not chosen:
        raise SystemExit(f"{log_dir}: no intact successful episodes to use as demonstrations (the "
                         f"log has {len(log)}, {len(log) - len(intact)} damaged); record some with "
                         f"`robostack record-demos`")
    episodes = [piece for i in chosen for piece in log.transitions(i, images=False)]
    progress(f"demonstrations: {len(chosen)} successful episodes from {log_dir}")
    return episodes


def load_into_buffer(log, *, episodes: Sequence[int] | None = None, select: str = "all",
                     successful_only: bool = False, images: bool = True, extra_capacity: int = 0,
                     seed: int | None = None, device: str = "cpu"):
    """A demonstration ReplayBuffer holding the transitions of an episode log (an EpisodeLog or
    its folder; the selection as robostack.data.episode_log.logged_transitions takes it), the
    same (obs, action, reward, next obs, termination, truncation) as scripted-expert demos."""
    from robostack.data.episode_log import logged_transitions
    from robostack.rl.buffers import load_demonstrations

    pieces = logged_transitions(log, episodes=episodes, select=select,
                                successful_only=successful_only, images=images)
    return load_demonstrations(pieces, extra_capacity=extra_capacity, seed=seed, device=device)


# --- evaluation ---------------------------------------------------------------------------------

def evaluate(agent, env, episodes: int, seed: int, stop=None) -> dict | None:
    """Deterministic policy on `episodes` fixed seeds: success rate and mean time to success.
    `stop()`, asked before each episode, may cut the evaluation short: then None (a part of
    the seeds is not the same measurement)."""
    successes, times = 0, []
    for i in range(episodes):
        if stop is not None and stop():
            return None
        obs, _ = env.reset(seed=2_000_000 + seed * 10_000 + i)
        config = env.unwrapped.config  # the RobotEnv's, under any observation wrapper
        for t in range(config.max_episode_steps):
            obs, _, terminated, truncated, info = env.step(agent.act(obs, deterministic=True))
            if terminated or truncated:
                break
        if info["success"]:
            successes += 1
            times.append((t + 1) / config.policy_hz)
    return {"success_rate": successes / episodes,
            "time_to_success_s": round(float(np.mean(times)), 3) if times else float("nan")}
