"""The training run's configuration."""

from __future__ import annotations

from dataclasses import dataclass, field

from robostack.env.teleop import InterventionProtocol, intervention_device
from robostack.rl.sac import SACConfig


@dataclass
class TrainConfig:
    """What to train, for how long, and how to measure it."""

    task: str = "pick_cube"  # task name (pick_cube, reach)
    seed: int = 0  # seeds env resets, networks, sampling (overrides --sac-seed)
    total_steps: int = 20_000  # environment steps of online interaction
    demos: int = 20  # successful scripted-expert demonstrations in the demo buffer
    demo_noise: float = 0.1  # action noise of the expert while recording demos (variety)
    demo_log: str = ""  # episode log (robostack record-demos) to take the demos from instead of the scripted expert; its successful episodes are used, --demos caps how many
    learning_starts: int = 256  # env steps before the first update
    utd_ratio: int = 2  # critic updates per env step, overrides --sac-utd-ratio (RLPD: up to 20)
    demo_fraction: float = 0.5  # share of each batch drawn from the demo buffer (RLPD: 0.5)
    buffer_capacity: int = 200_000  # online replay capacity (transitions)
    eval_every: int = 2_000  # env steps between evaluations
    eval_episodes: int = 50  # episodes per evaluation (deterministic policy)
    progress_every: int = 500  # env steps between progress lines
    run_dir: str = "runs/train"  # where config, metrics, checkpoints and buffers go
    transport: str = "inprocess"  # inprocess (robot server in this process) or zmq (subprocess)
    resume: bool = True  # continue from run_dir's latest checkpoint if there is one
    threads: int = 1  # torch threads (one per process avoids oversubscribing small machines)
    max_episode_steps: int | None = None  # time limit override (None: the task's default)
    normalize_state: bool = True  # standardise the state vector with the demos' mean/std
    intervention: str = ""  # who may take over mid-episode (HIL-SERL; their steps go to the demo buffer too): "" nobody; "autopilot": the scripted expert, per --autopilot-* (a simulated human); keyboard, gamepad, spacemouse: a person, while the deadman is held
    takeover_penalty: float = 0.0  # RLIF-style: reward minus this on the step a takeover starts (0: off)
    autopilot: InterventionProtocol = field(default_factory=InterventionProtocol)
    sac: SACConfig = field(default_factory=lambda: default_sac_config())

    def __post_init__(self):
        if self.intervention:  # a clear error before any process or env starts
            self.intervention = intervention_device(self.intervention)


def default_sac_config() -> SACConfig:
    """The agent settings this trainer starts from (the CLI's --sac-* defaults come from here).

    init_temperature 0.01 (SERL/HIL-SERL): sparse rewards are at most 1, and the SACConfig default
    of 1.0 makes the entropy bonus swamp them for thousands of steps. 128x128 MLPs keep RLPD's
    10-critic ensemble (num_critics None -> 10 on state) affordable on a CPU: 256x256 x 10 costs
    ~2.5x more per update and pick_cube learns as fast with 128 (docs/learning/).
    """
    return SACConfig(hidden_dims=(128, 128), init_temperature=0.01)
