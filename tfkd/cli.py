"""The ``tfkd`` command: train a teacher, distil it, evaluate, or run the demo.

    tfkd train-teacher --env CartPole-v1 --out runs/teacher
    tfkd distill --teacher runs/teacher --out runs/student
    tfkd evaluate --teacher runs/teacher --student runs/student/student.keras
    tfkd demo

Teachers are TF-Agents DQN agents (``tfkd.agents``; the default) or plain
Keras 3 DQNs (``--backend keras``, ``tfkd.rl.train_dqn``). ``--env`` takes any
gymnasium id with a discrete action space and vector observations; ``ALE/...``
ids get the Atari frame preprocessing and the Nature CNN.

tfkd owns this entry point, so it selects Keras 2 for ``tf.keras``
(``TF_USE_LEGACY_KERAS=1``, which TF-Agents needs) before TensorFlow is first
imported; tfkd's own models stay Keras 3.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Sequence

__all__ = ["main"]

DEMO_ENV = "CartPole-v1"
RESULTS_FILE = "results.json"
PLOT_FILE = "distillation.png"
STUDENT_FILE = "student.keras"
KERAS_TEACHER_FILE = "teacher.keras"
DISTILLATION_LOSSES = ("soft_target_kl", "q_value_kl", "greedy_action_nll", "mse")
KL_LOSSES = ("soft_target_kl", "q_value_kl")


def _select_keras2_for_tf_agents() -> None:
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# --------------------------------------------------------------------- helpers


@dataclass
class Evaluated:
    """A network and its measured return."""

    name: str
    params: int
    mean_return: float
    std_return: float


def _hidden_units(text: str) -> tuple[int, ...]:
    try:
        units = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer sizes, got {text!r}")
    if any(unit < 1 for unit in units):
        raise argparse.ArgumentTypeError(f"layer sizes must be positive, got {text!r}")
    return units


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def _is_atari(env_id: str) -> bool:
    return env_id.startswith("ALE/")


def _env_spec(env_id: str):
    """Checks ``env_id`` and reads its spec; raises ``SystemExit`` with a clear message."""
    import gymnasium as gym

    from tfkd.rl.envs import env_spec, make_atari_env, make_env

    try:
        env = make_atari_env(env_id) if _is_atari(env_id) else make_env(env_id)
    except gym.error.Error as error:
        raise SystemExit(f"tfkd: unknown or unavailable environment {env_id!r}: {error}")
    except ValueError as error:  # e.g. a continuous action space.
        raise SystemExit(f"tfkd: {error}")
    try:
        spec = env_spec(env, env_id)
    finally:
        env.close()
    rank = len(spec.observation_shape)
    if not _is_atari(env_id) and rank != 1:
        raise SystemExit(
            f"tfkd: {env_id} has observations of shape {spec.observation_shape}; the MLP path "
            "needs vector observations (Atari ids, ALE/..., get the CNN).")
    return spec


def _build_student(spec, hidden: Sequence[int] | None):
    from tfkd.models import build_mlp, build_nature_cnn

    if _is_atari(spec.env_id):
        return build_nature_cnn(spec.num_actions, spec.observation_shape, filters=(16, 32, 32),
                                dense_units=hidden[0] if hidden else 128, name="student")
    return build_mlp(spec.observation_shape, spec.num_actions,
                     hidden_units=tuple(hidden) if hidden is not None else (32,), name="student")


def load_teacher(path: str):
    """A teacher from ``path``: a TF-Agents teacher directory or a Keras ``.keras`` file.

    Returns:
      ``(teacher, env_id or None)``.
    """
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, KERAS_TEACHER_FILE)):
        path = os.path.join(path, KERAS_TEACHER_FILE)
    if path.endswith(".keras"):
        return _load_keras_model(path), None
    from tfkd.agents import load_dqn_teacher

    try:
        teacher = load_dqn_teacher(path)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"tfkd: {error}")
    return teacher, teacher.env_id


def _load_keras_model(path: str):
    import keras

    if not os.path.isfile(path):
        raise SystemExit(f"tfkd: no such model file {path!r}.")
    try:
        return keras.models.load_model(path, safe_mode=True, compile=False)
    except Exception as error:  # Keras raises many types for a bad archive.
        raise SystemExit(f"tfkd: cannot load {path!r} (corrupt or not a Keras model): {error}")


def _evaluate(name: str, network, env_id: str, episodes: int, seed: int) -> Evaluated:
    from tfkd.rl.evaluation import count_params, evaluate_policy

    stats = evaluate_policy(env_id, network, episodes, seed=seed)
    return Evaluated(name, count_params(network), stats.mean, stats.std)


def print_table(rows: Sequence[Evaluated], env_id: str, agreement: float | None = None,
                seconds: float | None = None, file=None) -> None:
    """Prints teacher/student results as an aligned table."""
    file = file or sys.stdout
    header = ("network", "params", "return (mean ± std)", "% of teacher")
    teacher_mean = rows[0].mean_return if rows else math.nan
    lines = [header]
    for row in rows:
        share = 100.0 * row.mean_return / teacher_mean if teacher_mean else math.nan
        lines.append((row.name, f"{row.params:,}", f"{row.mean_return:.1f} ± {row.std_return:.1f}",
                      f"{share:.0f}%"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    rule = "-+-".join("-" * width for width in widths)
    print(f"\n{env_id}", file=file)
    for index, line in enumerate(lines):
        print(" | ".join(cell.ljust(width) for cell, width in zip(line, widths)), file=file)
        if index == 0:
            print(rule, file=file)
    if len(rows) > 1 and rows[0].params:
        print(f"student / teacher parameters: {rows[1].params / rows[0].params:.3f}", file=file)
    if agreement is not None:
        print(f"action agreement on the student's states: {100 * agreement:.1f}%", file=file)
    if seconds is not None:
        print(f"wall time: {seconds:.0f} s", file=file)


def results_dict(env_id: str, teacher: Evaluated, student: Evaluated | None,
                 agreement: float | None, episodes: int, **extra: Any) -> dict:
    """The JSON record: env, teacher and student stats, agreement, episodes."""
    def stats(row: Evaluated | None):
        if row is None:
            return None
        return {"params": row.params, "mean_return": row.mean_return,
                "std_return": row.std_return}

    return {"env": env_id, "teacher": stats(teacher), "student": stats(student),
            "agreement": agreement, "episodes": episodes, **extra}


def write_results(out_dir: str, results: dict, history=None) -> None:
    """Writes ``results.json`` and the PNG plot into ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, RESULTS_FILE), "w", encoding="utf-8") as file:
        json.dump(_json_safe(results), file, indent=2, allow_nan=False)
    plot_results(results, history, os.path.join(out_dir, PLOT_FILE))


def plot_results(results: dict, history, path: str) -> None:
    """Two panels: returns over distillation; return versus parameter count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    figure, (over_time, over_size) = plt.subplots(1, 2, figsize=(11, 4))
    teacher, student = results["teacher"], results.get("student")
    if history is not None and history.num_rounds:
        steps = np.asarray(history.env_steps)
        mean = np.asarray(history.student_return_mean, dtype=float)
        std = np.asarray(history.student_return_std, dtype=float)
        seen = ~np.isnan(mean)
        over_time.plot(steps[seen], mean[seen], marker="o", label="student")
        over_time.fill_between(steps[seen], (mean - std)[seen], (mean + std)[seen], alpha=0.2)
        over_time.axhline(teacher["mean_return"], color="k", linestyle="--", label="teacher")
        over_time.axhspan(teacher["mean_return"] - teacher["std_return"],
                          teacher["mean_return"] + teacher["std_return"], color="k", alpha=0.08)
    over_time.set(xlabel="env steps of distillation", ylabel="return",
                  title="return over distillation")
    for name, row, marker in (("teacher", teacher, "s"), ("student", student, "o")):
        if row is not None:
            over_size.errorbar(row["params"], row["mean_return"], yerr=row["std_return"],
                               marker=marker, capsize=4, linestyle="none", label=name)
    over_size.set_xscale("log")
    over_size.set(xlabel="parameters", ylabel="return", title="return versus size")
    for axis in (over_time, over_size):
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend()
    figure.suptitle(results["env"])
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# ------------------------------------------------------------------ subcommands


def train_teacher(args: argparse.Namespace):
    """``tfkd train-teacher``: a DQN teacher, saved to ``--out``."""
    spec = _env_spec(args.env)
    start = time.perf_counter()
    if args.backend == "keras":
        from tfkd.models import build_mlp, build_nature_cnn
        from tfkd.rl.dqn import DQNConfig, train_dqn

        if _is_atari(args.env):
            network = build_nature_cnn(spec.num_actions, spec.observation_shape, name="teacher")
        else:
            network = build_mlp(spec.observation_shape, spec.num_actions,
                                hidden_units=args.hidden, name="teacher")
        config = DQNConfig(env_id=args.env, total_env_steps=args.steps, seed=args.seed,
                           eval_every=max(1, args.steps // 5), eval_episodes=5,
                           target_return=args.target_return, progress=not args.quiet)
        if _is_atari(args.env):  # 84x84x4 frames, stored twice: ~1.1 GB at 20k
            config.buffer_capacity = min(config.buffer_capacity, 20_000)
        train_dqn(network, config)
        if args.out:
            os.makedirs(args.out, exist_ok=True)
            network.save(os.path.join(args.out, KERAS_TEACHER_FILE))
        teacher = network
    else:
        from tfkd.agents import train_dqn_teacher

        config = _dqn_teacher_config(args)
        try:
            teacher = train_dqn_teacher(args.env, config, out_dir=args.out,
                                        checkpoint_dir=args.checkpoint_dir,
                                        progress=not args.quiet).teacher
        except ValueError as error:
            raise SystemExit(f"tfkd: {error}")
    row = _evaluate("teacher", teacher, args.env, args.episodes, args.seed + 10_000)
    print_table([row], args.env, seconds=time.perf_counter() - start)
    if args.out:
        print(f"teacher saved to {args.out}")
    return teacher, row


def _dqn_teacher_config(args: argparse.Namespace):
    from tfkd.agents import DqnTeacherConfig

    config = DqnTeacherConfig(num_steps=args.steps, seed=args.seed,
                              target_return=args.target_return)
    config.fc_layer_params = args.hidden
    if _is_atari(args.env):
        config.fc_layer_params = (512,)
        config.replay_capacity = min(config.replay_capacity, 20_000)
        config.learning_rate = 1e-4
    if args.steps < config.eval_interval:
        config.eval_interval = args.steps
    config.initial_collect_steps = min(config.initial_collect_steps, max(args.steps // 2, 64))
    config.epsilon_decay_steps = min(config.epsilon_decay_steps, max(1, args.steps // 2))
    return config


def distill(args: argparse.Namespace, teacher=None, started: float | None = None) -> dict:
    """``tfkd distill``: distil a saved teacher into a small student."""
    from tfkd.rl.distill import (StudentDrivenConfig, TeacherDrivenConfig,
                                 distill_student_driven, distill_teacher_driven)
    from tfkd.rl.evaluation import compare_policies

    start = started or time.perf_counter()
    if args.temperature is not None and args.loss not in KL_LOSSES:
        raise SystemExit(f"tfkd: --temperature applies to {' and '.join(KL_LOSSES)}, "
                         f"not {args.loss}")
    env_id = args.env
    if teacher is None:
        teacher, saved_env = load_teacher(args.teacher)
        env_id = env_id or saved_env
    if env_id is None:
        raise SystemExit("tfkd: --env is needed for a Keras teacher file.")
    spec = _env_spec(env_id)
    student = _build_student(spec, args.student_hidden)
    steps_per_round = min(args.steps_per_round, args.steps)
    common = dict(env_id=env_id, total_env_steps=args.steps, steps_per_round=steps_per_round,
                  train_steps_per_round=args.train_steps_per_round,
                  eval_episodes=args.eval_episodes, seed=args.seed, progress=not args.quiet,
                  num_envs=min(8, steps_per_round), temperature=args.temperature,
                  distillation_loss=args.loss,
                  target_return=args.target_return)
    if args.mode == "student":
        history = distill_student_driven(teacher, student, StudentDrivenConfig(**common))
    else:
        history = distill_teacher_driven(teacher, student, TeacherDrivenConfig(**common))
    comparison = compare_policies(env_id, teacher, student, args.episodes, seed=args.seed + 10_000)
    teacher_row = Evaluated("teacher", comparison.teacher_params,
                            comparison.teacher_return.mean, comparison.teacher_return.std)
    student_row = Evaluated("student", comparison.student_params,
                            comparison.student_return.mean, comparison.student_return.std)
    seconds = time.perf_counter() - start
    print_table([teacher_row, student_row], env_id, comparison.agreement, seconds)
    results = results_dict(
        env_id, teacher_row, student_row, comparison.agreement, args.episodes,
        mode=f"{args.mode}-driven", distillation_env_steps=history.env_steps[-1],
        wall_time_s=seconds, history=_history_dict(history))
    if args.out:
        write_results(args.out, results, history)
        student.save(os.path.join(args.out, STUDENT_FILE))
        print(f"results, plot and student written to {args.out}")
    return results


def _history_dict(history) -> dict:
    return _json_safe(history.as_dict())


def _json_safe(value: Any) -> Any:
    """NaN and infinities become None (strict JSON); numpy scalars become numbers."""
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def evaluate(args: argparse.Namespace) -> dict:
    """``tfkd evaluate``: the return of a teacher and, optionally, a student."""
    from tfkd.rl.evaluation import compare_policies

    teacher, saved_env = load_teacher(args.teacher)
    env_id = args.env or saved_env
    if env_id is None:
        raise SystemExit("tfkd: --env is needed for a Keras teacher file.")
    spec = _env_spec(env_id)
    if args.student is None:
        teacher_row = _evaluate("teacher", teacher, env_id, args.episodes, args.seed)
        print_table([teacher_row], env_id)
        results = results_dict(env_id, teacher_row, None, None, args.episodes)
    else:
        student = _load_keras_model(args.student)
        if tuple(student.output_shape[1:]) != (spec.num_actions,):
            raise SystemExit(f"tfkd: the student outputs {student.output_shape[1:]}, "
                             f"{env_id} has {spec.num_actions} actions.")
        comparison = compare_policies(env_id, teacher, student, args.episodes, seed=args.seed)
        teacher_row = Evaluated("teacher", comparison.teacher_params,
                                comparison.teacher_return.mean, comparison.teacher_return.std)
        student_row = Evaluated("student", comparison.student_params,
                                comparison.student_return.mean, comparison.student_return.std)
        print_table([teacher_row, student_row], env_id, comparison.agreement)
        results = results_dict(env_id, teacher_row, student_row, comparison.agreement,
                               args.episodes)
    if args.out:
        write_results(args.out, results)
    return results


def demo(args: argparse.Namespace) -> dict:
    """``tfkd demo``: TF-Agents DQN teacher on CartPole, student-driven distillation."""
    start = time.perf_counter()
    print(f"tfkd demo: a TF-Agents DQN teacher on {args.env}, distilled student-driven "
          "(DAgger) into a student with at most 1/10 of its parameters.\n")
    teacher_args = argparse.Namespace(
        env=args.env, backend="tf-agents", steps=args.teacher_steps, hidden=(256, 256),
        target_return=args.teacher_target_return,
        out=os.path.join(args.out, "teacher") if args.out else None, checkpoint_dir=None,
        episodes=args.episodes, seed=args.seed, quiet=args.quiet)
    teacher, _ = train_teacher(teacher_args)
    distill_args = argparse.Namespace(
        env=args.env, teacher=None, mode="student", student_hidden=(32,),
        steps=args.steps, steps_per_round=args.steps_per_round,
        train_steps_per_round=args.train_steps_per_round, eval_episodes=args.eval_episodes,
        loss="soft_target_kl", temperature=1.0, episodes=args.episodes, seed=args.seed,
        quiet=args.quiet, out=args.out, target_return=args.student_target_return)
    print("\nteacher trained; distilling (student-driven) ...")
    return distill(distill_args, teacher=teacher, started=start)


# ----------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``tfkd`` command."""
    parser = argparse.ArgumentParser(
        prog="tfkd", description="Knowledge distillation for reinforcement learning.")
    commands = parser.add_subparsers(dest="command", required=True)

    def add_common(sub, env_default: str | None = DEMO_ENV, out_help="output directory"):
        sub.add_argument("--env", default=env_default,
                         help="gymnasium id, discrete actions (default: %(default)s)")
        sub.add_argument("--episodes", type=_positive_int, default=20,
                         help="evaluation episodes (default: %(default)s)")
        sub.add_argument("--seed", type=int, default=0)
        sub.add_argument("--out", help=out_help)
        sub.add_argument("--quiet", action="store_true", help="no progress bars")

    def add_distill_budget(sub, steps: int):
        sub.add_argument("--steps", type=_positive_int, default=steps,
                         help="env steps of distillation (default: %(default)s)")
        sub.add_argument("--steps-per-round", type=_positive_int, default=2_000,
                         help="env steps collected per round (default: %(default)s)")
        sub.add_argument("--train-steps-per-round", type=_positive_int, default=500,
                         help="student updates per round (default: %(default)s)")
        sub.add_argument("--eval-episodes", type=int, default=10,
                         help="episodes to evaluate the student after each round; the best "
                              "round is kept (default: %(default)s)")

    sub = commands.add_parser("train-teacher", help="train a DQN teacher and save it")
    add_common(sub, out_help="directory to save the teacher in")
    sub.add_argument("--backend", choices=("tf-agents", "keras"), default="tf-agents",
                     help="TF-Agents DqnAgent (default) or tfkd's Keras 3 DQN")
    sub.add_argument("--steps", type=_positive_int, default=50_000,
                     help="env steps of DQN training (default: %(default)s)")
    sub.add_argument("--hidden", type=_hidden_units, default=(256, 256),
                     help="hidden layer sizes of the Q-network (default: 256,256)")
    sub.add_argument("--checkpoint-dir", help="checkpoint here; rerun with it to resume")
    sub.add_argument("--target-return", type=float, default=None,
                     help="stop once a greedy evaluation reaches this mean return")
    sub.set_defaults(handler=train_teacher)

    sub = commands.add_parser("distill", help="distil a saved teacher into a small student")
    add_common(sub, env_default=None, out_help="directory for results.json, the plot, the student")
    sub.add_argument("--teacher", required=True,
                     help="teacher directory from train-teacher, or a .keras file")
    sub.add_argument("--mode", choices=("student", "teacher"), default="student",
                     help="who acts while data is collected (default: student, i.e. DAgger)")
    sub.add_argument("--student-hidden", type=_hidden_units, default=None,
                     help="student hidden layer sizes (default: 32; Atari: 128 dense units)")
    sub.add_argument("--loss", choices=DISTILLATION_LOSSES, default="soft_target_kl",
                     help="distillation loss (default: %(default)s; q_value_kl is Rusu et "
                          "al.'s sharpened-Q KL for DQN teachers)")
    sub.add_argument("--temperature", type=_positive_float, default=None,
                     help="temperature of a KL loss (default: the loss's own, 1 for "
                          "soft_target_kl, 0.01 for q_value_kl)")
    sub.add_argument("--target-return", type=float, default=None,
                     help="stop distilling once the student's evaluated return reaches this")
    add_distill_budget(sub, 20_000)
    sub.set_defaults(handler=distill)

    sub = commands.add_parser("evaluate", help="evaluate a teacher and a student")
    add_common(sub, env_default=None, out_help="directory for results.json and the plot")
    sub.add_argument("--teacher", required=True,
                     help="teacher directory from train-teacher, or a .keras file")
    sub.add_argument("--student", help="a student .keras file")
    sub.set_defaults(handler=evaluate)

    sub = commands.add_parser("demo", help="CartPole: TF-Agents teacher -> small student")
    add_common(sub, out_help="directory for the teacher, student, results.json and plot")
    sub.add_argument("--teacher-steps", type=_positive_int, default=60_000,
                     help="most env steps of teacher training (default: %(default)s)")
    sub.add_argument("--teacher-target-return", type=float, default=490.0,
                     help="teacher training stops at this greedy return (default: %(default)s)")
    sub.add_argument("--student-target-return", type=float, default=None,
                     help="stop distilling once the student's evaluated return reaches this")
    add_distill_budget(sub, 20_000)
    sub.set_defaults(handler=demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tfkd`` console script."""
    args = build_parser().parse_args(argv)
    _select_keras2_for_tf_agents()
    args.handler(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
