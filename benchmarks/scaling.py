"""Collection throughput on Ray actors: env steps/s with 1, 2, 4 ... workers.

What one distillation round's collection costs, measured the way
``tfkd.rl.distill`` runs it: the student's weights broadcast through Ray's
object store, each actor stepping its own vector env (``--num-envs`` envs)
under the β-mixture of teacher and student (β = 0.5: both networks act, as
in a student-driven round), labelling its states with the teacher, and the
learner gathering the labelled arrays. For each worker count it reports:

- env steps/s of a round of ``--steps`` env steps (median over ``--rounds``
  rounds after a warm-up round) and its ratio to 1 worker, taken round by
  round (the worker counts take turns, so a busy spell hits them alike);
- the fixed cost of a round: a round of one vector step per actor
  (broadcast, scheduling, gather), median;
- the per-actor cost of an env step (from the 1-worker rate) and the bytes
  moved per step.

The same collection in the learner's own process (``RolloutCollector``, no
Ray) is the baseline row; a second table steps the envs alone, with random
actions, in gymnasium's synchronous vector env and in its asynchronous one (a
process per env), to show whether async stepping pays on this machine. From the measured costs, ``model`` predicts the
rate on ``k`` machines of ``c`` cores each: a round of ``S`` steps takes
``t(k) = t_fixed + S / (k · c · r_actor) + S · b / B`` with ``r_actor`` the
per-actor rate, ``b`` the bytes per step and ``B`` the network's bandwidth
(``--bandwidth``, default 1 Gbit/s).

Usage::

    python benchmarks/scaling.py                               # CartPole-v1 and LunarLander-v3
    python benchmarks/scaling.py --smoke --out /tmp/sc-smoke   # seconds: a check only

Results: ``<out>/scaling.json`` and a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import gymnasium  # noqa: E402
import numpy as np  # noqa: E402

from rl import SETUPS, SMOKE_SETUP, teacher_for, versions  # noqa: E402
from tfkd.files import write_json  # noqa: E402
from tfkd.models import build_mlp  # noqa: E402
from tfkd.rl import (  # noqa: E402
    GreedyPolicy,
    MixturePolicy,
    RolloutCollector,
    env_spec,
    make_env,
    make_vector_env,
)
from tfkd.rl.workers import RayCollectors, ray_cluster  # noqa: E402

FORMAT = "tfkd.benchmarks.scaling/1"
BETA = 0.5


def in_process_rate(env_id, teacher, student, steps: int, rounds: int, num_envs: int) -> float:
    """Env steps/s of the learner collecting itself (the run without workers)."""
    spec = env_spec(make_env(env_id), env_id)
    collector = RolloutCollector(make_vector_env(env_id, num_envs), teacher, seed=0)
    policy = MixturePolicy(GreedyPolicy(teacher, spec.num_actions),
                           GreedyPolicy(student, spec.num_actions), BETA)
    collector.collect(policy, num_envs)  # traces the networks
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        collector.collect(policy, steps)
        times.append(time.perf_counter() - started)
    return steps / statistics.median(times)


def vector_env_rates(env_id: str, num_envs: int, steps: int) -> dict:
    """Env steps/s of gymnasium's synchronous and asynchronous (a process per env)
    vector envs stepped with random actions: whether async stepping pays here."""
    rates = {}
    for mode, vector_class in (("sync", gymnasium.vector.SyncVectorEnv),
                               ("async", gymnasium.vector.AsyncVectorEnv)):
        env = vector_class([lambda: make_env(env_id) for _ in range(num_envs)],
                           autoreset_mode=gymnasium.vector.AutoresetMode.SAME_STEP)
        try:
            env.reset(seed=0)
            rng = np.random.default_rng(0)
            actions = rng.integers(env.single_action_space.n, size=(steps // num_envs, num_envs))
            started = time.perf_counter()
            for action in actions:
                env.step(action)
            rates[mode] = len(actions) * num_envs / (time.perf_counter() - started)
        finally:
            env.close()
    return rates


def round_time(collectors: RayCollectors, num_steps: int) -> tuple[float, int]:
    """Seconds of one round of ``num_steps`` env steps, and the bytes it brought back."""
    started = time.perf_counter()
    collectors.start(BETA, num_steps)
    rollout = collectors.finish()
    return time.perf_counter() - started, rollout.observations.nbytes + rollout.teacher_outputs.nbytes


def worker_rates(env_id, teacher, student, args) -> list[dict]:
    """Every worker count's round rate, fixed round cost and bytes per step.

    A pool of actors per worker count is started first; then each of
    ``--rounds`` repeats times one round of every pool in turn, so a busy
    spell of the machine hits every worker count alike, and the speed-up over
    one worker is taken repeat by repeat.
    """
    pools = {workers: RayCollectors(env_id, teacher, student, num_workers=workers,
                                    num_envs=args.num_envs, epsilon=0.0, seed=0, start_round=0,
                                    task_index=0)
             for workers in args.workers}
    try:
        for pool in pools.values():
            round_time(pool, args.steps)  # warm-up: actors start, networks trace
        times = {workers: [] for workers in pools}
        fixed = {workers: [] for workers in pools}
        for _ in range(args.rounds):
            for workers, pool in pools.items():
                seconds, nbytes = round_time(pool, args.steps)
                times[workers].append(seconds)
                fixed[workers].append(round_time(pool, workers * args.num_envs)[0])
    finally:
        for pool in pools.values():
            pool.close()
    rows = []
    for workers in pools:
        row = {"workers": workers, "steps_per_s": args.steps / statistics.median(times[workers]),
               "round_s": times[workers], "fixed_round_s": statistics.median(fixed[workers]),
               "bytes_per_step": nbytes / args.steps, "speedup_vs_1": None,
               "speedup_range": None}
        if 1 in times:
            ratios = [one / this for one, this in zip(times[1], times[workers])]
            row["speedup_vs_1"] = statistics.median(ratios)
            row["speedup_range"] = [min(ratios), max(ratios)]
        rows.append(row)
    return rows


def model(per_actor_rate: float, fixed_s: float, bytes_per_step: float, steps: int,
          machines: int, cores: int, bandwidth_bytes_s: float) -> float:
    """Predicted env steps/s of a round on ``machines`` of ``cores`` actors each."""
    seconds = (fixed_s + steps / (machines * cores * per_actor_rate)
               + steps * bytes_per_step / bandwidth_bytes_s)
    return steps / seconds


def measure(env_id: str, args) -> dict:
    setup = SMOKE_SETUP if args.smoke else SETUPS[env_id]
    teacher, _ = teacher_for(env_id, setup, args.teachers, retrain=args.retrain_teachers)
    spec = env_spec(make_env(env_id), env_id)
    student = build_mlp(spec.observation_shape, spec.num_actions, setup.student_units)
    baseline = in_process_rate(env_id, teacher, student, args.steps, args.rounds, args.num_envs)
    vector_envs = vector_env_rates(env_id, args.num_envs, args.steps)
    with ray_cluster(None, sum(args.workers)):
        print(f"{env_id}: timing {args.workers} worker(s), {args.rounds} rounds each ...",
              flush=True)
        rows = worker_rates(env_id, teacher, student, args)
    one = next((row for row in rows if row["workers"] == 1), None)
    predicted = None
    if one:
        # One actor's round is fixed cost + steps / r_actor: solve for r_actor.
        actor_s = args.steps / one["steps_per_s"] - one["fixed_round_s"]
        per_actor = args.steps / max(actor_s, 1e-9)
        predicted = [{"machines": k, "cores": args.model_cores,
                      "steps_per_s": model(per_actor, one["fixed_round_s"],
                                           one["bytes_per_step"], args.steps, k,
                                           args.model_cores, args.bandwidth / 8)}
                     for k in (1, 2, 4, 8, 16)]
    return {"env_id": env_id, "in_process_steps_per_s": baseline,
            "vector_env_steps_per_s": vector_envs, "workers": rows,
            "model": predicted}


def table(results: list[dict], steps: int) -> str:
    lines = [f"| env | collection | env steps/s (round of {steps:,}) | × 1 worker, median "
             "[range] over rounds | "
             "fixed cost of a round (s) | bytes moved per step |",
             "|---|---|---|---|---|---|"]
    for result in results:
        lines.append(f"| {result['env_id']} | in the learner's process | "
                     f"{result['in_process_steps_per_s']:,.0f} | | | |")
        for row in result["workers"]:
            speedup = "–" if row["speedup_vs_1"] is None else (
                f"{row['speedup_vs_1']:.2f}× [{row['speedup_range'][0]:.2f}, "
                f"{row['speedup_range'][1]:.2f}]")
            lines.append(f"| {result['env_id']} | {row['workers']} Ray worker(s) | "
                         f"{row['steps_per_s']:,.0f} | {speedup} | {row['fixed_round_s']:.3f} | "
                         f"{row['bytes_per_step']:.0f} |")
    return "\n".join(lines)


def vector_env_table(results: list[dict], num_envs: int) -> str:
    lines = [f"| env | {num_envs} envs stepped in one process (sync), env steps/s | "
             "a process per env (async) |", "|---|---|---|"]
    for result in results:
        rates = result["vector_env_steps_per_s"]
        lines.append(f"| {result['env_id']} | {rates['sync']:,.0f} | {rates['async']:,.0f} |")
    return "\n".join(lines)


def model_table(results: list[dict]) -> str:
    lines = ["| env | machines × cores | predicted env steps/s |", "|---|---|---|"]
    for result in results:
        for row in result["model"] or []:
            lines.append(f"| {result['env_id']} | {row['machines']} × {row['cores']} | "
                         f"{row['steps_per_s']:,.0f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envs", nargs="+", default=list(SETUPS))
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--steps", type=int, default=20_000, help="env steps per round")
    parser.add_argument("--rounds", type=int, default=7,
                        help="timed rounds per worker count, interleaved (the median is reported)")
    parser.add_argument("--num-envs", type=int, default=8, help="envs per worker")
    parser.add_argument("--teachers", default="results",
                        help="folder whose teachers/<env>-<units>/ holds the teacher trained "
                             "when none is committed or with --retrain-teachers")
    parser.add_argument("--retrain-teachers", action="store_true",
                        help="train the teachers under --teachers instead of loading the committed "
                             "ones (benchmarks/teachers)")
    parser.add_argument("--out", default="results")
    parser.add_argument("--model-cores", type=int, default=16, help="cores per machine in the model")
    parser.add_argument("--bandwidth", type=float, default=1e9, help="bits/s between machines")
    parser.add_argument("--smoke", action="store_true", help="CartPole, tiny rounds: a check only")
    args = parser.parse_args(argv)
    if args.smoke:
        args.envs, args.steps, args.rounds, args.workers = ["CartPole-v1"], 64, 1, [1, 2]
    results = [measure(env_id, args) for env_id in args.envs]
    path = os.path.join(args.out, "scaling.json")
    write_json(path, {"format": FORMAT, "settings": {
        k: v for k, v in vars(args).items() if k != "envs"}, "results": results,
        "machine": {"cpus": os.cpu_count()}, "versions": versions()})
    print(table(results, args.steps))
    print()
    print(vector_env_table(results, args.num_envs))
    print()
    print(model_table(results))
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
