"""The training run's configuration: one nested `RunConfig`, written to <run_dir>/config.json.

Every option of a run lives here once: what to train and how to measure it (the top level),
the agent (`sac`, options `--sac-*`), the simulated operator (`autopilot`, `--autopilot-*`),
and the processes' own settings (`launch`, `learner`, `actor`, whose options read without a
prefix: `--actors`, `--checkpoint-every`, `--batch-steps`). Both training modes take the same
RunConfig; each process uses the part that concerns it.

`robostack train` writes the run's config.json once, and its children read it back
(`--config <run_dir>/config.json`) with only their identity beside it on the command line
(`LearnerIdentity`, `ActorIdentity`: endpoints, actor id). A stand-alone `robostack learner` or
`robostack actor` takes the same options directly; with `--config`, options given on its
command line override the file's.

This module imports no process (learner, actor, launcher, trainer): they all import it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from robostack.config import add_dataclass_arguments, dataclass_from_args, usage_errors
from robostack.env.teleop import InterventionProtocol, intervention_device
from robostack.files import write_json_atomic
from robostack.rl.sac import SACConfig
from tasks import parse_task_params

FLAT = {"option_prefix": ""}  # a section whose options read without a prefix


def default_sac_config() -> SACConfig:
    """The agent settings this trainer starts from (the CLI's --sac-* defaults come from here).

    init_temperature 0.01 (SERL/HIL-SERL): sparse rewards are at most 1, and the SACConfig default
    of 1.0 makes the entropy bonus swamp them for thousands of steps. 128x128 MLPs keep RLPD's
    10-critic ensemble (num_critics None -> 10 on state) affordable on a CPU: 256x256 x 10 costs
    ~2.5x more per update and pick_cube learns as fast with 128 (docs/learning/).
    """
    return SACConfig(hidden_dims=(128, 128), init_temperature=0.01)


@dataclass
class LaunchOptions:
    """The processes `robostack train` starts and supervises."""

    actors: int = 1  # actor processes, each with its own robot server
    restarts: int = 3  # times a crashed process is restarted before the run is abandoned
    progress_seconds: float = 10.0  # s between the launcher's progress lines
    pin_cpus: bool = True  # each actor shares a core with its robot server, the learner gets the rest (Linux, needs actors + 1 cores)


@dataclass
class LearnerOptions:
    """How the learner paces itself, hands out weights and keeps its state."""

    weights_every: float = 0.5  # s between weight broadcasts while training
    checkpoint_every: float = 30.0  # s between learner checkpoints; actors spool what none holds yet
    max_lead: int = 64  # env steps actors may run ahead of the learner's UTD target (0: never pause them)
    demo_wait: float = 300.0  # s to wait for --demos demonstrations before training without them
    linger: float = 10.0  # s to collect actors' last transitions after the step budget is reached
    intervention_capacity: int = 50_000  # demo-buffer room for intervention transitions


@dataclass
class ActorOptions:
    """How an actor batches its transitions and how long it waits for its peers."""

    batch_steps: int = 32  # transitions per actor -> learner batch (a batch also closes at every episode end)
    request_timeout: float = 2.0  # s, each request to the learner
    connect_timeout: float = 120.0  # s to wait for the first handshake with the learner
    weights_timeout: float = 30.0  # s to wait for first weights before acting with initial ones
    robot_timeout: float = 300.0  # s to wait for a lost (or not yet started) robot server
    max_steps: int = 0  # an actor stops after this many env steps (0: when the learner says done)


@dataclass
class RunConfig:
    """What to train, for how long, and how to measure it."""

    task: str = "pick_cube"  # task name (pick_cube, reach)
    task_params: str = ""  # the task's physical parameters, "name=value,name=low:high" (a range: drawn per episode); "": the task's defaults
    seed: int = 0  # seeds env resets, networks, sampling (overrides --sac-seed); actor i and its robot server use seed + i
    total_steps: int = 20_000  # environment steps of online interaction
    demos: int = 20  # successful scripted-expert demonstrations in the demo buffer
    demo_noise: float = 0.1  # action noise of the expert while recording demos (variety)
    demo_log: str = ""  # episode log (robostack record-demos) to take the demos from instead of the scripted expert; its successful episodes are used, --demos caps how many
    learning_starts: int = 256  # env steps before the first update
    utd_ratio: int = 2  # critic updates per env step, overrides --sac-utd-ratio (RLPD: up to 20)
    demo_fraction: float = 0.5  # share of each batch drawn from the demo buffer (RLPD: 0.5)
    buffer_capacity: int = 200_000  # online replay capacity (transitions)
    eval_every: int = 2_000  # env steps between evaluations (0: none but the final one)
    eval_episodes: int = 50  # episodes per evaluation (deterministic policy)
    final_eval_episodes: int = -1  # episodes of the final evaluation (-1: --eval-episodes, 0: none)
    final_eval_timeout: float = 900.0  # s the learner and its evaluator actor wait for the final evaluation
    progress_every: int = 500  # env steps between progress lines
    run_dir: str = "runs/train"  # where config, metrics, checkpoints and buffers go
    transport: str = "inprocess"  # --single-process: inprocess (robot server in this process) or zmq (subprocess)
    resume: bool = True  # continue from run_dir's latest checkpoint if there is one; false: move a previous run aside first
    threads: int = 1  # torch threads (one per process avoids oversubscribing small machines)
    max_episode_steps: int | None = None  # time limit override (None: the task's default)
    normalize_state: bool = True  # standardise the state vector with the demos' mean/std
    intervention: str = ""  # who may take over mid-episode (HIL-SERL; their steps go to the demo buffer too): "" nobody; "autopilot": the scripted expert, per --autopilot-* (a simulated human); keyboard, gamepad, spacemouse: a person, while the deadman is held
    takeover_penalty: float = 0.0  # RLIF-style: reward minus this on the step a takeover starts (0: off)
    autopilot: InterventionProtocol = field(default_factory=InterventionProtocol)
    sac: SACConfig = field(default_factory=default_sac_config)
    launch: LaunchOptions = field(default_factory=LaunchOptions, metadata=FLAT)
    learner: LearnerOptions = field(default_factory=LearnerOptions, metadata=FLAT)
    actor: ActorOptions = field(default_factory=ActorOptions, metadata=FLAT)

    def __post_init__(self):
        # Clear errors before any process or env starts.
        if self.intervention:
            self.intervention = intervention_device(self.intervention)
        parse_task_params(self.task, self.task_params)  # an unknown name or a bad number

    def final_episodes(self) -> int:
        """Episodes of the final evaluation (0: none)."""
        return self.eval_episodes if self.final_eval_episodes < 0 else self.final_eval_episodes


# The name this configuration had before it held the processes' options too (still used by
# benchmarks/bench_actor_learner.py and tests/robostack/test_record.py).
TrainConfig = RunConfig


# --- process identities: what differs between the processes of one run ----------------------

@dataclass
class LearnerIdentity:
    """Where the learner listens."""

    endpoint: str = "tcp://*:5600"  # actors' requests: hello, transitions, status (ROUTER, bound)
    weights_endpoint: str = "tcp://*:5601"  # weights broadcast to actors (PUB, bound)


@dataclass
class ActorIdentity:
    """Which actor this is, and which learner and robot server it talks to."""

    actor_id: str = "actor-0"  # stable name: the learner numbers transitions per actor id
    index: int = 0  # this actor's number in the run: its episodes are seeded with --seed + index; actor 0 records the demonstrations
    learner: str = "tcp://127.0.0.1:5600"  # the learner's request endpoint
    weights: str = "tcp://127.0.0.1:5601"  # the learner's weights endpoint
    robot_server: str = ""  # robot server command endpoint ("": start one on loopback)
    spool_dir: str = ""  # where unacknowledged batches wait on disk ("": <run_dir>/spool/<actor-id>)
    episode_log: str = ""  # episode log folder (LeRobot v3 layout) for the training rollouts ("": none)
    evaluator: bool = False  # run the learner's evaluations (deterministic policy)


def identity_argv(identity) -> list[str]:
    """A process identity as the command-line options its process parses back."""
    args = []
    for f in dataclasses.fields(identity):
        value = getattr(identity, f.name)
        args += [f"--{f.name.replace('_', '-')}", str(value).lower() if isinstance(value, bool) else str(value)]
    return args


# --- config.json --------------------------------------------------------------------------------

CONFIG_FILE = "config.json"


def write_run_config(config: RunConfig, **extra) -> Path:
    """<run_dir>/config.json: the whole RunConfig, plus `extra` keys (mode, endpoints) that
    reading it back ignores."""
    path = Path(config.run_dir) / CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {**dataclasses.asdict(config), **extra})
    return path


def load_run_config(path: str | os.PathLike) -> RunConfig:
    """The RunConfig a config.json holds. Keys it does not know (another version's, or the extra
    keys beside the config) are skipped; options it lacks keep their defaults."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"{path}: not a readable run configuration ({exc})") from None
    return _from_dict(RunConfig, data)


def _from_dict(cls, data: dict):
    values = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default):
            value = _from_dict(type(default), value) if isinstance(value, dict) else default
        elif isinstance(value, list):
            value = tuple(value)
        values[f.name] = value
    return cls(**values)


# --- command line -------------------------------------------------------------------------------

def parse_run_options(parser: argparse.ArgumentParser, argv, *identities) -> tuple:
    """Parse a process's command line: the RunConfig options (their defaults from `--config
    FILE` when given, else RunConfig's), plus one option group per identity class. Returns
    (config, *identity instances, args). Invalid values are usage errors (exit code 2)."""
    argv = list(argv)
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--config", default="")
    known, _ = first.parse_known_args(argv)
    defaults = RunConfig()
    if known.config:
        # The file lives in its run directory: that is where this process works unless told.
        defaults = dataclasses.replace(load_run_config(known.config),
                                       run_dir=str(Path(known.config).parent))
    parser.add_argument("--config", default="", help="a run's config.json to take the run options from "
                        "(`robostack train` passes its children the run's own); options given beside it override it")
    add_dataclass_arguments(parser, RunConfig, defaults=defaults)
    for identity in identities:
        add_dataclass_arguments(parser, identity)
    args = parser.parse_args(argv)
    with usage_errors(parser):  # e.g. an unknown --intervention, --autopilot-start 5 2
        config = dataclass_from_args(RunConfig, args, defaults=defaults)
    return (config, *(dataclass_from_args(identity, args) for identity in identities), args)
