"""Many teachers, one student: multi-task and multi-teacher distillation over seeds.

Three parts (``--part``):

- ``multitask``: one DQN teacher each for CartPole-v1, Acrobot-v1 and
  LunarLander-v3 (256x256, of ``benchmarks/rl.py``'s recipes), distilled
  student-driven into one student with an 88-unit adapter per env, a shared
  88x88 trunk and a head per env (Rusu et al. 2016, §4), at most 1/10 of the
  teachers' combined parameters. The baseline, as in Rusu et al.: the same
  network from the same initial weights trained from scratch by multi-task
  DQN (``tfkd.rl.train_multi_task_dqn``) on the same env steps per env, with
  the teachers' DQN recipe (:func:`scratch_configs`). Per env and network:
  the teacher's parameters and held-out return, the network's normalised
  score.
- ``minatar``: the same comparison on three MinAtar games (Young & Tian
  2019; Breakout, SpaceInvaders, Freeway): one CNN DQN teacher each, trained
  by ``tfkd train-teacher``, and one CNN student with a 1x1-convolution adapter per game, a shared
  convolution and dense layer and a head per game, at most 1/4 of the
  teachers' combined parameters.
- ``multiteacher``: three LunarLander-v3 teachers (the same DQN recipe, seeds
  0, 1, 2, trained for ``MULTITEACHER_TEACHER_STEPS``) and a 64x64 student
  distilled from each alone and from all three (``TeacherEnsemble``: their
  mean policy, per state the most confident teacher, and their largest
  Q-values, generalized policy improvement);
  scores are normalised by the best teacher's held-out return.

Every part distils the teachers committed under ``benchmarks/teachers/``, so
its results reproduce without training them (``--retrain-teachers`` trains
them again under ``<out>/teachers``; DQN training is deterministic on one
machine, not across CPUs). Every student is distilled student-driven
(DAgger) with the sharpened-Q KL (``q_value_kl``, T = 0.01). Every network,
the multi-task DQN included, is kept from its evaluation with the best
(mean) normalised score on its selection episodes and measured on
``held_out_seeds(seed, episodes)``; the table gives the mean over run seeds
with a 95% bootstrap interval over seeds.

Usage::

    python benchmarks/multitask.py --threads 1                  # all parts, seeds 0-2
    python benchmarks/multitask.py --part multitask --seeds 0 1 2
    python benchmarks/multitask.py --smoke --out /tmp/mt-smoke  # seconds: a check only

Results: ``<out>/multitask/<part>/seed-<s>.json``, one per seed as it
finishes (a seed saved with the same settings is reused unless ``--fresh``,
so seeds can run side by side in separate processes, each seed in one
process at a time; a killed multi-task seed resumes from its checkpoints in
``seed-<s>.checkpoints/``), and
``<out>/multitask/<part>.json``, every saved seed of these settings summed
up; tables printed as Markdown.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from rl import (COMMITTED_TEACHERS, SETUPS, SMOKE_SETUP, Setup, _across_seeds, _fmt,  # noqa: E402
                _with_ci, teacher_for, teacher_name, versions)
from tfkd import cli  # noqa: E402
from tfkd.distillation import TeacherEnsemble  # noqa: E402
from tfkd.distillation.ensemble import COMBINATIONS  # noqa: E402
from tfkd.files import strict_json, try_lock, write_json  # noqa: E402
from tfkd.models import build_mlp, build_multi_task_student, count_params, task_model  # noqa: E402
from tfkd.rl import (  # noqa: E402
    DistillConfig,
    compare_policies,
    distill,
    distill_multi_task,
    env_spec,
    evaluate_policy,
    held_out_seeds,
    make_env,
    normalized_score,
    random_policy,
    seed_everything,
    selection_seeds,
    train_multi_task_dqn,
)
from tfkd.rl.dqn import DQNConfig, load_dqn_teacher  # noqa: E402
from tfkd.rl.multi_task_dqn import SHARED_SETTINGS  # noqa: E402

FORMAT = "tfkd.benchmarks.multitask/4"
PARTS = ("multitask", "minatar", "multiteacher")
MINATAR_GAMES = ("MinAtar/Breakout-v1", "MinAtar/SpaceInvaders-v1", "MinAtar/Freeway-v1")
# The MinAtar teachers' DQN recipe: Young & Tian 2019's replay of 100,000,
# ε decay over 100,000 steps (to 0.05) and target copy every 1,000, with Adam
# at 1e-4 and an update every 4 env steps; kept from the best of 20
# evaluations on 10 selection episodes.
MINATAR_TEACHER_FLAGS = (
    "--steps", "1000000", "--learning-rate", "1e-4", "--epsilon-steps", "100000",
    "--epsilon-final", "0.05", "--buffer", "100000", "--learning-starts", "5000",
    "--train-every", "4", "--gradient-steps", "1", "--target-update-every", "1000",
    "--eval-every", "50000", "--select-episodes", "10")
SMOKE_TEACHER_FLAGS = ("--steps", "2000")

# rl-baselines3-zoo's Acrobot DQN, with LunarLander's update rate.
ACROBOT = Setup(
    teacher_dqn=DQNConfig(
        env_id="Acrobot-v1", hidden_units=(256, 256), total_env_steps=100_000, num_envs=4,
        learning_rate=6.3e-4, batch_size=128, buffer_capacity=50_000, learning_starts=1_000,
        train_every=4, gradient_steps=2, target_update_every=250, epsilon_fraction=0.12,
        epsilon_final=0.1, eval_every=10_000, eval_episodes=10, seed=0, progress=False),
    student_units=(64, 64), distill_steps=50_000, steps_per_round=5_000,
    train_steps_per_round=3_000, learning_rate=2e-3)


@dataclasses.dataclass
class Budget:
    """The distillation budget of every student.

    ``env_steps`` is the env steps of every task, or ``{env_id: steps}``;
    the multi-task DQN from scratch gets the same budget per task.
    ``scratch_recipes`` names the tasks whose teacher recipe's shared
    settings (update cadence, learning rate, ...) each train one multi-task
    DQN from scratch, a row each: a cadence that suits one game may fail
    another. Empty: one, with the recipe of the teacher trained longest.
    """

    env_steps: int | dict[str, int] = 50_000
    steps_per_round: int = 5_000
    train_steps_per_round: int = 3_000
    buffer_capacity: int = 100_000  # labelled states kept per task
    batch_size: int = 128
    learning_rate: float = 2e-3
    eval_episodes: int = 20
    trunk_units: tuple[int, ...] = (64, 64)
    adapter_units: int = 64  # vector tasks
    adapter_channels: int = 16  # frame tasks
    conv_filters: int = 16  # frame tasks
    scratch_recipes: tuple[str, ...] = ()


# CartPole-v1 and Acrobot-v1 on 5,000 env steps (what benchmarks/rl.py gives a
# CartPole student): DQN solves both in some seeds on 50,000, not on 5,000.
# 88-unit adapters and trunk: 18,313 parameters, within 1/10 of the teachers.
MULTITASK_BUDGET = Budget(env_steps={"CartPole-v1": 5_000, "Acrobot-v1": 5_000,
                                     "LunarLander-v3": 50_000},
                          trunk_units=(88, 88), adapter_units=88)
# LunarLander's recipe trains for 150,000 env steps, which leaves its seeds'
# teachers unequal (held-out returns 197 to 275 on the benchmark machine), and
# a combination blind to which teacher is best falls below the best. Twice as
# long, each teacher keeps its best of 30 selection evaluations.
MULTITEACHER_TEACHER_STEPS = 300_000
SMOKE_BUDGET = Budget(env_steps=200, steps_per_round=100, train_steps_per_round=10,
                      batch_size=32, eval_episodes=1, trunk_units=(8,), adapter_units=8,
                      adapter_channels=4, conv_filters=4)
# MinAtar: 16 channels after each game's adapter, a shared 3x3 convolution of
# 16 filters and a dense layer of 60 (the widest within 1/4 of the teachers);
# 400,000 env steps per game (2/5 of a teacher's), in 10 rounds of 40,000
# with 8,000 updates each, every labelled state kept.
MINATAR_BUDGET = Budget(env_steps=400_000, steps_per_round=40_000, train_steps_per_round=8_000,
                        buffer_capacity=400_000, eval_episodes=10, trunk_units=(60,),
                        adapter_channels=16, conv_filters=16)


def setups(smoke: bool) -> dict[str, Setup]:
    if smoke:
        acrobot = dataclasses.replace(SMOKE_SETUP, teacher_dqn=dataclasses.replace(
            SMOKE_SETUP.teacher_dqn, env_id="Acrobot-v1"))
        return {"CartPole-v1": SMOKE_SETUP, "Acrobot-v1": acrobot}
    return {"CartPole-v1": SETUPS["CartPole-v1"], "Acrobot-v1": ACROBOT,
            "LunarLander-v3": SETUPS["LunarLander-v3"]}


def task_env_steps(budget: Budget, env_ids) -> int | tuple[int, ...]:
    """``budget.env_steps`` for ``env_ids`` (one id or a tuple of them)."""
    if isinstance(budget.env_steps, int):
        return budget.env_steps
    if isinstance(env_ids, str):
        return budget.env_steps[env_ids]
    return tuple(budget.env_steps[env_id] for env_id in env_ids)


def config(budget: Budget, env_id, seed: int) -> DistillConfig:
    return DistillConfig(
        env_id=env_id, control="student", beta_decay=0.5,
        total_env_steps=task_env_steps(budget, env_id),
        steps_per_round=budget.steps_per_round,
        train_steps_per_round=budget.train_steps_per_round,
        buffer_capacity=budget.buffer_capacity, batch_size=budget.batch_size,
        learning_rate=budget.learning_rate, distillation_loss="q_value_kl",
        eval_episodes=budget.eval_episodes, keep_best=True, seed=seed, progress=False)


def scratch_configs(recipes: dict[str, DQNConfig], budget: Budget, seed: int,
                    source: str | None = None) -> list[DQNConfig]:
    """The multi-task DQN's settings: each env's teacher recipe on the students' budget.

    One network, optimizer and update schedule serve every task, so the
    shared settings (``SHARED_SETTINGS``: learning rate, gradient clipping,
    envs per task, learning starts, update and target-update cadence) come
    from one recipe: ``source``'s, or (None) that of the teacher trained
    longest (classic control: LunarLander-v3's, which Acrobot's shares).
    Each task keeps its recipe's batch size, replay size, discount and ε
    schedule. Budget, evaluations and selection are the students': each
    task's env steps of ``budget``, an evaluation on
    ``budget.eval_episodes`` selection episodes every ``steps_per_round``.
    """
    longest = max(recipes.values(), key=lambda recipe: recipe.total_env_steps)
    shared = {name: getattr(recipes[source] if source else longest, name)
              for name in SHARED_SETTINGS}
    shared.update(eval_every=budget.steps_per_round, eval_episodes=budget.eval_episodes,
                  keep_best=True, seed=seed, progress=False)
    return [dataclasses.replace(recipe, hidden_units=budget.trunk_units,
                                total_env_steps=task_env_steps(budget, env_id), **shared)
            for env_id, recipe in recipes.items()]


def scratch_runs(recipes: dict[str, DQNConfig], budget: Budget) -> dict[str, str | None]:
    """``{method name: source}``: the multi-task DQNs from scratch (``Budget.scratch_recipes``)."""
    if not budget.scratch_recipes:
        return {"multi-task DQN from scratch": None}
    unknown = [env_id for env_id in budget.scratch_recipes if env_id not in recipes]
    if unknown:
        sys.exit(f"error: scratch_recipes names {', '.join(unknown)}, not a task here.")
    return {f"multi-task DQN from scratch ({_game(env_id)} recipe)": env_id
            for env_id in budget.scratch_recipes}


def _game(env_id: str) -> str:
    """``"MinAtar/Freeway-v1"`` → ``"Freeway"``."""
    return env_id.split("/")[-1].rsplit("-v", 1)[0]


def scratch_settings(recipes: dict[str, DQNConfig], budget: Budget) -> dict:
    """The multi-task DQNs' settings as the results file records them (any seed)."""
    return {"scratch_dqn": {
        method: [{key: value for key, value in c.as_dict().items() if key != "seed"}
                 for c in scratch_configs(recipes, budget, 0, source)]
        for method, source in scratch_runs(recipes, budget).items()}}


def row(method: str, env_id: str, comparison, params: int, seconds: float) -> dict:
    return {"method": method, "env": env_id, "params": params,
            "mean_return": comparison.student.mean, "ci95": list(comparison.student.ci95),
            "normalized_score": comparison.normalized_score, "agreement": comparison.agreement,
            "teacher_return": comparison.teacher.mean, "random_return": comparison.random.mean,
            "wall_time_s": seconds}


# ------------------------------------------------------------------ the parts


def multitask_seed(teachers: dict, recipes: dict[str, DQNConfig], budget: Budget, seed: int,
                   episodes: int, max_fraction: float, checkpoints: str) -> list[dict]:
    """The multi-task student of all envs and the multi-task DQNs from scratch
    (:func:`scratch_runs`): a row per env and network.

    The student may have at most ``max_fraction`` of the teachers' combined
    parameters. Every run checkpoints under ``checkpoints`` (``student/``,
    ``scratch/`` or ``scratch-<game>/``) and resumes from there, so a killed
    seed goes on where it was.
    """
    specs = {env_id: env_spec(make_env(env_id), env_id) for env_id in teachers}
    tasks = {env_id: (spec.observation_shape, spec.num_actions) for env_id, spec in specs.items()}

    def network():  # the same initial weights for both networks of this seed
        seed_everything(seed)
        return build_multi_task_student(
            tasks, trunk_units=budget.trunk_units, adapter_units=budget.adapter_units,
            adapter_channels=budget.adapter_channels, conv_filters=budget.conv_filters)

    student = network()
    combined = sum(count_params(teacher) for teacher in teachers.values())
    if count_params(student) > max_fraction * combined:
        sys.exit(f"error: the multi-task student has {count_params(student):,} parameters, "
                 f"more than {max_fraction:g} of the teachers' {combined:,}.")
    student_config = dataclasses.replace(config(budget, tuple(teachers), seed),
                                         checkpoint_dir=os.path.join(checkpoints, "student"))
    distilled = distill_multi_task(list(teachers.values()), student, student_config)
    # Training time over every resumed part of the run.
    student_seconds = next(iter(distilled.tasks.values())).wall_time_s[-1]

    # Selected like the student: on the mean normalised score against the
    # teachers on the same selection episodes.
    selection = selection_seeds(seed, budget.eval_episodes)
    references = {env_id: evaluate_policy(env_id, teacher, selection).mean
                  for env_id, teacher in teachers.items()}
    networks = [("multi-task student", student, student_seconds, None)]
    for method, source in scratch_runs(recipes, budget).items():
        scratch = network()
        folder = os.path.join(checkpoints, f"scratch-{_game(source)}" if source else "scratch")
        history = train_multi_task_dqn(scratch, [
            dataclasses.replace(c, checkpoint_dir=folder)
            for c in scratch_configs(recipes, budget, seed, source)], references)
        networks.append((method, scratch, history.wall_time_s, history))

    held_out = held_out_seeds(seed, episodes)
    rows = []
    for env_id, teacher in teachers.items():
        teacher_return = evaluate_policy(env_id, teacher, held_out)
        random_return = evaluate_policy(env_id, random_policy(specs[env_id].num_actions), held_out)
        for method, model, seconds, history in networks:
            extra = {} if history is None else {"env_steps": history.tasks[env_id].env_steps,
                                                "kept_step": history.best_step}
            comparison = compare_policies(env_id, teacher, task_model(model, env_id), held_out,
                                          teacher_return=teacher_return,
                                          random_return=random_return)
            rows.append({**row(method, env_id, comparison, count_params(model), seconds),
                         "seed": seed, "teacher_params": count_params(teacher), **extra})
            print(f"  seed {seed} {env_id} {method}: teacher {comparison.teacher.mean:.1f}, "
                  f"network {comparison.student.mean:.1f}, score "
                  f"{_fmt(comparison.normalized_score, 3)}", flush=True)
    return rows


def minatar_teachers(games, args) -> dict[str, tuple]:
    """``{env_id: (teacher, teacher.json)}``: the committed teachers, or with
    ``--retrain-teachers`` ones trained by :func:`minatar_teacher_command`
    under ``<out>/teachers`` (a folder already there is reused)."""
    teachers = {}
    for env_id in games:
        name = env_id.replace("/", "-")
        if not args.retrain_teachers:
            folder = committed_teacher(name)
        else:
            folder = os.path.join(args.out, "teachers", name)
            if not os.path.exists(os.path.join(folder, "teacher.json")):
                print(f"teacher: training {env_id}", flush=True)
                if cli.main(minatar_teacher_command(env_id, folder, args.smoke)) != 0:
                    sys.exit(f"error: training the {env_id} teacher failed.")
        teachers[env_id] = load_dqn_teacher(folder)
        print(f"teacher: loaded {folder}", flush=True)
    return teachers


def committed_teacher(name: str) -> str:
    """The folder of the committed teacher ``name``; exits if it is not there."""
    folder = os.path.join(COMMITTED_TEACHERS, name)
    if not os.path.exists(os.path.join(folder, "teacher.json")):
        sys.exit(f"error: no committed teacher {folder}; add --retrain-teachers to train one.")
    return folder


def classic_teachers(part: str, args) -> dict[str, tuple[str, keras.Model, dict]]:
    """``{name: (env_id, teacher, its teacher_identity)}``: the DQN teachers of
    the ``multitask`` part (one per env, named by it) or of the
    ``multiteacher`` part (LunarLander-v3's recipe with seeds 0, 1, 2, for
    ``MULTITEACHER_TEACHER_STEPS``; ``teacher 0`` to ``teacher 2``).

    Each is the committed one under ``benchmarks/teachers/<folder>``, or
    (``--retrain-teachers``, ``--smoke``) the one cached or trained under
    ``<out>/teachers`` (:func:`rl.teacher_for`).
    """
    def load(env_id: str, setup: Setup, folder: str) -> tuple[str, keras.Model, dict]:
        teacher, description = teacher_for(env_id, setup, args.out, folder,
                                           retrain=args.retrain_teachers)
        return env_id, teacher, teacher_identity(folder, description)

    env_setups = setups(args.smoke)
    if part == "multitask":
        return {env_id: load(env_id, setup, teacher_name(env_id, setup))
                for env_id, setup in env_setups.items()}
    env_id = "CartPole-v1" if args.smoke else "LunarLander-v3"
    setup = env_setups[env_id]
    steps = setup.teacher_dqn.total_env_steps if args.smoke else MULTITEACHER_TEACHER_STEPS
    teachers = {}
    for teacher_seed in (0, 1, 2):
        setup_k = dataclasses.replace(setup, teacher_dqn=dataclasses.replace(
            setup.teacher_dqn, seed=teacher_seed, total_env_steps=steps))
        folder = f"{teacher_name(env_id, setup)}-{steps}steps-seed{teacher_seed}"
        teachers[f"teacher {teacher_seed}"] = load(env_id, setup_k, folder)
    return teachers


def teacher_identity(folder: str, description: dict) -> dict:
    """What the saved results record of a teacher, so that a seed saved with
    another teacher of that folder name (one retrained on another CPU) is rerun."""
    return {"folder": folder, "best_return": description["best_return"]}


def minatar_teacher_command(env_id: str, folder: str, smoke: bool = False) -> list[str]:
    """The ``tfkd`` arguments that train a MinAtar teacher (the CLI's CNN DQN):
    ``MINATAR_TEACHER_FLAGS``, or with ``smoke`` a 2,000-step run."""
    return ["train-teacher", "--env", env_id, "--backend", "keras",
            *(SMOKE_TEACHER_FLAGS if smoke else MINATAR_TEACHER_FLAGS),
            "--seed", "0", "--eval-episodes", "100", "--out", folder, "--quiet"]


def recipe(description: dict) -> DQNConfig:
    """The DQN settings a teacher was trained with, from its ``teacher.json``."""
    names = {field.name for field in dataclasses.fields(DQNConfig)}
    values = {key: value for key, value in description["config"].items() if key in names}
    values["hidden_units"] = tuple(values["hidden_units"])
    return dataclasses.replace(DQNConfig(**values), checkpoint_dir=None, tensorboard_dir=None)


def multiteacher_seed(teachers: dict, budget: Budget, seed: int, episodes: int) -> list[dict]:
    """Students of each LunarLander teacher alone and of the ensembles; a row per student."""
    env_id = next(iter(teachers.values()))[1]
    spec = env_spec(make_env(env_id), env_id)
    seeds = held_out_seeds(seed, episodes)
    returns = {name: evaluate_policy(env_id, teacher, seeds) for name, (teacher, _) in
               teachers.items()}
    best = max(returns, key=lambda name: returns[name].mean)
    random_return = evaluate_policy(env_id, random_policy(spec.num_actions), seeds)
    networks = {name: teacher for name, (teacher, _) in teachers.items()}
    temperature = 0.01  # q_value_kl's: the ensemble combines the policies the loss matches
    for combination in COMBINATIONS:
        networks[f"ensemble ({combination})"] = TeacherEnsemble(
            [teacher for teacher, _ in teachers.values()], combination, temperature)
    rows = []
    for name, teacher in networks.items():
        seed_everything(seed)  # the same initial weights for every student of this seed
        student = build_mlp(spec.observation_shape, spec.num_actions, budget.trunk_units)
        start = time.perf_counter()
        distill(teacher, student, config(budget, env_id, seed))
        seconds = time.perf_counter() - start
        comparison = compare_policies(env_id, networks[best], student, seeds,
                                      teacher_return=returns[best], random_return=random_return)
        rows.append({**row(f"student of {name}", env_id, comparison, count_params(student),
                           seconds), "seed": seed, "best_teacher": best})
        print(f"  seed {seed} student of {name}: {comparison.student.mean:.1f}, score "
              f"{_fmt(comparison.normalized_score, 3)} (best teacher: {best})", flush=True)
    for name, stats in returns.items():
        rows.append({"method": name, "env": env_id, "params": count_params(networks[name]),
                     "mean_return": stats.mean, "ci95": list(stats.ci95), "seed": seed,
                     "normalized_score": normalized_score(stats.mean, random_return.mean,
                                                          returns[best].mean)})
    return rows


# ----------------------------------------------------------------- reporting


def summarize(per_seed: list[list[dict]]) -> list[dict]:
    """Per (method, env): means over seeds with 95% intervals across seeds."""
    keys = [(r["method"], r["env"]) for r in per_seed[0]]
    summary = []
    for method, env_id in keys:
        rows = [next(r for r in run if (r["method"], r["env"]) == (method, env_id))
                for run in per_seed]
        summary.append({"method": method, "env": env_id, "params": rows[0]["params"],
                        "teacher_params": rows[0].get("teacher_params"),
                        "mean_return": _across_seeds([r["mean_return"] for r in rows]),
                        "normalized_score": _across_seeds([r["normalized_score"] for r in rows])})
    return summary


def table(summary: list[dict]) -> str:
    lines = ["| env | network | params | return, mean over seeds [95% CI] "
             "| normalised score [95% CI] |", "|" + "---|" * 5]
    for entry in summary:
        lines.append(f"| {entry['env']} | {entry['method']} | {entry['params']:,} "
                     f"| {_with_ci(entry['mean_return'], 1)} "
                     f"| {_with_ci(entry['normalized_score'], 3)} |")
    return "\n".join(lines)


def run_part(part: str, args) -> dict:
    budget = (SMOKE_BUDGET if args.smoke else {"multitask": MULTITASK_BUDGET,
                                               "minatar": MINATAR_BUDGET}.get(part, Budget()))
    if part == "minatar":
        loaded = minatar_teachers(MINATAR_GAMES[:2] if args.smoke else MINATAR_GAMES, args)
        if args.smoke:  # a DQN from scratch of each game's recipe: the path --part minatar can take
            budget = dataclasses.replace(budget, scratch_recipes=tuple(loaded))
        teachers = {env_id: teacher for env_id, (teacher, _) in loaded.items()}
        recipes = {env_id: recipe(description) for env_id, (_, description) in loaded.items()}
        teacher_names = {env_id: teacher_identity(env_id.replace("/", "-"), description)
                         for env_id, (_, description) in loaded.items()}
        extra_settings = scratch_settings(recipes, budget)
        run = lambda seed, checkpoints: multitask_seed(  # noqa: E731
            teachers, recipes, budget, seed, args.episodes, 0.25, checkpoints)
    elif part == "multitask":
        loaded = classic_teachers(part, args)
        teachers = {env_id: teacher for env_id, (_, teacher, _) in loaded.items()}
        teacher_names = {name: identity for name, (_, _, identity) in loaded.items()}
        recipes = {env_id: setup.teacher_dqn for env_id, setup in setups(args.smoke).items()}
        extra_settings = scratch_settings(recipes, budget)
        run = lambda seed, checkpoints: multitask_seed(  # noqa: E731
            teachers, recipes, budget, seed, args.episodes, 0.1, checkpoints)
    else:
        loaded = classic_teachers(part, args)
        teachers = {name: (teacher, env_id) for name, (env_id, teacher, _) in loaded.items()}
        teacher_names = {name: identity for name, (_, _, identity) in loaded.items()}
        extra_settings = {"combinations": list(COMBINATIONS)}
        run = lambda seed, _: multiteacher_seed(teachers, budget, seed, args.episodes)  # noqa: E731
    settings = strict_json({"budget": dataclasses.asdict(budget), "episodes": args.episodes,
                            "teachers": teacher_names,
                            **extra_settings})
    folder = os.path.join(args.out, "multitask", part)
    for seed in args.seeds:
        _run_seed(part, seed, folder, settings, run, args.fresh)
    per_seed = [rows for rows in (_saved_rows(path, settings) for path in
                                  glob.glob(os.path.join(folder, "seed-*.json"))) if rows]
    per_seed.sort(key=lambda rows: rows[0]["seed"])
    result = {"format": FORMAT, "part": part, "seeds": [rows[0]["seed"] for rows in per_seed],
              "settings": settings, "versions": versions(),
              "summary": summarize(per_seed), "per_seed": per_seed}
    write_json(os.path.join(args.out, "multitask", f"{part}.json"), result)
    print(f"\n{part}, seeds {', '.join(map(str, result['seeds']))}:\n{table(result['summary'])}")
    return result


def _run_seed(part: str, seed: int, folder: str, settings: dict, run, fresh: bool) -> None:
    """Runs ``run(seed, checkpoints)`` and saves its rows, unless they are saved with
    ``settings`` (and not ``fresh``); one process at a time per seed (a lock file)."""
    os.makedirs(folder, exist_ok=True)
    seed_path = os.path.join(folder, f"seed-{seed}.json")
    checkpoints = os.path.join(folder, f"seed-{seed}.checkpoints")
    lock_path = os.path.join(folder, f"seed-{seed}.lock")
    lock = try_lock(lock_path)
    if lock is None:
        sys.exit(f"error: {part} seed {seed} is running in another process (its lock "
                 f"{lock_path} is held); wait for it or run other --seeds.")
    with lock:
        if not fresh and _saved_rows(seed_path, settings) is not None:
            return
        if fresh:
            shutil.rmtree(checkpoints, ignore_errors=True)
        print(f"{part} seed {seed}:", flush=True)
        try:
            rows = run(seed, checkpoints)
        except ValueError as error:  # a checkpoint of other settings: say what to do
            if not str(error).startswith("Cannot resume"):
                raise
            sys.exit(f"error: {error} (--fresh starts every seed anew)")
        write_json(seed_path, {"format": FORMAT, "settings": settings, "rows": rows})
        shutil.rmtree(checkpoints, ignore_errors=True)  # the seed is saved


def _saved_rows(path: str, settings: dict) -> list[dict] | None:
    """The rows of one seed's file, if it exists and was made with ``settings``."""
    try:
        with open(path, encoding="utf-8") as file:
            saved = json.load(file)
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        sys.exit(f"error: cannot read the saved results {path} ({error}); delete it to "
                 "rerun that seed.")
    if not isinstance(saved, dict):
        sys.exit(f"error: {path} is not a tfkd results file; delete it to rerun that seed.")
    if saved.get("format") != FORMAT or saved.get("settings") != settings:
        return None
    return saved["rows"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=PARTS, action="append",
                        help="part(s) to run (default: all)")
    parser.add_argument("--seeds", type=int, nargs="+",
                        help="independent run seeds (default: 0 1 2; --smoke: 0)")
    parser.add_argument("--episodes", type=int,
                        help="held-out evaluation episodes per seed (default: 100; --smoke: 2)")
    parser.add_argument("--out", help="results folder, teachers trained under it (default: "
                                       "results; --smoke: a new temporary folder)")
    parser.add_argument("--threads", type=int, default=1,
                        help="TensorFlow threads (small MLPs run fastest on one)")
    parser.add_argument("--fresh", action="store_true",
                        help="rerun every seed even if saved results have the same settings")
    parser.add_argument("--retrain-teachers", action="store_true",
                        help="train the teachers under <out>/teachers instead of loading the "
                             "committed ones (a MinAtar one about 27 minutes, three side by "
                             "side on 2 cores; a classic one 3 to 11 minutes)")
    parser.add_argument("--smoke", action="store_true",
                        help="seconds: tiny CartPole and Acrobot teachers and students; two "
                             "MinAtar games")
    args = parser.parse_args(argv)
    args.seeds = args.seeds or ([0] if args.smoke else [0, 1, 2])
    args.episodes = args.episodes or (2 if args.smoke else 100)
    args.out = args.out or (tempfile.mkdtemp(prefix="tfkd-mt-smoke-") if args.smoke
                            else "results")
    if min(args.seeds) < 0 or len(set(args.seeds)) != len(args.seeds):
        parser.error("--seeds must be distinct non-negative integers")
    versions()  # the commit of the code that runs
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    start = time.perf_counter()
    for part in args.part or PARTS:
        run_part(part, args)
    print(f"\ntotal wall time {time.perf_counter() - start:.0f} s (results in {args.out})")


if __name__ == "__main__":
    main()
