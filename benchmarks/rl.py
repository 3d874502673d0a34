"""End-to-end RL distillation benchmark over independent seeds: CartPole-v1 and LunarLander-v3.

For each environment:

1. the DQN teacher (Keras 3, ``tfkd.rl.dqn.train_dqn``) is the one committed
   as ``benchmarks/teachers/<env>-<units>/``, so that results reproduce
   without training it; ``--retrain-teachers`` trains one and caches it as
   ``<out>/teachers/<env>-<units>/``;
2. for each run seed, a student at most 1/10 of the teacher's size is
   distilled teacher-driven (Rusu et al. 2016) and student-driven (DAgger;
   Ross et al. 2011, Czarnecki et al. 2019) with the same env-step budget, and
   the same small network is trained from scratch with DQN on that budget;
   all three start from the same initial weights for a given seed;
3. the teacher, the uniform-random policy and the three students are
   evaluated greedily on the seed's held-out episodes
   (``held_out_seeds(seed, episodes)``), disjoint from every selection episode;
   each student gets the normalised score ``(R − R_random) / (R_teacher − R_random)``.

Per method, the table gives the mean over seeds of the per-seed mean return
and of the normalised score, each with a 95% percentile-bootstrap interval
over the seeds (``ReturnStats.from_returns`` of the per-seed means); the JSON
also records a Student-t interval.

Usage::

    python benchmarks/rl.py --threads 1                    # both envs, seeds 0-4
    python benchmarks/rl.py --env CartPole-v1 --seeds 0 1 2 3 4
    python benchmarks/rl.py --report                       # print the tables of saved results
    python benchmarks/rl.py --smoke --out /tmp/rl-smoke    # seconds: tiny budgets, a check only

Results go to ``<out>/rl/<env>.json`` (per-seed rows, written after every
seed; a rerun with the same settings reuses the seeds already there unless
``--fresh``) and ``<out>/rl/<env>.png``; the table is printed as Markdown.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfkd import provenance  # noqa: E402
from tfkd.models import build_mlp, count_params  # noqa: E402
from tfkd.rl import (  # noqa: E402
    DistillConfig,
    ReturnStats,
    compare_policies,
    distill,
    env_spec,
    evaluate_policy,
    held_out_seeds,
    make_env,
    random_policy,
    seed_everything,
)
from tfkd.rl.dqn import DQNConfig, load_dqn_teacher, train_dqn  # noqa: E402
from tfkd.rl.teacher_io import LOCAL_SETTINGS, save_keras_model  # noqa: E402
from tfkd.files import strict_json, write_json  # noqa: E402

METHODS = ("teacher-driven", "student-driven", "DQN from scratch")
FORMAT = "tfkd.benchmarks.rl/2"


@dataclasses.dataclass
class Setup:
    """What one environment's benchmark runs."""

    teacher_dqn: DQNConfig  # hidden_units: the teacher's layers
    student_units: tuple[int, ...]
    distill_steps: int
    steps_per_round: int
    train_steps_per_round: int
    batch_size: int = 128
    learning_rate: float = 1e-3
    eval_episodes: int = 20  # selection episodes per round (keep-best)

    def as_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values["teacher_dqn"] = self.teacher_dqn.as_dict()
        del values["teacher_dqn"]["progress"]
        return strict_json(values)


SETUPS = {
    # DQN settings follow the rl-baselines3-zoo tuned ones for these envs.
    "CartPole-v1": Setup(
        teacher_dqn=DQNConfig(
            env_id="CartPole-v1", hidden_units=(256, 256), total_env_steps=50_000, num_envs=8,
            learning_rate=2.3e-3, batch_size=64, buffer_capacity=100_000, learning_starts=1_000,
            train_every=256, gradient_steps=128, target_update_every=10, epsilon_fraction=0.16,
            epsilon_final=0.04, eval_every=5_000, eval_episodes=10, seed=0, progress=False,
        ),
        student_units=(64, 64),
        distill_steps=5_000,
        steps_per_round=1_000,
        train_steps_per_round=2_000,
    ),
    # LunarLander: the rl-baselines3-zoo DQN (256x256) with one update per two
    # env steps; distillation gets a third of the teacher's env steps.
    "LunarLander-v3": Setup(
        teacher_dqn=DQNConfig(
            env_id="LunarLander-v3", hidden_units=(256, 256), total_env_steps=150_000,
            num_envs=4, learning_rate=6.3e-4, batch_size=128, buffer_capacity=100_000,
            learning_starts=1_000, train_every=4, gradient_steps=2, target_update_every=250,
            epsilon_fraction=0.12, epsilon_final=0.1, eval_every=10_000, eval_episodes=10,
            seed=0, progress=False,
        ),
        student_units=(64, 64),
        distill_steps=50_000,
        steps_per_round=5_000,
        train_steps_per_round=3_000,
        learning_rate=2e-3,
    ),
}

SMOKE_SETUP = Setup(
    teacher_dqn=DQNConfig(
        env_id="CartPole-v1", hidden_units=(32, 32), total_env_steps=1_000, num_envs=4,
        batch_size=32, buffer_capacity=1_000, learning_starts=200, train_every=16,
        gradient_steps=4, target_update_every=100, eval_every=500, eval_episodes=2,
        seed=0, progress=False,
    ),
    student_units=(4,),
    distill_steps=200,
    steps_per_round=100,
    train_steps_per_round=10,
    batch_size=32,
    eval_episodes=2,
)


# ------------------------------------------------------------------- teachers

# Teachers committed with the benchmarks (their commands: teachers/README.md).
COMMITTED_TEACHERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "teachers")


class _PrintEvaluations(keras.callbacks.Callback):
    def __init__(self, label: str):
        super().__init__()
        self.label = label

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        print(f"  {self.label}: env step {logs.get('env_steps')}: selection return "
              f"{logs.get('return', float('nan')):.1f} (best {logs.get('best_return'):.1f})",
              flush=True)


def changed_settings(description: dict, config: DQNConfig) -> list[str]:
    """The DQN settings in which a saved teacher's ``teacher.json`` differs
    from ``config``, leaving out the progress bar and the training's folders."""
    ignored = ("progress", *LOCAL_SETTINGS)
    saved, wanted = description["config"], config.as_dict()
    return sorted(key for key in set(saved) | set(wanted)
                  if key not in ignored and saved.get(key) != wanted.get(key))


def teacher_name(env_id: str, setup: Setup) -> str:
    """A teacher folder's default name: env and layer sizes, ``CartPole-v1-256x256``."""
    return f"{env_id}-{'x'.join(map(str, setup.teacher_dqn.hidden_units))}"


def teacher_folder(name: str, out: str, retrain: bool = False) -> str:
    """The folder of the teacher ``name``: the committed one if there is one
    (unless ``retrain``), else ``<out>/teachers/<name>``, where it is cached or trained."""
    committed = os.path.join(COMMITTED_TEACHERS, name)
    if not retrain and os.path.exists(os.path.join(committed, "teacher.json")):
        return committed
    return os.path.join(out, "teachers", name)


def teacher_for(env_id: str, setup: Setup, out: str, name: str | None = None,
                retrain: bool = False) -> tuple[keras.Model, dict]:
    """Loads or trains the DQN teacher of ``setup``; returns it and its ``teacher.json``.

    The teacher is named by env and layer sizes (or ``name``). It is the one
    committed under ``benchmarks/teachers/<name>`` if there is one (unless
    ``retrain``), so that results reproduce without training; else the one
    cached under ``<out>/teachers/<name>``, trained there if missing. A
    teacher trained with other DQN settings than ``setup``'s is an error.
    """
    config = setup.teacher_dqn
    name = name or teacher_name(env_id, setup)
    folder = teacher_folder(name, out, retrain)
    if os.path.exists(os.path.join(folder, "teacher.json")):
        teacher, description = load_dqn_teacher(folder)
        changed = changed_settings(description, config)
        if changed:
            remedy = ("add --retrain-teachers to train one"
                      if os.path.dirname(folder) == COMMITTED_TEACHERS
                      else "delete the folder to retrain it")
            sys.exit(f"error: the teacher {folder} was trained with other settings "
                     f"({', '.join(changed)}) than this recipe; {remedy}.")
        print(f"teacher: loaded {folder}", flush=True)
        return teacher, description
    spec = env_spec(make_env(env_id), env_id)
    seed_everything(config.seed)
    teacher = build_mlp(spec.observation_shape, spec.num_actions, config.hidden_units,
                        name="teacher")
    print(f"teacher: training {env_id} ({count_params(teacher):,} params, "
          f"{config.total_env_steps:,} env steps)", flush=True)
    checkpoint_dir = os.path.join(out, "teachers", f".{name}.checkpoints")
    history = train_dqn(teacher, dataclasses.replace(
        config, checkpoint_dir=checkpoint_dir, callbacks=[_PrintEvaluations("teacher")]),
        out_dir=folder)
    # A finished run's checkpoint would be resumed by a later run with other settings.
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    print(f"teacher: trained in {history.wall_time_s:.0f} s, best selection return "
          f"{history.best_return:.1f}, saved to {folder}", flush=True)
    return load_dqn_teacher(folder)


# ----------------------------------------------------------------- one seed


def distill_configs(env_id: str, setup: Setup, seed: int,
                    **overrides) -> dict[str, DistillConfig]:
    """The teacher-driven and student-driven runs of one seed (``overrides``: fields to change)."""
    common = dict(
        env_id=env_id, total_env_steps=setup.distill_steps,
        steps_per_round=setup.steps_per_round,
        train_steps_per_round=setup.train_steps_per_round, batch_size=setup.batch_size,
        learning_rate=setup.learning_rate, distillation_loss="q_value_kl",
        eval_episodes=setup.eval_episodes, keep_best=True, seed=seed, progress=False,
    )
    common.update(overrides)
    return {
        "teacher-driven": DistillConfig(**common, control="teacher", epsilon=0.05),
        "student-driven": DistillConfig(**common, control="student", beta_decay=0.5),
    }


def run_seed(env_id: str, setup: Setup, teacher: keras.Model, description: dict, seed: int,
             episodes: int, students_dir: str) -> dict:
    """The teacher, random policy and three students of one run seed, on its held-out episodes.

    Each student is saved as ``<students_dir>/seed-<seed>-<method>.keras`` (what
    docs/deploying.md exports).
    """
    spec = env_spec(make_env(env_id), env_id)
    seeds = held_out_seeds(seed, episodes)
    teacher_return = evaluate_policy(env_id, teacher, seeds)
    random_return = evaluate_policy(env_id, random_policy(spec.num_actions), seeds)

    def student(name: str) -> keras.Model:
        seed_everything(seed)  # the same initial weights for every method of this seed
        return build_mlp(spec.observation_shape, spec.num_actions, setup.student_units, name=name)

    configs = distill_configs(env_id, setup, seed)
    if 10 * count_params(student("size")) > count_params(teacher):
        sys.exit(f"error: the {env_id} student has more than 1/10 of the teacher's parameters.")
    os.makedirs(students_dir, exist_ok=True)
    rows = []
    for method in METHODS:
        network = student(method.replace(" ", "_"))
        if method in configs:
            history = distill(teacher, network, configs[method])
            env_steps, seconds = history.env_steps[-1], history.wall_time_s[-1]
            kept = history.kept_round
        else:
            dqn_config = dataclasses.replace(
                setup.teacher_dqn, hidden_units=setup.student_units,
                total_env_steps=setup.distill_steps, eval_every=setup.steps_per_round,
                eval_episodes=setup.eval_episodes, seed=seed, progress=False)
            history = train_dqn(network, dqn_config)
            env_steps, seconds, kept = history.env_steps, history.wall_time_s, history.best_step
        comparison = compare_policies(env_id, teacher, network, seeds,
                                      teacher_return=teacher_return, random_return=random_return)
        save_keras_model(network, os.path.join(
            students_dir, f"seed-{seed}-{method.replace(' ', '-')}.keras"))
        rows.append({
            "method": method, "seed": seed, "params": comparison.student_params,
            "mean_return": comparison.student.mean, "std_return": comparison.student.std,
            "ci95": list(comparison.student.ci95),
            "normalized_score": comparison.normalized_score, "agreement": comparison.agreement,
            "env_steps": int(env_steps), "wall_time_s": float(seconds),
            "latency_ms": 1e3 * comparison.student_latency_s, "kept": kept,
            "history": history.as_dict(),
        })
        print(f"  seed {seed} {method}: return {comparison.student.mean:.1f} ± "
              f"{comparison.student.std:.1f}, score {_fmt(comparison.normalized_score, 3)}, "
              f"agreement {comparison.agreement:.3f}, {seconds:.0f} s", flush=True)
    teacher_row = {
        "method": "teacher (DQN)", "seed": seed, "params": count_params(teacher),
        "mean_return": teacher_return.mean, "std_return": teacher_return.std,
        "ci95": list(teacher_return.ci95), "normalized_score": 1.0, "agreement": 1.0,
        "env_steps": int(description["history"]["env_steps"]),
        "wall_time_s": float(description["history"]["wall_time_s"]),
    }
    random_row = {
        "method": "random", "seed": seed, "params": 0,
        "mean_return": random_return.mean, "std_return": random_return.std,
        "ci95": list(random_return.ci95), "normalized_score": 0.0, "agreement": None,
        "env_steps": 0, "wall_time_s": None,
    }
    print(f"  seed {seed}: teacher {teacher_return.mean:.1f}, random {random_return.mean:.1f} "
          f"on {episodes} held-out episodes", flush=True)
    return {"seed": seed, "eval_seeds": list(seeds), "rows": [teacher_row, random_row, *rows]}


# ------------------------------------------------------------ aggregation


def summarize(per_seed: list[dict]) -> list[dict]:
    """One row per method: means over seeds with 95% intervals across seeds."""
    methods = [row["method"] for row in per_seed[0]["rows"]]
    summary = []
    for method in methods:
        rows = [next(r for r in run["rows"] if r["method"] == method) for run in per_seed]
        entry = {"method": method, "seeds": [r["seed"] for r in rows], "params": rows[0]["params"]}
        for name in ("mean_return", "normalized_score", "agreement", "env_steps", "wall_time_s"):
            values = [r[name] for r in rows]
            entry[name] = _across_seeds(values)
        summary.append(entry)
    return summary


def _across_seeds(values: list) -> dict | None:
    """Mean, bootstrap 95% CI (``ReturnStats.from_returns``) and t 95% CI of per-seed values."""
    if any(value is None or not math.isfinite(value) for value in values):
        return None
    stats = ReturnStats.from_returns(values)
    n = len(values)
    half = 0.0
    if n > 1:
        from scipy import stats as scipy_stats

        sem = float(np.std(values, ddof=1)) / math.sqrt(n)
        half = float(scipy_stats.t.ppf(0.975, n - 1)) * sem
    return {"mean": stats.mean, "n": n, "values": list(stats.returns),
            "ci95_bootstrap": list(stats.ci95), "ci95_t": [stats.mean - half, stats.mean + half]}


def _fmt(value, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _with_ci(entry: dict | None, digits: int, thousands: bool = False) -> str:
    if entry is None:
        return "–"
    low, high = entry["ci95_bootstrap"]
    form = f",.{digits}f" if thousands else f".{digits}f"
    if entry["n"] == 1 or low == high:
        return f"{entry['mean']:{form}}"
    return f"{entry['mean']:{form}} [{low:{form}}, {high:{form}}]"


def table(env_id: str, summary: list[dict]) -> str:
    lines = [
        "| env | method | params | return, mean over seeds [95% CI] | normalised score [95% CI] "
        "| agreement | env steps | wall time (s) |",
        "|" + "---|" * 8,
    ]
    for entry in summary:
        lines.append(
            f"| {env_id} | {entry['method']} | {entry['params']:,} "
            f"| {_with_ci(entry['mean_return'], 1)} | {_with_ci(entry['normalized_score'], 3)} "
            f"| {_with_ci(entry['agreement'], 3)} | {_fmt_steps(entry['env_steps'])} "
            f"| {_fmt_mean(entry['wall_time_s'], 0)} |")
    return "\n".join(lines)


def _fmt_steps(entry: dict | None) -> str:
    return "–" if entry is None else f"{entry['mean']:,.0f}"


def _fmt_mean(entry: dict | None, digits: int) -> str:
    return "–" if entry is None else f"{entry['mean']:.{digits}f}"


def plot(env_id: str, summary: list[dict], path: str) -> None:
    """Normalised score per seed (dots) and its mean with the bootstrap CI (bars), per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = [e for e in summary if e["normalized_score"] is not None]
    figure, axis = plt.subplots(figsize=(max(7.0, 1.3 * len(entries)), 3.5))
    for x, entry in enumerate(entries):
        score = entry["normalized_score"]
        low, high = score["ci95_bootstrap"]
        axis.errorbar([x], [score["mean"]], yerr=[[score["mean"] - low], [high - score["mean"]]],
                      fmt="o", color="black", capsize=6, zorder=3)
        jitter = np.linspace(-0.12, 0.12, len(score["values"]))
        axis.scatter(x + jitter, score["values"], alpha=0.5, zorder=2)
    axis.axhline(1.0, color="gray", linestyle="--", linewidth=0.8)
    axis.axhline(0.0, color="gray", linestyle=":", linewidth=0.8)
    axis.set_xticks(range(len(entries)), [e["method"] for e in entries], fontsize=8)
    axis.set_ylabel("normalised score")
    axis.set_title(f"{env_id}: held-out score per seed, mean and 95% CI over seeds")
    axis.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


# --------------------------------------------------------------------- runs


class SeedRecords:
    """One run seed's result files, ``<folder>/seed-<s>/<name>.json``, one per method.

    A file written with the same ``settings`` is reused by a rerun; with
    ``fresh``, only the files this run wrote itself are.
    """

    def __init__(self, folder: str, seed: int, settings: dict, fresh: bool, file_format: str):
        self.folder = os.path.join(folder, f"seed-{seed}")
        os.makedirs(self.folder, exist_ok=True)
        self.seed, self.settings, self.fresh, self.format = seed, settings, fresh, file_format
        self.written: set[str] = set()

    def path(self, name: str) -> str:
        return os.path.join(self.folder, re.sub(r"[^A-Za-z0-9.]+", "-", name).strip("-") + ".json")

    def saved(self, name: str) -> dict | None:
        """The record saved under ``name`` with these settings, or None."""
        path = self.path(name)
        if (self.fresh and name not in self.written) or not os.path.exists(path):
            return None
        with open(path, encoding="utf-8") as file:
            record = json.load(file)
        return record if record.get("settings") == self.settings else None

    def save(self, name: str, record: dict) -> dict:
        """Writes ``record`` (with the format, settings, versions and seed) atomically."""
        record = strict_json({"format": self.format, "settings": self.settings,
                              "versions": versions(), "seed": self.seed, **record})
        write_json(self.path(name), record)
        self.written.add(name)
        return record


@functools.cache
def versions() -> dict:
    """Library versions, Python's and the git commit of this checkout, read once."""
    return {**provenance.versions(), "python": sys.version.split()[0]}


def run_env(env_id: str, setup: Setup, out: str, seeds: list[int], episodes: int,
            fresh: bool, retrain_teachers: bool = False) -> dict:
    teacher, description = teacher_for(env_id, setup, out, retrain=retrain_teachers)
    path = os.path.join(out, "rl", f"{env_id}.json")
    settings = {"setup": setup.as_dict(), "episodes": episodes,
                "teacher_best_return": description["best_return"]}
    done: dict[int, dict] = {}
    if os.path.exists(path) and not fresh:
        with open(path, encoding="utf-8") as file:
            saved = json.load(file)
        if saved.get("format") == FORMAT and saved.get("settings") == strict_json(settings):
            done = {run["seed"]: run for run in saved["per_seed"]}
    per_seed = []
    for seed in seeds:
        if seed in done:
            print(f"{env_id} seed {seed}: saved in {path}, reused", flush=True)
            per_seed.append(done[seed])
        else:
            print(f"{env_id} seed {seed}:", flush=True)
            per_seed.append(run_seed(env_id, setup, teacher, description, seed, episodes,
                                     os.path.join(out, "rl", "students", env_id)))
        result = {"format": FORMAT, "env": env_id, "seeds": [run["seed"] for run in per_seed],
                  "episodes": episodes, "settings": settings,
                  "teacher_dir": teacher_folder(teacher_name(env_id, setup), out,
                                                retrain_teachers),
                  "versions": versions(),
                  "summary": summarize(per_seed), "per_seed": per_seed}
        write_json(path, result)
    plot(env_id, result["summary"], os.path.join(out, "rl", f"{env_id}.png"))
    return result


def report(out: str, env_ids) -> None:
    found = False
    for env_id in env_ids:
        path = os.path.join(out, "rl", f"{env_id}.json")
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as file:
            result = json.load(file)
        found = True
        print(f"\n{env_id}: seeds {result['seeds']}, {result['episodes']} held-out episodes "
              "per seed\n")
        print(table(env_id, result["summary"]))
    if not found:
        print(f"no results in {out}/rl yet: run benchmarks/rl.py")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", choices=sorted(SETUPS), action="append",
                        help="environment(s) to run, in the order given (default: all)")
    parser.add_argument("--seeds", type=int, nargs="+",
                        help="independent run seeds (default: 0 1 2 3 4; --smoke: 0)")
    parser.add_argument("--episodes", type=int,
                        help="held-out evaluation episodes per seed (default: 100; --smoke: 3)")
    parser.add_argument("--out", help="results folder (default: results; --smoke: a new "
                                       "temporary folder)")
    parser.add_argument("--threads", type=int, default=1,
                        help="TensorFlow threads (small MLPs run fastest on one)")
    parser.add_argument("--fresh", action="store_true",
                        help="rerun every seed even if saved results have the same settings")
    parser.add_argument("--report", action="store_true", help="only print saved results")
    parser.add_argument("--retrain-teachers", action="store_true",
                        help="train the teachers under <out>/teachers instead of loading the committed "
                             "ones (benchmarks/teachers)")
    parser.add_argument("--smoke", action="store_true",
                        help="seconds: a tiny CartPole teacher and students; a check only")
    args = parser.parse_args(argv)
    setups = {"CartPole-v1": SMOKE_SETUP} if args.smoke else dict(SETUPS)
    if args.seeds is None:
        args.seeds = [0] if args.smoke else [0, 1, 2, 3, 4]
    if args.episodes is None:
        args.episodes = 3 if args.smoke else 100
    if args.out is None:
        args.out = tempfile.mkdtemp(prefix="tfkd-rl-smoke-") if args.smoke else "results"
    if min(args.seeds) < 0 or len(set(args.seeds)) != len(args.seeds):
        parser.error("--seeds must be distinct non-negative integers")
    if args.episodes < 1:
        parser.error("--episodes must be at least 1")
    env_ids = [env for env in (args.env or list(setups)) if env in setups]
    if not args.report:
        versions()  # the commit of the code that runs, even if the checkout moves on
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
        start = time.perf_counter()
        for env_id in env_ids:
            setup = setups[env_id]
            run_env(env_id, setup, args.out, args.seeds, args.episodes, args.fresh,
                    args.retrain_teachers)
        print(f"\ntotal wall time {time.perf_counter() - start:.0f} s (results in {args.out})")
    report(args.out, env_ids)


if __name__ == "__main__":
    main()
