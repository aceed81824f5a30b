"""Cached frozen features: a run whose SAC encoder is a frozen pretrained network
(`--sac-encoder efficientnet-lite0`) computes each camera frame's features once, in the actor,
and from there on its observations carry them instead of pixels:

    "images/<cam>"   uint8 (H, W, 3)  ->  "features/<cam>"  float16 (h, w, C)

The actor acts on them, sends them to the learner, and the learner stores them once per frame
(robostack/rl/buffers.py) and trains only a small head over them (pretrained.FeatureHead):
about 10x cheaper per update than an end-to-end conv encoder (benchmarks/bench_frozen_encoder.py).
The env, the episode log and replay keep the pixels. The cost moves to the actor: ~8-13 ms per
128 px frame on one core.

(h, w, C) is the buffers' frame layout (HWC in the env, CHW once stored); FrozenFeatures returns
channels-last tensors, so the permute below is free and FeatureHead reads the stored CHW batch
without a copy. Augmentation works on pixels, so features are not augmented (image_pad ignored).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from robostack.rl.networks import FEATURE_PREFIX, IMAGE_PREFIX, writable_tensor

FROZEN_ENCODERS = ("efficientnet-lite0",)


def uses_cached_features(sac_config) -> bool:
    return sac_config.encoder in FROZEN_ENCODERS


def feature_space(sac_config, observation_space: gym.spaces.Dict) -> gym.spaces.Dict:
    """The policy's observation space: `observation_space` with each camera's images replaced by
    its features when the config's encoder is frozen and cached; otherwise unchanged."""
    if not uses_cached_features(sac_config):
        return observation_space
    from robostack.rl.pretrained import LAYERS, FrozenFeatures

    layer = sac_config.encoder_layer
    if layer not in LAYERS:
        raise ValueError(f"--sac-encoder-layer {layer!r}: one of {', '.join(LAYERS)}")
    spaces = {}
    for key, space in observation_space.spaces.items():
        if key.startswith(IMAGE_PREFIX):
            height, width, _ = space.shape
            c, h, w = FrozenFeatures.shape_at(layer, height, width)
            spaces[FEATURE_PREFIX + key[len(IMAGE_PREFIX):]] = gym.spaces.Box(
                -np.inf, np.inf, (h, w, c), np.float16)
        else:
            spaces[key] = space
    return gym.spaces.Dict(spaces)


class CachedFeatures:
    """The frozen encoder of a run: `observation(obs)` and `episode(observations)` replace every
    "images/<cam>" by its "features/<cam>" (float16 (h, w, C))."""

    def __init__(self, sac_config):
        from robostack.rl.pretrained import FrozenFeatures

        self.config = sac_config
        self.encoder = FrozenFeatures(sac_config.encoder_layer, sac_config.pretrained_encoder or None)

    def _features(self, images: np.ndarray) -> np.ndarray:
        """(B, H, W, 3) uint8 -> (B, h, w, C) float16."""
        chw = writable_tensor(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
        return self.encoder(chw).permute(0, 2, 3, 1).numpy()  # channels-last: a view

    def observation(self, obs: dict) -> dict:
        out = {}
        for key, value in obs.items():
            if key.startswith(IMAGE_PREFIX):
                out[FEATURE_PREFIX + key[len(IMAGE_PREFIX):]] = self._features(np.asarray(value)[None])[0]
            else:
                out[key] = value
        return out

    def episode(self, observations: dict, chunk: int = 16) -> dict:
        """The same for stacked observations {key: (T, ...)}, `chunk` frames per encoder call
        (16: at 32 or 64 the backbone's activations cost more in page faults than in arithmetic,
        8.7 against 11.7 and 16.7 ms a 128 px frame on one core)."""
        out = {}
        for key, value in observations.items():
            if key.startswith(IMAGE_PREFIX):
                out[FEATURE_PREFIX + key[len(IMAGE_PREFIX):]] = np.concatenate(
                    [self._features(value[i:i + chunk]) for i in range(0, len(value), chunk)])
            else:
                out[key] = value
        return out


def policy_env(env: gym.Env, sac_config) -> gym.Env:
    """`env` as the policy of `sac_config` observes it: wrapped in FeatureObservations when its
    encoder is frozen and cached, else `env` itself. The actor, the single-process trainer and
    `robostack eval` all act through this."""
    if not uses_cached_features(sac_config):
        return env
    return FeatureObservations(env, CachedFeatures(sac_config))


class FeatureObservations(gym.ObservationWrapper):
    """An env whose observations carry cached features instead of pixels; `raw` is the latest
    observation with its pixels (what the episode log records)."""

    def __init__(self, env: gym.Env, features: CachedFeatures):
        super().__init__(env)
        self.features = features
        self.observation_space = feature_space(features.config, env.observation_space)
        self.raw: dict | None = None

    def observation(self, observation: dict) -> dict:
        self.raw = observation
        return self.features.observation(observation)
