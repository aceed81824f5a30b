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

A stand-alone pair shares the run's identity through run.json (run id and secret, created by the
learner in its --run-dir, mode 0600): an actor with the same --run-dir on the same machine reads
it there; an actor on another machine is given a copy of it (`--run-file PATH`, kept 0600). The
learner takes actor ids actor-0 .. actor-<N-1> with `--actors N` (default 1), and listens on
loopback unless told otherwise (actors on other machines: a network address, which the
transport binds only with CURVE keys, docs/security.md).

Every value is checked when a RunConfig is built (`VALID`: each numeric option's range), so a
bad option is a usage error before any process, env or file of the run exists. A run is resumed
only with the settings it recorded (`resume_differences`), except for the options in
`MAY_CHANGE_ON_RESUME`: the budget, the evaluation and progress cadence, timeouts and the
processes' pacing, none of which changes what is learned or from which data.

This module imports no process (learner, actor, launcher, trainer): they all import it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from robostack.config import MIRRORS, add_dataclass_arguments, dataclass_from_args, nested_prefix, usage_errors
from robostack.env.teleop import InterventionProtocol, intervention_device
from robostack.files import write_json_atomic
from robostack.rl.sac import SACConfig
from tasks import TASKS, parse_task_params

FLAT = {"option_prefix": ""}  # a section whose options read without a prefix


def default_sac_config() -> SACConfig:
    """The agent settings this trainer starts from (the CLI's --sac-* defaults come from here).

    init_temperature 0.01 (SERL/HIL-SERL): sparse rewards are at most 1, and the SACConfig default
    of 1.0 makes the entropy bonus swamp them for thousands of steps. 128x128 MLPs keep RLPD's
    10-critic ensemble (num_critics None -> 10 on state) affordable on a CPU: 256x256 x 10 costs
    ~2.5x more per update and pick_cube learns as fast with 128 (docs/learning/). encoder auto:
    see pixel_encoder.
    """
    return SACConfig(hidden_dims=(128, 128), init_temperature=0.01, encoder="auto")


@dataclass
class LaunchOptions:
    """The processes `robostack train` starts and supervises."""

    actors: int = 1  # actor processes, each with its own robot server
    restarts: int = 5  # times one process may be restarted within --restart-window before the run is abandoned (a crash loop)
    restart_window: float = 600.0  # s over which --restarts counts: a process that crashes now and then in a long run is always restarted
    progress_seconds: float = 10.0  # s between the launcher's progress lines
    pin_cpus: bool = True  # each actor shares a core with its robot server, the learner gets the rest (Linux, needs actors + 1 cores)
    arm_server: str = ""  # a robot server run apart, e.g. a real arm's (`robostack robot-server --backend franka|ur`): the one actor trains and evaluates on it, and no mirror is started ("": mirrors of the run's own)
    arm_camera_server: str = ""  # with --arm-server: the `robostack camera-server` publishing the run's --cameras (a real-time robot server renders none)
    arm_key: str = ""  # with --arm-server serving CURVE: the actor's CURVE key pair (NAME or path; docs/security.md)
    arm_server_key: str = ""  # with --arm-key: that robot server's CURVE public key
    arm_camera_server_key: str = ""  # with --arm-key: that camera server's CURVE public key

    def __post_init__(self):
        if self.arm_server and self.actors != 1:
            raise ValueError(f"--arm-server: one arm, one actor (--actors 1), got --actors {self.actors}")
        if (self.arm_camera_server or self.arm_key) and not self.arm_server:
            raise ValueError("--arm-camera-server / --arm-key go with --arm-server, the robot server run apart")
        if bool(self.arm_key) != bool(self.arm_server_key or self.arm_camera_server_key):
            raise ValueError("CURVE to the arm needs --arm-key (the actor's key pair) and the "
                             "servers' public keys (--arm-server-key, --arm-camera-server-key)")


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
    backend: str = "mujoco"  # mirror the robot servers run: mujoco (MuJoCo) or pybullet (PyBullet: the same Panda, tcp and controller); recorded, so a resume keeps it and `robostack eval` uses it unless told --backend
    seed: int = 0  # seeds env resets, networks, sampling (overrides --sac-seed); actor i and its robot server use seed + i
    total_steps: int = 20_000  # environment steps of online interaction
    demos: int = 20  # successful scripted-expert demonstrations in the demo buffer
    demo_noise: float = 0.1  # action noise of the expert while recording demos (variety)
    demo_log: str = ""  # episode log (robostack record-demos) to take the demos from instead of the scripted expert; its successful episodes are used, --demos caps how many
    learning_starts: int = 256  # env steps before the first update
    utd_ratio: int = 2  # critic updates per env step, overrides --sac-utd-ratio (RLPD: up to 20)
    demo_fraction: float = 0.5  # share of each batch drawn from the demo buffer (RLPD: 0.5)
    buffer_capacity: int = 200_000  # online replay capacity (transitions), lowered to fit --buffer-memory
    buffer_memory: float = 0.5  # the largest share of this machine's RAM the online replay buffer may take (its size is printed at start-up; pixels cost ~100 kB a transition)
    eval_every: int = 2_000  # env steps between evaluations (0: none but the final one)
    eval_episodes: int = 50  # episodes per evaluation (deterministic policy)
    final_eval_episodes: int = -1  # episodes of the final evaluation (-1: --eval-episodes, 0: none)
    final_eval_timeout: float = 900.0  # s the learner and its evaluator actor wait for the final evaluation
    progress_every: int = 500  # env steps between progress lines
    run_dir: str = "runs/train"  # where config, metrics, checkpoints and buffers go
    transport: str = "inprocess"  # --single-process: inprocess (robot server in this process) or zmq (subprocess)
    resume: bool = True  # continue the run in run_dir, refused if it recorded other settings (only the budget, evaluation/progress cadence, timeouts and pacing may change); false: move a previous run aside whole first
    threads: int = 1  # torch threads (one per process avoids oversubscribing small machines)
    max_episode_steps: int | None = None  # time limit override (None: the task's default)
    cameras: str = ""  # cameras the policy sees, comma-separated (pick_cube: front,wrist; reach: front): "images/<name>" observations the lock-step mirror renders from the state of each step; "": none, state only
    observed_state: str = ""  # state fields the policy sees, comma-separated, e.g. tcp_position,tcp_quaternion,tcp_velocity,gripper_width (proprioception, no object state); "": all of the task's
    normalize_state: bool = True  # standardise the state vector with the demos' mean/std
    intervention: str = ""  # who may take over mid-episode (HIL-SERL; their steps go to the demo buffer too): "" nobody; "autopilot": the scripted expert, per --autopilot-* (a simulated human); keyboard, gamepad, spacemouse: a person, while the deadman is held
    takeover_penalty: float = 0.0  # RLIF-style: reward minus this on the step a takeover starts (0: off)
    reward_classifier: str = ""  # a success classifier file (robostack train-classifier) as the only reward (HIL-SERL): success when --classifier-consecutive frames in a row score at or above its calibrated threshold and the task's sanity check agrees; the task's own success check then only evaluates; "": the task's reward
    classifier_consecutive: int = 2  # frames in a row the classifier must call success (1: the first)
    classifier_sanity: bool = True  # AND the classifier with the task's proprioceptive check (pick_cube: gripper closed, tcp above the table)
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
        check_values(self)
        from robostack.training.observed import check_cached_demos, check_observed, pixel_encoder

        check_observed(self)
        if self.cameras:  # without cameras "auto" stays (the CLI's default is built from RunConfig())
            self.sac = dataclasses.replace(self.sac, encoder=pixel_encoder(self))
        check_cached_demos(self)

    def final_episodes(self) -> int:
        """Episodes of the final evaluation (0: none)."""
        return self.eval_episodes if self.final_eval_episodes < 0 else self.final_eval_episodes


# --- valid values -------------------------------------------------------------------------------

def _at_least(low):
    return (lambda value: value >= low), f">= {low}"


_POSITIVE = (lambda value: value > 0), "> 0"
_FRACTION = (lambda value: 0 <= value <= 1), "between 0 and 1"
_RATE = (lambda value: 0 < value <= 1), "in (0, 1]"

# Each numeric option's valid values (option name without "--": (test, range in words)); None,
# where an option allows it, always passes, and a tuple must hold valid numbers only. An option
# not named here takes any value of its type.
VALID = {
    "seed": _at_least(0), "total-steps": _at_least(1), "demos": _at_least(0),
    "demo-noise": _at_least(0), "learning-starts": _at_least(0), "utd-ratio": _at_least(1),
    "demo-fraction": _FRACTION, "buffer-capacity": _at_least(1), "buffer-memory": _RATE, "eval-every": _at_least(0),
    "eval-episodes": _at_least(0), "final-eval-episodes": _at_least(-1),
    "final-eval-timeout": _POSITIVE, "progress-every": _at_least(1), "threads": _at_least(1),
    "max-episode-steps": _at_least(1), "takeover-penalty": _at_least(0),
    "classifier-consecutive": _at_least(1),
    # the simulated operator
    "autopilot-stuck-steps": _at_least(1), "autopilot-stuck-distance": _at_least(0),
    "autopilot-noise": _at_least(0),
    # the agent
    "sac-hidden-dims": _at_least(1), "sac-num-critics": _at_least(1), "sac-critic-subset": _at_least(1),
    "sac-actor-lr": _POSITIVE, "sac-critic-lr": _POSITIVE, "sac-temperature-lr": _POSITIVE,
    "sac-batch-size": _at_least(1), "sac-utd-ratio": _at_least(1),
    "sac-critic-actor-ratio": _at_least(1), "sac-discount": _RATE, "sac-tau": _RATE,
    "sac-init-temperature": _POSITIVE, "sac-latent-dim": _at_least(1),
    "sac-proprio-latent-dim": _at_least(1), "sac-image-pad": _at_least(0),
    "sac-grasp-hidden-dims": _at_least(1), "sac-grasp-lr": _POSITIVE, "sac-grasp-epsilon": _FRACTION,
    "sac-seed": _at_least(0),
    # the processes
    "actors": _at_least(1), "restarts": _at_least(0), "restart-window": _POSITIVE, "progress-seconds": _POSITIVE,
    "weights-every": _POSITIVE, "checkpoint-every": _POSITIVE, "max-lead": _at_least(0),
    "demo-wait": _at_least(0), "linger": _at_least(0), "intervention-capacity": _at_least(0),
    "batch-steps": _at_least(1), "request-timeout": _POSITIVE, "connect-timeout": _POSITIVE,
    "weights-timeout": _at_least(0), "robot-timeout": _POSITIVE, "max-steps": _at_least(0),
}
CHOICES = {
    "task": tuple(TASKS), "backend": MIRRORS, "transport": ("inprocess", "zmq"),
    "sac-gripper": ("continuous", "discrete"), "sac-encoder": ("auto", "conv", "drq", "resnet10", "resnet18", "efficientnet-lite0"),
    "sac-encoder-layer": ("stage3", "stage4", "stage5", "stage6", "head"),
}


def run_options(config) -> dict[str, object]:
    """Every option of a RunConfig as {option name without "--": value}, nested sections
    included under the names their command-line options have (--sac-batch-size, --actors)."""
    options = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            prefix = nested_prefix(f)
            options.update({prefix + name: v for name, v in run_options(value).items()})
        else:
            options[f.name.replace("_", "-")] = value
    return options


def check_values(config: RunConfig) -> None:
    """Raise ValueError naming every option whose value is out of its range (VALID, CHOICES)."""
    problems = []
    options = run_options(config)
    for name, value in options.items():
        if name in CHOICES and value not in CHOICES[name]:
            problems.append(f"--{name} {value!r}: choose one of {', '.join(CHOICES[name])}")
        if name not in VALID or value is None:
            continue
        test, words = VALID[name]
        values = value if isinstance(value, tuple) else (value,)
        if not values or not all(isinstance(v, (int, float)) and test(v) for v in values):
            problems.append(f"--{name} {format_value(value)}: must be {words}"
                            + (" (each of them)" if isinstance(value, tuple) else ""))
    subset, critics = options["sac-critic-subset"], options["sac-num-critics"]
    if critics is not None and subset > critics:
        problems.append(f"--sac-critic-subset {subset}: must be at most --sac-num-critics ({critics})")
    if problems:
        raise ValueError("; ".join(problems))


def format_value(value) -> str:
    """A value as it is written on the command line."""
    if isinstance(value, tuple):
        return " ".join(map(str, value))
    if isinstance(value, bool):
        return str(value).lower()
    return '""' if value == "" else str(value)


def check_paths(config: RunConfig) -> None:
    """Raise ValueError if a path the run reads from does not hold what it should (--demo-log:
    an episode log; --reward-classifier: a classifier of this task and these cameras). Not part of building a RunConfig: a recorded run stays readable after its
    demonstrations moved."""
    if config.demo_log:
        from robostack.data.episode_log import EpisodeLog, EpisodeLogError

        try:
            EpisodeLog(config.demo_log)
        except EpisodeLogError as exc:
            raise ValueError(f"--demo-log {config.demo_log}: not an episode log ({exc})") from None
    if config.reward_classifier:
        from robostack.training.observed import check_classifier

        check_classifier(config)


# --- resuming a run -------------------------------------------------------------------------------

# What a resumed run may do differently from what it recorded: how long it runs, how often it
# reports and evaluates, how long its processes wait for each other and how they pace
# themselves, where the robot server runs. Everything else (the task and its parameters, the
# seeds, demonstrations, networks, learning settings, operators, the number of actors) decides
# what is learned from which data, and must match. --sac-seed and --sac-utd-ratio may differ
# because --seed and --utd-ratio override them.
MAY_CHANGE_ON_RESUME = frozenset({
    "total-steps", "eval-every", "eval-episodes", "final-eval-episodes", "final-eval-timeout",
    "progress-every", "run-dir", "resume", "threads", "transport", "sac-compile",
    "sac-seed", "sac-utd-ratio",
    "restarts", "restart-window", "progress-seconds", "pin-cpus",
    "weights-every", "checkpoint-every", "max-lead", "demo-wait", "linger",
    "batch-steps", "request-timeout", "connect-timeout", "weights-timeout", "robot-timeout",
    "arm-server", "arm-camera-server", "arm-key", "arm-server-key", "arm-camera-server-key",
    "max-steps",
})


def resume_differences(recorded: RunConfig, given: RunConfig) -> list[tuple[str, str, str]]:
    """(option, recorded value, given value) for each option that differs and may not change
    when the recorded run is resumed with the given settings."""
    def same(name, a, b):
        if name == "task-params":  # "table_height=0.03" == "table_height=0.030"
            try:
                return parse_task_params(recorded.task, a) == parse_task_params(given.task, b)
            except ValueError:
                return a == b
        if name == "demo-log":
            return os.path.normpath(a) == os.path.normpath(b) if a and b else a == b
        if name == "sac-encoder":  # without cameras, auto is conv (runs from before auto say conv)
            return {a, b} <= {"auto", "conv"} if not (recorded.cameras or given.cameras) else a == b
        return a == b

    old, new = run_options(recorded), run_options(given)
    return [(f"--{name}", format_value(old[name]), format_value(new[name])) for name in new
            if name in old and name not in MAY_CHANGE_ON_RESUME and not same(name, old[name], new[name])]


class ResumeRefused(ValueError):
    """The run directory holds a run recorded with other settings than the ones given."""


def check_resumable(config: RunConfig) -> None:
    """With --resume true: raise ResumeRefused, listing the differences and the two ways out,
    if config.run_dir holds a run (its config.json) recorded with settings that may not change
    on resume. A directory without config.json holds no run to compare with."""
    path = Path(config.run_dir) / CONFIG_FILE
    if not config.resume or not path.is_file():
        return
    ways_out = (f"Either start a new run elsewhere (--run-dir OTHER_DIR), or replace this one "
                f"(--resume false moves it aside into {config.run_dir}/replaced-<time>/).")
    try:
        recorded = load_run_config(path)
    except (SystemExit, ValueError, TypeError) as exc:
        raise ResumeRefused(f"{config.run_dir} holds a run whose {CONFIG_FILE} cannot be read "
                            f"({exc}), so it cannot be resumed. {ways_out}") from None
    differences = resume_differences(recorded, config)
    if differences:
        width = max(len(option) for option, _, _ in differences)
        lines = "\n".join(f"  {option:<{width}}  recorded {old}, given {new}"
                          for option, old, new in differences)
        raise ResumeRefused(
            f"{config.run_dir} holds a run recorded with other settings; resuming it with these "
            f"would mix two runs:\n{lines}\n{ways_out} Options that may change on resume: "
            f"{', '.join('--' + name for name in sorted(MAY_CHANGE_ON_RESUME))}.")


# --- process identities: what differs between the processes of one run ----------------------

@dataclass
class LearnerIdentity:
    """Where the learner listens."""

    endpoint: str = "tcp://127.0.0.1:5600"  # actors' requests: hello, transitions, status (ROUTER, bound; loopback unless told: a network address needs CURVE keys, docs/security.md)
    weights_endpoint: str = "tcp://127.0.0.1:5601"  # weights broadcast to actors (PUB, bound; loopback unless told)
    curve_key: str = ""  # this learner's CURVE key pair (NAME in `robostack keys list`, or a path): both sockets then admit only allow-listed actors' keys; needed to listen on a network address (docs/security.md)


@dataclass
class ActorIdentity:
    """Which actor this is, and which learner and robot server it talks to."""

    actor_id: str = "actor-0"  # stable name: the learner numbers transitions per actor id
    index: int = 0  # this actor's number in the run: its episodes are seeded with --seed + index; actor 0 records the demonstrations
    learner: str = "tcp://127.0.0.1:5600"  # the learner's request endpoint
    weights: str = "tcp://127.0.0.1:5601"  # the learner's weights endpoint
    robot_server: str = ""  # robot server command endpoint ("": start one on loopback)
    actor_key: str = ""  # this actor's CURVE key pair (NAME or path), for a learner or robot server that serves with CURVE ("": plaintext, loopback/ipc only)
    learner_key: str = ""  # the learner's CURVE public key (NAME or path of its NAME.key, copied from its machine); with actor_key
    robot_server_key: str = ""  # the robot server's CURVE public key, for one serving with CURVE (--curve-key there); with actor_key
    camera_server: str = ""  # real time: the `robostack camera-server` publishing the run's --cameras (a real arm's robot server renders none); "": the robot server renders them
    camera_server_key: str = ""  # the camera server's CURVE public key, for one serving with CURVE; with actor_key
    spool_dir: str = ""  # where unacknowledged batches wait on disk ("": <run_dir>/spool/<actor-id>)
    run_file: str = ""  # the run's identity and secret, which the hello proves ("": <run_dir>/run.json, the learner's; on another machine, a copy of it, mode 0600)
    episode_log: str = ""  # episode log folder (LeRobot v3 layout) for the training rollouts ("": none)
    evaluator: bool = False  # run the learner's evaluations (deterministic policy)
    teleop_readings: str = ""  # a person's device readings, relayed by the launcher (PUB there; "": open --intervention's device here)
    teleop_view: str = ""  # where this actor shows its env's state to the launcher's live view (SUB there)


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
        return _from_dict(RunConfig, json.loads(path.read_text()))
    except (OSError, ValueError, TypeError, AttributeError) as exc:  # unreadable, or values out of range
        raise SystemExit(f"{path}: not a readable run configuration ({exc})") from None


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

def parse_run_options(parser: argparse.ArgumentParser, argv, *identities, starts_run: bool = False) -> tuple:
    """Parse a process's command line: the RunConfig options (their defaults from `--config
    FILE` when given, else RunConfig's), plus one option group per identity class. Returns
    (config, *identity instances, args). Invalid values are usage errors (exit code 2), and so,
    for the command that starts a run (`starts_run`: `robostack train`, either mode), is resuming
    a run recorded with other settings (check_resumable)."""
    argv = list(argv)
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--config", default="")
    known, _ = first.parse_known_args(argv)
    defaults = RunConfig()
    if known.config:
        # The file lives in its run directory: that is where this process works unless told.
        defaults = dataclasses.replace(load_run_config(known.config),
                                       run_dir=str(Path(known.config).parent))
    if parser.usage is None:  # argparse's own would list all ~70 options above every error
        parser.usage = f"{parser.prog} [options]   ({parser.prog} --help lists them)"
    parser.add_argument("--config", default="", help="a run's config.json to take the run options from "
                        "(`robostack train` passes its children the run's own); options given beside it override it")
    add_dataclass_arguments(parser, RunConfig, defaults=defaults)
    for identity in identities:
        add_dataclass_arguments(parser, identity)
    args = parser.parse_args(argv)
    with usage_errors(parser):  # e.g. an unknown --intervention, --autopilot-start 5 2
        config = dataclass_from_args(RunConfig, args, defaults=defaults)
        check_paths(config)
        if starts_run:
            check_resumable(config)
    return (config, *(dataclass_from_args(identity, args) for identity in identities), args)
