"""The gymnasium env and what belongs to it: the observation space, the action <-> target
mapping (actions.py), teleop devices by name (teleop.py) and the training-env wrappers."""

from robostack.env.env import ROBOT_FIELDS, RobotEnv, make_env

__all__ = ["ROBOT_FIELDS", "RobotEnv", "make_env"]
