"""The learned reward as a wrapper of the training env: a success classifier decides success
(HIL-SERL), not the task's own check, which on a real arm does not exist.

    env = ClassifierReward(env, classifier.probability, classifier.threshold, consecutive=2,
                           plausible=task.plausible_success)
    obs, reward, terminated, truncated, info = env.step(action)

Each step the classifier scores the new observation's frames. Success is declared when
`consecutive` frames in a row scored at or above the threshold (k = 1: the first one) and, if
the task declares one, its proprioceptive sanity check agrees (pick_cube: gripper closed, tcp
above the table): a frame that fools the classifier with the arm somewhere implausible does not
pay. Reward 1 on that step, else 0; the episode terminates there. The task's own failure check
still ends an episode; its success check no longer does.
info: "success" (the classifier's decision: what the run counts), "task_success" (the task's
own check: in the mirror the simulator's ground truth, for measuring the classifier while it is
used), "classifier_probability", "classifier_positive" (this frame at or above the threshold),
"classifier_plausible".
A person overrides it: the InterventionWrapper sits above this one (make_training_env), and a
success or failure label from the operator's device ends the episode with the operator's reward.

Where the policy observes cached features (rl/featurize.py FeatureObservations), this wrapper sits
above that one, and `probability` gets the features and the frame's pixels (`raw`) together:
a classifier on the same frozen cut reuses the features, any other takes the pixels.
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym


class ClassifierReward(gym.Wrapper):
    def __init__(self, env: gym.Env, probability: Callable[[dict], float], threshold: float,
                 consecutive: int = 1, plausible: Callable[[dict], bool] | None = None):
        super().__init__(env)
        if consecutive < 1:
            raise ValueError(f"consecutive must be >= 1 (frames in a row above the threshold), got {consecutive}")
        self.probability, self.threshold = probability, float(threshold)
        self.consecutive, self.plausible = int(consecutive), plausible
        self.run = 0  # frames in a row at or above the threshold
        self.counts = dict.fromkeys(("tp", "fp", "tn", "fn"), 0)  # frames, this episode

    def reset(self, **kwargs):
        self.run = 0
        self.counts = dict.fromkeys(self.counts, 0)
        return self.env.reset(**kwargs)

    def _inputs(self, obs: dict) -> dict:
        raw = getattr(self.env, "raw", None)  # the pixels under cached features
        return {**raw, **obs} if isinstance(raw, dict) else obs

    def step(self, action):
        obs, _, terminated, truncated, info = self.env.step(action)
        p = float(self.probability(self._inputs(obs)))
        positive = p >= self.threshold
        self.run = self.run + 1 if positive else 0
        plausible = True if self.plausible is None else bool(self.plausible(self.env.unwrapped.fields()))
        success = self.run >= self.consecutive and plausible
        task_success = bool(info.get("success", False))
        failure = terminated and not task_success  # the task's own failure check still counts
        self.counts[("t" if positive == task_success else "f") + ("p" if positive else "n")] += 1
        info = {**info, "success": success, "task_success": task_success,
                "classifier_probability": p, "classifier_positive": positive,
                "classifier_plausible": plausible}
        ended = success or failure
        if terminated and not ended:  # the env stopped at its own success check, so it did not
            base = self.env.unwrapped  # say whether the time limit came too
            truncated = truncated or base.elapsed_steps >= base.config.max_episode_steps
        if ended or truncated:
            info["classifier_frames"] = dict(self.counts)
        return obs, 1.0 if success else 0.0, ended, truncated and not ended, info


def episode_classifier_stats(info: dict) -> dict:
    """The episode summary's classifier fields from the last step's info (empty without one):
    frame counts against the task's own check and whether the episode's success was false."""
    frames = info.get("classifier_frames")
    if frames is None:
        return {}
    return {**{f"classifier_{k}": int(v) for k, v in frames.items()},
            "false_success": bool(info["success"] and not info["task_success"])}
