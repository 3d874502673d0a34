"""End-to-end RL distillation benchmark: CartPole-v1 and LunarLander-v3.

For each environment:

1. a DQN teacher (Keras 3, ``tfkd.rl.train_dqn``) is trained once and cached
   as ``results/teachers/<env>-<units>.keras``;
2. a student at most 1/10 of the teacher's size is distilled
   teacher-driven (Rusu et al. 2016) and student-driven (DAgger; Ross et al.
   2011, Czarnecki et al. 2019) with the same env-step budget;
3. the same small network is trained from scratch with DQN on that budget;
4. all are evaluated greedily on 100 seeded episodes the training never saw.

Usage::

    python benchmarks/rl.py                        # both envs (tens of minutes on 2 cores)
    python benchmarks/rl.py --env CartPole-v1      # one env
    python benchmarks/rl.py --report               # print the table of saved results

Results go to ``results/rl/<env>.json`` and ``results/rl/<env>.png``; the
table is printed as Markdown.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfkd.models import build_mlp, count_params  # noqa: E402
from tfkd.rl import (  # noqa: E402
    DQNConfig,
    DistillConfig,
    compare_policies,
    distill_student_driven,
    distill_teacher_driven,
    env_spec,
    evaluate_policy,
    make_env,
    plot_history,
    train_dqn,
)

RESULTS = "results"
EVAL_SEED = 10_000  # teacher selection uses seeds 1000+, distillation 0+: all disjoint


@dataclasses.dataclass
class Setup:
    """What one environment's benchmark runs."""

    teacher_units: tuple[int, ...]
    student_units: tuple[int, ...]
    teacher_dqn: DQNConfig
    distill_steps: int
    steps_per_round: int
    train_steps_per_round: int
    batch_size: int = 128
    learning_rate: float = 1e-3


SETUPS = {
    # DQN settings follow the rl-baselines3-zoo tuned ones for these envs.
    "CartPole-v1": Setup(
        teacher_units=(256, 256),
        student_units=(64, 64),
        teacher_dqn=DQNConfig(
            env_id="CartPole-v1", total_env_steps=50_000, num_envs=8, learning_rate=2.3e-3,
            batch_size=64, buffer_capacity=100_000, learning_starts=1_000, train_every=256,
            gradient_steps=128, target_update_every=10, epsilon_fraction=0.16,
            epsilon_final=0.04, eval_every=5_000, eval_episodes=10,
        ),
        distill_steps=5_000,
        steps_per_round=1_000,
        train_steps_per_round=2_000,
    ),
    # LunarLander: the rl-baselines3-zoo DQN (256x256) with one update per two
    # env steps; distillation gets half the env steps that DQN from scratch
    # needs to land reliably, so the budget is where the two part ways.
    "LunarLander-v3": Setup(
        teacher_units=(256, 256),
        student_units=(64, 64),
        teacher_dqn=DQNConfig(
            env_id="LunarLander-v3", total_env_steps=150_000, num_envs=4, learning_rate=6.3e-4,
            batch_size=128, buffer_capacity=100_000, learning_starts=1_000, train_every=4,
            gradient_steps=2, target_update_every=250, epsilon_fraction=0.12,
            epsilon_final=0.1, eval_every=10_000, eval_episodes=10,
        ),
        distill_steps=50_000,
        steps_per_round=5_000,
        train_steps_per_round=3_000,
        learning_rate=2e-3,
    ),
}


def teacher_for(env_id: str, setup: Setup) -> tuple[keras.Model, float]:
    """Loads the cached teacher or trains one; returns it and its training seconds."""
    units = "x".join(map(str, setup.teacher_units))
    path = os.path.join(RESULTS, "teachers", f"{env_id}-{units}.keras")
    info_path = path.replace(".keras", ".json")
    if os.path.exists(path):
        print(f"teacher: loading {path}")
        seconds = float("nan")
        if os.path.exists(info_path):
            with open(info_path) as file:
                seconds = json.load(file)["wall_time_s"]
        return keras.models.load_model(path), seconds
    spec = env_spec(make_env(env_id), env_id)
    teacher = build_mlp(spec.observation_shape, spec.num_actions, setup.teacher_units, name="teacher")
    history = train_dqn(teacher, setup.teacher_dqn)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    teacher.save(path)
    with open(info_path, "w") as file:
        json.dump(history.as_dict(), file)
    print(f"teacher: trained in {history.wall_time_s:.0f} s, saved to {path}")
    return teacher, history.wall_time_s


def run_env(env_id: str, episodes: int, seed: int, distill_steps: int | None = None) -> dict:
    setup = SETUPS[env_id]
    if distill_steps is not None:
        setup = dataclasses.replace(setup, distill_steps=distill_steps)
    teacher, teacher_seconds = teacher_for(env_id, setup)
    teacher_return = evaluate_policy(env_id, teacher, episodes, seed=EVAL_SEED)
    print(f"teacher: {count_params(teacher)} params, return {teacher_return.mean:.1f} "
          f"± {teacher_return.std:.1f} over {episodes} episodes")
    spec = env_spec(make_env(env_id), env_id)

    def student(name):
        keras.utils.set_random_seed(seed)
        return build_mlp(spec.observation_shape, spec.num_actions, setup.student_units, name=name)

    assert 10 * count_params(student("size")) <= count_params(teacher), "student too large"
    common = dict(
        env_id=env_id, total_env_steps=setup.distill_steps, steps_per_round=setup.steps_per_round,
        train_steps_per_round=setup.train_steps_per_round, batch_size=setup.batch_size,
        learning_rate=setup.learning_rate, distillation_loss="q_value_kl", eval_episodes=20,
        keep_best=True, seed=seed,
    )
    runs = {
        "teacher-driven": (distill_teacher_driven, DistillConfig(**common, control="teacher", epsilon=0.05)),
        "student-driven": (distill_student_driven, DistillConfig(**common, control="student", beta_decay=0.5)),
    }
    rows, histories = [], {}
    for method, (distill, config) in runs.items():
        network = student(method)
        history = distill(teacher, network, config)
        histories[method] = history
        comparison = compare_policies(env_id, teacher, network, episodes, EVAL_SEED, teacher_return)
        rows.append(_row(env_id, method, comparison.summary(), history.env_steps[-1],
                         history.wall_time_s[-1]))
        print(_table([rows[-1]]))

    baseline = student("dqn-from-scratch")
    dqn_config = dataclasses.replace(setup.teacher_dqn, total_env_steps=setup.distill_steps,
                                     eval_every=setup.steps_per_round, seed=seed)
    dqn_history = train_dqn(baseline, dqn_config)
    comparison = compare_policies(env_id, teacher, baseline, episodes, EVAL_SEED, teacher_return)
    rows.append(_row(env_id, "DQN from scratch", comparison.summary(), dqn_history.env_steps,
                     dqn_history.wall_time_s))
    teacher_row = _row(env_id, "teacher (DQN)", comparison.summary(),
                       setup.teacher_dqn.total_env_steps, teacher_seconds)
    teacher_row.update(params=teacher_row["teacher_params"], return_mean=teacher_return.mean,
                       return_std=teacher_return.std, percent_of_teacher=100.0, agreement=1.0,
                       latency_ms=1e3 * comparison.teacher_latency_s)
    rows.insert(0, teacher_row)

    os.makedirs(os.path.join(RESULTS, "rl"), exist_ok=True)
    plot_history(histories, os.path.join(RESULTS, "rl", f"{env_id}.png"),
                 title=f"{env_id}: student return while distilling")
    result = {"env_id": env_id, "episodes": episodes, "rows": rows,
              "histories": {k: h.as_dict() for k, h in histories.items()},
              "dqn_from_scratch": dqn_history.as_dict()}
    with open(os.path.join(RESULTS, "rl", f"{env_id}.json"), "w") as file:
        json.dump(result, file, indent=1)
    return result


def _row(env_id, method, summary, env_steps, seconds) -> dict:
    return dict(env=env_id, method=method, params=summary["student_params"],
                teacher_params=summary["teacher_params"],
                return_mean=summary["student_return_mean"], return_std=summary["student_return_std"],
                percent_of_teacher=summary["percent_of_teacher"], agreement=summary["agreement"],
                env_steps=int(env_steps), wall_time_s=float(seconds),
                latency_ms=1e3 * summary["student_latency_s"])


def _table(rows) -> str:
    header = ("| env | method | params | return (mean ± std) | % of teacher | agreement "
              "| env steps | wall time (s) | ms / action |")
    lines = [header, "|" + "---|" * 9]
    for r in rows:
        lines.append(
            f"| {r['env']} | {r['method']} | {r['params']:,} | {r['return_mean']:.1f} ± "
            f"{r['return_std']:.1f} | {r['percent_of_teacher']:.1f}% | {r['agreement']:.3f} "
            f"| {r['env_steps']:,} | {r['wall_time_s']:.0f} | {r['latency_ms']:.2f} |"
        )
    return "\n".join(lines)


def report() -> None:
    rows = []
    for env_id in SETUPS:
        path = os.path.join(RESULTS, "rl", f"{env_id}.json")
        if os.path.exists(path):
            with open(path) as file:
                env_rows = json.load(file)["rows"]
            units = "x".join(map(str, SETUPS[env_id].teacher_units))
            info_path = os.path.join(RESULTS, "teachers", f"{env_id}-{units}.json")
            if math.isnan(env_rows[0]["wall_time_s"]) and os.path.exists(info_path):
                with open(info_path) as file:  # a cached teacher: its training time
                    env_rows[0]["wall_time_s"] = json.load(file)["wall_time_s"]
            rows.extend(env_rows)
    print(_table(rows) if rows else "no results yet: run benchmarks/rl.py")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", choices=sorted(SETUPS), action="append",
                        help="environment(s) to run (default: all)")
    parser.add_argument("--episodes", type=int, default=100, help="evaluation episodes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--distill-steps", type=int,
                        help="override the env-step budget of distillation and of the baseline")
    parser.add_argument("--threads", type=int, default=1,
                        help="TensorFlow threads (small MLPs run fastest on one)")
    parser.add_argument("--report", action="store_true", help="only print saved results")
    args = parser.parse_args()
    if not args.report:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
        start = time.perf_counter()
        for env_id in args.env or list(SETUPS):
            run_env(env_id, args.episodes, args.seed, args.distill_steps)
        print(f"total wall time {time.perf_counter() - start:.0f} s")
    report()


if __name__ == "__main__":
    main()
