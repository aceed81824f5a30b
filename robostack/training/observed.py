"""What a run's policy observes, decided before any process starts: which cameras and state
fields (--cameras, --observed-state, checked against the task; `task_config`, the TaskConfig
the run's envs use) and, with cameras, which pixel encoder `--sac-encoder auto` means on this
machine."""

from __future__ import annotations

import dataclasses


def names(text: str) -> tuple[str, ...]:
    """"front, wrist" -> ("front", "wrist"); "" -> ()."""
    return tuple(n.strip() for n in text.split(",")) if text.strip() else ()


def task_config(config):
    """The TaskConfig a run's envs use (RunConfig `config`): the task's own, with the run's task
    parameters (--task-params), time limit and what the policy observes (--cameras,
    --observed-state); None when the run changes none of them (the env then takes the robot
    server's). An env checks these parameters against its server's."""
    if (config.max_episode_steps is None and not config.task_params and not config.cameras
            and not config.observed_state):
        return None
    from tasks import make_task, parse_task_params

    task_config = make_task(config.task, params=parse_task_params(config.task, config.task_params)).config
    if config.max_episode_steps is not None:
        task_config = dataclasses.replace(task_config, max_episode_steps=config.max_episode_steps)
    return dataclasses.replace(task_config, cameras=names(config.cameras),
                               observed_state=names(config.observed_state))


def pixel_encoder(config) -> str:
    """--sac-encoder auto, resolved once (config.json records the choice): with cameras, the
    frozen cached EfficientNet-Lite0 on a CPU learner when its package is installed (an
    end-to-end update there costs ~10x more, docs/learning/pick_cube_vision.md), end to end
    ("conv") on a GPU; without cameras it does not matter ("conv")."""
    if config.sac.encoder != "auto":
        return config.sac.encoder
    if not config.cameras:
        return "conv"
    from robostack.rl.pretrained import vision_packages_installed
    from robostack.rl.sac import resolve_device

    if resolve_device(config.sac.device) != "cpu":
        return "conv"
    return "efficientnet-lite0" if vision_packages_installed() else "conv"


def check_cached_demos(config) -> None:
    """A frozen cached encoder cannot use --demo-log yet: the log holds pixels, and their
    features would have to be computed in the learner."""
    from robostack.rl.featurize import uses_cached_features

    if config.demo_log and uses_cached_features(config.sac):
        raise ValueError("--demo-log with a frozen cached encoder (--sac-encoder "
                         f"{config.sac.encoder}) is not supported yet: the log's pixels would need "
                         "their features computed by the learner; use the scripted expert's "
                         "demonstrations (--demos) or --sac-encoder conv")


def check_observed(config) -> None:
    """--cameras and --observed-state name what the task has (ValueError naming what it has)."""
    from robostack.env.spaces import camera_sizes, observed_fields
    from tasks import make_task

    for option in ("cameras", "observed_state"):
        if any(not n for n in names(getattr(config, option))):
            raise ValueError(f"--{option.replace('_', '-')} takes names separated by commas, got "
                             f"{getattr(config, option)!r}")
    task = make_task(config.task, task_config(config))  # what the run's envs will observe
    try:
        camera_sizes(task), observed_fields(task)
    except ValueError as error:
        raise ValueError(f"--cameras/--observed-state: {error}") from None


def check_classifier(config) -> None:
    """--reward-classifier names a classifier file of this task that looks at cameras the run
    observes, at their sizes (ValueError naming the difference and the fix)."""
    from robostack.env.spaces import camera_sizes
    from robostack.rl.classifier import SuccessClassifier
    from tasks import make_task

    task = make_task(config.task, task_config(config))
    try:
        SuccessClassifier.load(config.reward_classifier, task=config.task, camera_sizes=camera_sizes(task))
    except (OSError, ValueError) as error:
        raise ValueError(f"--reward-classifier: {error}") from None
