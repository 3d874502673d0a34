"""The subcommands of ``tfkd``: train-teacher, distill, evaluate, demo, kickstart
(``export`` is in :mod:`tfkd.cli.exporting`, ``serve`` in :mod:`tfkd.cli.serving`).

Each takes the parsed arguments and the locked ``--out`` folder (or None),
returns the exit status, and raises :class:`~tfkd.cli.output.CliError` for a
user error. Every command seeds everything (``seed_everything``) before it
builds a model, so the same command twice gives the same numbers. Reported
returns are on ``held_out_seeds(seed, --eval-episodes)``; the distillation
loop selects the student on its own, disjoint, selection seeds.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import time

import numpy as np

from tfkd.cli import report
from tfkd.cli.exporting import export  # noqa: F401  (dispatched by name, like the others)
from tfkd.cli.inputs import (check_model_fits, checked_env_spec, library_call,
                             load_keras_model, load_teacher)
from tfkd.cli.output import CliError, OutputDir
from tfkd.cli.report import Row
from tfkd import losses as tfkd_losses
from tfkd.distillation import TeacherEnsemble
from tfkd.models import (ATARI_TEACHER_DENSE_UNITS, MINATAR_TEACHER_DENSE_UNITS,
                         STUDENT_HIDDEN_UNITS, TEACHER_HIDDEN_UNITS,
                         build_multi_task_student, build_student,
                         build_teacher, count_params, task_model)
from tfkd.rl.loops import (DistillConfig, MultiTaskHistory, distill_multi_task,
                           distill_student_driven, distill_teacher_driven)
from tfkd.rl.callbacks import RoundCSVLogger
from tfkd.rl.workers import require_ray
from tfkd.rl.dqn import LOG_KEYS as DQN_LOG_KEYS
from tfkd.rl.dqn import DQNConfig, train_dqn
from tfkd.rl.dqn import save_dqn_teacher as save_keras_dqn_teacher
from tfkd.rl.envs import is_atari, is_minatar
from tfkd.rl.evaluation import (compare_policies, evaluate_policy, held_out_seeds,
                                normalized_score, random_policy)
from tfkd.rl.seeding import seed_everything

STUDENT_FILE = "student.keras"
TEACHER_FOLDER = "teacher"  # the demo's teacher, inside --out
KL_LOSSES = ("soft_target_kl", "q_value_kl")
DISTILLATION_LOOPS = {"student": distill_student_driven, "teacher": distill_teacher_driven}
INTERRUPTED = 130
TEACHER_SELECT_EPISODES = 5
MULTI_TASK_TRUNK_UNITS = (64, 64)


# ------------------------------------------------------------------ commands


def train_teacher(args: argparse.Namespace, out: OutputDir | None) -> int:
    """``tfkd train-teacher``: a DQN teacher with its best evaluated weights, saved to ``--out``."""
    seed_everything(args.seed)
    spec = checked_env_spec(args.env)
    start = time.perf_counter()
    with _staging(out) as folder:
        teacher = _train_teacher(args, spec, folder)
    _report_teacher(teacher, args.env, spec.num_actions, args.seed, args.eval_episodes,
                    seconds=time.perf_counter() - start)
    if out:
        print(f"teacher saved to {out.path}")
    return 0


def distill(args: argparse.Namespace, out: OutputDir | None) -> int:
    """``tfkd distill``: distil a saved teacher into a small student.

    Several ``--teacher`` of one env are distilled as one
    (:class:`~tfkd.distillation.TeacherEnsemble`, ``--combine``); teachers of
    different envs into one multi-task student.
    """
    seed_everything(args.seed)
    _check_temperature(args)
    if args.ray_address is not None and not args.workers:
        raise CliError("--ray-address needs --workers.")
    if args.workers:
        try:
            require_ray(local=args.ray_address is None)
        except ImportError as error:
            raise CliError(str(error)) from None
    loaded = [load_teacher(path, args.env) for path in args.teacher]
    env_ids = [env_id for _, env_id in loaded]
    if len(args.steps) > 1 and (len(args.steps) != len(env_ids) or len(set(env_ids)) == 1):
        raise CliError(f"--steps takes one number, or one per --teacher of a multi-task run "
                       f"({len(env_ids)} teachers of {len(set(env_ids))} env(s)), got "
                       f"{len(args.steps)}.")
    args.steps = args.steps[0] if len(args.steps) == 1 else tuple(args.steps)
    start = time.perf_counter()
    if len(set(env_ids)) > 1:
        if len(set(env_ids)) < len(env_ids):
            raise CliError(f"the teachers' envs ({', '.join(env_ids)}) repeat some but not all: "
                           "give one teacher per env (multi-task) or teachers of one env.")
        with _staging(out) as folder:
            return _distill_multi_task(args, [t for t, _ in loaded], env_ids, folder, start)
    teacher = loaded[0][0]
    if len(loaded) > 1:  # combined at the loss's temperature (1 for a loss without one)
        files = [path for path in args.teacher if str(path).endswith(".keras")]
        if args.combine == "max_q" and files:
            # A .keras file does not say whether it outputs Q-values or logits,
            # and the largest of several teachers' logits means nothing.
            raise CliError(f"--combine max_q takes DQN teacher folders (tfkd train-teacher), "
                           f"whose outputs are Q-values; {files[0]!r} is a .keras file, which "
                           "may output logits: use --combine mean or most_confident.")
        loss = tfkd_losses.get(args.loss, temperature=args.temperature)
        teacher = TeacherEnsemble([t for t, _ in loaded], args.combine,
                                  getattr(loss, "temperature", 1.0))
    with _staging(out) as folder:
        return _distill(args, teacher, env_ids[0], folder, start)


def evaluate(args: argparse.Namespace, out: OutputDir | None) -> int:
    """``tfkd evaluate``: teacher, student and random policy on the held-out episodes."""
    seed_everything(args.seed)
    teacher, env_id = load_teacher(args.teacher, args.env)
    spec = checked_env_spec(env_id)
    eval_seeds = held_out_seeds(args.seed, args.eval_episodes)
    if args.student is None:
        rows, random = _teacher_rows(teacher, env_id, spec.num_actions, eval_seeds)
        agreement = None
    else:
        student = load_keras_model(args.student, "student")
        if len(student.inputs) > 1:  # a multi-task student: its network for the teacher's env
            student = library_call(task_model, student, env_id)
        check_model_fits(student, spec, f"the student {args.student!r}")
        comparison = compare_policies(env_id, teacher, student, eval_seeds)
        rows, random, agreement = _comparison_rows(comparison), comparison.random, \
            comparison.agreement
    report.print_table(env_id, [*rows.values(), _random_row(random, rows["teacher"])],
                       agreement)
    results = report.results_dict(env_id, args.seed, eval_seeds, _config(args), rows, random,
                                  agreement)
    if out:
        with out.staging() as folder:
            report.write_results(folder, results)
    return 0


def demo(args: argparse.Namespace, out: OutputDir | None) -> int:
    """``tfkd demo``: TF-Agents DQN teacher on CartPole, student-driven distillation."""
    seed_everything(args.seed)
    start = time.perf_counter()
    print(f"tfkd demo: a TF-Agents DQN teacher on {args.env}, distilled student-driven "
          "(DAgger) into a student with at most 1/10 of its parameters.\n")
    spec = checked_env_spec(args.env)
    teacher_args = argparse.Namespace(
        env=args.env, backend="tf-agents", steps=args.teacher_steps, hidden=None,
        target_return=args.teacher_target_return, checkpoint_dir=None, tensorboard=None, csv=None,
        select_episodes=TEACHER_SELECT_EPISODES, seed=args.seed, quiet=args.quiet,
        **dict.fromkeys(DQN_RECIPE_FLAGS))
    distill_args = argparse.Namespace(
        **vars(args), mode="student", student_hidden=None, loss="soft_target_kl",
        temperature=1.0, target_return=args.student_target_return, checkpoint_dir=None, csv=None,
        workers=0, ray_address=None)
    with _staging(out) as folder:
        teacher = _train_teacher(teacher_args, spec,
                                 os.path.join(folder, TEACHER_FOLDER) if folder else None)
        print("\nteacher trained; distilling (student-driven) ...")
        return _distill(distill_args, teacher, args.env, folder, start)


# ------------------------------------------------------------ kickstarting


def kickstart(args: argparse.Namespace, out: OutputDir | None) -> int:
    """``tfkd kickstart``: a DQN student with a scheduled distillation term to a saved teacher.

    The student's DQN settings are ``train-teacher``'s (:func:`_dqn_config`);
    keep-best and the gated schedule use the selection episodes, the report the
    held-out ones.
    """
    from tfkd.rl.dqn import DISTILLATION_LOG_KEYS
    from tfkd.rl.kickstart import KickstartConfig, kickstart as kickstart_student

    if args.loss != "kl" and args.temperature is not None:
        raise CliError(f"--temperature applies to --loss kl, not {args.loss}.")
    seed_everything(args.seed)
    start = time.perf_counter()
    teacher, env_id = load_teacher(args.teacher, args.env)
    spec = checked_env_spec(env_id)
    student = build_student(spec.observation_shape, spec.num_actions, atari=is_atari(env_id),
                            hidden_units=args.student_hidden)
    dqn_args = argparse.Namespace(**{**vars(args), "env": env_id, "backend": "keras",
                                     "hidden": args.student_hidden, "target_return": None,
                                     "csv": None})
    config = dataclasses.replace(
        _dqn_config(dqn_args), hidden_units=tuple(args.student_hidden or STUDENT_HIDDEN_UNITS),
        callbacks=[RoundCSVLogger(args.csv, keys=DQN_LOG_KEYS + DISTILLATION_LOG_KEYS,
                                  index_name="evaluation")] if args.csv else ())
    temperature = {} if args.temperature is None else {"temperature": args.temperature}
    kick = KickstartConfig(schedule=args.schedule, coefficient=args.coefficient,
                           loss=args.loss, offline_env_steps=args.offline_steps,
                           offline_updates=args.offline_updates, **temperature)
    print(f"kickstarting {env_id} ({args.schedule} λ, {args.steps} env steps) ...", flush=True)
    history = library_call(kickstart_student, teacher, student, config, kick)
    eval_seeds = held_out_seeds(args.seed, args.eval_episodes)
    comparison = compare_policies(env_id, teacher, student, eval_seeds)
    seconds = time.perf_counter() - start
    rows = _comparison_rows(comparison)
    note = (f"kept the student of env step {history.best_step}: the best return on "
            f"{args.select_episodes} selection episodes (seeds disjoint from the reported ones).")
    report.print_table(env_id, [*rows.values(), _random_row(comparison.random, rows["teacher"])],
                       comparison.agreement, seconds, note=note)
    run_config = {**_config(args), "dqn_config": config.as_dict(),
                  "kickstart_config": kick.as_dict()}
    results = report.results_dict(
        env_id, args.seed, eval_seeds, run_config, rows, comparison.random,
        comparison.agreement, mode=f"kickstart ({args.schedule})",
        kept_env_step=history.best_step, history=history.as_dict(), wall_time_s=seconds)
    if out:
        with out.staging() as folder:
            student.save(os.path.join(folder, STUDENT_FILE))
            report.write_results(folder, results)
        print(f"results and student written to {out.path}")
    return 0


# ------------------------------------------------------------ teacher training


def _train_teacher(args: argparse.Namespace, spec, folder: str | None):
    """Trains with ``args.backend`` and saves into ``folder`` (None: don't save)."""
    config = _dqn_config(args)
    if args.backend == "keras":
        teacher = build_teacher(spec.observation_shape, spec.num_actions,
                                atari=is_atari(args.env), hidden_units=config.hidden_units)
        history = library_call(train_dqn, teacher, config)
        _check_finite(teacher)
        if folder:
            save_keras_dqn_teacher(teacher, config, history, folder)
        return teacher
    # Imported here: TF-Agents is an optional extra, needed by this backend only.
    from tfkd.agents import save_dqn_teacher, train_dqn_teacher

    trained = library_call(train_dqn_teacher, config)
    _check_finite(trained.teacher)
    if folder:
        save_dqn_teacher(trained, config, folder)
    return trained.teacher


# The recipe flags of train-teacher and kickstart (None: the recipe's own value).
DQN_RECIPE_FLAGS = ("learning_rate", "epsilon_steps", "epsilon_final", "eval_every", "buffer",
                    "learning_starts", "train_every", "gradient_steps", "target_update_every")


def _dqn_config(args: argparse.Namespace) -> DQNConfig:
    """The DQN settings of ``train-teacher``: a double DQN that solves CartPole-v1.

    Adam 1e-3, batch 128, 8 gradient steps every 16 env steps after 1,000
    env steps of random play, a replay memory of 50,000 transitions, a hard
    target update every 500 env steps, ε from 1 to 0.02 over the first 10k
    env steps (or half of a shorter run), evaluations every 2,500 env steps.
    Each of these follows its flag (:data:`DQN_RECIPE_FLAGS`) where given.
    """
    atari = is_atari(args.env)
    steps = args.steps
    learning_starts = args.learning_starts or min(1_000, max(steps // 2, 64))
    if args.learning_starts and learning_starts >= steps:
        raise CliError(f"--learning-starts {learning_starts} leaves no training in "
                       f"--steps {steps}.")
    epsilon_fraction = (min(1.0, args.epsilon_steps / steps) if args.epsilon_steps
                        else min(0.5, 10_000 / steps))
    config = DQNConfig(
        env_id=args.env, total_env_steps=steps, learning_starts=learning_starts,
        hidden_units=args.hidden or _teacher_hidden_units(args.env),
        # Atari: 84x84x4 frames, stored twice: ~1.1 GB
        buffer_capacity=args.buffer or (20_000 if atari else 50_000),
        batch_size=128, learning_rate=args.learning_rate or (1e-4 if atari else 1e-3),
        train_every=args.train_every or 16, gradient_steps=args.gradient_steps or 8,
        target_update_every=args.target_update_every or 500,
        epsilon_final=0.02 if args.epsilon_final is None else args.epsilon_final,
        epsilon_fraction=epsilon_fraction,
        eval_every=min(args.eval_every or 2_500, steps), eval_episodes=args.select_episodes,
        target_return=args.target_return, seed=args.seed, progress=not args.quiet,
        checkpoint_dir=args.checkpoint_dir, tensorboard_dir=args.tensorboard,
        callbacks=[RoundCSVLogger(args.csv, keys=DQN_LOG_KEYS, index_name="evaluation")]
        if args.csv else ())
    if is_minatar(args.env) and args.backend != "keras":
        raise CliError("MinAtar teachers are trained by tfkd's Keras DQN: add --backend keras.")
    if (atari or is_minatar(args.env)) and args.backend == "keras" \
            and len(config.hidden_units) != 1:
        raise CliError("a CNN teacher (Atari, MinAtar) takes one --hidden width (its dense "
                       "layer).")
    return config


def _teacher_hidden_units(env_id: str) -> tuple[int, ...]:
    """The teacher's default: the dense width of a CNN (Atari, MinAtar), or the MLP's layers."""
    if is_atari(env_id):
        return (ATARI_TEACHER_DENSE_UNITS,)
    if is_minatar(env_id):
        return (MINATAR_TEACHER_DENSE_UNITS,)
    return TEACHER_HIDDEN_UNITS


def _check_finite(network) -> None:
    if any(not np.all(np.isfinite(np.asarray(variable))) for variable in network.variables):
        raise CliError("training diverged: the teacher has NaN or infinite weights; nothing "
                       "was saved (try a lower learning rate or another --seed).")


def _report_teacher(teacher, env_id: str, num_actions: int, seed: int, episodes: int,
                    seconds: float) -> None:
    eval_seeds = held_out_seeds(seed, episodes)
    rows, random = _teacher_rows(teacher, env_id, num_actions, eval_seeds)
    report.print_table(env_id, [rows["teacher"], _random_row(random, rows["teacher"])],
                       seconds=seconds)


# ---------------------------------------------------------------- distillation


def _distill(args: argparse.Namespace, teacher, env_id: str, folder: str | None,
             start: float) -> int:
    """Distils, reports on the held-out seeds and writes the run into ``folder``."""
    spec = checked_env_spec(env_id)
    student = build_student(spec.observation_shape, spec.num_actions, atari=is_atari(env_id),
                            hidden_units=args.student_hidden)
    config = _distill_config(args, env_id, target_return=args.target_return)
    eval_seeds = held_out_seeds(args.seed, args.eval_episodes)
    history, comparison, interrupted = None, None, False
    print(f"distilling {env_id} ({args.mode}-driven, {args.steps} env steps) ...", flush=True)
    try:
        history = library_call(DISTILLATION_LOOPS[args.mode], teacher, student, config)
        interrupted = history.interrupted
        if history.resumed_from:
            print(f"resumed from {args.checkpoint_dir}: rounds 1-{history.resumed_from} restored, "
                  f"{history.num_rounds - history.resumed_from} run now.")
        if not interrupted:
            comparison = compare_policies(env_id, teacher, student, eval_seeds)
    except KeyboardInterrupt:
        interrupted = True
    seconds = time.perf_counter() - start
    if comparison is not None:
        rows, random, agreement = _comparison_rows(comparison), comparison.random, \
            comparison.agreement
    else:  # interrupted: the student so far is saved, the final evaluation skipped
        rows = {"teacher": Row("teacher", count_params(teacher), None, None),
                "student": Row("student", count_params(student), None, None)}
        random, agreement = None, None
    report.print_table(env_id, [*rows.values(), _random_row(random, rows["teacher"])],
                       agreement, seconds, note=_kept_note(history, args, interrupted))
    results = report.results_dict(
        env_id, args.seed, eval_seeds, _config(args, config), rows, random, agreement,
        interrupted, mode=f"{args.mode}-driven",
        kept_round=history.kept_round if history else None,
        history=history.as_dict() if history else None, wall_time_s=seconds)
    if folder:
        student.save(os.path.join(folder, STUDENT_FILE))
        report.write_plot(folder, history, f"{env_id}: {args.mode}-driven distillation")
        report.write_results(folder, results)
        print(f"results, plot and student {'so far ' if interrupted else ''}written to "
              f"{os.path.dirname(folder)}")
    return INTERRUPTED if interrupted else 0


def _distill_multi_task(args: argparse.Namespace, teachers, env_ids: list[str],
                        folder: str | None, start: float) -> int:
    """One student for several envs: distils, reports each task on the held-out seeds."""
    if args.target_return is not None:
        raise CliError("--target-return applies to one env; a multi-task run keeps the round "
                       "with the best mean normalised score.")
    specs = {env_id: checked_env_spec(env_id) for env_id in env_ids}
    student = library_call(
        build_multi_task_student,
        {env_id: (spec.observation_shape, spec.num_actions) for env_id, spec in specs.items()},
        trunk_units=args.student_hidden or MULTI_TASK_TRUNK_UNITS)
    config = _distill_config(args, tuple(env_ids), control=args.mode)
    eval_seeds = held_out_seeds(args.seed, args.eval_episodes)
    budgets = (f"{args.steps} env steps each" if isinstance(args.steps, int) else
               ", ".join(f"{steps} env steps of {env_id}"
                         for env_id, steps in zip(env_ids, args.steps)))
    print(f"distilling {', '.join(env_ids)} into one student ({args.mode}-driven, {budgets}) ...",
          flush=True)
    history, tasks, interrupted = None, {}, False
    try:
        history = library_call(distill_multi_task, teachers, student, config)
        interrupted = history.interrupted
        if not interrupted:
            for env_id, teacher in zip(env_ids, teachers):
                tasks[env_id] = compare_policies(env_id, teacher, task_model(student, env_id),
                                                 eval_seeds)
    except KeyboardInterrupt:
        interrupted = True
    seconds = time.perf_counter() - start
    measured = {}
    for env_id, teacher in zip(env_ids, teachers):
        comparison = tasks.get(env_id)
        if comparison is not None:
            rows, random, agreement = _comparison_rows(comparison), comparison.random, \
                comparison.agreement
        else:
            rows = {"teacher": Row("teacher", count_params(teacher), None, None),
                    "student": Row("student", None, None, None)}
            random, agreement = None, None
        rows["student"] = dataclasses.replace(rows["student"], name="student (its head)",
                                              params=count_params(task_model(student, env_id)))
        report.print_table(env_id, [*rows.values(), _random_row(random, rows["teacher"])],
                           agreement)
        measured[env_id] = report.task_dict(rows, random, agreement)
    combined = report.combined_dict(measured, count_params(student))
    report.print_combined(combined, seconds, _kept_note(history, args, interrupted))
    results = report.multi_task_results_dict(
        env_ids, args.seed, eval_seeds, _config(args, config), measured, combined, interrupted,
        mode=f"{args.mode}-driven", kept_round=history.kept_round if history else None,
        history=history.as_dict() if history else None, wall_time_s=seconds)
    if folder:
        student.save(os.path.join(folder, STUDENT_FILE))
        report.write_plot(folder, history, "multi-task distillation")
        report.write_results(folder, results)
        print(f"results, plot and student {'so far ' if interrupted else ''}written to "
              f"{os.path.dirname(folder)}")
    return INTERRUPTED if interrupted else 0


def _distill_config(args: argparse.Namespace, env_id, **settings) -> DistillConfig:
    """The DistillConfig of ``distill``'s flags, for one env id or a tuple of them."""
    budgets = args.steps if isinstance(args.steps, tuple) else (args.steps,)
    steps_per_round = min(args.steps_per_round, max(budgets))
    return library_call(
        DistillConfig, env_id=env_id, total_env_steps=args.steps,
        steps_per_round=steps_per_round, train_steps_per_round=args.train_steps_per_round,
        eval_episodes=args.select_episodes, seed=args.seed, progress=not args.quiet,
        num_envs=min(8, steps_per_round), temperature=args.temperature,
        distillation_loss=args.loss, keep_best=True, checkpoint_dir=args.checkpoint_dir,
        tensorboard_dir=args.tensorboard, csv_path=args.csv, workers=args.workers,
        ray_address=args.ray_address, **settings)


def _kept_note(history, args, interrupted: bool) -> str:
    if interrupted:
        return "interrupted: the student so far is saved; the held-out evaluation was skipped."
    best = "mean normalised score" if isinstance(history, MultiTaskHistory) else "return"
    return (f"kept the student of round {history.kept_round + 1} of {history.num_rounds}: the "
            f"best {best} on {args.select_episodes} selection episodes (seeds disjoint from "
            "the reported ones).")


def _check_temperature(args: argparse.Namespace) -> None:
    if args.temperature is not None and args.loss not in KL_LOSSES:
        raise CliError(f"--temperature applies to {' and '.join(KL_LOSSES)}, not {args.loss}.")


def _config(args: argparse.Namespace, distill_config: DistillConfig | None = None) -> dict:
    """The whole configuration of a run: its arguments and the library config it built."""
    config = {"command": args.command,
              **{key: value for key, value in vars(args).items() if key != "command"}}
    if distill_config is not None:
        config["distill_config"] = dataclasses.asdict(distill_config)
    return config


# ------------------------------------------------------------------ evaluation


def _teacher_rows(teacher, env_id: str, num_actions: int, eval_seeds):
    teacher_stats = evaluate_policy(env_id, teacher, eval_seeds)
    random = evaluate_policy(env_id, random_policy(num_actions), eval_seeds)
    score = normalized_score(teacher_stats.mean, random.mean, teacher_stats.mean)
    return {"teacher": Row("teacher", count_params(teacher), teacher_stats, score)}, random


def _comparison_rows(comparison) -> dict[str, Row]:
    teacher = comparison.teacher
    return {
        "teacher": Row("teacher", comparison.teacher_params, teacher,
                       normalized_score(teacher.mean, comparison.random.mean, teacher.mean)),
        "student": Row("student", comparison.student_params, comparison.student,
                       comparison.normalized_score),
    }


def _random_row(random, teacher: Row) -> Row:
    if random is None or teacher.stats is None:
        return Row("random", None, random, None)
    return Row("random", None, random,
               normalized_score(random.mean, random.mean, teacher.stats.mean))


@contextlib.contextmanager
def _staging(out: OutputDir | None):
    """``out``'s staging folder, committed on success; None without ``--out``."""
    if out is None:
        yield None
    else:
        with out.staging() as folder:
            yield folder
