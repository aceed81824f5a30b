"""robostack: robot-arm manipulation with sample-efficient RL, on real arms or in a simulated mirror.

Importing robostack registers its gymnasium environments, so that after `import robostack`

    env = gymnasium.make("robostack/PickCube-v0")          # robot server started on loopback
    env = gymnasium.make("robostack/Reach-v0", transport_kind="inprocess", seed=3)

works as with any gymnasium package (keyword arguments are those of robostack.env.make_env). The
entry points are strings, so this imports gymnasium only, not the env, torch or an engine.
"""

from __future__ import annotations

ENV_IDS = {"robostack/PickCube-v0": "pick_cube", "robostack/Reach-v0": "reach"}


def _register_envs() -> None:
    try:
        import gymnasium
    except ImportError:  # pragma: no cover - a core dependency; robostack.env needs it anyway
        return
    for env_id, task in ENV_IDS.items():
        if env_id not in gymnasium.registry:
            # No max_episode_steps: the env truncates at the task's own time limit (truncated,
            # never terminated), so gymnasium's TimeLimit wrapper must not add a second one.
            gymnasium.register(env_id, entry_point="robostack.env.env:make_env", kwargs={"task": task})


_register_envs()
