"""`robostack eval --run DIR`: success rate and mean time to success of a run's latest policy.

Loads the newest intact checkpoint of DIR (written by `robostack train`, either mode), rebuilds
the agent from the configuration stored in it, and runs the deterministic policy (the mean
action) for N episodes on fixed seeds against a robot server: the one at --robot-server, or a
fresh one on loopback (started with the run's task parameters and mirror, or with --task-params
and --backend: a policy trained in the MuJoCo mirror evaluated in the PyBullet one, or back).

Each evaluation writes its own result file, DIR/evals/eval-<time>-<N>ep.json (with other task
parameters or another mirror: ...-<N>ep-<params>-<backend>.json), with the backend it ran in,
says where, and adds a row to DIR/metrics.csv that names that file (column standalone_eval; not
with other task parameters or mirror: metrics.csv describes what the run trained on). The run's own final evaluation, DIR/eval.json, is never touched,
except by `robostack train` itself (--as-final-eval, when its learner could not evaluate).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import torch

from robostack.config import add_dataclass_arguments, dataclass_from_args, usage_errors
from robostack.env.remote import RemoteServers
from robostack.files import write_json_atomic
from robostack.training.run_dir import METRICS_FIELDS, read_csv, write_csv


def load_policy(run_dir: Path, observation_space, action_space):
    """(agent, checkpoint) from the run's newest checkpoint that verifies."""
    from robostack.rl.checkpoint import load_latest_checkpoint
    from robostack.rl.sac import SACConfig, build_agent

    checkpoint = load_latest_checkpoint(run_dir)
    if checkpoint is None:
        raise SystemExit(f"robostack eval: {run_dir} has no checkpoint (checkpoints/ckpt_*.pt); "
                         f"train first, or point --run at a run directory")
    state = checkpoint.state["agent"]
    names = {f.name for f in dataclasses.fields(SACConfig)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in state["config"].items()
              if k in names}
    agent = build_agent(dataclasses.replace(SACConfig(**values), compile=False, device="cpu"),
                        observation_space, action_space)
    agent.load_state_dict(state, checkpoint.state.get("state_scale"))
    return agent, checkpoint


def evaluate_run(run_dir: str | os.PathLike, episodes: int, robot_server: str = "",
                 seed: int | None = None, task_params: str | None = None,
                 as_final_eval: bool = False, say=print, backend: str | None = None,
                 remote: RemoteServers | None = None) -> dict:
    """Evaluate the run's latest policy; the result goes to a file of its own (result_path),
    and, with the run's own task parameters, to a metrics.csv row naming that file.
    `task_params` (a --task-params string) overrides the run's task parameters for this
    evaluation only, and `backend` (a --backend name) the run's mirror. `as_final_eval`: the run's final evaluation (eval.json, a final row), what
    the launcher asks for when its learner could not evaluate. `remote`: the camera server and
    CURVE keys of the robot server at `robot_server`."""
    from robostack.training.config import load_run_config
    from robostack.training.rollouts import evaluate, open_env

    torch.set_num_threads(1)
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise SystemExit(f"robostack eval: no config.json in {run_dir}: not a run directory")
    config = load_run_config(config_path)
    trained_backend = config.backend
    other_params = task_params is not None and task_params != config.task_params
    other_backend = backend is not None and backend != config.backend
    override = other_params or other_backend
    config = dataclasses.replace(config, task_params=task_params if other_params else config.task_params,
                                 backend=backend if other_backend else config.backend)
    seed = config.seed if seed is None else seed
    if robot_server and override:
        raise SystemExit("robostack eval: --task-params and --backend need a robot server of its own "
                         "(the one at --robot-server runs with its own parameters and backend); "
                         "leave out --robot-server")
    from robostack.rl.featurize import policy_env

    env = policy_env(open_env(config, seed, robot_server, **(remote or RemoteServers()).env_options()),
                     config.sac)  # cached features, if any
    ran_in = env.unwrapped.server_info.get("backend", config.backend)  # a given server's own
    try:
        agent, checkpoint = load_policy(run_dir, env.observation_space, env.action_space)
        env_steps = int(checkpoint.state.get("env_steps", checkpoint.step))
        start = time.perf_counter()
        result = evaluate(agent, env, episodes, seed)
    finally:
        env.close()
    result = {**result, "episodes": episodes, "env_steps": env_steps, "backend": ran_in,
              "trained_backend": trained_backend, "task_params": config.task_params,
              "seed": seed, "checkpoint": str(checkpoint.path),
              "evaluated_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "seconds": round(time.perf_counter() - start, 1)}
    path = run_dir / "eval.json" if as_final_eval else result_path(
        run_dir, episodes, config.task_params if other_params else "", ran_in if other_backend else "")
    write_json_atomic(path, result)
    if not override:
        metrics = run_dir / "metrics.csv"
        write_csv(metrics, [*read_csv(metrics), {
            "env_steps": env_steps, "success_rate": result["success_rate"],
            "time_to_success_s": result["time_to_success_s"], "eval_seconds": result["seconds"],
            "final": as_final_eval, "standalone_eval": str(path.relative_to(run_dir))}], METRICS_FIELDS)
    on = f" with task parameters {config.task_params}" if config.task_params else ""
    if config.launch.arm_server:  # `train --arm-server`: on that robot server, not a mirror
        trained = f" (trained on the robot server at {config.launch.arm_server})"
    else:
        trained = "" if ran_in == trained_backend else f" (trained in the {trained_backend} mirror)"
    say(f"eval: backend {ran_in}{trained}: success {result['success_rate']:.0%} over {episodes} episodes{on}, mean time to "
        f"success {result['time_to_success_s']:.2f} s (policy after {env_steps} env steps, "
        f"{checkpoint.path.name}, deterministic); result in {path}")
    return result


def result_path(run_dir: Path, episodes: int, task_params: str = "", backend: str = "") -> Path:
    """A new file for one stand-alone evaluation: evals/eval-<time>-<N>ep[-<params>][-<backend>].json."""
    stem = f"eval-{time.strftime('%Y%m%d-%H%M%S')}-{episodes}ep"
    if task_params:  # table_height=0.03 -> table_height_0.03
        stem += "-" + "".join(c if c.isalnum() or c in "._-" else "_" for c in task_params)
    if backend:
        stem += f"-{backend}"
    path, n = run_dir / "evals" / f"{stem}.json", 1
    while path.exists():  # two evaluations within one second
        n += 1
        path = run_dir / "evals" / f"{stem}-{n}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="robostack eval", description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="run directory (holds config.json, checkpoints/)")
    parser.add_argument("--episodes", type=int, default=50, help="evaluation episodes (default 50)")
    parser.add_argument("--robot-server", default="",
                        help="command endpoint of a running robot server (default: start one)")
    parser.add_argument("--seed", type=int, default=None,
                        help="episode seeds (default: the run's seed, as in training evaluations)")
    parser.add_argument("--task-params", default=None,
                        help='evaluate with other task parameters than the run trained with, e.g. '
                             '"table_height=0.03" (the table 3 cm higher); the result goes to '
                             'RUN/evals/eval-<time>-<N>ep-<params>.json (default: the run\'s own)')
    parser.add_argument("--backend", default=None,
                        help="the mirror to evaluate in: mujoco (MuJoCo) or pybullet (PyBullet: the "
                             "same Panda, tcp and controller), e.g. a policy trained in one mirror "
                             "in the other; the result goes to RUN/evals/eval-<time>-<N>ep-<backend>.json "
                             "(default: the run's own, from its config.json)")
    parser.add_argument("--as-final-eval", action="store_true",
                        help="write the result as the run's final evaluation (RUN/eval.json, a "
                             "final row in metrics.csv): what robostack train does when its "
                             "learner could not evaluate; not needed by hand")
    add_dataclass_arguments(parser, RemoteServers)
    args = parser.parse_args(argv)
    check_arguments(parser, args)
    with usage_errors(parser):
        remote = dataclass_from_args(RemoteServers, args)
        remote.check_against(args.robot_server, "--robot-server")
    try:
        evaluate_run(args.run, args.episodes, args.robot_server, args.seed, args.task_params,
                     args.as_final_eval, say=lambda text: print(text, flush=True), backend=args.backend,
                     remote=remote)
    except KeyboardInterrupt:
        print("\nrobostack eval: interrupted; nothing written", flush=True)
        return 130
    return 0


def check_arguments(parser: argparse.ArgumentParser, args) -> None:
    """Usage errors (exit code 2) before any robot server or policy is loaded."""
    from robostack.config import check_backend, usage_errors
    from robostack.rl.checkpoint import latest_checkpoint
    from robostack.training.config import load_run_config
    from tasks import parse_task_params

    if args.episodes < 1:
        parser.error(f"--episodes {args.episodes}: must be >= 1")
    if args.seed is not None and args.seed < 0:
        parser.error(f"--seed {args.seed}: must be >= 0")
    if args.backend is not None:
        with usage_errors(parser):
            check_backend(args.backend)
    config_path = Path(args.run) / "config.json"
    if not config_path.is_file():
        parser.error(f"--run {args.run}: no config.json there, not a run directory "
                     f"(`robostack runs` lists the runs of a folder)")
    if latest_checkpoint(args.run) is None:
        parser.error(f"--run {args.run}: no checkpoint (checkpoints/ckpt_*.pt) yet; train first")
    if args.task_params is not None:
        try:
            parse_task_params(load_run_config(config_path).task, args.task_params)
        except ValueError as exc:
            parser.error(f"--task-params: {exc}")


if __name__ == "__main__":
    sys.exit(main())
